//! Actions, appeals and nukes.

use std::collections::BTreeMap;
use std::time::SystemTime;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Feedback, Store, StoreError, from_unix_millis, storable_text, unix_millis};
use crate::domain::{
    Action, ActionFilter, ActionKind, ActionSource, ActionStatus, Appeal, AppealFilter,
    AppealStatus, Nuke, PageAfter,
};

impl Store {
    /// Actions by status name, created at or after `since`, in one channel or all.
    pub async fn action_counts(
        &self,
        channel: Option<&str>,
        since: Option<SystemTime>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        self.timed(async move { self.status_counts("actions", channel, since).await })
            .await
    }

    /// Appeals by status name, filed at or after `since`, in one channel or all.
    pub async fn appeal_counts(
        &self,
        channel: Option<&str>,
        since: Option<SystemTime>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        self.timed(async move { self.status_counts("appeals", channel, since).await })
            .await
    }

    async fn status_counts(
        &self,
        table: &'static str,
        channel: Option<&str>,
        since: Option<SystemTime>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let sql = format!(
            "SELECT status, COUNT(*) AS n FROM {table} \
             WHERE ($1 = '' OR channel = $1) AND created_at >= $2 GROUP BY status"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(channel.unwrap_or(""))
            .bind(since.map_or(i64::MIN, unix_millis))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                let n: i64 = row.try_get("n")?;
                Ok((status, n.max(0).unsigned_abs()))
            })
            .collect()
    }
}

/// A bridge's answer to one action command ([`Store::answer_actions`]).
#[derive(Debug, Clone, Copy)]
pub struct ActionAnswer<'a> {
    /// The action.
    pub id: &'a str,
    /// Carried out.
    pub ok: bool,
    /// The chat's error code when not.
    pub error: &'a str,
    /// What the chat said.
    pub detail: &'a str,
}

/// Most channels, bridge ids or action ids one dispatch statement names: far under the
/// parameter limits of SQLite (32,766) and PostgreSQL (65,535).
pub const MAX_ROUTES: usize = 1000;

/// What [`Store::expire_actions`] closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Pending actions that no bridge was sent: now `expired`.
    pub expired: u64,
    /// Sent actions that their bridge never answered: now `unknown`.
    pub unknown: u64,
}

const ACTION_COLUMNS: &str = "id, created_at, updated_at, expires_at, channel, target_user_id, \
     target_nick, kind, duration_ms, reason, source, moderator, message_id, idempotency_key, \
     request_hash, requested_by, status, error, detail, bridge_id, nuke_id, appeal_id, reversed_by";

const APPEAL_COLUMNS: &str = "id, created_at, action_id, channel, user_id, text, status, \
     moderator, note, resolved_at, reversal_action_id";

const NUKE_COLUMNS: &str = "id, created_at, channel, pattern, regex, window_ms, duration_ms, \
     moderator, reason, targets, undone_at, undone_by";

/// What recording an action did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Recorded now.
    New(Action),
    /// The key (or the derived id) was seen before, for the same request: the first action.
    Replayed(Action),
    /// The key was used before for a different request: the first action.
    Conflict(Action),
}

/// What filing an appeal did.
#[derive(Debug, Clone, PartialEq)]
pub enum Filed {
    /// Filed.
    Done,
    /// The action does not exist.
    NoAction,
    /// The action already has an open appeal: its id.
    AlreadyOpen(String),
}

/// What resolving an appeal did.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// Resolved, with the reversal action when one was made.
    Done(Appeal, Option<Box<Action>>),
    /// The appeal does not exist.
    NotFound,
    /// The appeal was resolved already (by someone else, possibly at the same moment).
    AlreadyResolved(Appeal),
}

