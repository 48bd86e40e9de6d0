//! Moderation actions, appeals and nukes as records: what an action does, who asked for it,
//! where it stands, and the filters that list them.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// What an action does to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// Hide the user's recent messages (a short mute in chats without a delete command).
    Hide,
    /// Warn the user (recorded only: the chats have no warn command).
    Warn,
    /// Mute the user for a while.
    Timeout,
    /// Ban the user.
    Ban,
    /// Lift a mute.
    Unmute,
    /// Lift a ban.
    Unban,
}

impl ActionKind {
    /// Every kind, for parsing.
    const ALL: [Self; 6] = [
        Self::Hide,
        Self::Warn,
        Self::Timeout,
        Self::Ban,
        Self::Unmute,
        Self::Unban,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hide => "hide",
            Self::Warn => "warn",
            Self::Timeout => "timeout",
            Self::Ban => "ban",
            Self::Unmute => "unmute",
            Self::Unban => "unban",
        }
    }

    /// The kind named by [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the chat carries it out: every kind does, a warning as the private message
    /// that tells the user (when the channel's policy has a warn template).
    pub fn needs_chat(self) -> bool {
        true
    }

    /// The action that undoes this one in the chat, if any: a mute (hide, timeout) is lifted by
    /// an unmute, a ban by an unban.
    pub fn reversal(self) -> Option<Self> {
        match self {
            Self::Hide | Self::Timeout => Some(Self::Unmute),
            Self::Ban => Some(Self::Unban),
            Self::Warn | Self::Unmute | Self::Unban => None,
        }
    }

    /// The decision this kind carries out, the inverse of [`Self::for_decision`]: what it
    /// weighs on the escalation ladder. `None` for an unmute or unban.
    pub fn decision(self) -> Option<crate::domain::Decision> {
        use crate::domain::Decision;
        match self {
            Self::Hide => Some(Decision::Hide),
            Self::Warn => Some(Decision::Warn),
            Self::Timeout => Some(Decision::Timeout),
            Self::Ban => Some(Decision::Ban),
            Self::Unmute | Self::Unban => None,
        }
    }

    /// The kind that carries out an enforced decision, if the decision acts on the user: a
    /// hold only keeps the message back for review.
    pub fn for_decision(decision: crate::domain::Decision) -> Option<Self> {
        use crate::domain::Decision;
        match decision {
            Decision::Allow | Decision::Hold => None,
            Decision::Hide => Some(Self::Hide),
            Decision::Warn => Some(Self::Warn),
            Decision::Timeout => Some(Self::Timeout),
            Decision::Ban => Some(Self::Ban),
        }
    }
}

/// Who or what asked for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionSource {
    /// modbot's decision engine.
    Automod,
    /// A human moderator, through a tool or (seen on a stream) in the chat itself.
    Moderator,
    /// An overturned appeal.
    Appeal,
    /// A nuke or its aegis.
    Nuke,
    /// Another service.
    Api,
}

impl ActionSource {
    const ALL: [Self; 5] = [
        Self::Automod,
        Self::Moderator,
        Self::Appeal,
        Self::Nuke,
        Self::Api,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Automod => "automod",
            Self::Moderator => "moderator",
            Self::Appeal => "appeal",
            Self::Nuke => "nuke",
            Self::Api => "api",
        }
    }

    /// The source named by [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionStatus {
    /// Recorded, waiting for a bridge serving the channel.
    Pending,
    /// Sent to a bridge, waiting for the chat's answer.
    Sent,
    /// The chat confirmed it.
    Executed,
    /// The chat refused it.
    Failed,
    /// No bridge carried it out in time: it was never sent.
    Expired,
    /// Nothing to carry out in the chat (a warning), or left to the caller: a `Classify`
    /// verdict's action in a channel whose policy records them (`classify_actions = "record"`,
    /// the default), which the backend enforces in its own system. Never sent, never expires;
    /// an overturned appeal of it sends no reversal. (A human moderator's action seen on a
    /// stream is recorded as executed instead.)
    Recorded,
    /// Sent to a bridge that never answered in time: the chat may have carried it out, so it
    /// can be appealed (a late answer still settles it).
    Unknown,
}

impl ActionStatus {
    const ALL: [Self; 7] = [
        Self::Pending,
        Self::Sent,
        Self::Executed,
        Self::Failed,
        Self::Expired,
        Self::Recorded,
        Self::Unknown,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Executed => "executed",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Recorded => "recorded",
            Self::Unknown => "unknown",
        }
    }

    /// The status named by [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the action may still reach the chat.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Sent)
    }
}

