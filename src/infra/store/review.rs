//! The review queue: held messages waiting for a moderator, their rulings and expiries.

use std::time::SystemTime;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::actions::insert_action;
use super::feedback::insert_feedback;
use super::{Feedback, Store, StoreError, from_unix_millis, storable_text, to_json, unix_millis};
use crate::domain::{Action, OnExpiry, PageAfter, ReviewFilter, ReviewItem, ReviewStatus};

const REVIEW_COLUMNS: &str = "id, created_at, expires_at, on_expiry, channel, message_id, \
    user_id, nick, text, reasons, scores, requested_by, records_only, hide_action_id, status, \
    resolved_at, moderator, label, note, action_id";

/// The end of a ruling on a review item.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewRuled {
    /// Recorded, with the action that carries a rejection (or an expiry's hide) out.
    Done(Box<ReviewItem>, Option<Box<Action>>),
    /// The item does not exist.
    NotFound,
    /// The item was settled already (by another moderator, possibly at the same moment, or
    /// by its expiry): the first ruling stands.
    AlreadySettled(Box<ReviewItem>),
}

/// The queue's size now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Pending items.
    pub pending: u64,
    /// When the oldest pending item was held.
    pub oldest: Option<SystemTime>,
}

/// Writes a new review item in a verdict's transaction; an item recorded before (the same
/// message held again) is kept as it was. Whether it was new.
pub(super) async fn insert_review(
    conn: &mut sqlx::AnyConnection,
    item: &ReviewItem,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO review_items (id, created_at, expires_at, on_expiry, channel, message_id, \
         user_id, nick, text, reasons, scores, requested_by, records_only, hide_action_id, \
         status, resolved_at, moderator, label, note, action_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20) ON CONFLICT DO NOTHING",
    )
    .bind(&item.id)
    .bind(unix_millis(item.created_at))
    .bind(unix_millis(item.expires_at))
    .bind(item.on_expiry.as_str())
    .bind(&item.channel)
    .bind(&item.message_id)
    .bind(&item.user_id)
    .bind(&item.nick)
    .bind(&*storable_text(&item.text))
    .bind(to_json(&item.reasons))
    .bind(to_json(&item.scores))
    .bind(&item.requested_by)
    .bind(i64::from(item.records_only))
    .bind(&item.hide_action_id)
    .bind(item.status.as_str())
    .bind(item.resolved_at.map(unix_millis))
    .bind(&item.moderator)
    .bind(&item.label)
    .bind(&item.note)
    .bind(&item.action_id)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

