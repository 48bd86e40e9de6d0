//! A peer's decisions, as a script wrote them for `modbot eval --peer FILE`: one JSON object
//! per line, `{"id", "acted"[, "score"][, "set"][, "peer"]}`.
//!
//! - `id`: the chat line's id (`eval --chat`), or the example's id in its dataset split;
//! - `acted`: whether the peer flags it, at its own cut-off;
//! - `score`: its probability of the positive class, when it has one (ranking metrics then
//!   use it; without it they use `acted` as 0 or 1);
//! - `set`: the dataset split the example is of (`insults/test`), absent for chat lines;
//! - `peer`: its name (the first one given names the column; else the file's name).
//!
//! `scripts/peer_profanity_check.py` writes `alt-profanity-check`'s.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::tools::datasets::TrainError;
use crate::tools::datasets::data::{each_jsonl, read_bytes};

/// One line of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerLine {
    id: String,
    acted: bool,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    set: Option<String>,
    #[serde(default)]
    peer: Option<String>,
}

/// The peer's decision on one example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerDecision {
    /// Whether it flags the example, at its own cut-off.
    pub acted: bool,
    /// Its probability of the positive class, when the file gives one.
    pub score: Option<f64>,
}

impl PeerDecision {
    /// The score ranking metrics use: the probability, or the decision as 0 or 1.
    pub fn ranking_score(&self) -> f64 {
        self.score.unwrap_or(if self.acted { 1.0 } else { 0.0 })
    }
}

/// A peer's decisions file, read whole.
#[derive(Debug)]
pub struct PeerFile {
    /// The peer's name: the file's first `peer`, else the file's name.
    pub name: String,
    /// By (`set`, or "" for chat lines; `id`).
    decisions: BTreeMap<(String, String), PeerDecision>,
}

impl PeerFile {
    /// Reads `path`; a line that is not a decision, a score outside [0, 1] or an id decided
    /// twice in one set is an error naming the line.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let bytes = read_bytes(path)?;
        let mut decisions = BTreeMap::new();
        let mut name = None;
        each_jsonl(path, &bytes, |line: PeerLine| {
            if name.is_none() {
                name = line.peer;
            }
            if let Some(score) = line.score
                && !(0.0..=1.0).contains(&score)
            {
                return Err(format!("score: {score} is outside [0, 1]"));
            }
            let set = line.set.unwrap_or_default();
            let decision = PeerDecision {
                acted: line.acted,
                score: line.score,
            };
            if decisions
                .insert((set.clone(), line.id.clone()), decision)
                .is_some()
            {
                let within = if set.is_empty() {
                    String::new()
                } else {
                    format!(" in {set}")
                };
                return Err(format!("id: `{}` is decided twice{within}", line.id));
            }
            Ok(())
        })?;
        let name = name.unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "peer".to_owned(), |s| s.to_string_lossy().into_owned())
        });
        Ok(Self { name, decisions })
    }

    /// Whether the file decides anything of `set` ("" for chat lines).
    pub fn covers(&self, set: &str) -> bool {
        self.decisions
            .range((set.to_owned(), String::new())..)
            .next()
            .is_some_and(|((s, _), _)| s == set)
    }

    /// Takes the decision on `id` of `set` ("" for chat lines) out of the file.
    pub fn take(&mut self, set: &str, id: &str) -> Option<PeerDecision> {
        self.decisions.remove(&(set.to_owned(), id.to_owned()))
    }

    /// The id of a decision of `set` not taken yet, if any.
    pub fn left_in(&self, set: &str) -> Option<&str> {
        self.decisions
            .keys()
            .find(|(s, _)| s == set)
            .map(|(_, id)| id.as_str())
    }
}
