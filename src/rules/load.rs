//! The rules file (`config/rules.toml`): its format, and its compilation into a [`RuleSet`].
//!
//! Every error names the rule (by id and position) and the key at fault, so a bad file is
//! refused at start with a message an operator can act on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::checks::{
    CapsCheck, CharFloodCheck, Check, CopypastaCheck, EmoteFloodCheck, LinkCheck, LongWordCheck,
    MentionsCheck, RateCheck, RepetitionCheck, UniqueWordsCheck,
};
use super::phrase::{PhraseCheck, PhraseSyntax};
use super::profanity::ProfanityCheck;
use super::{Escalation, Mode, ModelLabel, Policy, Rule, RuleSet};
use crate::decision::Decision;
use crate::normalize::EmoteSet;

/// The built-in rules file, used when `rules.file` is empty.
pub const DEFAULT_RULES: &str = include_str!("../../config/rules.toml");

/// Why a rules file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules file {origin}: {place}: {message}")]
pub struct RulesError {
    /// Which file.
    pub origin: String,
    /// Where in it: `rule[3] (id "caps").params.max_ratio`, `policy.escalation`, ...
    pub place: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    policy: PolicyConfig,
    #[serde(default)]
    channel: BTreeMap<String, PolicyOverride>,
    #[serde(default)]
    rule: Vec<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyConfig {
    shadow: bool,
    exempt_roles: Vec<String>,
    emotes: Vec<String>,
    escalation: EscalationConfig,
    #[serde(default)]
    model: ModelPolicyConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyOverride {
    shadow: Option<bool>,
    exempt_roles: Option<Vec<String>>,
    emotes: Option<Vec<String>>,
    escalation: Option<EscalationConfig>,
    model: Option<ModelPolicyConfig>,
}

/// `[policy.model]`: what the model's labels do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelPolicyConfig {
    #[serde(default)]
    labels: BTreeMap<String, ModelLabelConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelLabelConfig {
    action: Decision,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    duration_secs: u64,
    #[serde(default)]
    mode: Mode,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationConfig {
    warn_first: bool,
    first_timeout_secs: u64,
    max_timeout_secs: u64,
    ban_after: u32,
    heat_half_life_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    id: String,
    kind: String,
    #[serde(default)]
    description: String,
    action: Decision,
    #[serde(default)]
    duration_secs: u64,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    exempt_roles: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    params: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhraseParams {
    phrases: Vec<String>,
    #[serde(default)]
    syntax: PhraseSyntax,
    #[serde(default)]
    anywhere: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfanityParams {
    #[serde(default = "default_severity")]
    min_severity: String,
    #[serde(default)]
    categories: Vec<String>,
}

fn default_severity() -> String {
    "moderate".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkParams {
    #[serde(default)]
    allow_domains: Vec<String>,
    #[serde(default)]
    deny_domains: Vec<String>,
    #[serde(default)]
    allow_list_only: bool,
    #[serde(default)]
    min_user_age_secs: u64,
    #[serde(default)]
    max_repeats: u32,
    #[serde(default = "default_repeat_window")]
    repeat_window_secs: u64,
}

fn default_repeat_window() -> u64 {
    600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapsParams {
    max_ratio: f64,
    #[serde(default = "default_min_letters")]
    min_letters: u32,
}

fn default_min_letters() -> u32 {
    12
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmoteFloodParams {
    #[serde(default)]
    max_emotes: u32,
    #[serde(default)]
    max_ratio: f64,
    #[serde(default = "default_min_tokens")]
    min_tokens: u32,
}

fn default_min_tokens() -> u32 {
    8
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CharFloodParams {
    #[serde(default)]
    max_non_ascii: u32,
    #[serde(default)]
    max_punctuation: u32,
    #[serde(default)]
    max_combining_marks: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepetitionParams {
    min_similarity: f64,
    #[serde(default = "default_last_own")]
    last_messages: u32,
    #[serde(default = "default_repetition_window")]
    window_secs: u64,
    #[serde(default = "default_repetition_min_length")]
    min_length: u32,
}

fn default_last_own() -> u32 {
    10
}
fn default_repetition_window() -> u64 {
    600
}
fn default_repetition_min_length() -> u32 {
    8
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopypastaParams {
    #[serde(default = "default_copypasta_min_length")]
    min_length: u32,
    #[serde(default = "default_copypasta_similarity")]
    min_similarity: f64,
    #[serde(default = "default_last_channel")]
    last_messages: u32,
}

fn default_copypasta_min_length() -> u32 {
    100
}
fn default_copypasta_similarity() -> f64 {
    0.9
}
fn default_last_channel() -> u32 {
    75
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateParams {
    max_messages: u32,
    window_secs: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UniqueWordsParams {
    max_ratio: f64,
    #[serde(default = "default_min_words")]
    min_words: u32,
}

fn default_min_words() -> u32 {
    6
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LongWordParams {
    max_length: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MentionsParams {
    max_mentions: u32,
}

/// The rule kinds, as written in `kind = "..."`.
pub const KINDS: &[&str] = &[
    "phrase",
    "profanity",
    "link",
    "caps",
    "emote_flood",
    "char_flood",
    "repetition",
    "copypasta",
    "rate",
    "unique_words",
    "long_word",
    "mentions",
];

/// Error-building context: which file, which rule.
struct Place<'a> {
    origin: &'a str,
    rule: String,
}

impl Place<'_> {
    fn error(&self, key: &str, message: impl Into<String>) -> RulesError {
        let place = if key.is_empty() {
            self.rule.clone()
        } else if self.rule.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.rule)
        };
        RulesError {
            origin: self.origin.to_owned(),
            place,
            message: message.into(),
        }
    }
}

fn typed<T: DeserializeOwned>(
    value: toml::Value,
    place: &Place<'_>,
    key: &str,
) -> Result<T, RulesError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = match (key.is_empty(), path == ".") {
            (true, _) => path,
            (false, true) => key.to_owned(),
            (false, false) => format!("{key}.{path}"),
        };
        place.error(&key, e.into_inner().to_string())
    })
}

fn ratio(value: f64, key: &str, place: &Place<'_>) -> Result<f64, RulesError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(place.error(key, format!("{value} is outside [0, 1]")))
    }
}

fn positive(value: u32, key: &str, place: &Place<'_>) -> Result<u32, RulesError> {
    if value > 0 {
        Ok(value)
    } else {
        Err(place.error(key, "must be at least 1"))
    }
}

fn secs(value: u64) -> Duration {
    Duration::from_secs(value)
}

impl RuleSet {
    /// The built-in rule set (`config/rules.toml`).
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_RULES, "config/rules.toml (built in)")
            .expect("the built-in config/rules.toml is valid. This is a bug")
    }

    /// Reads and compiles a rules file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, RulesError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RulesError {
            origin: origin.clone(),
            place: "file".to_owned(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, &origin)
    }

    /// Compiles the text of a rules file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, RulesError> {
        let top = Place {
            origin,
            rule: String::new(),
        };
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| top.error("", format!("not valid TOML: {e}")))?;
        let file: RulesFile = typed(toml::Value::Table(table), &top, "")?;

        let default_policy = compile_policy(
            &file.policy,
            &Place {
                origin,
                rule: "policy".to_owned(),
            },
        )?;
        let mut channel_policies = HashMap::new();
        for (channel, over) in &file.channel {
            let place = Place {
                origin,
                rule: format!("channel.{channel}"),
            };
            let merged = PolicyConfig {
                shadow: over.shadow.unwrap_or(file.policy.shadow),
                exempt_roles: over
                    .exempt_roles
                    .clone()
                    .unwrap_or_else(|| file.policy.exempt_roles.clone()),
                emotes: over
                    .emotes
                    .clone()
                    .unwrap_or_else(|| file.policy.emotes.clone()),
                escalation: over
                    .escalation
                    .clone()
                    .unwrap_or_else(|| file.policy.escalation.clone()),
                model: over
                    .model
                    .clone()
                    .unwrap_or_else(|| file.policy.model.clone()),
            };
            channel_policies.insert(channel.clone(), compile_policy(&merged, &place)?);
        }

        let mut ids = HashSet::new();
        let mut rules = Vec::with_capacity(file.rule.len());
        for (index, raw) in file.rule.into_iter().enumerate() {
            let id_hint = raw
                .get("id")
                .and_then(toml::Value::as_str)
                .unwrap_or("?")
                .to_owned();
            let place = Place {
                origin,
                rule: format!("rule[{index}] (id \"{id_hint}\")"),
            };
            let config: RuleConfig = typed(toml::Value::Table(raw), &place, "")?;
            if config.id.trim().is_empty() {
                return Err(place.error("id", "must not be empty"));
            }
            if !ids.insert(config.id.clone()) {
                return Err(place.error("id", "is used by an earlier rule"));
            }
            rules.push(compile_rule(config, &place)?);
        }
        let masks: Vec<_> = rules
            .iter()
            .filter(|r| r.mode != Mode::Disabled)
            .filter_map(|r| match &r.check {
                Check::Profanity(check) => Some(check.mask()),
                _ => None,
            })
            .collect();
        let lexicon = (!masks.is_empty()).then(|| super::profanity::Lexicon::new(masks));
        Ok(Self {
            rules,
            default_policy,
            channel_policies,
            lexicon,
        })
    }
}

fn compile_policy(config: &PolicyConfig, place: &Place<'_>) -> Result<Policy, RulesError> {
    let e = &config.escalation;
    if e.first_timeout_secs == 0 {
        return Err(place.error("escalation.first_timeout_secs", "must be at least 1"));
    }
    if e.max_timeout_secs < e.first_timeout_secs {
        return Err(place.error(
            "escalation.max_timeout_secs",
            "must be at least escalation.first_timeout_secs",
        ));
    }
    if e.heat_half_life_secs == 0 {
        return Err(place.error("escalation.heat_half_life_secs", "must be at least 1"));
    }
    if let Some(bad) = config
        .emotes
        .iter()
        .find(|e| e.trim().is_empty() || e.contains(char::is_whitespace))
    {
        return Err(place.error("emotes", format!("`{bad}` is not an emote name (one word)")));
    }
    let mut model = Vec::with_capacity(config.model.labels.len());
    for (label, l) in &config.model.labels {
        let key = |field: &str| format!("model.labels.\"{label}\".{field}");
        if label
            .split_once('/')
            .is_none_or(|(h, l)| h.is_empty() || l.is_empty())
        {
            return Err(place.error(
                &format!("model.labels.\"{label}\""),
                "a model label is named head/label, e.g. \"toxicity/insult\"",
            ));
        }
        if let Some(t) = l.threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(place.error(&key("threshold"), format!("{t} is outside [0, 1]")));
        }
        let duration = action_duration(l.action, l.duration_secs)
            .map_err(|(field, message)| place.error(&key(field), message))?;
        if l.mode == Mode::Disabled {
            continue;
        }
        model.push(ModelLabel {
            label: label.clone(),
            decision: l.action,
            duration,
            threshold: l.threshold,
            shadow: l.mode == Mode::Shadow,
        });
    }
    Ok(Policy {
        model,
        shadow: config.shadow,
        exempt_roles: lower(&config.exempt_roles),
        emotes: EmoteSet::new(config.emotes.iter().cloned()),
        escalation: Escalation {
            warn_first: e.warn_first,
            first_timeout: secs(e.first_timeout_secs),
            max_timeout: secs(e.max_timeout_secs),
            ban_after: e.ban_after,
            heat_half_life: secs(e.heat_half_life_secs),
        },
    })
}

fn lower(roles: &[String]) -> Vec<String> {
    roles.iter().map(|r| r.trim().to_lowercase()).collect()
}

/// The duration an action carries, or which field is wrong and why.
fn action_duration(
    action: Decision,
    duration_secs: u64,
) -> Result<Option<Duration>, (&'static str, &'static str)> {
    match action {
        Decision::Allow => Err((
            "action",
            "a rule cannot allow; use hold, hide, warn, timeout or ban",
        )),
        Decision::Timeout if duration_secs == 0 => {
            Err(("duration_secs", "a timeout needs a duration above 0"))
        }
        Decision::Timeout | Decision::Ban if duration_secs > 0 => Ok(Some(secs(duration_secs))),
        _ => Ok(None),
    }
}

fn compile_rule(config: RuleConfig, place: &Place<'_>) -> Result<Rule, RulesError> {
    let duration = action_duration(config.action, config.duration_secs)
        .map_err(|(field, message)| place.error(field, message))?;
    let params = toml::Value::Table(config.params);
    let check = match config.kind.as_str() {
        "phrase" => {
            let p: PhraseParams = typed(params, place, "params")?;
            let check = PhraseCheck::new(&p.phrases, p.syntax, p.anywhere)
                .map_err(|(key, message)| place.error(&format!("params.{key}"), message))?;
            Check::Phrase(check)
        }
        "profanity" => {
            let p: ProfanityParams = typed(params, place, "params")?;
            let check = ProfanityCheck::new(&p.min_severity, &p.categories)
                .map_err(|(key, message)| place.error(&format!("params.{key}"), message))?;
            Check::Profanity(check)
        }
        "link" => {
            let p: LinkParams = typed(params, place, "params")?;
            for (key, domains) in [
                ("allow_domains", &p.allow_domains),
                ("deny_domains", &p.deny_domains),
            ] {
                if let Some(bad) = domains.iter().find(|d| !is_domain(d)) {
                    return Err(place.error(
                        &format!("params.{key}"),
                        format!("`{bad}` is not a domain name"),
                    ));
                }
            }
            let check = LinkCheck {
                allow: lower(&p.allow_domains),
                deny: lower(&p.deny_domains),
                allow_list_only: p.allow_list_only,
                min_user_age: secs(p.min_user_age_secs),
                max_repeats: p.max_repeats,
                repeat_window: secs(p.repeat_window_secs),
            };
            if check.deny.is_empty()
                && !check.allow_list_only
                && check.min_user_age.is_zero()
                && check.max_repeats == 0
            {
                return Err(place.error(
                    "params",
                    "sets nothing to check: give deny_domains, allow_list_only, min_user_age_secs or max_repeats",
                ));
            }
            Check::Link(check)
        }
        "caps" => {
            let p: CapsParams = typed(params, place, "params")?;
            Check::Caps(CapsCheck {
                max_ratio: ratio(p.max_ratio, "params.max_ratio", place)?,
                min_letters: p.min_letters,
            })
        }
        "emote_flood" => {
            let p: EmoteFloodParams = typed(params, place, "params")?;
            if p.max_emotes == 0 && p.max_ratio == 0.0 {
                return Err(place.error("params", "sets neither max_emotes nor max_ratio"));
            }
            Check::EmoteFlood(EmoteFloodCheck {
                max_emotes: p.max_emotes,
                max_ratio: ratio(p.max_ratio, "params.max_ratio", place)?,
                min_tokens: p.min_tokens,
            })
        }
        "char_flood" => {
            let p: CharFloodParams = typed(params, place, "params")?;
            if p.max_non_ascii == 0 && p.max_punctuation == 0 && p.max_combining_marks == 0 {
                return Err(place.error(
                    "params",
                    "sets none of max_non_ascii, max_punctuation, max_combining_marks",
                ));
            }
            Check::CharFlood(CharFloodCheck {
                max_non_ascii: p.max_non_ascii,
                max_punctuation: p.max_punctuation,
                max_combining_marks: p.max_combining_marks,
            })
        }
        "repetition" => {
            let p: RepetitionParams = typed(params, place, "params")?;
            Check::Repetition(RepetitionCheck {
                min_similarity: ratio(p.min_similarity, "params.min_similarity", place)?,
                last_messages: positive(p.last_messages, "params.last_messages", place)? as usize,
                window: secs(p.window_secs),
                min_length: p.min_length as usize,
            })
        }
        "copypasta" => {
            let p: CopypastaParams = typed(params, place, "params")?;
            Check::Copypasta(CopypastaCheck {
                min_length: p.min_length as usize,
                min_similarity: ratio(p.min_similarity, "params.min_similarity", place)?,
                last_messages: positive(p.last_messages, "params.last_messages", place)? as usize,
            })
        }
        "rate" => {
            let p: RateParams = typed(params, place, "params")?;
            if !(p.window_secs > 0.0 && p.window_secs <= 86_400.0) {
                return Err(place.error("params.window_secs", "must be above 0 and at most 86400"));
            }
            Check::Rate(RateCheck {
                max_messages: positive(p.max_messages, "params.max_messages", place)?,
                window: Duration::from_secs_f64(p.window_secs),
            })
        }
        "unique_words" => {
            let p: UniqueWordsParams = typed(params, place, "params")?;
            Check::UniqueWords(UniqueWordsCheck {
                max_ratio: ratio(p.max_ratio, "params.max_ratio", place)?,
                min_words: positive(p.min_words, "params.min_words", place)?,
            })
        }
        "long_word" => {
            let p: LongWordParams = typed(params, place, "params")?;
            Check::LongWord(LongWordCheck {
                max_length: positive(p.max_length, "params.max_length", place)?,
            })
        }
        "mentions" => {
            let p: MentionsParams = typed(params, place, "params")?;
            Check::Mentions(MentionsCheck {
                max_mentions: p.max_mentions,
            })
        }
        other => {
            return Err(place.error(
                "kind",
                format!("`{other}` is not a rule kind; one of {}", KINDS.join(", ")),
            ));
        }
    };
    Ok(Rule {
        id: config.id,
        kind: kind_name(&config.kind),
        description: config.description,
        decision: config.action,
        duration,
        mode: config.mode,
        exempt_roles: lower(&config.exempt_roles),
        channels: config.channels,
        check,
    })
}

fn kind_name(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("rule")
}

fn is_domain(text: &str) -> bool {
    let labels: Vec<&str> = text.split('.').collect();
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
}
