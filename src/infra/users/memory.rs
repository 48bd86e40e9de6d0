//! The in-process backend: sharded maps behind `std::sync::Mutex`es.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use super::{
    ChannelMessage, ChannelWindow, FORGOTTEN_HEAT, FORGOTTEN_STRIKES, MessageBlock, Observation,
    Observer, Offence, RecentMessage, StateOptions, UserHistory, decay, duration_ms, pardoned,
};

/// Users per shard aimed at when choosing the shard count: big enough that per-shard eviction
/// approximates global least-recently-seen order well, small enough that an eviction scan of
/// one shard stays short.
const USERS_PER_SHARD: usize = 8_192;
/// Most user shards: beyond this, more shards no longer reduce contention on 2–8 cores.
const MAX_USER_SHARDS: usize = 64;
/// Channel shards. Channels are few and one busy channel takes one lock however many shards.
const CHANNEL_SHARDS: usize = 8;
/// Messages per block of a channel's ring (see [`ChannelWindow`]): small enough that a window
/// drags along few messages past its end, big enough that a window of 75 holds 5 or 6 blocks.
const BLOCK_SIZE: usize = 16;
/// A shard sweeps out expired users at most this often (by the callers' clock); in between,
/// an expired user still found is treated as new when next seen.
const SWEEP_INTERVAL_MS: i64 = 60_000;

/// User and channel state held in this process.
///
/// Users are spread over shards by a hash of (channel, user); each shard has its own lock,
/// capacity (`max_users / shards`) and eviction. Channel windows live in separate shards,
/// so observing a message takes two short locks, one after the other: each of the user's and
/// the channel's updates is atomic, but the pair is not (unlike Redis, where one script does
/// both), which no rule can notice.
#[derive(Debug)]
pub struct MemoryState {
    config: StateOptions,
    /// `std::sync::Mutex`, not `tokio::sync::Mutex`: every critical section is a few hundred
    /// nanoseconds of map and ring-buffer work that never awaits, so an async mutex would only
    /// add its own bookkeeping (and a heap-allocated waiter under contention) to each of
    /// 100,000 calls a second. Holding a std mutex across an `.await` is what would be wrong,
    /// and no method here is async. Sharding keeps the two cores from queueing on one lock.
    user_shards: Box<[Mutex<UserShard>]>,
    /// Same reasoning as `user_shards`; see there.
    channel_shards: Box<[Mutex<ChannelShard>]>,
    /// Hashes (channel, user) once per call, for both the shard and the shard's table: foldhash,
    /// randomly seeded per process, so chat users cannot aim at one shard or bucket (and a few
    /// nanoseconds instead of SipHash's few dozen).
    hasher: DefaultHashBuilder,
}

