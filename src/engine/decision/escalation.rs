//! Escalation for repeat offenders: a warning first, then timeouts doubling from the channel's
//! first timeout up to its maximum, then (optionally) a ban.
//!
//! The ladder reads two memories of a user's offences, both kept by user state beside each
//! other and decaying exponentially:
//!
//! - *Heat*, short: the sum of the offences' weights ([`heat_of`]: hide 0.5, warn 1, timeout 2,
//!   ban 4), halving every `heat_half_life` (an hour by default). While it stays at or above
//!   [`COOLED_HEAT`] the user is in one *heat episode*, and each timeout climbs one rung.
//! - *Strikes*, long: a count of the offences the ladder handles ([`strikes_of`]: one per
//!   warning, timeout or ban; a hidden message adds heat but no strike, since hiding is the
//!   rules' answer to noise like shouting, not a step toward a ban), halving every
//!   `memory_half_life` (a week by default). The ladder counts them to the nearest whole
//!   offence, so one strike is remembered for one memory half-life.
//!
//! From these ([`standing`]):
//!
//! - A *first offence* is one with the heat cooled *and* no strike remembered. Only then does
//!   `warn_first` turn a timeout into a warning. A user who posts a scam link every few hours
//!   cools down between links but keeps their strikes, so they get one warning a week, not
//!   one per link.
//! - The rung a timeout takes is the user's stored step while the episode lasts; after a
//!   cool-down the ladder does not start again from the bottom but *resumes* one rung per
//!   remembered strike (less the warning's strike, with `warn_first`). The offence recorded
//!   carries that rung ([`Offence::ladder_step`]), so the ladder climbs on from there.
//! - Once the rung reaches `ban_after` (when above 0) the next timeout-worthy offence is a
//!   ban. The shipped policy bans at rung 4: a warning, four timeouts (1, 2, 4, 8 minutes or
//!   the rule's own longer timeout), then a ban, whether the offences come minutes or days
//!   apart within the memory.
//!
//! Only a timeout is escalated or softened: a rule's hide, warning or ban is enforced as it
//! asks, and counts toward the ladder as above. An overturned appeal takes its offence back
//! ([`offence`] gives what to subtract, user state's `pardon` subtracts it).
//!
//! `warn_first` softens the punishment, never the visibility of harm: when a message has an
//! enforced *harmful* reason (a rule or model label marked `harmful`: scams, phishing, IP
//! loggers, slurs) and the outcome is a warning, the warning comes as a hide ([`hide_harm`]),
//! and the ladder weighs it as the warning it is ([`charged_as`]): a strike, the warning's heat.

use std::time::Duration;

use crate::domain::{
    COOLED_HEAT, Decision, Evidence, Offence, REMEMBERED_STRIKE, Reason, ReasonSource, UserHistory,
};
use crate::engine::rules::Escalation;

/// How much heat an enforced decision adds.
pub fn heat_of(decision: Decision) -> f64 {
    match decision {
        Decision::Allow | Decision::Hold => 0.0,
        Decision::Hide => 0.5,
        Decision::Warn => 1.0,
        Decision::Timeout => 2.0,
        Decision::Ban => 4.0,
    }
}

/// How many strikes an enforced decision adds: one for an offence the ladder handles (a
/// warning, timeout or ban), none for a hidden message.
pub fn strikes_of(decision: Decision) -> f64 {
    match decision {
        Decision::Allow | Decision::Hold | Decision::Hide => 0.0,
        Decision::Warn | Decision::Timeout | Decision::Ban => 1.0,
    }
}

/// Where a user stands on a channel's ladder at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// Heat decayed to the moment.
    pub heat: f64,
    /// Strikes decayed to the moment.
    pub strikes: f64,
    /// Strikes counted to the nearest whole offence (at least [`REMEMBERED_STRIKE`] is one).
    pub remembered: u32,
    /// The heat has cooled below [`COOLED_HEAT`]: the last heat episode is over.
    pub cooled: bool,
    /// Cooled with no strike remembered: `warn_first` would soften a timeout now.
    pub first_offence: bool,
    /// The rung a timeout takes now: the stored step while the episode lasts, and never below
    /// the rung the remembered strikes resume at.
    pub step: u32,
}