impl Store {
    /// Records an action, unless its idempotency key (or, without one, its id) was recorded
    /// before by the same credential (`requested_by`: keys are scoped per credential): then
    /// the first action comes back instead. Atomic on both backends
    /// (`INSERT ... ON CONFLICT DO NOTHING`), so concurrent calls with one key record one
    /// action.
    pub async fn record_action(&self, action: &Action) -> Result<Recorded, StoreError> {
        self.timed(async move {
            let mut conn = self.pool.acquire().await?;
            let inserted = insert_action(&mut conn, action).await?;
            if inserted {
                return Ok(Recorded::New(action.clone()));
            }
            let existing = match &action.idempotency_key {
                Some(key) => {
                    let sql = format!(
                        "SELECT {ACTION_COLUMNS} FROM actions \
                         WHERE requested_by = $1 AND idempotency_key = $2"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&action.requested_by)
                        .bind(key)
                        .fetch_optional(&mut *conn)
                        .await?
                }
                None => {
                    let sql = format!("SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1");
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&action.id)
                        .fetch_optional(&mut *conn)
                        .await?
                }
            };
            let existing = existing
                .as_ref()
                .map(action_from_row)
                .transpose()?
                .ok_or_else(|| StoreError::Corrupt {
                    id: action.id.clone(),
                    message: "an insert conflicted but no conflicting action was found".into(),
                })?;
            Ok(if existing.request_hash == action.request_hash {
                Recorded::Replayed(existing)
            } else {
                Recorded::Conflict(existing)
            })
        })
        .await
    }

    /// One action by id.
    pub async fn action(&self, id: &str) -> Result<Option<Action>, StoreError> {
        self.timed(async move {
            let sql = format!("SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(action_from_row).transpose()
        })
        .await
    }

    /// Actions matching `filter`, newest first, at most `limit`, starting after `after`.
    pub async fn actions(
        &self,
        filter: &ActionFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Vec<Action>, StoreError> {
        self.timed(async move {
            let sql = format!(
                "SELECT {ACTION_COLUMNS} FROM actions \
                 WHERE ($1 = '' OR channel = $1) AND ($2 = '' OR target_user_id = $2) \
                 AND ($3 = '' OR kind = $3) AND ($4 = '' OR status = $4) AND ($5 = '' OR source = $5) \
                 AND created_at >= $6 AND created_at < $7 \
                 AND (created_at < $8 OR (created_at = $8 AND id < $9)) \
                 ORDER BY created_at DESC, id DESC LIMIT $10"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(filter.channel.as_deref().unwrap_or(""))
                .bind(filter.target_user_id.as_deref().unwrap_or(""))
                .bind(filter.kind.map_or("", ActionKind::as_str))
                .bind(filter.status.map_or("", ActionStatus::as_str))
                .bind(filter.source.map_or("", ActionSource::as_str))
                .bind(filter.since.map_or(i64::MIN, unix_millis))
                .bind(filter.until.map_or(i64::MAX, unix_millis))
                .bind(after.map_or(i64::MAX, |a| a.created_at_ms))
                .bind(after.map_or("", |a| a.id.as_str()))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(action_from_row).collect()
        })
        .await
    }

    /// Claims up to `limit` pending, unexpired actions of the channels in `routes` (each
    /// `(channel, bridge_id)`: the bridge it goes to), marking each sent to its channel's
    /// bridge, and returns them oldest first. One conditional update for every channel a
    /// replica serves: an action another bridge or replica claimed at the same moment is not
    /// returned, so each pending action goes to exactly one bridge. At most
    /// [`MAX_ROUTES`] routes per call (the databases bound a statement's parameters).
    pub async fn claim_pending(
        &self,
        routes: &[(&str, &str)],
        now: SystemTime,
        limit: u32,
    ) -> Result<Vec<Action>, StoreError> {
        self.timed(async move {
            if routes.is_empty() {
                return Ok(Vec::new());
            }
            assert!(
                routes.len() <= MAX_ROUTES,
                "at most MAX_ROUTES routes per claim"
            );
            // $1 now, $2 limit, then channel and bridge pairs from $3.
            let mut case = String::from("CASE channel");
            let mut channels = Vec::with_capacity(routes.len());
            for i in 0..routes.len() {
                let (channel, bridge) = (3 + 2 * i, 4 + 2 * i);
                case.push_str(&format!(" WHEN ${channel} THEN ${bridge}"));
                channels.push(format!("${channel}"));
            }
            case.push_str(" END");
            let channels = channels.join(", ");
            let sql = format!(
                "UPDATE actions SET status = 'sent', bridge_id = {case}, updated_at = $1 \
                 WHERE status = 'pending' AND channel IN ({channels}) AND expires_at > $1 AND id IN \
                 (SELECT id FROM actions WHERE status = 'pending' AND channel IN ({channels}) \
                  AND expires_at > $1 ORDER BY created_at, id LIMIT $2) \
                 RETURNING {ACTION_COLUMNS}"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(unix_millis(now))
                .bind(i64::from(limit));
            for (channel, bridge) in routes {
                query = query.bind(*channel).bind(*bridge);
            }
            let rows = query.fetch_all(&self.pool).await?;
            let mut actions = rows
                .iter()
                .map(action_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            actions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(actions)
        })
        .await
    }

    /// Actions sent to one of `bridge_ids` at or before `sent_before` that were never
    /// answered and have not expired, oldest first: what is sent to those bridge ids again.
    /// At most [`MAX_ROUTES`] ids per call.
    pub async fn unanswered_actions(
        &self,
        bridge_ids: &[&str],
        sent_before: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<Action>, StoreError> {
        self.timed(async move {
            if bridge_ids.is_empty() {
                return Ok(Vec::new());
            }
            assert!(bridge_ids.len() <= MAX_ROUTES, "at most MAX_ROUTES ids");
            let ids = (0..bridge_ids.len())
                .map(|i| format!("${}", 3 + i))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {ACTION_COLUMNS} FROM actions \
                 WHERE status = 'sent' AND bridge_id IN ({ids}) AND updated_at <= $1 \
                 AND expires_at > $2 ORDER BY created_at, id"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(unix_millis(sent_before))
                .bind(unix_millis(now));
            for id in bridge_ids {
                query = query.bind(*id);
            }
            let rows = query.fetch_all(&self.pool).await?;
            rows.iter().map(action_from_row).collect()
        })
        .await
    }

    /// Gives claimed actions back (their bridge could not take them, or its stream ended
    /// before they were written to it), so another bridge can be sent them: one statement.
    /// At most [`MAX_ROUTES`] ids per call.
    pub async fn unclaim_actions(&self, ids: &[&str], bridge_id: &str) -> Result<u64, StoreError> {
        self.timed(async move {
            if ids.is_empty() {
                return Ok(0);
            }
            assert!(ids.len() <= MAX_ROUTES, "at most MAX_ROUTES ids");
            let list = (0..ids.len())
                .map(|i| format!("${}", 2 + i))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE actions SET status = 'pending', bridge_id = '' \
                 WHERE status = 'sent' AND bridge_id = $1 AND id IN ({list})"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(bridge_id);
            for id in ids {
                query = query.bind(*id);
            }
            Ok(query.execute(&self.pool).await?.rows_affected())
        })
        .await
    }

    /// Records the chat's answers to actions sent to `bridge_id`, in one transaction: executed,
    /// or failed with the chat's error code. An answer counts even after the action expired
    /// (the chat is the truth), but never changes an action already answered, nor one sent to
    /// another bridge. Per answer, in order: `None` for an unknown id, otherwise the action as
    /// it is now and whether this answer changed it.
    ///
    /// One transaction for many answers because a busy chat answers hundreds of commands a
    /// second, and on SQLite every write transaction takes the one write lock: one each would
    /// queue the streams' answers behind each other and behind the audit writer.
    pub async fn answer_actions(
        &self,
        bridge_id: &str,
        answers: &[ActionAnswer<'_>],
        now: SystemTime,
    ) -> Result<Vec<Option<(Action, bool)>>, StoreError> {
        self.timed(async move {
            let update = format!(
                "UPDATE actions SET status = $2, error = $3, detail = $4, updated_at = $5 \
                 WHERE id = $1 AND bridge_id = $6 AND status IN ('sent', 'expired', 'unknown') \
                 RETURNING {ACTION_COLUMNS}"
            );
            let select = format!("SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1");
            let mut tx = self.pool.begin().await?;
            let mut outcomes = Vec::with_capacity(answers.len());
            for answer in answers {
                let changed = sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                    .bind(answer.id)
                    .bind(if answer.ok { "executed" } else { "failed" })
                    .bind(if answer.ok { "" } else { answer.error })
                    .bind(&*storable_text(answer.detail))
                    .bind(unix_millis(now))
                    .bind(bridge_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let outcome = match changed {
                    Some(row) => Some((action_from_row(&row)?, true)),
                    // Unknown, already answered, or sent elsewhere: the action as it is, if any.
                    None => sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                        .bind(answer.id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .as_ref()
                        .map(action_from_row)
                        .transpose()?
                        .map(|action| (action, false)),
                };
                outcomes.push(outcome);
            }
            tx.commit().await?;
            Ok(outcomes)
        })
        .await
    }

    /// Closes every open action whose time is up: a pending one (never sent) becomes
    /// `expired`; a sent one that its bridge never answered becomes `unknown`, since the chat
    /// may have carried it out. How many of each.
    pub async fn expire_actions(&self, now: SystemTime) -> Result<Expired, StoreError> {
        self.timed(async move {
            let now = unix_millis(now);
            let mut counts = Expired::default();
            for (from, to, count) in [
                ("pending", "expired", &mut counts.expired),
                ("sent", "unknown", &mut counts.unknown),
            ] {
                // Literal statuses, so the planner can use the partial index of open actions.
                let sql = format!(
                    "UPDATE actions SET status = '{to}', updated_at = $1 \
                     WHERE status = '{from}' AND expires_at <= $1"
                );
                let result = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                *count = result.rows_affected();
            }
            Ok(counts)
        })
        .await
    }

    /// Files an appeal, unless its action already has an open one (the partial unique index
    /// decides, so two concurrent filings make one appeal).
    pub async fn file_appeal(&self, appeal: &Appeal) -> Result<Filed, StoreError> {
        self.timed(async move {
            let result = sqlx::query(
                "INSERT INTO appeals (id, created_at, action_id, channel, user_id, text, status, \
                 moderator, note, resolved_at, reversal_action_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&appeal.id)
            .bind(unix_millis(appeal.created_at))
            .bind(&appeal.action_id)
            .bind(&appeal.channel)
            .bind(&appeal.user_id)
            .bind(&*storable_text(&appeal.text))
            .bind(appeal.status.as_str())
            .bind(&appeal.moderator)
            .bind(&*storable_text(&appeal.note))
            .bind(appeal.resolved_at.map(unix_millis))
            .bind(&appeal.reversal_action_id)
            .execute(&self.pool)
            .await;
            match result {
                Ok(_) => Ok(Filed::Done),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    let open = self
                        .appeals(
                            &AppealFilter {
                                status: Some(AppealStatus::Open),
                                ..AppealFilter::default()
                            },
                            Some(&appeal.action_id),
                            None,
                            1,
                        )
                        .await?;
                    Ok(Filed::AlreadyOpen(
                        open.into_iter().next().map(|a| a.id).unwrap_or_default(),
                    ))
                }
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                    Ok(Filed::NoAction)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// One appeal by id.
    pub async fn appeal(&self, id: &str) -> Result<Option<Appeal>, StoreError> {
        self.timed(async move {
            let sql = format!("SELECT {APPEAL_COLUMNS} FROM appeals WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(appeal_from_row).transpose()
        })
        .await
    }

    /// Appeals matching `filter` (and `action_id`, when given), newest first.
    pub async fn appeals(
        &self,
        filter: &AppealFilter,
        action_id: Option<&str>,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Vec<Appeal>, StoreError> {
        self.timed(async move {
            let sql = format!(
                "SELECT {APPEAL_COLUMNS} FROM appeals \
                 WHERE ($1 = '' OR channel = $1) AND ($2 = '' OR status = $2) \
                 AND ($3 = '' OR user_id = $3) AND ($4 = '' OR action_id = $4) \
                 AND (created_at < $5 OR (created_at = $5 AND id < $6)) \
                 ORDER BY created_at DESC, id DESC LIMIT $7"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(filter.channel.as_deref().unwrap_or(""))
                .bind(filter.status.map_or("", AppealStatus::as_str))
                .bind(filter.user_id.as_deref().unwrap_or(""))
                .bind(action_id.unwrap_or(""))
                .bind(after.map_or(i64::MAX, |a| a.created_at_ms))
                .bind(after.map_or("", |a| a.id.as_str()))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(appeal_from_row).collect()
        })
        .await
    }

    /// Resolves an open appeal in one transaction: the appeal's ruling, and for an overturn
    /// the reversal action (marking the original reversed) and the feedback examples. Only one
    /// of several concurrent resolutions wins (the update is conditional on the appeal being
    /// open); the others get [`Resolved::AlreadyResolved`].
    pub async fn resolve_appeal(
        &self,
        resolved: &Appeal,
        reversal: Option<&Action>,
        feedback: &[Feedback],
    ) -> Result<Resolved, StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE appeals SET status = $2, moderator = $3, note = $4, resolved_at = $5, \
                 reversal_action_id = $6 WHERE id = $1 AND status = 'open'",
            )
            .bind(&resolved.id)
            .bind(resolved.status.as_str())
            .bind(&resolved.moderator)
            .bind(&resolved.note)
            .bind(resolved.resolved_at.map(unix_millis))
            .bind(&resolved.reversal_action_id)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                drop(tx);
                return Ok(match self.appeal(&resolved.id).await? {
                    Some(current) => Resolved::AlreadyResolved(current),
                    None => Resolved::NotFound,
                });
            }
            if let Some(reversal) = reversal {
                insert_action(&mut tx, reversal).await?;
                mark_reversed(&mut tx, &resolved.action_id, &reversal.id).await?;
            }
            for example in feedback {
                super::feedback::insert_feedback(&mut tx, example).await?;
            }
            tx.commit().await?;
            self.ruling_written();
            Ok(Resolved::Done(
                resolved.clone(),
                reversal.cloned().map(Box::new),
            ))
        })
        .await
    }

    /// Records a nuke and its mutes, all or none.
    pub async fn record_nuke(&self, nuke: &Nuke, mutes: &[Action]) -> Result<(), StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO nukes (id, created_at, channel, pattern, regex, window_ms, duration_ms, \
                 moderator, reason, targets, undone_at, undone_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&nuke.id)
            .bind(unix_millis(nuke.created_at))
            .bind(&nuke.channel)
            .bind(&*storable_text(&nuke.pattern))
            .bind(i64::from(nuke.regex))
            .bind(millis(nuke.window))
            .bind(millis(nuke.duration))
            .bind(&nuke.moderator)
            .bind(&*storable_text(&nuke.reason))
            .bind(serde_json::to_string(&nuke.targets).expect("strings serialise. This is a bug"))
            .bind(nuke.undone_at.map(unix_millis))
            .bind(&nuke.undone_by)
            .execute(&mut *tx)
            .await?;
            for mute in mutes {
                insert_action(&mut tx, mute).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// One nuke by id, or the channel's latest one not yet undone when `id` is `None`.
    pub async fn nuke(&self, channel: &str, id: Option<&str>) -> Result<Option<Nuke>, StoreError> {
        self.timed(async move {
            let sql = match id {
                Some(_) => {
                    format!("SELECT {NUKE_COLUMNS} FROM nukes WHERE channel = $1 AND id = $2")
                }
                None => format!(
                    "SELECT {NUKE_COLUMNS} FROM nukes WHERE channel = $1 AND undone_at IS NULL \
                     AND $2 = '' ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
            };
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(channel)
                .bind(id.unwrap_or(""))
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(nuke_from_row).transpose()
        })
        .await
    }

    /// The mutes a nuke made, oldest first.
    pub async fn nuke_actions(&self, nuke_id: &str) -> Result<Vec<Action>, StoreError> {
        self.timed(async move {
            let sql = format!(
                "SELECT {ACTION_COLUMNS} FROM actions WHERE nuke_id = $1 AND kind = 'timeout' \
                 ORDER BY created_at, id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(nuke_id)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(action_from_row).collect()
        })
        .await
    }

    /// Undoes a nuke in one transaction: marks it undone and records the unmutes (each marking
    /// its mute reversed). False when it was undone already (by a concurrent aegis, say):
    /// then nothing is written.
    pub async fn undo_nuke(
        &self,
        nuke_id: &str,
        by: &str,
        now: SystemTime,
        unmutes: &[(String, Action)],
    ) -> Result<bool, StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE nukes SET undone_at = $2, undone_by = $3 WHERE id = $1 AND undone_at IS NULL",
            )
            .bind(nuke_id)
            .bind(unix_millis(now))
            .bind(by)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Ok(false);
            }
            for (mute_id, unmute) in unmutes {
                insert_action(&mut tx, unmute).await?;
                mark_reversed(&mut tx, mute_id, &unmute.id).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }
}

/// Inserts an action unless its id or idempotency key exists; true when inserted.
pub(super) async fn insert_action(
    conn: &mut sqlx::AnyConnection,
    action: &Action,
) -> Result<bool, StoreError> {
    let sql = format!(
        "INSERT INTO actions ({ACTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
         $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) ON CONFLICT DO NOTHING"
    );
    let result = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&action.id)
        .bind(unix_millis(action.created_at))
        .bind(unix_millis(action.updated_at))
        .bind(unix_millis(action.expires_at))
        .bind(&action.channel)
        .bind(&action.target_user_id)
        .bind(&*storable_text(&action.target_nick))
        .bind(action.kind.as_str())
        .bind(action.duration.map(millis))
        .bind(&*storable_text(&action.reason))
        .bind(action.source.as_str())
        .bind(&action.moderator)
        .bind(&action.message_id)
        .bind(action.idempotency_key.as_deref())
        .bind(&action.request_hash)
        .bind(&action.requested_by)
        .bind(action.status.as_str())
        .bind(&action.error)
        .bind(&*storable_text(&action.detail))
        .bind(&action.bridge_id)
        .bind(&action.nuke_id)
        .bind(&action.appeal_id)
        .bind(&action.reversed_by)
        .execute(&mut *conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

async fn mark_reversed(
    conn: &mut sqlx::AnyConnection,
    action_id: &str,
    by: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE actions SET reversed_by = $2 WHERE id = $1")
        .bind(action_id)
        .bind(by)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn ms_duration(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.max(0).unsigned_abs())
}

fn action_from_row(row: &AnyRow) -> Result<Action, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |message: String| StoreError::Corrupt {
        id: id.clone(),
        message,
    };
    let kind: String = row.try_get("kind")?;
    let source: String = row.try_get("source")?;
    let status: String = row.try_get("status")?;
    let duration_ms: Option<i64> = row.try_get("duration_ms")?;
    Ok(Action {
        kind: ActionKind::from_name(&kind).ok_or_else(|| corrupt(format!("kind `{kind}`")))?,
        source: ActionSource::from_name(&source)
            .ok_or_else(|| corrupt(format!("source `{source}`")))?,
        status: ActionStatus::from_name(&status)
            .ok_or_else(|| corrupt(format!("status `{status}`")))?,
        duration: duration_ms.map(ms_duration),
        created_at: from_unix_millis(row.try_get("created_at")?),
        updated_at: from_unix_millis(row.try_get("updated_at")?),
        expires_at: from_unix_millis(row.try_get("expires_at")?),
        channel: row.try_get("channel")?,
        target_user_id: row.try_get("target_user_id")?,
        target_nick: row.try_get("target_nick")?,
        reason: row.try_get("reason")?,
        moderator: row.try_get("moderator")?,
        message_id: row.try_get("message_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_hash: row.try_get("request_hash")?,
        requested_by: row.try_get("requested_by")?,
        error: row.try_get("error")?,
        detail: row.try_get("detail")?,
        bridge_id: row.try_get("bridge_id")?,
        nuke_id: row.try_get("nuke_id")?,
        appeal_id: row.try_get("appeal_id")?,
        reversed_by: row.try_get("reversed_by")?,
        id,
    })
}

fn appeal_from_row(row: &AnyRow) -> Result<Appeal, StoreError> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let resolved_at: Option<i64> = row.try_get("resolved_at")?;
    Ok(Appeal {
        status: AppealStatus::from_name(&status).ok_or_else(|| StoreError::Corrupt {
            id: id.clone(),
            message: format!("status `{status}`"),
        })?,
        created_at: from_unix_millis(row.try_get("created_at")?),
        action_id: row.try_get("action_id")?,
        channel: row.try_get("channel")?,
        user_id: row.try_get("user_id")?,
        text: row.try_get("text")?,
        moderator: row.try_get("moderator")?,
        note: row.try_get("note")?,
        resolved_at: resolved_at.map(from_unix_millis),
        reversal_action_id: row.try_get("reversal_action_id")?,
        id,
    })
}

fn nuke_from_row(row: &AnyRow) -> Result<Nuke, StoreError> {
    let id: String = row.try_get("id")?;
    let targets: String = row.try_get("targets")?;
    let regex: i64 = row.try_get("regex")?;
    let undone_at: Option<i64> = row.try_get("undone_at")?;
    Ok(Nuke {
        targets: serde_json::from_str(&targets).map_err(|e| StoreError::Corrupt {
            id: id.clone(),
            message: format!("targets: {e}"),
        })?,
        created_at: from_unix_millis(row.try_get("created_at")?),
        channel: row.try_get("channel")?,
        pattern: row.try_get("pattern")?,
        regex: regex != 0,
        window: ms_duration(row.try_get("window_ms")?),
        duration: ms_duration(row.try_get("duration_ms")?),
        moderator: row.try_get("moderator")?,
        reason: row.try_get("reason")?,
        undone_at: undone_at.map(from_unix_millis),
        undone_by: row.try_get("undone_by")?,
        id,
    })
}
