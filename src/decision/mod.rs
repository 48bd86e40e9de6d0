//! Decisions: the domain types of a verdict, and the [`Engine`] that makes one.
//!
//! Architecture Invariant: nothing here knows gRPC, SQL or the network. The engine is a pure
//! function of the message, the rules and (later) the user's state and the model's scores, so
//! every behaviour is testable without a server.

mod phrases;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::RulesConfig;
pub use phrases::PhraseRule;

/// A chat message to decide, already validated (non-empty ids and text within limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Channel the message was sent in.
    pub channel: String,
    /// The chat's (or caller's) id for the message.
    pub message_id: String,
    /// Stable id of the author.
    pub user_id: String,
    /// Display name of the author.
    pub nick: String,
    /// The author's roles and features, lower case.
    pub roles: Vec<String>,
    /// The text exactly as typed.
    pub text: String,
    /// When the chat received it.
    pub sent_at: SystemTime,
}

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

    /// The decision named by [`Decision::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Allow,
            Self::Hold,
            Self::Hide,
            Self::Warn,
            Self::Timeout,
            Self::Ban,
        ]
        .into_iter()
        .find(|d| d.as_str() == name)
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
}

impl Degraded {
    /// The lower-case name used in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Degraded::Model => "model",
            Degraded::UserState => "user_state",
            Degraded::Store => "store",
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
}

impl Verdict {
    /// Whether the verdict belongs in the audit log: anything but a plain allow, shadow
    /// reasons included (they are how a shadow rule is evaluated before it is enforced).
    pub fn is_notable(&self) -> bool {
        self.decision != Decision::Allow || self.shadow_decision != Decision::Allow
    }
}

/// How a message is to be decided.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecideOptions {
    /// Decide without effects: the verdict is not enforced.
    pub dry_run: bool,
}

/// Makes verdicts from rules. Built once from the configuration and shared by every caller.
#[derive(Debug)]
pub struct Engine {
    phrase_rules: Vec<PhraseRule>,
}

impl Engine {
    /// Builds the engine from the configured rules.
    pub fn new(rules: &RulesConfig) -> Self {
        Self {
            phrase_rules: rules.phrases.iter().map(PhraseRule::from_config).collect(),
        }
    }

    /// Decides one message. `received` is when the request arrived, for `Verdict::elapsed`.
    pub fn decide(
        &self,
        message: &ChatMessage,
        options: DecideOptions,
        received: Instant,
    ) -> Verdict {
        let folded = phrases::Folded::new(&message.text);
        let mut reasons: Vec<Reason> = self
            .phrase_rules
            .iter()
            .filter_map(|rule| rule.check(&folded))
            .collect();
        // Harshest first; among equals, the longest duration first (None = permanent ban).
        reasons.sort_by(|a, b| {
            b.decision
                .cmp(&a.decision)
                .then_with(|| duration_rank(b.duration).cmp(&duration_rank(a.duration)))
        });

        let enforced_reason = reasons.iter().find(|r| !r.shadow);
        let decision = enforced_reason.map_or(Decision::Allow, |r| r.decision);
        let shadow_decision = reasons
            .iter()
            .find(|r| r.shadow)
            .map_or(Decision::Allow, |r| r.decision);
        let only_shadow_fired = enforced_reason.is_none() && !reasons.is_empty();
        Verdict {
            message_id: message.message_id.clone(),
            channel: message.channel.clone(),
            user_id: message.user_id.clone(),
            decision,
            duration: enforced_reason.and_then(|r| r.duration),
            reasons,
            enforced: !options.dry_run && !only_shadow_fired,
            shadow_decision,
            model_version: String::new(),
            elapsed: received.elapsed(),
            degraded: Vec::new(),
            scores: BTreeMap::new(),
            normalized_text: folded.text().to_owned(),
            action_id: None,
        }
    }
}

/// Orders durations so that a permanent ban (`None`) outranks any finite one.
fn duration_rank(duration: Option<Duration>) -> Duration {
    duration.unwrap_or(Duration::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PhraseRuleConfig;

    fn rule(
        id: &str,
        phrases: &[&str],
        action: Decision,
        duration_secs: u64,
        shadow: bool,
    ) -> PhraseRuleConfig {
        PhraseRuleConfig {
            id: id.into(),
            phrases: phrases.iter().map(|p| p.to_string()).collect(),
            action,
            duration_secs,
            shadow,
        }
    }

    fn message(text: &str) -> ChatMessage {
        ChatMessage {
            channel: "destinygg".into(),
            message_id: "m1".into(),
            user_id: "u1".into(),
            nick: "u1".into(),
            roles: vec![],
            text: text.into(),
            sent_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn engine() -> Engine {
        Engine::new(&RulesConfig {
            phrases: vec![
                rule("scam", &["free nitro"], Decision::Timeout, 600, false),
                rule("ads", &["buy followers"], Decision::Hide, 0, false),
                rule("trial", &["bitcoin"], Decision::Ban, 0, true),
            ],
        })
    }

    #[test]
    fn harshest_enforced_reason_decides() {
        let verdict = engine().decide(
            &message("buy followers and get FREE NITRO"),
            DecideOptions::default(),
            Instant::now(),
        );
        assert_eq!(verdict.decision, Decision::Timeout);
        assert_eq!(verdict.duration, Some(Duration::from_secs(600)));
        assert!(verdict.enforced);
        let ids: Vec<_> = verdict.reasons.iter().map(|r| r.rule_id.as_str()).collect();
        assert_eq!(ids, ["scam", "ads"]);
        assert_eq!(verdict.shadow_decision, Decision::Allow);
    }

    #[test]
    fn shadow_reasons_are_reported_not_enforced() {
        let verdict = engine().decide(
            &message("bitcoin to the moon"),
            DecideOptions::default(),
            Instant::now(),
        );
        assert_eq!(verdict.decision, Decision::Allow);
        assert_eq!(verdict.shadow_decision, Decision::Ban);
        assert!(!verdict.enforced);
        assert!(verdict.is_notable());
        assert!(verdict.reasons[0].shadow);
    }

    #[test]
    fn clean_messages_are_allowed_and_not_notable() {
        let verdict = engine().decide(
            &message("what a play OMEGALUL"),
            DecideOptions::default(),
            Instant::now(),
        );
        assert_eq!(verdict.decision, Decision::Allow);
        assert!(verdict.reasons.is_empty());
        assert!(verdict.enforced);
        assert!(!verdict.is_notable());
    }

    #[test]
    fn dry_run_is_never_enforced() {
        let verdict = engine().decide(
            &message("free nitro"),
            DecideOptions { dry_run: true },
            Instant::now(),
        );
        assert_eq!(verdict.decision, Decision::Timeout);
        assert!(!verdict.enforced);
    }

    #[test]
    fn decision_names_round_trip() {
        for d in [
            Decision::Allow,
            Decision::Hold,
            Decision::Hide,
            Decision::Warn,
            Decision::Timeout,
            Decision::Ban,
        ] {
            assert_eq!(Decision::from_name(d.as_str()), Some(d));
        }
        assert!(Decision::Ban > Decision::Timeout && Decision::Hold > Decision::Allow);
    }
}
