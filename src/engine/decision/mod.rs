//! Decisions: the domain types of a verdict, and the [`Engine`] that makes one.
//!
//! Architecture Invariant: nothing here knows gRPC, SQL or the network. The engine is a pure
//! function of the message, its normalised text, the rules, the user's history and (later) the
//! model's scores, so every behaviour is testable without a server. Fetching the history and
//! recording offences is `moderate`'s job.
//!
//! The history counts twice: the escalation ladder ([`escalation`]) reads the author's heat,
//! strikes and rung, and the author's reputation moves the model labels' thresholds as the
//! channel's `[policy.reputation]` says (raised for a trusted regular, lowered for a new user;
//! the reason names the moved threshold, and a score only the raise spared is kept as a shadow
//! reason).

pub mod escalation;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::domain::{ChannelWindow, Offence, UserHistory};
use crate::domain::{ChatMessage, Decision, Degraded, Evidence, Reason, ReasonSource, Verdict};
use crate::engine::normalize::Normalized;
use crate::engine::raid::{Seen, is_new_user};
use crate::engine::rules::{Context, FailedRule, RuleSet, Trust};

/// How a message is to be decided.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecideOptions {
    /// Decide without effects: the verdict is not enforced and nothing is remembered.
    pub dry_run: bool,
}

/// Everything a decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The message.
    pub message: &'a ChatMessage,
    /// Its normalised text (with the channel's emotes recognised).
    pub normalized: &'a Normalized<'a>,
    /// The author's history before this message.
    pub history: &'a UserHistory,
    /// The channel's recent messages from other users, oldest first.
    pub channel_recent: &'a ChannelWindow,
    /// The message's time on the state clock, Unix milliseconds.
    pub now_ms: i64,
    /// When the request arrived, for `Verdict::elapsed`.
    pub received: Instant,
    /// What the model said.
    pub model: ModelInput<'a>,
    /// What the channel's raid watch made of the message (default: no raid).
    pub raid: &'a Seen,
}

/// What the model said about a message.
#[derive(Debug, Clone, Copy)]
pub enum ModelInput<'a> {
    /// Not consulted: no model or no heads, an exempt author, no label that acts in the
    /// channel, or rules that settled the message already.
    NotConsulted,
    /// Probabilities by label.
    Scored {
        /// The model's version, for the verdict.
        version: &'a str,
        /// `head/label` of each score.
        labels: &'a [String],
        /// The probabilities.
        scores: &'a [f32],
        /// The thresholds the heads were trained with, by label (`None`: none).
        trained_thresholds: &'a [Option<f64>],
    },
    /// The model should have scored the message but could not: the verdict is rules-only and
    /// marked degraded.
    Unavailable,
}

/// A verdict and what it means for the author's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The verdict.
    pub verdict: Verdict,
    /// The offence to record when the verdict is enforced.
    pub offence: Option<Offence>,
    /// Rules that panicked and were skipped (the verdict then says [`Degraded::Decision`]).
    pub failed_rules: Vec<FailedRule>,
}

/// The label of the reason a message that could not be decided is held with.
pub const UNDECIDED_LABEL: &str = "undecided";

/// Makes verdicts from rules and the author's history. Built once and shared by every caller.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
}

impl Engine {
    /// An engine over a compiled rule set.
    pub fn new(rules: RuleSet) -> Self {
        Self { rules }
    }

