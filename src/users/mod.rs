//! Per-channel, per-user state: what each user said recently, how fast, and how they have
//! offended, kept either in this process ([`MemoryState`]) or in Redis shared by every replica
//! ([`RedisState`]).
//!
//! The decision engine calls [`UserState::observe`] once per chat message: it records the
//! message and returns the user's [`UserHistory`] *before* it, with the channel's recent
//! messages from other users (for the copy-paste rule). When a rule or model decides an action,
//! the engine calls [`UserState::record_offence`], which adds decaying "heat" and advances the
//! escalation step (warning, then ever longer time-outs, then a ban).
//!
//! Each channel also keeps a longer history of its messages from everyone
//! ([`StateConfig::history_per_channel`], more than the copy-paste window) for `Nuke`, which
//! asks [`UserState::channel_history`] who said a phrase recently. Observing never returns it,
//! so its length costs nothing per message.
//!
//! All times are Unix milliseconds passed in by the caller, so behaviour is deterministic and
//! tests need no sleeping. Everything is bounded: per-user lists are fixed-capacity rings, idle
//! users expire ([`StateConfig::idle_ttl`], unless their heat is still warm), the in-process
//! backend holds at most [`StateConfig::max_users`] users, and Redis keys carry TTLs.
//!
//! [`SharedState`] wraps a backend for the server: with Redis it falls back to per-replica
//! memory when Redis fails, and says so (`degraded`).
//!
//! Architecture Invariant: this module knows nothing of gRPC, SQL or the decision rules. It
//! stores and returns facts; what they mean is the engine's business.

mod memory;
mod redis;
mod shared;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use memory::MemoryState;
pub use redis::RedisState;
pub use shared::{Answer, SharedState};

/// Heat below which a user's offences count as forgotten: an idle user is only expired once
/// their heat has decayed below this (so a repeat offender who goes quiet for a day is not
/// forgiven while their heat is still warm), and Redis keys of a warm user live until it does.
pub const FORGOTTEN_HEAT: f64 = 0.01;

/// Sizes and lifetimes of the state. [`Default`] gives the production defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// How many of a user's own recent messages are kept (for the repetition rule).
    pub recent_per_user: usize,
    /// How many of a user's recent message times are kept (for the rate rule).
    pub times_per_user: usize,
    /// How many recent messages of a channel, from everyone, are kept (for the copy-paste rule;
    /// destiny.gg's own bot compares against the last 75).
    pub recent_per_channel: usize,
    /// How many of a channel's messages, from everyone, [`UserState::channel_history`] returns
    /// (for `Nuke`); at least [`Self::recent_per_channel`] (a smaller value is taken as that).
    /// Kept beside the copy-paste window, never returned by [`UserState::observe`].
    pub history_per_channel: usize,
    /// A user with no message for this long, and heat below [`FORGOTTEN_HEAT`], is forgotten.
    /// Also the TTL of every Redis key, renewed on each write.
    pub idle_ttl: Duration,
    /// Most users (per channel and user id) the in-process backend holds; past it the least
    /// recently seen are evicted. Redis is bounded by its TTLs instead.
    pub max_users: usize,
    /// Most channels the in-process backend keeps a recent-message window for; past it the
    /// least recently active channels are evicted. Redis is bounded by its TTLs instead.
    pub max_channels: usize,
    /// Most bytes the in-process backend's users may hold (their keys, recent messages and
    /// times, counted on every change); past it the least recently seen are evicted,
    /// as for [`Self::max_users`]. Counts alone do not bound memory: a user's recent messages
    /// can be a few bytes or [`REMEMBERED_TEXT_BYTES`] each.
    pub max_user_bytes: usize,
    /// Most bytes the in-process backend's channel histories may hold; past it the least
    /// recently active channels are evicted.
    pub max_channel_bytes: usize,
    /// An offence recorded when the user's decayed heat is below this starts a new heat
    /// episode: the escalation step goes back to 0 first. With offences adding heat 1.0, the
    /// default 0.125 means "three half-lives after a single offence".
    pub cooled_down_heat: f64,
    /// Bound on connecting to Redis and on each Redis call. A call that takes longer fails
    /// (and [`SharedState`] answers from memory instead).
    pub redis_timeout: Duration,
    /// While Redis is failing, [`SharedState`] tries it again no more often than this.
    pub redis_retry_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            recent_per_user: 10,
            times_per_user: 16,
            recent_per_channel: 75,
            history_per_channel: 500,
            idle_ttl: Duration::from_secs(24 * 60 * 60),
            max_users: 500_000,
            // A busy channel's history (500 messages) takes about 95 KB: 2,000 channels bound
            // the in-process windows near 190 MB.
            max_channels: 2_000,
            max_user_bytes: 256 << 20,
            max_channel_bytes: 128 << 20,
            cooled_down_heat: 0.125,
            redis_timeout: Duration::from_millis(250),
            redis_retry_interval: Duration::from_secs(1),
        }
    }
}

