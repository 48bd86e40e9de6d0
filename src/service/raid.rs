//! Raid mode, per channel: the raid watches ([`crate::engine::raid::RaidWatch`]) of this
//! replica's channels, fed by the chat's joins and by every decided message, and the alerts
//! that tell moderators and bridges when a raid starts and ends.
//!
//! A raid watch is per replica: a channel's chat is streamed by one bridge to one replica, and
//! that replica sees its joins and messages (`Classify` calls for a channel are watched by
//! whichever replica answers them). Alerts go to every stream of this replica that serves the
//! channel ([`Raids::subscribe`]), raid mode shows in `Admin.GetStats` ([`Raids::active`]),
//! and `modbot_raid_active{channel}` and `modbot_raids_total` count it. Raid mode ends by
//! itself: [`Raids::expire`] runs every second (the expiry task) and ends raids whose time ran
//! out even if the channel went quiet.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::engine::raid::{Raid, RaidWatch, Seen};
use crate::engine::rules::{RaidPolicy, RuleSet};

/// Most channels watched at once; a further channel is not watched until others go idle, so
/// callers naming endless channels cannot grow memory without bound.
pub const MAX_WATCHED_CHANNELS: usize = 10_000;

/// Alerts kept for a slow stream before it misses some (it is told how many).
const ALERT_BUFFER: usize = 256;

/// A raid started or ended in a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct RaidAlert {
    /// The channel.
    pub channel: String,
    /// The raid (when it ended: as it was at the end).
    pub raid: Raid,
    /// True when raid mode ended, false when it started.
    pub ended: bool,
    /// The channel's policy asks the bridge for subscriber-only mode while it lasts.
    pub subonly: bool,
}

/// This replica's raid watches.
#[derive(Debug)]
pub struct Raids {
    watches: Mutex<HashMap<String, RaidWatch>>,
    alerts: broadcast::Sender<RaidAlert>,
}

impl Default for Raids {
    fn default() -> Self {
        Self::new()
    }
}

impl Raids {
    /// No channel watched yet.
    pub fn new() -> Self {
        Self {
            watches: Mutex::new(HashMap::new()),
            alerts: broadcast::Sender::new(ALERT_BUFFER),
        }
    }

