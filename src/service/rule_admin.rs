//! The Admin API's rules and channel policies: stored in the database, validated on write,
//! versioned.
//!
//! Every write is checked whole before anything is written (a rejected request leaves the
//! revision where it was), stored as a new revision, and applied on this replica before the
//! call answers; other replicas pick it up through their reload task
//! ([`crate::service::ruleset::reload_task`]).

use std::time::SystemTime;

use super::Services;
use crate::engine::rules::spec::{PolicySpec, RuleSpec};
use crate::engine::rules::{DEFAULT_POLICY, RulesError};
use crate::infra::store::StoreError;

/// Who the stored rows say made a change when the caller's credential has no name (a server
/// running without tokens); otherwise the credential's name is recorded.
const API_AUTHOR: &str = "admin-api";

fn author(by: &str) -> &str {
    if by.is_empty() { API_AUTHOR } else { by }
}

/// A stored spec that no longer reads: the database is not what modbot wrote.
pub fn corrupt(id: &str, error: RulesError) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: error.to_string(),
    }
}

/// A stored rule.
#[derive(Debug, Clone)]
pub struct RuleView {
    /// The rule, parameters explicit.
    pub spec: RuleSpec,
    /// The revision of the rule set that last changed it.
    pub revision: u64,
    /// When it last changed.
    pub updated_at: SystemTime,
}

/// A channel's policy in force.
#[derive(Debug, Clone)]
pub struct PolicyView {
    /// The policy.
    pub spec: PolicySpec,
    /// The revision of the rule set that last changed it.
    pub revision: u64,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// Whether it is the default policy (the channel has none of its own, or is `*`).
    pub is_default: bool,
}

/// Why a rule or policy was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The spec does not compile; nothing was written.
    #[error(transparent)]
    Invalid(RulesError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which stored rules [`Services::list_rules`] lists.
#[derive(Debug, Clone, Copy)]
pub enum RuleScope<'a> {
    /// The rules of every channel (no channel list).
    Global,
    /// The rules naming this channel, and the global ones when `include_global`.
    Channel {
        /// The channel.
        channel: &'a str,
        /// Whether global rules are listed too.
        include_global: bool,
    },
}

impl Services {
    /// The stored rules in `scope`, by id, and the rule set's revision.
    pub async fn list_rules(
        &self,
        scope: RuleScope<'_>,
    ) -> Result<(Vec<RuleView>, u64), StoreError> {
        let stored = self.store.load_ruleset().await?;
        let mut rules = Vec::new();
        for row in stored.rules {
            let spec = RuleSpec::from_toml(&row.spec, &format!("stored rule \"{}\"", row.id))
                .map_err(|e| corrupt(&row.id, e))?;
            let listed = match scope {
                RuleScope::Global => spec.channels.is_empty(),
                RuleScope::Channel {
                    channel,
                    include_global,
                } => {
                    spec.channels.iter().any(|c| c == channel)
                        || (include_global && spec.channels.is_empty())
                }
            };
            if listed {
                rules.push(RuleView {
                    spec,
                    revision: row.revision,
                    updated_at: row.updated_at,
                });
            }
        }
        // The store reads rules by id already; sorting here keeps the contract whatever the
        // database's collation.
        rules.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok((rules, stored.revision))
    }

    /// Creates or replaces a rule (a new id when it has none) as a new revision, `by` the
    /// named credential, and applies it here.
    pub async fn upsert_rule(&self, mut spec: RuleSpec, by: &str) -> Result<RuleView, WriteError> {
        if spec.id.is_empty() {
            spec.id = uuid::Uuid::now_v7().to_string();
        }
        spec.validate().map_err(WriteError::Invalid)?;
        spec.make_params_explicit().map_err(WriteError::Invalid)?;
        let text = spec.to_toml().map_err(WriteError::Invalid)?;
        let stored = self.store.upsert_rule(&spec.id, &text, author(by)).await?;
        self.apply_rules().await;
        Ok(RuleView {
            spec,
            revision: stored.revision,
            updated_at: stored.updated_at,
        })
    }

    /// Deletes a rule as a new revision and applies it here; `false` when there is no such
    /// rule (nothing changes).
    pub async fn delete_rule(&self, id: &str, by: &str) -> Result<bool, StoreError> {
        let deleted = self.store.delete_rule(id, author(by)).await?.is_some();
        if deleted {
            self.apply_rules().await;
        }
        Ok(deleted)
    }

    /// The policy in force in `channel`: its own, else the default one.
    pub async fn policy(&self, channel: &str) -> Result<PolicyView, StoreError> {
        let (stored, is_default) = match self.store.stored_policy(channel).await? {
            Some(own) => (own, channel == DEFAULT_POLICY),
            None => {
                let default = self
                    .store
                    .stored_policy(DEFAULT_POLICY)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt {
                        id: DEFAULT_POLICY.to_owned(),
                        message: "the default policy is missing".to_owned(),
                    })?;
                (default, true)
            }
        };
        let spec = PolicySpec::from_toml(
            &stored.spec,
            &format!("stored policy \"{}\"", stored.channel),
        )
        .map_err(|e| corrupt(&stored.channel, e))?;
        Ok(PolicyView {
            spec,
            revision: stored.revision,
            updated_at: stored.updated_at,
            is_default,
        })
    }

    /// Sets `channel`'s policy (`*`: the default) as a new revision and applies it here.
    pub async fn set_policy(
        &self,
        channel: &str,
        spec: PolicySpec,
        by: &str,
    ) -> Result<PolicyView, WriteError> {
        spec.validate(channel).map_err(WriteError::Invalid)?;
        let text = spec.to_toml().map_err(WriteError::Invalid)?;
        let stored = self.store.set_policy(channel, &text, author(by)).await?;
        self.apply_rules().await;
        Ok(PolicyView {
            spec,
            revision: stored.revision,
            updated_at: stored.updated_at,
            is_default: channel == DEFAULT_POLICY,
        })
    }

    /// Applies this replica's own change before the call answers. A failure does not undo
    /// the stored change: it is logged (and, for a rule set that does not compile, counted)
    /// and the reload task tries again at the next revision.
    async fn apply_rules(&self) {
        if let Err(error) = self.rules.refresh(&self.moderator).await {
            tracing::warn!(%error, "a rule change was stored but could not be applied here yet");
        }
    }
}