impl MemoryState {
    /// Empty state sized by `config`. A `max_users` or `max_channels` of 0 is taken as 1.
    pub fn new(config: StateOptions) -> Self {
        let max_users = config.max_users.max(1);
        let user_shards = (max_users / USERS_PER_SHARD)
            .next_power_of_two()
            .clamp(1, MAX_USER_SHARDS);
        let max_channels = config.max_channels.max(1);
        let channel_shards = if max_channels >= CHANNEL_SHARDS * 64 {
            CHANNEL_SHARDS
        } else {
            1
        };
        Self {
            user_shards: (0..user_shards)
                .map(|_| {
                    Mutex::new(UserShard::new(
                        max_users / user_shards,
                        config.max_user_bytes / user_shards,
                    ))
                })
                .collect(),
            channel_shards: (0..channel_shards)
                .map(|_| {
                    Mutex::new(ChannelShard::new(
                        max_channels / channel_shards,
                        config.max_channel_bytes / channel_shards,
                    ))
                })
                .collect(),
            hasher: DefaultHashBuilder::default(),
            config,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &StateOptions {
        &self.config
    }

    /// See [`super::UserState::observe`].
    pub fn observe(&self, obs: &Observation<'_>) -> (UserHistory, ChannelWindow) {
        // Allocate outside the locks, so the critical sections are only bookkeeping.
        let recent = (self.config.recent_per_user > 0).then(|| {
            Arc::new(RecentMessage {
                message_id: obs.message_id.to_owned(),
                text: super::remembered_text(obs.text).to_owned(),
                at_ms: obs.at_ms,
            })
        });
        let said = (self.config.kept_per_channel() > 0).then(|| ChannelMessage {
            user_id: obs.user_id.to_owned(),
            message_id: obs.message_id.to_owned(),
            text: super::remembered_text(obs.text).to_owned(),
            at_ms: obs.at_ms,
        });

        let hash = self.hash(obs.channel, obs.user_id);
        let history = {
            let mut shard = lock(self.user_shard(hash));
            let history = shard.observe(hash, obs, recent, &self.config, &self.hasher);
            let evicted = shard.evict_over_budget(|slot| slot.is(obs.channel, obs.user_id));
            if evicted > 0 {
                users_in_memory_changed(-(evicted as f64));
            }
            history
        };
        let others = match said {
            Some(said) => {
                lock(self.channel_shard(obs.channel)).observe(obs.channel, said, &self.config)
            }
            None => ChannelWindow::default(),
        };
        (history, others)
    }

    /// See [`super::UserState::record_offence`].
    pub fn record_offence(&self, channel: &str, user_id: &str, offence: &Offence) -> UserHistory {
        let hash = self.hash(channel, user_id);
        let mut shard = lock(self.user_shard(hash));
        let entry = shard.entry(
            hash,
            channel,
            user_id,
            offence.at_ms,
            &self.config,
            &self.hasher,
        );
        entry.record_offence(offence, self.config.cooled_down_heat);
        entry.history()
    }

    /// See [`super::UserState::pardon`].
    pub fn pardon(&self, channel: &str, user_id: &str, offence: &Offence) -> Option<UserHistory> {
        let hash = self.hash(channel, user_id);
        let mut shard = lock(self.user_shard(hash));
        let slot = shard
            .users
            .find_mut(hash, |slot| slot.is(channel, user_id))?;
        // Numbers only: the slot's bytes do not change.
        slot.entry.pardon(offence);
        Some(slot.entry.history())
    }

    /// See [`super::UserState::user`].
    pub fn user(&self, channel: &str, user_id: &str) -> Option<UserHistory> {
        let hash = self.hash(channel, user_id);
        let shard = lock(self.user_shard(hash));
        shard
            .users
            .find(hash, |slot| slot.is(channel, user_id))
            .map(|slot| slot.entry.history())
    }

    /// See [`super::UserState::peek`].
    pub fn peek(&self, channel: &str, user_id: &str) -> (Option<UserHistory>, ChannelWindow) {
        let history = self.user(channel, user_id);
        let window = lock(self.channel_shard(channel))
            .channels
            .get(channel)
            .map(|ring| {
                let end = ring.next_index;
                let start = end.saturating_sub(self.config.recent_per_channel as u64);
                ring.window(start, end, Observer::User(user_id.into()))
            })
            .unwrap_or_default();
        (history, window)
    }

    /// See [`super::UserState::channel_history`].
    pub fn channel_history(&self, channel: &str) -> Vec<ChannelMessage> {
        let window = {
            let shard = lock(self.channel_shard(channel));
            let Some(ring) = shard.channels.get(channel) else {
                return Vec::new();
            };
            let end = ring.next_index;
            let start = end.saturating_sub(self.config.kept_per_channel() as u64);
            ring.window(start, end, Observer::Nobody)
        };
        // The window shares the ring's blocks: the strings are copied after the lock is let go.
        window.to_vec()
    }

    /// Users held now (per channel and user id).
    pub fn len(&self) -> usize {
        self.user_shards
            .iter()
            .map(|shard| lock(shard).users.len())
            .sum()
    }

    /// Whether no user is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by users and by channel histories, as counted against
    /// [`StateOptions::max_user_bytes`] and [`StateOptions::max_channel_bytes`].
    pub fn bytes(&self) -> (usize, usize) {
        let users = self.user_shards.iter().map(|shard| lock(shard).bytes).sum();
        let channels = self
            .channel_shards
            .iter()
            .map(|shard| lock(shard).bytes)
            .sum();
        (users, channels)
    }

    /// Forgets every expired user and idle channel as of `now_ms` now (observing does this by
    /// itself, a shard at a time, every minute of the callers' clock) and returns how many
    /// users were forgotten.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let idle_ms = self.config.idle_ttl_ms();
        for shard in &self.channel_shards {
            lock(shard).sweep(now_ms, idle_ms);
        }
        let forgotten: usize = self
            .user_shards
            .iter()
            .map(|shard| lock(shard).sweep(now_ms, idle_ms))
            .sum();
        if forgotten > 0 {
            users_in_memory_changed(-(forgotten as f64));
        }
        forgotten
    }

    /// Forgets everything (used by [`super::SharedState`] when Redis is back).
    pub fn clear(&self) {
        for shard in &self.user_shards {
            let mut shard = lock(shard);
            users_in_memory_changed(-(shard.users.len() as f64));
            shard.users = HashTable::new();
            shard.bytes = 0;
        }
        for shard in &self.channel_shards {
            let mut shard = lock(shard);
            shard.channels = HashMap::new();
            shard.bytes = 0;
        }
    }

    fn hash(&self, channel: &str, user_id: &str) -> u64 {
        self.hasher.hash_one((channel, user_id))
    }

    fn user_shard(&self, hash: u64) -> &Mutex<UserShard> {
        // Bits 32.. pick the shard: the table inside uses the low bits for the bucket and the
        // top seven for its tags, and those must still vary within a shard. The shard count is
        // a power of two.
        &self.user_shards[(hash >> 32) as usize & (self.user_shards.len() - 1)]
    }

    fn channel_shard(&self, channel: &str) -> &Mutex<ChannelShard> {
        let hash = self.hasher.hash_one(channel);
        &self.channel_shards[hash as usize % self.channel_shards.len()]
    }
}

/// Locks a shard, ignoring poisoning: the code under these locks does not panic, and if it ever
/// did, serving slightly inconsistent counters beats failing every later message.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A ring buffer of fixed capacity: pushing onto a full one drops the oldest element.
#[derive(Debug)]
struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T: Clone> Ring<T> {
    fn new(capacity: usize) -> Self {
        // Allocated lazily, then exactly once at full capacity: growth by doubling would
        // overshoot (16 slots for 10) on every user.
        Self {
            items: VecDeque::new(),
            capacity,
        }
    }

    fn push(&mut self, item: T) {
        if self.capacity == 0 {
            return;
        }
        if self.items.len() == self.capacity {
            self.items.pop_front();
        } else if self.items.capacity() == 0 {
            self.items.reserve_exact(self.capacity);
        }
        self.items.push_back(item);
    }

    fn to_vec(&self) -> Vec<T> {
        self.items.iter().cloned().collect()
    }
}

/// One shard of users.
#[derive(Debug)]
struct UserShard {
    /// Keyed by the hash of (channel, user), so one hash serves shard and table.
    users: HashTable<UserSlot>,
    /// Most users this shard holds.
    capacity: usize,
    /// Bytes its users hold (the sum of [`UserSlot::bytes`]), kept up to date by every change.
    bytes: usize,
    /// Most bytes this shard holds.
    max_bytes: usize,
    /// Callers' time at which this shard next sweeps out expired users.
    next_sweep_ms: i64,
}

/// What a hash table slot and an `Arc`'s counts cost beyond the values they hold, in bytes:
/// part of the estimate that byte budgets are kept by (allocator rounding is not counted).
const TABLE_SLOT_OVERHEAD: usize = 8;
const ARC_COUNTS: usize = 16;

/// A user's entry with its key.
#[derive(Debug)]
struct UserSlot {
    /// The channel followed by the user id, in one allocation.
    key: Box<str>,
    /// Where the channel ends in `key`.
    channel_len: usize,
    entry: UserEntry,
}

impl UserSlot {
    fn channel(&self) -> &str {
        &self.key[..self.channel_len]
    }

