//! Degraded mode: Redis when it answers, per-replica memory when it does not.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::Degraded;

use super::{
    ChannelMessage, ChannelWindow, MemoryState, Observation, Offence, RedisState, StateError,
    StateOptions, UserHistory,
};

/// A state answer and whether it came from the per-replica fallback instead of the configured
/// backend (`DEGRADED_COMPONENT` for the verdict).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// The answer.
    pub value: T,
    /// Redis failed (now or recently) and the answer is from this replica's memory.
    pub degraded: bool,
}

/// The user state the server holds: in-process, or Redis with a per-replica fallback.
///
/// With Redis, a call that fails (error or [`StateOptions::redis_timeout`]) is answered from a
/// local [`MemoryState`] instead, marked `degraded`, and Redis is then left alone for
/// [`StateOptions::redis_retry_interval`]: calls in between go straight to memory, so an outage
/// costs no time per message. After the interval one call tries Redis again (the others keep
/// using memory meanwhile); when it answers, every call goes to Redis again.
///
/// The consistency trade-off, chosen so that moderation never stops: while degraded, each
/// replica sees only the messages and offences it handled itself, starting from nothing, so
/// repetition, copy-paste, rate and escalation work from a partial, per-replica view (a repeat
/// offender's earlier heat is not known; a raid spread over replicas is seen in parts). What
/// happened during the outage is not written back to Redis when it returns; the local state is
/// then dropped, and Redis has whatever it had before the outage. A message observed by Redis
/// whose answer was lost (a timeout after the script ran) is counted there and in memory.
#[derive(Debug)]
pub struct SharedState {
    backend: Holder,
}

#[derive(Debug)]
enum Holder {
    Memory(MemoryState),
    Redis(Box<WithFallback>),
}

/// Redis and what stands in for it.
#[derive(Debug)]
struct WithFallback {
    redis: RedisState,
    fallback: MemoryState,
    /// `std::sync::Mutex`: held only to read or swap a few words, never across `.await`.
    health: Mutex<Health>,
    retry_interval: Duration,
}

/// Whether Redis is being used.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    /// Calls go to Redis.
    Up,
    /// Redis failed; calls go to memory until `retry_at`, when one call tries Redis.
    Down { retry_at: Instant },
}

impl SharedState {
    /// In-process state; never degraded.
    pub fn memory(config: StateOptions) -> Self {
        Self {
            backend: Holder::Memory(MemoryState::new(config)),
        }
    }

    /// Redis state with a per-replica fallback. Fails only for an invalid URL: if Redis does not
    /// answer now, this starts degraded (and logs a warning) and keeps trying every
    /// [`StateOptions::redis_retry_interval`].
    pub async fn redis(
        url: &str,
        config: StateOptions,
        key_prefix: &str,
    ) -> Result<Self, StateError> {
        let redis = RedisState::connect_lazily(url, config.clone(), key_prefix)?;
        let health = match redis.ping().await {
            Ok(()) => Health::Up,
            Err(error) => {
                tracing::warn!(
                    %error,
                    "user state: Redis is not answering; starting degraded with per-replica state"
                );
                Health::Down {
                    retry_at: Instant::now() + config.redis_retry_interval,
                }
            }
        };
        Ok(Self {
            backend: Holder::Redis(Box::new(WithFallback {
                redis,
                retry_interval: config.redis_retry_interval,
                fallback: MemoryState::new(config),
                health: Mutex::new(health),
            })),
        })
    }

    /// See [`super::UserState::observe`].
    pub async fn observe(&self, obs: &Observation<'_>) -> Answer<(UserHistory, ChannelWindow)> {
        self.call(|redis| redis.observe(obs), |memory| memory.observe(obs))
            .await
    }

    /// See [`super::UserState::record_offence`].
    pub async fn record_offence(
        &self,
        channel: &str,
        user_id: &str,
        offence: &Offence,
    ) -> Answer<UserHistory> {
        self.call(
            |redis| redis.record_offence(channel, user_id, offence),
            |memory| memory.record_offence(channel, user_id, offence),
        )
        .await
    }

