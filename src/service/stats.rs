//! This replica's decision statistics for `Admin.GetStats`: verdicts by decision, rule and
//! label, latency and degraded components, over recent windows.
//!
//! # What is kept
//!
//! Every verdict is counted once ([`VerdictStats::record`], called by `Classify` and streams after
//! `Verdict::elapsed` is set) into the bucket of the minute it was recorded in. A ring of
//! [`SLOTS`] minute buckets (the current minute and the 60 before it, so that "1h" always
//! covers a whole hour) holds the recent past; when a slot is reused for a new minute, the
//! minute it held is folded into the *archive*, the totals since the replica started. So every
//! verdict is in exactly one place: a live bucket or the archive, and the totals since start
//! are exact however long the replica runs.
//!
//! Within a bucket, counts are kept per channel, for at most [`MAX_CHANNELS`] channels; the
//! verdicts of further channels count under a separate "other" entry, which the all-channels
//! view includes (so it is always complete) but which no channel filter matches. The archive
//! has the same bound.
//!
//! Each entry counts messages, verdicts by [`Decision::as_str`], reasons by rule id
//! ([`ReasonSource::Rule`]) and by model label ([`ReasonSource::Model`]), a latency histogram
//! ([`BINS`] log-spaced bins from 10 µs to 60 s, each 2^(1/10) ≈ 7.2% wide, so a percentile
//! read from a bin's geometric middle is within 3.6% of the true value, plus the exact minimum
//! and maximum), verdicts degraded by component ([`Degraded::as_str`]) and, per component, the
//! seconds of the minute in which at least one verdict was degraded (a 60-bit mask, so a busy
//! second counts once; masks of different channels are merged with OR, so a second degraded
//! in two channels counts once in the all-channels view too).
//!
//! # Cost
//!
//! [`VerdictStats::record`] is on the hot path (100,000 verdicts a second through streams): it takes
//! one short lock, looks up one channel and each reason's rule id or label in hash maps that
//! keep their keys from minute to minute (a reused slot keeps the channels, rules and labels
//! that were active in it, zeroed), and increments counters. It allocates only for a channel,
//! rule or label new to its slot. Reading ([`VerdictStats::report`]) merges the live buckets and the
//! archive under the same lock; it is rare (an admin's call) and its cost grows with the
//! number of channels.
//!
//! # Clock
//!
//! Every time comes from the caller: [`VerdictStats::record_at`] and [`VerdictStats::report_at`] take `now`,
//! and [`VerdictStats::record`] / [`VerdictStats::report`] pass the system clock. Tests move the clock instead
//! of sleeping.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;

use crate::domain::{Decision, Degraded, ReasonSource, Verdict};

/// Minute buckets kept: the current minute and the 60 before it.
pub const SLOTS: usize = 61;
/// Most channels counted separately per minute bucket (and in the archive); the rest count
/// under "other".
pub const MAX_CHANNELS: usize = 1024;
/// Bins of the latency histogram: one below 10 µs, [`LOG_BINS`] log-spaced ones up to 60 s,
/// and one from 60 s up.
pub const BINS: usize = LOG_BINS + 2;
/// Log-spaced latency bins between 10 µs and 60 s: log2(60 s / 10 µs) = 22.5 octaves of
/// [`BINS_PER_OCTAVE`].
const LOG_BINS: usize = 226;
/// Bins per doubling of latency: each bin is 2^(1/10) ≈ 7.2% wide.
const BINS_PER_OCTAVE: f64 = 10.0;
/// Lower edge of the first log-spaced bin, in nanoseconds.
const MIN_LATENCY_NS: u64 = 10_000;
/// Lower edge of the overflow bin, in nanoseconds.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Every decision, in the order of [`Decision::index`].
const DECISIONS: [Decision; 6] = Decision::ALL;
/// Every degraded component, in the order of [`component_index`].
const COMPONENTS: [Degraded; 4] = [
    Degraded::Model,
    Degraded::UserState,
    Degraded::Store,
    Degraded::Decision,
];

/// The fixed windows of a report, shortest first: name and whole minutes before the current
/// one.
const WINDOWS: [(&str, i64); 3] = [("1m", 1), ("5m", 5), ("1h", 60)];

/// Counts of this replica's verdicts, by minute and channel. Shared by every caller behind the
/// `Services`.
#[derive(Debug)]
pub struct VerdictStats {
    /// When counting started.
    started_at: SystemTime,
    /// Which replica counts: host name and process id.
    replica: String,
    /// `std::sync::Mutex`: every critical section is a few counter increments (or, for a
    /// report, a merge) that never awaits, so an async mutex would only add its own cost to
    /// each of 100,000 verdicts a second.
    inner: Mutex<Inner>,
}

impl Default for VerdictStats {
    fn default() -> Self {
        Self::new()
    }
}

impl VerdictStats {
    /// An empty recorder, counting from now.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// An empty recorder that counts from `started_at` (tests pass their own clock).
    pub fn starting_at(started_at: SystemTime) -> Self {
        Self {
            started_at,
            replica: replica_name(),
            inner: Mutex::new(Inner {
                slots: (0..SLOTS).map(|_| Bucket::default()).collect(),
                archive: Archive::default(),
            }),
        }
    }

    /// When counting started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Which replica counts: its host name and process id (`host/pid`), since the counts are
    /// this process's own.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Counts one verdict (its `elapsed` already set), now.
    pub fn record(&self, verdict: &Verdict) {
        self.record_at(verdict, SystemTime::now());
    }

