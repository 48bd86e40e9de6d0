//! Retention: deleting records past their time, a bounded batch per statement, on both
//! backends, and giving an SQLite file's freed pages back.
//!
//! Neither backend has a portable `DELETE ... LIMIT`, so every statement deletes the rows a
//! subquery picks: `WHERE id IN (SELECT id FROM t WHERE <old> ORDER BY <time> LIMIT n)`. Each
//! batch is its own short statement (or, for actions, a short transaction): a pass over a
//! large backlog never holds a lock for long, and SQLite's one writer is free between
//! batches. The time is always a parameter, so tests do not wait for records to age.

use std::time::SystemTime;

use sqlx::Row;

use super::{Database, Store, StoreError, unix_millis};

/// Largest SQLite file [`Store::connect`] switches to incremental `auto_vacuum` (a `VACUUM`
/// copies the file: about a second per 64 MiB on a small machine's disk).
pub const VACUUM_AT_CONNECT_MAX_BYTES: u64 = 64 << 20;

/// A table the retention task deletes from (the label of `modbot_retention_deleted_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetentionTable {
    /// Audit records.
    AuditLog,
    /// Actions.
    Actions,
    /// Resolved appeals, deleted with their action.
    Appeals,
    /// Nukes, deleted once none of their actions is left.
    Nukes,
    /// Feedback examples.
    Feedback,
    /// The rule set's change history.
    RuleHistory,
    /// Settled review items (with the audit log: they keep the message's text).
    ReviewItems,
}

impl RetentionTable {
    /// The table's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuditLog => "audit_log",
            Self::Actions => "actions",
            Self::Appeals => "appeals",
            Self::Nukes => "nukes",
            Self::Feedback => "feedback",
            Self::RuleHistory => "ruleset_history",
            Self::ReviewItems => "review_items",
        }
    }
}

/// The size of an SQLite file in pages ([`Store::sqlite_pages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlitePages {
    /// Pages in the file.
    pub page_count: u64,
    /// Of those, pages on the free list (unused, but still taking disk space).
    pub freelist_count: u64,
}

/// An action that must be kept whatever its age: still waiting for a bridge or for the chat's
/// answer (`pending`, `sent`); in force at `$2` (a mute that has not run out, a permanent ban
/// that was not reversed; failed and expired actions never took effect); or under an open
/// appeal (which needs the action, and whose ruling may reverse it). The table is `a`.
const ACTION_KEPT: &str = "a.status IN ('pending', 'sent') \
     OR (a.status NOT IN ('failed', 'expired') AND a.reversed_by = '' \
         AND ((a.kind = 'ban' AND a.duration_ms IS NULL) \
              OR (a.duration_ms IS NOT NULL AND a.created_at + a.duration_ms > $2))) \
     OR EXISTS (SELECT 1 FROM appeals p WHERE p.action_id = a.id AND p.status = 'open')";

impl Store {
    /// Runs one batch delete, `sql` with the cutoff as `$1` (Unix milliseconds) and the batch
    /// size as `$2`: how many rows it deleted.
    async fn delete_batch(
        &self,
        sql: &'static str,
        cutoff: SystemTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.timed(async move {
            let done = sqlx::query(sql)
                .bind(unix_millis(cutoff))
                .bind(i64::from(limit))
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        })
        .await
    }

    /// Deletes up to `limit` settled review items held before `cutoff`, oldest first; pending
    /// ones wait for a ruling or their expiry whatever their age. How many were deleted.
    pub async fn delete_reviews_before(
        &self,
        cutoff: SystemTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.delete_batch(
            "DELETE FROM review_items WHERE id IN (SELECT id FROM review_items \
         WHERE created_at < $1 AND status <> 'pending' ORDER BY created_at, id LIMIT $2)",
            cutoff,
            limit,
        )
        .await
    }

    /// Deletes up to `limit` audit records decided before `cutoff`, oldest first, except those
    /// about a message whose action has an open appeal (resolving it as overturned turns the
    /// message into a training example). How many were deleted.
    pub async fn delete_audit_before(
        &self,
        cutoff: SystemTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.delete_batch(
            "DELETE FROM audit_log WHERE id IN (SELECT r.id FROM audit_log r \
         WHERE r.decided_at < $1 AND NOT EXISTS (SELECT 1 FROM appeals p \
           JOIN actions a ON a.id = p.action_id WHERE p.status = 'open' \
           AND a.channel = r.channel AND a.message_id = r.message_id) \
         ORDER BY r.decided_at, r.id LIMIT $2)",
            cutoff,
            limit,
        )
        .await
    }

