//! Services whose RPCs are part of the API but not yet built. Each answers `UNIMPLEMENTED`
//! with what is missing, never a made-up response. `Admin.GetModelInfo` is the one real RPC
//! here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::app::App;

use crate::proto::actions_server::Actions;
use crate::proto::admin_server::Admin;
use crate::proto::appeals_server::Appeals;
use crate::proto::*;

/// The not-yet-built `Actions` and `Appeals` services.
#[derive(Debug, Clone, Copy)]
pub struct Pending;

fn missing<T>(rpc: &str, what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{rpc} is not available yet: {what}"
    )))
}

const ACTIONS: &str =
    "actions are recorded and carried out once the action store and the chat bridge exist";
const APPEALS: &str = "appeals need the action store, which does not exist yet";
const RULES: &str = "rules are read from the configuration file until rule storage exists";
const POLICY: &str = "channel policies arrive with the full rule engine";

#[tonic::async_trait]
impl Actions for Pending {
    async fn execute_action(
        &self,
        _: Request<ExecuteActionRequest>,
    ) -> Result<Response<ExecuteActionResponse>, Status> {
        missing("ExecuteAction", ACTIONS)
    }
    async fn get_action(&self, _: Request<GetActionRequest>) -> Result<Response<Action>, Status> {
        missing("GetAction", ACTIONS)
    }
    async fn list_actions(
        &self,
        _: Request<ListActionsRequest>,
    ) -> Result<Response<ListActionsResponse>, Status> {
        missing("ListActions", ACTIONS)
    }
}

#[tonic::async_trait]
impl Appeals for Pending {
    async fn file_appeal(&self, _: Request<FileAppealRequest>) -> Result<Response<Appeal>, Status> {
        missing("FileAppeal", APPEALS)
    }
    async fn get_appeal(&self, _: Request<GetAppealRequest>) -> Result<Response<Appeal>, Status> {
        missing("GetAppeal", APPEALS)
    }
    async fn list_appeals(
        &self,
        _: Request<ListAppealsRequest>,
    ) -> Result<Response<ListAppealsResponse>, Status> {
        missing("ListAppeals", APPEALS)
    }
    async fn resolve_appeal(
        &self,
        _: Request<ResolveAppealRequest>,
    ) -> Result<Response<ResolveAppealResponse>, Status> {
        missing("ResolveAppeal", APPEALS)
    }
}

/// `Admin`: the model's description is real; rules, policy, stats, users and nukes are not
/// built yet.
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
        _: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        missing("ListRules", RULES)
    }
    async fn upsert_rule(&self, _: Request<UpsertRuleRequest>) -> Result<Response<Rule>, Status> {
        missing("UpsertRule", RULES)
    }
    async fn delete_rule(
        &self,
        _: Request<DeleteRuleRequest>,
    ) -> Result<Response<DeleteRuleResponse>, Status> {
        missing("DeleteRule", RULES)
    }
    async fn get_policy(&self, _: Request<GetPolicyRequest>) -> Result<Response<Policy>, Status> {
        missing("GetPolicy", POLICY)
    }
    async fn set_policy(&self, _: Request<SetPolicyRequest>) -> Result<Response<Policy>, Status> {
        missing("SetPolicy", POLICY)
    }
    async fn get_stats(&self, _: Request<GetStatsRequest>) -> Result<Response<Stats>, Status> {
        missing(
            "GetStats",
            "statistics need decision counters in the store, which do not exist yet",
        )
    }
    async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        missing(
            "GetUser",
            "per-user state arrives with the full rule engine",
        )
    }
    async fn nuke(&self, _: Request<NukeRequest>) -> Result<Response<NukeResponse>, Status> {
        missing(
            "Nuke",
            "nukes need recent channel history and the action store",
        )
    }
    async fn aegis(&self, _: Request<AegisRequest>) -> Result<Response<AegisResponse>, Status> {
        missing(
            "Aegis",
            "nukes need recent channel history and the action store",
        )
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
