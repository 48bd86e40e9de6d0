//! Rule filters: the rules file, channel policies, and the checks themselves.
//!
//! A [`RuleSet`] is compiled from a [`Document`]: the tables of a rules file
//! (`config/rules.toml` or `rules.file`), or the same tables as the database keeps them, one
//! row per rule and per channel policy ([`spec`] has their typed form). It is shared by every
//! request and swapped whole when the rules change. [`RuleSet::evaluate`] is a pure function of the normalised message, the user's
//! history and the channel's recent messages: it returns one [`Reason`] per rule that fired.
//!
//! Architecture Invariant: rules do no I/O and keep no state of their own; everything they
//! remember comes in through [`Context`] from `users`.

mod backtest;
mod checks;
mod load;
pub mod lookalike;
mod phrase;
mod profanity;
pub mod similarity;
pub mod spec;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use backtest::{Backtest, BacktestHit, NotBacktestable};
pub use load::{DEFAULT_POLICY, DEFAULT_RULES, Document, KINDS, RulesError};
pub use phrase::PhraseSyntax;

use crate::domain::{ChannelWindow, UserHistory};
use crate::domain::{ChatMessage, Decision, Reason, ReasonSource};
use crate::engine::normalize::{EmoteSet, Normalized};
use checks::Check;

/// Whether a rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its decision is carried out.
    #[default]
    Enforce,
    /// It is reported in verdicts, never carried out.
    Shadow,
    /// It is not evaluated.
    Disabled,
}

/// Whether a `Classify` verdict's action reaches the chat (`[policy] classify_actions`). Stream
/// verdicts are always carried out by the bridge that sent the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifyActions {
    /// Recorded only (status `recorded`): the backend that called `Classify` enforces its
    /// verdicts in its own system.
    #[default]
    Record,
    /// Recorded and sent to the bridge serving the channel, as a stream verdict's is.
    Send,
}

/// How repeat offences escalate in a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// A first offence earns a warning instead of a timeout.
    pub warn_first: bool,
    /// The first timeout of a heat episode.
    pub first_timeout: Duration,
    /// The longest timeout; timeouts double up to it.
    pub max_timeout: Duration,
    /// Once the ladder stands on this rung (escalated timeouts, in one heat episode or
    /// remembered as strikes) the next timeout-worthy offence is a ban (0 = never).
    pub ban_after: u32,
    /// Heat halves every this long.
    pub heat_half_life: Duration,
    /// Strikes (the ladder's memory of offences) halve every this long.
    pub memory_half_life: Duration,
}

/// How a channel is moderated beyond its rules.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Observe only: nothing is enforced.
    pub shadow: bool,
    /// Whether a `Classify` verdict's action is sent to the chat.
    pub classify_actions: ClassifyActions,
    /// Users with these roles skip every rule.
    pub exempt_roles: Vec<String>,
    /// The channel's emotes.
    pub emotes: EmoteSet,
    /// Escalation for repeat offenders.
    pub escalation: Escalation,
    /// What the model's labels do, in label order.
    pub model: Vec<ModelLabel>,
    /// What becomes of held messages.
    pub review: Review,
    /// What a user is told.
    pub notices: Notices,
    /// How a user's reputation moves the model's thresholds.
    pub reputation: Reputation,
    /// Raid detection and raid mode.
    pub raid: RaidPolicy,
    /// The public moderation log.
    pub transparency: spec::TransparencySpec,
    /// The domains every link rule allows in this channel (`[policy.links]`, lower case).
    pub allow_domains: Vec<String>,
}

/// The placeholders a notice template may use: the user's nick, the action's reason, its
/// duration in words, its id, the channel, the channel's appeal text, and the message acted on
/// (only where a template asks for it: nothing of the text is echoed otherwise).
pub const NOTICE_PLACEHOLDERS: &[&str] = &[
    "nick",
    "reason",
    "duration",
    "action_id",
    "channel",
    "appeal",
    "text",
];

/// Longest notice template, in characters (a chat's private message holds 512).
pub const MAX_NOTICE_CHARS: usize = 512;

