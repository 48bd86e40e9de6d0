//! Which head set decides and which is on trial (`Admin.TryModel`, `PromoteModel`,
//! `RollbackModel`): one row per change, the latest in force on every replica.
//!
//! A change is written as the revision after the one its writer read, so of two concurrent
//! changes one is refused by the primary key ([`Store::write_rollout`] answers `None`) and
//! neither can undo the other unseen. The store neither knows nor checks what a version is:
//! the model service validates a change before it is written.

use std::time::SystemTime;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, from_unix_millis, unix_millis};

/// One rollout state, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRollout {
    /// Its revision (0: nothing was ever changed, the shipped heads decide).
    pub revision: u64,
    /// The heads version deciding ("": the shipped heads).
    pub active: String,
    /// What a rollback restores ("": the shipped heads).
    pub previous: String,
    /// The heads version on trial ("": none).
    pub candidate: String,
    /// `none`, `shadow` or `split`.
    pub mode: String,
    /// A split's share, in `[0, 1]`.
    pub share: f64,
    /// A split's unit: `channel` or `user`.
    pub unit: String,
    /// `try`, `end`, `promote` or `rollback` (empty for revision 0).
    pub change: String,
    /// Why, as its author said.
    pub reason: String,
    /// When.
    pub changed_at: SystemTime,
    /// By whom.
    pub changed_by: String,
}

impl Default for StoredRollout {
    fn default() -> Self {
        Self {
            revision: 0,
            active: String::new(),
            previous: String::new(),
            candidate: String::new(),
            mode: "none".to_owned(),
            share: 0.0,
            unit: "channel".to_owned(),
            change: String::new(),
            reason: String::new(),
            changed_at: SystemTime::UNIX_EPOCH,
            changed_by: String::new(),
        }
    }
}

/// The table's columns, in order.
macro_rules! columns {
    () => {
        "revision, active, previous, candidate, mode, share, unit, change, reason, changed_at, \
         changed_by"
    };
}

impl Store {
    /// The rollout in force: the latest row, or the default (the shipped heads, nothing on
    /// trial) when none was ever written. One indexed read: what every replica polls.
    pub async fn rollout(&self) -> Result<StoredRollout, StoreError> {
        self.timed(async move {
            let row = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM model_rollouts ORDER BY revision DESC LIMIT 1"
            ))
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref()
                .map_or_else(|| Ok(StoredRollout::default()), from_row)
        })
        .await
    }

    /// Writes `next` as revision `next.revision`, which must be one after the revision its
    /// writer read. `Ok(None)` when another change took that revision first: nothing is
    /// written, and the caller reads again.
    pub async fn write_rollout(
        &self,
        next: &StoredRollout,
    ) -> Result<Option<StoredRollout>, StoreError> {
        self.timed(async move {
            let written = sqlx::query(concat!(
                "INSERT INTO model_rollouts (",
                columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(i64::try_from(next.revision).unwrap_or(i64::MAX))
            .bind(&next.active)
            .bind(&next.previous)
            .bind(&next.candidate)
            .bind(&next.mode)
            .bind(next.share)
            .bind(&next.unit)
            .bind(&next.change)
            .bind(&next.reason)
            .bind(unix_millis(next.changed_at))
            .bind(&next.changed_by)
            .execute(&self.pool)
            .await;
            match written {
                Ok(_) => Ok(Some(next.clone())),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }
}

fn from_row(row: &AnyRow) -> Result<StoredRollout, StoreError> {
    let revision: i64 = row.try_get("revision")?;
    Ok(StoredRollout {
        revision: revision.max(0).unsigned_abs(),
        active: row.try_get("active")?,
        previous: row.try_get("previous")?,
        candidate: row.try_get("candidate")?,
        mode: row.try_get("mode")?,
        share: row.try_get("share")?,
        unit: row.try_get("unit")?,
        change: row.try_get("change")?,
        reason: row.try_get("reason")?,
        changed_at: from_unix_millis(row.try_get("changed_at")?),
        changed_by: row.try_get("changed_by")?,
    })
}

/// A moderator's ruling on a message decided while a candidate was on trial: a review item
/// approved or rejected, or an appeal against the automatic action upheld or overturned.
#[derive(Debug, Clone, PartialEq)]
pub struct RuledTrial {
    /// The message ruled on, `channel/message_id`: a message reviewed and then appealed is
    /// one message, and its latest ruling stands.
    pub message: String,
    /// Whether the moderator confirmed the message harmful (rejected it, or upheld the action
    /// taken on it) rather than clearing it (approved it, or overturned the action).
    pub rejected: bool,
    /// The version that decided, and its decision.
    pub decided: (String, String),
    /// The version on the other side of the trial, and its decision.
    pub other: (String, String),
}

impl Store {
    /// A number that moves whenever this process writes a ruling: a cached
    /// [`Store::ruled_trials`] read older than it is stale (other processes' rulings are not
    /// seen here).
    pub fn rulings_written(&self) -> u64 {
        self.rulings_written
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Notes that a ruling was written (see [`Store::rulings_written`]).
    pub(super) fn ruling_written(&self) {
        self.rulings_written
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The latest `limit` rulings on messages decided during a trial, newest first, with what
    /// each side of the trial decided: the review queue's approvals and rejections, and the
    /// rulings on appeals against automatic actions.
    pub async fn ruled_trials(&self, limit: u32) -> Result<Vec<RuledTrial>, StoreError> {
        self.timed(async move {
            let rows = sqlx::query(
                "SELECT t.channel, t.message_id, t.status, t.model_version, t.decision, \
                 t.trial_version, t.trial_decision FROM ( \
                   SELECT r.id AS id, r.resolved_at AS resolved_at, r.status AS status, \
                   a.channel AS channel, a.message_id AS message_id, \
                   a.model_version AS model_version, a.decision AS decision, \
                   a.trial_version AS trial_version, a.trial_decision AS trial_decision \
                   FROM review_items r JOIN audit_log a \
                   ON a.channel = r.channel AND a.message_id = r.message_id \
                   WHERE r.status IN ('approved', 'rejected') AND a.trial_version <> '' \
                 UNION ALL \
                   SELECT p.id, p.resolved_at, p.status, a.channel, a.message_id, \
                   a.model_version, a.decision, a.trial_version, a.trial_decision \
                   FROM appeals p JOIN actions x ON x.id = p.action_id \
                   JOIN audit_log a ON a.channel = x.channel AND a.message_id = x.message_id \
                   WHERE p.status IN ('upheld', 'overturned') AND x.source = 'automod' \
                   AND a.trial_version <> '' \
                 ) t ORDER BY t.resolved_at DESC, t.id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let status: String = row.try_get("status")?;
                    let channel: String = row.try_get("channel")?;
                    let message_id: String = row.try_get("message_id")?;
                    Ok(RuledTrial {
                        message: format!("{channel}/{message_id}"),
                        rejected: matches!(status.as_str(), "rejected" | "upheld"),
                        decided: (row.try_get("model_version")?, row.try_get("decision")?),
                        other: (
                            row.try_get("trial_version")?,
                            row.try_get("trial_decision")?,
                        ),
                    })
                })
                .collect()
        })
        .await
    }
}