    /// The rules and policies it decides with.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Decides one made-up message without effects, so that lazily built tables (the
    /// profanity lexicon's trie, Unicode data, compiled patterns' caches) are built at start
    /// and not on the first caller's time (measured: the first calls took 0.4 s without it).
    pub fn warm_up(&self) {
        let message = ChatMessage {
            channel: "modbot-warm-up".to_owned(),
            message_id: "warm-up".to_owned(),
            user_id: "warm-up".to_owned(),
            nick: "warm-up".to_owned(),
            roles: Vec::new(),
            text: "Hello chat, warming up: https://example.com @someone ＬＵＬ shiiit 1337"
                .to_owned(),
            sent_at: SystemTime::now(),
        };
        let policy = self.rules.policy(&message.channel);
        let normalized = crate::engine::normalize::normalize(&message.text, &policy.emotes);
        let history = UserHistory::default();
        let channel_recent = ChannelWindow::default();
        let _ = self
            .rules
            .harshest_without_history(&message, policy, &normalized);
        self.decide(
            &Inputs {
                message: &message,
                normalized: &normalized,
                history: &history,
                channel_recent: &channel_recent,
                now_ms: 0,
                received: Instant::now(),
                model: ModelInput::NotConsulted,
                raid: &Seen::default(),
            },
            DecideOptions { dry_run: true },
        );
    }

    /// Decides one message: runs the rules, picks the harshest enforced reason, escalates it
    /// for a repeat offender, and reports shadow reasons beside it.
    pub fn decide(&self, inputs: &Inputs<'_>, options: DecideOptions) -> Decided {
        let message = inputs.message;
        let policy = self.rules.policy(&message.channel);
        let exempt = policy.exempts(&message.roles);
        let evaluation = if exempt {
            crate::engine::rules::Evaluation::default()
        } else {
            let ctx = Context {
                normalized: inputs.normalized,
                history: inputs.history,
                channel_recent: inputs.channel_recent,
                now_ms: inputs.now_ms,
            };
            self.rules.evaluate(message, policy, &ctx)
        };
        let mut reasons = evaluation.reasons;
        if !exempt {
            reasons.extend(raid_reasons(inputs, policy));
        }
        let raid_drop = inputs
            .raid
            .raid
            .as_ref()
            .map_or(0.0, |_| policy.raid.threshold_drop);
        let failed_rules = evaluation.failed;
        let mut scores = BTreeMap::new();
        let mut model_version = String::new();
        let mut degraded = Vec::new();
        if !failed_rules.is_empty() {
            degraded.push(Degraded::Decision);
        }
        match inputs.model {
            ModelInput::NotConsulted => {}
            ModelInput::Unavailable => degraded.push(Degraded::Model),
            ModelInput::Scored {
                version,
                labels,
                scores: probabilities,
                trained_thresholds,
            } => {
                model_version = version.to_owned();
                scores.extend(
                    labels
                        .iter()
                        .zip(probabilities)
                        .map(|(l, p)| (l.clone(), f64::from(*p))),
                );
                if !exempt {
                    reasons.extend(model_reasons(
                        policy,
                        labels,
                        probabilities,
                        trained_thresholds,
                        inputs.history.reputation(),
                        raid_drop,
                    ));
                }
            }
        }
        // Harshest first; among equals, the longest duration first (None = permanent ban).
        reasons.sort_by(|a, b| {
            b.decision
                .cmp(&a.decision)
                .then_with(|| duration_rank(b.duration).cmp(&duration_rank(a.duration)))
        });

        let shadow_decision = reasons
            .iter()
            .find(|r| r.shadow)
            .map_or(Decision::Allow, |r| r.decision);
        let (decision, duration) = match reasons.iter().find(|r| !r.shadow) {
            None => (Decision::Allow, None),
            Some(harshest) => {
                let escalated = escalation::escalate(
                    harshest.decision,
                    harshest.duration,
                    inputs.history,
                    &policy.escalation,
                    inputs.now_ms,
                );
                if let Some(reason) = escalated.reason {
                    reasons.insert(0, reason);
                }
                // Harm is never left visible, whatever the ladder softened.
                let harm = reasons.iter().find(|r| r.harmful && !r.shadow);
                match harm {
                    Some(harm) if escalated.decision == Decision::Warn => {
                        reasons.insert(0, escalation::hide_harm(harm));
                        (Decision::Hide, None)
                    }
                    _ => (escalated.decision, escalated.duration),
                }
            }
        };
        let only_shadow_fired = decision == Decision::Allow && !reasons.is_empty();
        let enforced = !options.dry_run && !only_shadow_fired;
        let offence = if enforced {
            escalation::offence(
                escalation::charged_as(decision, &reasons),
                Some(inputs.history),
                &policy.escalation,
                inputs.now_ms,
            )
        } else {
            None
        };
        Decided {
            verdict: Verdict {
                message_id: message.message_id.clone(),
                channel: message.channel.clone(),
                user_id: message.user_id.clone(),
                decision,
                duration,
                reasons,
                enforced,
                shadow_decision,
                model_version,
                elapsed: inputs.received.elapsed(),
                degraded,
                scores,
                normalized_text: inputs.normalized.text.clone(),
                action_id: None,
                review_id: None,
                trial: None,
            },
            offence,
            failed_rules,
        }
    }

