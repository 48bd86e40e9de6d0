//! Which heads score, and which of them decide: the active set, and a candidate on trial.
//!
//! The encoder is loaded once; head sets are small (a few MB) and swapped whole. A
//! [`Lineup`] is one immutable snapshot: the active [`HeadSet`] and, while one is on trial,
//! a candidate scored on the same embeddings, either in **shadow** (scored and compared,
//! never enforced) or in a **split** (a share of channels or users decided by it). Every text
//! is queued with the lineup current when it was submitted and scored by exactly that
//! lineup; a promotion swaps the next lineup in atomically (`Scorer::set_lineup`), and texts
//! already queued finish with the one they started with.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::domain::LinkSignals;
use crate::infra::model::heads::Heads;

/// One version of the heads, as the service runs it.
#[derive(Debug, Clone, Default)]
pub struct HeadSet {
    /// `encoder@hash[/int8]+heads@version`, as verdicts carry it.
    pub version: String,
    /// The heads.
    pub heads: Heads,
    /// The thresholds the heads were trained with, in label order (`None`: none).
    pub trained_thresholds: Vec<Option<f64>>,
    /// How many lexical inputs its heads take ([`Heads::lexical`]'s length).
    lexical_len: usize,
}

impl HeadSet {
    /// `heads` served on the encoder whose version is `encoder_version`.
    pub fn new(encoder_version: &str, heads: Heads) -> Self {
        let trained_thresholds = heads
            .label_names()
            .iter()
            .map(|label| heads.threshold(label))
            .collect();
        let lexical_len = heads.lexical("", &LinkSignals::default()).len();
        let version = if heads.is_empty() {
            encoder_version.to_owned()
        } else {
            format!("{encoder_version}+heads@{}", heads.version)
        };
        Self {
            version,
            heads,
            trained_thresholds,
            lexical_len,
        }
    }

    /// `head/label` of each score.
    pub fn labels(&self) -> &[String] {
        self.heads.label_names()
    }
}

/// Who a split assigns to the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitUnit {
    /// Whole channels.
    Channel,
    /// Users (in every channel).
    User,
}

impl SplitUnit {
    /// `channel` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            SplitUnit::Channel => "channel",
            SplitUnit::User => "user",
        }
    }

    /// The unit named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "channel" => Some(SplitUnit::Channel),
            "user" => Some(SplitUnit::User),
            _ => None,
        }
    }
}

/// How a candidate is tried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrialMode {
    /// Scored on every message the active set scores; never enforced.
    Shadow,
    /// Decides for `share` of the `unit`s (the active set is then its shadow).
    Split {
        /// In `[0, 1]`.
        share: f64,
        /// Channels or users.
        unit: SplitUnit,
    },
}

/// A candidate head set on trial.
#[derive(Debug, Clone)]
pub struct Trial {
    /// The candidate.
    pub candidate: Arc<HeadSet>,
    /// How it is tried.
    pub mode: TrialMode,
}

/// The heads in service: one immutable snapshot.
#[derive(Debug, Clone, Default)]
pub struct Lineup {
    /// Bumped by every swap: cached scores of an older lineup are never served.
    pub generation: u64,
    /// The heads that decide (but for a split's share).
    pub active: Arc<HeadSet>,
    /// The candidate on trial, if any.
    pub trial: Option<Trial>,
}

impl Lineup {
    /// Scores per text: the active set's, then the candidate's.
    pub fn width(&self) -> usize {
        self.active.labels().len()
            + self
                .trial
                .as_ref()
                .map_or(0, |t| t.candidate.labels().len())
    }

    /// Whether there is anything to score.
    pub fn is_empty(&self) -> bool {
        self.active.heads.is_empty() && self.trial.is_none()
    }

    /// The lexical inputs of a normalised text and its links' evidence for every set, the
    /// active set's first.
    pub fn lexical(&self, normalized_text: &str, links: &LinkSignals) -> Vec<f32> {
        let mut out = self.active.heads.lexical(normalized_text, links);
        if let Some(trial) = &self.trial {
            out.extend(trial.candidate.heads.lexical(normalized_text, links));
        }
        out
    }

