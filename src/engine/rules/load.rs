//! Compiling rules and policies into a [`RuleSet`]: from a rules file (`config/rules.toml`),
//! or from a [`Document`] of stored tables (the database's rows), through one path.
//!
//! Every error names the rule (by id and position) and the key at fault, so a bad file is
//! refused at start with a message an operator can act on, and a bad rule sent to the Admin
//! API is refused naming the field.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::checks::{
    CapsCheck, CharFloodCheck, Check, CopypastaCheck, EmoteFloodCheck, LinkCheck, LongWordCheck,
    MentionsCheck, RateCheck, RepetitionCheck, UniqueWordsCheck,
};
use super::phrase::PhraseCheck;
use super::profanity::ProfanityCheck;
use super::spec::{PolicySpec, RuleParams, RuleSpec};
use super::{
    Escalation, Mode, ModelLabel, NOTICE_PLACEHOLDERS, Notices, Policy, Reputation, Review, Rule,
    RuleSet, check_notice_template,
};
use crate::domain::Decision;
use crate::engine::normalize::EmoteSet;

/// The built-in rules file, used when `rules.file` is empty.
pub const DEFAULT_RULES: &str = include_str!("../../../config/rules.toml");

/// The channel name of the default policy where policies are kept by channel (the database,
/// the Admin API): `[policy]` in a rules file.
pub const DEFAULT_POLICY: &str = "*";

/// Why rules or a policy were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {place}: {message}")]
pub struct RulesError {
    /// Where they came from: `rules file my-rules.toml`, `the database (revision 7)`,
    /// `rule "caps"` (one rule checked on its own).
    pub origin: String,
    /// Where in it: `rule[3] (id "caps").params.max_ratio`, `policy.escalation`, or just the
    /// key (`params.max_ratio`) for one rule or policy checked on its own.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

/// A rule set before compilation, in the rules file's own tables: what a rules file parses
/// into, and what the database's rows make.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    /// The default policy (`[policy]`), a whole policy table.
    pub policy: toml::Table,
    /// Channels' own policies, each a whole policy table: a rules file's `[channel.NAME]`
    /// overrides are merged over `[policy]` first, so a channel's policy never changes when
    /// the default one does.
    pub channels: BTreeMap<String, toml::Table>,
    /// The rules (`[[rule]]` tables), in the order they are evaluated.
    pub rules: Vec<toml::Table>,
}

/// The top level of a rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    policy: toml::Table,
    #[serde(default)]
    channel: BTreeMap<String, toml::Table>,
    #[serde(default)]
    rule: Vec<toml::Table>,
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

