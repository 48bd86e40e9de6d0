//! Rules and policies as written, before compilation: the typed form of a rules file's
//! `[[rule]]` and `[policy]` tables.
//!
//! These are what the database stores (as TOML text, one table per rule and per channel
//! policy) and what the Admin API converts to and from, so that every source of rules goes
//! through the one compile path in [`super::load`]. Every struct is (de)serialised with the
//! rules file's own keys; defaults are those the file documents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::phrase::PhraseSyntax;
use super::{ClassifyActions, Mode};
use crate::domain::Decision;

/// One rule as a rules file writes it (`[[rule]]`), its kind's parameters still a table (see
/// [`RuleSpec::params`] for the typed form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique id, reported in verdicts.
    pub id: String,
    /// What it checks: one of [`super::KINDS`].
    pub kind: String,
    /// One line for moderators.
    #[serde(default)]
    pub description: String,
    /// Decision when it fires.
    pub action: Decision,
    /// Duration of a timeout (required) or ban (0: permanent), in whole seconds.
    #[serde(default)]
    pub duration_secs: u64,
    /// Whether it acts.
    #[serde(default)]
    pub mode: Mode,
    /// Roles that skip it.
    #[serde(default)]
    pub exempt_roles: Vec<String>,
    /// Channels it applies to; empty for every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// What it catches is harm (a scam, phishing, an IP logger, a slur): a message it fires on
    /// is never left visible, even when the ladder softens the punishment to a warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub harmful: bool,
    /// A trusted regular (the channel's `[policy.reputation]`) is spared: the hit is reported
    /// as a shadow reason that says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spare_trusted: bool,
    /// The kind's parameters (`[rule.params]`). Last, because TOML writes tables after values.
    #[serde(default)]
    pub params: toml::Table,
}

/// A channel's whole policy as a rules file writes `[policy]`: a database row holds one of
/// these per channel (`*` for the default), never a partial override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Observe only: nothing is enforced.
    pub shadow: bool,
    /// Users with these roles skip every rule.
    pub exempt_roles: Vec<String>,
    /// The channel's emote names.
    pub emotes: Vec<String>,
    /// Whether a `Classify` verdict's action is sent to the chat (default: recorded only).
    /// Before the escalation table, because TOML writes values before tables.
    #[serde(default)]
    pub classify_actions: ClassifyActions,
    /// Escalation for repeat offenders.
    pub escalation: EscalationSpec,
    /// What becomes of held messages.
    #[serde(default)]
    pub review: ReviewSpec,
    /// The private messages that tell a user why modbot acted.
    #[serde(default)]
    pub notices: NoticesSpec,
    /// How a user's reputation moves the model's thresholds.
    #[serde(default)]
    pub reputation: ReputationSpec,
    /// Raid mode.
    #[serde(default)]
    pub raid: RaidSpec,
    /// The public moderation log.
    #[serde(default)]
    pub transparency: TransparencySpec,
    /// The channel's own trusted domains.
    #[serde(default, skip_serializing_if = "LinksSpec::is_empty")]
    pub links: LinksSpec,
    /// What the model's labels do.
    #[serde(default)]
    pub model: ModelPolicySpec,
}

/// `[policy.links]`: the domains a channel trusts (its own site, its clips host, its VOD
/// channel). Every `link` rule treats a link to one of them, or to a subdomain, as its own
/// `allow_domains` would: no look-alike, TLD, allow-list-only or new-user hit. A rule's
/// `deny_domains` still wins, and repeating a trusted link is still a repeat.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinksSpec {
    /// Domains every link rule allows in this channel (subdomains included).
    pub allow_domains: Vec<String>,
}

impl LinksSpec {
    fn is_empty(&self) -> bool {
        self.allow_domains.is_empty()
    }
}

/// `[policy.review]`: what becomes of held messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewSpec {
    /// How long a held message waits for a moderator, in seconds (at least 1).
    pub ttl_secs: u64,
    /// What an item nobody ruled on becomes.
    pub on_expiry: crate::domain::OnExpiry,
    /// Hide a held message while it waits.
    pub hide_while_pending: bool,
}

impl Default for ReviewSpec {
    fn default() -> Self {
        Self {
            ttl_secs: 900,
            on_expiry: crate::domain::OnExpiry::Allow,
            hide_while_pending: false,
        }
    }
}