    fn user_id(&self) -> &str {
        &self.key[self.channel_len..]
    }

    fn is(&self, channel: &str, user_id: &str) -> bool {
        self.channel_len == channel.len()
            && self.key.len() == channel.len() + user_id.len()
            && self.key.starts_with(channel)
            && self.key.ends_with(user_id)
    }

    /// The bytes this user holds: the slot, its key and its entry's buffers.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + TABLE_SLOT_OVERHEAD + self.key.len() + self.entry.bytes()
    }
}

impl UserShard {
    fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            users: HashTable::new(),
            capacity: capacity.max(1),
            bytes: 0,
            max_bytes,
            next_sweep_ms: i64::MIN,
        }
    }

    fn observe(
        &mut self,
        hash: u64,
        obs: &Observation<'_>,
        recent: Option<Arc<RecentMessage>>,
        config: &StateOptions,
        hasher: &DefaultHashBuilder,
    ) -> UserHistory {
        let entry = self.entry(hash, obs.channel, obs.user_id, obs.at_ms, config, hasher);
        let before = entry.history();
        let bytes_before = entry.bytes();
        entry.observe(obs.at_ms, recent);
        let bytes_after = entry.bytes();
        self.bytes = self.bytes + bytes_after - bytes_before;
        before
    }

    /// Evicts the least recently seen users (never one that `keep` matches: the user just
    /// observed) until the shard is an eighth under its byte budget, if it is over it; returns
    /// how many went. Freeing a batch, as [`Self::evict_least_recently_seen`] does for counts,
    /// keeps the sort's cost to a few entry visits per message however long a flood lasts.
    fn evict_over_budget(&mut self, keep: impl Fn(&UserSlot) -> bool) -> usize {
        if self.bytes <= self.max_bytes {
            return 0;
        }
        let target = self.max_bytes - self.max_bytes / 8;
        let mut candidates: Vec<(i64, usize)> = self
            .users
            .iter()
            .filter(|slot| !keep(slot))
            .map(|slot| (slot.entry.last_active_ms(), slot.bytes()))
            .collect();
        candidates.sort_unstable_by_key(|&(at, _)| at);
        let mut excess = self.bytes.saturating_sub(target);
        let mut cutoff = None;
        let mut at_cutoff = 0usize;
        for &(at, bytes) in &candidates {
            if excess == 0 {
                break;
            }
            if cutoff == Some(at) {
                at_cutoff += 1;
            } else {
                cutoff = Some(at);
                at_cutoff = 1;
            }
            excess = excess.saturating_sub(bytes);
        }
        let Some(cutoff) = cutoff else {
            return 0;
        };
        let before = self.users.len();
        let mut freed = 0;
        self.users.retain(|slot| {
            let at = slot.entry.last_active_ms();
            let evict = !keep(slot)
                && (at < cutoff
                    || (at == cutoff && at_cutoff > 0 && {
                        at_cutoff -= 1;
                        true
                    }));
            if evict {
                freed += slot.bytes();
            }
            !evict
        });
        self.bytes -= freed;
        before - self.users.len()
    }

    /// The user's entry, created if new (evicting if full) or reset if expired by `now_ms`.
    fn entry(
        &mut self,
        hash: u64,
        channel: &str,
        user_id: &str,
        now_ms: i64,
        config: &StateOptions,
        hasher: &DefaultHashBuilder,
    ) -> &mut UserEntry {
        let idle_ms = config.idle_ttl_ms();
        let held_before = self.users.len();
        if now_ms >= self.next_sweep_ms {
            self.next_sweep_ms = now_ms.saturating_add(SWEEP_INTERVAL_MS);
            self.sweep(now_ms, idle_ms);
        }
        let is_user = |slot: &UserSlot| slot.is(channel, user_id);
        if self.users.len() >= self.capacity && self.users.find(hash, is_user).is_none() {
            self.evict_least_recently_seen(now_ms, idle_ms);
        }
        let removed = held_before - self.users.len();
        let rehash = |slot: &UserSlot| hasher.hash_one((slot.channel(), slot.user_id()));
        let slot = match self.users.entry(hash, is_user, rehash) {
            Entry::Occupied(occupied) => {
                if removed > 0 {
                    users_in_memory_changed(-(removed as f64));
                }
                occupied.into_mut()
            }
            Entry::Vacant(vacant) => {
                if removed != 1 {
                    users_in_memory_changed(1.0 - removed as f64);
                }
                let mut key = String::with_capacity(channel.len() + user_id.len());
                key.push_str(channel);
                key.push_str(user_id);
                let slot = vacant
                    .insert(UserSlot {
                        key: key.into_boxed_str(),
                        channel_len: channel.len(),
                        entry: UserEntry::new(config),
                    })
                    .into_mut();
                self.bytes += slot.bytes();
                slot
            }
        };
        if slot.entry.is_expired(now_ms, idle_ms) {
            let old = slot.entry.bytes();
            slot.entry = UserEntry::new(config);
            self.bytes = self.bytes + slot.entry.bytes() - old;
        }
        &mut slot.entry
    }

    /// Removes users expired by `now_ms`; returns how many.
    fn sweep(&mut self, now_ms: i64, idle_ms: i64) -> usize {
        let before = self.users.len();
        let mut freed = 0;
        self.users.retain(|slot| {
            let expired = slot.entry.is_expired(now_ms, idle_ms);
            if expired {
                freed += slot.bytes();
            }
            !expired
        });
        self.bytes -= freed;
        before - self.users.len()
    }

    /// Makes room for a batch of new users (an eighth of the shard): first drops the expired,
    /// then, if that freed too little, the least recently active, in one scan. Freeing a batch
    /// keeps the amortised cost per new user to a few entry visits; a flood of new users (a
    /// raid, say) would otherwise scan the whole shard for each of them.
    fn evict_least_recently_seen(&mut self, now_ms: i64, idle_ms: i64) {
        let batch = (self.capacity / 8).max(1);
        let target = self.capacity - batch;
        self.sweep(now_ms, idle_ms);
        if self.users.len() <= target {
            return;
        }
        let mut activity: Vec<i64> = self
            .users
            .iter()
            .map(|slot| slot.entry.last_active_ms())
            .collect();
        let evict = self.users.len() - target;
        let (_, cutoff, _) = activity.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        // Everyone older than the cutoff goes, and of those exactly at it, as many as needed.
        let older = activity.iter().filter(|&&at| at < cutoff).count();
        let mut at_cutoff_to_evict = evict - older;
        let mut freed = 0;
        self.users.retain(|slot| {
            let at = slot.entry.last_active_ms();
            let keep = if at < cutoff {
                false
            } else if at == cutoff && at_cutoff_to_evict > 0 {
                at_cutoff_to_evict -= 1;
                false
            } else {
                true
            };
            if !keep {
                freed += slot.bytes();
            }
            keep
        });
        self.bytes -= freed;
    }
}

