//! Rules and channel policies, versioned: one row per rule and per channel policy, each spec
//! the TOML text of its rules-file table (the store neither parses nor validates it: `rules`
//! does, before anything is written), a single-row revision counter, and the history of every
//! revision.
//!
//! Every change runs in one transaction whose first statement bumps the revision
//! (`UPDATE ruleset_revision ... RETURNING revision`). Being first matters: it takes the write
//! lock before anything is read, so concurrent writers queue behind one another (PostgreSQL's
//! row lock; SQLite's write lock, waited for under its busy timeout) instead of one of them
//! failing on a stale snapshot, and each gets a revision of its own.

use std::time::SystemTime;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Database, Store, StoreError, from_unix_millis, unix_millis};

/// One stored rule.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    /// The rule's id (also inside its spec).
    pub id: String,
    /// Its `[[rule]]` table as TOML text.
    pub spec: String,
    /// The revision of the rule set that last changed it.
    pub revision: u64,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// Who changed it.
    pub updated_by: String,
}

/// One stored channel policy.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    /// The channel; `*` for the default policy.
    pub channel: String,
    /// Its whole `[policy]` table as TOML text.
    pub spec: String,
    /// The revision of the rule set that last changed it.
    pub revision: u64,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// Who changed it.
    pub updated_by: String,
}

/// Every rule and policy as of one revision, read in one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredRuleSet {
    /// The revision they are; 0 when the database was never seeded.
    pub revision: u64,
    /// The rules, by id.
    pub rules: Vec<StoredRule>,
    /// The policies, by channel (`*` sorts first).
    pub policies: Vec<StoredPolicy>,
}

/// What a history entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeTarget {
    /// A rule, by id.
    Rule,
    /// A channel policy, by channel.
    Policy,
}

impl ChangeTarget {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Policy => "policy",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "rule" => Some(Self::Rule),
            "policy" => Some(Self::Policy),
            _ => None,
        }
    }
}

/// How a history entry changed its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Written by seeding an empty database from the rules file.
    Seed,
    /// Created or replaced.
    Upsert,
    /// Deleted.
    Delete,
}

impl Change {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Upsert => "upsert",
            Self::Delete => "delete",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "seed" => Some(Self::Seed),
            "upsert" => Some(Self::Upsert),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// One entry of the rule set's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The revision the change made.
    pub revision: u64,
    /// A rule or a policy.
    pub target: ChangeTarget,
    /// The rule's id or the policy's channel.
    pub target_id: String,
    /// What was done.
    pub change: Change,
    /// The new spec; `None` for a delete.
    pub spec: Option<String>,
    /// When.
    pub changed_at: SystemTime,
    /// By whom.
    pub changed_by: String,
}

impl Store {
    /// The rule set's current revision (0: never seeded). One single-row read: what every
    /// replica's reload task polls.
    pub async fn ruleset_revision(&self) -> Result<u64, StoreError> {
        self.timed(async move {
            let revision: i64 = sqlx::query("SELECT revision FROM ruleset_revision WHERE id = 1")
                .fetch_one(&self.pool)
                .await?
                .try_get("revision")?;
            Ok(revision.max(0).unsigned_abs())
        })
        .await
    }

    /// Seeds a database that never had a rule set (revision 0) with `rules` (`(id, spec)`) and
    /// `policies` (`(channel, spec)`), all as revision 1, in one transaction. `None` when the
    /// database already had one: its rule set wins. Replicas starting together seed once: the
    /// guarded bump (`WHERE revision = 0`) lets only the first through, and the others, once
    /// it commits, find the revision no longer 0.
    pub async fn seed_ruleset(
        &self,
        rules: &[(String, String)],
        policies: &[(String, String)],
        by: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            let bumped = sqlx::query(
                "UPDATE ruleset_revision SET revision = revision + 1 \
             WHERE id = 1 AND revision = 0 RETURNING revision",
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = bumped else {
                tx.rollback().await?;
                return Ok(None);
            };
            let revision: i64 = row.try_get("revision")?;
            let now = unix_millis(SystemTime::now());
            for (id, spec) in rules {
                write_spec(&mut tx, SpecTable::Rules, id, spec, revision, now, by).await?;
                write_history(
                    &mut tx,
                    revision,
                    ChangeTarget::Rule,
                    id,
                    Change::Seed,
                    Some(spec),
                    now,
                    by,
                )
                .await?;
            }
            for (channel, spec) in policies {
                write_spec(
                    &mut tx,
                    SpecTable::Policies,
                    channel,
                    spec,
                    revision,
                    now,
                    by,
                )
                .await?;
                write_history(
                    &mut tx,
                    revision,
                    ChangeTarget::Policy,
                    channel,
                    Change::Seed,
                    Some(spec),
                    now,
                    by,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Some(revision.max(0).unsigned_abs()))
        })
        .await
    }

