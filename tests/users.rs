//! User state: one behavioural suite run against both backends (in-process and the real Redis),
//! the in-process backend's bounds, Redis's key layout and TTLs, and degraded mode.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use modbot::domain::{
    ChannelMessage, ChannelWindow, Observation, Offence, RecentMessage, UserHistory,
};
use modbot::infra::users::{MemoryState, SharedState, StateOptions, UserState};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// A realistic start time (2023-11-14), so nothing passes by accident at 0.
const T0: i64 = 1_700_000_000_000;

/// Small rings so their bounds show in a few messages.
fn suite_config() -> StateOptions {
    StateOptions {
        recent_per_user: 3,
        times_per_user: 4,
        recent_per_channel: 5,
        history_per_channel: 8,
        idle_ttl: Duration::from_secs(3600),
        ..StateOptions::default()
    }
}

fn obs<'a>(channel: &'a str, user_id: &'a str, message_id: &'a str, at_ms: i64) -> Observation<'a> {
    Observation {
        channel,
        user_id,
        message_id,
        text: message_id, // the text is the id, so expected messages are easy to write
        at_ms,
    }
}

async fn observe(
    state: &UserState,
    channel: &str,
    user_id: &str,
    message_id: &str,
    at_ms: i64,
) -> (UserHistory, ChannelWindow) {
    state
        .observe(&obs(channel, user_id, message_id, at_ms))
        .await
        .expect("observe")
}

async fn offend(
    state: &UserState,
    user_id: &str,
    heat: f64,
    escalates: bool,
    at_ms: i64,
) -> UserHistory {
    let offence = Offence {
        heat,
        half_life: Duration::from_secs(60),
        escalates,
        at_ms,
        ..Offence::default()
    };
    state
        .record_offence("chan", user_id, &offence)
        .await
        .expect("record an offence")
}

/// An offence with strikes: heat halving every minute, strikes every ten.
fn strike(heat: f64, escalates: bool, ladder_step: u32, at_ms: i64) -> Offence {
    Offence {
        heat,
        half_life: Duration::from_secs(60),
        strikes: 1.0,
        memory_half_life: Duration::from_secs(600),
        escalates,
        ladder_step,
        at_ms,
    }
}

async fn record(state: &UserState, user_id: &str, offence: Offence) -> UserHistory {
    state
        .record_offence("chan", user_id, &offence)
        .await
        .expect("record an offence")
}

fn close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-12,
        "{what}: {actual}, expected {expected}"
    );
}

fn recent(message_id: &str, at_ms: i64) -> Arc<RecentMessage> {
    Arc::new(RecentMessage {
        message_id: message_id.into(),
        text: message_id.into(),
        at_ms,
    })
}

fn ids(window: &ChannelWindow) -> Vec<&str> {
    window.iter().map(|m| m.message_id.as_str()).collect()
}

/// Runs each suite function once on a fresh in-process state and once on a fresh Redis prefix.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let state = std::sync::Arc::new(modbot::infra::users::UserState::memory(super::suite_config()));
                    assert_eq!(state.backend_name(), "memory");
                    super::$name(&state).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let test = concat!("redis::", stringify!($name));
                    let Some(redis) = super::common::RedisPrefix::create(test).await else {
                        return;
                    };
                    let state = modbot::infra::users::UserState::redis(&redis.url, super::suite_config(), &redis.prefix)
                        .await
                        .expect("connect to Redis");
                    assert_eq!(state.backend_name(), "redis");
                    super::$name(&std::sync::Arc::new(state)).await;
                    redis.delete_keys().await;
                }
            )*
        }
    };
}

both_backends!(
    history_is_the_state_before_the_message,
    per_user_lists_are_bounded_rings,
    channel_window_is_other_users_messages_oldest_first,
    channels_are_isolated,
    unknown_users_are_none,
    heat_decays_by_its_half_life,
    escalation_step_resets_after_cooling_down,
    strikes_decay_by_their_own_half_life_beside_heat,
    the_step_rises_to_the_rung_the_offence_was_decided_on,
    strikes_keep_an_idle_user_remembered,
    a_pardon_takes_one_offence_back,
    a_pardon_of_a_user_not_held_changes_nothing,
    reputation_rises_with_messages_and_falls_with_offences,
    idle_users_are_forgotten_unless_their_heat_is_warm,
    concurrent_observers_keep_exact_counts,
    peek_shows_what_observe_would_without_recording,
    channel_history_keeps_more_than_the_window_oldest_first,
);

async fn history_is_the_state_before_the_message(state: &UserState) {
    let (before, _) = observe(state, "chan", "u", "m1", T0).await;
    assert_eq!(before, UserHistory::default(), "a new user has no history");

    let (before, _) = observe(state, "chan", "u", "m2", T0 + 1_000).await;
    assert_eq!(
        before,
        UserHistory {
            first_seen_ms: Some(T0),
            last_seen_ms: Some(T0),
            messages: 1,
            recent: vec![recent("m1", T0)],
            message_times_ms: vec![T0],
            ..UserHistory::default()
        }
    );

    let (before, _) = observe(state, "chan", "u", "m3", T0 + 2_500).await;
    assert_eq!(before.first_seen_ms, Some(T0));
    assert_eq!(before.last_seen_ms, Some(T0 + 1_000));
    assert_eq!(before.messages, 2);
    assert_eq!(before.recent, [recent("m1", T0), recent("m2", T0 + 1_000)]);
    assert_eq!(before.message_times_ms, [T0, T0 + 1_000]);

    let stored = state.user("chan", "u").await.expect("user").expect("known");
    assert_eq!(stored.messages, 3);
    assert_eq!(stored.last_seen_ms, Some(T0 + 2_500));
}