impl Drop for MemoryState {
    fn drop(&mut self) {
        users_in_memory_changed(-(self.len() as f64));
    }
}

/// Moves the `modbot_users_in_memory` gauge by `delta` (users added minus users forgotten, by
/// every in-memory state of the process: the server has one).
fn users_in_memory_changed(delta: f64) {
    metrics::gauge!("modbot_users_in_memory").increment(delta);
}

/// One user in one channel.
#[derive(Debug)]
struct UserEntry {
    first_seen_ms: Option<i64>,
    last_seen_ms: Option<i64>,
    messages: u64,
    recent: Ring<Arc<RecentMessage>>,
    times: Ring<i64>,
    heat: f64,
    heat_at_ms: i64,
    /// The latest offence's half-life, to know when the heat is forgotten.
    heat_half_life_ms: i64,
    /// Stored at `heat_at_ms`, like the heat.
    strikes: f64,
    /// The latest offence's memory half-life, to know when the strikes are forgotten.
    memory_half_life_ms: i64,
    offences: u32,
    escalation_step: u32,
    last_offence_ms: Option<i64>,
}

impl UserEntry {
    fn new(config: &StateOptions) -> Self {
        Self {
            first_seen_ms: None,
            last_seen_ms: None,
            messages: 0,
            recent: Ring::new(config.recent_per_user),
            times: Ring::new(config.times_per_user),
            heat: 0.0,
            heat_at_ms: 0,
            heat_half_life_ms: 0,
            strikes: 0.0,
            memory_half_life_ms: 0,
            offences: 0,
            escalation_step: 0,
            last_offence_ms: None,
        }
    }