impl Document {
    /// Parses the text of a rules file (without compiling it: see [`RuleSet::compile`]);
    /// `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, RulesError> {
        let origin = format!("rules file {origin}");
        let top = Place {
            origin: &origin,
            rule: String::new(),
        };
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| top.error("", format!("not valid TOML: {e}")))?;
        let file: RulesFile = typed(toml::Value::Table(table), &top, "")?;
        let mut channels = BTreeMap::new();
        for (channel, over) in file.channel {
            if channel == DEFAULT_POLICY {
                return Err(top.error(
                    &format!("channel.\"{channel}\""),
                    "`*` names the default policy: write it as [policy]",
                ));
            }
            // An override replaces whole keys (escalation and model as whole tables).
            let mut merged = file.policy.clone();
            merged.extend(over);
            channels.insert(channel, merged);
        }
        Ok(Self {
            policy: file.policy,
            channels,
            rules: file.rule,
        })
    }

    /// A document of stored TOML texts: policies by channel ([`DEFAULT_POLICY`] must be one)
    /// and rules by id. `origin` names the source in errors.
    pub fn from_stored<'a>(
        policies: impl IntoIterator<Item = (&'a str, &'a str)>,
        rules: impl IntoIterator<Item = (&'a str, &'a str)>,
        origin: &str,
    ) -> Result<Self, RulesError> {
        let error = |place: String, message: String| RulesError {
            origin: origin.to_owned(),
            place,
            message,
        };
        let mut policy = None;
        let mut channels = BTreeMap::new();
        for (channel, text) in policies {
            let table = text.parse::<toml::Table>().map_err(|e| {
                error(
                    format!("policy \"{channel}\""),
                    format!("not valid TOML: {e}"),
                )
            })?;
            if channel == DEFAULT_POLICY {
                policy = Some(table);
            } else {
                channels.insert(channel.to_owned(), table);
            }
        }
        let policy = policy.ok_or_else(|| {
            error(
                format!("policy \"{DEFAULT_POLICY}\""),
                "the default policy is missing".to_owned(),
            )
        })?;
        let rules = rules
            .into_iter()
            .map(|(id, text)| {
                let table = text
                    .parse::<toml::Table>()
                    .map_err(|e| error(format!("rule \"{id}\""), format!("not valid TOML: {e}")))?;
                if table.get("id").and_then(toml::Value::as_str) != Some(id) {
                    return Err(error(
                        format!("rule \"{id}\""),
                        "its table's id is not the id it is stored under".to_owned(),
                    ));
                }
                Ok(table)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            policy,
            channels,
            rules,
        })
    }

    /// The rules as `(id, TOML text)` rows, in order. A rule without a string id gets an
    /// empty one (compiling the document refuses it).
    pub fn rule_rows(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .map(|table| {
                let id = table
                    .get("id")
                    .and_then(toml::Value::as_str)
                    .unwrap_or_default();
                (id.to_owned(), table_text(table))
            })
            .collect()
    }

    /// The policies as `(channel, TOML text)` rows, the default one ([`DEFAULT_POLICY`])
    /// first.
    pub fn policy_rows(&self) -> Vec<(String, String)> {
        std::iter::once((DEFAULT_POLICY.to_owned(), table_text(&self.policy)))
            .chain(
                self.channels
                    .iter()
                    .map(|(channel, table)| (channel.clone(), table_text(table))),
            )
            .collect()
    }
}

fn table_text(table: &toml::Table) -> String {
    toml::to_string(table).expect("a parsed TOML table always serialises. This is a bug")
}

impl RuleSpec {
    /// Reads one stored rule table; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, RulesError> {
        let place = Place {
            origin,
            rule: String::new(),
        };
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| place.error("", format!("not valid TOML: {e}")))?;
        typed(toml::Value::Table(table), &place, "")
    }

    /// The rule as the TOML text of one `[[rule]]` table (without the header).
    pub fn to_toml(&self) -> Result<String, RulesError> {
        toml::to_string(self).map_err(|e| self.error("", format!("cannot be written: {e}")))
    }

    /// The parameters, typed by the rule's kind, with the file's defaults filled in.
    pub fn params(&self) -> Result<RuleParams, RulesError> {
        let origin = format!("rule \"{}\"", self.id);
        RuleParams::parse(
            &self.kind,
            self.params.clone(),
            &Place {
                origin: &origin,
                rule: String::new(),
            },
        )
    }

    /// Checks the rule on its own exactly as compiling a rule set would; an error's origin is
    /// `rule "ID"` and its place the key at fault (`params.max_ratio`, `duration_secs`).
    pub fn validate(&self) -> Result<(), RulesError> {
        let origin = format!("rule \"{}\"", self.id);
        let place = Place {
            origin: &origin,
            rule: String::new(),
        };
        if self.id.trim().is_empty() {
            return Err(place.error("id", "must not be empty"));
        }
        compile_rule(self.clone(), &place).map(drop)
    }

    /// Writes every parameter out, the file's defaults included, so that a stored rule acts
    /// the same even if a later version changes a default.
    pub fn make_params_explicit(&mut self) -> Result<(), RulesError> {
        self.params = self
            .params()?
            .to_table()
            .map_err(|e| self.error("params", format!("cannot be written: {e}")))?;
        Ok(())
    }

    fn error(&self, key: &str, message: String) -> RulesError {
        Place {
            origin: &format!("rule \"{}\"", self.id),
            rule: String::new(),
        }
        .error(key, message)
    }
}

