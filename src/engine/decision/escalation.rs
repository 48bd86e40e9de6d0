//! Escalation for repeat offenders: a warning first, then timeouts doubling from the channel's
//! first timeout up to its maximum, then (optionally) a ban.
//!
//! A user's *heat* is the sum of their offences' weights, halving every `heat_half_life`. While
//! it stays at or above [`COOLED_HEAT`] the user is in one *heat episode* and each timeout
//! climbs one step of the ladder; once it has cooled below, the ladder starts again.

use std::time::Duration;

use crate::domain::{COOLED_HEAT, Decision, Evidence, Offence, Reason, ReasonSource, UserHistory};
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
    let heat = history.heat_at(now_ms, policy.heat_half_life);
    let cooled = heat < COOLED_HEAT;
    let step = if cooled { 0 } else { history.escalation_step };
    let reason = |decision: Decision, duration: Option<Duration>, description: String| Reason {
        source: ReasonSource::Escalation,
        rule_id: String::new(),
        label: "escalation".to_owned(),
        decision,
        duration,
        score: heat,
        threshold: COOLED_HEAT,
        shadow: false,
        evidence: Evidence {
            detail: format!(
                "heat {heat:.2}, {} earlier offences, ladder step {step}",
                history.offences
            ),
            ..Evidence::default()
        },
        description,
    };

    if cooled && policy.warn_first {
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
                format!("{step} timeouts in this heat episode: ban"),
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

/// The offence to record for an enforced decision, if it is one.
pub fn offence(decision: Decision, policy: &Escalation, now_ms: i64) -> Option<Offence> {
    let heat = heat_of(decision);
    (heat > 0.0).then(|| Offence {
        heat,
        half_life: policy.heat_half_life,
        escalates: decision == Decision::Timeout,
        at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Escalation {
        Escalation {
            warn_first: true,
            first_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(86_400),
            ban_after: 0,
            heat_half_life: Duration::from_secs(3600),
        }
    }

    fn history(heat: f64, step: u32, offences: u32) -> UserHistory {
        UserHistory {
            heat,
            heat_at_ms: 0,
            escalation_step: step,
            offences,
            ..UserHistory::default()
        }
    }

    /// (heat, step, rule decision, rule duration secs) -> (decision, duration secs)
    fn check(
        policy: &Escalation,
        heat: f64,
        step: u32,
        rule: (Decision, Option<u64>),
        expected: (Decision, Option<u64>),
    ) {
        let got = escalate(
            rule.0,
            rule.1.map(Duration::from_secs),
            &history(heat, step, step),
            policy,
            0,
        );
        assert_eq!(
            (got.decision, got.duration.map(|d| d.as_secs())),
            expected,
            "heat {heat}, step {step}, rule {rule:?}"
        );
        let changed = (got.decision, got.duration) != (rule.0, rule.1.map(Duration::from_secs));
        assert_eq!(
            got.reason.is_some(),
            changed,
            "a reason exactly when escalation changed the decision"
        );
    }

    /// (heat, step, the rule's decision and duration, the expected decision and duration)
    type Row = (f64, u32, (Decision, Option<u64>), (Decision, Option<u64>));

    #[test]
    fn the_ladder() {
        use Decision::{Ban, Hide, Timeout, Warn};
        let rows: &[Row] = &[
            (0.0, 0, (Timeout, Some(60)), (Warn, None)),
            (1.0, 0, (Timeout, Some(60)), (Timeout, Some(60))),
            (3.0, 1, (Timeout, Some(60)), (Timeout, Some(120))),
            (5.0, 2, (Timeout, Some(60)), (Timeout, Some(240))),
            (9.0, 10, (Timeout, Some(60)), (Timeout, Some(61_440))),
            (9.0, 11, (Timeout, Some(60)), (Timeout, Some(86_400))),
            (9.0, 40, (Timeout, Some(60)), (Timeout, Some(86_400))),
            // A rule's own longer timeout is never shortened.
            (3.0, 1, (Timeout, Some(600)), (Timeout, Some(600))),
            // Cooled down: the ladder starts again (with a warning).
            (0.1, 7, (Timeout, Some(60)), (Warn, None)),
            // Other decisions are never escalated or softened.
            (0.0, 0, (Ban, None), (Ban, None)),
            (9.0, 3, (Hide, None), (Hide, None)),
            (9.0, 3, (Warn, None), (Warn, None)),
        ];
        for &(heat, step, rule, expected) in rows {
            check(&policy(), heat, step, rule, expected);
        }
    }

    #[test]
    fn ban_after_and_no_warning() {
        use Decision::{Ban, Timeout};
        let p = Escalation {
            warn_first: false,
            ban_after: 3,
            ..policy()
        };
        let rows: &[Row] = &[
            (0.0, 0, (Timeout, Some(60)), (Timeout, Some(60))),
            (5.0, 2, (Timeout, Some(60)), (Timeout, Some(240))),
            (7.0, 3, (Timeout, Some(60)), (Ban, None)),
        ];
        for &(heat, step, rule, expected) in rows {
            check(&p, heat, step, rule, expected);
        }
    }

    #[test]
    fn heat_decays_with_the_half_life() {
        let p = policy();
        // 2.0 heat four half-lives ago is 0.125 now: just still hot; five ago, cooled.
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
            4 * 3_600_000,
        );
        assert_eq!(four.duration, Some(Duration::from_secs(480)));
        let five = escalate(
            Decision::Timeout,
            Some(Duration::from_secs(60)),
            &h,
            &p,
            5 * 3_600_000,
        );
        assert_eq!(five.decision, Decision::Warn);
    }

    #[test]
    fn offences_weigh_by_decision() {
        let p = policy();
        assert!(offence(Decision::Allow, &p, 0).is_none());
        assert!(offence(Decision::Hold, &p, 0).is_none());
        let t = offence(Decision::Timeout, &p, 5).unwrap();
        assert!(t.escalates && t.heat == 2.0 && t.at_ms == 5);
        assert!(!offence(Decision::Warn, &p, 0).unwrap().escalates);
    }
}
