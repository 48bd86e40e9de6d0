//! This replica's decision statistics for `Admin.GetStats`: verdicts by decision, rule and
//! label, latency and degraded components, over recent windows.
//!
//! (Skeleton: the recorder is filled in by the statistics work of issue 6.)

use crate::decision::Verdict;

/// Counts of this replica's verdicts.
#[derive(Debug, Default)]
pub struct Stats {}

impl Stats {
    /// An empty recorder, counting from now.
    pub fn new() -> Self {
        Self {}
    }

    /// Counts one verdict (its `elapsed` already set).
    pub fn record(&self, _verdict: &Verdict) {}
}
