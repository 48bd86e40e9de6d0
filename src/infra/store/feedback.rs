//! Feedback: labelled examples from human moderators, for `modbot train --with-feedback`.

use std::time::SystemTime;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, from_unix_millis, storable_text, unix_millis};

/// Where a feedback example came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackSource {
    /// A human moderator acted on the message's author in chat (a positive example).
    ModeratorAction,
    /// A moderator overturned an appeal against modbot's action (a negative example).
    AppealOverturned,
    /// A moderator let a held message stand (a negative example of each label that fired).
    ReviewApproved,
    /// A moderator acted on a held message (a positive example of the moderator's label).
    ReviewRejected,
}

impl FeedbackSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModeratorAction => "moderator_action",
            Self::AppealOverturned => "appeal_overturned",
            Self::ReviewApproved => "review_approved",
            Self::ReviewRejected => "review_rejected",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "moderator_action" => Some(Self::ModeratorAction),
            "appeal_overturned" => Some(Self::AppealOverturned),
            "review_approved" => Some(Self::ReviewApproved),
            "review_rejected" => Some(Self::ReviewRejected),
            _ => None,
        }
    }
}

/// One labelled example from a moderator.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// Unique, time-ordered id.
    pub id: String,
    /// When it was recorded.
    pub created_at: SystemTime,
    /// The channel.
    pub channel: String,
    /// Who wrote the message.
    pub user_id: String,
    /// The message.
    pub message_id: String,
    /// The message's normalised text: what the model sees.
    pub text: String,
    /// The `head/label` it teaches.
    pub label: String,
    /// Whether the label applies.
    pub positive: bool,
    /// Where the judgement came from.
    pub source: FeedbackSource,
    /// The moderator.
    pub actor: String,
    /// What the moderator did (`timeout`, `ban`, `overturn`, ...).
    pub action: String,
}

impl Store {
    /// Records a feedback example. A second judgement of the same kind on the same message
    /// and label is ignored: `Ok(false)`.
    pub async fn record_feedback(&self, feedback: &Feedback) -> Result<bool, StoreError> {
        self.timed(async move {
            let mut conn = self.pool.acquire().await?;
            insert_feedback(&mut conn, feedback).await
        })
        .await
    }

    /// Every feedback example, oldest first.
    pub async fn feedback(&self) -> Result<Vec<Feedback>, StoreError> {
        self.timed(async move {
            let rows = sqlx::query(
            "SELECT id, created_at, channel, user_id, message_id, text, label, positive, source, \
             actor, action FROM feedback ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
            rows.iter().map(feedback_from_row).collect()
        })
        .await
    }
}

fn feedback_from_row(row: &AnyRow) -> Result<Feedback, StoreError> {
    let id: String = row.try_get("id")?;
    let source: String = row.try_get("source")?;
    let positive: i64 = row.try_get("positive")?;
    Ok(Feedback {
        source: FeedbackSource::from_name(&source).ok_or_else(|| StoreError::Corrupt {
            id: id.clone(),
            message: format!("source `{source}` is unknown"),
        })?,
        id,
        created_at: from_unix_millis(row.try_get("created_at")?),
        channel: row.try_get("channel")?,
        user_id: row.try_get("user_id")?,
        message_id: row.try_get("message_id")?,
        text: row.try_get("text")?,
        label: row.try_get("label")?,
        positive: positive != 0,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
    })
}

/// Inserts a feedback example on `conn` (a transaction's or the pool's); false when the same
/// judgement was recorded before.
pub(super) async fn insert_feedback(
    conn: &mut sqlx::AnyConnection,
    feedback: &Feedback,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "INSERT INTO feedback (id, created_at, channel, user_id, message_id, text, label, \
             positive, source, actor, action) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (channel, message_id, label, source) DO NOTHING",
    )
    .bind(&feedback.id)
    .bind(unix_millis(feedback.created_at))
    .bind(&feedback.channel)
    .bind(&feedback.user_id)
    .bind(&feedback.message_id)
    .bind(&*storable_text(&feedback.text))
    .bind(&feedback.label)
    .bind(i64::from(feedback.positive))
    .bind(feedback.source.as_str())
    .bind(&feedback.actor)
    .bind(&feedback.action)
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() == 1)
}