    fn history(&self) -> UserHistory {
        UserHistory {
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            messages: self.messages,
            recent: self.recent.to_vec(),
            message_times_ms: self.times.to_vec(),
            heat: self.heat,
            heat_at_ms: self.heat_at_ms,
            strikes: self.strikes,
            offences: self.offences,
            escalation_step: self.escalation_step,
            last_offence_ms: self.last_offence_ms,
        }
    }

    fn observe(&mut self, at_ms: i64, recent: Option<Arc<RecentMessage>>) {
        self.first_seen_ms = Some(self.first_seen_ms.map_or(at_ms, |first| first.min(at_ms)));
        self.last_seen_ms = Some(self.last_seen_ms.map_or(at_ms, |last| last.max(at_ms)));
        self.messages += 1;
        if let Some(recent) = recent {
            self.recent.push(recent);
        }
        self.times.push(at_ms);
    }

    fn record_offence(&mut self, offence: &Offence, cooled_down_heat: f64) {
        let half_life_ms = duration_ms(offence.half_life);
        let memory_half_life_ms = duration_ms(offence.memory_half_life);
        let decayed = decay(self.heat, self.heat_at_ms, offence.at_ms, half_life_ms);
        let strikes = decay(
            self.strikes,
            self.heat_at_ms,
            offence.at_ms,
            memory_half_life_ms,
        );
        if decayed < cooled_down_heat {
            self.escalation_step = 0;
        }
        self.escalation_step = self.escalation_step.max(offence.ladder_step);
        self.heat = decayed + offence.added_heat();
        self.strikes = strikes + offence.added_strikes();
        self.heat_at_ms = self.heat_at_ms.max(offence.at_ms);
        self.heat_half_life_ms = half_life_ms;
        self.memory_half_life_ms = memory_half_life_ms;
        self.offences = self.offences.saturating_add(1);
        if offence.escalates {
            self.escalation_step = self.escalation_step.saturating_add(1);
        }
        self.last_offence_ms = Some(
            self.last_offence_ms
                .map_or(offence.at_ms, |last| last.max(offence.at_ms)),
        );
    }