    /// The verdict for a message that could not be decided at all (deciding it panicked
    /// outside any one rule): held for a human, marked [`Degraded::Decision`].
    ///
    /// Why hold and not allow: the rules that would have judged the message never ran, so an
    /// allow would let anyone who finds such an input past every rule, while a hold shows
    /// nothing until a moderator has looked (a Classify caller keeps the message back; a chat
    /// bridge, which cannot hold, is sent no action, and the audit log keeps it for review).
    /// A systematic bug then holds every message, loudly (the degraded verdicts, the panic
    /// counter, one log line each), rather than letting everything through silently. The
    /// hold is enforced as any verdict would be: not in a dry run or a shadow channel, and it
    /// records no offence.
    pub fn undecided(
        &self,
        message: &ChatMessage,
        options: DecideOptions,
        received: Instant,
    ) -> Verdict {
        let shadow = self.rules.policy(&message.channel).shadow;
        let reason = Reason {
            source: ReasonSource::Policy,
            rule_id: String::new(),
            label: UNDECIDED_LABEL.to_owned(),
            decision: Decision::Hold,
            duration: None,
            score: 0.0,
            threshold: 0.0,
            shadow,
            harmful: false,
            evidence: Evidence {
                detail: "deciding this message failed".to_owned(),
                ..Evidence::default()
            },
            description: "held for review: deciding this message failed".to_owned(),
        };
        let (decision, shadow_decision) = if shadow {
            (Decision::Allow, Decision::Hold)
        } else {
            (Decision::Hold, Decision::Allow)
        };
        Verdict {
            message_id: message.message_id.clone(),
            channel: message.channel.clone(),
            user_id: message.user_id.clone(),
            decision,
            duration: None,
            reasons: vec![reason],
            enforced: !options.dry_run && !shadow,
            shadow_decision,
            model_version: String::new(),
            elapsed: received.elapsed(),
            degraded: vec![Degraded::Decision],
            scores: BTreeMap::new(),
            normalized_text: String::new(),
            action_id: None,
            review_id: None,
            trial: None,
        }
    }
}

/// The label of the reason a new user's copy of a raid's message gets in raid mode.
pub const RAID_COPY_LABEL: &str = "raid";
/// The label of the reason a new user's link is held with in raid mode.
pub const RAID_LINK_LABEL: &str = "raid-link";

