//! The engine: rules + history in, one verdict out.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::engine::normalize::normalize;
use crate::engine::rules::RuleSet;

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

[policy.model.labels."toxicity/insult"]
action = "hide"
[policy.model.labels."toxicity/threat"]
action = "timeout"
duration_secs = 600
threshold = 0.8
[policy.model.labels."spam/spam"]
action = "hold"
mode = "shadow"

[channel.quiet]
shadow = true

[channel.regulars.reputation]
trusted_above = 0.5
new_below = 0.05
trusted_margin = 0.05
new_margin = 0.05

[[rule]]
id = "scam"
kind = "phrase"
action = "timeout"
duration_secs = 600
harmful = true
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
            channel_recent: &crate::domain::ChannelWindow::default(),
            now_ms: 0,
            received: Instant::now(),
            model: ModelInput::NotConsulted,
            raid: &crate::engine::raid::Seen::default(),
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
fn a_first_offence_of_harm_is_a_warning_that_hides_the_message() {
    // A harmless rule's first offence: a warning, the message stays.
    let spam = decide("spam", &UserHistory::default());
    assert_eq!(spam.verdict.decision, Decision::Warn);
    // A harmful rule's: the same warning, but the message is hidden.
    let scam = decide("FREE NITRO here", &UserHistory::default());
    let verdict = &scam.verdict;
    assert_eq!(verdict.decision, Decision::Hide);
    assert_eq!(verdict.duration, None);
    let top = &verdict.reasons[0];
    assert_eq!(
        (top.source, top.label.as_str(), top.rule_id.as_str()),
        (ReasonSource::Escalation, escalation::HARM_HIDDEN_LABEL, "")
    );
    assert!(
        top.harmful
            && top
                .description
                .starts_with("a warning, and the message hidden")
    );
    assert!(top.description.ends_with("(rule scam)"), "{top:?}");
    assert_eq!(
        verdict.reasons[1].label, "escalation",
        "the softening is reported"
    );
    assert!(
        verdict
            .reasons
            .iter()
            .any(|r| r.rule_id == "scam" && r.harmful)
    );
    // It weighs on the ladder as the warning it is: a strike, the warning's heat.
    let offence = scam.offence.expect("an offence");
    let warning = spam.offence.expect("an offence");
    assert_eq!(
        (offence.heat, offence.strikes),
        (warning.heat, warning.strikes)
    );
    assert_eq!(
        escalation::charged_as(verdict.decision, &verdict.reasons),
        Decision::Warn
    );
    assert_eq!(escalation::charged_as(Decision::Hide, &[]), Decision::Hide);
    // Past the first offence a harmful message is timed out as before (a mute hides it).
    let again = decide("FREE NITRO here", &hot(0)).verdict;
    assert_eq!(again.decision, Decision::Timeout);
    assert!(
        again
            .reasons
            .iter()
            .all(|r| r.label != escalation::HARM_HIDDEN_LABEL)
    );
}

