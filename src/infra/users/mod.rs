//! Per-channel, per-user state: what each user said recently, how fast, and how they have
//! offended, kept either in this process ([`MemoryState`]) or in Redis shared by every replica
//! ([`RedisState`]).
//!
//! The decision engine calls [`UserState::observe`] once per chat message: it records the
//! message and returns the user's [`UserHistory`] *before* it, with the channel's recent
//! messages from other users (for the copy-paste rule). When a rule or model decides an action,
//! the engine calls [`UserState::record_offence`], which adds decaying "heat" (short memory) and
//! "strikes" (long memory) and advances the escalation step (warning, then ever longer
//! time-outs, then a ban). An overturned appeal takes one offence back with
//! [`UserState::pardon`].
//!
//! Each channel also keeps a longer history of its messages from everyone
//! ([`StateOptions::history_per_channel`], more than the copy-paste window) for `Nuke`, which
//! asks [`UserState::channel_history`] who said a phrase recently. Observing never returns it,
//! so its length costs nothing per message.
//!
//! All times are Unix milliseconds passed in by the caller, so behaviour is deterministic and
//! tests need no sleeping. Everything is bounded: per-user lists are fixed-capacity rings, idle
//! users expire ([`StateOptions::idle_ttl`], unless their heat is still warm or their strikes
//! still remembered), the in-process backend holds at most [`StateOptions::max_users`] users,
//! and Redis keys carry TTLs.
//!
//! [`SharedState`] wraps a backend for the server: with Redis it falls back to per-replica
//! memory when Redis fails, and says so (`degraded`).
//!
//! Architecture Invariant: this module knows nothing of gRPC, SQL or the decision rules. It
//! stores and returns facts; what they mean is the engine's business.

mod memory;
mod redis;
mod shared;

use std::time::Duration;

use crate::domain::{
    ChannelMessage, ChannelWindow, MessageBlock, Observation, Observer, Offence, RecentMessage,
    UserHistory, decay, duration_ms, pardoned, remembered_text,
};
pub use memory::MemoryState;
pub use redis::RedisState;
pub use shared::{Answer, SharedState};

/// Heat below which a user's offences count as forgotten: an idle user is only expired once
/// their heat has decayed below this (so a repeat offender who goes quiet for a day is not
/// forgiven while their heat is still warm), and Redis keys of a warm user live until it does.
pub const FORGOTTEN_HEAT: f64 = 0.01;

/// Strikes below which a user's offences count as forgotten for expiry, as [`FORGOTTEN_HEAT`]
/// is for heat: the ladder's own threshold ([`crate::domain::REMEMBERED_STRIKE`]), below which
/// strikes no longer change a decision. One strike keeps an idle user (and their Redis keys)
/// for one memory half-life, four strikes for three.
pub const FORGOTTEN_STRIKES: f64 = crate::domain::REMEMBERED_STRIKE;

/// Sizes and lifetimes of the state. [`Default`] gives the production defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct StateOptions {
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
    /// A user with no message for this long, heat below [`FORGOTTEN_HEAT`] and strikes below
    /// [`FORGOTTEN_STRIKES`], is forgotten.
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

impl Default for StateOptions {
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

impl StateOptions {
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

/// Sets up user state: in-process, or Redis (starting degraded if Redis is down).
pub async fn open_state(config: &crate::config::Config) -> Result<SharedState, StateError> {
    let state = &config.state;
    let state_config = StateOptions {
        recent_per_user: state.recent_per_user as usize,
        times_per_user: state.times_per_user as usize,
        recent_per_channel: state.recent_per_channel as usize,
        history_per_channel: state.history_per_channel as usize,
        idle_ttl: std::time::Duration::from_secs(state.idle_ttl_secs),
        max_users: state.max_users as usize,
        max_user_bytes: usize::try_from(state.max_user_bytes).unwrap_or(usize::MAX),
        max_channel_bytes: usize::try_from(state.max_channel_bytes).unwrap_or(usize::MAX),
        cooled_down_heat: crate::domain::COOLED_HEAT,
        ..StateOptions::default()
    };
    if config.redis.url.is_empty() {
        Ok(SharedState::memory(state_config))
    } else {
        SharedState::redis(&config.redis.url, state_config, &config.redis.key_prefix).await
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
    pub fn memory(config: StateOptions) -> Self {
        Self::Memory(MemoryState::new(config))
    }

    /// A Redis backend, connected: fails if Redis does not answer a `PING` within
    /// [`StateOptions::redis_timeout`]. Keys are `key_prefix` + channel + user (see
    /// [`RedisState`]).
    pub async fn redis(
        url: &str,
        config: StateOptions,
        key_prefix: &str,
    ) -> Result<Self, StateError> {
        Ok(Self::Redis(
            RedisState::connect(url, config, key_prefix).await?,
        ))
    }

    /// Records the message and returns the user's history before it and the channel's recent
    /// messages from *other* users, oldest first: of the channel's last
    /// [`StateOptions::recent_per_channel`] messages before this one, those not by this user.
    /// One round trip for Redis (a Lua script, atomic).
    ///
    /// Both come back without copying message strings on the in-process backend (shared
    /// [`Arc`]s and a [`ChannelWindow`] view): copying 85 messages per chat message would cost
    /// microseconds, more than everything else here together.
    ///
    /// A user whose history has expired (idle for [`StateOptions::idle_ttl`] by `obs.at_ms` and
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
    /// The stored heat is decayed to `offence.at_ms` with `offence.half_life`, the stored
    /// strikes with `offence.memory_half_life`. If that decayed heat is below
    /// [`StateOptions::cooled_down_heat`], the user has cooled down and this offence opens a
    /// new heat episode: `escalation_step` goes back to 0 (for every offence, not only
    /// escalating ones, so a warning after a cool-down does not carry the old escalation into
    /// the next time-out). The step is then raised to `offence.ladder_step` if below it (the
    /// rung the engine resumed the ladder at). Then `offence.heat` and `offence.strikes` are
    /// added, `offences` counts one more, and an escalating offence advances `escalation_step`
    /// by one.
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

    /// Takes back an offence recorded earlier (an overturned appeal) and returns the history
    /// after it; `None`, changing nothing, for a user not held (never seen, or forgotten).
    /// Atomic on Redis (one script).
    ///
    /// `offence` is the one recorded (its `at_ms` the offence's time): its heat and strikes,
    /// decayed from then by its half-lives, are subtracted from the user's (never below 0),
    /// `offences` counts one fewer and, for an escalating offence, `escalation_step` goes one
    /// rung down (both saturating at 0). `offence.ladder_step` is ignored. The stored time of
    /// the heat and strikes is left as it was, so pardoning never keeps a user longer.
    pub async fn pardon(
        &self,
        channel: &str,
        user_id: &str,
        offence: &Offence,
    ) -> Result<Option<UserHistory>, StateError> {
        match self {
            Self::Memory(memory) => Ok(memory.pardon(channel, user_id, offence)),
            Self::Redis(redis) => redis.pardon(channel, user_id, offence).await,
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

    /// The channel's last [`StateOptions::history_per_channel`] messages from everyone, oldest
    /// first (empty for a channel never seen, or idle for [`StateOptions::idle_ttl`] and
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
