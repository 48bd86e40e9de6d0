//! `modbot.v1.Admin`: rules and policies ([`super::admin_rules`]), statistics
//! ([`super::admin_stats`]), users, nukes and the model.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::{Request, Response, Status};

use crate::app::App;

use crate::proto::admin_server::Admin;
use crate::proto::*;

use super::actions::mute_duration;
use super::auth::principal_name;
use super::convert::{duration_field, id_field, optional_id, text_field};
use super::status::FieldError;
use super::{admin_rules, admin_stats};
use crate::actions::ActionFilter;
use crate::actions::workflow;
use crate::store::AuditQuery;

/// Recent actions and verdicts `GetUser` shows.
const RECENT: u32 = 20;
/// Longest nuke pattern or reason, in characters.
const MAX_PATTERN_CHARS: usize = 500;
/// How far back a nuke looks by default.
const DEFAULT_NUKE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How far back a nuke may look.
const MAX_NUKE_WINDOW: Duration = Duration::from_secs(60 * 60);
/// How long a nuke mutes by default.
const DEFAULT_NUKE_MUTE: Duration = Duration::from_secs(10 * 60);

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
        {
            let by = principal_name(&request);
            admin_rules::upsert_rule(&self.app, request.into_inner(), &by).await
        }
    }
    async fn delete_rule(
        &self,
        request: Request<DeleteRuleRequest>,
    ) -> Result<Response<DeleteRuleResponse>, Status> {
        {
            let by = principal_name(&request);
            admin_rules::delete_rule(&self.app, request.into_inner(), &by).await
        }
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
        {
            let by = principal_name(&request);
            admin_rules::set_policy(&self.app, request.into_inner(), &by).await
        }
    }
    async fn get_stats(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<Stats>, Status> {
        admin_stats::get_stats(&self.app, request.into_inner()).await
    }
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let request = request.into_inner();
        let channel = id_field(request.channel, "channel")?;
        let user_id = id_field(request.user_id, "user_id")?;
        let moderator = &self.app.moderator;
        let history = moderator.state().user(&channel, &user_id).await.value;
        let actions = self
            .app
            .store
            .actions(
                &ActionFilter {
                    channel: Some(channel.clone()),
                    target_user_id: Some(user_id.clone()),
                    ..ActionFilter::default()
                },
                None,
                RECENT,
            )
            .await?;
        let records = self
            .app
            .store
            .audit_log(&AuditQuery {
                channel: Some(channel.clone()),
                user_id: Some(user_id.clone()),
                limit: RECENT,
                ..AuditQuery::default()
            })
            .await?;
        if history.is_none() && actions.is_empty() && records.is_empty() {
            return Err(Status::not_found(format!(
                "user `{user_id}` was never seen in channel `{channel}` (or has been forgotten)"
            )));
        }
        let history = history.unwrap_or_default();
        let engine = moderator.engine();
        let half_life = engine.rules().policy(&channel).escalation.heat_half_life;
        let now_ms = crate::store::unix_millis(SystemTime::now());
        let nick = records
            .first()
            .map(|r| r.message.nick.clone())
            .or_else(|| actions.first().map(|a| a.target_nick.clone()))
            .unwrap_or_else(|| user_id.clone());
        let time = |ms: Option<i64>| ms.map(|ms| crate::store::from_unix_millis(ms).into());
        Ok(Response::new(User {
            nick,
            first_seen: time(history.first_seen_ms),
            last_seen: time(history.last_seen_ms),
            messages: history.messages,
            heat: history.heat_at(now_ms, half_life),
            reputation: history.reputation(),
            offences: history.offences,
            escalation_step: history.escalation_step,
            recent_actions: actions.into_iter().map(Into::into).collect(),
            recent_verdicts: records.into_iter().map(|r| r.verdict.into()).collect(),
            channel,
            user_id,
        }))
    }
    async fn nuke(&self, request: Request<NukeRequest>) -> Result<Response<NukeResponse>, Status> {
        let requested_by = principal_name(&request);
        let request = request.into_inner();
        let channel = id_field(request.channel, "channel")?;
        if request.pattern.trim().is_empty() {
            return Err(FieldError::new("pattern", "is required").into());
        }
        let pattern = text_field(request.pattern, "pattern", MAX_PATTERN_CHARS)?;
        let window = duration_field(request.window, "window")?.unwrap_or(DEFAULT_NUKE_WINDOW);
        if window.is_zero() || window > MAX_NUKE_WINDOW {
            return Err(FieldError::new("window", "must be above 0 and at most 1 hour").into());
        }
        let duration = duration_field(request.duration, "duration")?.unwrap_or(DEFAULT_NUKE_MUTE);
        let duration = mute_duration(duration, "duration")?;
        let outcome = workflow::nuke(
            &self.app.dispatcher,
            &self.app.moderator,
            workflow::NukeRequest {
                channel,
                pattern,
                regex: request.regex,
                window,
                duration,
                moderator: id_field(request.moderator, "moderator")?,
                reason: text_field(request.reason, "reason", MAX_PATTERN_CHARS)?,
                dry_run: request.dry_run,
                requested_by,
            },
        )
        .await?;
        Ok(Response::new(NukeResponse {
            nuke_id: outcome.nuke_id,
            targets: outcome.targets,
            actions: outcome.actions.into_iter().map(Into::into).collect(),
            searched_messages: u32::try_from(outcome.searched).unwrap_or(u32::MAX),
        }))
    }
    async fn aegis(
        &self,
        request: Request<AegisRequest>,
    ) -> Result<Response<AegisResponse>, Status> {
        let requested_by = principal_name(&request);
        let request = request.into_inner();
        let channel = id_field(request.channel, "channel")?;
        let nuke_id = optional_id(request.nuke_id, "nuke_id")?;
        let moderator = id_field(request.moderator, "moderator")?;
        let (nuke_id, actions) = workflow::aegis(
            &self.app.dispatcher,
            &channel,
            nuke_id.as_deref(),
            &moderator,
            &requested_by,
        )
        .await?;
        Ok(Response::new(AegisResponse {
            nuke_id,
            actions: actions.into_iter().map(Into::into).collect(),
        }))
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