impl StateConfig {
    /// [`Self::idle_ttl`] in milliseconds, saturated to `i64`.
    fn idle_ttl_ms(&self) -> i64 {
        duration_ms(self.idle_ttl)
    }

    /// Messages of a channel kept in all: the copy-paste window or the history, whichever is
    /// longer.
    fn kept_per_channel(&self) -> usize {
        self.recent_per_channel.max(self.history_per_channel)
    }
}

/// Most bytes of a message's normalised text that user state remembers (a user's recent
/// messages, a channel's history, on both backends): longer texts are cut on a character
/// boundary. Chat lines are far shorter (destiny.gg allows 512 characters), so only floods
/// are cut, and the similarity rules compare the same prefix of the new message
/// ([`remembered_text`]), so a repeated long message still matches itself exactly. `Nuke`
/// sees only this prefix of each message.
pub const REMEMBERED_TEXT_BYTES: usize = 1024;

/// The part of `text` that user state remembers: its first [`REMEMBERED_TEXT_BYTES`] bytes,
/// cut back to a character boundary.
pub fn remembered_text(text: &str) -> &str {
    if text.len() <= REMEMBERED_TEXT_BYTES {
        return text;
    }
    let mut end = REMEMBERED_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One chat message as the state sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation<'a> {
    /// The channel it was said in.
    pub channel: &'a str,
    /// Who said it.
    pub user_id: &'a str,
    /// Its id (kept so evidence can point at an earlier message).
    pub message_id: &'a str,
    /// The normalised text (the backends remember its [`remembered_text`]).
    pub text: &'a str,
    /// When it was sent, Unix milliseconds. This is the state's only clock (expiry included),
    /// so it should be one the server trusts: its own receive time, or the message's time
    /// clamped to it. A time far in the future would make every user look idle.
    pub at_ms: i64,
}

/// One of a user's own recent messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentMessage {
    /// Its id.
    pub message_id: String,
    /// The normalised text.
    pub text: String,
    /// When it was sent, Unix milliseconds.
    pub at_ms: i64,
}

/// One of a channel's recent messages, from anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage {
    /// Who said it.
    pub user_id: String,
    /// Its id.
    pub message_id: String,
    /// The normalised text.
    pub text: String,
    /// When it was sent, Unix milliseconds.
    pub at_ms: i64,
}

/// A block of a channel's messages, shared between the in-process backend's ring and the
/// windows handed out. Slots are written once, under the channel's lock, before any window
/// that reaches them is made; windows only read slots they were made after.
type MessageBlock = Arc<[OnceLock<ChannelMessage>]>;

/// A channel's recent messages from users other than the observer, oldest first, as
/// [`UserState::observe`] and [`UserState::peek`] return them.
///
/// It is a view, not a copy: the in-process backend keeps a channel's messages in append-only
/// blocks of 16, and a window holds the few blocks it spans (6 reference counts for 75
/// messages). Copying 75 messages' strings, or even cloning 75 `Arc`s, on every chat message
/// cost more than everything else `observe` does together. Iterate with [`Self::iter`] (double
/// ended, so `.iter().rev()` gives the newest first) or `for message in &window`.
#[derive(Clone, Default)]
pub struct ChannelWindow {
    /// The blocks spanning the window; `blocks[0]`'s first slot is message `first_index`.
    blocks: Vec<MessageBlock>,
    /// Slots per block (the last block of a window made from a list may be shorter).
    block_size: u64,
    first_index: u64,
    /// The window's messages are `start..end`.
    start: u64,
    end: u64,
    /// Whose messages are skipped.
    observer: Observer,
}

