//! What modbot knows of one user in one channel (`Admin.GetUser`): their history from user
//! state, with the heat decayed to now by the channel's policy, and their latest actions and
//! notable verdicts from the database.

use std::time::SystemTime;

use super::Services;
use crate::domain::{Action, ActionFilter, Verdict, from_unix_millis, unix_millis};
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
    /// Escalating actions in the current heat episode.
    pub escalation_step: u32,
    /// Their latest actions, newest first.
    pub recent_actions: Vec<Action>,
    /// Their latest notable verdicts, newest first.
    pub recent_verdicts: Vec<Verdict>,
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
        let half_life = self
            .moderator
            .engine()
            .rules()
            .policy(&channel)
            .escalation
            .heat_half_life;
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
            heat: history.heat_at(unix_millis(SystemTime::now()), half_life),
            reputation: history.reputation(),
            offences: history.offences,
            escalation_step: history.escalation_step,
            recent_actions: actions,
            recent_verdicts: records.into_iter().map(|r| r.verdict).collect(),
            channel,
            user_id,
        }))
    }
}