    /// Counts one verdict as recorded at `now`.
    pub fn record_at(&self, verdict: &Verdict, now: SystemTime) {
        let (minute, second) = minute_and_second(now);
        let latency_ns = u64::try_from(verdict.elapsed.as_nanos()).unwrap_or(u64::MAX);
        // The logarithm outside the lock.
        let bin = bin_of(latency_ns);
        let sample = Sample {
            verdict,
            bin,
            latency_ns,
            second,
        };
        let mut inner = lock(&self.inner);
        let Inner { slots, archive } = &mut *inner;
        let bucket = &mut slots[slot_of(minute)];
        if bucket.minute < minute {
            bucket.retire_into(archive);
            bucket.minute = minute;
        }
        if bucket.minute == minute {
            bucket.counts_for(&verdict.channel).add(&sample);
        } else {
            // The clock went back further than the ring reaches and the slot now holds a later
            // minute: the verdict goes straight into the totals.
            let mut counts = Counts::default();
            counts.add(&sample);
            archive.absorb(&verdict.channel, &counts);
        }
    }

    /// The statistics of one channel (or all, `None`) now: the fixed windows, and the
    /// period since `since` (or since the start).
    pub fn report(&self, channel: Option<&str>, since: Option<SystemTime>) -> Report {
        self.report_at(channel, since, SystemTime::now())
    }

    /// The statistics as of `now`.
    ///
    /// Windows: "1m", "5m" and "1h" are the current minute so far and the 1, 5 or 60 whole
    /// minutes before it (so each covers at least its name, and at most a minute more; a
    /// window's `length` says exactly how long, and never reaches back before the start).
    /// With `since`, a "since" window follows, from the start of the minute `since` falls in;
    /// it reaches back at most as far as the ring does (61 minutes) unless `since` is at or
    /// before the start, when it is the whole time since the start. The report's `period` is
    /// the "since" window, or without `since` the whole time since the start.
    pub fn report_at(
        &self,
        channel: Option<&str>,
        since: Option<SystemTime>,
        now: SystemTime,
    ) -> Report {
        let (now_minute, _) = minute_and_second(now);
        // Each bucket is merged (for the channel, or across channels) under the lock; the
        // windows are added up outside it.
        let (mut buckets, archive) = {
            let inner = lock(&self.inner);
            let buckets: Vec<(i64, Summary)> = inner
                .slots
                .iter()
                .filter(|bucket| bucket.minute != NEVER)
                .map(|bucket| (bucket.minute, bucket.summary(channel)))
                .filter(|(_, summary)| summary.messages > 0)
                .collect();
            (buckets, inner.archive.summary(channel))
        };
        buckets.sort_unstable_by_key(|&(minute, _)| std::cmp::Reverse(minute));

        let since_minutes = |first_minute: i64| {
            let mut total = Summary::default();
            for (_, summary) in buckets.iter().take_while(|(m, _)| *m >= first_minute) {
                total.add(summary);
            }
            total
        };
        let window = |name: &'static str, start: SystemTime, summary: &Summary| {
            let start = start.max(self.started_at);
            summary.window(name, start, now.duration_since(start).unwrap_or_default())
        };
        let mut windows: Vec<Window> = WINDOWS
            .iter()
            .map(|&(name, minutes)| {
                let first = now_minute - minutes;
                window(name, minute_start(first), &since_minutes(first))
            })
            .collect();
        let everything = || {
            let mut total = archive.clone();
            for (_, summary) in &buckets {
                total.add(summary);
            }
            window("since", self.started_at, &total)
        };
        let period = match since {
            Some(since) if since > self.started_at => {
                let (since_minute, _) = minute_and_second(since);
                let first = since_minute.max(now_minute - (SLOTS as i64 - 1));
                let since_window = window("since", minute_start(first), &since_minutes(first));
                windows.push(since_window.clone());
                since_window
            }
            Some(_) => {
                let since_window = everything();
                windows.push(since_window.clone());
                since_window
            }
            None => everything(),
        };
        Report {
            started_at: self.started_at,
            windows,
            period,
        }
    }
}

/// What [`VerdictStats::report`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// When this replica started counting.
    pub started_at: SystemTime,
    /// "1m", "5m", "1h", then "since" when asked for: shortest (fixed) first.
    pub windows: Vec<Window>,
    /// The requested period: the "since" window, or since the start.
    pub period: Window,
}

/// Counts over one stretch of time.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// "1m", "5m", "1h" or "since".
    pub name: &'static str,
    /// Where it starts (the start of a minute, or the start of counting if later).
    pub start: SystemTime,
    /// From `start` to the time of the report.
    pub length: Duration,
    /// Verdicts counted.
    pub messages: u64,
    /// Verdicts by decision name; decisions never made are left out.
    pub decisions: BTreeMap<&'static str, u64>,
    /// Reasons by rule id (enforced and shadow).
    pub rules: BTreeMap<String, u64>,
    /// Reasons by model label.
    pub labels: BTreeMap<String, u64>,
    /// Latency percentiles and maximum (all zero without verdicts).
    pub latency: Latency,
    /// Degraded verdicts by component name.
    pub degraded_verdicts: BTreeMap<&'static str, u64>,
    /// Whole seconds with at least one degraded verdict, by component name.
    pub degraded_time: BTreeMap<&'static str, Duration>,
}

/// Time from receipt to verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The longest.
    pub max: Duration,
}