/// What a channel tells users (`[policy.notices]`), templates checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Notices {
    /// After a warning.
    pub warn: String,
    /// After a hidden message.
    pub hide: String,
    /// After a timeout.
    pub timeout: String,
    /// After a ban.
    pub ban: String,
    /// The `{appeal}` text.
    pub appeal: String,
    /// At most one notice per user per this long (zero: no limit).
    pub min_interval: Duration,
}

/// Checks a notice template: at most [`MAX_NOTICE_CHARS`], every `{...}` one of
/// [`NOTICE_PLACEHOLDERS`] (`{{` and `}}` are literal braces). The message says what is wrong.
pub fn check_notice_template(template: &str, allowed: &[&str]) -> Result<(), String> {
    if template.chars().count() > MAX_NOTICE_CHARS {
        return Err(format!("is longer than {MAX_NOTICE_CHARS} characters"));
    }
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        let (head, tail) = rest.split_at(at);
        let _ = head;
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            rest = after;
            continue;
        }
        if tail.starts_with('}') {
            return Err("has a `}` without its `{` (write `}}` for a brace)".to_owned());
        }
        let Some(end) = tail.find('}') else {
            return Err("has a `{` without its `}` (write `{{` for a brace)".to_owned());
        };
        let name = &tail[1..end];
        if !allowed.contains(&name) {
            return Err(format!(
                "`{{{name}}}` is not a placeholder (use {})",
                allowed
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &tail[end + 1..];
    }
    Ok(())
}

/// How a channel's model thresholds follow its users' reputation (`[policy.reputation]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reputation {
    /// Reputation at or above which a user is a trusted regular.
    pub trusted_above: f64,
    /// Reputation below which a user is new (or distrusted).
    pub new_below: f64,
    /// Added to a trusted regular's model-label thresholds.
    pub trusted_margin: f64,
    /// Taken from a new user's model-label thresholds.
    pub new_margin: f64,
}

/// Where a user's reputation puts them for a channel's model thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trust {
    /// At least `trusted_above`: thresholds raised by `trusted_margin`.
    Trusted,
    /// Below `new_below`: thresholds lowered by `new_margin`.
    New,
    /// In between: thresholds as they are.
    Neither,
}

impl Reputation {
    /// Where `reputation` puts a user.
    pub fn trust(&self, reputation: f64) -> Trust {
        if reputation >= self.trusted_above {
            Trust::Trusted
        } else if reputation < self.new_below {
            Trust::New
        } else {
            Trust::Neither
        }
    }

    /// What a user of `reputation` adds to a model-label threshold: `+trusted_margin`,
    /// `-new_margin` or 0.
    pub fn threshold_shift(&self, reputation: f64) -> f64 {
        match self.trust(reputation) {
            Trust::Trusted => self.trusted_margin,
            Trust::New => -self.new_margin,
            Trust::Neither => 0.0,
        }
    }
}

/// What becomes of a channel's held messages (`[policy.review]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// How long a held message waits for a moderator.
    pub ttl: Duration,
    /// What an item nobody ruled on becomes.
    pub on_expiry: crate::domain::OnExpiry,
    /// Hide a held message while it waits.
    pub hide_while_pending: bool,
}

impl Policy {
    /// Whether a user with `roles` skips every rule.
    pub fn exempts(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.exempt_roles.contains(r))
    }

    /// The harshest decision any model label of the channel can ask for; `None` when no label
    /// acts (then the model is not consulted).
    pub fn harshest_model_decision(&self) -> Option<Decision> {
        self.model.iter().map(|l| l.decision).max()
    }
}

/// A channel's `[policy.raid]`, compiled: raid detection and raid mode ([`crate::engine::raid`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RaidPolicy {
    /// Whether raids are watched for at all.
    pub enabled: bool,
    /// How far back joins and lines count.
    pub window: Duration,
    /// Joins within the window that make a surge.
    pub join_surge: u32,
    /// After a surge: distinct new users posting near-identical lines that start a raid.
    pub surge_users: u32,
    /// Without a surge: distinct new users posting near-identical lines that start a raid.
    pub burst_users: u32,
    /// How alike two lines must be (Sørensen–Dice over bigrams, in [0, 1]).
    pub similarity: f64,
    /// Shorter lines (in characters of normalised text) are never compared.
    pub min_length: u32,
    /// A user first seen less than this long ago is new.
    pub new_user: Duration,
    /// Raid mode lasts this long after the raid's last copy.
    pub duration: Duration,
    /// What a new user's copy of the raid's message gets while raid mode lasts.
    pub action: Decision,
    /// Hold new users' links for review while raid mode lasts.
    pub hold_links: bool,
    /// Lowered from every model label's threshold while raid mode lasts (in [0, 1]).
    pub threshold_drop: f64,
    /// Ask the chat's bridge for subscriber-only mode while raid mode lasts.
    pub subonly: bool,
}