impl PolicySpec {
    /// Reads one stored policy table; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, RulesError> {
        let place = Place {
            origin,
            rule: String::new(),
        };
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| place.error("", format!("not valid TOML: {e}")))?;
        typed(toml::Value::Table(table), &place, "")
    }

    /// The policy as the TOML text of one `[policy]` table (without the header).
    pub fn to_toml(&self) -> Result<String, RulesError> {
        toml::to_string(self).map_err(|e| RulesError {
            origin: "policy".to_owned(),
            place: String::new(),
            message: format!("cannot be written: {e}"),
        })
    }

    /// Checks the policy on its own exactly as compiling a rule set would; an error's origin
    /// is `policy "CHANNEL"` and its place the key at fault (`escalation.max_timeout_secs`).
    pub fn validate(&self, channel: &str) -> Result<(), RulesError> {
        let origin = format!("policy \"{channel}\"");
        compile_policy(
            self,
            &Place {
                origin: &origin,
                rule: String::new(),
            },
        )
        .map(drop)
    }
}

impl RuleParams {
    fn parse(kind: &str, params: toml::Table, place: &Place<'_>) -> Result<Self, RulesError> {
        let params = toml::Value::Table(params);
        Ok(match kind {
            "phrase" => Self::Phrase(typed(params, place, "params")?),
            "profanity" => Self::Profanity(typed(params, place, "params")?),
            "link" => Self::Link(typed(params, place, "params")?),
            "caps" => Self::Caps(typed(params, place, "params")?),
            "emote_flood" => Self::EmoteFlood(typed(params, place, "params")?),
            "char_flood" => Self::CharFlood(typed(params, place, "params")?),
            "repetition" => Self::Repetition(typed(params, place, "params")?),
            "copypasta" => Self::Copypasta(typed(params, place, "params")?),
            "rate" => Self::Rate(typed(params, place, "params")?),
            "unique_words" => Self::UniqueWords(typed(params, place, "params")?),
            "long_word" => Self::LongWord(typed(params, place, "params")?),
            "mentions" => Self::Mentions(typed(params, place, "params")?),
            other => {
                return Err(place.error(
                    "kind",
                    format!("`{other}` is not a rule kind; one of {}", KINDS.join(", ")),
                ));
            }
        })
    }
}