    /// Every rule and policy with the revision they make, read in one snapshot (a
    /// repeatable-read transaction on PostgreSQL; SQLite's read transactions are snapshots),
    /// so a change committed meanwhile is either wholly in it or wholly out.
    pub async fn load_ruleset(&self) -> Result<StoredRuleSet, StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            if self.backend == Database::Postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(&mut *tx)
                    .await?;
            }
            let revision: i64 = sqlx::query("SELECT revision FROM ruleset_revision WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?
                .try_get("revision")?;
            let rules = sqlx::query(
                "SELECT id, spec, revision, updated_at, updated_by FROM rules ORDER BY id",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(rule_from_row)
            .collect::<Result<_, _>>()?;
            let policies = sqlx::query(
                "SELECT channel, spec, revision, updated_at, updated_by FROM channel_policies \
             ORDER BY channel",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(policy_from_row)
            .collect::<Result<_, _>>()?;
            tx.commit().await?;
            Ok(StoredRuleSet {
                revision: revision.max(0).unsigned_abs(),
                rules,
                policies,
            })
        })
        .await
    }

    /// One rule by id.
    pub async fn stored_rule(&self, id: &str) -> Result<Option<StoredRule>, StoreError> {
        self.timed(async move {
            let row = sqlx::query(
                "SELECT id, spec, revision, updated_at, updated_by FROM rules WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(rule_from_row).transpose()
        })
        .await
    }

    /// One channel's own policy (`*`: the default one).
    pub async fn stored_policy(&self, channel: &str) -> Result<Option<StoredPolicy>, StoreError> {
        self.timed(async move {
            let row = sqlx::query(
                "SELECT channel, spec, revision, updated_at, updated_by FROM channel_policies \
             WHERE channel = $1",
            )
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(policy_from_row).transpose()
        })
        .await
    }

    /// Creates or replaces a rule (its spec already validated) as a new revision.
    pub async fn upsert_rule(
        &self,
        id: &str,
        spec: &str,
        by: &str,
    ) -> Result<StoredRule, StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            let revision = bump(&mut tx).await?;
            let now = unix_millis(SystemTime::now());
            write_spec(&mut tx, SpecTable::Rules, id, spec, revision, now, by).await?;
            write_history(
                &mut tx,
                revision,
                ChangeTarget::Rule,
                id,
                Change::Upsert,
                Some(spec),
                now,
                by,
            )
            .await?;
            tx.commit().await?;
            Ok(StoredRule {
                id: id.to_owned(),
                spec: spec.to_owned(),
                revision: revision.max(0).unsigned_abs(),
                updated_at: from_unix_millis(now),
                updated_by: by.to_owned(),
            })
        })
        .await
    }

    /// Deletes a rule as a new revision; `None` (and no new revision) when there is no such
    /// rule.
    pub async fn delete_rule(&self, id: &str, by: &str) -> Result<Option<u64>, StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            let revision = bump(&mut tx).await?;
            let deleted = sqlx::query("DELETE FROM rules WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let now = unix_millis(SystemTime::now());
            write_history(
                &mut tx,
                revision,
                ChangeTarget::Rule,
                id,
                Change::Delete,
                None,
                now,
                by,
            )
            .await?;
            tx.commit().await?;
            Ok(Some(revision.max(0).unsigned_abs()))
        })
        .await
    }

    /// Creates or replaces a channel's policy (its spec already validated) as a new revision.
    pub async fn set_policy(
        &self,
        channel: &str,
        spec: &str,
        by: &str,
    ) -> Result<StoredPolicy, StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            let revision = bump(&mut tx).await?;
            let now = unix_millis(SystemTime::now());
            write_spec(
                &mut tx,
                SpecTable::Policies,
                channel,
                spec,
                revision,
                now,
                by,
            )
            .await?;
            write_history(
                &mut tx,
                revision,
                ChangeTarget::Policy,
                channel,
                Change::Upsert,
                Some(spec),
                now,
                by,
            )
            .await?;
            tx.commit().await?;
            Ok(StoredPolicy {
                channel: channel.to_owned(),
                spec: spec.to_owned(),
                revision: revision.max(0).unsigned_abs(),
                updated_at: from_unix_millis(now),
                updated_by: by.to_owned(),
            })
        })
        .await
    }

    /// The whole history, oldest revision first.
    pub async fn ruleset_history(&self) -> Result<Vec<HistoryEntry>, StoreError> {
        self.timed(async move {
            let rows = sqlx::query(
                "SELECT revision, target, target_id, change, spec, changed_at, changed_by \
             FROM ruleset_history ORDER BY revision, target, target_id",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(history_from_row).collect()
        })
        .await
    }
}

