//! The engine: rules + history in, one verdict out.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::normalize::normalize;
use crate::rules::RuleSet;

const RULES: &str = r#"
[policy]
shadow = false
exempt_roles = ["moderator"]
emotes = ["PepeLaugh"]
[policy.escalation]
warn_first = true
first_timeout_secs = 60
max_timeout_secs = 86400
ban_after = 0
heat_half_life_secs = 3600

[channel.quiet]
shadow = true

[[rule]]
id = "scam"
kind = "phrase"
action = "timeout"
duration_secs = 600
[rule.params]
phrases = ["free nitro"]

[[rule]]
id = "ads"
kind = "phrase"
action = "hide"
[rule.params]
phrases = ["buy followers"]

[[rule]]
id = "spam"
kind = "phrase"
action = "timeout"
duration_secs = 60
[rule.params]
phrases = ["spam"]

[[rule]]
id = "trial"
kind = "phrase"
action = "ban"
mode = "shadow"
[rule.params]
phrases = ["bitcoin"]
"#;

fn engine() -> Engine {
    Engine::new(RuleSet::parse(RULES, "test").unwrap())
}

fn message(channel: &str, text: &str, roles: &[&str]) -> ChatMessage {
    ChatMessage {
        channel: channel.into(),
        message_id: "m1".into(),
        user_id: "u1".into(),
        nick: "u1".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        text: text.into(),
        sent_at: SystemTime::UNIX_EPOCH,
    }
}

fn decide_with(message: &ChatMessage, history: &UserHistory, dry_run: bool) -> Decided {
    let engine = engine();
    let policy = engine.rules().policy(&message.channel);
    let normalized = normalize(&message.text, &policy.emotes);
    engine.decide(
        &Inputs {
            message,
            normalized: &normalized,
            history,
            channel_recent: &crate::users::ChannelWindow::default(),
            now_ms: 0,
            received: Instant::now(),
        },
        DecideOptions { dry_run },
    )
}

fn decide(text: &str, history: &UserHistory) -> Decided {
    decide_with(&message("destinygg", text, &[]), history, false)
}

fn hot(step: u32) -> UserHistory {
    UserHistory {
        heat: 4.0,
        heat_at_ms: 0,
        offences: step + 1,
        escalation_step: step,
        ..UserHistory::default()
    }
}

#[test]
fn harshest_enforced_reason_decides_with_every_reason_reported() {
    let decided = decide("buy followers and get FREE NITRO", &hot(0));
    let verdict = &decided.verdict;
    assert_eq!(verdict.decision, Decision::Timeout);
    assert_eq!(verdict.duration, Some(Duration::from_secs(600)));
    assert!(verdict.enforced);
    let ids: Vec<_> = verdict.reasons.iter().map(|r| r.rule_id.as_str()).collect();
    assert_eq!(ids, ["scam", "ads"]);
    assert_eq!(verdict.shadow_decision, Decision::Allow);
    let offence = decided.offence.expect("an enforced timeout is an offence");
    assert!(offence.escalates);
}

#[test]
fn first_offence_is_a_warning_then_the_ladder_climbs() {
    let first = decide("spam", &UserHistory::default());
    assert_eq!(first.verdict.decision, Decision::Warn);
    assert_eq!(first.verdict.reasons[0].source, ReasonSource::Escalation);
    assert_eq!(
        first.verdict.reasons[1].rule_id, "spam",
        "the rule is still reported"
    );
    assert!(
        !first.offence.unwrap().escalates,
        "a warning does not climb the ladder"
    );

    let expected = [(0, 60), (1, 120), (2, 240), (3, 480)];
    for (step, secs) in expected {
        let verdict = decide("spam", &hot(step)).verdict;
        assert_eq!(verdict.decision, Decision::Timeout, "step {step}");
        assert_eq!(
            verdict.duration,
            Some(Duration::from_secs(secs)),
            "step {step}"
        );
    }
}

#[test]
fn shadow_reasons_are_reported_never_enforced() {
    let decided = decide("bitcoin to the moon", &UserHistory::default());
    assert_eq!(decided.verdict.decision, Decision::Allow);
    assert_eq!(decided.verdict.shadow_decision, Decision::Ban);
    assert!(!decided.verdict.enforced);
    assert!(decided.verdict.is_notable());
    assert!(decided.offence.is_none());

    // A channel in shadow mode enforces nothing.
    let quiet = decide_with(&message("quiet", "free nitro", &[]), &hot(2), false);
    assert_eq!(quiet.verdict.decision, Decision::Allow);
    assert_eq!(quiet.verdict.shadow_decision, Decision::Timeout);
    assert!(quiet.offence.is_none());
}

#[test]
fn clean_messages_exempt_users_and_dry_runs() {
    let clean = decide("what a play PepeLaugh", &UserHistory::default());
    assert_eq!(clean.verdict.decision, Decision::Allow);
    assert!(
        clean.verdict.reasons.is_empty() && clean.verdict.enforced && !clean.verdict.is_notable()
    );
    assert!(clean.offence.is_none());

    let moderator = decide_with(
        &message("destinygg", "free nitro", &["moderator"]),
        &hot(1),
        false,
    );
    assert_eq!(moderator.verdict.decision, Decision::Allow);
    assert!(moderator.verdict.reasons.is_empty());

    let dry = decide_with(&message("destinygg", "free nitro", &[]), &hot(1), true);
    assert_eq!(dry.verdict.decision, Decision::Timeout);
    assert!(!dry.verdict.enforced);
    assert!(dry.offence.is_none(), "a dry run changes no history");
}

#[test]
fn decision_names_round_trip() {
    for d in [
        Decision::Allow,
        Decision::Hold,
        Decision::Hide,
        Decision::Warn,
        Decision::Timeout,
        Decision::Ban,
    ] {
        assert_eq!(Decision::from_name(d.as_str()), Some(d));
    }
    assert!(Decision::Ban > Decision::Timeout && Decision::Hold > Decision::Allow);
}