async fn per_user_lists_are_bounded_rings(state: &UserState) {
    // recent_per_user = 3, times_per_user = 4
    for i in 0..7 {
        observe(state, "chan", "u", &format!("m{i}"), T0 + i * 1_000).await;
    }
    let stored = state.user("chan", "u").await.expect("user").expect("known");
    assert_eq!(stored.messages, 7);
    assert_eq!(stored.first_seen_ms, Some(T0));
    assert_eq!(
        stored.recent,
        [
            recent("m4", T0 + 4_000),
            recent("m5", T0 + 5_000),
            recent("m6", T0 + 6_000)
        ]
    );
    assert_eq!(
        stored.message_times_ms,
        [T0 + 3_000, T0 + 4_000, T0 + 5_000, T0 + 6_000]
    );
}

async fn channel_window_is_other_users_messages_oldest_first(state: &UserState) {
    // recent_per_channel = 5: the window holds the last five messages from everyone, and each
    // observer gets those not their own.
    let steps: &[(&str, &str, &[&str])] = &[
        ("a", "a1", &[]),
        ("b", "b1", &["a1"]),
        ("a", "a2", &["b1"]),
        ("c", "c1", &["a1", "b1", "a2"]),
        ("b", "b2", &["a1", "a2", "c1"]),
        ("a", "a3", &["b1", "c1", "b2"]),
        ("c", "c2", &["b1", "a2", "b2", "a3"]),
        ("d", "d1", &["a2", "c1", "b2", "a3", "c2"]),
    ];
    for (i, (user, id, expected)) in steps.iter().enumerate() {
        let (_, others) = observe(state, "chan", user, id, T0 + i as i64).await;
        assert_eq!(ids(&others), *expected, "{user} says {id}");
        assert_eq!(others.len(), expected.len());
    }
    let (_, others) = observe(state, "chan", "e", "e1", T0 + 100).await;
    assert_eq!(
        others.to_vec()[0],
        ChannelMessage {
            user_id: "c".into(),
            message_id: "c1".into(),
            text: "c1".into(),
            at_ms: T0 + 3,
        }
    );
}

async fn channels_are_isolated(state: &UserState) {
    observe(state, "one", "u", "x1", T0).await;
    observe(state, "one", "u", "x2", T0 + 1).await;
    let (before, others) = observe(state, "two", "u", "y1", T0 + 2).await;
    assert_eq!(
        before,
        UserHistory::default(),
        "the same user id in another channel is new"
    );
    assert!(others.is_empty(), "channel one's messages stay there");
    let (_, others) = observe(state, "two", "v", "y2", T0 + 3).await;
    assert_eq!(ids(&others), ["y1"]);

    offend(state, "u", 1.0, true, T0 + 4).await;
    let one = state.user("one", "u").await.expect("user").expect("known");
    assert_eq!(
        (one.messages, one.offences),
        (2, 0),
        "the offence was in \"chan\""
    );
}

async fn unknown_users_are_none(state: &UserState) {
    assert_eq!(state.user("chan", "nobody").await.expect("user"), None);
    observe(state, "chan", "somebody", "m1", T0).await;
    assert_eq!(state.user("chan", "nobody").await.expect("user"), None);
    assert_eq!(
        state.user("elsewhere", "somebody").await.expect("user"),
        None
    );

    // An offence alone (say, from a moderator's action) makes the user known.
    let after = offend(state, "offender", 1.0, false, T0).await;
    assert_eq!(
        state.user("chan", "offender").await.expect("user"),
        Some(after.clone())
    );
    assert_eq!(after.messages, 0);
    assert_eq!(after.first_seen_ms, None);
}

async fn heat_decays_by_its_half_life(state: &UserState) {
    let half_life = Duration::from_secs(60);
    let after = offend(state, "u", 1.0, false, T0).await;
    assert_eq!((after.heat, after.heat_at_ms), (1.0, T0));
    for (now, expected) in [
        (T0 - MINUTE, 1.0), // before the offence: not decayed, never grown
        (T0, 1.0),
        (T0 + 30_000, std::f64::consts::FRAC_1_SQRT_2),
        (T0 + MINUTE, 0.5),
        (T0 + 2 * MINUTE, 0.25),
        (T0 + 10 * MINUTE, 1.0 / 1024.0),
    ] {
        let heat = after.heat_at(now, half_life);
        assert!(
            (heat - expected).abs() < 1e-15,
            "heat at +{} ms: {heat}, expected {expected}",
            now - T0
        );
    }

    // A second offence a half-life later adds to the decayed heat: 0.5 + 2.0.
    let after = offend(state, "u", 2.0, false, T0 + MINUTE).await;
    assert_eq!((after.heat, after.heat_at_ms), (2.5, T0 + MINUTE));
    assert_eq!(after.heat_at(T0 + 3 * MINUTE, half_life), 0.625);
    assert_eq!(after.offences, 2);
    assert_eq!(after.last_offence_ms, Some(T0 + MINUTE));

    // Stored exactly: reading back gives the same numbers.
    let stored = state.user("chan", "u").await.expect("user").expect("known");
    assert_eq!(stored, after);

    // A non-finite or negative heat adds nothing (but still counts as an offence).
    for heat in [f64::NAN, f64::INFINITY, -1.0] {
        let after = offend(state, "v", heat, false, T0).await;
        assert_eq!(after.heat, 0.0, "heat {heat}");
    }
}