/// The next revision, taken inside `tx` as its first statement (see the module's doc).
async fn bump(tx: &mut Transaction<'static, Any>) -> Result<i64, StoreError> {
    let revision: i64 = sqlx::query(
        "UPDATE ruleset_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(&mut **tx)
    .await?
    .try_get("revision")?;
    Ok(revision)
}

/// A stored spec's table: `rules` keyed by rule id, `channel_policies` by channel.
#[derive(Clone, Copy)]
enum SpecTable {
    Rules,
    Policies,
}

/// Inserts or replaces one rule's or policy's spec at `revision`.
async fn write_spec(
    tx: &mut Transaction<'static, Any>,
    table: SpecTable,
    key: &str,
    spec: &str,
    revision: i64,
    now: i64,
    by: &str,
) -> Result<(), StoreError> {
    let (table, key_column) = match table {
        SpecTable::Rules => ("rules", "id"),
        SpecTable::Policies => ("channel_policies", "channel"),
    };
    let sql = format!(
        "INSERT INTO {table} ({key_column}, spec, revision, updated_at, updated_by) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT ({key_column}) DO UPDATE SET spec = excluded.spec, \
         revision = excluded.revision, updated_at = excluded.updated_at, \
         updated_by = excluded.updated_by"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .bind(spec)
        .bind(revision)
        .bind(now)
        .bind(by)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)] // One column each; a struct would only rename them.
async fn write_history(
    tx: &mut Transaction<'static, Any>,
    revision: i64,
    target: ChangeTarget,
    target_id: &str,
    change: Change,
    spec: Option<&str>,
    now: i64,
    by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ruleset_history (revision, target, target_id, change, spec, changed_at, \
         changed_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(revision)
    .bind(target.as_str())
    .bind(target_id)
    .bind(change.as_str())
    .bind(spec)
    .bind(now)
    .bind(by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn rule_from_row(row: &AnyRow) -> Result<StoredRule, StoreError> {
    let revision: i64 = row.try_get("revision")?;
    Ok(StoredRule {
        id: row.try_get("id")?,
        spec: row.try_get("spec")?,
        revision: revision.max(0).unsigned_abs(),
        updated_at: from_unix_millis(row.try_get("updated_at")?),
        updated_by: row.try_get("updated_by")?,
    })
}

fn policy_from_row(row: &AnyRow) -> Result<StoredPolicy, StoreError> {
    let revision: i64 = row.try_get("revision")?;
    Ok(StoredPolicy {
        channel: row.try_get("channel")?,
        spec: row.try_get("spec")?,
        revision: revision.max(0).unsigned_abs(),
        updated_at: from_unix_millis(row.try_get("updated_at")?),
        updated_by: row.try_get("updated_by")?,
    })
}

fn history_from_row(row: &AnyRow) -> Result<HistoryEntry, StoreError> {
    let revision: i64 = row.try_get("revision")?;
    let target_id: String = row.try_get("target_id")?;
    let corrupt = |message: String| StoreError::Corrupt {
        id: format!("ruleset_history {revision} {target_id}"),
        message,
    };
    let target: String = row.try_get("target")?;
    let change: String = row.try_get("change")?;
    Ok(HistoryEntry {
        revision: revision.max(0).unsigned_abs(),
        target: ChangeTarget::from_name(&target)
            .ok_or_else(|| corrupt(format!("target `{target}` is unknown")))?,
        change: Change::from_name(&change)
            .ok_or_else(|| corrupt(format!("change `{change}` is unknown")))?,
        spec: row.try_get("spec")?,
        changed_at: from_unix_millis(row.try_get("changed_at")?),
        changed_by: row.try_get("changed_by")?,
        target_id,
    })
}