/// Where `history` stands on the ladder of `policy` at `now_ms`.
pub fn standing(history: &UserHistory, policy: &Escalation, now_ms: i64) -> Standing {
    let heat = history.heat_at(now_ms, policy.heat_half_life);
    let strikes = history.strikes_at(now_ms, policy.memory_half_life);
    let remembered = whole_strikes(strikes);
    let cooled = heat < COOLED_HEAT;
    let resumes_at = remembered.saturating_sub(u32::from(policy.warn_first));
    let episode = if cooled { 0 } else { history.escalation_step };
    Standing {
        heat,
        strikes,
        remembered,
        cooled,
        first_offence: cooled && remembered == 0,
        step: episode.max(resumes_at),
    }
}

/// `strikes` to the nearest whole offence, halves up (so [`REMEMBERED_STRIKE`] is one).
fn whole_strikes(strikes: f64) -> u32 {
    if strikes.is_finite() && strikes >= REMEMBERED_STRIKE {
        // Saturating: `as` clamps a huge value to u32::MAX.
        (strikes + 0.5).floor() as u32
    } else {
        0
    }
}

/// The outcome of escalation.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalated {
    /// The decision to enforce.
    pub decision: Decision,
    /// Its duration (`None` for a permanent ban or no duration).
    pub duration: Option<Duration>,
    /// Why it differs from what the rule asked for, when it does.
    pub reason: Option<Reason>,
}