/// Whose messages a [`ChannelWindow`] skips.
#[derive(Debug, Clone, Default)]
enum Observer {
    /// Nobody's.
    #[default]
    Nobody,
    /// Those of the author of message `end`, the observed message itself (which the window's
    /// last block holds): no copy of the user id is needed.
    AuthorOfEnd,
    /// This user's.
    User(Box<str>),
}

impl ChannelWindow {
    /// A window of exactly these messages, oldest first (for tests, and for callers that build
    /// one): nothing is skipped.
    pub fn from_messages(messages: Vec<ChannelMessage>) -> Self {
        Self::from_list(messages, Observer::Nobody)
    }

    /// A window of one block holding `messages`, all of them in the window.
    fn from_list(messages: Vec<ChannelMessage>, observer: Observer) -> Self {
        let end = messages.len() as u64;
        let block: MessageBlock = messages.into_iter().map(OnceLock::from).collect();
        Self {
            block_size: (block.len() as u64).max(1),
            blocks: vec![block],
            first_index: 0,
            start: 0,
            end,
            observer,
        }
    }

    /// Message `index` of the channel, if this window's blocks hold it.
    fn get(&self, index: u64) -> Option<&ChannelMessage> {
        let offset = index.checked_sub(self.first_index)?;
        let block = self
            .blocks
            .get(usize::try_from(offset.checked_div(self.block_size)?).ok()?)?;
        block.get((offset % self.block_size) as usize)?.get()
    }

    /// The messages from other users, oldest first.
    pub fn iter(&self) -> ChannelWindowIter<'_> {
        let observer = match &self.observer {
            Observer::Nobody => None,
            Observer::AuthorOfEnd => self.get(self.end).map(|own| own.user_id.as_str()),
            Observer::User(user_id) => Some(&**user_id),
        };
        ChannelWindowIter {
            window: self,
            observer,
            front: self.start,
            back: self.end,
        }
    }

    /// How many messages [`Self::iter`] yields (counted, not stored).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The messages as owned copies.
    pub fn to_vec(&self) -> Vec<ChannelMessage> {
        self.iter().cloned().collect()
    }
}

/// Iterator over a [`ChannelWindow`]'s messages from other users.
#[derive(Debug, Clone)]
pub struct ChannelWindowIter<'a> {
    window: &'a ChannelWindow,
    observer: Option<&'a str>,
    /// Next index from the front, and one past the next from the back.
    front: u64,
    back: u64,
}

impl ChannelWindowIter<'_> {
    fn skips(&self, message: &ChannelMessage) -> bool {
        self.observer == Some(message.user_id.as_str())
    }
}

impl<'a> Iterator for ChannelWindowIter<'a> {
    type Item = &'a ChannelMessage;

    fn next(&mut self) -> Option<Self::Item> {
        while self.front < self.back {
            let index = self.front;
            self.front += 1;
            match self.window.get(index) {
                Some(message) if !self.skips(message) => return Some(message),
                _ => {}
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, usize::try_from(self.back - self.front).ok())
    }
}

impl DoubleEndedIterator for ChannelWindowIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        while self.front < self.back {
            self.back -= 1;
            match self.window.get(self.back) {
                Some(message) if !self.skips(message) => return Some(message),
                _ => {}
            }
        }
        None
    }
}