async fn escalation_step_resets_after_cooling_down(state: &UserState) {
    // Half-life one minute, cooled_down_heat 0.125 (three half-lives after a 1.0 offence).
    let steps: &[(&str, i64, bool, u32, &str)] = &[
        ("u", 0, true, 1, "first time-out"),
        ("u", MINUTE, true, 2, "heat 0.5 is warm: escalate"),
        ("u", MINUTE, false, 2, "a warning does not escalate"),
        // Heat 2.5 at one minute; five half-lives later it is 0.078: cooled down.
        (
            "u",
            6 * MINUTE,
            false,
            0,
            "a warning after cooling down opens a new episode",
        ),
        (
            "u",
            6 * MINUTE,
            true,
            1,
            "so the next time-out is the first again",
        ),
        ("u", 7 * MINUTE, true, 2, "and the one after, the second"),
        // 1.0 three half-lives later is exactly 0.125, which is not below the threshold.
        ("edge", 0, true, 1, "first time-out"),
        (
            "edge",
            3 * MINUTE,
            true,
            2,
            "exactly at the threshold: still warm",
        ),
        ("late", 0, true, 1, "first time-out"),
        (
            "late",
            3 * MINUTE + 1,
            true,
            1,
            "a millisecond later: cooled down",
        ),
    ];
    for (i, (user, at, escalates, expected_step, why)) in steps.iter().enumerate() {
        let after = offend(state, user, 1.0, *escalates, T0 + at).await;
        assert_eq!(
            after.escalation_step, *expected_step,
            "step {i}, {user}: {why}"
        );
    }
    let u = state.user("chan", "u").await.expect("user").expect("known");
    assert_eq!((u.offences, u.last_offence_ms), (6, Some(T0 + 7 * MINUTE)));
}

async fn strikes_decay_by_their_own_half_life_beside_heat(state: &UserState) {
    let memory = Duration::from_secs(600);
    let after = record(state, "u", strike(2.0, true, 0, T0)).await;
    assert_eq!(
        (after.heat, after.strikes, after.heat_at_ms),
        (2.0, 1.0, T0)
    );
    // Ten minutes on: heat has halved ten times, the strikes once.
    close(
        after.heat_at(T0 + 10 * MINUTE, Duration::from_secs(60)),
        2.0 / 1024.0,
        "heat",
    );
    close(after.strikes_at(T0 + 10 * MINUTE, memory), 0.5, "strikes");
    assert_eq!(
        after.strikes_at(T0 - MINUTE, memory),
        1.0,
        "never grown backwards"
    );

    // A second strike ten minutes later adds to the decayed strikes: 0.5 + 1.
    let after = record(state, "u", strike(1.0, false, 0, T0 + 10 * MINUTE)).await;
    close(after.strikes, 1.5, "strikes after the second");
    assert_eq!(after.heat_at_ms, T0 + 10 * MINUTE);
    close(
        after.strikes_at(T0 + 20 * MINUTE, memory),
        0.75,
        "ten more minutes",
    );
    assert_eq!(after.offences, 2);
    let stored = state.user("chan", "u").await.expect("user").expect("known");
    assert_eq!(stored, after, "stored exactly");

    // An offence without strikes (a hide) leaves them to decay; bad values add nothing.
    let hide = Offence {
        strikes: 0.0,
        ..strike(0.5, false, 0, T0 + 20 * MINUTE)
    };
    close(
        record(state, "u", hide).await.strikes,
        0.75,
        "a hide adds none",
    );
    for strikes in [f64::NAN, f64::INFINITY, -1.0] {
        let bad = Offence {
            strikes,
            ..strike(1.0, false, 0, T0)
        };
        assert_eq!(
            record(state, "v", bad).await.strikes,
            0.0,
            "strikes {strikes}"
        );
    }
}

async fn the_step_rises_to_the_rung_the_offence_was_decided_on(state: &UserState) {
    // A cooled user whose remembered strikes put them on rung 3: the timeout recorded there
    // leaves them on rung 4, not 1.
    let steps: &[(i64, bool, u32, u32, &str)] = &[
        (0, true, 3, 4, "resumed on rung 3, then climbed"),
        (MINUTE, true, 0, 5, "warm: the stored step climbs on"),
        (MINUTE, false, 2, 5, "a lower rung never lowers it"),
        (
            20 * MINUTE,
            false,
            1,
            1,
            "cooled: reset, then lifted to the rung",
        ),
        (20 * MINUTE, true, 0, 2, "and climbs from there"),
    ];
    for (i, &(at, escalates, rung, expected, why)) in steps.iter().enumerate() {
        let after = record(state, "u", strike(1.0, escalates, rung, T0 + at)).await;
        assert_eq!(after.escalation_step, expected, "step {i}: {why}");
    }
}

async fn strikes_keep_an_idle_user_remembered(state: &UserState) {
    // idle_ttl = 1 h. Heat halving every minute is forgotten within minutes; 3 strikes
    // halving every hour fall below one half after log2(6) = 2.6 hours.
    let long = |at_ms| Offence {
        strikes: 3.0,
        memory_half_life: Duration::from_secs(3600),
        ..strike(1.0, true, 0, at_ms)
    };
    observe(state, "chan", "u", "m1", T0).await;
    record(state, "u", long(T0)).await;
    // Two hours idle, heat long cold: 3 strikes are 0.75, still remembered.
    let (before, _) = observe(state, "chan", "u", "m2", T0 + 2 * HOUR).await;
    assert_eq!((before.messages, before.offences), (1, 1), "remembered");
    close(
        before.strikes_at(T0 + 2 * HOUR, Duration::from_secs(3600)),
        0.75,
        "strikes",
    );
    // Idle again for over the TTL, and the strikes have fallen below one half: forgotten.
    let (before, _) = observe(state, "chan", "u", "m3", T0 + 4 * HOUR).await;
    assert_eq!(before, UserHistory::default(), "forgotten");
}