    /// See [`super::UserState::pardon`]. While degraded, only this replica's memory is
    /// pardoned: Redis keeps the offence.
    pub async fn pardon(
        &self,
        channel: &str,
        user_id: &str,
        offence: &Offence,
    ) -> Answer<Option<UserHistory>> {
        self.call(
            |redis| redis.pardon(channel, user_id, offence),
            |memory| memory.pardon(channel, user_id, offence),
        )
        .await
    }

    /// See [`super::UserState::peek`].
    pub async fn peek(
        &self,
        channel: &str,
        user_id: &str,
    ) -> Answer<(Option<UserHistory>, ChannelWindow)> {
        self.call(
            |redis| redis.peek(channel, user_id),
            |memory| memory.peek(channel, user_id),
        )
        .await
    }

    /// See [`super::UserState::user`].
    pub async fn user(&self, channel: &str, user_id: &str) -> Answer<Option<UserHistory>> {
        self.call(
            |redis| redis.user(channel, user_id),
            |memory| memory.user(channel, user_id),
        )
        .await
    }

    /// See [`super::UserState::channel_history`]. While degraded, this replica's own history
    /// since the outage began.
    pub async fn channel_history(&self, channel: &str) -> Answer<Vec<ChannelMessage>> {
        self.call(
            |redis| redis.channel_history(channel),
            |memory| memory.channel_history(channel),
        )
        .await
    }

    /// `"memory"` or `"redis"`: the configured backend, degraded or not.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Holder::Memory(_) => "memory",
            Holder::Redis(_) => "redis",
        }
    }

    /// Whether calls are being answered from the fallback now.
    pub fn is_degraded(&self) -> bool {
        match &self.backend {
            Holder::Memory(_) => false,
            Holder::Redis(with) => {
                *with.health.lock().unwrap_or_else(PoisonError::into_inner) != Health::Up
            }
        }
    }

    async fn call<'a, T, Remote>(
        &'a self,
        remote: impl FnOnce(&'a RedisState) -> Remote,
        local: impl FnOnce(&MemoryState) -> T,
    ) -> Answer<T>
    where
        Remote: Future<Output = Result<T, StateError>>,
    {
        let (redis, fallback, health, retry_interval) = match &self.backend {
            Holder::Memory(memory) => {
                return Answer {
                    value: local(memory),
                    degraded: false,
                };
            }
            Holder::Redis(with) => (
                &with.redis,
                &with.fallback,
                &with.health,
                with.retry_interval,
            ),
        };
        let lock = || health.lock().unwrap_or_else(PoisonError::into_inner);
        let was_up = {
            let mut health = lock();
            match *health {
                Health::Up => true,
                Health::Down { retry_at } if Instant::now() >= retry_at => {
                    // This call probes; the next probe is due an interval later even if this one
                    // is cancelled, and calls meanwhile keep using memory.
                    *health = Health::Down {
                        retry_at: Instant::now() + retry_interval,
                    };
                    false
                }
                Health::Down { .. } => {
                    drop(health);
                    return Answer {
                        value: local(fallback),
                        degraded: true,
                    };
                }
            }
        };
        match remote(redis).await {
            Ok(value) => {
                if !was_up {
                    let recovered = std::mem::replace(&mut *lock(), Health::Up) != Health::Up;
                    if recovered {
                        crate::telemetry::set_degraded(Degraded::UserState, false);
                        tracing::info!(
                            "user state: Redis answers again; per-replica state dropped, shared state resumed"
                        );
                        fallback.clear();
                    }
                }
                Answer {
                    value,
                    degraded: false,
                }
            }
            Err(error) => {
                let was_down = std::mem::replace(
                    &mut *lock(),
                    Health::Down {
                        retry_at: Instant::now() + retry_interval,
                    },
                ) != Health::Up;
                if was_up && !was_down {
                    crate::telemetry::set_degraded(Degraded::UserState, true);
                    tracing::warn!(
                        %error,
                        retry_in = ?retry_interval,
                        "user state: Redis failed; answering from per-replica state (degraded)"
                    );
                } else {
                    tracing::debug!(%error, "user state: Redis still failing");
                }
                Answer {
                    value: local(fallback),
                    degraded: true,
                }
            }
        }
    }
}