impl<'a> IntoIterator for &'a ChannelWindow {
    type Item = &'a ChannelMessage;
    type IntoIter = ChannelWindowIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::fmt::Debug for ChannelWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What is known about one user in one channel.
///
/// [`UserState::observe`] returns it as it was *before* the observed message;
/// [`UserState::record_offence`] as it is after the offence. A user never seen is
/// [`UserHistory::default`].
///
/// Messages are shared behind [`Arc`]s: the in-process backend hands out its own stored
/// messages instead of copying their strings on every chat message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserHistory {
    /// Time of the user's first message still remembered.
    pub first_seen_ms: Option<i64>,
    /// Time of the user's latest message.
    pub last_seen_ms: Option<i64>,
    /// Messages seen (offending ones included) since the user was first seen.
    pub messages: u64,
    /// The user's last [`StateConfig::recent_per_user`] messages, oldest first.
    pub recent: Vec<Arc<RecentMessage>>,
    /// Times of the user's last [`StateConfig::times_per_user`] messages, oldest first (in
    /// arrival order, which is time order unless callers send out-of-order timestamps).
    pub message_times_ms: Vec<i64>,
    /// Heat as stored at [`Self::heat_at_ms`]; use [`Self::heat_at`] for its value now.
    pub heat: f64,
    /// When [`Self::heat`] was last updated (0 if never).
    pub heat_at_ms: i64,
    /// Offences recorded since the user was first seen.
    pub offences: u32,
    /// Escalating actions (time-outs, bans) in the current heat episode.
    pub escalation_step: u32,
    /// Time of the latest offence.
    pub last_offence_ms: Option<i64>,
}

/// Clean messages at which [`UserHistory::reputation`]'s trust term reaches one half.
const REPUTATION_HALF_TRUST_MESSAGES: f64 = 200.0;
/// Offences at which [`UserHistory::reputation`]'s distrust term reaches one half.
const REPUTATION_HALF_DISTRUST_OFFENCES: f64 = 2.0;

impl UserHistory {
    /// The heat decayed to `now_ms`: `heat × 0.5^(elapsed / half_life)`. Time never runs
    /// backwards here: a `now_ms` before [`Self::heat_at_ms`] gives the stored heat.
    pub fn heat_at(&self, now_ms: i64, half_life: Duration) -> f64 {
        decay(self.heat, self.heat_at_ms, now_ms, duration_ms(half_life))
    }

    /// How far the user is trusted, in `(-1, 1)`; 0 for a user never seen.
    ///
    /// `reputation = c / (c + 200) − o / (o + 2)`, where `o` is [`Self::offences`] and `c` the
    /// clean messages (`messages − o`, at least 0). Clean messages raise it slowly and with
    /// diminishing returns (200 clean messages give +0.5, 1,000 give +0.83); offences lower it
    /// fast (one offence −0.33, two −0.5, ten −0.83). It rises with every clean message and
    /// falls with every offence. Offences are never forgiven here, only by expiry of the whole
    /// history: the short-term memory of misbehaviour is [`Self::heat`].
    pub fn reputation(&self) -> f64 {
        let offences = f64::from(self.offences);
        let clean = self.messages.saturating_sub(u64::from(self.offences)) as f64;
        let trust = clean / (clean + REPUTATION_HALF_TRUST_MESSAGES);
        let distrust = offences / (offences + REPUTATION_HALF_DISTRUST_OFFENCES);
        trust - distrust
    }

    /// Whether any message or offence is recorded.
    fn is_known(&self) -> bool {
        self.messages > 0 || self.offences > 0 || self.first_seen_ms.is_some()
    }
}

/// One offence to record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offence {
    /// Heat added (after decaying the stored heat to [`Self::at_ms`]); a negative or non-finite
    /// value adds nothing.
    pub heat: f64,
    /// Half-life of the heat's decay. The latest offence's half-life is remembered to decide
    /// when the user's heat is forgotten (expiry).
    pub half_life: Duration,
    /// A time-out or ban that advances [`UserHistory::escalation_step`].
    pub escalates: bool,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
}

impl Offence {
    /// [`Self::heat`], or 0 if it is negative or not finite (heat never goes below 0, and a NaN
    /// would poison it for good).
    fn added_heat(&self) -> f64 {
        if self.heat.is_finite() && self.heat > 0.0 {
            self.heat
        } else {
            0.0
        }
    }
}

/// Why a state operation failed. Only the Redis backend fails; memory always answers.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The Redis URL could not be parsed.
    #[error("invalid Redis url `{url}`: {source}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: ::redis::RedisError,
    },
    /// Redis could not be reached when connecting.
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: Box<StateError>,
    },
    /// A Redis command failed.
    #[error("Redis command failed: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis returned state this version cannot read.
    #[error("malformed user state in Redis: {0}")]
    Malformed(String),
}