impl Default for RaidPolicy {
    /// Off: a policy stored before raid mode existed keeps working as it did.
    fn default() -> Self {
        Self {
            enabled: false,
            window: Duration::from_secs(30),
            join_surge: 20,
            surge_users: 4,
            burst_users: 8,
            similarity: 0.8,
            min_length: 12,
            new_user: Duration::from_secs(600),
            duration: Duration::from_secs(300),
            action: Decision::Hide,
            hold_links: true,
            threshold_drop: 0.1,
            subonly: false,
        }
    }
}

/// What one model label does in a channel (`[policy.model.labels."head/label"]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLabel {
    /// `head/label`, as the heads name their outputs.
    pub label: String,
    /// The decision when the label's probability reaches the threshold.
    pub decision: Decision,
    /// Duration of a timeout or ban.
    pub duration: Option<Duration>,
    /// The threshold; `None` uses the one the head was trained with (and a head without one
    /// never acts on this label).
    pub threshold: Option<f64>,
    /// Reported only, not enforced.
    pub shadow: bool,
    /// What it catches is harm: never left visible.
    pub harmful: bool,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Unique id.
    pub id: String,
    /// Its kind, as written in the rules file.
    pub kind: &'static str,
    /// One line for moderators.
    pub description: String,
    /// Decision when it fires.
    pub decision: Decision,
    /// Duration of a timeout or ban (`None`: permanent ban, or not applicable).
    pub duration: Option<Duration>,
    /// Whether it acts.
    pub mode: Mode,
    /// Roles that skip it.
    pub exempt_roles: Vec<String>,
    /// Channels it applies to; empty for all.
    pub channels: Vec<String>,
    /// What it catches is harm (a scam, phishing, an IP logger, a slur): a message it fires on
    /// is never left visible ([`crate::engine::decision`]).
    pub harmful: bool,
    /// A trusted regular is spared (the hit is a shadow reason naming why).
    pub spare_trusted: bool,
    check: Check,
}

impl Rule {
    fn applies(&self, message: &ChatMessage) -> bool {
        self.mode != Mode::Disabled
            && (self.channels.is_empty() || self.channels.contains(&message.channel))
            && !message.roles.iter().any(|r| self.exempt_roles.contains(r))
    }
}

/// What the rules may look at besides the message.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The message's normalised text, tokens and statistics.
    pub normalized: &'a Normalized<'a>,
    /// The author's history before this message.
    pub history: &'a UserHistory,
    /// The channel's recent messages from other users, oldest first.
    pub channel_recent: &'a ChannelWindow,
    /// The message's time, Unix milliseconds.
    pub now_ms: i64,
}

/// What the rules found about one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// One reason per rule that fired, in file order.
    pub reasons: Vec<Reason>,
    /// Rules that panicked on this message and were skipped, in file order.
    pub failed: Vec<FailedRule>,
}

/// A rule that panicked while checking a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRule {
    /// The rule's id.
    pub rule_id: String,
    /// `file:line` of the panic.
    pub location: String,
}

/// The compiled rules and policies.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    default_policy: Policy,
    channel_policies: HashMap<String, Policy>,
    /// The shared profanity pass, when any rule uses it.
    lexicon: Option<profanity::Lexicon>,
}

impl RuleSet {
    /// The policy of a channel: its own, or the default.
    pub fn policy(&self, channel: &str) -> &Policy {
        self.channel_policies
            .get(channel)
            .unwrap_or(&self.default_policy)
    }

