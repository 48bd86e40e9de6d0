//! `modbot.v1.Admin`: rules and policies ([`super::admin_rules`]), statistics
//! ([`super::admin_stats`]), users, nukes and the model.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::app::App;

use crate::proto::admin_server::Admin;
use crate::proto::*;

use super::{admin_rules, admin_stats};

/// `Admin`.
#[derive(Debug, Clone)]
pub struct AdminService {
    app: Arc<App>,
}

impl AdminService {
    /// The service over the shared application state.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_rules(
        &self,
        request: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        admin_rules::list_rules(&self.app, request.into_inner()).await
    }
    async fn upsert_rule(
        &self,
        request: Request<UpsertRuleRequest>,
    ) -> Result<Response<Rule>, Status> {
        admin_rules::upsert_rule(&self.app, request.into_inner()).await
    }
    async fn delete_rule(
        &self,
        request: Request<DeleteRuleRequest>,
    ) -> Result<Response<DeleteRuleResponse>, Status> {
        admin_rules::delete_rule(&self.app, request.into_inner()).await
    }
    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<Policy>, Status> {
        admin_rules::get_policy(&self.app, request.into_inner()).await
    }
    async fn set_policy(
        &self,
        request: Request<SetPolicyRequest>,
    ) -> Result<Response<Policy>, Status> {
        admin_rules::set_policy(&self.app, request.into_inner()).await
    }
    async fn get_stats(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<Stats>, Status> {
        admin_stats::get_stats(&self.app, request.into_inner()).await
    }
    async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        Err(Status::unimplemented("GetUser: being built"))
    }
    async fn nuke(&self, _: Request<NukeRequest>) -> Result<Response<NukeResponse>, Status> {
        Err(Status::unimplemented("Nuke: being built"))
    }
    async fn aegis(&self, _: Request<AegisRequest>) -> Result<Response<AegisResponse>, Status> {
        Err(Status::unimplemented("Aegis: being built"))
    }
    async fn get_model_info(
        &self,
        _: Request<GetModelInfoRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let scorer = self.app.moderator.scorer();
        let status = scorer.status().borrow().clone();
        let d = scorer.description();
        Ok(Response::new(ModelInfo {
            loaded: matches!(
                status,
                crate::inference::Status::Ready | crate::inference::Status::NoHeads
            ),
            encoder: d.encoder.clone(),
            version: d.version.clone(),
            device: d.device.clone(),
            embedding_dim: u32::try_from(d.embedding_dim).unwrap_or(u32::MAX),
            max_sequence_length: u32::try_from(d.max_tokens).unwrap_or(u32::MAX),
            heads: d
                .heads
                .heads()
                .iter()
                .map(|h| ModelHead {
                    name: h.name.clone(),
                    labels: h.labels.clone(),
                    multi_label: h.multi_label,
                    thresholds: h.thresholds.clone().into_iter().collect(),
                    version: h.version.clone(),
                    metrics: h.metrics.clone().into_iter().collect(),
                })
                .collect(),
            status_detail: status.detail(),
        }))
    }
}