/// The state backend, chosen at start. An enum rather than a trait object: there are two
/// backends, and async methods on `dyn` traits would need boxing on every call.
#[derive(Debug)]
pub enum UserState {
    /// In this process: fast, per replica, lost on restart.
    Memory(MemoryState),
    /// In Redis: shared by all replicas, one round trip per call.
    Redis(RedisState),
}

impl UserState {
    /// An in-process backend.
    pub fn memory(config: StateConfig) -> Self {
        Self::Memory(MemoryState::new(config))
    }

    /// A Redis backend, connected: fails if Redis does not answer a `PING` within
    /// [`StateConfig::redis_timeout`]. Keys are `key_prefix` + channel + user (see
    /// [`RedisState`]).
    pub async fn redis(
        url: &str,
        config: StateConfig,
        key_prefix: &str,
    ) -> Result<Self, StateError> {
        Ok(Self::Redis(
            RedisState::connect(url, config, key_prefix).await?,
        ))
    }

    /// Records the message and returns the user's history before it and the channel's recent
    /// messages from *other* users, oldest first: of the channel's last
    /// [`StateConfig::recent_per_channel`] messages before this one, those not by this user.
    /// One round trip for Redis (a Lua script, atomic).
    ///
    /// Both come back without copying message strings on the in-process backend (shared
    /// [`Arc`]s and a [`ChannelWindow`] view): copying 85 messages per chat message would cost
    /// microseconds, more than everything else here together.
    ///
    /// A user whose history has expired (idle for [`StateConfig::idle_ttl`] by `obs.at_ms` and
    /// heat below [`FORGOTTEN_HEAT`]) starts over, on both backends.
    pub async fn observe(
        &self,
        obs: &Observation<'_>,
    ) -> Result<(UserHistory, ChannelWindow), StateError> {
        match self {
            Self::Memory(memory) => Ok(memory.observe(obs)),
            Self::Redis(redis) => redis.observe(obs).await,
        }
    }

    /// Records an offence and returns the history after it.
    ///
    /// The stored heat is decayed to `offence.at_ms` with `offence.half_life`. If that decayed
    /// heat is below [`StateConfig::cooled_down_heat`], the user has cooled down and this
    /// offence opens a new heat episode: `escalation_step` goes back to 0 (for every offence,
    /// not only escalating ones, so a warning after a cool-down does not carry the old
    /// escalation into the next time-out). Then `offence.heat` is added, `offences` counts one
    /// more, and an escalating offence advances `escalation_step` by one.
    pub async fn record_offence(
        &self,
        channel: &str,
        user_id: &str,
        offence: &Offence,
    ) -> Result<UserHistory, StateError> {
        match self {
            Self::Memory(memory) => Ok(memory.record_offence(channel, user_id, offence)),
            Self::Redis(redis) => redis.record_offence(channel, user_id, offence).await,
        }
    }

    /// What [`Self::observe`] would return, without recording anything (for dry runs): the
    /// user's history as stored (`None` if never seen) and the channel's recent messages from
    /// other users. One round trip for Redis.
    pub async fn peek(
        &self,
        channel: &str,
        user_id: &str,
    ) -> Result<(Option<UserHistory>, ChannelWindow), StateError> {
        match self {
            Self::Memory(memory) => Ok(memory.peek(channel, user_id)),
            Self::Redis(redis) => redis.peek(channel, user_id).await,
        }
    }

    /// The user's history as stored, for the Admin `GetUser` RPC; `None` for a user never seen
    /// (or forgotten). Read-only.
    pub async fn user(
        &self,
        channel: &str,
        user_id: &str,
    ) -> Result<Option<UserHistory>, StateError> {
        match self {
            Self::Memory(memory) => Ok(memory.user(channel, user_id)),
            Self::Redis(redis) => redis.user(channel, user_id).await,
        }
    }