    /// The rules, in the document's order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Runs every applicable rule; one reason per rule that fired, in file order. Rules in
    /// shadow mode, and every rule of a channel in shadow mode, give shadow reasons. A rule
    /// that panics is skipped and listed in [`Evaluation::failed`]; the others still run.
    pub fn evaluate(
        &self,
        message: &ChatMessage,
        policy: &Policy,
        ctx: &Context<'_>,
    ) -> Evaluation {
        self.evaluate_where(message, policy, ctx, |_| true)
    }

    /// The harshest enforced decision of the rules that need no history (phrases, profanity,
    /// caps, floods, ...), before the message joins any history: enough to know that the
    /// model cannot change the outcome. `None` when none of them fires.
    pub fn harshest_without_history(
        &self,
        message: &ChatMessage,
        policy: &Policy,
        normalized: &Normalized<'_>,
    ) -> Option<Decision> {
        let history = UserHistory::default();
        let channel_recent = ChannelWindow::default();
        let ctx = Context {
            normalized,
            history: &history,
            channel_recent: &channel_recent,
            now_ms: 0,
        };
        self.evaluate_where(message, policy, &ctx, |check| !check.needs_history())
            .reasons
            .iter()
            .filter(|r| !r.shadow)
            .map(|r| r.decision)
            .max()
    }

    fn evaluate_where(
        &self,
        message: &ChatMessage,
        policy: &Policy,
        ctx: &Context<'_>,
        include: impl Fn(&Check) -> bool,
    ) -> Evaluation {
        let analysis = std::cell::OnceCell::new();
        let reputation = ctx.history.reputation();
        let trusted = policy.reputation.trust(reputation) == Trust::Trusted;
        let mut evaluation = Evaluation::default();
        for rule in self
            .rules
            .iter()
            .filter(|rule| include(&rule.check) && rule.applies(message))
        {
            match self.run(rule, policy, ctx, trusted, reputation, &analysis) {
                Ok(Some(reason)) => evaluation.reasons.push(reason),
                Ok(None) => {}
                Err(failed) => evaluation.failed.push(failed),
            }
        }
        evaluation
    }

    /// One rule on one message: its reason when it fires, the failure when it panics.
    fn run(
        &self,
        rule: &Rule,
        policy: &Policy,
        ctx: &Context<'_>,
        trusted: bool,
        reputation: f64,
        analysis: &std::cell::OnceCell<rustrict::Type>,
    ) -> Result<Option<Reason>, FailedRule> {
        // Each rule alone under the guard: a rule that panics (a bug, or an input nobody
        // foresaw) is skipped and reported, and every other rule still fires, so a panic
        // never turns a message some rule would act on into a silent allow.
        let hit = crate::guard::catch(|| match (&rule.check, &self.lexicon) {
            (Check::Profanity(check), Some(lexicon)) => {
                let analysis = *analysis.get_or_init(|| lexicon.analyze(ctx.normalized));
                check.check(ctx.normalized, analysis)
            }
            (check, _) => check.check(ctx, policy),
        });
        let hit = match hit {
            Ok(Some(hit)) => hit,
            Ok(None) => return Ok(None),
            Err(panicked) => {
                return Err(FailedRule {
                    rule_id: rule.id.clone(),
                    location: panicked.location,
                });
            }
        };
        let spared = rule.spare_trusted && trusted;
        let mut description = if rule.description.is_empty() {
            format!("{} (rule {})", hit.evidence.detail, rule.id)
        } else {
            format!(
                "{}: {} (rule {})",
                rule.description, hit.evidence.detail, rule.id
            )
        };
        if spared {
            description.push_str(&format!(
                ": not acted on, a trusted regular (reputation {reputation:.2})"
            ));
        }
        Ok(Some(Reason {
            source: ReasonSource::Rule,
            rule_id: rule.id.clone(),
            label: rule.kind.to_owned(),
            decision: rule.decision,
            duration: rule.duration,
            score: hit.score,
            threshold: hit.threshold,
            shadow: policy.shadow || rule.mode == Mode::Shadow || spared,
            harmful: rule.harmful,
            description,
            evidence: hit.evidence,
        }))
    }
}

#[cfg(test)]
mod tests;