    /// Takes `offence` back (see [`super::UserState::pardon`]).
    fn pardon(&mut self, offence: &Offence) {
        self.heat = pardoned(
            self.heat,
            self.heat_at_ms,
            offence.added_heat(),
            offence.at_ms,
            duration_ms(offence.half_life),
        );
        self.strikes = pardoned(
            self.strikes,
            self.heat_at_ms,
            offence.added_strikes(),
            offence.at_ms,
            duration_ms(offence.memory_half_life),
        );
        self.offences = self.offences.saturating_sub(1);
        if offence.escalates {
            self.escalation_step = self.escalation_step.saturating_sub(1);
        }
    }

    /// The bytes its buffers hold: the rings' slots, and each recent message's id and text.
    fn bytes(&self) -> usize {
        let recent: usize = self
            .recent
            .items
            .iter()
            .map(|m| ARC_COUNTS + recent_message_bytes(m))
            .sum();
        recent
            + self.recent.items.capacity() * std::mem::size_of::<Arc<RecentMessage>>()
            + self.times.items.capacity() * std::mem::size_of::<i64>()
    }

    /// The latest message or heat update.
    fn last_active_ms(&self) -> i64 {
        self.last_seen_ms.unwrap_or(i64::MIN).max(self.heat_at_ms)
    }

    /// Idle for the TTL, cooled below [`FORGOTTEN_HEAT`] and with strikes below
    /// [`FORGOTTEN_STRIKES`] (the Redis scripts apply the same rule).
    fn is_expired(&self, now_ms: i64, idle_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_active_ms()) >= idle_ms
            && decay(self.heat, self.heat_at_ms, now_ms, self.heat_half_life_ms) < FORGOTTEN_HEAT
            && decay(
                self.strikes,
                self.heat_at_ms,
                now_ms,
                self.memory_half_life_ms,
            ) < FORGOTTEN_STRIKES
    }
}

/// One shard of channels' message rings.
#[derive(Debug)]
struct ChannelShard {
    channels: HashMap<Box<str>, ChannelRing>,
    /// Most channels this shard holds.
    capacity: usize,
    /// Bytes its channels hold (names, blocks and messages), kept up to date by every change.
    bytes: usize,
    /// Most bytes this shard holds.
    max_bytes: usize,
    /// Callers' time at which this shard next drops idle channels.
    next_sweep_ms: i64,
}

/// A channel's last messages from everyone (its history, of which the copy-paste window is
/// the newest part), in append-only blocks shared with the windows handed out (see
/// [`ChannelWindow`]).
#[derive(Debug)]
struct ChannelRing {
    /// The blocks still holding messages of the history; `blocks[0]` starts at `first_index`.
    blocks: VecDeque<MessageBlock>,
    /// Channel-wide index of `blocks[0]`'s first slot.
    first_index: u64,
    /// Index the next message gets.
    next_index: u64,
    /// Latest message time.
    last_ms: i64,
    /// Bytes its blocks and their messages hold.
    bytes: usize,
}

