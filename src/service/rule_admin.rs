//! The Admin API's rules and channel policies: stored in the database, validated on write,
//! versioned.
//!
//! Every write is checked whole before anything is written (a rejected request leaves the
//! revision where it was), stored as a new revision, and applied on this replica before the
//! call answers; other replicas pick it up through their reload task
//! ([`crate::service::ruleset::reload_task`]).

use std::time::SystemTime;

use super::Services;
use crate::domain::{ChannelMessage, Decision, Reason, from_unix_millis};
use crate::engine::rules::spec::{PolicySpec, RuleSpec};
use crate::engine::rules::{DEFAULT_POLICY, NotBacktestable, RulesError};
use crate::infra::store::StoreError;
use crate::service::ruleset::compile_candidate;

/// Most messages one backtest runs over (the state keeps `state.history_per_channel` per
/// channel; this bounds the work of one call whatever that is set to).
pub const MAX_BACKTEST_MESSAGES: usize = 5_000;
/// Most matches one backtest lists (all are counted).
pub const MAX_BACKTEST_MATCHES: usize = 200;
/// Backtests running at once on this replica.
static BACKTESTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
/// The id a backtested rule without one is given (nothing is stored under it).
const BACKTEST_ID: &str = "(backtest)";

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

/// Why a rule was not backtested.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The spec does not compile.
    #[error(transparent)]
    Invalid(RulesError),
    /// The rule cannot be tried on remembered messages; the text says why.
    #[error("this rule cannot be backtested: {0}")]
    NotBacktestable(NotBacktestable),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backtest itself failed (a panic outside any one rule: a bug).
    #[error("the backtest failed: {0}")]
    Failed(String),
}

/// One remembered message a backtested rule fired on.
#[derive(Debug, Clone)]
pub struct BacktestMatch {
    /// The message, as the channel's history keeps it (normalised text).
    pub message: ChannelMessage,
    /// What the rule said.
    pub reason: Reason,
    /// What was decided when it was said, and whether that was enforced; `None`: allowed
    /// (allowed messages leave no audit record).
    pub decided: Option<(Decision, bool)>,
}

impl BacktestMatch {
    /// Whether the message was left visible when it was said: allowed, or only a shadow
    /// decision (nothing enforced).
    pub fn allowed_before(&self) -> bool {
        match self.decided {
            None => true,
            Some((decision, enforced)) => decision == Decision::Allow || !enforced,
        }
    }
}

/// What a rule would have done over a channel's latest messages.
#[derive(Debug, Clone, Default)]
pub struct RuleBacktest {
    /// Messages tried.
    pub searched: usize,
    /// The messages it fired on, newest first, at most [`MAX_BACKTEST_MATCHES`].
    pub matches: Vec<BacktestMatch>,
    /// How many it fired on in all.
    pub matched: usize,
    /// Of those, how many had been allowed (left visible) when said.
    pub allowed_before: usize,
    /// Messages on which the rule panicked (skipped, as live moderation would).
    pub failed: usize,
    /// The time of the oldest message tried.
    pub since: Option<SystemTime>,
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

    /// Tries `spec` (as [`Self::upsert_rule`] would store it, but storing nothing) on
    /// `channel`'s latest `last` remembered messages (all the state keeps when 0), and says
    /// which it would have fired on and what had been decided about those when they were
    /// said. The rule runs whatever its mode, on each message alone
    /// ([`crate::engine::rules::RuleSet::backtest`]).
    pub async fn backtest_rule(
        &self,
        mut spec: RuleSpec,
        channel: &str,
        last: usize,
    ) -> Result<RuleBacktest, BacktestError> {
        if spec.id.is_empty() {
            spec.id = BACKTEST_ID.to_owned();
        }
        spec.validate().map_err(BacktestError::Invalid)?;
        spec.make_params_explicit()
            .map_err(BacktestError::Invalid)?;
        let text = spec.to_toml().map_err(BacktestError::Invalid)?;
        let stored = self.store.load_ruleset().await?;
        let rules = compile_candidate(&stored, &spec.id, &text).map_err(BacktestError::Invalid)?;
        let mut tried = self.moderator.state().channel_history(channel).await.value;
        let last = match last {
            0 => MAX_BACKTEST_MESSAGES,
            n => n.min(MAX_BACKTEST_MESSAGES),
        };
        tried.drain(..tried.len().saturating_sub(last));
        // Off the runtime's workers, one backtest at a time per replica: a costly rule (a
        // thousand regexes) over 5,000 messages takes a core for a while, never a worker that
        // moderation needs, and a caller repeating it only queues behind itself.
        let _turn = BACKTESTS
            .acquire()
            .await
            .expect("the backtest semaphore is never closed");
        let (backtest, tried) = {
            let id = spec.id.clone();
            let channel = channel.to_owned();
            tokio::task::spawn_blocking(move || {
                let backtest = rules.backtest(&id, &channel, &tried);
                (backtest, tried)
            })
            .await
            .map_err(|e| BacktestError::Failed(e.to_string()))?
        };
        let backtest = backtest.map_err(BacktestError::NotBacktestable)?;
        let mut result = RuleBacktest {
            searched: tried.len(),
            matched: backtest.hits.len(),
            failed: backtest.failed.len(),
            since: tried.first().map(|m| from_unix_millis(m.at_ms)),
            ..RuleBacktest::default()
        };
        if backtest.hits.is_empty() {
            return Ok(result);
        }
        let ids: Vec<&str> = backtest
            .hits
            .iter()
            .map(|hit| tried[hit.index].message_id.as_str())
            .collect();
        let decided = self.store.decisions_of(channel, &ids).await?;
        let mut matches: Vec<BacktestMatch> = backtest
            .hits
            .into_iter()
            .map(|hit| {
                let message = tried[hit.index].clone();
                BacktestMatch {
                    decided: decided
                        .get(&message.message_id)
                        .map(|d| (d.decision, d.enforced)),
                    message,
                    reason: hit.reason,
                }
            })
            .collect();
        result.allowed_before = matches.iter().filter(|m| m.allowed_before()).count();
        matches.reverse();
        matches.truncate(MAX_BACKTEST_MATCHES);
        result.matches = matches;
        Ok(result)
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