/// `[policy.notices]`: private messages telling a user why modbot acted, by action kind. An
/// empty template sends nothing for that kind. Placeholders: see
/// [`crate::engine::rules::NOTICE_PLACEHOLDERS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoticesSpec {
    /// After a warning (the warning itself: without one a warning does nothing in chat).
    pub warn: String,
    /// After a hidden message.
    pub hide: String,
    /// After a timeout.
    pub timeout: String,
    /// After a ban.
    pub ban: String,
    /// How to appeal, the `{appeal}` placeholder.
    pub appeal: String,
    /// At most one notice per user per this many seconds (0: no limit).
    pub min_interval_secs: u64,
}

impl Default for NoticesSpec {
    /// No notices: a policy stored before notices existed keeps working as it did.
    fn default() -> Self {
        Self {
            warn: String::new(),
            hide: String::new(),
            timeout: String::new(),
            ban: String::new(),
            appeal: String::new(),
            min_interval_secs: 60,
        }
    }
}

/// `[policy.reputation]`: trusted regulars and new accounts decided differently on borderline
/// model scores. Reputation is [`crate::domain::UserHistory::reputation`], in `(-1, 1)`.
/// [`Default`] (a policy without the table) changes nothing: both margins are 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationSpec {
    /// A user whose reputation is at least this is a trusted regular (in [-1, 1]).
    pub trusted_above: f64,
    /// A user whose reputation is below this is new, or distrusted (in [-1, 1], at most
    /// `trusted_above`).
    pub new_below: f64,
    /// How much a trusted regular's model-label thresholds are raised (in [0, 1]).
    pub trusted_margin: f64,
    /// How much a new user's model-label thresholds are lowered (in [0, 1]).
    pub new_margin: f64,
}

impl Default for ReputationSpec {
    fn default() -> Self {
        Self {
            trusted_above: 0.5,
            new_below: 0.05,
            trusted_margin: 0.0,
            new_margin: 0.0,
        }
    }
}

/// `[policy.transparency]`: the channel's public moderation log (`/public/CHANNEL` on the HTTP
/// server). [`Default`] (a policy without the table) is private.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransparencySpec {
    /// Serve the log to anyone, without a token.
    pub public: bool,
    /// How users are named in it.
    pub nicks: NickDisplay,
    /// Show the message an automatic action was about (cut to 200 characters).
    pub show_text: bool,
    /// Recent actions listed (1 to 500).
    pub recent_actions: u32,
}

impl Default for TransparencySpec {
    fn default() -> Self {
        Self {
            public: false,
            nicks: NickDisplay::Hashed,
            show_text: false,
            recent_actions: 50,
        }
    }
}

/// How the public moderation log names users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NickDisplay {
    /// A pseudonym, the same for one user in one channel, that cannot be turned back into the
    /// nick without the server's secret.
    #[default]
    Hashed,
    /// The nick.
    Shown,
}

/// `[policy.raid]`: raid detection and raid mode (see [`crate::engine::raid`]). [`Default`]
/// (a policy without the table) is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaidSpec {
    /// Watch for raids.
    pub enabled: bool,
    /// How far back joins and lines count, in seconds (1 to 3,600).
    pub window_secs: u64,
    /// Joins within the window that make a surge (0: surges are not watched).
    pub join_surge: u32,
    /// After a surge: new users with near-identical lines that start a raid (at least 2).
    pub surge_users: u32,
    /// Without a surge: new users with near-identical lines that start a raid (at least 2).
    pub burst_users: u32,
    /// How alike lines must be, in [0.5, 1].
    pub similarity: f64,
    /// Shorter lines (characters) are never compared.
    pub min_length: u32,
    /// A user first seen less than this many seconds ago is new.
    pub new_user_secs: u64,
    /// Raid mode lasts this many seconds after the raid's last copy (1 to 86,400).
    pub duration_secs: u64,
    /// What a new user's copy of the raid's message gets: hold, hide, warn, timeout or ban (a
    /// timeout lasts the escalation's first timeout, and climbs the ladder).
    pub action: Decision,
    /// Hold new users' links for review in raid mode.
    pub hold_links: bool,
    /// Lowered from every model label's threshold in raid mode, in [0, 1].
    pub threshold_drop: f64,
    /// Ask the bridge for subscriber-only mode in raid mode.
    pub subonly: bool,
}

impl Default for RaidSpec {
    fn default() -> Self {
        let p = super::RaidPolicy::default();
        Self {
            enabled: p.enabled,
            window_secs: p.window.as_secs(),
            join_surge: p.join_surge,
            surge_users: p.surge_users,
            burst_users: p.burst_users,
            similarity: p.similarity,
            min_length: p.min_length,
            new_user_secs: p.new_user.as_secs(),
            duration_secs: p.duration.as_secs(),
            action: p.action,
            hold_links: p.hold_links,
            threshold_drop: p.threshold_drop,
            subonly: p.subonly,
        }
    }
}

