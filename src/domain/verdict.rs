//! A verdict and its parts: the decision, the reasons behind it, their evidence, and the
//! components that were unavailable while deciding.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to do with a message, mildest first: `Ord` follows severity, so the harshest of
/// several decisions is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Show the message.
    Allow,
    /// Hold it for a human to review.
    Hold,
    /// Hide it.
    Hide,
    /// Hide it and warn the author.
    Warn,
    /// Mute the author for a while.
    Timeout,
    /// Ban the author.
    Ban,
}

impl Decision {
    /// The lower-case name used in configuration, logs, metrics and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Hold => "hold",
            Decision::Hide => "hide",
            Decision::Warn => "warn",
            Decision::Timeout => "timeout",
            Decision::Ban => "ban",
        }
    }

    /// Every decision, mildest first (the order of [`Decision::index`]).
    pub const ALL: [Decision; 6] = [
        Self::Allow,
        Self::Hold,
        Self::Hide,
        Self::Warn,
        Self::Timeout,
        Self::Ban,
    ];

    /// Its place in [`Decision::ALL`] (and in severity order).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The decision named by [`Decision::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// Where a reason came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasonSource {
    /// A rule filter.
    Rule,
    /// A model head.
    Model,
    /// The user's history.
    Escalation,
    /// The channel's policy.
    Policy,
}

impl ReasonSource {
    /// The lower-case name used in metrics and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonSource::Rule => "rule",
            ReasonSource::Model => "model",
            ReasonSource::Escalation => "escalation",
            ReasonSource::Policy => "policy",
        }
    }
}

/// A component that was unavailable while deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Degraded {
    /// The model: the decision is rules-only.
    Model,
    /// Shared user state: this replica's own was used.
    UserState,
    /// The database: the verdict was not written to the audit log.
    Store,
    /// Deciding itself: a rule panicked and was skipped (the other rules and the model still
    /// counted), or the message could not be decided at all and was held for a human.
    Decision,
}

impl Degraded {
    /// The lower-case name used in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Degraded::Model => "model",
            Degraded::UserState => "user_state",
            Degraded::Store => "store",
            Degraded::Decision => "decision",
        }
    }
}

/// A range of the original text in Unicode scalar values, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First code point.
    pub start: u32,
    /// One past the last code point.
    pub end: u32,
}

/// What a reason points at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Where in the original text the match is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
    /// The original text of the span.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub matched_text: String,
    /// The pattern or list entry that matched.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    /// An earlier message this one resembles.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub similar_message_id: String,
    /// The text of that earlier message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub similar_text: String,
    /// Anything else worth showing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One reason that contributed to a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// What fired.
    pub source: ReasonSource,
    /// The rule's id, for rule reasons.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule_id: String,
    /// The model label, or the rule kind.
    pub label: String,
    /// The decision this reason alone asks for.
    pub decision: Decision,
    /// Its duration, for timeouts and bans (`None`: permanent ban, or not applicable).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "millis")]
    pub duration: Option<Duration>,
    /// The compared score (0 for plain matches).
    pub score: f64,
    /// The threshold it was compared against.
    pub threshold: f64,
    /// Reported only, not enforced.
    pub shadow: bool,
    /// What fired is harm (a rule or label marked harmful): a message with an enforced harmful
    /// reason is never left visible.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub harmful: bool,
    /// Why it fired.
    pub evidence: Evidence,
    /// One line for people.
    pub description: String,
}

/// modbot's decision for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The message decided.
    pub message_id: String,
    /// Its channel.
    pub channel: String,
    /// Its author.
    pub user_id: String,
    /// The enforced decision.
    pub decision: Decision,
    /// Duration of a timeout or ban (`None` for a permanent ban).
    pub duration: Option<Duration>,
    /// Every reason, harshest first.
    pub reasons: Vec<Reason>,
    /// Whether `decision` is carried out.
    pub enforced: bool,
    /// The harshest decision of shadow reasons.
    pub shadow_decision: Decision,
    /// Version of the model that scored the message; empty without a model.
    pub model_version: String,
    /// Time from receipt to verdict.
    pub elapsed: Duration,
    /// Components that were unavailable.
    pub degraded: Vec<Degraded>,
    /// Raw model scores by label.
    pub scores: BTreeMap<String, f64>,
    /// The text the rules saw.
    pub normalized_text: String,
    /// The action created to carry the decision out, if any.
    pub action_id: Option<String>,
    /// The review item a held message waits in, if any.
    pub review_id: Option<String>,
    /// While a candidate head set is on trial: the version and decision of the set that did
    /// not decide (the candidate in shadow, or the active set in a split's share).
    pub trial: Option<TrialDecision>,
}

/// What the head set on the other side of a trial decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialDecision {
    /// Its version (`encoder@hash+heads@version`).
    pub version: String,
    /// Its decision, with the same rules, history and raid state.
    pub decision: Decision,
}

impl Verdict {
    /// Whether the verdict belongs in the audit log: anything but a plain allow, shadow
    /// reasons included (they are how a shadow rule is evaluated before it is enforced).
    pub fn is_notable(&self) -> bool {
        self.decision != Decision::Allow || self.shadow_decision != Decision::Allow
    }
}

/// Serde for `Option<Duration>` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => ser.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(de)?.map(Duration::from_millis))
    }
}