impl RuleSet {
    /// The built-in rule set (`config/rules.toml`).
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_RULES, "config/rules.toml (built in)")
            .expect("the built-in config/rules.toml is valid. This is a bug")
    }

    /// Compiles the text of a rules file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, RulesError> {
        let document = Document::parse(text, origin)?;
        Self::compile(&document, &format!("rules file {origin}"))
    }

    /// Compiles a document; `origin` names its source in errors (`rules file X`, `the
    /// database (revision 7)`).
    pub fn compile(document: &Document, origin: &str) -> Result<Self, RulesError> {
        let place = |rule: String| Place { origin, rule };
        let default_policy = compile_table_policy(&document.policy, &place("policy".to_owned()))?;
        let mut channel_policies = HashMap::new();
        for (channel, table) in &document.channels {
            let policy = compile_table_policy(table, &place(format!("channel.{channel}")))?;
            channel_policies.insert(channel.clone(), policy);
        }

        let mut ids = HashSet::new();
        let mut rules = Vec::with_capacity(document.rules.len());
        for (index, raw) in document.rules.iter().enumerate() {
            let id_hint = raw
                .get("id")
                .and_then(toml::Value::as_str)
                .unwrap_or("?")
                .to_owned();
            let place = place(format!("rule[{index}] (id \"{id_hint}\")"));
            let config: RuleSpec = typed(toml::Value::Table(raw.clone()), &place, "")?;
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

fn compile_table_policy(table: &toml::Table, place: &Place<'_>) -> Result<Policy, RulesError> {
    let spec: PolicySpec = typed(toml::Value::Table(table.clone()), place, "")?;
    compile_policy(&spec, place)
}

fn compile_policy(config: &PolicySpec, place: &Place<'_>) -> Result<Policy, RulesError> {
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
    if e.memory_half_life_secs == 0 {
        return Err(place.error("escalation.memory_half_life_secs", "must be at least 1"));
    }
    if config.review.ttl_secs == 0 {
        return Err(place.error("review.ttl_secs", "must be at least 1"));
    }
    if !(1..=500).contains(&config.transparency.recent_actions) {
        return Err(place.error(
            "transparency.recent_actions",
            format!("{} is outside [1, 500]", config.transparency.recent_actions),
        ));
    }
    let n = &config.notices;
    // The appeal text is itself a placeholder's value: it may name the action, not itself.
    let appeal_names: Vec<&str> = NOTICE_PLACEHOLDERS
        .iter()
        .copied()
        .filter(|p| !matches!(*p, "appeal" | "text"))
        .collect();
    for (key, template, allowed) in [
        ("warn", &n.warn, NOTICE_PLACEHOLDERS),
        ("hide", &n.hide, NOTICE_PLACEHOLDERS),
        ("timeout", &n.timeout, NOTICE_PLACEHOLDERS),
        ("ban", &n.ban, NOTICE_PLACEHOLDERS),
        ("appeal", &n.appeal, appeal_names.as_slice()),
    ] {
        check_notice_template(template, allowed)
            .map_err(|message| place.error(&format!("notices.{key}"), message))?;
    }
    let r = &config.reputation;
    within(
        place,
        [
            ("reputation.trusted_above", r.trusted_above, -1.0..=1.0),
            ("reputation.new_below", r.new_below, -1.0..=1.0),
            ("reputation.trusted_margin", r.trusted_margin, 0.0..=1.0),
            ("reputation.new_margin", r.new_margin, 0.0..=1.0),
        ],
    )?;
    let raid = compile_raid(&config.raid, place)?;
    if r.new_below > r.trusted_above {
        return Err(place.error(
            "reputation.new_below",
            "must be at most reputation.trusted_above",
        ));
    }
    if let Some(bad) = config
        .emotes
        .iter()
        .find(|e| e.trim().is_empty() || e.contains(char::is_whitespace))
    {
        return Err(place.error("emotes", format!("`{bad}` is not an emote name (one word)")));
    }
    let links = &config.links.allow_domains;
    if links.len() > MAX_CHANNEL_DOMAINS {
        return Err(place.error(
            "links.allow_domains",
            format!("{} domains; at most {MAX_CHANNEL_DOMAINS}", links.len()),
        ));
    }
    if let Some(bad) = links.iter().find(|d| !is_domain(d.trim())) {
        return Err(place.error(
            "links.allow_domains",
            format!("`{bad}` is not a domain name"),
        ));
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
            harmful: l.harmful,
        });
    }
    Ok(Policy {
        model,
        shadow: config.shadow,
        classify_actions: config.classify_actions,
        exempt_roles: lower(&config.exempt_roles),
        emotes: EmoteSet::new(config.emotes.iter().cloned()),
        escalation: Escalation {
            warn_first: e.warn_first,
            first_timeout: secs(e.first_timeout_secs),
            max_timeout: secs(e.max_timeout_secs),
            ban_after: e.ban_after,
            heat_half_life: secs(e.heat_half_life_secs),
            memory_half_life: secs(e.memory_half_life_secs),
        },
        notices: Notices {
            warn: n.warn.trim().to_owned(),
            hide: n.hide.trim().to_owned(),
            timeout: n.timeout.trim().to_owned(),
            ban: n.ban.trim().to_owned(),
            appeal: n.appeal.trim().to_owned(),
            min_interval: secs(n.min_interval_secs),
        },
        review: Review {
            ttl: secs(config.review.ttl_secs),
            on_expiry: config.review.on_expiry,
            hide_while_pending: config.review.hide_while_pending,
        },
        reputation: Reputation {
            trusted_above: r.trusted_above,
            new_below: r.new_below,
            trusted_margin: r.trusted_margin,
            new_margin: r.new_margin,
        },
        raid,
        transparency: config.transparency.clone(),
        allow_domains: lower(links),
    })
}

/// The most domains a channel's `[policy.links]` may trust.
pub const MAX_CHANNEL_DOMAINS: usize = 1000;