/// A moderation action and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Unique id.
    pub id: String,
    /// The channel.
    pub channel: String,
    /// The user acted upon.
    pub target_user_id: String,
    /// That user's nick in the chat.
    pub target_nick: String,
    /// What it does.
    pub kind: ActionKind,
    /// How long, for hides, timeouts and bans (`None`: permanent ban, or not applicable).
    pub duration: Option<Duration>,
    /// Why, in words.
    pub reason: String,
    /// Who asked.
    pub source: ActionSource,
    /// The moderator who asked, for moderator, appeal and nuke actions.
    pub moderator: String,
    /// The message that led to it, if any.
    pub message_id: String,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// A digest of what was asked, so a reused key with a different request is caught.
    pub request_hash: String,
    /// The name of the credential that asked.
    pub requested_by: String,
    /// Where it is.
    pub status: ActionStatus,
    /// The chat's error code, for a failed action.
    pub error: String,
    /// The bridge's free-form detail.
    pub detail: String,
    /// The bridge it was sent to.
    pub bridge_id: String,
    /// The nuke that made it.
    pub nuke_id: String,
    /// The appeal whose overturning made it.
    pub appeal_id: String,
    /// The action that undid it (a reversal or an aegis unmute), once one did.
    pub reversed_by: String,
    /// When it was recorded.
    pub created_at: SystemTime,
    /// When its status last changed.
    pub updated_at: SystemTime,
    /// When an undelivered action expires.
    pub expires_at: SystemTime,
}

/// What a new action is: everything a caller decides; ids, status and times are the
/// workflow's.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    /// The channel.
    pub channel: String,
    /// The user acted upon.
    pub target_user_id: String,
    /// That user's nick in the chat.
    pub target_nick: String,
    /// What it does.
    pub kind: ActionKind,
    /// How long.
    pub duration: Option<Duration>,
    /// Why.
    pub reason: String,
    /// Who asks.
    pub source: ActionSource,
    /// The moderator who asks.
    pub moderator: String,
    /// The message that led to it.
    pub message_id: String,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// The credential's name.
    pub requested_by: String,
}

impl NewAction {
    /// A digest of the request's substance (not who sent it or when), so a retried request
    /// matches its first attempt and a different one under the same key does not.
    pub fn request_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.channel.as_str(),
            self.target_user_id.as_str(),
            self.target_nick.as_str(),
            self.kind.as_str(),
            &self
                .duration
                .map_or_else(|| "-".to_owned(), |d| d.as_millis().to_string()),
            self.reason.as_str(),
            self.source.as_str(),
            self.moderator.as_str(),
            self.message_id.as_str(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex(&hasher.finalize()[..16])
    }

    /// The action as first recorded at `now`: pending (or recorded, for a warning) until
    /// `now + ttl`.
    pub fn into_action(self, id: String, now: SystemTime, ttl: Duration) -> Action {
        let request_hash = self.request_hash();
        Action {
            id,
            status: if self.kind.needs_chat() {
                ActionStatus::Pending
            } else {
                ActionStatus::Recorded
            },
            channel: self.channel,
            target_user_id: self.target_user_id,
            target_nick: self.target_nick,
            kind: self.kind,
            duration: self.duration,
            reason: self.reason,
            source: self.source,
            moderator: self.moderator,
            message_id: self.message_id,
            idempotency_key: self.idempotency_key,
            request_hash,
            requested_by: self.requested_by,
            error: String::new(),
            detail: String::new(),
            bridge_id: String::new(),
            nuke_id: String::new(),
            appeal_id: String::new(),
            reversed_by: String::new(),
            created_at: now,
            updated_at: now,
            expires_at: now + ttl,
        }
    }
}

/// A UUID derived from `parts`: the same parts give the same id, so an action about a given
/// message (an automatic verdict, a moderator's action seen in chat) is recorded once however
/// often the message is decided again.
pub fn derived_id(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes).to_string()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// An appeal's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppealStatus {
    /// Waiting for a moderator.
    Open,
    /// The action stands.
    Upheld,
    /// The action was reversed.
    Overturned,
}

impl AppealStatus {
    const ALL: [Self; 3] = [Self::Open, Self::Upheld, Self::Overturned];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Upheld => "upheld",
            Self::Overturned => "overturned",
        }
    }

    /// The status named by [`Self::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// An appeal against an action.
#[derive(Debug, Clone, PartialEq)]
pub struct Appeal {
    /// Unique id.
    pub id: String,
    /// The action appealed against.
    pub action_id: String,
    /// Its channel.
    pub channel: String,
    /// The user who appeals (the action's target).
    pub user_id: String,
    /// The user's statement.
    pub text: String,
    /// Where it is.
    pub status: AppealStatus,
    /// The moderator who resolved it.
    pub moderator: String,
    /// The moderator's note.
    pub note: String,
    /// When it was filed.
    pub created_at: SystemTime,
    /// When it was resolved.
    pub resolved_at: Option<SystemTime>,
    /// The reversing action, for an overturned appeal.
    pub reversal_action_id: String,
}