    /// Deletes up to `limit` actions created before `cutoff`, oldest first, with their resolved
    /// appeals, except the actions that must be kept at `now` (pending or sent, in force, or
    /// under an open appeal). How many actions and appeals were deleted.
    pub async fn delete_actions_before(
        &self,
        cutoff: SystemTime,
        now: SystemTime,
        limit: u32,
    ) -> Result<(u64, u64), StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            // The ids first, then both deletes by id: a second pass by another replica, running
            // the same query between the two deletes, could otherwise make them pick different
            // rows (and an action would be deleted before its appeals, which the foreign key
            // refuses).
            let sql = format!(
                "SELECT a.id FROM actions a WHERE a.created_at < $1 AND NOT ({ACTION_KEPT}) \
                 ORDER BY a.created_at, a.id LIMIT $3"
            );
            let ids: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(unix_millis(cutoff))
                .bind(unix_millis(now))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| row.try_get("id"))
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                tx.rollback().await?;
                return Ok((0, 0));
            }
            let list = |first: usize| {
                (first..first + ids.len())
                    .map(|n| format!("${n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut appeals = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM appeals WHERE status <> 'open' AND action_id IN ({})",
                list(1)
            )));
            for id in &ids {
                appeals = appeals.bind(id);
            }
            let appeals = appeals.execute(&mut *tx).await?.rows_affected();
            // Checked again in the delete itself: an action may have been appealed since it was
            // picked.
            let mut actions = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM actions WHERE id IN ({}) AND id IN (SELECT a.id FROM actions a \
                 WHERE a.created_at < $1 AND NOT ({ACTION_KEPT}))",
                list(3)
            )))
            .bind(unix_millis(cutoff))
            .bind(unix_millis(now));
            for id in &ids {
                actions = actions.bind(id);
            }
            let actions = actions.execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok((actions, appeals))
        })
        .await
    }

    /// Deletes up to `limit` nukes made before `cutoff` none of whose actions is left. How
    /// many were deleted.
    pub async fn delete_nukes_before(
        &self,
        cutoff: SystemTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.delete_batch(
            "DELETE FROM nukes WHERE id IN (SELECT n.id FROM nukes n WHERE n.created_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.nuke_id = n.id) \
         ORDER BY n.created_at, n.id LIMIT $2)",
            cutoff,
            limit,
        )
        .await
    }

    /// Deletes up to `limit` feedback examples recorded before `cutoff`, oldest first. How
    /// many were deleted.
    pub async fn delete_feedback_before(
        &self,
        cutoff: SystemTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.delete_batch(
            "DELETE FROM feedback WHERE id IN (SELECT f.id FROM feedback f \
         WHERE f.created_at < $1 ORDER BY f.created_at, f.id LIMIT $2)",
            cutoff,
            limit,
        )
        .await
    }

    /// Deletes the rule history's oldest revisions changed before `cutoff`, up to `limit`
    /// revisions (a revision is deleted whole: the seed's is one row per rule), never the
    /// latest revision. How many rows were deleted.
    pub async fn delete_rule_history_before(
        &self,
        cutoff: SystemTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.delete_batch(
            "DELETE FROM ruleset_history WHERE revision IN (SELECT DISTINCT h.revision \
         FROM ruleset_history h WHERE h.changed_at < $1 \
         AND h.revision < (SELECT MAX(revision) FROM ruleset_history) \
         ORDER BY h.revision LIMIT $2)",
            cutoff,
            limit,
        )
        .await
    }

    /// Gives an SQLite file's free pages back to the file system (`PRAGMA
    /// incremental_vacuum`: bounded by what the last deletes freed). Nothing on PostgreSQL,
    /// whose autovacuum makes deleted rows' space reusable by itself.
    pub async fn reclaim_space(&self) -> Result<(), StoreError> {
        self.timed(async move {
            if self.backend == Database::Sqlite {
                sqlx::query("PRAGMA incremental_vacuum")
                    .execute(&self.pool)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// An SQLite file's size in pages; `None` on PostgreSQL.
    pub async fn sqlite_pages(&self) -> Result<Option<SqlitePages>, StoreError> {
        self.timed(async move {
            if self.backend != Database::Sqlite {
                return Ok(None);
            }
            let mut conn = self.pool.acquire().await?;
            let mut counts = [0; 2];
            for (count, name) in counts.iter_mut().zip(["page_count", "freelist_count"]) {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
                    .persistent(false)
                    .fetch_one(&mut *conn)
                    .await?;
                let value: i64 = row.try_get(0)?;
                *count = value.max(0).unsigned_abs();
            }
            let [page_count, freelist_count] = counts;
            Ok(Some(SqlitePages {
                page_count,
                freelist_count,
            }))
        })
        .await
    }

    /// The SQLite file's `auto_vacuum` mode: 0 none, 1 full, 2 incremental.
    pub async fn sqlite_auto_vacuum(&self) -> Result<Option<i64>, StoreError> {
        self.timed(async move {
            if self.backend != Database::Sqlite {
                return Ok(None);
            }
            let mut conn = self.pool.acquire().await?;
            // SQLite answers this pragma when the statement is prepared, from what the connection
            // last read of the file's header: a read first brings that up to date (another
            // connection may have switched the mode since), and the statement is not cached.
            sqlx::query("SELECT COUNT(*) FROM sqlite_master")
                .fetch_one(&mut *conn)
                .await?;
            let row = sqlx::query("PRAGMA auto_vacuum")
                .persistent(false)
                .fetch_one(&mut *conn)
                .await?;
            Ok(Some(row.try_get(0)?))
        })
        .await
    }

    /// Puts an SQLite file in incremental `auto_vacuum` mode, so that [`Self::reclaim_space`]
    /// can shrink it. The mode is stored in the file and takes effect on an existing file only
    /// through a `VACUUM`, which rewrites it: once, the first time a file made before this mode
    /// (or by another program) is opened. On a new, empty file that costs nothing.
    ///
    /// A `VACUUM` holds the file's write lock while it copies the whole file, so a file larger
    /// than `max_bytes` is left as it is, with a warning: [`Store::connect`] passes
    /// [`VACUUM_AT_CONNECT_MAX_BYTES`] (a server would otherwise start, or fail its liveness
    /// probe, only after copying a large file), `modbot migrate` no limit. Never fails for the
    /// `VACUUM` itself: without it the file works as before and only keeps its size.
    pub async fn use_incremental_vacuum(&self, max_bytes: Option<u64>) -> Result<(), StoreError> {
        if self.sqlite_auto_vacuum().await? != Some(0) {
            // PostgreSQL, or already incremental (2) or full (1, which also shrinks the file).
            return Ok(());
        }
        let pages = self.sqlite_pages().await?.map_or(0, |p| p.page_count);
        let page_size: i64 = sqlx::query("PRAGMA page_size")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let bytes = pages.saturating_mul(page_size.max(0).unsigned_abs());
        if max_bytes.is_some_and(|max| bytes > max) {
            tracing::warn!(
                bytes,
                "the SQLite file does not give deleted records' space back yet: switching it \
                 (one VACUUM, which copies the file) is left to `modbot migrate`, run once while \
                 the server is stopped"
            );
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        let started = std::time::Instant::now();
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .persistent(false)
            .execute(&mut *conn)
            .await?;
        // Not fatal: the file works as before, it only keeps its size (another process holding
        // it open, say, makes VACUUM wait out the busy timeout and fail). The next start tries
        // again.
        match sqlx::query("VACUUM").execute(&mut *conn).await {
            Ok(_) => tracing::info!(
                elapsed = ?started.elapsed(),
                "the SQLite file now gives freed space back (auto_vacuum = incremental, one VACUUM)"
            ),
            Err(error) => tracing::warn!(
                %error,
                "could not switch the SQLite file to incremental auto_vacuum; deleted records' \
                 space stays in the file until a later start succeeds"
            ),
        }
        Ok(())
    }
}
