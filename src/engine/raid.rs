//! Raid detection: a surge of joins followed by near-identical messages from new users, or a
//! copy-paste burst across many new users, puts a channel in *raid mode* for a while.
//!
//! [`RaidWatch`] is one channel's short memory: the times of recent joins and the recent
//! lines of new users (users first seen less than [`RaidPolicy::new_user`] ago), each with its
//! sorted bigrams. A raid starts when, within [`RaidPolicy::window`], enough distinct new users
//! post lines at least [`RaidPolicy::similarity`] alike: [`RaidPolicy::surge_users`] of them
//! after a surge of [`RaidPolicy::join_surge`] joins, [`RaidPolicy::burst_users`] without one.
//! Its message (the line that tipped it) is its *sample*; every later new user's line like the
//! sample is a *copy* and keeps the raid going. Raid mode ends by itself
//! [`RaidPolicy::duration`] after the last copy ([`RaidWatch::expire`]).
//!
//! While it lasts the decision engine is stricter (see [`crate::engine::decision`]): a new
//! user's copy gets [`RaidPolicy::action`], a new user's link is held for review
//! ([`RaidPolicy::hold_links`]), and the model labels' thresholds drop by
//! [`RaidPolicy::threshold_drop`].
//!
//! Architecture Invariant: pure, like every engine: times arrive as arguments. Memory is
//! bounded whatever the input: at most [`RaidPolicy::join_surge`] join times and
//! [`MAX_LINES`] lines per channel.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::engine::rules::RaidPolicy;
use crate::engine::rules::similarity::{Profile, dice};

/// Most new users' lines a channel remembers (within the window).
pub const MAX_LINES: usize = 128;
/// Most characters of a raid's sample kept (for moderators and for comparing copies).
pub const SAMPLE_CHARS: usize = 200;
/// Most distinct raiders counted by id; beyond it the count goes on without ids.
const MAX_RAIDER_IDS: usize = 1024;

/// One raid, as moderators are told of it. Cheap to clone (every message in raid mode
/// carries one to the engine): its texts are shared.
#[derive(Debug, Clone, PartialEq)]
pub struct Raid {
    /// When it started, Unix milliseconds on the state clock.
    pub started_ms: i64,
    /// When raid mode ends unless another copy comes.
    pub until_ms: i64,
    /// Why it started, in words.
    pub trigger: Arc<str>,
    /// The line that tipped it, normalised, at most [`SAMPLE_CHARS`] characters.
    pub sample: Arc<str>,
    /// Distinct new users whose lines were copies of it so far.
    pub raiders: u32,
    /// Joins within the window when it started.
    pub joins: u32,
}

/// A raid going on, with what the watch needs to recognise its copies.
#[derive(Debug, Clone)]
struct Ongoing {
    raid: Raid,
    sample_bigrams: Vec<u64>,
    /// The raiders counted so far, up to [`MAX_RAIDER_IDS`].
    raider_ids: HashSet<String>,
}

impl Ongoing {
    fn count_raider(&mut self, user_id: &str) {
        if self.raider_ids.contains(user_id) {
            return;
        }
        if self.raider_ids.len() < MAX_RAIDER_IDS {
            self.raider_ids.insert(user_id.to_owned());
        }
        self.raid.raiders = self.raid.raiders.saturating_add(1);
    }
}

/// What a channel's raid watch made of one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// The raid the channel is in, if raid mode is on (after this message).
    pub raid: Option<Raid>,
    /// The message is a new user's copy of the raid's message.
    pub copy: bool,
    /// This message started the raid.
    pub started: bool,
}

#[derive(Debug, Clone)]
struct Line {
    user_id: String,
    bigrams: Vec<u64>,
    at_ms: i64,
}

/// One channel's raid memory.
#[derive(Debug, Clone, Default)]
pub struct RaidWatch {
    joins: VecDeque<i64>,
    surge_at_ms: Option<i64>,
    lines: VecDeque<Line>,
    raid: Option<Ongoing>,
}

impl RaidWatch {
    /// A user joined the channel at `at_ms`.
    pub fn joined(&mut self, policy: &RaidPolicy, at_ms: i64) {
        if !policy.enabled || policy.join_surge == 0 {
            return;
        }
        self.forget(policy, at_ms);
        self.joins.push_back(at_ms);
        while self.joins.len() > policy.join_surge as usize {
            self.joins.pop_front();
        }
        if self.joins.len() >= policy.join_surge as usize {
            self.surge_at_ms = Some(at_ms);
        }
    }