/// `[policy.escalation]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationSpec {
    /// A first offence earns a warning instead of a timeout.
    pub warn_first: bool,
    /// The first timeout of a heat episode, in seconds (at least 1).
    pub first_timeout_secs: u64,
    /// The longest timeout, in seconds (at least `first_timeout_secs`).
    pub max_timeout_secs: u64,
    /// The ladder's rung (escalated timeouts in one episode, or remembered as strikes) from
    /// which the next timeout-worthy offence is a ban (0 = never).
    pub ban_after: u32,
    /// Heat halves every this many seconds (at least 1).
    pub heat_half_life_secs: u64,
    /// Strikes, the ladder's memory of offences, halve every this many seconds (at least 1;
    /// meant to be far longer than `heat_half_life_secs`). Absent (a policy written before
    /// strikes existed): a week.
    #[serde(default = "default_memory_half_life_secs")]
    pub memory_half_life_secs: u64,
}

/// [`EscalationSpec::memory_half_life_secs`] when a policy does not say: a week.
pub const DEFAULT_MEMORY_HALF_LIFE_SECS: u64 = 7 * 24 * 60 * 60;

fn default_memory_half_life_secs() -> u64 {
    DEFAULT_MEMORY_HALF_LIFE_SECS
}

/// `[policy.model]`: what the model's labels do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPolicySpec {
    /// By `head/label`.
    #[serde(default)]
    pub labels: BTreeMap<String, ModelLabelSpec>,
}

/// `[policy.model.labels."head/label"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLabelSpec {
    /// Decision when the label's probability reaches the threshold.
    pub action: Decision,
    /// The threshold in [0, 1]; absent: the one the head was trained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Duration of a timeout or ban, in seconds.
    #[serde(default)]
    pub duration_secs: u64,
    /// Whether it acts (`disabled`: kept but never scored).
    #[serde(default)]
    pub mode: Mode,
    /// What it catches is harm: never left visible (see [`RuleSpec::harmful`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub harmful: bool,
}

/// A rule's parameters, typed by its kind (`[rule.params]`).
#[derive(Debug, Clone, PartialEq)]
pub enum RuleParams {
    /// `phrase`.
    Phrase(PhraseParams),
    /// `profanity`.
    Profanity(ProfanityParams),
    /// `link`.
    Link(LinkParams),
    /// `caps`.
    Caps(CapsParams),
    /// `emote_flood`.
    EmoteFlood(EmoteFloodParams),
    /// `char_flood`.
    CharFlood(CharFloodParams),
    /// `repetition`.
    Repetition(RepetitionParams),
    /// `copypasta`.
    Copypasta(CopypastaParams),
    /// `rate`.
    Rate(RateParams),
    /// `unique_words`.
    UniqueWords(UniqueWordsParams),
    /// `long_word`.
    LongWord(LongWordParams),
    /// `mentions`.
    Mentions(MentionsParams),
}

impl RuleParams {
    /// The kind, as written in `kind = "..."`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Phrase(_) => "phrase",
            Self::Profanity(_) => "profanity",
            Self::Link(_) => "link",
            Self::Caps(_) => "caps",
            Self::EmoteFlood(_) => "emote_flood",
            Self::CharFlood(_) => "char_flood",
            Self::Repetition(_) => "repetition",
            Self::Copypasta(_) => "copypasta",
            Self::Rate(_) => "rate",
            Self::UniqueWords(_) => "unique_words",
            Self::LongWord(_) => "long_word",
            Self::Mentions(_) => "mentions",
        }
    }

    /// The parameters as a `[rule.params]` table, every key written out (defaults included).
    pub fn to_table(&self) -> Result<toml::Table, toml::ser::Error> {
        fn table<T: Serialize>(params: &T) -> Result<toml::Table, toml::ser::Error> {
            toml::Table::try_from(params)
        }
        match self {
            Self::Phrase(p) => table(p),
            Self::Profanity(p) => table(p),
            Self::Link(p) => table(p),
            Self::Caps(p) => table(p),
            Self::EmoteFlood(p) => table(p),
            Self::CharFlood(p) => table(p),
            Self::Repetition(p) => table(p),
            Self::Copypasta(p) => table(p),
            Self::Rate(p) => table(p),
            Self::UniqueWords(p) => table(p),
            Self::LongWord(p) => table(p),
            Self::Mentions(p) => table(p),
        }
    }
}

