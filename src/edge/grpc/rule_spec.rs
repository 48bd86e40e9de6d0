//! The Admin API's `Rule` and `Policy` to and from the rules file's tables ([`RuleSpec`],
//! [`PolicySpec`]), which is how the database keeps them and what `rules` compiles.
//!
//! Requests are checked here for what only the API can get wrong (bounds, `UNSPECIFIED`
//! enums, fractional durations); everything the file would also refuse is left to the rules'
//! own validation, whose errors name file keys (`params.max_ratio`, `duration_secs`) that
//! [`rule_error`] and [`policy_error`] turn into proto field paths (`rule.caps.max_ratio`,
//! `rule.duration`), so both sources of rules are held to exactly the same checks.
//!
//! proto3 cannot tell an unset number from 0, so a zero parameter that the rules file gives a
//! default to (`caps.min_letters`, `copypasta.min_similarity`, ...) means that default, and an
//! unset duration parameter (`link.repeat_window`, `repetition.window`) too. Stored rules
//! always carry every parameter explicitly, so what `ListRules` returns is what acts.

use std::collections::BTreeMap;
use std::time::SystemTime;

use toml::Value;

use super::convert::{MAX_ROLE_BYTES, MAX_ROLES};
use super::status::FieldError;
use crate::domain::MAX_ID_BYTES;
use crate::domain::{Decision, OnExpiry};
use crate::engine::rules::ClassifyActions;
use crate::engine::rules::spec::{
    DEFAULT_MEMORY_HALF_LIFE_SECS, EscalationSpec, LinksSpec, ModelLabelSpec, ModelPolicySpec,
    NickDisplay, NoticesSpec, RaidSpec, ReputationSpec, ReviewSpec, RuleParams, TransparencySpec,
};
use crate::engine::rules::spec::{PolicySpec, RuleSpec};
use crate::engine::rules::{Mode, PhraseSyntax, RulesError};
use crate::proto;

/// Most phrases in one rule.
pub const MAX_PHRASES: usize = 1000;
/// Longest phrase, in bytes.
pub const MAX_PHRASE_BYTES: usize = 512;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Most domains in one list of a link rule.
pub const MAX_DOMAINS: usize = 1000;
/// Longest domain name, in bytes (DNS's own limit).
pub const MAX_DOMAIN_BYTES: usize = 253;
/// Most channels one rule may name.
pub const MAX_CHANNELS: usize = 256;
/// Most profanity categories (there are four).
pub const MAX_CATEGORIES: usize = 16;
/// Most emotes in one policy.
pub const MAX_EMOTES: usize = 5000;
/// Longest emote name, in bytes.
pub const MAX_EMOTE_BYTES: usize = 64;
/// Most model labels in one policy.
pub const MAX_LABELS: usize = 64;
/// Longest `head/label` name, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;
/// Longest duration anywhere in a rule or policy: a year. Longer is a typo (or a permanent
/// ban, which is a ban without a duration).
pub const MAX_DURATION_SECS: u64 = 366 * 24 * 3600;
/// Highest count parameter (messages, letters, mentions, ...).
const MAX_COUNT: u32 = 1_000_000;

fn too_many(field: &str, count: usize, limit: usize) -> FieldError {
    FieldError::new(
        field,
        format!("{count} entries exceed the limit of {limit}"),
    )
}

/// A list of strings, each 1..=`max_bytes` bytes without control characters.
fn strings(
    values: Vec<String>,
    field: &str,
    max_items: usize,
    max_bytes: usize,
) -> Result<Vec<String>, FieldError> {
    if values.len() > max_items {
        return Err(too_many(field, values.len(), max_items));
    }
    for (i, value) in values.iter().enumerate() {
        if value.is_empty() || value.len() > max_bytes {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!("must be 1 to {max_bytes} bytes"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                "must not contain control characters",
            ));
        }
    }
    Ok(values)
}