    /// The sets in scoring order, each with its share of the lexical inputs.
    pub fn sets(&self) -> Vec<(&HeadSet, std::ops::Range<usize>)> {
        let a = self.active.lexical_len;
        let mut sets = vec![(&*self.active, 0..a)];
        if let Some(trial) = &self.trial {
            sets.push((&*trial.candidate, a..a + trial.candidate.lexical_len));
        }
        sets
    }

    /// The active set's scores and the candidate's, from one text's scores.
    pub fn split<'s>(&self, scores: &'s [f32]) -> (&'s [f32], Option<&'s [f32]>) {
        let (active, candidate) = scores.split_at(self.active.labels().len().min(scores.len()));
        (active, self.trial.as_ref().map(|_| candidate))
    }

    /// Whether the candidate decides the message of `user` in `channel`: only in a split, for
    /// the units that hash below its share. The hash is of the candidate's heads version (not
    /// the encoder's part, which says int8 on some replicas) and the unit, so every replica
    /// assigns alike, and raising the share only adds units.
    pub fn candidate_decides(&self, channel: &str, user: &str) -> bool {
        let Some(Trial {
            candidate,
            mode: TrialMode::Split { share, unit },
        }) = &self.trial
        else {
            return false;
        };
        // A user is the same person in every channel of a chat: decided by one model in all.
        let key = match unit {
            SplitUnit::Channel => channel,
            SplitUnit::User => user,
        };
        split_point(&candidate.heads.version, key) < *share
    }
}

/// Where a unit falls in `[0, 1)` for a candidate.
pub fn split_point(candidate_version: &str, unit: &str) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(candidate_version.as_bytes());
    hasher.update([0]);
    hasher.update(unit.as_bytes());
    let digest = hasher.finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(version: &str) -> Arc<HeadSet> {
        Arc::new(HeadSet {
            version: version.to_owned(),
            ..HeadSet::default()
        })
    }

    fn split(share: f64, unit: SplitUnit) -> Lineup {
        Lineup {
            generation: 1,
            active: set("a"),
            trial: Some(Trial {
                candidate: set("b"),
                mode: TrialMode::Split { share, unit },
            }),
        }
    }

    #[test]
    fn a_split_assigns_its_share_and_growing_it_only_adds_units() {
        let users: Vec<String> = (0..10_000).map(|i| format!("user{i}")).collect();
        let chosen = |lineup: &Lineup| -> Vec<bool> {
            users
                .iter()
                .map(|u| lineup.candidate_decides("destinygg", u))
                .collect()
        };
        let tenth = chosen(&split(0.1, SplitUnit::User));
        let half = chosen(&split(0.5, SplitUnit::User));
        let count = |v: &[bool]| v.iter().filter(|&&b| b).count();
        assert!((900..1100).contains(&count(&tenth)), "{}", count(&tenth));
        assert!((4800..5200).contains(&count(&half)), "{}", count(&half));
        assert!(tenth.iter().zip(&half).all(|(t, h)| !t || *h));
        assert_eq!(count(&chosen(&split(0.0, SplitUnit::User))), 0);
        assert_eq!(count(&chosen(&split(1.0, SplitUnit::User))), users.len());
        // A user is decided alike in every channel; a channel split decides by channel only.
        let lineup = split(0.5, SplitUnit::User);
        for user in &users[..50] {
            assert_eq!(
                lineup.candidate_decides("a", user),
                lineup.candidate_decides("b", user)
            );
        }
        let lineup = split(0.5, SplitUnit::Channel);
        let picked: Vec<bool> = (0..200)
            .map(|i| lineup.candidate_decides(&format!("chan{i}"), "x"))
            .collect();
        for (i, p) in picked.iter().enumerate() {
            assert_eq!(lineup.candidate_decides(&format!("chan{i}"), "y"), *p);
        }
        assert!(picked.iter().any(|&p| p) && picked.iter().any(|&p| !p));
    }

    #[test]
    fn shadow_and_no_trial_never_let_the_candidate_decide() {
        let mut lineup = split(1.0, SplitUnit::Channel);
        lineup.trial.as_mut().unwrap().mode = TrialMode::Shadow;
        assert!(!lineup.candidate_decides("c", "u"));
        lineup.trial = None;
        assert!(!lineup.candidate_decides("c", "u"));
        assert_eq!(lineup.split(&[0.5]).1, None);
    }
}
