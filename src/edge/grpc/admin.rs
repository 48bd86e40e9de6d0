//! `modbot.v1.Admin`: rules and policies ([`super::admin_rules`]), statistics
//! ([`super::admin_stats`]), the model ([`super::admin_models`]), users and nukes.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::service::Services;

use crate::proto::admin_server::Admin;
use crate::proto::*;

use super::actions::mute_duration;
use super::auth::principal_name;
use super::convert::{duration, duration_field, id_field, optional_id, text_field};
use super::status::FieldError;
use super::{admin_models, admin_rules, admin_stats};
use crate::service::actions::workflow;

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
    services: Arc<Services>,
}

impl AdminService {
    /// The service over the shared application state.
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
    }
}

/// Decision events buffered per watcher between the feed and the connection.
const FEED_BUFFER: usize = 256;

#[tonic::async_trait]
impl Admin for AdminService {
    type WatchDecisionsStream = super::WatchStream<DecisionEvent>;

    async fn watch_decisions(
        &self,
        request: Request<WatchDecisionsRequest>,
    ) -> Result<Response<Self::WatchDecisionsStream>, Status> {
        let channel = optional_id(request.into_inner().channel, "channel")?;
        use crate::service::feed::{DecisionFeed, MAX_WATCHERS};
        use tokio_stream::StreamExt as _;
        let Some(subscription) = self.services.feed.subscribe() else {
            return Err(Status::resource_exhausted(format!(
                "this replica already serves {MAX_WATCHERS} live feeds; close one or try another replica"
            )));
        };

        let (items_tx, items_rx) = tokio::sync::mpsc::channel(FEED_BUFFER);
        let stopping = self.services.stopping.subscribe();
        tokio::spawn(DecisionFeed::watch(
            subscription,
            channel,
            items_tx,
            stopping,
        ));
        // Converted as the client reads: when it goes, the receiver goes with the stream and
        // the watch ends at once.
        let events = tokio_stream::wrappers::ReceiverStream::new(items_rx).map(
            |item: crate::service::feed::FeedItem| {
                Ok(DecisionEvent {
                    message: Some(super::convert::chat_message_out(&item.decided.message)),
                    verdict: Some(item.decided.verdict.clone().into()),
                    skipped: item.skipped,
                })
            },
        );
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_rules(
        &self,
        request: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        admin_rules::list_rules(&self.services, request.into_inner()).await
    }
    async fn upsert_rule(
        &self,
        request: Request<UpsertRuleRequest>,
    ) -> Result<Response<Rule>, Status> {
        {
            let by = principal_name(&request);
            admin_rules::upsert_rule(&self.services, request.into_inner(), &by).await
        }
    }
    async fn backtest_rule(
        &self,
        request: Request<BacktestRuleRequest>,
    ) -> Result<Response<BacktestRuleResponse>, Status> {
        admin_rules::backtest_rule(&self.services, request.into_inner()).await
    }
    async fn delete_rule(
        &self,
        request: Request<DeleteRuleRequest>,
    ) -> Result<Response<DeleteRuleResponse>, Status> {
        {
            let by = principal_name(&request);
            admin_rules::delete_rule(&self.services, request.into_inner(), &by).await
        }
    }
    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<Policy>, Status> {
        admin_rules::get_policy(&self.services, request.into_inner()).await
    }
    async fn set_policy(
        &self,
        request: Request<SetPolicyRequest>,
    ) -> Result<Response<Policy>, Status> {
        {
            let by = principal_name(&request);
            admin_rules::set_policy(&self.services, request.into_inner(), &by).await
        }
    }
    async fn get_stats(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<Stats>, Status> {
        admin_stats::get_stats(&self.services, request.into_inner()).await
    }
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let request = request.into_inner();
        let channel = id_field(request.channel, "channel")?;
        let user_id = id_field(request.user_id, "user_id")?;
        let Some(profile) = self
            .services
            .user_profile(channel.clone(), user_id.clone())
            .await?
        else {
            return Err(Status::not_found(format!(
                "user `{user_id}` was never seen in channel `{channel}` (or has been forgotten)"
            )));
        };
        Ok(Response::new(User {
            nick: profile.nick,
            first_seen: profile.first_seen.map(Into::into),
            last_seen: profile.last_seen.map(Into::into),
            messages: profile.messages,
            heat: profile.heat,
            reputation: profile.reputation,
            offences: profile.offences,
            escalation_step: profile.escalation_step,
            strikes: profile.strikes,
            ladder_step: profile.ladder_step,
            next_escalation: Decision::from(profile.next_escalation.0).into(),
            next_timeout: profile.next_escalation.1.map(duration),
            recent_actions: profile.recent_actions.into_iter().map(Into::into).collect(),
            recent_verdicts: profile
                .recent_verdicts
                .into_iter()
                .map(Into::into)
                .collect(),
            recent_messages: profile
                .recent_messages
                .into_iter()
                .map(|m| UserMessage {
                    message_id: m.message_id,
                    text: m.text,
                    sent_at: Some(crate::domain::from_unix_millis(m.at_ms).into()),
                })
                .collect(),
            channel: profile.channel,
            user_id: profile.user_id,
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
            &self.services.dispatcher,
            &self.services.moderator,
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
            &self.services.dispatcher,
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
        Ok(Response::new(
            admin_models::get_model_info(&self.services).await,
        ))
    }

    async fn list_model_versions(
        &self,
        _: Request<ListModelVersionsRequest>,
    ) -> Result<Response<ListModelVersionsResponse>, Status> {
        Ok(Response::new(
            admin_models::list_model_versions(&self.services).await,
        ))
    }

    async fn try_model(
        &self,
        request: Request<TryModelRequest>,
    ) -> Result<Response<ModelRollout>, Status> {
        let by = principal_name(&request);
        admin_models::try_model(&self.services, request.into_inner(), &by)
            .await
            .map(Response::new)
    }

    async fn end_model_trial(
        &self,
        request: Request<EndModelTrialRequest>,
    ) -> Result<Response<ModelRollout>, Status> {
        let by = principal_name(&request);
        admin_models::end_model_trial(&self.services, request.into_inner(), &by)
            .await
            .map(Response::new)
    }

    async fn promote_model(
        &self,
        request: Request<PromoteModelRequest>,
    ) -> Result<Response<ModelRollout>, Status> {
        let by = principal_name(&request);
        admin_models::promote_model(&self.services, request.into_inner(), &by)
            .await
            .map(Response::new)
    }

    async fn rollback_model(
        &self,
        request: Request<RollbackModelRequest>,
    ) -> Result<Response<ModelRollout>, Status> {
        let by = principal_name(&request);
        admin_models::rollback_model(&self.services, request.into_inner(), &by)
            .await
            .map(Response::new)
    }
}
