//! How a candidate head set compares with the active one on live traffic, on this replica.
//!
//! While a candidate is on trial (`Admin.TryModel`), every message the model scores is
//! decided twice, once with each set's scores, with the same rules, history and raid state;
//! one decision is enforced (the active set's, or the candidate's for a split's share) and
//! the other is only counted. [`Trials`] keeps the counts per candidate version for
//! `GetModelInfo`; the same counts leave as metrics carrying the version
//! (`modbot_model_decisions_total{version, role, decision}`,
//! `modbot_model_trial_total{candidate, outcome}`) for the fleet's view.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::domain::Decision;

/// Candidate versions remembered at most (the oldest is forgotten first).
const MAX_VERSIONS: usize = 8;

/// One candidate's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrialCounts {
    /// Messages decided by both sets.
    pub compared: u64,
    /// Of them, decided alike.
    pub agreed: u64,
    /// Of them, decided more harshly by the candidate.
    pub candidate_stricter: u64,
    /// Of them, decided more leniently by the candidate.
    pub candidate_laxer: u64,
    /// Of them, enforced as the candidate decided (a split's share).
    pub decided_by_candidate: u64,
    /// The candidate's decisions, by [`Decision::index`]: what it did or would have done.
    pub candidate_decisions: [u64; 6],
    /// The active set's decisions on the same messages, by [`Decision::index`].
    pub active_decisions: [u64; 6],
}

/// One message decided by both sets.
#[derive(Debug, Clone, Copy)]
pub struct Comparison<'a> {
    /// The candidate's version.
    pub candidate: &'a str,
    /// The active set's version.
    pub active: &'a str,
    /// What the candidate decided.
    pub candidate_decision: Decision,
    /// What the active set decided.
    pub active_decision: Decision,
    /// Whether the candidate's decision was the enforced one.
    pub by_candidate: bool,
}

/// This replica's trial counts, by candidate version.
#[derive(Debug, Default)]
pub struct Trials {
    counts: Mutex<BTreeMap<String, (u64, TrialCounts)>>,
}

impl Trials {
    /// Counts one message decided by both sets.
    pub fn record(&self, c: &Comparison<'_>) {
        let outcome = match c.candidate_decision.cmp(&c.active_decision) {
            std::cmp::Ordering::Equal => "agree",
            std::cmp::Ordering::Greater => "stricter",
            std::cmp::Ordering::Less => "laxer",
        };
        metrics::counter!(
            "modbot_model_trial_total",
            "candidate" => c.candidate.to_owned(),
            "outcome" => outcome
        )
        .increment(1);
        let (candidate_role, active_role) = if c.by_candidate {
            ("enforced", "shadow")
        } else {
            ("shadow", "enforced")
        };
        metrics::counter!(
            "modbot_model_decisions_total",
            "version" => c.candidate.to_owned(),
            "role" => candidate_role,
            "decision" => c.candidate_decision.as_str()
        )
        .increment(1);
        metrics::counter!(
            "modbot_model_decisions_total",
            "version" => c.active.to_owned(),
            "role" => active_role,
            "decision" => c.active_decision.as_str()
        )
        .increment(1);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = counts.values().map(|(order, _)| *order).max().unwrap_or(0) + 1;
        if !counts.contains_key(c.candidate) && counts.len() >= MAX_VERSIONS {
            let oldest = counts
                .iter()
                .min_by_key(|(_, (order, _))| *order)
                .map(|(version, _)| version.clone());
            if let Some(oldest) = oldest {
                counts.remove(&oldest);
            }
        }
        let (_, entry) = counts
            .entry(c.candidate.to_owned())
            .or_insert_with(|| (next, TrialCounts::default()));
        entry.compared += 1;
        match outcome {
            "agree" => entry.agreed += 1,
            "stricter" => entry.candidate_stricter += 1,
            _ => entry.candidate_laxer += 1,
        }
        entry.decided_by_candidate += u64::from(c.by_candidate);
        entry.candidate_decisions[c.candidate_decision.index()] += 1;
        entry.active_decisions[c.active_decision.index()] += 1;
    }

    /// Counts one message decided by the active set alone (no candidate on trial).
    pub fn record_alone(&self, version: &str, decision: Decision) {
        metrics::counter!(
            "modbot_model_decisions_total",
            "version" => version.to_owned(),
            "role" => "enforced",
            "decision" => decision.as_str()
        )
        .increment(1);
    }

    /// The counts of `candidate` on this replica (zero when it was never compared).
    pub fn counts(&self, candidate: &str) -> TrialCounts {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(candidate)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(candidate: &str, c: Decision, a: Decision, by_candidate: bool) -> Comparison<'_> {
        Comparison {
            candidate,
            active: "active",
            candidate_decision: c,
            active_decision: a,
            by_candidate,
        }
    }

    #[test]
    fn counts_agreement_direction_and_decisions_per_candidate() {
        let trials = Trials::default();
        trials.record(&compare("b", Decision::Allow, Decision::Allow, false));
        trials.record(&compare("b", Decision::Hide, Decision::Allow, true));
        trials.record(&compare("b", Decision::Hold, Decision::Timeout, false));
        let b = trials.counts("b");
        assert_eq!(
            (
                b.compared,
                b.agreed,
                b.candidate_stricter,
                b.candidate_laxer,
                b.decided_by_candidate
            ),
            (3, 1, 1, 1, 1)
        );
        assert_eq!(b.candidate_decisions, [1, 1, 1, 0, 0, 0]);
        assert_eq!(b.active_decisions, [2, 0, 0, 0, 1, 0]);
        assert_eq!(trials.counts("never"), TrialCounts::default());
    }

    #[test]
    fn only_the_latest_versions_are_kept() {
        let trials = Trials::default();
        for i in 0..MAX_VERSIONS + 3 {
            trials.record(&compare(
                &format!("v{i}"),
                Decision::Allow,
                Decision::Allow,
                false,
            ));
        }
        assert_eq!(trials.counts("v0").compared, 0);
        assert_eq!(trials.counts(&format!("v{}", MAX_VERSIONS + 2)).compared, 1);
        assert_eq!(trials.counts.lock().unwrap().len(), MAX_VERSIONS);
    }
}