/// Each value within its range, or an error naming the first key that is not (NaN never is).
fn within<T: PartialOrd + std::fmt::Display, const N: usize>(
    place: &Place<'_>,
    checks: [(&str, T, std::ops::RangeInclusive<T>); N],
) -> Result<(), RulesError> {
    for (key, value, range) in checks {
        if !range.contains(&value) {
            return Err(place.error(
                key,
                format!("{value} is outside [{}, {}]", range.start(), range.end()),
            ));
        }
    }
    Ok(())
}

fn compile_raid(
    r: &super::spec::RaidSpec,
    place: &Place<'_>,
) -> Result<super::RaidPolicy, RulesError> {
    within(
        place,
        [
            ("raid.window_secs", r.window_secs, 1..=3_600),
            ("raid.duration_secs", r.duration_secs, 1..=86_400),
            ("raid.new_user_secs", r.new_user_secs, 0..=30 * 86_400),
            ("raid.surge_users", u64::from(r.surge_users), 2..=10_000),
            ("raid.burst_users", u64::from(r.burst_users), 2..=10_000),
            ("raid.join_surge", u64::from(r.join_surge), 0..=100_000),
            ("raid.min_length", u64::from(r.min_length), 0..=1_000),
        ],
    )?;
    within(
        place,
        [
            ("raid.similarity", r.similarity, 0.5..=1.0),
            ("raid.threshold_drop", r.threshold_drop, 0.0..=1.0),
        ],
    )?;
    // A timeout lasts the escalation's first timeout (the reason names no duration), a ban is
    // permanent; both climb the ladder as any reason's would.
    if r.action == Decision::Allow {
        return Err(place.error("raid.action", "must act: hold, hide, warn, timeout or ban"));
    }
    Ok(super::RaidPolicy {
        enabled: r.enabled,
        window: secs(r.window_secs),
        join_surge: r.join_surge,
        surge_users: r.surge_users,
        burst_users: r.burst_users,
        similarity: r.similarity,
        min_length: r.min_length,
        new_user: secs(r.new_user_secs),
        duration: secs(r.duration_secs),
        action: r.action,
        hold_links: r.hold_links,
        threshold_drop: r.threshold_drop,
        subonly: r.subonly,
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

fn compile_rule(config: RuleSpec, place: &Place<'_>) -> Result<Rule, RulesError> {
    let duration = action_duration(config.action, config.duration_secs)
        .map_err(|(field, message)| place.error(field, message))?;
    let check = match RuleParams::parse(&config.kind, config.params, place)? {
        RuleParams::Phrase(p) => {
            let check = PhraseCheck::new(&p.phrases, p.syntax, p.anywhere)
                .map_err(|(key, message)| place.error(&format!("params.{key}"), message))?;
            Check::Phrase(check)
        }
        RuleParams::Profanity(p) => {
            let check = ProfanityCheck::new(&p.min_severity, &p.categories)
                .map_err(|(key, message)| place.error(&format!("params.{key}"), message))?;
            Check::Profanity(check)
        }
        RuleParams::Link(p) => {
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
            if let Some(bad) = p.lookalike_brands.iter().find(|b| {
                b.trim().len() < 3 || !b.trim().chars().all(|c| c.is_ascii_alphanumeric())
            }) {
                return Err(place.error(
                    "params.lookalike_brands",
                    format!("`{bad}` is not a brand name (three or more ASCII letters or digits)"),
                ));
            }
            if let Some(bad) = p.deny_tlds.iter().find(|t| {
                let t = t.trim().trim_start_matches('.');
                t.len() < 2 || t.len() > 63 || !t.chars().all(|c| c.is_alphanumeric() || c == '-')
            }) {
                return Err(place.error(
                    "params.deny_tlds",
                    format!("`{bad}` is not a top-level domain"),
                ));
            }
            let check = LinkCheck {
                allow: lower(&p.allow_domains),
                deny: lower(&p.deny_domains),
                allow_list_only: p.allow_list_only,
                min_user_age: secs(p.min_user_age_secs),
                max_repeats: p.max_repeats,
                repeat_window: secs(p.repeat_window_secs),
                lookalike_brands: p
                    .lookalike_brands
                    .iter()
                    .map(|b| super::lookalike::Brand::new(b))
                    .collect(),
                deny_tlds: p
                    .deny_tlds
                    .iter()
                    .map(|t| t.trim().trim_start_matches('.').to_lowercase())
                    .collect(),
            };
            if check.deny.is_empty()
                && !check.allow_list_only
                && check.min_user_age.is_zero()
                && check.max_repeats == 0
                && check.lookalike_brands.is_empty()
                && check.deny_tlds.is_empty()
            {
                return Err(place.error(
                    "params",
                    "sets nothing to check: give deny_domains, allow_list_only, min_user_age_secs, max_repeats, lookalike_brands or deny_tlds",
                ));
            }
            Check::Link(check)
        }
        RuleParams::Caps(p) => Check::Caps(CapsCheck {
            max_ratio: ratio(p.max_ratio, "params.max_ratio", place)?,
            min_letters: p.min_letters,
        }),
        RuleParams::EmoteFlood(p) => {
            if p.max_emotes == 0 && p.max_ratio == 0.0 {
                return Err(place.error("params", "sets neither max_emotes nor max_ratio"));
            }
            Check::EmoteFlood(EmoteFloodCheck {
                max_emotes: p.max_emotes,
                max_ratio: ratio(p.max_ratio, "params.max_ratio", place)?,
                min_tokens: p.min_tokens,
            })
        }
        RuleParams::CharFlood(p) => {
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
        RuleParams::Repetition(p) => Check::Repetition(RepetitionCheck {
            min_similarity: ratio(p.min_similarity, "params.min_similarity", place)?,
            last_messages: positive(p.last_messages, "params.last_messages", place)? as usize,
            window: secs(p.window_secs),
            min_length: p.min_length as usize,
        }),
        RuleParams::Copypasta(p) => Check::Copypasta(CopypastaCheck {
            min_length: p.min_length as usize,
            min_similarity: ratio(p.min_similarity, "params.min_similarity", place)?,
            last_messages: positive(p.last_messages, "params.last_messages", place)? as usize,
        }),
        RuleParams::Rate(p) => {
            if !(p.window_secs > 0.0 && p.window_secs <= 86_400.0) {
                return Err(place.error("params.window_secs", "must be above 0 and at most 86400"));
            }
            Check::Rate(RateCheck {
                max_messages: positive(p.max_messages, "params.max_messages", place)?,
                window: Duration::from_secs_f64(p.window_secs),
            })
        }
        RuleParams::UniqueWords(p) => Check::UniqueWords(UniqueWordsCheck {
            max_ratio: ratio(p.max_ratio, "params.max_ratio", place)?,
            min_words: positive(p.min_words, "params.min_words", place)?,
        }),
        RuleParams::LongWord(p) => Check::LongWord(LongWordCheck {
            max_length: positive(p.max_length, "params.max_length", place)?,
        }),
        RuleParams::Mentions(p) => Check::Mentions(MentionsCheck {
            max_mentions: p.max_mentions,
        }),
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
        harmful: config.harmful,
        spare_trusted: config.spare_trusted,
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
    text.len() <= 253
        && labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
}

#[cfg(test)]
mod document_tests {
    use super::*;

    const POLICY: &str = "[policy]\nshadow = false\nexempt_roles = [\"mod\"]\nemotes = [\"Kappa\"]\n\
        [policy.escalation]\nwarn_first = true\nfirst_timeout_secs = 60\nmax_timeout_secs = 600\n\
        ban_after = 0\nheat_half_life_secs = 60\n";

    fn stored(document: &Document) -> Document {
        let policies = document.policy_rows();
        let rules = document.rule_rows();
        Document::from_stored(
            policies.iter().map(|(c, t)| (c.as_str(), t.as_str())),
            rules.iter().map(|(i, t)| (i.as_str(), t.as_str())),
            "test rows",
        )
        .expect("rows read back")
    }

    #[test]
    fn the_builtin_file_survives_rows() {
        let file = Document::parse(DEFAULT_RULES, "built in").unwrap();
        let rows = stored(&file);
        assert_eq!(rows, file, "rows hold the file's tables exactly");
        let set = RuleSet::compile(&rows, "test rows").unwrap();
        assert_eq!(set.rules().len(), RuleSet::builtin().rules().len());
        for table in &file.rules {
            let text = table_text(table);
            let mut spec = RuleSpec::from_toml(&text, "test").unwrap();
            assert_eq!(
                RuleSpec::from_toml(&spec.to_toml().unwrap(), "again").unwrap(),
                spec
            );
            spec.validate().unwrap();
            // Explicit defaults compile to the same rule.
            spec.make_params_explicit().unwrap();
            spec.validate().unwrap();
            assert_eq!(spec.params().unwrap().kind(), spec.kind);
        }
        let policy = PolicySpec::from_toml(&rows.policy_rows()[0].1, "test").unwrap();
        policy.validate("*").unwrap();
        assert_eq!(
            PolicySpec::from_toml(&policy.to_toml().unwrap(), "again").unwrap(),
            policy
        );
    }

    #[test]
    fn channel_overrides_become_whole_policies() {
        let text = format!("{POLICY}[channel.strims]\nshadow = true\n");
        let document = Document::parse(&text, "test").unwrap();
        let strims = &document.channels["strims"];
        assert_eq!(strims.get("shadow"), Some(&toml::Value::Boolean(true)));
        assert_eq!(strims.get("emotes"), document.policy.get("emotes"));
        assert!(strims.contains_key("escalation"));
        let set = RuleSet::compile(&stored(&document), "rows").unwrap();
        assert!(set.policy("strims").shadow);
        assert!(!set.policy("other").shadow);

        let error = Document::parse(&format!("{POLICY}[channel.\"*\"]\nshadow = true\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(error.contains("names the default policy"), "{error}");
        let error = RuleSet::parse(&format!("{POLICY}[channel.strims]\nloud = true\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("channel.strims") && error.contains("loud"),
            "{error}"
        );
    }

    #[test]
    fn bad_rows_are_named() {
        let policy = Document::parse(POLICY, "test").unwrap().policy_rows();
        let (star, text) = (policy[0].0.as_str(), policy[0].1.as_str());
        type Rows<'a> = &'a [(&'a str, &'a str)];
        // (policy rows, rule rows, what the error says)
        let cases: &[(Rows, Rows, &str)] = &[
            (&[], &[], "policy \"*\": the default policy is missing"),
            (&[(star, "shadow = ")], &[], "policy \"*\": not valid TOML"),
            (
                &[(star, text)],
                &[("a", "id = \"b\"")],
                "rule \"a\": its table's id is not the id it is stored under",
            ),
            (
                &[(star, text)],
                &[("a", "[[")],
                "rule \"a\": not valid TOML",
            ),
        ];
        for (policies, rules, expected) in cases {
            let error =
                Document::from_stored(policies.iter().copied(), rules.iter().copied(), "db")
                    .unwrap_err()
                    .to_string();
            assert!(error.starts_with("db: "), "{error}");
            assert!(error.contains(expected), "`{expected}` not in {error}");
        }
    }

    #[test]
    fn one_rule_or_policy_is_checked_on_its_own() {
        let spec = RuleSpec::from_toml(
            "id = \"c\"\nkind = \"caps\"\naction = \"hide\"\n[params]\nmax_ratio = 1.5\n",
            "t",
        )
        .unwrap();
        let error = spec.validate().unwrap_err();
        assert_eq!(
            (error.origin.as_str(), error.place.as_str()),
            ("rule \"c\"", "params.max_ratio")
        );
        assert_eq!(
            error.to_string(),
            "rule \"c\": params.max_ratio: 1.5 is outside [0, 1]"
        );
        let mut policy = PolicySpec::from_toml(
            &Document::parse(POLICY, "t").unwrap().policy_rows()[0].1,
            "t",
        )
        .unwrap();
        policy.escalation.max_timeout_secs = 1;
        let error = policy.validate("strims").unwrap_err();
        assert_eq!(
            (error.origin.as_str(), error.place.as_str()),
            ("policy \"strims\"", "escalation.max_timeout_secs")
        );
    }
}