async fn a_pardon_takes_one_offence_back(state: &UserState) {
    let timeout = strike(2.0, true, 0, T0);
    let warning = strike(1.0, false, 0, T0 + MINUTE);
    observe(state, "chan", "u", "m1", T0).await;
    record(state, "u", timeout).await;
    let both = record(state, "u", warning).await;
    assert_eq!((both.offences, both.escalation_step), (2, 1));
    close(
        both.heat,
        2.0,
        "1.0 left of the timeout's heat, and the warning's",
    );

    // Pardoning the timeout a while later: what is left is the warning alone, at any time.
    let after = state
        .pardon("chan", "u", &timeout)
        .await
        .expect("pardon")
        .expect("a user held");
    assert_eq!((after.offences, after.escalation_step), (1, 0));
    assert_eq!(after.heat_at_ms, both.heat_at_ms, "the stored time stays");
    close(after.heat, 1.0, "heat: the warning's");
    close(after.strikes, 1.0, "strikes: the warning's");
    let later = T0 + 5 * MINUTE;
    close(
        after.heat_at(later, Duration::from_secs(60)),
        1.0 / 16.0,
        "heat later",
    );
    let stored = state.user("chan", "u").await.expect("user").expect("known");
    assert_eq!(stored, after, "stored as returned");

    // Pardoning more than there is stops at nothing: no negative heat, strikes or counts.
    for _ in 0..3 {
        state.pardon("chan", "u", &timeout).await.expect("pardon");
    }
    let empty = state.user("chan", "u").await.expect("user").expect("known");
    assert_eq!(
        (
            empty.heat,
            empty.strikes,
            empty.offences,
            empty.escalation_step
        ),
        (0.0, 0.0, 0, 0)
    );
    // And the next offence counts from there.
    let again = record(state, "u", strike(2.0, true, 0, later)).await;
    assert_eq!((again.heat, again.strikes, again.offences), (2.0, 1.0, 1));
}

async fn a_pardon_of_a_user_not_held_changes_nothing(state: &UserState) {
    let pardoned = state
        .pardon("chan", "nobody", &strike(2.0, true, 0, T0))
        .await
        .expect("pardon");
    assert_eq!(pardoned, None);
    assert_eq!(state.user("chan", "nobody").await.expect("user"), None);
    // Another channel's offence is not this one's.
    record(state, "u", strike(2.0, true, 0, T0)).await;
    let elsewhere = state
        .pardon("other", "u", &strike(2.0, true, 0, T0))
        .await
        .expect("pardon");
    assert_eq!(elsewhere, None);
    let kept = state.user("chan", "u").await.expect("user").expect("known");
    assert_eq!((kept.heat, kept.offences), (2.0, 1));
}

async fn reputation_rises_with_messages_and_falls_with_offences(state: &UserState) {
    let mut previous = state
        .observe(&obs("chan", "u", "m0", T0))
        .await
        .expect("observe")
        .0
        .reputation();
    assert_eq!(previous, 0.0, "a stranger is neutral");
    for i in 1..=5 {
        let (before, _) = observe(state, "chan", "u", &format!("m{i}"), T0 + i).await;
        assert!(before.reputation() > previous, "message {i} raised it");
        previous = before.reputation();
    }
    let user = state.user("chan", "u").await.expect("user").expect("known");
    let after = offend(state, "u", 1.0, true, T0 + 10).await;
    assert!(
        after.reputation() < user.reputation(),
        "an offence lowered it"
    );
    assert!(
        after.reputation() < 0.0,
        "one offence outweighs a few clean messages"
    );
    assert!((-1.0..=1.0).contains(&after.reputation()));
}

async fn idle_users_are_forgotten_unless_their_heat_is_warm(state: &UserState) {
    // idle_ttl = 1 h. The clock is the callers': nothing sleeps.
    observe(state, "chan", "quiet", "q1", T0).await;
    let (before, _) = observe(state, "chan", "quiet", "q2", T0 + HOUR - 1).await;
    assert_eq!(before.messages, 1, "just under the TTL: remembered");
    let (before, _) = observe(state, "chan", "quiet", "q3", T0 + 2 * HOUR - 1).await;
    assert_eq!(
        before,
        UserHistory::default(),
        "idle for the TTL: forgotten"
    );

    // An offender's heat (1.0, half-life one hour) keeps them remembered past the TTL...
    observe(state, "chan", "offender", "o1", T0).await;
    let offence = Offence {
        heat: 1.0,
        half_life: Duration::from_secs(3600),
        escalates: true,
        at_ms: T0,
        ..Offence::default()
    };
    state
        .record_offence("chan", "offender", &offence)
        .await
        .expect("offence");
    let (before, _) = observe(state, "chan", "offender", "o2", T0 + 2 * HOUR).await;
    assert_eq!(
        (before.messages, before.offences, before.escalation_step),
        (1, 1, 1)
    );
    // ...until it decays below FORGOTTEN_HEAT (0.01 after log2(100) = 6.6 half-lives) and the
    // user has also been idle for the TTL.
    let (before, _) = observe(state, "chan", "offender", "o3", T0 + 7 * HOUR).await;
    assert_eq!(before, UserHistory::default(), "cold and idle: forgotten");
}

async fn peek_shows_what_observe_would_without_recording(state: &UserState) {
    let (history, window) = state.peek("chan", "u").await.expect("peek");
    assert_eq!(history, None);
    assert!(window.is_empty());

    // recent_per_channel = 5
    for (i, (user, id)) in [
        ("u", "u1"),
        ("v", "v1"),
        ("u", "u2"),
        ("w", "w1"),
        ("v", "v2"),
        ("w", "w2"),
    ]
    .into_iter()
    .enumerate()
    {
        observe(state, "chan", user, id, T0 + i as i64).await;
    }
    let (history, window) = state.peek("chan", "u").await.expect("peek");
    assert_eq!(ids(&window), ["v1", "w1", "v2", "w2"]);
    let (never_seen, others) = state.peek("chan", "stranger").await.expect("peek");
    assert_eq!(never_seen, None);
    assert_eq!(ids(&others), ["v1", "u2", "w1", "v2", "w2"]);

    // Peeking recorded nothing: observing now sees exactly what the peek showed.
    let (before, observed_window) = observe(state, "chan", "u", "u3", T0 + 10).await;
    assert_eq!(Some(before), history);
    assert_eq!(ids(&observed_window), ids(&window));
}