/// The host name and process id: `/proc/sys/kernel/hostname`, else `$HOSTNAME`, else
/// "unknown".
fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{host}/{}", std::process::id())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters left half-updated by a panic are still better than no statistics.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Unix minute of `time` and the second within it (times before 1970 count as 1970).
fn minute_and_second(time: SystemTime) -> (i64, u32) {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    (secs / 60, (secs % 60) as u32)
}

/// The start of Unix minute `minute`.
fn minute_start(minute: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(minute.max(0)).unwrap_or(0) * 60)
}

fn slot_of(minute: i64) -> usize {
    minute.rem_euclid(SLOTS as i64) as usize
}

fn component_index(component: Degraded) -> usize {
    match component {
        Degraded::Model => 0,
        Degraded::UserState => 1,
        Degraded::Store => 2,
        Degraded::Decision => 3,
    }
}

/// The histogram bin of a latency.
fn bin_of(latency_ns: u64) -> usize {
    if latency_ns < MIN_LATENCY_NS {
        0
    } else if latency_ns >= MAX_LATENCY_NS {
        BINS - 1
    } else {
        let octaves = (latency_ns as f64 / MIN_LATENCY_NS as f64).log2();
        // The float may land a hair past the last log bin right below 60 s.
        1 + ((octaves * BINS_PER_OCTAVE) as usize).min(LOG_BINS - 1)
    }
}

/// The value that stands for log-spaced bin `bin` (`1..=LOG_BINS`): its geometric middle.
fn bin_value_ns(bin: usize) -> f64 {
    MIN_LATENCY_NS as f64 * ((bin as f64 - 0.5) / BINS_PER_OCTAVE).exp2()
}

/// A slot's minute before it is first used.
const NEVER: i64 = i64::MIN;

struct Inner {
    slots: Vec<Bucket>,
    archive: Archive,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field(
                "live_minutes",
                &self.slots.iter().filter(|b| b.minute != NEVER).count(),
            )
            .field("archived_messages", &self.archive.all.messages)
            .finish_non_exhaustive()
    }
}

/// One verdict, with what `record` worked out before taking the lock.
struct Sample<'a> {
    verdict: &'a Verdict,
    bin: usize,
    latency_ns: u64,
    /// Second within the minute, `0..60`.
    second: u32,
}

/// One minute's counts.
struct Bucket {
    /// The Unix minute counted here ([`NEVER`] before first use).
    minute: i64,
    /// By channel, at most [`MAX_CHANNELS`] entries. Entries are kept, zeroed, when the slot is
    /// reused (so a steady channel's key is not allocated again every hour); those that stay
    /// zero are not counted toward the bound and are dropped when room is needed.
    channels: HashMap<String, Counts>,
    /// Entries of `channels` with at least one verdict.
    active: usize,
    /// Channels beyond the bound.
    other: Counts,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            minute: NEVER,
            channels: HashMap::new(),
            active: 0,
            other: Counts::default(),
        }
    }
}

impl Bucket {
    /// The entry `channel`'s verdicts count in: its own, or "other" when the bucket already
    /// counts [`MAX_CHANNELS`] others.
    fn counts_for(&mut self, channel: &str) -> &mut Counts {
        if self.active < MAX_CHANNELS {
            if self.channels.len() >= MAX_CHANNELS && !self.channels.contains_key(channel) {
                // Room is taken by channels that were active an hour ago but not now.
                self.channels.retain(|_, counts| counts.messages > 0);
            }
            let counts = self.channels.entry_ref(channel).or_default();
            if counts.messages == 0 {
                self.active += 1;
            }
            return counts;
        }
        match self.channels.get_mut(channel) {
            Some(counts) if counts.messages > 0 => counts,
            _ => &mut self.other,
        }
    }

    /// Folds this minute into the archive and zeroes it for reuse.
    fn retire_into(&mut self, archive: &mut Archive) {
        if self.minute == NEVER {
            return;
        }
        if self.active > 0 || self.other.messages > 0 {
            archive.all.add(&self.summary(None));
            for (channel, counts) in &self.channels {
                if counts.messages > 0 {
                    archive.absorb_channel(channel, counts);
                }
            }
            archive.other.add_counts(&self.other);
        }
        self.channels.retain(|_, counts| counts.messages > 0);
        for counts in self.channels.values_mut() {
            counts.reset();
        }
        self.other.reset();
        self.active = 0;
    }

    /// The counts of one channel, or of all (with "other"), as a summary.
    fn summary(&self, channel: Option<&str>) -> Summary {
        let mut summary = Summary::default();
        match channel {
            Some(channel) => {
                if let Some(counts) = self.channels.get(channel) {
                    summary.add_counts(counts);
                }
            }
            None => {
                let mut seconds = self.other.degraded_seconds;
                summary.add_counts_without_seconds(&self.other);
                for counts in self.channels.values().filter(|c| c.messages > 0) {
                    summary.add_counts_without_seconds(counts);
                    for (all, mask) in seconds.iter_mut().zip(counts.degraded_seconds) {
                        *all |= mask;
                    }
                }
                for (total, mask) in summary.degraded_seconds.iter_mut().zip(seconds) {
                    *total += u64::from(mask.count_ones());
                }
            }
        }
        summary
    }
}