    /// Every alert from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RaidAlert> {
        self.alerts.subscribe()
    }

    /// A user joined `channel` at `at_ms` (state clock).
    pub fn joined(&self, channel: &str, policy: &RaidPolicy, at_ms: i64) {
        if !policy.enabled {
            return;
        }
        self.with_watch(channel, |watch| watch.joined(policy, at_ms));
    }

    /// A message decided in `channel`: whether it is part of a raid (and whether it started
    /// one, which is announced). `remember`: false for a dry run, which changes nothing.
    pub fn message(
        &self,
        channel: &str,
        policy: &RaidPolicy,
        user: (&str, bool),
        text: &str,
        at_ms: i64,
        remember: bool,
    ) -> Seen {
        if !policy.enabled {
            return Seen::default();
        }
        let (user_id, new_user) = user;
        if !remember {
            let watches = self.lock();
            return watches
                .get(channel)
                .map(|w| w.peek(policy, new_user, text, at_ms))
                .unwrap_or_default();
        }
        let seen = self
            .with_watch(channel, |watch| {
                watch.message(policy, user_id, new_user, text, at_ms)
            })
            .unwrap_or_default();
        if seen.started
            && let Some(raid) = &seen.raid
        {
            self.announce(channel, raid.clone(), false, policy.subonly);
        }
        seen
    }

    /// Ends the raids whose time ran out by `now_ms` (announcing each), and forgets channels
    /// with nothing left to remember. `rules`: the policies now.
    pub fn expire(&self, now_ms: i64, rules: &RuleSet) {
        let mut ended = Vec::new();
        {
            let mut watches = self.lock();
            watches.retain(|channel, watch| {
                let policy = &rules.policy(channel).raid;
                if let Some(raid) = watch.expire(now_ms) {
                    ended.push((channel.clone(), raid, policy.subonly));
                }
                !watch.is_idle(policy, now_ms)
            });
        }
        for (channel, raid, subonly) in ended {
            self.announce(&channel, raid, true, subonly);
        }
    }

    /// The channels in raid mode at `now_ms`, by name.
    pub fn active(&self, now_ms: i64) -> Vec<(String, Raid)> {
        let watches = self.lock();
        let mut active: Vec<(String, Raid)> = watches
            .iter()
            .filter_map(|(channel, w)| w.active(now_ms).map(|r| (channel.clone(), r.clone())))
            .collect();
        active.sort_by(|a, b| a.0.cmp(&b.0));
        active
    }

    fn announce(&self, channel: &str, raid: Raid, ended: bool, subonly: bool) {
        if ended {
            tracing::warn!(%channel, raiders = raid.raiders, "raid mode ended");
            metrics::gauge!("modbot_raid_active", "channel" => channel.to_owned()).set(0.0);
        } else {
            tracing::warn!(
                %channel,
                trigger = %raid.trigger,
                sample = %raid.sample,
                "raid detected: raid mode on"
            );
            metrics::gauge!("modbot_raid_active", "channel" => channel.to_owned()).set(1.0);
            metrics::counter!("modbot_raids_total").increment(1);
        }
        // No subscriber (no stream serves any channel) is not an error.
        let _ = self.alerts.send(RaidAlert {
            channel: channel.to_owned(),
            raid,
            ended,
            subonly,
        });
    }

    /// Runs `f` on the channel's watch, made if missing and there is room; `None` when the
    /// channel cannot be watched (too many channels).
    fn with_watch<T>(&self, channel: &str, f: impl FnOnce(&mut RaidWatch) -> T) -> Option<T> {
        let mut watches = self.lock();
        if let Some(watch) = watches.get_mut(channel) {
            return Some(f(watch));
        }
        if watches.len() >= MAX_WATCHED_CHANNELS {
            metrics::counter!("modbot_raid_unwatched_total").increment(1);
            return None;
        }
        Some(f(watches.entry(channel.to_owned()).or_default()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RaidWatch>> {
        // A panic while the lock was held left a watch half-updated at worst: keep going.
        self.watches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::{DEFAULT_RULES, RuleSet};

    const COPY: &str = "follow my channel for free skins at raidbot dot com";

    #[test]
    fn a_raid_is_announced_when_it_starts_and_when_it_ends() {
        let rules = RuleSet::parse(DEFAULT_RULES, "test").expect("the shipped rules compile");
        let policy = &rules.policy("dgg").raid;
        assert!(policy.enabled, "the shipped policy watches for raids");
        let raids = Raids::new();
        let mut alerts = raids.subscribe();
        for i in 0..policy.join_surge {
            raids.joined("dgg", policy, i64::from(i));
        }
        for i in 0..policy.surge_users {
            let user = format!("raider{i}");
            let seen = raids.message("dgg", policy, (&user, true), COPY, 1_000, true);
            assert_eq!(seen.started, i + 1 == policy.surge_users);
        }
        let started = alerts.try_recv().expect("the start is announced");
        assert!(!started.ended && started.channel == "dgg");
        assert_eq!(raids.active(2_000).len(), 1);

        // A dry run sees the raid but changes nothing.
        let seen = raids.message("dgg", policy, ("someone", true), COPY, 2_000, false);
        assert!(seen.copy && seen.raid.is_some());
        assert_eq!(raids.active(2_000)[0].1.raiders, policy.surge_users);

        raids.expire(2_000, &rules);
        assert!(alerts.try_recv().is_err(), "not over yet");
        let end = 1_000 + i64::try_from(policy.duration.as_millis()).unwrap();
        raids.expire(end, &rules);
        let ended = alerts.try_recv().expect("the end is announced");
        assert!(ended.ended && ended.raid.raiders == policy.surge_users);
        assert!(raids.active(end).is_empty());
        raids.expire(end + 3_600_000, &rules);
        assert!(raids.lock().is_empty(), "an idle channel is forgotten");
    }

    #[test]
    fn the_channels_watched_are_bounded() {
        let policy = RaidPolicy {
            enabled: true,
            ..RaidPolicy::default()
        };
        let raids = Raids::new();
        for i in 0..MAX_WATCHED_CHANNELS + 10 {
            raids.joined(&format!("c{i}"), &policy, 0);
        }
        assert_eq!(raids.lock().len(), MAX_WATCHED_CHANNELS);
        // An unwatched channel is decided without raid mode, not refused.
        let seen = raids.message("another", &policy, ("u", true), COPY, 0, true);
        assert_eq!(seen, Seen::default());
    }
}