async fn channel_history_keeps_more_than_the_window_oldest_first(state: &UserState) {
    // recent_per_channel = 5, history_per_channel = 8.
    let history = |channel: &'static str| async move {
        state
            .channel_history(channel)
            .await
            .expect("channel history")
    };
    assert!(history("chan").await.is_empty(), "a channel never seen");
    let users = ["a", "b", "c"];
    for i in 0..12 {
        let (_, window) =
            observe(state, "chan", users[i % 3], &format!("m{i}"), T0 + i as i64).await;
        assert!(
            window.len() <= 5,
            "observe's window stays at recent_per_channel"
        );
    }
    observe(state, "elsewhere", "a", "x1", T0 + 20).await;
    let message = |i: usize| ChannelMessage {
        user_id: users[i % 3].into(),
        message_id: format!("m{i}"),
        text: format!("m{i}"),
        at_ms: T0 + i as i64,
    };
    // Everyone's messages, the last eight, oldest first.
    assert_eq!(
        history("chan").await,
        (4..12).map(message).collect::<Vec<_>>()
    );

    // The copy-paste window is still the last five, and the history moves on by one.
    let (_, window) = observe(state, "chan", "d", "m12", T0 + 12).await;
    assert_eq!(ids(&window), ["m7", "m8", "m9", "m10", "m11"]);
    let (_, peeked) = state.peek("chan", "a").await.expect("peek");
    assert_eq!(ids(&peeked), ["m8", "m10", "m11", "m12"]);
    let now: Vec<String> = history("chan")
        .await
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(now, ["m5", "m6", "m7", "m8", "m9", "m10", "m11", "m12"]);
    assert_eq!(
        history("elsewhere").await,
        [ChannelMessage {
            user_id: "a".into(),
            message_id: "x1".into(),
            text: "x1".into(),
            at_ms: T0 + 20,
        }],
        "channels are isolated"
    );
}

async fn concurrent_observers_keep_exact_counts(state: &Arc<UserState>) {
    const TASKS: usize = 8;
    const USERS: usize = 4;
    const PER_TASK: usize = 50;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let state = Arc::clone(state);
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for i in 0..PER_TASK {
                let user = format!("u{}", (task + i) % USERS);
                let id = format!("t{task}-{i}");
                let (before, _) = state
                    .observe(&obs("busy", &user, &id, T0 + i as i64))
                    .await
                    .expect("observe");
                seen.push((user, before.messages));
            }
            seen
        });
    }
    let mut before_counts: Vec<Vec<u64>> = vec![Vec::new(); USERS];
    while let Some(seen) = tasks.join_next().await {
        for (user, messages) in seen.expect("task") {
            let index: usize = user[1..].parse().expect("user index");
            before_counts[index].push(messages);
        }
    }
    let per_user = (TASKS * PER_TASK / USERS) as u64;
    for (index, mut counts) in before_counts.into_iter().enumerate() {
        // Every observation saw a distinct count: no update was lost or doubled.
        counts.sort_unstable();
        assert_eq!(counts, (0..per_user).collect::<Vec<_>>(), "u{index}");
        let stored = state
            .user("busy", &format!("u{index}"))
            .await
            .expect("user")
            .expect("known");
        assert_eq!(stored.messages, per_user);
    }
}

// ---- the in-process backend's own bounds ----

fn memory(configure: impl FnOnce(&mut StateOptions)) -> MemoryState {
    let mut config = suite_config();
    configure(&mut config);
    MemoryState::new(config)
}

#[test]
fn memory_evicts_the_least_recently_seen_beyond_max_users() {
    let state = memory(|config| config.max_users = 3);
    for (user, at) in [("a", 1), ("b", 2), ("c", 3), ("a", 4)] {
        state.observe(&obs("chan", user, "m", T0 + at));
    }
    assert_eq!(state.len(), 3);
    state.observe(&obs("chan", "d", "m", T0 + 5));
    assert_eq!(state.len(), 3, "never more than max_users");
    assert_eq!(state.user("chan", "b"), None, "b was seen least recently");
    for user in ["a", "c", "d"] {
        assert!(state.user("chan", user).is_some(), "{user} kept");
    }
    // An offence counts as activity: c offends, so now a (seen at 4) is the oldest.
    let offence = Offence {
        heat: 1.0,
        half_life: Duration::from_secs(60),
        escalates: false,
        at_ms: T0 + 6,
        ..Offence::default()
    };
    state.record_offence("chan", "c", &offence);
    state.observe(&obs("chan", "e", "m", T0 + 7));
    assert_eq!(state.user("chan", "a"), None);
    assert_eq!(state.len(), 3);
}

#[test]
fn memory_eviction_holds_across_many_users_and_shards() {
    let max_users = 40_000; // several shards
    let state = memory(|config| config.max_users = max_users);
    for i in 0..100_000 {
        state.observe(&obs("chan", &format!("u{i}"), "m", T0 + i));
        if i % 1000 == 0 {
            assert!(state.len() <= max_users, "after {i} users");
        }
    }
    let held = state.len();
    assert!(held <= max_users, "{held} held");
    assert!(
        held > max_users * 3 / 4,
        "{held} held: eviction frees a batch, not everything"
    );
    assert!(state.user("chan", "u99999").is_some(), "the latest is kept");
    assert_eq!(state.user("chan", "u0"), None, "the first is gone");
}

#[test]
fn memory_sweep_forgets_idle_users_by_the_callers_clock() {
    // One shard, so that the sweep an observation does by itself reaches every user.
    let state = memory(|config| config.max_users = 1_000);
    state.observe(&obs("chan", "old", "m", T0));
    state.observe(&obs("chan", "newer", "m", T0 + 30 * MINUTE));
    assert_eq!(state.sweep(T0 + HOUR - 1), 0);
    assert_eq!(state.sweep(T0 + HOUR), 1);
    assert_eq!(state.user("chan", "old"), None);
    assert_eq!(state.len(), 1);
    // Observing sweeps by itself as the clock moves on.
    state.observe(&obs("other", "x", "m", T0 + 3 * HOUR));
    assert_eq!(state.user("chan", "newer"), None);
    assert_eq!(state.len(), 1);
}