/// One channel's (or "other"'s) counts in one minute.
struct Counts {
    messages: u64,
    decisions: [u64; DECISIONS.len()],
    /// Reasons by rule id. Kept, zeroed, when the slot is reused (see [`Bucket::channels`]).
    rules: HashMap<String, u64>,
    /// Reasons by model label, likewise.
    labels: HashMap<String, u64>,
    /// Verdicts per latency bin. `u32`: a minute of one channel at 100,000 verdicts a second
    /// is 6 million, far from the limit, and it halves the bucket's size.
    latency: [u32; BINS],
    min_ns: u64,
    max_ns: u64,
    degraded: [u64; COMPONENTS.len()],
    /// Per component, bit `s` set: a verdict in second `s` of the minute was degraded.
    degraded_seconds: [u64; COMPONENTS.len()],
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            messages: 0,
            decisions: [0; DECISIONS.len()],
            rules: HashMap::new(),
            labels: HashMap::new(),
            latency: [0; BINS],
            min_ns: u64::MAX,
            max_ns: 0,
            degraded: [0; COMPONENTS.len()],
            degraded_seconds: [0; COMPONENTS.len()],
        }
    }
}

impl Counts {
    fn add(&mut self, sample: &Sample<'_>) {
        let verdict = sample.verdict;
        self.messages += 1;
        self.decisions[Decision::index(verdict.decision)] += 1;
        for reason in &verdict.reasons {
            let (map, key) = match reason.source {
                ReasonSource::Rule => (&mut self.rules, &reason.rule_id),
                ReasonSource::Model => (&mut self.labels, &reason.label),
                ReasonSource::Escalation | ReasonSource::Policy => continue,
            };
            if !key.is_empty() {
                *map.entry_ref(key.as_str()).or_default() += 1;
            }
        }
        self.latency[sample.bin] += 1;
        self.min_ns = self.min_ns.min(sample.latency_ns);
        self.max_ns = self.max_ns.max(sample.latency_ns);
        // A component listed twice in one verdict still makes one degraded verdict.
        let mut seen = 0_u8;
        for &component in &verdict.degraded {
            let i = component_index(component);
            if seen & (1 << i) == 0 {
                seen |= 1 << i;
                self.degraded[i] += 1;
                self.degraded_seconds[i] |= 1 << sample.second;
            }
        }
    }

    /// Zeroes every counter, keeping the rule and label keys that were counted.
    fn reset(&mut self) {
        self.messages = 0;
        self.decisions = [0; DECISIONS.len()];
        for map in [&mut self.rules, &mut self.labels] {
            map.retain(|_, n| *n > 0);
            map.values_mut().for_each(|n| *n = 0);
        }
        self.latency = [0; BINS];
        self.min_ns = u64::MAX;
        self.max_ns = 0;
        self.degraded = [0; COMPONENTS.len()];
        self.degraded_seconds = [0; COMPONENTS.len()];
    }
}

/// The totals of minutes no longer in the ring.
#[derive(Default)]
struct Archive {
    /// By channel, at most [`MAX_CHANNELS`].
    channels: HashMap<String, Summary>,
    /// Channels beyond the bound (of a bucket or of the archive).
    other: Summary,
    /// Everything, with degraded seconds merged across channels minute by minute (which the
    /// per-channel sums cannot give).
    all: Summary,
}

impl Archive {
    /// Adds one verdict's counts that missed the ring.
    fn absorb(&mut self, channel: &str, counts: &Counts) {
        self.all.add_counts(counts);
        self.absorb_channel(channel, counts);
    }

    /// Adds a channel's counts to its own entry (or "other"), not to `all`.
    fn absorb_channel(&mut self, channel: &str, counts: &Counts) {
        if let Some(summary) = self.channels.get_mut(channel) {
            summary.add_counts(counts);
        } else if self.channels.len() < MAX_CHANNELS {
            let mut summary = Summary::default();
            summary.add_counts(counts);
            self.channels.insert(channel.to_owned(), summary);
        } else {
            self.other.add_counts(counts);
        }
    }

    fn summary(&self, channel: Option<&str>) -> Summary {
        match channel {
            Some(channel) => self.channels.get(channel).cloned().unwrap_or_default(),
            None => self.all.clone(),
        }
    }
}

/// Counts added up over minutes and channels.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    messages: u64,
    decisions: [u64; DECISIONS.len()],
    rules: BTreeMap<String, u64>,
    labels: BTreeMap<String, u64>,
    latency: Vec<u64>,
    min_ns: u64,
    max_ns: u64,
    degraded: [u64; COMPONENTS.len()],
    /// Whole seconds with a degraded verdict, per component.
    degraded_seconds: [u64; COMPONENTS.len()],
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            messages: 0,
            decisions: [0; DECISIONS.len()],
            rules: BTreeMap::new(),
            labels: BTreeMap::new(),
            latency: vec![0; BINS],
            min_ns: u64::MAX,
            max_ns: 0,
            degraded: [0; COMPONENTS.len()],
            degraded_seconds: [0; COMPONENTS.len()],
        }
    }
}

impl Summary {
    /// Adds one entry's counts, its degraded seconds included.
    fn add_counts(&mut self, counts: &Counts) {
        self.add_counts_without_seconds(counts);
        for (total, mask) in self
            .degraded_seconds
            .iter_mut()
            .zip(counts.degraded_seconds)
        {
            *total += u64::from(mask.count_ones());
        }
    }