#[test]
fn raid_mode_hides_copies_holds_new_users_links_and_lowers_thresholds() {
    use crate::engine::raid::{Raid, RaidWatch, Seen};
    let engine = Engine::new(
        RuleSet::parse(&format!("{RULES}\n[policy.raid]\nenabled = true\n"), "test").unwrap(),
    );
    let policy = engine.rules().policy("destinygg");
    let mut watch = RaidWatch::default();
    let copy = "follow my channel for free skins at raidbot dot com";
    let mut seen = Seen::default();
    for i in 0..policy.raid.burst_users {
        seen = watch.message(&policy.raid, &format!("r{i}"), true, copy, 1_000);
    }
    let raid: Raid = seen.raid.clone().expect("a burst of copies is a raid");
    let labels: Vec<String> = LABELS.iter().map(|l| l.to_string()).collect();
    let decide_in_raid = |text: &str, seen: &Seen, history: &UserHistory, scores: &[f32; 4]| {
        let message = message("destinygg", text, &[]);
        let normalized = normalize(&message.text, &policy.emotes);
        engine
            .decide(
                &Inputs {
                    message: &message,
                    normalized: &normalized,
                    history,
                    channel_recent: &crate::domain::ChannelWindow::default(),
                    now_ms: 2_000,
                    received: Instant::now(),
                    model: ModelInput::Scored {
                        version: "v",
                        labels: &labels,
                        scores,
                        trained_thresholds: &TRAINED,
                    },
                    raid: seen,
                },
                DecideOptions::default(),
            )
            .verdict
    };
    let new_user = UserHistory {
        first_seen_ms: Some(2_000),
        ..UserHistory::default()
    };
    let regular = UserHistory {
        first_seen_ms: Some(-86_400_000),
        messages: 50,
        ..UserHistory::default()
    };
    // The copy that started it is hidden, with the raid named.
    let verdict = decide_in_raid(copy, &seen, &new_user, &[0.0; 4]);
    assert_eq!(verdict.decision, Decision::Hide);
    assert_eq!(verdict.reasons[0].label, RAID_COPY_LABEL);
    assert!(verdict.reasons[0].evidence.detail.contains("new users"));
    // In raid mode a new user's link is held; a regular's is not.
    let in_raid = Seen {
        raid: Some(raid.clone()),
        copy: false,
        started: false,
    };
    let link = "look at https://example.com/page";
    let held = decide_in_raid(link, &in_raid, &new_user, &[0.0; 4]);
    assert_eq!(held.decision, Decision::Hold);
    assert_eq!(held.reasons[0].label, RAID_LINK_LABEL);
    assert_eq!(
        decide_in_raid(link, &in_raid, &regular, &[0.0; 4]).decision,
        Decision::Allow
    );
    // The model's thresholds drop by threshold_drop (insult trained at 0.6): 0.55 acts now.
    let borderline = [0.55, 0.0, 0.0, 0.0];
    let insult = decide_in_raid("you are a clown", &in_raid, &regular, &borderline);
    assert_eq!(insult.decision, Decision::Hide);
    assert!(
        insult.reasons[0].description.contains("raid mode"),
        "{:?}",
        insult.reasons[0]
    );
    let calm = decide_in_raid("you are a clown", &Seen::default(), &regular, &borderline);
    assert_eq!(calm.decision, Decision::Allow);
    // Exempt users are never acted on by raid mode.
    let moderator = message("destinygg", copy, &["moderator"]);
    let normalized = normalize(&moderator.text, &policy.emotes);
    let exempt = engine.decide(
        &Inputs {
            message: &moderator,
            normalized: &normalized,
            history: &new_user,
            channel_recent: &crate::domain::ChannelWindow::default(),
            now_ms: 2_000,
            received: Instant::now(),
            model: ModelInput::NotConsulted,
            raid: &seen,
        },
        DecideOptions::default(),
    );
    assert_eq!(exempt.verdict.decision, Decision::Allow);
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

const LABELS: [&str; 4] = [
    "toxicity/insult",
    "toxicity/threat",
    "spam/spam",
    "sentiment/negative",
];
const TRAINED: [Option<f64>; 4] = [Some(0.6), Some(0.5), Some(0.7), None];

fn decide_scored(message: &ChatMessage, probabilities: &[f32; 4]) -> Decided {
    decide_scored_by(message, probabilities, &UserHistory::default())
}

fn decide_scored_by(
    message: &ChatMessage,
    probabilities: &[f32; 4],
    history: &UserHistory,
) -> Decided {
    let engine = engine();
    let policy = engine.rules().policy(&message.channel);
    let normalized = normalize(&message.text, &policy.emotes);
    let labels: Vec<String> = LABELS.iter().map(|l| l.to_string()).collect();
    engine.decide(
        &Inputs {
            message,
            normalized: &normalized,
            history,
            channel_recent: &crate::domain::ChannelWindow::default(),
            now_ms: 0,
            received: Instant::now(),
            model: ModelInput::Scored {
                version: "enc@1+heads@2",
                labels: &labels,
                scores: probabilities,
                trained_thresholds: &TRAINED,
            },
            raid: &crate::engine::raid::Seen::default(),
        },
        DecideOptions::default(),
    )
}

#[test]
fn a_label_at_its_trained_threshold_is_a_model_reason() {
    let decided = decide_scored(
        &message("destinygg", "you absolute walnut", &[]),
        &[0.9, 0.1, 0.0, 0.3],
    );
    let v = &decided.verdict;
    assert_eq!(v.decision, Decision::Hide);
    assert_eq!(v.model_version, "enc@1+heads@2");
    assert_eq!(v.reasons.len(), 1, "{:?}", v.reasons);
    let reason = &v.reasons[0];
    assert_eq!(reason.source, ReasonSource::Model);
    assert_eq!(reason.label, "toxicity/insult");
    assert!((reason.score - 0.9).abs() < 1e-6);
    assert_eq!(reason.threshold, 0.6, "the head's own threshold");
    assert!(reason.description.contains("toxicity/insult"));
    // Every label's probability is reported, acted on or not.
    assert_eq!(v.scores.len(), 4);
    assert!((v.scores["sentiment/negative"] - 0.3).abs() < 1e-6);
    assert!(v.degraded.is_empty());
    assert!(decided.offence.is_some(), "an enforced hide is an offence");
}

#[test]
fn the_channel_threshold_wins_over_the_trained_one() {
    // threat: trained 0.5, policy 0.8. 0.7 is below the policy's threshold.
    let v = decide_scored(&message("destinygg", "hm", &[]), &[0.0, 0.7, 0.0, 0.0]).verdict;
    assert_eq!(v.decision, Decision::Allow, "{:?}", v.reasons);
    let v = decide_scored(&message("destinygg", "hm", &[]), &[0.0, 0.85, 0.0, 0.0]).verdict;
    assert_eq!(
        v.decision,
        Decision::Warn,
        "a first timeout is softened to a warning"
    );
    assert_eq!(v.reasons.last().unwrap().threshold, 0.8);
}

#[test]
fn reputation_moves_borderline_model_thresholds() {
    use Decision::{Allow, Hide};
    let user = |messages, offences| UserHistory {
        messages,
        offences,
        ..UserHistory::default()
    };
    let trusted = user(1_000, 0); // reputation 0.83
    let ordinary = user(50, 0); // 0.20
    let stranger = UserHistory::default(); // 0
    let offender = user(20, 2); // -0.42
    // toxicity/insult: trained 0.6, hides. In `regulars` a trusted regular's threshold is
    // 0.65, a new user's (or one with offences) 0.55.
    let rows: &[(&UserHistory, f32, Decision, Decision, &str)] = &[
        (&ordinary, 0.62, Hide, Allow, "reached the threshold 0.60"),
        (
            &trusted,
            0.62,
            Allow,
            Hide,
            "reached the label's threshold but not the threshold 0.60 raised to 0.65 for a \
             trusted regular (reputation 0.83): not acted on",
        ),
        (
            &stranger,
            0.62,
            Hide,
            Allow,
            "lowered to 0.55 for a new user",
        ),
        (&ordinary, 0.57, Allow, Allow, ""),
        (&trusted, 0.57, Allow, Allow, ""),
        (
            &stranger,
            0.57,
            Hide,
            Allow,
            "reached the threshold 0.60 lowered to 0.55 for a new user (reputation 0.00)",
        ),
        (
            &offender,
            0.57,
            Hide,
            Allow,
            "for a user with offences (reputation -0.42)",
        ),
        (
            &trusted,
            0.7,
            Hide,
            Allow,
            "raised to 0.65 for a trusted regular",
        ),
    ];
    for &(history, score, decision, shadow_decision, said) in rows {
        let v = decide_scored_by(
            &message("regulars", "hm", &[]),
            &[score, 0.0, 0.0, 0.0],
            history,
        )
        .verdict;
        let why = format!(
            "reputation {:.2}, score {score}: {v:?}",
            history.reputation()
        );
        assert_eq!(
            (v.decision, v.shadow_decision),
            (decision, shadow_decision),
            "{why}"
        );
        match v.reasons.as_slice() {
            [] => assert!(said.is_empty(), "{why}"),
            [reason] => {
                assert!(reason.description.contains(said), "{why}");
                assert_eq!(reason.shadow, decision == Allow, "{why}");
                let moved = history.reputation() >= 0.5 || history.reputation() < 0.05;
                assert_eq!(
                    reason.evidence.detail.contains("reputation"),
                    moved,
                    "{why}"
                );
            }
            more => panic!("{more:?}"),
        }
    }
    // A channel without the table moves nothing: a stranger's borderline score is below 0.6.
    let v = decide_scored_by(
        &message("destinygg", "hm", &[]),
        &[0.57, 0.0, 0.0, 0.0],
        &stranger,
    )
    .verdict;
    assert_eq!(v.decision, Allow, "{v:?}");
    assert!(v.reasons.is_empty());
}

#[test]
fn reputation_knobs_are_validated() {
    let head = RULES.split("[policy.model.labels").next().unwrap();
    for (table, expected) in [
        (
            "trusted_margin = 1.5",
            "policy.reputation.trusted_margin: 1.5 is outside [0, 1]",
        ),
        (
            "new_margin = -0.1",
            "reputation.new_margin: -0.1 is outside [0, 1]",
        ),
        (
            "trusted_above = 2.0",
            "reputation.trusted_above: 2 is outside [-1, 1]",
        ),
        (
            "trusted_above = 0.1\nnew_below = 0.2",
            "reputation.new_below: must be at most reputation.trusted_above",
        ),
        ("tusted_margin = 0.1", "tusted_margin"),
    ] {
        let text = format!("{head}[policy.reputation]\n{table}\n");
        let error = RuleSet::parse(&text, "test").unwrap_err().to_string();
        assert!(error.contains(expected), "`{expected}` not in {error}");
    }
}

#[test]
fn shadow_labels_are_reported_not_enforced_and_labels_without_a_threshold_never_act() {
    let v = decide_scored(&message("destinygg", "hm", &[]), &[0.0, 0.0, 0.99, 0.99]).verdict;
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.shadow_decision, Decision::Hold);
    assert!(!v.enforced);
    assert_eq!(
        v.reasons.len(),
        1,
        "sentiment has no threshold: {:?}",
        v.reasons
    );
}