impl ChannelShard {
    fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            channels: HashMap::new(),
            capacity: capacity.max(1),
            bytes: 0,
            max_bytes,
            next_sweep_ms: i64::MIN,
        }
    }

    /// Adds `said` to the channel's ring and returns the window of the messages before it.
    fn observe(
        &mut self,
        channel: &str,
        said: ChannelMessage,
        config: &StateOptions,
    ) -> ChannelWindow {
        if said.at_ms >= self.next_sweep_ms {
            self.next_sweep_ms = said.at_ms.saturating_add(SWEEP_INTERVAL_MS);
            self.sweep(said.at_ms, config.idle_ttl_ms());
        }
        let is_new = !self.channels.contains_key(channel);
        if is_new && self.channels.len() >= self.capacity {
            self.evict_least_recently_active(None);
        }
        if is_new {
            // The ring starts out holding its own entry's bytes, so forgetting it frees them.
            self.bytes += channel_entry_bytes(channel);
        }
        let ring = self
            .channels
            .entry(channel.into())
            .or_insert_with(|| ChannelRing {
                blocks: VecDeque::new(),
                first_index: 0,
                next_index: 0,
                last_ms: i64::MIN,
                bytes: channel_entry_bytes(channel),
            });
        let before = ring.bytes;
        let window = ring.push(
            said,
            config.recent_per_channel as u64,
            config.kept_per_channel() as u64,
        );
        self.bytes = self.bytes + ring.bytes - before;
        // Over the byte budget, the least recently active other channels go, one at a time
        // (each holds at most `kept_per_channel` messages, so this is a handful of them).
        while self.bytes > self.max_bytes && self.channels.len() > 1 {
            self.evict_least_recently_active(Some(channel));
        }
        window
    }

    /// Forgets the channel with the oldest last message, other than `keep`.
    fn evict_least_recently_active(&mut self, keep: Option<&str>) {
        let oldest = self
            .channels
            .iter()
            .filter(|(name, _)| Some(&***name) != keep)
            .min_by_key(|(_, ring)| ring.last_ms)
            .map(|(name, _)| name.clone());
        if let Some(oldest) = oldest
            && let Some(ring) = self.channels.remove(&oldest)
        {
            self.bytes -= ring.bytes;
        }
    }

    fn sweep(&mut self, now_ms: i64, idle_ms: i64) {
        let mut freed = 0;
        self.channels.retain(|_, ring| {
            let keep = now_ms.saturating_sub(ring.last_ms) < idle_ms;
            if !keep {
                freed += ring.bytes;
            }
            keep
        });
        self.bytes -= freed;
    }
}

impl ChannelRing {
    /// Appends `said`, keeps the last `keep` messages (`keep` ≥ `capacity`), and returns the
    /// window of the `capacity` messages before it (with `said` itself at the window's end, so
    /// the window can skip its user's messages).
    fn push(&mut self, said: ChannelMessage, capacity: u64, keep: u64) -> ChannelWindow {
        const BLOCK: u64 = BLOCK_SIZE as u64;
        let index = self.next_index;
        self.last_ms = self.last_ms.max(said.at_ms);
        let offset = index - self.first_index;
        let block = (offset / BLOCK) as usize;
        if block == self.blocks.len() {
            self.blocks
                .push_back((0..BLOCK_SIZE).map(|_| OnceLock::new()).collect());
            self.bytes += BLOCK_BYTES;
        }
        self.bytes += channel_message_bytes(&said);
        // A fresh slot: `set` cannot find it full.
        let _ = self.blocks[block][(offset % BLOCK) as usize].set(said);
        self.next_index += 1;

        // The window of the messages before this one, with this one at its end; taken before
        // stale blocks are dropped below.
        let window = self.window(index.saturating_sub(capacity), index, Observer::AuthorOfEnd);

        let keep_from = self.next_index.saturating_sub(keep.max(capacity));
        while self.first_index + BLOCK <= keep_from {
            if let Some(dropped) = self.blocks.pop_front() {
                let messages: usize = dropped
                    .iter()
                    .filter_map(OnceLock::get)
                    .map(channel_message_bytes)
                    .sum();
                self.bytes -= BLOCK_BYTES + messages;
            }
            self.first_index += BLOCK;
        }
        window
    }