/// Raid mode's reasons ([`crate::engine::raid`]): a new user's copy of the raid's message gets
/// the channel's raid action; any other link from a new user is held for review.
fn raid_reasons(inputs: &Inputs<'_>, policy: &crate::engine::rules::Policy) -> Vec<Reason> {
    let Some(raid) = &inputs.raid.raid else {
        return Vec::new();
    };
    let p = &policy.raid;
    let reason = |label: &str, decision: Decision, description: String| Reason {
        source: ReasonSource::Policy,
        rule_id: String::new(),
        label: label.to_owned(),
        decision,
        duration: None,
        score: f64::from(raid.raiders),
        threshold: 0.0,
        shadow: policy.shadow,
        harmful: false,
        evidence: Evidence {
            similar_text: raid.sample.to_string(),
            detail: format!("raid mode: {}", raid.trigger),
            ..Evidence::default()
        },
        description,
    };
    if inputs.raid.copy {
        return vec![reason(
            RAID_COPY_LABEL,
            p.action,
            format!(
                "raid mode: a new user's copy of the raid's message ({})",
                raid.trigger
            ),
        )];
    }
    let new_user = is_new_user(inputs.history.first_seen_ms, inputs.now_ms, p);
    if p.hold_links && new_user && inputs.normalized.stats.links > 0 {
        return vec![reason(
            RAID_LINK_LABEL,
            Decision::Hold,
            "raid mode: links from new users are held for review".to_owned(),
        )];
    }
    Vec::new()
}

/// One reason per label of the channel's policy whose probability reached its threshold, as
/// the author's `reputation` moves it (`[policy.reputation]`): raised for a trusted regular,
/// lowered for a new user, within [0, 1], and lowered by `raid_drop` in raid mode. A moved threshold is named in the reason; a score
/// that reached the label's own threshold but not a trusted regular's raised one is reported
/// as a shadow reason (what would have been done), so the spared message is on record.
fn model_reasons(
    policy: &crate::engine::rules::Policy,
    labels: &[String],
    probabilities: &[f32],
    trained_thresholds: &[Option<f64>],
    reputation: f64,
    raid_drop: f64,
) -> Vec<Reason> {
    let who = match policy.reputation.trust(reputation) {
        Trust::Trusted => "a trusted regular",
        Trust::New if reputation < 0.0 => "a user with offences",
        Trust::New | Trust::Neither => "a new user",
    };
    let who = if raid_drop > 0.0 {
        format!("{who} in raid mode")
    } else {
        who.to_owned()
    };
    let shift = policy.reputation.threshold_shift(reputation) - raid_drop;
    policy
        .model
        .iter()
        .filter_map(|l| {
            let i = labels.iter().position(|name| *name == l.label)?;
            let base = l.threshold.or(*trained_thresholds.get(i)?)?;
            let score = f64::from(*probabilities.get(i)?);
            let threshold = (base + shift).clamp(0.0, 1.0);
            let spared = score < threshold && score >= base;
            if score < threshold && !spared {
                return None;
            }
            let label = &l.label;
            let (detail, description) = if threshold == base {
                (
                    format!("{label} {score:.3} >= {threshold:.3}"),
                    format!(
                        "model: {label} probability {score:.2} reached the threshold {threshold:.2}"
                    ),
                )
            } else {
                let how = if threshold > base {
                    "raised"
                } else {
                    "lowered"
                };
                let moved = format!(
                    "threshold {base:.2} {how} to {threshold:.2} for {who} (reputation \
                     {reputation:.2})"
                );
                let compared = if spared { "<" } else { ">=" };
                let description = if spared {
                    format!(
                        "model: {label} probability {score:.2} reached the label's threshold \
                         but not the {moved}: not acted on"
                    )
                } else {
                    format!("model: {label} probability {score:.2} reached the {moved}")
                };
                (
                    format!("{label} {score:.3} {compared} {threshold:.3}: {moved}"),
                    description,
                )
            };
            Some(Reason {
                source: ReasonSource::Model,
                rule_id: String::new(),
                label: label.clone(),
                decision: l.decision,
                duration: l.duration,
                score,
                threshold,
                shadow: policy.shadow || l.shadow || spared,
                harmful: l.harmful,
                evidence: Evidence {
                    detail,
                    ..Evidence::default()
                },
                description,
            })
        })
        .collect()
}

/// Orders durations so that a permanent ban (`None`) outranks any finite one.
fn duration_rank(duration: Option<Duration>) -> Duration {
    duration.unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests;
