//! What modbot knows of one user in one channel (`Admin.GetUser`): their history from user
//! state, with the heat and strikes decayed to now by the channel's policy and where they
//! stand on its escalation ladder, and their latest actions and notable verdicts from the
//! database.

use std::time::{Duration, SystemTime};

use super::Services;
use crate::domain::{Action, ActionFilter, Decision, Verdict, from_unix_millis, unix_millis};
use crate::engine::decision::escalation;
use crate::infra::store::{AuditQuery, StoreError};

/// Recent actions and verdicts a profile shows.
pub const RECENT: u32 = 20;

/// One user in one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct UserProfile {
    /// The channel.
    pub channel: String,
    /// The user's id.
    pub user_id: String,
    /// The latest nick seen (from their verdicts or actions), else the id.
    pub nick: String,
    /// Their first message still remembered.
    pub first_seen: Option<SystemTime>,
    /// Their latest message.
    pub last_seen: Option<SystemTime>,
    /// Messages seen.
    pub messages: u64,
    /// Offence heat decayed to now with the channel's half-life.
    pub heat: f64,
    /// Trust in `(-1, 1)`.
    pub reputation: f64,
    /// Offences recorded.
    pub offences: u32,
    /// The ladder's stored rung: escalating actions in the current heat episode.
    pub escalation_step: u32,
    /// Strikes (the ladder's long memory) decayed to now with the channel's memory half-life.
    pub strikes: f64,
    /// The rung a timeout-worthy offence would take now.
    pub ladder_step: u32,
    /// What the ladder would make of a timeout-worthy offence now (warn, timeout or ban), and
    /// the timeout's length.
    pub next_escalation: (Decision, Option<Duration>),
    /// Their latest actions, newest first.
    pub recent_actions: Vec<Action>,
    /// Their latest notable verdicts, newest first.
    pub recent_verdicts: Vec<Verdict>,
    /// Their latest messages as the user state remembers them (normalised text), newest first.
    pub recent_messages: Vec<crate::domain::RecentMessage>,
}

impl Services {
    /// The profile of `user_id` in `channel`, or `None` when the user was never seen there
    /// (or has been forgotten, with nothing stored).
    pub async fn user_profile(
        &self,
        channel: String,
        user_id: String,
    ) -> Result<Option<UserProfile>, StoreError> {
        let history = self.moderator.state().user(&channel, &user_id).await.value;
        let filter = ActionFilter {
            channel: Some(channel.clone()),
            target_user_id: Some(user_id.clone()),
            ..ActionFilter::default()
        };
        let actions = self.store.actions(&filter, None, RECENT).await?;
        let records = self
            .store
            .audit_log(&AuditQuery {
                channel: Some(channel.clone()),
                user_id: Some(user_id.clone()),
                limit: RECENT,
                ..AuditQuery::default()
            })
            .await?;
        if history.is_none() && actions.is_empty() && records.is_empty() {
            return Ok(None);
        }
        let history = history.unwrap_or_default();
        let engine = self.moderator.engine();
        let ladder = &engine.rules().policy(&channel).escalation;
        let now_ms = unix_millis(SystemTime::now());
        let standing = escalation::standing(&history, ladder, now_ms);
        // A timeout-worthy offence as the ladder's first rung asks it: what the ladder makes
        // of it is the ladder's own doing.
        let next = escalation::escalate(
            Decision::Timeout,
            Some(ladder.first_timeout),
            &history,
            ladder,
            now_ms,
        );
        let nick = records
            .first()
            .map(|r| r.message.nick.clone())
            .or_else(|| actions.first().map(|a| a.target_nick.clone()))
            .unwrap_or_else(|| user_id.clone());
        Ok(Some(UserProfile {
            nick,
            first_seen: history.first_seen_ms.map(from_unix_millis),
            last_seen: history.last_seen_ms.map(from_unix_millis),
            messages: history.messages,
            heat: standing.heat,
            reputation: history.reputation(),
            offences: history.offences,
            escalation_step: history.escalation_step,
            strikes: standing.strikes,
            ladder_step: standing.step,
            next_escalation: (next.decision, next.duration),
            recent_actions: actions,
            recent_verdicts: records.into_iter().map(|r| r.verdict).collect(),
            recent_messages: history
                .recent
                .iter()
                .rev()
                .map(|m| m.as_ref().clone())
                .collect(),
            channel,
            user_id,
        }))
    }
}