/// A recorded nuke.
#[derive(Debug, Clone, PartialEq)]
pub struct Nuke {
    /// Unique id.
    pub id: String,
    /// When it was made.
    pub created_at: SystemTime,
    /// The channel.
    pub channel: String,
    /// The phrase or regular expression.
    pub pattern: String,
    /// Whether `pattern` is a regular expression.
    pub regex: bool,
    /// How far back it looked.
    pub window: Duration,
    /// How long it muted.
    pub duration: Duration,
    /// Who nuked.
    pub moderator: String,
    /// Why.
    pub reason: String,
    /// The users it muted.
    pub targets: Vec<String>,
    /// When an aegis undid it.
    pub undone_at: Option<SystemTime>,
    /// Who undid it.
    pub undone_by: String,
}

/// Filters for listing actions; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionFilter {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only actions on this user.
    pub target_user_id: Option<String>,
    /// Only this kind.
    pub kind: Option<ActionKind>,
    /// Only this status.
    pub status: Option<ActionStatus>,
    /// Only this source.
    pub source: Option<ActionSource>,
    /// Only actions created at or after this time.
    pub since: Option<SystemTime>,
    /// Only actions created before this time.
    pub until: Option<SystemTime>,
}

/// Filters for listing appeals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppealFilter {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this status.
    pub status: Option<AppealStatus>,
    /// Only appeals by this user.
    pub user_id: Option<String>,
}

/// Where a page starts: just after (older than) this creation time and id. Keyset paging over
/// `(created_at, id)`, newest first, so a row inserted while a client pages through never
/// shifts a later page or appears twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageAfter {
    /// Creation time of the last row of the previous page, Unix milliseconds.
    pub created_at_ms: i64,
    /// Its id.
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in ActionKind::ALL {
            assert_eq!(ActionKind::from_name(kind.as_str()), Some(kind));
        }
        for source in ActionSource::ALL {
            assert_eq!(ActionSource::from_name(source.as_str()), Some(source));
        }
        for status in ActionStatus::ALL {
            assert_eq!(ActionStatus::from_name(status.as_str()), Some(status));
        }
        for status in AppealStatus::ALL {
            assert_eq!(AppealStatus::from_name(status.as_str()), Some(status));
        }
        assert_eq!(ActionKind::from_name("mute"), None);
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_id(&["automod", "destinygg", "m1"]);
        assert_eq!(a, derived_id(&["automod", "destinygg", "m1"]));
        assert_ne!(a, derived_id(&["automod", "destinygg", "m2"]));
        // Parts are separated, so shifting text between them changes the id.
        assert_ne!(
            derived_id(&["ab", "c"]),
            derived_id(&["a", "bc"]),
            "parts must not run together"
        );
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn request_hash_ignores_who_asked_but_not_what() {
        let base = NewAction {
            channel: "destinygg".into(),
            target_user_id: "bob".into(),
            target_nick: "Bob".into(),
            kind: ActionKind::Timeout,
            duration: Some(Duration::from_secs(60)),
            reason: "spam".into(),
            source: ActionSource::Moderator,
            moderator: "mod".into(),
            message_id: String::new(),
            idempotency_key: Some("k".into()),
            requested_by: "tool-a".into(),
        };
        let same = NewAction {
            requested_by: "tool-b".into(),
            idempotency_key: Some("other".into()),
            ..base.clone()
        };
        assert_eq!(base.request_hash(), same.request_hash());
        let longer = NewAction {
            duration: Some(Duration::from_secs(61)),
            ..base.clone()
        };
        assert_ne!(base.request_hash(), longer.request_hash());
    }

    #[test]
    fn reversals_and_decisions() {
        use crate::domain::Decision;
        assert_eq!(ActionKind::Timeout.reversal(), Some(ActionKind::Unmute));
        assert_eq!(ActionKind::Hide.reversal(), Some(ActionKind::Unmute));
        assert_eq!(ActionKind::Ban.reversal(), Some(ActionKind::Unban));
        assert_eq!(ActionKind::Warn.reversal(), None);
        assert_eq!(ActionKind::for_decision(Decision::Hold), None);
        assert_eq!(
            ActionKind::for_decision(Decision::Ban),
            Some(ActionKind::Ban)
        );
        assert!(
            ActionKind::Warn.needs_chat(),
            "a warning is a private message"
        );
    }
}