#[test]
fn memory_bounds_the_number_of_channel_windows() {
    let state = memory(|config| config.max_channels = 2);
    state.observe(&obs("x", "u", "x1", T0));
    state.observe(&obs("y", "u", "y1", T0 + 1));
    state.observe(&obs("x", "u", "x2", T0 + 2));
    state.observe(&obs("z", "u", "z1", T0 + 3)); // evicts y, the least recently active
    let (_, others) = state.observe(&obs("y", "v", "y2", T0 + 4));
    assert!(others.is_empty(), "y's window was dropped");
    let (_, others) = state.observe(&obs("x", "v", "x3", T0 + 5));
    assert!(
        others.is_empty(),
        "x was the oldest when y came back, so it went then"
    );
}

#[test]
fn memory_history_of_a_quiet_channel_goes_with_its_window() {
    // Few channels: one shard, so observing anywhere sweeps every channel.
    let state = memory(|config| config.max_channels = 100);
    state.observe(&obs("quiet", "u", "q1", T0));
    state.observe(&obs("quiet", "v", "q2", T0 + 1));
    state.observe(&obs("busy", "u", "b1", T0 + HOUR - 1));
    assert_eq!(
        state.channel_history("quiet").len(),
        2,
        "just under the TTL"
    );
    // idle_ttl = 1 h: over an hour after the quiet channel's last message (and past the
    // minute between sweeps).
    state.observe(&obs("busy", "u", "b2", T0 + HOUR + MINUTE));
    assert!(state.channel_history("quiet").is_empty(), "forgotten");
    assert!(state.peek("quiet", "w").1.is_empty(), "like the window");
    assert_eq!(state.channel_history("busy").len(), 2);
}

#[test]
fn memory_rings_of_zero_keep_nothing() {
    let state = memory(|config| {
        config.recent_per_user = 0;
        config.times_per_user = 0;
        config.recent_per_channel = 0;
        config.history_per_channel = 0;
    });
    state.observe(&obs("chan", "a", "a1", T0));
    let (before, others) = state.observe(&obs("chan", "b", "b1", T0 + 1));
    assert!(others.is_empty());
    assert_eq!(before, UserHistory::default());
    let (before, _) = state.observe(&obs("chan", "b", "b2", T0 + 2));
    assert_eq!(before.messages, 1);
    assert!(before.recent.is_empty() && before.message_times_ms.is_empty());
    assert!(state.channel_history("chan").is_empty());
}

#[test]
fn memory_history_without_a_window_still_keeps_the_history() {
    let state = memory(|config| config.recent_per_channel = 0);
    state.observe(&obs("chan", "a", "a1", T0));
    let (_, others) = state.observe(&obs("chan", "b", "b1", T0 + 1));
    assert!(others.is_empty(), "no copy-paste window");
    let ids: Vec<_> = state
        .channel_history("chan")
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids, ["a1", "b1"]);
}

// ---- Redis's key layout and TTLs ----

#[tokio::test]
async fn redis_keys_are_laid_out_as_documented_with_ttls() {
    let Some(redis) = common::RedisPrefix::create("redis_keys_are_laid_out_as_documented").await
    else {
        return;
    };
    let state = UserState::redis(&redis.url, suite_config(), &redis.prefix)
        .await
        .expect("connect");
    for i in 0..10 {
        observe(&state, "dgg}%", "u:1", &format!("m{i}"), T0 + i).await;
    }
    let p = &redis.prefix;
    assert_eq!(
        redis.keys().await,
        [
            format!("{p}{{dgg%7D%25}}:c"),
            format!("{p}{{dgg%7D%25}}:h"),
            format!("{p}{{dgg%7D%25}}:r:u:1"),
            format!("{p}{{dgg%7D%25}}:t:u:1"),
            format!("{p}{{dgg%7D%25}}:u:u:1"),
        ]
    );
    let query = |command: &'static str, key: String| {
        let mut connection = redis.connection();
        async move {
            ::redis::cmd(command)
                .arg(&key)
                .query_async::<i64>(&mut connection)
                .await
                .unwrap_or_else(|error| panic!("{command} {key}: {error}"))
        }
    };
    let tag = format!("{p}{{dgg%7D%25}}");
    assert_eq!(
        query("LLEN", format!("{tag}:c")).await,
        5,
        "trimmed to recent_per_channel"
    );
    assert_eq!(
        query("LLEN", format!("{tag}:h")).await,
        8,
        "trimmed to history_per_channel"
    );
    assert_eq!(query("LLEN", format!("{tag}:r:u:1")).await, 3);
    assert_eq!(query("LLEN", format!("{tag}:t:u:1")).await, 4);
    for key in redis.keys().await {
        let ttl = query("PTTL", key.clone()).await;
        assert!(ttl > HOUR - MINUTE && ttl <= HOUR, "{key}: {ttl} ms");
    }

    // Heat that takes longer than the idle TTL to be forgotten keeps the user's keys longer:
    // 4.0 with a half-life of one hour falls below 0.01 after log2(400) = 8.6 hours.
    let offence = Offence {
        heat: 4.0,
        half_life: Duration::from_secs(3600),
        escalates: true,
        at_ms: T0 + 10,
        ..Offence::default()
    };
    state
        .record_offence("dgg}%", "u:1", &offence)
        .await
        .expect("offence");
    let ttl = query("PTTL", format!("{tag}:u:u:1")).await;
    assert!(ttl > 8 * HOUR && ttl <= 9 * HOUR, "hash: {ttl} ms");
    let ttl = query("PTTL", format!("{tag}:r:u:1")).await;
    assert!(ttl > 8 * HOUR && ttl <= 9 * HOUR, "recent: {ttl} ms");
    // The channel's lists are the channel's, not the user's: they keep the idle TTL.
    for key in [format!("{tag}:c"), format!("{tag}:h")] {
        let ttl = query("PTTL", key.clone()).await;
        assert!(ttl > HOUR - MINUTE && ttl <= HOUR, "{key}: {ttl} ms");
    }

    // Strikes that take longer still to be forgotten keep them longer again: 2 strikes with
    // a memory half-life of a day fall below one half after log2(4) = 2 days.
    let remembered = Offence {
        half_life: Duration::from_secs(3600),
        strikes: 2.0,
        memory_half_life: Duration::from_secs(24 * 3600),
        at_ms: T0 + 20,
        ..Offence::default()
    };
    state
        .record_offence("dgg}%", "u:1", &remembered)
        .await
        .expect("offence");
    for kind in ["u", "r", "t"] {
        let ttl = query("PTTL", format!("{tag}:{kind}:u:1")).await;
        assert!(ttl > 47 * HOUR && ttl <= 48 * HOUR, "{kind}: {ttl} ms");
    }
    redis.delete_keys().await;
}