    /// The channel's last [`StateConfig::history_per_channel`] messages from everyone, oldest
    /// first (empty for a channel never seen, or idle for [`StateConfig::idle_ttl`] and
    /// forgotten, as its copy-paste window is). Read-only; one `LRANGE` for Redis.
    pub async fn channel_history(&self, channel: &str) -> Result<Vec<ChannelMessage>, StateError> {
        match self {
            Self::Memory(memory) => Ok(memory.channel_history(channel)),
            Self::Redis(redis) => redis.channel_history(channel).await,
        }
    }

    /// `"memory"` or `"redis"`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}

/// A duration in whole milliseconds, saturated to `i64`.
fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `heat` stored at `at_ms`, decayed to `now_ms` with a half-life of `half_life_ms`. The Redis
/// scripts compute the same (`decay` in `redis.rs`'s Lua).
fn decay(heat: f64, at_ms: i64, now_ms: i64, half_life_ms: i64) -> f64 {
    if heat == 0.0 || now_ms <= at_ms {
        return heat;
    }
    if half_life_ms <= 0 {
        return 0.0;
    }
    let elapsed = now_ms.saturating_sub(at_ms) as f64;
    heat * 0.5_f64.powf(elapsed / half_life_ms as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_text_is_cut_on_a_character_boundary() {
        assert_eq!(remembered_text("short"), "short");
        let exact = "a".repeat(REMEMBERED_TEXT_BYTES);
        assert_eq!(remembered_text(&exact), exact);
        // Three-byte characters do not divide 1024: the cut falls back to the last whole one.
        let wide = "\u{20AC}".repeat(REMEMBERED_TEXT_BYTES);
        let cut = remembered_text(&wide);
        assert_eq!(cut.len(), REMEMBERED_TEXT_BYTES / 3 * 3);
        assert!(wide.starts_with(cut));
    }

    #[test]
    fn decay_halves_per_half_life() {
        let minute = 60_000;
        for (heat, at, now, half_life, expected) in [
            (1.0, 0, 0, minute, 1.0),
            (1.0, 0, minute, minute, 0.5),
            (1.0, 0, 2 * minute, minute, 0.25),
            (4.0, 1_000, 1_000 + 3 * minute, minute, 0.5),
            (1.0, minute, 0, minute, 1.0), // the clock ran backwards: no decay
            (1.0, 0, 1, 0, 0.0),           // zero half-life: gone at once
            (0.0, 0, minute, minute, 0.0),
        ] {
            assert_eq!(
                decay(heat, at, now, half_life),
                expected,
                "decay({heat}, {at}, {now}, {half_life})"
            );
        }
    }

    #[test]
    fn reputation_is_zero_for_a_stranger_and_bounded() {
        assert_eq!(UserHistory::default().reputation(), 0.0);
        let saint = UserHistory {
            messages: u64::MAX,
            ..UserHistory::default()
        };
        let sinner = UserHistory {
            offences: u32::MAX,
            ..UserHistory::default()
        };
        assert!(saint.reputation() <= 1.0 && saint.reputation() > 0.99);
        assert!(sinner.reputation() >= -1.0 && sinner.reputation() < -0.99);
    }

    #[test]
    fn reputation_rises_with_clean_messages_and_falls_with_offences() {
        let at = |messages, offences| {
            UserHistory {
                messages,
                offences,
                ..UserHistory::default()
            }
            .reputation()
        };
        for offences in [0, 1, 5] {
            let mut previous = f64::NEG_INFINITY;
            for messages in [5, 10, 100, 1_000, 100_000] {
                let reputation = at(messages, offences);
                assert!(
                    reputation > previous,
                    "{messages} messages, {offences} offences"
                );
                previous = reputation;
            }
        }
        for messages in [0, 10, 1_000] {
            let mut previous = f64::INFINITY;
            for offences in [0, 1, 2, 10, 100] {
                let reputation = at(messages, offences);
                assert!(
                    reputation < previous,
                    "{messages} messages, {offences} offences"
                );
                previous = reputation;
            }
        }
        // Diminishing returns: the first hundred clean messages count more than the next.
        assert!(at(100, 0) - at(0, 0) > at(200, 0) - at(100, 0));
    }
}