    /// A window of messages `start..end`, with message `end` too if there is one (the observed
    /// message, for [`Observer::AuthorOfEnd`]).
    fn window(&self, start: u64, end: u64, observer: Observer) -> ChannelWindow {
        const BLOCK: u64 = BLOCK_SIZE as u64;
        let start = start.max(self.first_index);
        let first_block = ((start - self.first_index) / BLOCK) as usize;
        let last_block = ((end - self.first_index) / BLOCK) as usize;
        let blocks_end = (last_block + 1).min(self.blocks.len()).max(first_block);
        ChannelWindow {
            blocks: self
                .blocks
                .range(first_block..blocks_end)
                .cloned()
                .collect(),
            block_size: BLOCK,
            first_index: self.first_index + first_block as u64 * BLOCK,
            start,
            end,
            observer,
        }
    }
}

/// The bytes a recent message's strings hold (its `Arc` counted by the caller).
fn recent_message_bytes(message: &RecentMessage) -> usize {
    std::mem::size_of::<RecentMessage>() + message.message_id.capacity() + message.text.capacity()
}

/// The bytes a channel message's strings hold (its slot is part of [`BLOCK_BYTES`]).
fn channel_message_bytes(message: &ChannelMessage) -> usize {
    message.user_id.capacity() + message.message_id.capacity() + message.text.capacity()
}

/// A block of a channel's ring: its slots, the `Arc`'s counts and the ring's pointer to it.
const BLOCK_BYTES: usize = BLOCK_SIZE * std::mem::size_of::<OnceLock<ChannelMessage>>()
    + ARC_COUNTS
    + std::mem::size_of::<MessageBlock>();

/// A channel's entry in its shard's map before any block: the name and the ring.
fn channel_entry_bytes(channel: &str) -> usize {
    channel.len() + std::mem::size_of::<ChannelRing>() + std::mem::size_of::<Box<str>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes every shard holds, counted from scratch.
    fn recount(state: &MemoryState) -> (usize, usize) {
        let users = state
            .user_shards
            .iter()
            .map(|shard| lock(shard).users.iter().map(UserSlot::bytes).sum::<usize>())
            .sum();
        let channels = state
            .channel_shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .channels
                    .values()
                    .map(|ring| ring.bytes)
                    .sum::<usize>()
            })
            .sum();
        (users, channels)
    }

    #[test]
    fn byte_counts_follow_every_change() {
        let config = StateOptions {
            recent_per_user: 3,
            recent_per_channel: 5,
            history_per_channel: 40,
            max_users: 50,
            max_channels: 4,
            max_user_bytes: 64 << 10,
            max_channel_bytes: 32 << 10,
            idle_ttl: std::time::Duration::from_secs(60),
            ..StateOptions::default()
        };
        let state = MemoryState::new(config.clone());
        let mut rng = crate::corpus::Rng(7);
        let mut now = 1_700_000_000_000i64;
        for i in 0..5_000 {
            // Users come and go (count and byte evictions), texts short and long, channels
            // more than fit, and now and then a jump in time (expiry, sweeps).
            now += if i % 997 == 0 { 120_000 } else { 10 };
            let user = format!("u{}", rng.below(200));
            let channel = format!("c{}", rng.below(7));
            let text = "é".repeat(rng.below(900));
            let id = format!("m{i}");
            let obs = Observation {
                channel: &channel,
                user_id: &user,
                message_id: &id,
                text: &text,
                at_ms: now,
            };
            let _ = state.observe(&obs);
            if i % 13 == 0 {
                let offence = crate::domain::Offence {
                    heat: 1.0,
                    half_life: std::time::Duration::from_secs(600),
                    strikes: 1.0,
                    memory_half_life: std::time::Duration::from_secs(600),
                    escalates: true,
                    at_ms: now,
                    ..crate::domain::Offence::default()
                };
                let _ = state.record_offence(&channel, &user, &offence);
            }
            if i % 1_000 == 999 {
                state.sweep(now);
            }
            assert_eq!(state.bytes(), recount(&state), "after message {i}");
            let (users, channels) = state.bytes();
            assert!(users <= config.max_user_bytes && channels <= config.max_channel_bytes);
        }
        state.clear();
        assert_eq!(state.bytes(), (0, 0));
    }
}