/// An id or channel name: 1..=256 bytes, no control characters, not blank.
pub fn name(value: &str, field: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "{} bytes exceed the limit of {MAX_ID_BYTES} bytes",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A duration in whole seconds, within [`MAX_DURATION_SECS`].
fn whole_seconds(duration: &prost_types::Duration, field: &str) -> Result<u64, FieldError> {
    if duration.seconds < 0 || duration.nanos < 0 {
        return Err(FieldError::new(field, "must not be negative"));
    }
    if duration.nanos != 0 {
        return Err(FieldError::new(
            field,
            "must be whole seconds (nanos must be 0)",
        ));
    }
    let seconds = duration.seconds.unsigned_abs();
    if seconds > MAX_DURATION_SECS {
        return Err(FieldError::new(
            field,
            format!("{seconds} s is above the limit of {MAX_DURATION_SECS} s (a year)"),
        ));
    }
    Ok(seconds)
}

fn seconds_or(
    duration: Option<&prost_types::Duration>,
    field: &str,
    default: Option<u64>,
) -> Result<Option<u64>, FieldError> {
    match duration {
        Some(d) => whole_seconds(d, field).map(Some),
        None => Ok(default),
    }
}

/// Whole seconds as a TOML integer (bounded by [`MAX_DURATION_SECS`], so it fits).
fn seconds_value(seconds: u64) -> Value {
    Value::Integer(i64::try_from(seconds).unwrap_or(i64::MAX))
}

fn proto_duration(seconds: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

fn count(value: u32, field: &str) -> Result<u32, FieldError> {
    if value > MAX_COUNT {
        return Err(FieldError::new(
            field,
            format!("{value} is above the limit of {MAX_COUNT}"),
        ));
    }
    Ok(value)
}

/// A decision sent as an enum number.
fn decision(value: i32, field: &str) -> Result<Decision, FieldError> {
    match proto::Decision::try_from(value) {
        Ok(proto::Decision::Unspecified) => Err(FieldError::new(field, "is required")),
        Ok(proto::Decision::Allow) => Ok(Decision::Allow),
        Ok(proto::Decision::Hold) => Ok(Decision::Hold),
        Ok(proto::Decision::Hide) => Ok(Decision::Hide),
        Ok(proto::Decision::Warn) => Ok(Decision::Warn),
        Ok(proto::Decision::Timeout) => Ok(Decision::Timeout),
        Ok(proto::Decision::Ban) => Ok(Decision::Ban),
        Err(_) => Err(FieldError::new(
            field,
            format!("{value} is not a modbot.v1.Decision"),
        )),
    }
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// A table of parameters, built key by key.
#[derive(Default)]
struct Params(toml::Table);

impl Params {
    fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// Sets `key` unless `value` is 0: then the rules file's default applies (proto3 cannot
    /// tell 0 from unset).
    fn unless_zero(&mut self, key: &str, value: u32) -> &mut Self {
        if value != 0 {
            self.set(key, i64::from(value));
        }
        self
    }

    fn list(&mut self, key: &str, values: Vec<String>) -> &mut Self {
        self.set(
            key,
            Value::Array(values.into_iter().map(Value::String).collect()),
        )
    }
}

/// A request's rule as a rule spec. An empty id stays empty (the caller assigns one); the
/// spec still has to pass [`RuleSpec::validate`] (see [`rule_error`] for its errors).
pub fn rule_from_proto(rule: proto::Rule) -> Result<RuleSpec, FieldError> {
    if !rule.id.is_empty() {
        name(&rule.id, "rule.id")?;
    }
    if rule.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(FieldError::new(
            "rule.description",
            format!(
                "{} bytes exceed the limit of {MAX_DESCRIPTION_BYTES} bytes",
                rule.description.len()
            ),
        ));
    }
    if !rule.channel.is_empty() {
        name(&rule.channel, "rule.channel")?;
    }
    let channels = strings(rule.channels, "rule.channels", MAX_CHANNELS, MAX_ID_BYTES)?;
    let channels = match (rule.channel.is_empty(), channels.is_empty()) {
        (true, _) => channels,
        (false, true) => vec![rule.channel],
        // What ListRules would never send, but a client echoing both sides of one channel
        // means no harm.
        (false, false) if channels == [rule.channel.clone()] => channels,
        (false, false) => {
            return Err(FieldError::new(
                "rule.channels",
                "set either channel or channels, not both",
            ));
        }
    };
    let exempt_roles = strings(
        rule.exempt_roles,
        "rule.exempt_roles",
        MAX_ROLES,
        MAX_ROLE_BYTES,
    )?;
    let action = decision(rule.action, "rule.action")?;
    let duration_secs = seconds_or(rule.duration.as_ref(), "rule.duration", Some(0))?.unwrap_or(0);
    let mode = match proto::RuleMode::try_from(rule.mode) {
        Ok(proto::RuleMode::Unspecified) => {
            return Err(FieldError::new("rule.mode", "is required"));
        }
        Ok(proto::RuleMode::Enforce) => Mode::Enforce,
        Ok(proto::RuleMode::Shadow) => Mode::Shadow,
        Ok(proto::RuleMode::Disabled) => Mode::Disabled,
        Err(_) => {
            return Err(FieldError::new(
                "rule.mode",
                format!("{} is not a modbot.v1.RuleMode", rule.mode),
            ));
        }
    };
    let kind = rule.kind.ok_or_else(|| {
        FieldError::new(
            "rule.kind",
            format!(
                "is required: one of {}",
                crate::engine::rules::KINDS
                    .iter()
                    .map(|k| format!("rule.{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let (kind, params) = params_from_proto(kind)?;
    Ok(RuleSpec {
        id: rule.id,
        kind: kind.to_owned(),
        description: rule.description,
        action,
        duration_secs,
        mode,
        exempt_roles,
        channels,
        harmful: rule.harmful,
        spare_trusted: rule.spare_trusted,
        params: params.0,
    })
}

fn params_from_proto(kind: proto::rule::Kind) -> Result<(&'static str, Params), FieldError> {
    use proto::rule::Kind;
    let mut p = Params::default();
    let kind = match kind {
        Kind::Phrase(r) => {
            let phrases = strings(
                r.phrases,
                "rule.phrase.phrases",
                MAX_PHRASES,
                MAX_PHRASE_BYTES,
            )?;
            let syntax = match proto::PhraseSyntax::try_from(r.syntax) {
                Ok(proto::PhraseSyntax::Unspecified) => {
                    return Err(FieldError::new("rule.phrase.syntax", "is required"));
                }
                Ok(proto::PhraseSyntax::Literal) => "literal",
                Ok(proto::PhraseSyntax::Wildcard) => "wildcard",
                Ok(proto::PhraseSyntax::Regex) => "regex",
                Err(_) => {
                    return Err(FieldError::new(
                        "rule.phrase.syntax",
                        format!("{} is not a modbot.v1.PhraseSyntax", r.syntax),
                    ));
                }
            };
            p.list("phrases", phrases)
                .set("syntax", syntax)
                .set("anywhere", r.anywhere);
            "phrase"
        }
        Kind::Profanity(r) => {
            let categories = strings(
                r.categories,
                "rule.profanity.categories",
                MAX_CATEGORIES,
                MAX_ROLE_BYTES,
            )?;
            if !r.min_severity.is_empty() {
                if r.min_severity.len() > MAX_ROLE_BYTES {
                    return Err(FieldError::new(
                        "rule.profanity.min_severity",
                        "is not mild, moderate or severe",
                    ));
                }
                p.set("min_severity", r.min_severity);
            }
            p.list("categories", categories);
            "profanity"
        }
        Kind::Link(r) => {
            let allow = strings(
                r.allow_domains,
                "rule.link.allow_domains",
                MAX_DOMAINS,
                MAX_DOMAIN_BYTES,
            )?;
            let deny = strings(
                r.deny_domains,
                "rule.link.deny_domains",
                MAX_DOMAINS,
                MAX_DOMAIN_BYTES,
            )?;
            let brands = strings(
                r.lookalike_brands,
                "rule.link.lookalike_brands",
                MAX_DOMAINS,
                MAX_DOMAIN_BYTES,
            )?;
            let tlds = strings(
                r.deny_tlds,
                "rule.link.deny_tlds",
                MAX_DOMAINS,
                MAX_DOMAIN_BYTES,
            )?;
            let min_age = seconds_or(r.min_user_age.as_ref(), "rule.link.min_user_age", Some(0))?;
            let window = seconds_or(r.repeat_window.as_ref(), "rule.link.repeat_window", None)?;
            p.list("allow_domains", allow)
                .list("deny_domains", deny)
                .list("lookalike_brands", brands)
                .list("deny_tlds", tlds)
                .set("allow_list_only", r.allow_list_only)
                .set("min_user_age_secs", seconds_value(min_age.unwrap_or(0)))
                .set(
                    "max_repeats",
                    i64::from(count(r.max_repeats, "rule.link.max_repeats")?),
                );
            if let Some(window) = window {
                p.set("repeat_window_secs", seconds_value(window));
            }
            "link"
        }
        Kind::Caps(r) => {
            p.set("max_ratio", r.max_ratio).unless_zero(
                "min_letters",
                count(r.min_letters, "rule.caps.min_letters")?,
            );
            "caps"
        }
        Kind::EmoteFlood(r) => {
            p.set(
                "max_emotes",
                i64::from(count(r.max_emotes, "rule.emote_flood.max_emotes")?),
            )
            .set("max_ratio", r.max_ratio)
            .unless_zero(
                "min_tokens",
                count(r.min_tokens, "rule.emote_flood.min_tokens")?,
            );
            "emote_flood"
        }
        Kind::CharFlood(r) => {
            p.set(
                "max_non_ascii",
                i64::from(count(r.max_non_ascii, "rule.char_flood.max_non_ascii")?),
            )
            .set(
                "max_punctuation",
                i64::from(count(r.max_punctuation, "rule.char_flood.max_punctuation")?),
            )
            .set(
                "max_combining_marks",
                i64::from(count(
                    r.max_combining_marks,
                    "rule.char_flood.max_combining_marks",
                )?),
            );
            "char_flood"
        }
        Kind::Repetition(r) => {
            let window = seconds_or(r.window.as_ref(), "rule.repetition.window", None)?;
            p.set("min_similarity", r.min_similarity)
                .unless_zero(
                    "last_messages",
                    count(r.last_messages, "rule.repetition.last_messages")?,
                )
                .unless_zero(
                    "min_length",
                    count(r.min_length, "rule.repetition.min_length")?,
                );
            if let Some(window) = window {
                p.set("window_secs", seconds_value(window));
            }
            "repetition"
        }
        Kind::Copypasta(r) => {
            p.unless_zero(
                "min_length",
                count(r.min_length, "rule.copypasta.min_length")?,
            )
            .unless_zero(
                "last_messages",
                count(r.last_messages, "rule.copypasta.last_messages")?,
            );
            if r.min_similarity != 0.0 {
                p.set("min_similarity", r.min_similarity);
            }
            "copypasta"
        }
        Kind::Rate(r) => {
            let window = r
                .window
                .as_ref()
                .ok_or_else(|| FieldError::new("rule.rate.window", "is required"))?;
            let window = whole_seconds(window, "rule.rate.window")?;
            p.set(
                "max_messages",
                i64::from(count(r.max_messages, "rule.rate.max_messages")?),
            )
            // The file's rate window is fractional seconds.
            .set("window_secs", Value::Float(window as f64));
            "rate"
        }
        Kind::UniqueWords(r) => {
            p.set("max_ratio", r.max_ratio).unless_zero(
                "min_words",
                count(r.min_words, "rule.unique_words.min_words")?,
            );
            "unique_words"
        }
        Kind::LongWord(r) => {
            p.set(
                "max_length",
                i64::from(count(r.max_length, "rule.long_word.max_length")?),
            );
            "long_word"
        }
        Kind::Mentions(r) => {
            p.set(
                "max_mentions",
                i64::from(count(r.max_mentions, "rule.mentions.max_mentions")?),
            );
            "mentions"
        }
    };
    Ok((kind, p))
}

/// A rule's compile error as a field error: the file key becomes the proto field path
/// (`params.max_ratio` of a caps rule → `rule.caps.max_ratio`, `duration_secs` →
/// `rule.duration`, `params.window_secs` → `rule.rate.window`).
pub fn rule_error(error: RulesError, kind: &str) -> FieldError {
    let place = error.place.as_str();
    let field = if place.is_empty() {
        "rule".to_owned()
    } else if let Some(rest) = place.strip_prefix("params") {
        format!("rule.{kind}{}", proto_path(rest))
    } else {
        format!("rule{}", proto_path(&format!(".{place}")))
    };
    FieldError::new(field, error.message)
}

/// A path of file keys (`.window_secs`, `.phrases[2]`) in proto names: durations drop their
/// `_secs` (`duration_secs` → `duration`, `min_user_age_secs` → `min_user_age`).
fn proto_path(path: &str) -> String {
    path.split('.')
        .map(|segment| {
            let (key, index) = segment
                .find('[')
                .map_or((segment, ""), |at| segment.split_at(at));
            format!("{}{index}", key.strip_suffix("_secs").unwrap_or(key))
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A stored rule as the API shows it.
pub fn rule_to_proto(
    spec: &RuleSpec,
    revision: u64,
    updated_at: SystemTime,
) -> Result<proto::Rule, RulesError> {
    use proto::rule::Kind;
    let kind = match spec.params()? {
        RuleParams::Phrase(p) => Kind::Phrase(proto::PhraseRule {
            phrases: p.phrases,
            syntax: match p.syntax {
                PhraseSyntax::Literal => proto::PhraseSyntax::Literal,
                PhraseSyntax::Wildcard => proto::PhraseSyntax::Wildcard,
                PhraseSyntax::Regex => proto::PhraseSyntax::Regex,
            }
            .into(),
            anywhere: p.anywhere,
        }),
        RuleParams::Profanity(p) => Kind::Profanity(proto::ProfanityRule {
            min_severity: p.min_severity,
            categories: p.categories,
        }),
        RuleParams::Link(p) => Kind::Link(proto::LinkRule {
            allow_domains: p.allow_domains,
            deny_domains: p.deny_domains,
            allow_list_only: p.allow_list_only,
            min_user_age: Some(proto_duration(p.min_user_age_secs)),
            max_repeats: p.max_repeats,
            repeat_window: Some(proto_duration(p.repeat_window_secs)),
            lookalike_brands: p.lookalike_brands,
            deny_tlds: p.deny_tlds,
        }),
        RuleParams::Caps(p) => Kind::Caps(proto::CapsRule {
            max_ratio: p.max_ratio,
            min_letters: p.min_letters,
        }),
        RuleParams::EmoteFlood(p) => Kind::EmoteFlood(proto::EmoteFloodRule {
            max_emotes: p.max_emotes,
            max_ratio: p.max_ratio,
            min_tokens: p.min_tokens,
        }),
        RuleParams::CharFlood(p) => Kind::CharFlood(proto::CharFloodRule {
            max_non_ascii: p.max_non_ascii,
            max_punctuation: p.max_punctuation,
            max_combining_marks: p.max_combining_marks,
        }),
        RuleParams::Repetition(p) => Kind::Repetition(proto::RepetitionRule {
            min_similarity: p.min_similarity,
            last_messages: p.last_messages,
            window: Some(proto_duration(p.window_secs)),
            min_length: p.min_length,
        }),
        RuleParams::Copypasta(p) => Kind::Copypasta(proto::CopypastaRule {
            min_length: p.min_length,
            min_similarity: p.min_similarity,
            last_messages: p.last_messages,
        }),
        RuleParams::Rate(p) => Kind::Rate(proto::RateRule {
            max_messages: p.max_messages,
            // Files may give fractions of a second.
            window: prost_types::Duration::try_from(std::time::Duration::from_secs_f64(
                p.window_secs.clamp(0.0, MAX_DURATION_SECS as f64),
            ))
            .ok(),
        }),
        RuleParams::UniqueWords(p) => Kind::UniqueWords(proto::UniqueWordsRule {
            max_ratio: p.max_ratio,
            min_words: p.min_words,
        }),
        RuleParams::LongWord(p) => Kind::LongWord(proto::LongWordRule {
            max_length: p.max_length,
        }),
        RuleParams::Mentions(p) => Kind::Mentions(proto::MentionRule {
            max_mentions: p.max_mentions,
        }),
    };
    let (channel, channels) = match spec.channels.as_slice() {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    Ok(proto::Rule {
        id: spec.id.clone(),
        channel,
        description: spec.description.clone(),
        action: proto::Decision::from(spec.action).into(),
        duration: (spec.duration_secs > 0).then(|| proto_duration(spec.duration_secs)),
        mode: match spec.mode {
            Mode::Enforce => proto::RuleMode::Enforce,
            Mode::Shadow => proto::RuleMode::Shadow,
            Mode::Disabled => proto::RuleMode::Disabled,
        }
        .into(),
        exempt_roles: spec.exempt_roles.clone(),
        updated_at: Some(timestamp(updated_at)),
        channels,
        revision,
        harmful: spec.harmful,
        spare_trusted: spec.spare_trusted,
        kind: Some(kind),
    })
}

/// A request's policy as its channel and a policy spec; the spec still has to pass
/// [`PolicySpec::validate`] (see [`policy_error`]).
pub fn policy_from_proto(policy: proto::Policy) -> Result<(String, PolicySpec), FieldError> {
    name(&policy.channel, "policy.channel")?;
    let exempt_roles = strings(
        policy.exempt_roles,
        "policy.exempt_roles",
        MAX_ROLES,
        MAX_ROLE_BYTES,
    )?;
    let emotes = strings(policy.emotes, "policy.emotes", MAX_EMOTES, MAX_EMOTE_BYTES)?;
    if let Some(i) = emotes
        .iter()
        .position(|e| e.trim().is_empty() || e.contains(char::is_whitespace))
    {
        return Err(FieldError::new(
            format!("policy.emotes[{i}]"),
            format!("`{}` is not an emote name (one word)", emotes[i]),
        ));
    }
    let escalation = policy
        .escalation
        .ok_or_else(|| FieldError::new("policy.escalation", "is required"))?;
    let required = |d: Option<&prost_types::Duration>, field: &str| {
        seconds_or(d, field, None)?.ok_or_else(|| FieldError::new(field, "is required"))
    };
    let escalation = EscalationSpec {
        warn_first: escalation.warn_first,
        first_timeout_secs: required(
            escalation.first_timeout.as_ref(),
            "policy.escalation.first_timeout",
        )?,
        max_timeout_secs: required(
            escalation.max_timeout.as_ref(),
            "policy.escalation.max_timeout",
        )?,
        ban_after: count(escalation.ban_after, "policy.escalation.ban_after")?,
        heat_half_life_secs: required(
            escalation.heat_half_life.as_ref(),
            "policy.escalation.heat_half_life",
        )?,
        memory_half_life_secs: seconds_or(
            escalation.memory_half_life.as_ref(),
            "policy.escalation.memory_half_life",
            Some(DEFAULT_MEMORY_HALF_LIFE_SECS),
        )?
        .unwrap_or(DEFAULT_MEMORY_HALF_LIFE_SECS),
    };
    if policy.label_actions.len() > MAX_LABELS {
        return Err(too_many(
            "policy.label_actions",
            policy.label_actions.len(),
            MAX_LABELS,
        ));
    }
    // Sorted, so that of several bad labels the same one is always named.
    let actions: BTreeMap<String, i32> = policy.label_actions.into_iter().collect();
    let thresholds: BTreeMap<String, f64> = policy.thresholds.into_iter().collect();
    if let Some(label) = thresholds.keys().find(|l| !actions.contains_key(*l)) {
        return Err(FieldError::new(
            format!("policy.thresholds[\"{label}\"]"),
            "the label has no action in label_actions (a label acts only with one)",
        ));
    }
    let harmful = strings(
        policy.harmful_labels,
        "policy.harmful_labels",
        MAX_LABELS,
        MAX_LABEL_BYTES,
    )?;
    if let Some(i) = harmful.iter().position(|l| !actions.contains_key(l)) {
        return Err(FieldError::new(
            format!("policy.harmful_labels[{i}]"),
            format!(
                "`{}` has no action in label_actions (a label acts only with one)",
                harmful[i]
            ),
        ));
    }
    let mut labels = BTreeMap::new();
    for (label, action) in actions {
        let field = format!("policy.label_actions[\"{label}\"]");
        if label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                format!("a label name is 1 to {MAX_LABEL_BYTES} bytes, e.g. \"toxicity/insult\""),
            ));
        }
        let action = decision(action, &field)?;
        let spec = ModelLabelSpec {
            action,
            threshold: thresholds.get(&label).copied(),
            duration_secs: if action == Decision::Timeout {
                escalation.first_timeout_secs
            } else {
                0
            },
            mode: if policy.model_enabled {
                Mode::Enforce
            } else {
                Mode::Disabled
            },
            harmful: harmful.contains(&label),
        };
        labels.insert(label, spec);
    }
    let classify_actions = match proto::ClassifyActions::try_from(policy.classify_actions) {
        Ok(proto::ClassifyActions::Unspecified | proto::ClassifyActions::Record) => {
            ClassifyActions::Record
        }
        Ok(proto::ClassifyActions::Send) => ClassifyActions::Send,
        Err(_) => {
            return Err(FieldError::new(
                "policy.classify_actions",
                format!(
                    "{} is not a ClassifyActions value (RECORD or SEND)",
                    policy.classify_actions
                ),
            ));
        }
    };
    let review = match policy.review {
        None => ReviewSpec::default(),
        Some(review) => ReviewSpec {
            ttl_secs: seconds_or(review.ttl.as_ref(), "policy.review.ttl", None)?
                .unwrap_or(ReviewSpec::default().ttl_secs),
            on_expiry: match proto::ReviewExpiry::try_from(review.on_expiry) {
                Ok(proto::ReviewExpiry::Unspecified | proto::ReviewExpiry::Allow) => {
                    OnExpiry::Allow
                }
                Ok(proto::ReviewExpiry::Hide) => OnExpiry::Hide,
                Err(_) => {
                    return Err(FieldError::new(
                        "policy.review.on_expiry",
                        format!(
                            "{} is not a ReviewExpiry value (ALLOW or HIDE)",
                            review.on_expiry
                        ),
                    ));
                }
            },
            hide_while_pending: review.hide_while_pending,
        },
    };
    let notices = match policy.notices {
        None => NoticesSpec {
            min_interval_secs: 0,
            ..NoticesSpec::default()
        },
        Some(n) => NoticesSpec {
            warn: n.warn,
            hide: n.hide,
            timeout: n.timeout,
            ban: n.ban,
            appeal: n.appeal,
            min_interval_secs: seconds_or(
                n.min_interval.as_ref(),
                "policy.notices.min_interval",
                Some(0),
            )?
            .unwrap_or(0),
        },
    };
    // Range checks are the compiler's (`policy.reputation.trusted_margin: 2 is outside [0, 1]`).
    let reputation = match policy.reputation {
        None => ReputationSpec::default(),
        Some(r) => ReputationSpec {
            trusted_above: r.trusted_above,
            new_below: r.new_below,
            trusted_margin: r.trusted_margin,
            new_margin: r.new_margin,
        },
    };
    let raid = match policy.raid {
        None => RaidSpec::default(),
        Some(r) => raid_from_proto(r)?,
    };
    let transparency = match policy.transparency {
        None => TransparencySpec::default(),
        Some(t) => TransparencySpec {
            public: t.public,
            nicks: match proto::NickDisplay::try_from(t.nicks) {
                Ok(proto::NickDisplay::Unspecified | proto::NickDisplay::Hashed) => {
                    NickDisplay::Hashed
                }
                Ok(proto::NickDisplay::Shown) => NickDisplay::Shown,
                Err(_) => {
                    return Err(FieldError::new(
                        "policy.transparency.nicks",
                        format!("{} is not a NickDisplay value (HASHED or SHOWN)", t.nicks),
                    ));
                }
            },
            show_text: t.show_text,
            recent_actions: match t.recent_actions {
                0 => TransparencySpec::default().recent_actions,
                n => n,
            },
        },
    };
    let links = LinksSpec {
        allow_domains: policy.links.map(|l| l.allow_domains).unwrap_or_default(),
    };
    Ok((
        policy.channel,
        PolicySpec {
            shadow: policy.shadow,
            exempt_roles,
            emotes,
            classify_actions,
            escalation,
            review,
            notices,
            reputation,
            raid,
            transparency,
            links,
            model: ModelPolicySpec { labels },
        },
    ))
}

/// A request's raid policy; its ranges are checked with the rest of the policy.
fn raid_from_proto(r: proto::RaidPolicy) -> Result<RaidSpec, FieldError> {
    let defaults = RaidSpec::default();
    let secs = |d: Option<&prost_types::Duration>, field: &str, default: u64| {
        seconds_or(d, field, Some(default)).map(|s| s.unwrap_or(default))
    };
    Ok(RaidSpec {
        enabled: r.enabled,
        window_secs: secs(
            r.window.as_ref(),
            "policy.raid.window",
            defaults.window_secs,
        )?,
        join_surge: r.join_surge,
        surge_users: r.surge_users,
        burst_users: r.burst_users,
        similarity: r.similarity,
        min_length: r.min_length,
        new_user_secs: secs(
            r.new_user.as_ref(),
            "policy.raid.new_user",
            defaults.new_user_secs,
        )?,
        duration_secs: secs(
            r.duration.as_ref(),
            "policy.raid.duration",
            defaults.duration_secs,
        )?,
        action: if r.action == proto::Decision::Unspecified as i32 {
            defaults.action
        } else {
            decision(r.action, "policy.raid.action")?
        },
        hold_links: r.hold_links,
        threshold_drop: r.threshold_drop,
        subonly: r.subonly,
    })
}

fn raid_to_proto(r: &RaidSpec) -> proto::RaidPolicy {
    proto::RaidPolicy {
        enabled: r.enabled,
        window: Some(proto_duration(r.window_secs)),
        join_surge: r.join_surge,
        surge_users: r.surge_users,
        burst_users: r.burst_users,
        similarity: r.similarity,
        min_length: r.min_length,
        new_user: Some(proto_duration(r.new_user_secs)),
        duration: Some(proto_duration(r.duration_secs)),
        action: proto::Decision::from(r.action).into(),
        hold_links: r.hold_links,
        threshold_drop: r.threshold_drop,
        subonly: r.subonly,
    }
}

/// A policy's compile error as a field error, in proto names
/// (`escalation.max_timeout_secs` → `policy.escalation.max_timeout`,
/// `model.labels."x".threshold` → `policy.thresholds["x"]`).
pub fn policy_error(error: RulesError) -> FieldError {
    let place = error.place.as_str();
    let field = if let Some(rest) = place.strip_prefix("model.labels.\"") {
        let (label, key) = rest.rsplit_once('"').unwrap_or((rest, ""));
        if key == ".threshold" {
            format!("policy.thresholds[\"{label}\"]")
        } else {
            format!("policy.label_actions[\"{label}\"]")
        }
    } else if place.is_empty() {
        "policy".to_owned()
    } else {
        format!("policy{}", proto_path(&format!(".{place}")))
    };
    let message = error
        .message
        .replace("escalation.first_timeout_secs", "escalation.first_timeout")
        .replace("a rule cannot allow", "a label cannot allow");
    FieldError::new(field, message)
}

/// A stored policy as the API shows it. The API has no per-label mode: a label acts when the
/// model is enabled, and `model_enabled = false` keeps the labels, disabled.
pub fn policy_to_proto(
    channel: &str,
    spec: &PolicySpec,
    revision: u64,
    updated_at: SystemTime,
    is_default: bool,
) -> proto::Policy {
    let labels = &spec.model.labels;
    let model_enabled = labels.values().any(|l| l.mode != Mode::Disabled);
    let shown = || {
        labels
            .iter()
            .filter(move |(_, l)| !model_enabled || l.mode != Mode::Disabled)
    };
    let e = &spec.escalation;
    proto::Policy {
        channel: channel.to_owned(),
        shadow: spec.shadow,
        thresholds: shown()
            .filter_map(|(name, l)| l.threshold.map(|t| (name.clone(), t)))
            .collect(),
        label_actions: shown()
            .map(|(name, l)| (name.clone(), proto::Decision::from(l.action).into()))
            .collect(),
        emotes: spec.emotes.clone(),
        exempt_roles: spec.exempt_roles.clone(),
        escalation: Some(proto::Escalation {
            warn_first: e.warn_first,
            first_timeout: Some(proto_duration(e.first_timeout_secs)),
            max_timeout: Some(proto_duration(e.max_timeout_secs)),
            ban_after: e.ban_after,
            heat_half_life: Some(proto_duration(e.heat_half_life_secs)),
            memory_half_life: Some(proto_duration(e.memory_half_life_secs)),
        }),
        model_enabled,
        updated_at: Some(timestamp(updated_at)),
        is_default,
        revision,
        classify_actions: match spec.classify_actions {
            ClassifyActions::Record => proto::ClassifyActions::Record,
            ClassifyActions::Send => proto::ClassifyActions::Send,
        }
        .into(),
        review: Some(proto::ReviewPolicy {
            ttl: Some(proto_duration(spec.review.ttl_secs)),
            on_expiry: match spec.review.on_expiry {
                OnExpiry::Allow => proto::ReviewExpiry::Allow,
                OnExpiry::Hide => proto::ReviewExpiry::Hide,
            }
            .into(),
            hide_while_pending: spec.review.hide_while_pending,
        }),
        notices: Some(proto::Notices {
            warn: spec.notices.warn.clone(),
            hide: spec.notices.hide.clone(),
            timeout: spec.notices.timeout.clone(),
            ban: spec.notices.ban.clone(),
            appeal: spec.notices.appeal.clone(),
            min_interval: Some(proto_duration(spec.notices.min_interval_secs)),
        }),
        reputation: Some(proto::ReputationPolicy {
            trusted_above: spec.reputation.trusted_above,
            new_below: spec.reputation.new_below,
            trusted_margin: spec.reputation.trusted_margin,
            new_margin: spec.reputation.new_margin,
        }),
        raid: Some(raid_to_proto(&spec.raid)),
        transparency: Some(proto::TransparencyPolicy {
            public: spec.transparency.public,
            nicks: match spec.transparency.nicks {
                NickDisplay::Hashed => proto::NickDisplay::Hashed,
                NickDisplay::Shown => proto::NickDisplay::Shown,
            }
            .into(),
            show_text: spec.transparency.show_text,
            recent_actions: spec.transparency.recent_actions,
        }),
        links: Some(proto::LinkPolicy {
            allow_domains: spec.links.allow_domains.clone(),
        }),
        harmful_labels: shown()
            .filter(|(_, l)| l.harmful)
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_become_proto_paths() {
        let error = |place: &str| RulesError {
            origin: "rule \"r\"".into(),
            place: place.into(),
            message: "bad".into(),
        };
        for (place, kind, field) in [
            ("params.max_ratio", "caps", "rule.caps.max_ratio"),
            ("params.window_secs", "rate", "rule.rate.window"),
            ("params.phrases[1]", "phrase", "rule.phrase.phrases[1]"),
            ("params", "link", "rule.link"),
            ("params.min_user_age_secs", "link", "rule.link.min_user_age"),
            ("duration_secs", "caps", "rule.duration"),
            ("action", "caps", "rule.action"),
            ("exempt_roles[0]", "caps", "rule.exempt_roles[0]"),
            ("", "caps", "rule"),
        ] {
            assert_eq!(rule_error(error(place), kind).field, field, "{place}");
        }
        for (place, field) in [
            (
                "escalation.max_timeout_secs",
                "policy.escalation.max_timeout",
            ),
            (
                "escalation.heat_half_life_secs",
                "policy.escalation.heat_half_life",
            ),
            (
                "escalation.memory_half_life_secs",
                "policy.escalation.memory_half_life",
            ),
            ("emotes", "policy.emotes"),
            (
                "reputation.trusted_margin",
                "policy.reputation.trusted_margin",
            ),
            (
                "model.labels.\"toxicity/insult\".threshold",
                "policy.thresholds[\"toxicity/insult\"]",
            ),
            ("model.labels.\"x\"", "policy.label_actions[\"x\"]"),
            (
                "model.labels.\"spam/spam\".action",
                "policy.label_actions[\"spam/spam\"]",
            ),
        ] {
            assert_eq!(policy_error(error(place)).field, field, "{place}");
        }
    }
}