#[tokio::test]
async fn redis_a_user_stored_before_strikes_reads_as_without_strikes() {
    let Some(redis) = common::RedisPrefix::create("redis_before_strikes").await else {
        return;
    };
    let state = UserState::redis(&redis.url, suite_config(), &redis.prefix)
        .await
        .expect("connect");
    // The hash as the previous version wrote it: no `strikes`, no `mhl`.
    let t0 = T0.to_string();
    let t0 = t0.as_str();
    let mut connection = redis.connection();
    ::redis::cmd("HSET")
        .arg(format!("{}{{chan}}:u:old", redis.prefix))
        .arg(&[
            "first", t0, "last", t0, "n", "4", "heat", "2.5", "heat_at", t0, "hl", "60000", "off",
            "2", "step", "1", "last_off", t0,
        ])
        .query_async::<i64>(&mut connection)
        .await
        .expect("HSET");
    let old = state
        .user("chan", "old")
        .await
        .expect("reads")
        .expect("known");
    assert_eq!(
        (
            old.messages,
            old.heat,
            old.offences,
            old.escalation_step,
            old.strikes
        ),
        (4, 2.5, 2, 1, 0.0)
    );
    // Its next offence and a pardon work on it as on any other.
    let offence = Offence {
        heat: 2.0,
        half_life: Duration::from_secs(60),
        strikes: 1.0,
        memory_half_life: Duration::from_secs(600),
        escalates: true,
        at_ms: T0 + MINUTE,
        ..Offence::default()
    };
    let after = state
        .record_offence("chan", "old", &offence)
        .await
        .expect("offence");
    assert_eq!(
        (
            after.heat,
            after.strikes,
            after.offences,
            after.escalation_step
        ),
        (3.25, 1.0, 3, 2)
    );
    let pardoned = state
        .pardon("chan", "old", &offence)
        .await
        .expect("pardon")
        .expect("known");
    assert_eq!(
        (pardoned.heat, pardoned.strikes, pardoned.offences),
        (1.25, 0.0, 2)
    );
    redis.delete_keys().await;
}

#[tokio::test]
async fn redis_history_of_a_quiet_channel_expires_with_its_window() {
    let Some(redis) = common::RedisPrefix::create("redis_history_expires").await else {
        return;
    };
    // Redis expires keys by its own clock, so this TTL is real time.
    let config = StateOptions {
        idle_ttl: Duration::from_millis(300),
        ..suite_config()
    };
    let state = UserState::redis(&redis.url, config, &redis.prefix)
        .await
        .expect("connect");
    observe(&state, "quiet", "u", "q1", T0).await;
    observe(&state, "quiet", "v", "q2", T0 + 1).await;
    assert_eq!(
        state.channel_history("quiet").await.expect("history").len(),
        2
    );
    // Nothing to await: Redis says nothing when a key expires (without keyspace
    // notifications), so poll, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let history = state.channel_history("quiet").await.expect("history");
        let (_, window) = state.peek("quiet", "w").await.expect("peek");
        if history.is_empty() {
            assert!(window.is_empty(), "the window expires with the history");
            break;
        }
        assert_eq!(history.len(), 2, "all or nothing");
        assert!(
            Instant::now() < deadline,
            "still there 5 s after a 300 ms TTL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(redis.keys().await.is_empty(), "every key had a TTL");
}

// ---- degraded mode ----

#[tokio::test]
async fn shared_memory_state_is_never_degraded() {
    let state = SharedState::memory(suite_config());
    let answer = state.observe(&obs("chan", "u", "m1", T0)).await;
    assert!(!answer.degraded);
    assert_eq!(state.backend_name(), "memory");
    assert!(!state.is_degraded());
}

/// Calls a degraded state a few times and checks each answers from memory, quickly.
async fn check_answers_from_memory(state: &SharedState) {
    for i in 0..3 {
        let started = Instant::now();
        let answer = state.observe(&obs("chan", "u", "m", T0 + i)).await;
        assert!(answer.degraded);
        assert_eq!(answer.value.0.messages, i as u64, "memory kept counting");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }
    let offence = Offence {
        heat: 1.0,
        half_life: Duration::from_secs(60),
        escalates: true,
        at_ms: T0 + 5,
        ..Offence::default()
    };
    let answer = state.record_offence("chan", "u", &offence).await;
    assert!(answer.degraded);
    assert_eq!(answer.value.escalation_step, 1);
    let answer = state.user("chan", "u").await;
    assert!(answer.degraded);
    assert_eq!(answer.value.expect("known").messages, 3);
    assert!(state.is_degraded());
    assert_eq!(state.backend_name(), "redis");
}

#[tokio::test]
async fn redis_where_nothing_listens_degrades_to_memory_quickly() {
    let started = Instant::now();
    let state = SharedState::redis("redis://127.0.0.1:1/0", suite_config(), "modbot-test:")
        .await
        .expect("only a bad URL fails");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    check_answers_from_memory(&state).await;

    let direct = UserState::redis("redis://127.0.0.1:1/0", suite_config(), "p:").await;
    assert!(direct.is_err(), "connecting directly reports the failure");
}

#[tokio::test]
async fn redis_that_never_answers_degrades_within_the_timeout() {
    // Accepts TCP connections (the kernel does) but never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("redis://{}/0", silent.local_addr().expect("address"));
    let config = StateOptions {
        redis_timeout: Duration::from_millis(200),
        ..suite_config()
    };
    let started = Instant::now();
    let state = SharedState::redis(&url, config, "modbot-test:")
        .await
        .expect("only a bad URL fails");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "start-up took {elapsed:?}"
    );
    check_answers_from_memory(&state).await;
    drop(silent);
}