    /// A message at `at_ms` by `user_id` (new or not), its normalised `text`: whether it is
    /// part of a raid, and whether it started one.
    pub fn message(
        &mut self,
        policy: &RaidPolicy,
        user_id: &str,
        new_user: bool,
        text: &str,
        at_ms: i64,
    ) -> Seen {
        if !policy.enabled {
            return Seen::default();
        }
        self.forget(policy, at_ms);
        let long_enough = text.chars().count() >= policy.min_length as usize;
        if !new_user || !long_enough {
            return Seen {
                raid: self.active(at_ms).cloned(),
                ..Seen::default()
            };
        }
        let bigrams = Profile::new(text).into_bigrams();
        let until_ms = at_ms.saturating_add(millis(policy.duration));
        if let Some(ongoing) = self.raid.as_mut()
            && dice(&ongoing.sample_bigrams, &bigrams) >= policy.similarity
        {
            ongoing.raid.until_ms = ongoing.raid.until_ms.max(until_ms);
            ongoing.count_raider(user_id);
            return Seen {
                raid: Some(ongoing.raid.clone()),
                copy: true,
                started: false,
            };
        }
        let mut alike: Vec<&str> = Vec::new();
        // Lengths alone bound the similarity: most lines are skipped before any merge.
        let reachable = |other: usize| {
            let (a, b) = (bigrams.len(), other);
            (2 * a.min(b)) as f64 >= policy.similarity * (a + b) as f64
        };
        for line in &self.lines {
            if line.user_id != user_id
                && reachable(line.bigrams.len())
                && !alike.contains(&line.user_id.as_str())
                && dice(&line.bigrams, &bigrams) >= policy.similarity
            {
                alike.push(&line.user_id);
            }
        }
        let users = alike.len() as u32 + 1;
        let surge = self
            .surge_at_ms
            .is_some_and(|t| at_ms.saturating_sub(t) <= millis(policy.window));
        let needed = if surge {
            policy.surge_users
        } else {
            policy.burst_users
        };
        let starts = self.raid.is_none() && needed > 0 && users >= needed;
        if starts {
            let window = policy.window.as_secs();
            let joins = if surge { self.joins.len() as u32 } else { 0 };
            let trigger = if surge {
                format!(
                    "{users} new users posted near-identical messages within {window}s of \
                     {joins} joins"
                )
            } else {
                format!("{users} new users posted near-identical messages within {window}s")
            };
            let raider_ids = alike
                .iter()
                .copied()
                .chain([user_id])
                .take(MAX_RAIDER_IDS)
                .map(str::to_owned)
                .collect();
            let sample: String = text.chars().take(SAMPLE_CHARS).collect();
            self.raid = Some(Ongoing {
                raid: Raid {
                    started_ms: at_ms,
                    until_ms,
                    trigger: trigger.into(),
                    sample: sample.into(),
                    raiders: users,
                    joins,
                },
                sample_bigrams: bigrams.clone(),
                raider_ids,
            });
        }
        self.lines.push_back(Line {
            user_id: user_id.to_owned(),
            bigrams,
            at_ms,
        });
        if self.lines.len() > MAX_LINES {
            self.lines.pop_front();
        }
        Seen {
            raid: self.active(at_ms).cloned(),
            copy: starts,
            started: starts,
        }
    }

    /// What [`Self::message`] would say, without remembering anything (a dry run).
    pub fn peek(&self, policy: &RaidPolicy, new_user: bool, text: &str, at_ms: i64) -> Seen {
        let Some(ongoing) = self
            .raid
            .as_ref()
            .filter(|o| policy.enabled && o.raid.until_ms > at_ms)
        else {
            return Seen::default();
        };
        let copy = new_user
            && text.chars().count() >= policy.min_length as usize
            && dice(&ongoing.sample_bigrams, Profile::new(text).bigrams()) >= policy.similarity;
        Seen {
            raid: Some(ongoing.raid.clone()),
            copy,
            started: false,
        }
    }

    /// The raid the channel is in at `at_ms`, if raid mode is on.
    pub fn active(&self, at_ms: i64) -> Option<&Raid> {
        self.raid
            .as_ref()
            .map(|o| &o.raid)
            .filter(|r| r.until_ms > at_ms)
    }

    /// Ends raid mode if it ran out by `at_ms`: the raid that ended.
    pub fn expire(&mut self, at_ms: i64) -> Option<Raid> {
        if self.raid.as_ref().is_some_and(|o| o.raid.until_ms <= at_ms) {
            self.raid.take().map(|o| o.raid)
        } else {
            None
        }
    }

    /// Nothing to remember at `at_ms` (no raid, nothing within the window): the watch can be
    /// dropped.
    pub fn is_idle(&mut self, policy: &RaidPolicy, at_ms: i64) -> bool {
        self.forget(policy, at_ms);
        self.raid.is_none() && self.joins.is_empty() && self.lines.is_empty()
    }

    /// Drops joins and lines older than the window.
    fn forget(&mut self, policy: &RaidPolicy, at_ms: i64) {
        let since = at_ms.saturating_sub(millis(policy.window));
        while self.joins.front().is_some_and(|&t| t < since) {
            self.joins.pop_front();
        }
        while self.lines.front().is_some_and(|l| l.at_ms < since) {
            self.lines.pop_front();
        }
    }
}