    /// Adds one entry's counts, leaving the degraded seconds to the caller (who merges the
    /// masks of several channels first).
    fn add_counts_without_seconds(&mut self, counts: &Counts) {
        if counts.messages == 0 {
            return;
        }
        self.messages += counts.messages;
        add_all(&mut self.decisions, &counts.decisions);
        for (target, source) in [
            (&mut self.rules, &counts.rules),
            (&mut self.labels, &counts.labels),
        ] {
            for (key, &n) in source.iter().filter(|(_, n)| **n > 0) {
                *target.entry(key.clone()).or_default() += n;
            }
        }
        for (total, &n) in self.latency.iter_mut().zip(&counts.latency) {
            *total += u64::from(n);
        }
        self.min_ns = self.min_ns.min(counts.min_ns);
        self.max_ns = self.max_ns.max(counts.max_ns);
        add_all(&mut self.degraded, &counts.degraded);
    }

    fn add(&mut self, other: &Summary) {
        self.messages += other.messages;
        add_all(&mut self.decisions, &other.decisions);
        for (target, source) in [
            (&mut self.rules, &other.rules),
            (&mut self.labels, &other.labels),
        ] {
            for (key, &n) in source {
                *target.entry(key.clone()).or_default() += n;
            }
        }
        add_all(&mut self.latency, &other.latency);
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        add_all(&mut self.degraded, &other.degraded);
        add_all(&mut self.degraded_seconds, &other.degraded_seconds);
    }

    /// The latency at quantile `q` in `(0, 1]`: the value of the bin holding the verdict of
    /// rank ⌈q·n⌉, clamped to the exact minimum and maximum.
    fn quantile(&self, q: f64) -> Duration {
        if self.messages == 0 {
            return Duration::ZERO;
        }
        let total: u64 = self.latency.iter().sum();
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let bin = self
            .latency
            .iter()
            .position(|&n| {
                seen += n;
                seen >= rank
            })
            .unwrap_or(BINS - 1);
        // Below 10 µs and from 60 s up the bins have no useful middle: the exact minimum and
        // maximum stand for them.
        let ns = match bin {
            0 => self.min_ns,
            b if b == BINS - 1 => self.max_ns,
            b => (bin_value_ns(b).round() as u64).clamp(self.min_ns, self.max_ns),
        };
        Duration::from_nanos(ns)
    }

    fn window(&self, name: &'static str, start: SystemTime, length: Duration) -> Window {
        let nonzero = |n: &&u64| **n > 0;
        Window {
            name,
            start,
            length,
            messages: self.messages,
            decisions: DECISIONS
                .iter()
                .zip(&self.decisions)
                .filter(|(_, n)| nonzero(n))
                .map(|(d, &n)| (d.as_str(), n))
                .collect(),
            rules: self.rules.clone(),
            labels: self.labels.clone(),
            latency: Latency {
                p50: self.quantile(0.50),
                p90: self.quantile(0.90),
                p99: self.quantile(0.99),
                max: Duration::from_nanos(if self.messages == 0 { 0 } else { self.max_ns }),
            },
            degraded_verdicts: COMPONENTS
                .iter()
                .zip(&self.degraded)
                .filter(|(_, n)| nonzero(n))
                .map(|(c, &n)| (c.as_str(), n))
                .collect(),
            degraded_time: COMPONENTS
                .iter()
                .zip(&self.degraded_seconds)
                .filter(|(_, n)| nonzero(n))
                .map(|(c, &n)| (c.as_str(), Duration::from_secs(n)))
                .collect(),
        }
    }
}