#[tokio::test]
async fn a_bad_redis_url_is_an_error() {
    // rediss:// too: the redis crate is built without a TLS stack.
    for url in [
        "not a url",
        "http://127.0.0.1:6379",
        "rediss://127.0.0.1:6379",
    ] {
        assert!(
            SharedState::redis(url, suite_config(), "p:").await.is_err(),
            "{url}"
        );
    }
}

/// A TCP proxy in front of the real Redis that can be cut and restored.
struct Proxy {
    addr: std::net::SocketAddr,
    up_tx: tokio::sync::watch::Sender<bool>,
    /// Connections being forwarded now.
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (up_tx, up_rx) = tokio::sync::watch::channel(true);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let open_in_task = Arc::clone(&open);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*up_rx.borrow() {
                    continue; // dropped: connection closed at once
                }
                let mut up_rx = up_rx.clone();
                let target = target.clone();
                let open = Arc::clone(&open_in_task);
                open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = up_rx.wait_for(|up| !*up) => {}
                        }
                    }
                    drop(client);
                    open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        Self { addr, up_tx, open }
    }

    fn restore(&self) {
        self.up_tx.send_replace(true);
    }

    /// Refuses new connections and closes the open ones; returns once they are closed.
    async fn cut(&self) {
        self.up_tx.send_replace(false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.open.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "the proxy's connections did not close"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn degraded_mode_returns_to_redis_when_it_answers_again() {
    let Some(redis) = common::RedisPrefix::create("degraded_mode_returns_to_redis").await else {
        return;
    };
    let target = redis
        .url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned();
    let proxy = Proxy::start(target).await;
    let config = StateOptions {
        redis_retry_interval: Duration::from_millis(200),
        ..suite_config()
    };
    let url = format!("redis://{}/0", proxy.addr);
    let state = SharedState::redis(&url, config, &redis.prefix)
        .await
        .expect("connect");
    assert!(!state.is_degraded());
    for i in 0..2 {
        let answer = state.observe(&obs("chan", "u", "m", T0 + i)).await;
        assert!(!answer.degraded);
        assert_eq!(answer.value.0.messages, i as u64);
    }

    proxy.cut().await;
    let answer = state.observe(&obs("chan", "u", "m", T0 + 2)).await;
    assert!(
        answer.degraded,
        "the cut connection fails the call, memory answers"
    );
    assert_eq!(answer.value.0.messages, 0, "memory starts from nothing");
    let started = Instant::now();
    let answer = state.observe(&obs("chan", "u", "m", T0 + 3)).await;
    assert!(answer.degraded);
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "no Redis attempt before the retry interval"
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let answer = state.observe(&obs("chan", "u", "m", T0 + 4)).await;
        if !answer.degraded {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "still degraded 5 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!state.is_degraded());
    // Redis has what it had before the outage (two messages) plus nothing from memory.
    assert_eq!(answer.value.0.messages, 2);
    redis.delete_keys().await;
}

// ---- the channel window ----

#[test]
fn windows_outlive_the_ring_and_span_block_boundaries() {
    // 40 messages through a 20-message window: the ring's blocks of 16 come and go while
    // windows handed out earlier still read theirs.
    let state = memory(|config| config.recent_per_channel = 20);
    let mut windows = Vec::new();
    for i in 0..40 {
        let user = if i % 3 == 0 { "a" } else { "b" };
        let id = format!("m{i}");
        let (_, window) = state.observe(&obs("chan", user, &id, T0 + i));
        windows.push((user, i, window));
    }
    for (user, i, window) in &windows {
        let mut expected: Vec<String> = ((i - 20).max(0)..*i)
            .filter(|j| (if j % 3 == 0 { "a" } else { "b" }) != *user)
            .map(|j| format!("m{j}"))
            .collect();
        assert_eq!(ids(window), expected, "window of m{i} ({user})");
        assert_eq!(window.len(), expected.len());
        // Newest first, as the copy-paste rule reads it; and from both ends at once.
        expected.reverse();
        let newest_first: Vec<&str> = window.iter().rev().map(|m| m.message_id.as_str()).collect();
        assert_eq!(newest_first, expected, "reversed window of m{i}");
        let mut both_ends = window.iter();
        let (first, last) = (both_ends.next(), both_ends.next_back());
        assert_eq!(first.map(|m| &m.message_id), expected.last());
        assert_eq!(
            last.map(|m| &m.message_id),
            expected.first().filter(|_| expected.len() > 1)
        );
    }
}

#[test]
fn a_window_from_messages_yields_them_all() {
    let message = |user: &str, id: &str| ChannelMessage {
        user_id: user.into(),
        message_id: id.into(),
        text: id.into(),
        at_ms: T0,
    };
    let window = ChannelWindow::from_messages(vec![
        message("a", "1"),
        message("a", "2"),
        message("b", "3"),
    ]);
    assert_eq!(ids(&window), ["1", "2", "3"]);
    assert_eq!(window.len(), 3);
    let mut seen = Vec::new();
    for message in &window {
        seen.push(message.user_id.as_str());
    }
    assert_eq!(seen, ["a", "a", "b"]);
    assert!(ChannelWindow::default().is_empty());
    assert!(ChannelWindow::from_messages(Vec::new()).is_empty());
}