#[test]
fn exempt_authors_get_scores_but_no_model_reasons() {
    let v = decide_scored(
        &message("destinygg", "hm", &["moderator"]),
        &[0.99, 0.99, 0.99, 0.0],
    )
    .verdict;
    assert_eq!(v.decision, Decision::Allow);
    assert!(v.reasons.is_empty());
}

#[test]
fn rules_and_model_combine_harshest_first() {
    let v = decide_scored(
        &message("destinygg", "buy followers here", &[]),
        &[0.0, 0.9, 0.0, 0.0],
    )
    .verdict;
    // The threat (timeout 600, softened to a warning) outranks the ads rule's hide.
    assert_eq!(v.decision, Decision::Warn);
    assert!(v.reasons.iter().any(|r| r.rule_id == "ads"));
    assert!(v.reasons.iter().any(|r| r.label == "toxicity/threat"));
}

#[test]
fn an_unavailable_model_leaves_a_rules_only_verdict_marked_degraded() {
    let engine = engine();
    let message = message("destinygg", "free nitro for all", &[]);
    let normalized = normalize(&message.text, &engine.rules().policy("destinygg").emotes);
    let v = engine
        .decide(
            &Inputs {
                message: &message,
                normalized: &normalized,
                history: &UserHistory::default(),
                channel_recent: &crate::domain::ChannelWindow::default(),
                now_ms: 0,
                received: Instant::now(),
                model: ModelInput::Unavailable,
                raid: &crate::engine::raid::Seen::default(),
            },
            DecideOptions::default(),
        )
        .verdict;
    assert_eq!(v.degraded, [Degraded::Model]);
    assert_ne!(
        v.decision,
        Decision::Allow,
        "the rule that fired still acts"
    );
    assert!(v.model_version.is_empty());
    assert!(v.scores.is_empty());
}

