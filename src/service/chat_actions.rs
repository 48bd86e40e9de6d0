//! A human moderator's action seen in the chat (a mute, ban or unban a bridge reports): recorded
//! as an executed action, so the audit trail of actions is one table, counted on the target's
//! ladder, and turned into a training example when it follows one of their messages.

use std::time::{Duration, SystemTime};

use super::Services;
use super::actions::dispatch::{chat_action_id, count_recorded};
use crate::domain::{ActionKind, ActionSource, ActionStatus, Decision, NewAction};
use crate::infra::store::Recorded;

/// A moderator's action as the chat reported it.
#[derive(Debug, Clone)]
pub struct ChatModAction {
    /// The channel.
    pub channel: String,
    /// The moderator's nick.
    pub moderator: String,
    /// Whom it was done to.
    pub target: String,
    /// What it means for the ladder; `None` for unmutes and unbans.
    pub decision: Option<Decision>,
    /// What was done.
    pub kind: ActionKind,
    /// How long, for timed actions.
    pub duration: Option<Duration>,
    /// When the chat says it happened.
    pub at: SystemTime,
}

impl Services {
    /// Records `action`, reported by the bridge `bridge_id` on a stream opened by the
    /// credential `requested_by`. Its id is derived from what happened, so a bridge that
    /// replays its chat after a reconnect records it once. A lost record or example is
    /// logged and counted, never an error: the chat goes on.
    pub async fn record_chat_action(
        &self,
        action: ChatModAction,
        bridge_id: &str,
        requested_by: &str,
    ) {
        let ChatModAction {
            channel,
            moderator,
            target,
            decision,
            kind,
            duration,
            at,
        } = action;
        let id = chat_action_id(&channel, &target, kind, at);
        let mut recorded = NewAction {
            channel: channel.clone(),
            target_user_id: target.clone(),
            target_nick: target.clone(),
            kind,
            duration,
            reason: format!("{moderator} in chat"),
            source: ActionSource::Moderator,
            moderator: moderator.clone(),
            message_id: String::new(),
            idempotency_key: None,
            requested_by: requested_by.to_owned(),
        }
        .into_action(id, at, Duration::ZERO);
        recorded.status = ActionStatus::Executed;
        // The bridge that saw it: checked against the credential's binding at the hello.
        recorded.bridge_id = bridge_id.to_owned();
        match self.store.record_action(&recorded).await {
            Ok(Recorded::New(action)) => count_recorded(&action),
            Ok(_) => {}
            Err(error) => {
                metrics::counter!("modbot_action_write_failures_total").increment(1);
                tracing::warn!(%error, channel, target, "cannot record a moderator's action");
            }
        }

        let Some(decision) = decision else {
            return;
        };
        let feedback = self
            .moderator
            .moderator_action(&channel, &moderator, &target, decision, at)
            .await;
        if let Some(feedback) = feedback {
            // A lost example costs little: log and count.
            match self.store.record_feedback(&feedback).await {
                Ok(true) => {
                    metrics::counter!("modbot_feedback_total", "source" => feedback.source.as_str())
                        .increment(1)
                }
                Ok(false) => {}
                Err(error) => {
                    metrics::counter!("modbot_feedback_write_failures_total").increment(1);
                    tracing::warn!(%error, channel, target, "cannot record feedback");
                }
            }
        }
    }
}