/// Whether a user first seen at `first_seen_ms` (`None`: never before) is new at `now_ms`.
pub fn is_new_user(first_seen_ms: Option<i64>, now_ms: i64, policy: &RaidPolicy) -> bool {
    first_seen_ms.is_none_or(|first| now_ms.saturating_sub(first) < millis(policy.new_user))
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RaidPolicy {
        RaidPolicy {
            enabled: true,
            ..RaidPolicy::default()
        }
    }

    const COPY: &str = "follow my channel for free skins at raidbot dot com";

    #[test]
    fn a_join_surge_then_alike_lines_from_new_users_start_a_raid_that_ends_by_itself() {
        let p = policy();
        let mut w = RaidWatch::default();
        for i in 0..20 {
            w.joined(&p, 1_000 + i);
        }
        for (i, user) in ["a", "b", "c"].iter().enumerate() {
            let seen = w.message(&p, user, true, &format!("{COPY} {i}"), 2_000);
            assert_eq!(seen, Seen::default(), "three users are not yet a raid");
        }
        let seen = w.message(&p, "d", true, &format!("{COPY}!"), 2_500);
        assert!(seen.started && seen.copy);
        let raid = seen.raid.expect("raid mode is on");
        assert_eq!((raid.raiders, raid.joins), (4, 20));
        assert!(raid.trigger.contains("4 new users") && raid.trigger.contains("20 joins"));
        assert_eq!(raid.until_ms, 2_500 + 300_000);

        // A later copy from another new user is part of it and keeps it going.
        let seen = w.message(&p, "e", true, COPY, 60_000);
        assert!(seen.copy && !seen.started);
        assert_eq!(seen.raid.as_ref().map(|r| r.raiders), Some(5));
        // A regular's copy, and a new user's unrelated line, are not copies.
        assert!(!w.message(&p, "regular", false, COPY, 61_000).copy);
        let other = w.message(&p, "f", true, "what game is this, looks fun", 61_000);
        assert!(!other.copy && other.raid.is_some());

        assert_eq!(w.expire(360_000 - 1), None, "not before its time");
        let ended = w
            .expire(360_000)
            .expect("ends 5 minutes after the last copy");
        assert_eq!(ended.raiders, 5);
        assert_eq!(w.active(360_001), None);
        assert!(w.is_idle(&p, 500_000));
    }

    #[test]
    fn without_a_surge_it_takes_a_burst_of_eight() {
        let p = policy();
        let mut w = RaidWatch::default();
        for i in 0..7 {
            let seen = w.message(&p, &format!("u{i}"), true, COPY, 1_000 + i);
            assert!(seen.raid.is_none(), "{} users", i + 1);
        }
        assert!(w.message(&p, "u7", true, COPY, 1_100).started);
    }

    #[test]
    fn what_does_not_start_a_raid() {
        let p = policy();
        let mut w = RaidWatch::default();
        for i in 0..20 {
            w.joined(&p, i);
        }
        // One user repeating themselves.
        for _ in 0..10 {
            assert!(!w.message(&p, "same", true, COPY, 1_000).started);
        }
        // Regulars all saying the same thing (a hype moment).
        for i in 0..10 {
            assert!(!w.message(&p, &format!("r{i}"), false, COPY, 1_000).started);
        }
        // Short lines (emotes, "LUL").
        for i in 0..10 {
            assert!(
                !w.message(&p, &format!("s{i}"), true, "pepelaugh", 1_000)
                    .started
            );
        }
        // Alike lines spread wider than the window.
        let mut w = RaidWatch::default();
        for i in 0..10 {
            let at = i * 31_000;
            assert!(!w.message(&p, &format!("late{i}"), true, COPY, at).started);
        }
        // Switched off.
        let off = RaidPolicy::default();
        let mut w = RaidWatch::default();
        for i in 0..20 {
            assert_eq!(
                w.message(&off, &format!("o{i}"), true, COPY, 0),
                Seen::default()
            );
        }
    }

    #[test]
    fn memory_is_bounded() {
        let p = policy();
        let mut w = RaidWatch::default();
        for i in 0..10_000 {
            w.joined(&p, i);
            w.message(
                &p,
                &format!("x{i}"),
                true,
                &format!("unrelated line {i} {}", i * 7919),
                i,
            );
        }
        assert!(w.joins.len() <= p.join_surge as usize);
        assert!(w.lines.len() <= MAX_LINES);
    }

    #[test]
    fn new_users() {
        let p = policy();
        assert!(is_new_user(None, 0, &p));
        assert!(is_new_user(Some(0), 599_999, &p));
        assert!(!is_new_user(Some(0), 600_000, &p));
    }
}