/// `phrase`: banned phrases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhraseParams {
    /// The phrases; any one fires the rule.
    pub phrases: Vec<String>,
    /// How they are written.
    #[serde(default)]
    pub syntax: PhraseSyntax,
    /// Match inside words too.
    #[serde(default)]
    pub anywhere: bool,
}

/// `profanity`: the built-in lexicon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfanityParams {
    /// `mild`, `moderate` or `severe`.
    #[serde(default = "default_severity")]
    pub min_severity: String,
    /// Any of `profane`, `offensive`, `sexual`, `mean`; all when empty.
    #[serde(default)]
    pub categories: Vec<String>,
}

fn default_severity() -> String {
    "moderate".to_owned()
}

/// `link`: links by domain, user age and repetition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkParams {
    /// Domains always allowed (subdomains included).
    #[serde(default)]
    pub allow_domains: Vec<String>,
    /// Domains never allowed (subdomains included).
    #[serde(default)]
    pub deny_domains: Vec<String>,
    /// Only allow-listed domains are allowed.
    #[serde(default)]
    pub allow_list_only: bool,
    /// No links from users first seen less than this long ago (0 = off).
    #[serde(default)]
    pub min_user_age_secs: u64,
    /// Fire on the same link this many times within the window (0 = off).
    #[serde(default)]
    pub max_repeats: u32,
    /// The window of `max_repeats`.
    #[serde(default = "default_repeat_window")]
    pub repeat_window_secs: u64,
    /// Brands whose look-alike domains fire (`dlscord-gift.com` for `discord`); their own
    /// domains belong in `allow_domains`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lookalike_brands: Vec<String>,
    /// Top-level domains whose links fire (`xyz`, `top`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_tlds: Vec<String>,
}

fn default_repeat_window() -> u64 {
    600
}

/// `caps`: shouting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsParams {
    /// Highest allowed share of capitals among letters.
    pub max_ratio: f64,
    /// Shorter messages are never checked.
    #[serde(default = "default_min_letters")]
    pub min_letters: u32,
}

fn default_min_letters() -> u32 {
    12
}

/// `emote_flood`: emote walls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmoteFloodParams {
    /// Most emotes in one message (0 = no limit).
    #[serde(default)]
    pub max_emotes: u32,
    /// Highest share of emotes among tokens (0 = no limit).
    #[serde(default)]
    pub max_ratio: f64,
    /// Messages with fewer tokens are never checked by ratio.
    #[serde(default = "default_min_tokens")]
    pub min_tokens: u32,
}

fn default_min_tokens() -> u32 {
    8
}

/// `char_flood`: floods of unusual characters and zalgo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharFloodParams {
    /// Most non-ASCII characters (0 = no limit).
    #[serde(default)]
    pub max_non_ascii: u32,
    /// Most punctuation characters (0 = no limit).
    #[serde(default)]
    pub max_punctuation: u32,
    /// Most combining marks on one character (0 = no limit).
    #[serde(default)]
    pub max_combining_marks: u32,
}

/// `repetition`: a user repeating their own recent messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepetitionParams {
    /// Similarity at or above which two messages are the same.
    pub min_similarity: f64,
    /// How many of the user's recent messages to compare with.
    #[serde(default = "default_last_own")]
    pub last_messages: u32,
    /// Only messages this recent count, in seconds.
    #[serde(default = "default_repetition_window")]
    pub window_secs: u64,
    /// Shorter messages (in characters) are never checked.
    #[serde(default = "default_repetition_min_length")]
    pub min_length: u32,
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

/// `copypasta`: copies of other users' recent messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopypastaParams {
    /// Shorter messages (in characters) are never checked.
    #[serde(default = "default_copypasta_min_length")]
    pub min_length: u32,
    /// Similarity at or above which a message is a copy.
    #[serde(default = "default_copypasta_similarity")]
    pub min_similarity: f64,
    /// How many recent messages from others to compare with.
    #[serde(default = "default_last_channel")]
    pub last_messages: u32,
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

/// `rate`: message rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateParams {
    /// Fires on more than this many messages ...
    pub max_messages: u32,
    /// ... within this many seconds (fractions allowed in files).
    pub window_secs: f64,
}

/// `unique_words`: low variety of words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniqueWordsParams {
    /// Fires at or below this ratio of distinct words.
    pub max_ratio: f64,
    /// Messages with fewer words are never checked.
    #[serde(default = "default_min_words")]
    pub min_words: u32,
}

fn default_min_words() -> u32 {
    6
}

/// `long_word`: very long words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongWordParams {
    /// Longest word allowed, in characters.
    pub max_length: u32,
}

/// `mentions`: mention spam.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MentionsParams {
    /// Most distinct mentions.
    pub max_mentions: u32,
}