#[test]
fn model_labels_are_validated() {
    let bad = [
        (
            r#"[policy.model.labels."insult"]
action = "hide""#,
            "head/label",
        ),
        (
            r#"[policy.model.labels."t/x"]
action = "hide"
threshold = 2.0"#,
            "outside [0, 1]",
        ),
        (
            r#"[policy.model.labels."t/x"]
action = "timeout""#,
            "duration_secs",
        ),
        (
            r#"[policy.model.labels."t/x"]
action = "allow""#,
            "cannot allow",
        ),
    ];
    let head = RULES.split("[policy.model.labels").next().unwrap();
    for (labels, expected) in bad {
        let text = format!("{head}{labels}\n");
        let error = RuleSet::parse(&text, "test").unwrap_err().to_string();
        assert!(error.contains(expected), "`{expected}` not in {error}");
        assert!(error.contains("policy.model.labels"), "{error}");
    }
}

#[test]
fn an_undecided_message_is_held_for_review_marked_degraded() {
    let engine = engine();
    let message = message("destinygg", "anything", &[]);
    let verdict = engine.undecided(&message, DecideOptions::default(), Instant::now());
    assert_eq!(verdict.decision, Decision::Hold);
    assert!(verdict.enforced && verdict.is_notable());
    assert_eq!(verdict.degraded, [Degraded::Decision]);
    assert_eq!(verdict.reasons.len(), 1);
    assert_eq!(verdict.reasons[0].label, UNDECIDED_LABEL);
    assert_eq!(verdict.reasons[0].source, ReasonSource::Policy);
    let dry = engine.undecided(&message, DecideOptions { dry_run: true }, Instant::now());
    assert!(!dry.enforced, "a dry run enforces nothing");
}
