//! The review queue's vocabulary: a held message waiting for a moderator, and how it ended.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::action::derived_id;
use super::verdict::Reason;

/// Where a review item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewStatus {
    /// Waiting for a moderator.
    Pending,
    /// A moderator let the message stand.
    Approved,
    /// A moderator acted on it.
    Rejected,
    /// Nobody ruled in time; the channel's `on_expiry` settled it.
    Expired,
}

impl ReviewStatus {
    const ALL: [Self; 4] = [Self::Pending, Self::Approved, Self::Rejected, Self::Expired];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    /// The status named by [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// What an item nobody ruled on becomes when it expires (a channel policy's choice).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OnExpiry {
    /// The message stands, as if approved (no feedback is recorded: nobody judged it).
    #[default]
    Allow,
    /// The message is hidden (a short mute in chats without a delete).
    Hide,
}

impl OnExpiry {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Hide => "hide",
        }
    }

    /// The value named by [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Allow, Self::Hide]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A held message waiting for a moderator's ruling, or the record of how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewItem {
    /// Derived from the caller, channel and message ([`review_id`]): a message held twice is
    /// one item.
    pub id: String,
    /// When it was held.
    pub created_at: SystemTime,
    /// When a pending item is settled by `on_expiry`.
    pub expires_at: SystemTime,
    /// What expiry does.
    pub on_expiry: OnExpiry,
    /// The channel.
    pub channel: String,
    /// The held message's id.
    pub message_id: String,
    /// Its author.
    pub user_id: String,
    /// The author's nick.
    pub nick: String,
    /// The original text: what the moderator judges.
    pub text: String,
    /// Why it was held: the verdict's reasons.
    pub reasons: Vec<Reason>,
    /// The model's scores when it was held.
    pub scores: BTreeMap<String, f64>,
    /// The credential whose call held it (empty without tokens): who watches its outcome.
    pub requested_by: String,
    /// Actions on it are only recorded, never sent to a chat: it was held for a `Classify`
    /// caller in a channel whose policy leaves enforcement to that caller.
    pub records_only: bool,
    /// The action hiding it while pending (a channel's `hide_while_pending`), if any.
    pub hide_action_id: String,
    /// Where it is.
    pub status: ReviewStatus,
    /// When it was ruled on or expired.
    pub resolved_at: Option<SystemTime>,
    /// The moderator who ruled.
    pub moderator: String,
    /// The moderator's label of a rejection (`spam/spam`, `toxicity/insult`, ...).
    pub label: String,
    /// The moderator's note.
    pub note: String,
    /// The action that carried out a rejection or a hide on expiry.
    pub action_id: String,
}

/// The id of the item holding `message_id` of `channel` for the credential `requested_by`.
pub fn review_id(requested_by: &str, channel: &str, message_id: &str) -> String {
    derived_id(&["review", requested_by, channel, message_id])
}

/// Filters for listing review items; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewFilter {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this status.
    pub status: Option<ReviewStatus>,
    /// Only messages by this user.
    pub user_id: Option<String>,
}