impl Store {
    /// The review item `id`.
    pub async fn review(&self, id: &str) -> Result<Option<ReviewItem>, StoreError> {
        self.timed(async move {
            let sql = format!("SELECT {REVIEW_COLUMNS} FROM review_items WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(review_from_row).transpose()
        })
        .await
    }

    /// Review items matching `filter`, newest first, starting after `after`.
    pub async fn reviews(
        &self,
        filter: &ReviewFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        self.timed(async move {
            let sql = format!(
                "SELECT {REVIEW_COLUMNS} FROM review_items \
                 WHERE ($1 = '' OR channel = $1) AND ($2 = '' OR status = $2) \
                 AND ($3 = '' OR user_id = $3) \
                 AND (created_at < $4 OR (created_at = $4 AND id < $5)) \
                 ORDER BY created_at DESC, id DESC LIMIT $6"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(filter.channel.as_deref().unwrap_or(""))
                .bind(filter.status.map_or("", ReviewStatus::as_str))
                .bind(filter.user_id.as_deref().unwrap_or(""))
                .bind(after.map_or(i64::MAX, |a| a.created_at_ms))
                .bind(after.map_or("", |a| a.id.as_str()))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(review_from_row).collect()
        })
        .await
    }

    /// Items settled after `(resolved_at_ms, id)`, oldest first: what a watcher that was away
    /// missed.
    pub async fn settled_reviews_since(
        &self,
        resolved_at_ms: i64,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        self.timed(async move {
            let sql = format!(
                "SELECT {REVIEW_COLUMNS} FROM review_items \
                 WHERE resolved_at IS NOT NULL \
                 AND (resolved_at > $1 OR (resolved_at = $1 AND id > $2)) \
                 ORDER BY resolved_at, id LIMIT $3"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(resolved_at_ms)
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(review_from_row).collect()
        })
        .await
    }

    /// Pending items whose time ran out by `now`, oldest first.
    pub async fn due_reviews(
        &self,
        now: SystemTime,
        limit: u32,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        self.timed(async move {
            let sql = format!(
                "SELECT {REVIEW_COLUMNS} FROM review_items \
                 WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(unix_millis(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(review_from_row).collect()
        })
        .await
    }

    /// How many items are pending, and the oldest one's age.
    pub async fn review_depth(&self) -> Result<QueueDepth, StoreError> {
        self.timed(async move {
            let row = sqlx::query(
                "SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM review_items \
                 WHERE status = 'pending'",
            )
            .fetch_one(&self.pool)
            .await?;
            let pending: i64 = row.try_get("pending")?;
            let oldest: Option<i64> = row.try_get("oldest")?;
            Ok(QueueDepth {
                pending: pending.max(0).unsigned_abs(),
                oldest: oldest.map(from_unix_millis),
            })
        })
        .await
    }

    /// Settles a pending item in one transaction: its ruling (or expiry), the action that
    /// carries it out and the feedback it teaches. Only one of several concurrent rulings
    /// wins (the update is conditional on the item being pending); the others get
    /// [`ReviewRuled::AlreadySettled`] with the ruling that stands.
    pub async fn settle_review(
        &self,
        settled: &ReviewItem,
        action: Option<&Action>,
        feedback: &[Feedback],
    ) -> Result<ReviewRuled, StoreError> {
        self.timed(async move {
            let mut tx = self.pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE review_items SET status = $2, resolved_at = $3, moderator = $4, \
                 label = $5, note = $6, action_id = $7 WHERE id = $1 AND status = 'pending'",
            )
            .bind(&settled.id)
            .bind(settled.status.as_str())
            .bind(settled.resolved_at.map(unix_millis))
            .bind(&settled.moderator)
            .bind(&settled.label)
            .bind(&*storable_text(&settled.note))
            .bind(&settled.action_id)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                drop(tx);
                return Ok(match self.review(&settled.id).await? {
                    Some(current) => ReviewRuled::AlreadySettled(Box::new(current)),
                    None => ReviewRuled::NotFound,
                });
            }
            if let Some(action) = action {
                insert_action(&mut tx, action).await?;
            }
            for example in feedback {
                insert_feedback(&mut tx, example).await?;
            }
            tx.commit().await?;
            self.ruling_written();
            Ok(ReviewRuled::Done(
                Box::new(settled.clone()),
                action.cloned().map(Box::new),
            ))
        })
        .await
    }
}

fn review_from_row(row: &AnyRow) -> Result<ReviewItem, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |message: String| StoreError::Corrupt {
        id: id.clone(),
        message,
    };
    let status: String = row.try_get("status")?;
    let on_expiry: String = row.try_get("on_expiry")?;
    let reasons: String = row.try_get("reasons")?;
    let scores: String = row.try_get("scores")?;
    let resolved_at: Option<i64> = row.try_get("resolved_at")?;
    let records_only: i64 = row.try_get("records_only")?;
    Ok(ReviewItem {
        records_only: records_only != 0,
        status: ReviewStatus::from_name(&status)
            .ok_or_else(|| corrupt(format!("status `{status}`")))?,
        on_expiry: OnExpiry::from_name(&on_expiry)
            .ok_or_else(|| corrupt(format!("on_expiry `{on_expiry}`")))?,
        reasons: serde_json::from_str(&reasons).map_err(|e| corrupt(format!("reasons: {e}")))?,
        scores: serde_json::from_str(&scores).map_err(|e| corrupt(format!("scores: {e}")))?,
        created_at: from_unix_millis(row.try_get("created_at")?),
        expires_at: from_unix_millis(row.try_get("expires_at")?),
        channel: row.try_get("channel")?,
        message_id: row.try_get("message_id")?,
        user_id: row.try_get("user_id")?,
        nick: row.try_get("nick")?,
        text: row.try_get("text")?,
        requested_by: row.try_get("requested_by")?,
        hide_action_id: row.try_get("hide_action_id")?,
        resolved_at: resolved_at.map(from_unix_millis),
        moderator: row.try_get("moderator")?,
        label: row.try_get("label")?,
        note: row.try_get("note")?,
        action_id: row.try_get("action_id")?,
        id,
    })
}