fn add_all(totals: &mut [u64], values: &[u64]) {
    for (total, value) in totals.iter_mut().zip(values) {
        *total += value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Evidence, Reason};

    /// A minute boundary (2023-11-14T22:13:00Z), so offsets read as minute:second.
    const T0_SECS: u64 = 1_699_999_980;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T0_SECS)
    }

    /// `minutes` minutes and `seconds` seconds after [`t0`].
    fn at(minutes: u64, seconds: u64) -> SystemTime {
        t0() + Duration::from_secs(minutes * 60 + seconds)
    }

    fn reason(source: ReasonSource, id: &str) -> Reason {
        Reason {
            source,
            rule_id: if source == ReasonSource::Rule {
                id.to_owned()
            } else {
                String::new()
            },
            label: id.to_owned(),
            decision: Decision::Hide,
            duration: None,
            score: 0.0,
            threshold: 0.0,
            shadow: false,
            harmful: false,
            evidence: Evidence::default(),
            description: String::new(),
        }
    }

    fn verdict(channel: &str, decision: Decision, reasons: Vec<Reason>) -> Verdict {
        Verdict {
            message_id: "m".to_owned(),
            channel: channel.to_owned(),
            user_id: "u".to_owned(),
            decision,
            duration: None,
            reasons,
            enforced: true,
            shadow_decision: Decision::Allow,
            model_version: String::new(),
            elapsed: Duration::from_micros(500),
            degraded: Vec::new(),
            scores: BTreeMap::new(),
            normalized_text: String::new(),
            action_id: None,
            review_id: None,
            trial: None,
        }
    }

    fn allow(channel: &str) -> Verdict {
        verdict(channel, Decision::Allow, Vec::new())
    }

    /// Messages per window name, periods last.
    fn messages(report: &Report) -> Vec<(&'static str, u64)> {
        report
            .windows
            .iter()
            .map(|w| (w.name, w.messages))
            .chain([("period", report.period.messages)])
            .collect()
    }

    #[test]
    fn counts_decisions_rules_and_labels() {
        let stats = VerdictStats::starting_at(t0());
        stats.record_at(&allow("dgg"), at(0, 1));
        let scam = || reason(ReasonSource::Rule, "scam-giveaway");
        stats.record_at(
            &verdict(
                "dgg",
                Decision::Warn,
                vec![reason(ReasonSource::Escalation, "escalation"), scam()],
            ),
            at(0, 2),
        );
        stats.record_at(
            &verdict(
                "dgg",
                Decision::Timeout,
                vec![
                    scam(),
                    reason(ReasonSource::Rule, "caps"),
                    reason(ReasonSource::Model, "toxicity/insult"),
                ],
            ),
            at(0, 3),
        );
        let report = stats.report_at(None, None, at(0, 10));
        let period = &report.period;
        assert_eq!(period.messages, 3);
        assert_eq!(
            period.decisions,
            BTreeMap::from([("allow", 1), ("timeout", 1), ("warn", 1)])
        );
        assert_eq!(
            period.rules,
            BTreeMap::from([("caps".to_owned(), 1), ("scam-giveaway".to_owned(), 2)]),
            "escalation reasons are not rules"
        );
        assert_eq!(
            period.labels,
            BTreeMap::from([("toxicity/insult".to_owned(), 1)])
        );
        assert!(period.degraded_verdicts.is_empty() && period.degraded_time.is_empty());
        assert_eq!(period.latency.max, Duration::from_micros(500));
        assert_eq!(report.started_at, t0());
        let names: Vec<_> = report.windows.iter().map(|w| w.name).collect();
        assert_eq!(names, ["1m", "5m", "1h"], "no since window unless asked");
        for window in &report.windows {
            assert_eq!(
                window,
                &Window {
                    name: window.name,
                    ..period.clone()
                }
            );
        }
    }

    #[test]
    fn windows_roll_over_as_the_clock_moves() {
        let stats = VerdictStats::starting_at(t0());
        for second in [10, 20, 30] {
            stats.record_at(&allow("dgg"), at(0, second));
        }
        let report = stats.report_at(None, None, at(0, 40));
        assert_eq!(
            messages(&report),
            [("1m", 3), ("5m", 3), ("1h", 3), ("period", 3)]
        );
        for window in &report.windows {
            assert_eq!(
                window.start,
                t0(),
                "{}: never before the start",
                window.name
            );
            assert_eq!(window.length, Duration::from_secs(40), "{}", window.name);
        }

        // Minute 1 still sees minute 0 in "1m"; minute 2 no longer does.
        let report = stats.report_at(None, None, at(1, 59));
        assert_eq!(messages(&report)[0], ("1m", 3));
        let report = stats.report_at(None, None, at(2, 5));
        assert_eq!(
            messages(&report),
            [("1m", 0), ("5m", 3), ("1h", 3), ("period", 3)]
        );
        assert_eq!(report.windows[0].start, at(1, 0));
        assert_eq!(report.windows[0].length, Duration::from_secs(65));

        stats.record_at(&allow("dgg"), at(2, 5));
        let report = stats.report_at(None, None, at(7, 0));
        assert_eq!(
            messages(&report),
            [("1m", 0), ("5m", 1), ("1h", 4), ("period", 4)]
        );

        // An hour on, minute 0 has left "1h" but is still in the total, without being
        // archived yet (nothing has reused its slot).
        let report = stats.report_at(None, None, at(61, 0));
        assert_eq!(
            messages(&report),
            [("1m", 0), ("5m", 0), ("1h", 1), ("period", 4)]
        );
        assert_eq!(report.windows[2].start, at(1, 0));
        assert_eq!(report.windows[2].length, Duration::from_secs(3600));

        // Minute 61 reuses minute 0's slot: minute 0 goes to the archive, the total stays exact.
        stats.record_at(&allow("dgg"), at(61, 0));
        let report = stats.report_at(None, None, at(61, 30));
        assert_eq!(
            messages(&report),
            [("1m", 1), ("5m", 1), ("1h", 2), ("period", 5)]
        );

        // Hours later only the total remembers.
        for minute in 0..SLOTS as u64 {
            stats.record_at(&allow("other"), at(600 + minute, 0));
        }
        let report = stats.report_at(Some("dgg"), None, at(700, 0));
        assert_eq!(
            messages(&report),
            [("1m", 0), ("5m", 0), ("1h", 0), ("period", 5)]
        );
        let report = stats.report_at(None, None, at(660, 30));
        assert_eq!(
            messages(&report),
            [("1m", 2), ("5m", 6), ("1h", 61), ("period", 66)]
        );
    }

    #[test]
    fn since_reaches_back_as_far_as_kept() {
        let start = at(0, 0);
        let stats = VerdictStats::starting_at(start);
        stats.record_at(&allow("dgg"), at(10, 5));
        stats.record_at(&allow("dgg"), at(10, 50));
        stats.record_at(&allow("dgg"), at(12, 0));
        let now = at(13, 0);

        // From the start of the minute `since` falls in.
        let report = stats.report_at(None, Some(at(10, 30)), now);
        let names: Vec<_> = report.windows.iter().map(|w| w.name).collect();
        assert_eq!(names, ["1m", "5m", "1h", "since"]);
        assert_eq!(report.period, report.windows[3]);
        assert_eq!(report.period.messages, 3);
        assert_eq!(report.period.start, at(10, 0));
        assert_eq!(report.period.length, Duration::from_secs(180));
        let report = stats.report_at(None, Some(at(11, 0)), now);
        assert_eq!(
            (report.period.messages, report.period.start),
            (1, at(11, 0))
        );

        // At or before the start: everything, from the start.
        for since in [start, start - Duration::from_secs(3600)] {
            let report = stats.report_at(None, Some(since), now);
            assert_eq!((report.period.messages, report.period.start), (3, start));
        }

        // Later, `since` older than the ring reaches: counted from the ring's oldest minute,
        // and the period says so.
        stats.record_at(&allow("dgg"), at(100, 0));
        let report = stats.report_at(None, Some(at(5, 0)), at(100, 10));
        assert_eq!(report.period.start, at(40, 0));
        assert_eq!(report.period.messages, 1);
        let report = stats.report_at(None, None, at(100, 10));
        assert_eq!((report.period.messages, report.period.start), (4, start));
    }

    #[test]
    fn a_channel_filter_counts_only_that_channel() {
        let stats = VerdictStats::starting_at(t0());
        stats.record_at(&allow("a"), at(0, 1));
        stats.record_at(
            &verdict(
                "b",
                Decision::Hide,
                vec![reason(ReasonSource::Rule, "caps")],
            ),
            at(0, 2),
        );
        stats.record_at(&allow("b"), at(3, 0));
        let now = at(3, 1);
        let a = stats.report_at(Some("a"), None, now).period;
        assert_eq!((a.messages, a.rules.len()), (1, 0));
        let b = stats.report_at(Some("b"), None, now);
        assert_eq!(b.period.messages, 2);
        assert_eq!(
            b.period.decisions,
            BTreeMap::from([("allow", 1), ("hide", 1)])
        );
        assert_eq!(b.period.rules, BTreeMap::from([("caps".to_owned(), 1)]));
        assert_eq!(b.windows[0].messages, 1);
        assert_eq!(stats.report_at(None, None, now).period.messages, 3);
        assert_eq!(
            stats.report_at(Some("nowhere"), None, now).period.messages,
            0
        );
        assert_eq!(
            stats.report_at(Some("nowhere"), None, now).period.latency,
            Latency::default()
        );
    }

    #[test]
    fn channels_beyond_the_bound_count_as_other_in_the_all_channels_view() {
        let stats = VerdictStats::starting_at(t0());
        let extra = 5;
        for c in 0..MAX_CHANNELS + extra {
            stats.record_at(&allow(&format!("c{c}")), at(0, 1));
        }
        // A channel counted separately keeps counting; the later ones do not get in.
        stats.record_at(&allow("c0"), at(0, 2));
        let now = at(0, 3);
        let all = stats.report_at(None, None, now).period;
        assert_eq!(all.messages, (MAX_CHANNELS + extra + 1) as u64);
        assert_eq!(stats.report_at(Some("c0"), None, now).period.messages, 2);
        let last_counted = format!("c{}", MAX_CHANNELS - 1);
        assert_eq!(
            stats
                .report_at(Some(&last_counted), None, now)
                .period
                .messages,
            1
        );
        let first_other = format!("c{MAX_CHANNELS}");
        assert_eq!(
            stats
                .report_at(Some(&first_other), None, now)
                .period
                .messages,
            0
        );

        // The next minute is a bucket of its own with its own room.
        stats.record_at(&allow(&first_other), at(1, 0));
        assert_eq!(
            stats
                .report_at(Some(&first_other), None, at(1, 1))
                .period
                .messages,
            1
        );

        // When the slot is reused an hour later, the old minute's channels (kept zeroed for
        // reuse) make room for new ones; the archive keeps the first MAX_CHANNELS channels.
        for c in 0..MAX_CHANNELS {
            stats.record_at(&allow(&format!("new{c}")), at(61, 0));
        }
        let now = at(61, 1);
        let last_new = format!("new{}", MAX_CHANNELS - 1);
        let report = stats.report_at(Some(&last_new), None, now);
        assert_eq!(report.windows[0].messages, 1, "counted in the live minute");
        assert_eq!(
            stats.report_at(Some("c0"), None, now).period.messages,
            2,
            "archived"
        );
        let all = stats.report_at(None, None, now);
        assert_eq!(
            all.period.messages,
            (2 * MAX_CHANNELS + extra + 2) as u64,
            "nothing lost"
        );
        assert_eq!(all.windows[0].messages, MAX_CHANNELS as u64);
    }

    /// Latencies `value(i)` for `i` in `0..n`, recorded in one minute.
    fn record_latencies(stats: &VerdictStats, n: u32, value: impl Fn(u32) -> Duration) {
        for i in 0..n {
            let mut v = allow("dgg");
            v.elapsed = value(i);
            stats.record_at(&v, at(0, 1));
        }
    }

    fn assert_close(name: &str, actual: Duration, expected: Duration, tolerance: f64) {
        let (a, e) = (actual.as_secs_f64(), expected.as_secs_f64());
        assert!(
            (a - e).abs() <= tolerance * e,
            "{name}: {actual:?}, expected {expected:?} within {:.0}%",
            tolerance * 100.0
        );
    }

    #[test]
    fn percentiles_of_known_distributions_are_within_a_few_percent() {
        // Uniform from 100 µs to 1 s.
        let stats = VerdictStats::starting_at(t0());
        record_latencies(&stats, 10_000, |i| {
            Duration::from_micros(100 * u64::from(i + 1))
        });
        let latency = stats.report_at(None, None, at(0, 2)).period.latency;
        assert_close("p50", latency.p50, Duration::from_millis(500), 0.036);
        assert_close("p90", latency.p90, Duration::from_millis(900), 0.036);
        assert_close("p99", latency.p99, Duration::from_millis(990), 0.036);
        assert_eq!(latency.max, Duration::from_secs(1), "the maximum is exact");

        // Exponential with a mean of 2 ms (quantile q at -2 ms * ln(1 - q)).
        let stats = VerdictStats::starting_at(t0());
        let n = 20_000;
        record_latencies(&stats, n, |i| {
            let q = (f64::from(i) + 0.5) / f64::from(n);
            Duration::from_secs_f64(-0.002 * (1.0 - q).ln())
        });
        let latency = stats.report_at(None, None, at(0, 2)).period.latency;
        for (name, actual, q) in [
            ("p50", latency.p50, 0.5),
            ("p90", latency.p90, 0.9),
            ("p99", latency.p99, 0.99),
        ] {
            let expected = Duration::from_secs_f64(-0.002 * (1.0_f64 - q).ln());
            assert_close(name, actual, expected, 0.04);
        }

        // Outside the histogram's range, below 10 µs and from 60 s up, the exact minimum and
        // maximum stand in.
        let stats = VerdictStats::starting_at(t0());
        record_latencies(&stats, 100, |i| {
            if i < 98 {
                Duration::from_micros(3)
            } else {
                Duration::from_secs(90)
            }
        });
        let latency = stats.report_at(None, None, at(0, 2)).period.latency;
        assert_eq!(latency.p50, Duration::from_micros(3));
        assert_eq!(latency.p99, Duration::from_secs(90));
        assert_eq!(latency.max, Duration::from_secs(90));
    }

    #[test]
    fn bins_are_log_spaced_and_cover_the_range() {
        assert_eq!(bin_of(0), 0);
        assert_eq!(bin_of(MIN_LATENCY_NS - 1), 0);
        assert_eq!(bin_of(MIN_LATENCY_NS), 1);
        assert_eq!(bin_of(MAX_LATENCY_NS - 1), BINS - 2);
        assert_eq!(bin_of(MAX_LATENCY_NS), BINS - 1);
        assert_eq!(bin_of(u64::MAX), BINS - 1);
        // Doubling a latency moves it BINS_PER_OCTAVE bins up.
        assert_eq!(bin_of(2_000_000) - bin_of(1_000_000), 10);
        let mut previous = 0;
        for ns in (MIN_LATENCY_NS..MAX_LATENCY_NS).step_by(9_999_991) {
            let bin = bin_of(ns);
            assert!(bin >= previous, "bins grow with latency");
            let value = bin_value_ns(bin);
            assert!(
                (value - ns as f64).abs() <= 0.036 * ns as f64,
                "{ns} ns is in bin {bin} worth {value}"
            );
            previous = bin;
        }
    }

    #[test]
    fn degraded_seconds_count_once_per_second() {
        let stats = VerdictStats::starting_at(t0());
        let degraded = |channel: &str, components: &[Degraded]| {
            let mut v = allow(channel);
            v.degraded = components.to_vec();
            v
        };
        // Channel a: five model-degraded verdicts in second 3, two in second 4.
        for _ in 0..5 {
            stats.record_at(&degraded("a", &[Degraded::Model]), at(0, 3));
        }
        for _ in 0..2 {
            stats.record_at(
                &degraded("a", &[Degraded::Model, Degraded::Model]),
                at(0, 4),
            );
        }
        // Channel b: second 3 again (the same second in the all-channels view), and the store.
        stats.record_at(
            &degraded("b", &[Degraded::Model, Degraded::Store]),
            at(0, 3),
        );
        stats.record_at(&allow("b"), at(0, 5));
        // The next minute: second 3 of another minute is another second.
        stats.record_at(&degraded("a", &[Degraded::Model]), at(1, 3));

        let check = |report: &Report, model_verdicts, model_secs, store| {
            let period = &report.period;
            let mut verdicts = BTreeMap::from([("model", model_verdicts)]);
            let mut time = BTreeMap::from([("model", Duration::from_secs(model_secs))]);
            if store {
                verdicts.insert("store", 1);
                time.insert("store", Duration::from_secs(1));
            }
            assert_eq!(period.degraded_verdicts, verdicts);
            assert_eq!(period.degraded_time, time);
        };
        let now = at(1, 10);
        check(&stats.report_at(None, None, now), 9, 3, true);
        check(&stats.report_at(Some("a"), None, now), 8, 3, false);
        check(&stats.report_at(Some("b"), None, now), 1, 1, true);

        // Still so once both minutes are archived (their slots reused).
        stats.record_at(&allow("c"), at(61, 0));
        stats.record_at(&allow("c"), at(62, 0));
        let now = at(62, 10);
        check(&stats.report_at(None, None, now), 9, 3, true);
        check(&stats.report_at(Some("a"), None, now), 8, 3, false);
        let report = stats.report_at(None, None, now);
        assert!(report.windows[0].degraded_time.is_empty(), "not recently");
    }

    #[test]
    fn a_clock_gone_back_past_the_ring_still_counts_in_the_total() {
        let stats = VerdictStats::starting_at(t0());
        // 122 minutes later uses the same slot as minute 0.
        stats.record_at(&allow("dgg"), at(122, 0));
        stats.record_at(&allow("dgg"), at(0, 0));
        let report = stats.report_at(Some("dgg"), None, at(122, 1));
        assert_eq!(
            messages(&report),
            [("1m", 1), ("5m", 1), ("1h", 1), ("period", 2)]
        );
        assert_eq!(stats.report_at(None, None, at(122, 1)).period.messages, 2);
    }

    #[test]
    fn the_replica_is_named_by_host_and_process() {
        let stats = VerdictStats::new();
        let (host, pid) = stats.replica().rsplit_once('/').expect("host/pid");
        assert!(!host.is_empty());
        assert_eq!(pid, std::process::id().to_string());
    }
}