/// Applies the ladder to the harshest enforced rule decision, given the user's history before
/// this message.
pub fn escalate(
    decision: Decision,
    duration: Option<Duration>,
    history: &UserHistory,
    policy: &Escalation,
    now_ms: i64,
) -> Escalated {
    let unchanged = Escalated {
        decision,
        duration,
        reason: None,
    };
    if decision != Decision::Timeout {
        return unchanged;
    }
    let at = standing(history, policy, now_ms);
    let step = at.step;
    let reason = |decision: Decision, duration: Option<Duration>, description: String| Reason {
        source: ReasonSource::Escalation,
        rule_id: String::new(),
        label: "escalation".to_owned(),
        decision,
        duration,
        score: at.heat,
        threshold: COOLED_HEAT,
        shadow: false,
        harmful: false,
        evidence: Evidence {
            detail: format!(
                "heat {:.2}, strikes {:.2}, {} earlier offences, ladder step {step}",
                at.heat, at.strikes, history.offences
            ),
            ..Evidence::default()
        },
        description,
    };

    if at.first_offence && policy.warn_first {
        return Escalated {
            decision: Decision::Warn,
            duration: None,
            reason: Some(reason(
                Decision::Warn,
                None,
                "first offence: a warning instead of a timeout".to_owned(),
            )),
        };
    }
    if policy.ban_after > 0 && step >= policy.ban_after {
        return Escalated {
            decision: Decision::Ban,
            duration: None,
            reason: Some(reason(
                Decision::Ban,
                None,
                format!(
                    "repeat offence on step {step} of the ladder ({} strikes remembered): ban",
                    at.remembered
                ),
            )),
        };
    }
    let ladder = policy
        .first_timeout
        .checked_mul(1u32.checked_shl(step.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(policy.max_timeout)
        .min(policy.max_timeout);
    let rule_duration = duration.unwrap_or(policy.first_timeout);
    let chosen = ladder.max(rule_duration);
    if chosen == rule_duration {
        return Escalated {
            decision,
            duration: Some(chosen),
            reason: None,
        };
    }
    Escalated {
        decision,
        duration: Some(chosen),
        reason: Some(reason(
            Decision::Timeout,
            Some(chosen),
            format!(
                "repeat offence: timeout {}s (step {step} of the ladder)",
                chosen.as_secs()
            ),
        )),
    }
}

/// The label of the reason [`hide_harm`] adds.
pub const HARM_HIDDEN_LABEL: &str = "harm-hidden";

/// The reason that turns a warning for a harmful message into a hide, naming the harm
/// (`harm`, an enforced reason marked harmful). The verdict's decision becomes
/// [`Decision::Hide`]; [`charged_as`] still weighs it as a warning.
pub fn hide_harm(harm: &Reason) -> Reason {
    Reason {
        source: ReasonSource::Escalation,
        // Rule ids name rule reasons only (stats count them); the description names the rule.
        rule_id: String::new(),
        label: HARM_HIDDEN_LABEL.to_owned(),
        decision: Decision::Hide,
        duration: None,
        score: harm.score,
        threshold: harm.threshold,
        shadow: false,
        harmful: true,
        evidence: Evidence {
            detail: "a warning for harm: the message is hidden as well".to_owned(),
            ..Evidence::default()
        },
        description: format!("a warning, and the message hidden: {}", harm.description),
    }
}

/// What an enforced verdict weighs as on the ladder: its decision, except that a harmful
/// message's warning carried out as a hide ([`hide_harm`]) weighs as the warning.
pub fn charged_as(decision: Decision, reasons: &[Reason]) -> Decision {
    let hidden_harm = || {
        reasons
            .iter()
            .any(|r| r.source == ReasonSource::Escalation && r.label == HARM_HIDDEN_LABEL)
    };
    if decision == Decision::Hide && hidden_harm() {
        Decision::Warn
    } else {
        decision
    }
}

/// The offence to record for an enforced decision, if it is one, given the user's history
/// before it (for the rung it was decided on). The same offence, with the history left out
/// (`None`: rung 0), is what a pardon takes back.
pub fn offence(
    decision: Decision,
    history: Option<&UserHistory>,
    policy: &Escalation,
    now_ms: i64,
) -> Option<Offence> {
    let heat = heat_of(decision);
    (heat > 0.0).then(|| Offence {
        heat,
        half_life: policy.heat_half_life,
        strikes: strikes_of(decision),
        memory_half_life: policy.memory_half_life,
        escalates: decision == Decision::Timeout,
        ladder_step: history.map_or(0, |h| standing(h, policy, now_ms).step),
        at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn policy() -> Escalation {
        Escalation {
            warn_first: true,
            first_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(86_400),
            ban_after: 0,
            heat_half_life: Duration::from_secs(3600),
            memory_half_life: Duration::from_secs(7 * 24 * 3600),
        }
    }

    fn history(heat: f64, strikes: f64, step: u32) -> UserHistory {
        UserHistory {
            heat,
            heat_at_ms: 0,
            strikes,
            escalation_step: step,
            offences: step,
            ..UserHistory::default()
        }
    }

    /// (heat, strikes, stored step, the rule's decision and duration secs, the expected
    /// decision and duration secs)
    type Row = (
        f64,
        f64,
        u32,
        (Decision, Option<u64>),
        (Decision, Option<u64>),
    );

    fn check(policy: &Escalation, rows: &[Row]) {
        for &(heat, strikes, step, rule, expected) in rows {
            let got = escalate(
                rule.0,
                rule.1.map(Duration::from_secs),
                &history(heat, strikes, step),
                policy,
                0,
            );
            assert_eq!(
                (got.decision, got.duration.map(|d| d.as_secs())),
                expected,
                "heat {heat}, strikes {strikes}, step {step}, rule {rule:?}"
            );
            let changed = (got.decision, got.duration) != (rule.0, rule.1.map(Duration::from_secs));
            assert_eq!(
                got.reason.is_some(),
                changed,
                "a reason exactly when escalation changed the decision"
            );
        }
    }

    #[test]
    fn the_ladder() {
        use Decision::{Ban, Hide, Timeout, Warn};
        check(
            &policy(),
            &[
                (0.0, 0.0, 0, (Timeout, Some(60)), (Warn, None)),
                (1.0, 1.0, 0, (Timeout, Some(60)), (Timeout, Some(60))),
                (3.0, 2.0, 1, (Timeout, Some(60)), (Timeout, Some(120))),
                (5.0, 3.0, 2, (Timeout, Some(60)), (Timeout, Some(240))),
                (9.0, 11.0, 10, (Timeout, Some(60)), (Timeout, Some(61_440))),
                (9.0, 12.0, 11, (Timeout, Some(60)), (Timeout, Some(86_400))),
                (9.0, 41.0, 40, (Timeout, Some(60)), (Timeout, Some(86_400))),
                // A rule's own longer timeout is never shortened.
                (3.0, 2.0, 1, (Timeout, Some(600)), (Timeout, Some(600))),
                // Warm from hidden messages alone (no strike): not a first offence.
                (1.0, 0.0, 0, (Timeout, Some(60)), (Timeout, Some(60))),
                // Cooled down and forgotten: the ladder starts again, with a warning.
                (0.1, 0.0, 7, (Timeout, Some(60)), (Warn, None)),
                (0.1, 0.49, 7, (Timeout, Some(60)), (Warn, None)),
                // Cooled down, but the warning is remembered: no second warning; the ladder
                // resumes one rung per remembered strike beyond the warning.
                (0.1, 0.5, 0, (Timeout, Some(60)), (Timeout, Some(60))),
                (0.1, 1.0, 3, (Timeout, Some(60)), (Timeout, Some(60))),
                (0.1, 2.4, 3, (Timeout, Some(60)), (Timeout, Some(120))),
                (0.1, 2.5, 0, (Timeout, Some(60)), (Timeout, Some(240))),
                (0.0, 4.0, 0, (Timeout, Some(60)), (Timeout, Some(480))),
                // While the episode lasts the stored step counts, never less than the strikes.
                (1.0, 4.0, 1, (Timeout, Some(60)), (Timeout, Some(480))),
                (1.0, 1.0, 5, (Timeout, Some(60)), (Timeout, Some(1_920))),
                // Other decisions are never escalated or softened.
                (0.0, 0.0, 0, (Ban, None), (Ban, None)),
                (9.0, 9.0, 3, (Hide, None), (Hide, None)),
                (9.0, 9.0, 3, (Warn, None), (Warn, None)),
            ],
        );
    }

    #[test]
    fn ban_after_and_no_warning() {
        use Decision::{Ban, Timeout};
        let p = Escalation {
            warn_first: false,
            ban_after: 3,
            ..policy()
        };
        check(
            &p,
            &[
                (0.0, 0.0, 0, (Timeout, Some(60)), (Timeout, Some(60))),
                (5.0, 2.0, 2, (Timeout, Some(60)), (Timeout, Some(240))),
                (7.0, 3.0, 3, (Timeout, Some(60)), (Ban, None)),
                // Without warnings every remembered strike is a rung: three remembered
                // timeouts ban after a cool-down too.
                (0.0, 1.0, 0, (Timeout, Some(60)), (Timeout, Some(120))),
                (0.0, 2.6, 0, (Timeout, Some(60)), (Ban, None)),
            ],
        );
        let with_warning = Escalation {
            ban_after: 3,
            ..policy()
        };
        check(
            &with_warning,
            &[
                // With warnings, the warning's strike is not a rung.
                (0.0, 3.0, 0, (Timeout, Some(60)), (Timeout, Some(240))),
                (0.0, 4.0, 0, (Timeout, Some(60)), (Ban, None)),
            ],
        );
    }

    #[test]
    fn heat_decays_with_the_half_life() {
        let p = policy();
        // 2.0 heat four half-lives ago is 0.125 now: just still hot; five ago, cooled (and
        // with no strike remembered, a first offence again).
        let h = UserHistory {
            heat: 2.0,
            heat_at_ms: 0,
            escalation_step: 3,
            offences: 3,
            ..UserHistory::default()
        };
        let four = escalate(
            Decision::Timeout,
            Some(Duration::from_secs(60)),
            &h,
            &p,
            4 * HOUR_MS,
        );
        assert_eq!(four.duration, Some(Duration::from_secs(480)));
        let five = escalate(
            Decision::Timeout,
            Some(Duration::from_secs(60)),
            &h,
            &p,
            5 * HOUR_MS,
        );
        assert_eq!(five.decision, Decision::Warn);
    }

    #[test]
    fn strikes_decay_with_the_memory_half_life() {
        let p = policy();
        let week = 7 * 24 * HOUR_MS;
        // One warning: remembered for one memory half-life (1.0 → 0.5), then forgotten.
        let warned = history(1.0, 1.0, 0);
        for (at, expected) in [
            (5 * HOUR_MS, Decision::Timeout),
            (week, Decision::Timeout),
            (week + 1, Decision::Warn),
        ] {
            let got = escalate(Decision::Timeout, None, &warned, &p, at);
            assert_eq!(got.decision, expected, "{at} ms after the warning");
        }
        let at = standing(&warned, &p, 2 * week);
        assert!((at.strikes - 0.25).abs() < 1e-12, "{at:?}");
        assert_eq!((at.remembered, at.first_offence), (0, true));
    }

    #[test]
    fn offences_weigh_by_decision() {
        let p = policy();
        assert!(offence(Decision::Allow, None, &p, 0).is_none());
        assert!(offence(Decision::Hold, None, &p, 0).is_none());
        let t = offence(Decision::Timeout, None, &p, 5).unwrap();
        assert!(t.escalates && t.heat == 2.0 && t.strikes == 1.0 && t.at_ms == 5);
        assert_eq!(t.memory_half_life, p.memory_half_life);
        let w = offence(Decision::Warn, None, &p, 0).unwrap();
        assert!(!w.escalates && w.strikes == 1.0);
        let h = offence(Decision::Hide, None, &p, 0).unwrap();
        assert!(
            h.heat == 0.5 && h.strikes == 0.0,
            "a hide adds heat, no strike"
        );
        // The rung it was decided on: three remembered strikes after a cool-down.
        let resumed = offence(Decision::Timeout, Some(&history(0.0, 3.0, 0)), &p, 0).unwrap();
        assert_eq!(resumed.ladder_step, 2);
    }

    /// A scammer's history as user state keeps it (the memory backend's arithmetic, done
    /// here by hand with the same rules): every offence decays heat and strikes to its time,
    /// resets the step after a cool-down, lifts it to the offence's rung and climbs one for a
    /// timeout.
    fn record(history: &mut UserHistory, offence: &Offence) {
        let heat = history.heat_at(offence.at_ms, offence.half_life);
        let strikes = history.strikes_at(offence.at_ms, offence.memory_half_life);
        let episode = if heat < COOLED_HEAT {
            0
        } else {
            history.escalation_step
        };
        history.escalation_step = episode.max(offence.ladder_step) + u32::from(offence.escalates);
        history.heat = heat + offence.heat;
        history.strikes = strikes + offence.strikes;
        history.heat_at_ms = offence.at_ms;
        history.offences += 1;
    }

    #[test]
    fn a_scammer_every_few_hours_is_warned_once_then_timed_out_then_banned() {
        let p = Escalation {
            ban_after: 4,
            ..policy()
        };
        // From close enough that the heat stays warm (2 hours) to far enough that it cools
        // between two (a warning's 1.0 is below 0.125 after three hours): the strikes remember,
        // so one warning, four timeouts, a ban. A scam a day, and the strikes fade a tenth
        // between two: the ladder resumes lower and takes two timeouts more.
        use Decision::{Ban, Timeout, Warn};
        for (gap_hours, timeouts) in [(2, 4), (3, 4), (4, 4), (8, 4), (24, 6)] {
            let mut history = UserHistory::default();
            let mut ladder = Vec::new();
            for i in 0..=timeouts + 1 {
                let now = i64::from(i) * gap_hours * HOUR_MS;
                let got = escalate(
                    Decision::Timeout,
                    Some(Duration::from_secs(600)),
                    &history,
                    &p,
                    now,
                );
                ladder.push(got.decision);
                let offence = offence(got.decision, Some(&history), &p, now).unwrap();
                record(&mut history, &offence);
            }
            let mut expected = vec![Warn];
            expected.extend(std::iter::repeat_n(Timeout, timeouts as usize));
            expected.push(Ban);
            assert_eq!(ladder, expected, "one scam every {gap_hours} hours");
        }
    }
}
