//! `modbot eval`: how good the heads are, on held-out data, next to simple baselines.
//!
//! The heads are scored exactly as the service scores them (normalised text, the encoder, the
//! heads' calibrated outputs and the thresholds in `heads.json`) on a dataset's test split or
//! any labelled JSONL file. Binary heads get ROC-AUC, PR-AUC (average precision), precision,
//! recall, F1 and false-positive rate at the head's threshold, Brier score and calibration
//! error; the sentiment head gets accuracy, macro-F1 and a confusion matrix.
//!
//! Baselines are computed in the same run on the same splits: a TF-IDF logistic regression
//! over character and word n-grams ([`ngram`]) trained on the same training data, its
//! threshold chosen on the same validation split, for insults and spam; VADER's own compound
//! score (computed by VADER's reference implementation when the data was prepared) for
//! sentiment, with its standard ±0.05 cut-offs and with cut-offs tuned on the training split.
//!
//! `--report DIR` writes a Markdown report with ROC and precision–recall curves as SVG,
//! `--compare OLD NEW` two heads directories side by side, and `--check` recomputes the test
//! metrics recorded in `heads.json` and fails if any moved by more than the tolerance.

pub mod chat;
pub mod metrics;
pub mod peer;
pub mod plot;
mod report;

use std::collections::BTreeMap;

use serde::Serialize;

use self::metrics::Confusion;
use crate::engine::rules::lookalike::link_signals;
use crate::infra::model::heads::Heads;
use crate::infra::model::ngram;
use crate::tools::datasets::data::{self, Example, Split, Task};
use crate::tools::datasets::embed::{self, Embedder};
use crate::tools::datasets::{TrainError, argmax};

pub use self::report::{EvalOptions, run};

/// How a binary head did on one labelled set.
#[derive(Debug, Clone, Serialize)]
pub struct BinaryEvaluation {
    /// Examples.
    pub n: usize,
    /// Positive examples.
    pub positives: usize,
    /// Area under the ROC curve.
    pub roc_auc: f64,
    /// Area under the precision–recall curve (average precision).
    pub pr_auc: f64,
    /// The decision threshold (chosen on validation data).
    pub threshold: f64,
    /// Counts at the threshold.
    pub confusion: Confusion,
    /// Mean squared error of the probabilities.
    pub brier: f64,
    /// Expected calibration error over ten equal-width bins.
    pub ece: f64,
    /// Each example's score (for curves).
    #[serde(skip)]
    pub scores: Vec<f64>,
    /// Each example's truth.
    #[serde(skip)]
    pub labels: Vec<bool>,
}

impl BinaryEvaluation {
    /// Evaluates probabilities against labels at `threshold`.
    pub fn new(scores: Vec<f64>, labels: Vec<bool>, threshold: f64) -> Self {
        let probabilities: Vec<f64> = scores.iter().map(|s| s.clamp(0.0, 1.0)).collect();
        Self {
            n: scores.len(),
            positives: labels.iter().filter(|&&l| l).count(),
            roc_auc: metrics::roc_auc(&scores, &labels).unwrap_or(f64::NAN),
            pr_auc: metrics::average_precision(&scores, &labels).unwrap_or(f64::NAN),
            threshold,
            confusion: Confusion::at(&scores, &labels, threshold),
            brier: metrics::brier(&probabilities, &labels),
            ece: metrics::expected_calibration_error(&probabilities, &labels, 10),
            scores,
            labels,
        }
    }
}

/// How a multi-class head did on one labelled set.
#[derive(Debug, Clone, Serialize)]
pub struct MulticlassEvaluation {
    /// Examples.
    pub n: usize,
    /// Class names, in class order.
    pub classes: Vec<String>,
    /// Counts, `[actual][predicted]`.
    pub matrix: Vec<Vec<u64>>,
    /// Share predicted right.
    pub accuracy: f64,
    /// Mean of the classes' F1.
    pub macro_f1: f64,
    /// Precision, recall and F1 per class.
    pub per_class: Vec<(f64, f64, f64)>,
    /// Each example's predicted class (for error analysis).
    #[serde(skip)]
    pub predicted: Vec<usize>,
}

impl MulticlassEvaluation {
    /// Evaluates predicted classes against actual ones.
    pub fn new(predicted: &[usize], actual: &[usize], classes: &[&str]) -> Self {
        let matrix = metrics::confusion_matrix(predicted, actual, classes.len());
        Self {
            n: actual.len(),
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            accuracy: metrics::accuracy(&matrix),
            macro_f1: metrics::macro_f1(&matrix),
            per_class: metrics::per_class_prf(&matrix),
            matrix,
            predicted: predicted.to_vec(),
        }
    }
}

/// One head's (or baseline's) result on one labelled set.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Evaluation {
    /// A binary head.
    Binary(BinaryEvaluation),
    /// A multi-class head.
    Multiclass(MulticlassEvaluation),
}

impl Evaluation {
    /// The metrics as flat `name → value` pairs (what `heads.json` records).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        match self {
            Evaluation::Binary(b) => {
                out.insert("roc_auc".to_owned(), b.roc_auc);
                out.insert("pr_auc".to_owned(), b.pr_auc);
                out.insert("precision".to_owned(), b.confusion.precision());
                out.insert("recall".to_owned(), b.confusion.recall());
                out.insert("f1".to_owned(), b.confusion.f1());
                out.insert("fpr".to_owned(), b.confusion.fpr());
            }
            Evaluation::Multiclass(m) => {
                out.insert("accuracy".to_owned(), m.accuracy);
                out.insert("macro_f1".to_owned(), m.macro_f1);
                for (name, (_, _, f1)) in m.classes.iter().zip(&m.per_class) {
                    out.insert(format!("f1_{name}"), *f1);
                }
            }
        }
        out
    }

    /// One line for progress output.
    pub fn summary(&self) -> String {
        match self {
            Evaluation::Binary(b) => format!(
                "n={} ROC-AUC {:.4} PR-AUC {:.4} | at {:.3}: P {:.4} R {:.4} F1 {:.4} FPR {:.4}",
                b.n,
                b.roc_auc,
                b.pr_auc,
                b.threshold,
                b.confusion.precision(),
                b.confusion.recall(),
                b.confusion.f1(),
                b.confusion.fpr()
            ),
            Evaluation::Multiclass(m) => format!(
                "n={} accuracy {:.4} macro-F1 {:.4}",
                m.n, m.accuracy, m.macro_f1
            ),
        }
    }
}

/// Class probabilities of a task from the heads' flat scores: `[1 − p, p]` for a binary head,
/// the head's labels in order otherwise. `None` when the heads lack the task.
pub fn class_probabilities(heads: &Heads, task: &Task, scores: &[f32]) -> Option<Vec<f32>> {
    let position = |label: &str| {
        let name = format!("{}/{label}", task.head);
        heads.label_names().iter().position(|n| *n == name)
    };
    if task.is_binary() {
        let p = scores[position(task.labels[0])?];
        Some(vec![1.0 - p, p])
    } else {
        task.labels
            .iter()
            .map(|l| position(l).map(|i| scores[i]))
            .collect()
    }
}

/// Scores `examples` with the heads' `task` head and evaluates it (at the head's own
/// threshold for a binary head; by the most probable class otherwise).
pub fn evaluate_heads(
    heads: &Heads,
    task: &Task,
    examples: &[Example],
    embedder: &Embedder<'_>,
    what: &str,
) -> Result<Evaluation, TrainError> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let normalized = embed::normalized(&texts);
    let embeddings = embedder.embed_normalized(what, &normalized)?;
    evaluate_embedded(heads, task, examples, &normalized, &embeddings)
}

/// [`evaluate_heads`] on texts already normalised and embedded.
pub fn evaluate_embedded(
    heads: &Heads,
    task: &Task,
    examples: &[Example],
    normalized: &[String],
    embeddings: &[Vec<f32>],
) -> Result<Evaluation, TrainError> {
    let missing = || TrainError::Missing(format!("the heads have no `{}` head", task.head));
    let mut probabilities = Vec::with_capacity(examples.len());
    for (embedding, text) in embeddings.iter().zip(normalized) {
        let scores = heads.score(embedding, &heads.lexical(text, &link_signals(text)));
        probabilities.push(class_probabilities(heads, task, &scores).ok_or_else(missing)?);
    }
    let actual: Vec<usize> = examples.iter().map(|e| e.class).collect();
    Ok(if task.is_binary() {
        let threshold = heads
            .threshold(&format!("{}/{}", task.head, task.labels[0]))
            .unwrap_or(0.5);
        Evaluation::Binary(BinaryEvaluation::new(
            probabilities.iter().map(|p| f64::from(p[1])).collect(),
            actual.iter().map(|&c| c == 1).collect(),
            threshold,
        ))
    } else {
        let predicted: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
        Evaluation::Multiclass(MulticlassEvaluation::new(
            &predicted,
            &actual,
            &task.class_names(),
        ))
    })
}

/// The n-gram baseline for a binary task: trained on the task's training split minus the
/// validation split (the heads' own), with its threshold chosen on that validation split by
/// the same rule as the head's (`max_fpr` for spam). Returns the model and its threshold.
pub fn ngram_baseline(
    train_split: &Split,
    validation_fraction: f64,
    seed: u64,
    max_fpr: Option<f64>,
) -> (ngram::NgramModel, f64) {
    let (train, validation) =
        data::validation_split(train_split.examples.clone(), validation_fraction, seed);
    let texts: Vec<&str> = train.iter().map(|e| e.text.as_str()).collect();
    let labels: Vec<bool> = train.iter().map(|e| e.class == 1).collect();
    let model = ngram::NgramModel::fit(&texts, &labels, &ngram::NgramConfig::default());
    let scores: Vec<f64> = validation
        .iter()
        .map(|e| model.probability(&e.text))
        .collect();
    let labels: Vec<bool> = validation.iter().map(|e| e.class == 1).collect();
    let threshold = metrics::best_threshold(&scores, &labels, max_fpr).map_or(0.5, |c| c.threshold);
    (model, threshold)
}

/// VADER's class for a compound score with cut-offs `(negative_below, positive_above)`:
/// negative at or below the first, positive at or above the second, neutral between.
pub fn vader_class(compound: f64, cutoffs: (f64, f64)) -> usize {
    if compound <= cutoffs.0 {
        0
    } else if compound >= cutoffs.1 {
        2
    } else {
        1
    }
}

/// VADER's own cut-offs (its documentation's ±0.05).
pub const VADER_STANDARD_CUTOFFS: (f64, f64) = (-0.05, 0.05);

/// The cut-offs that maximise macro-F1 on `examples` (a grid of 0.05 steps), for the tuned
/// VADER baseline: the same chance to fit the training data that the heads get.
pub fn tune_vader_cutoffs(examples: &[Example]) -> (f64, f64) {
    let scored: Vec<(f64, usize)> = examples
        .iter()
        .filter_map(|e| e.vader_compound.map(|c| (c, e.class)))
        .collect();
    let actual: Vec<usize> = scored.iter().map(|s| s.1).collect();
    let mut best = (f64::NEG_INFINITY, VADER_STANDARD_CUTOFFS);
    for low in -19..=19 {
        for high in low..=19 {
            let cutoffs = (f64::from(low) * 0.05, f64::from(high) * 0.05);
            let predicted: Vec<usize> = scored.iter().map(|s| vader_class(s.0, cutoffs)).collect();
            let f1 = metrics::macro_f1(&metrics::confusion_matrix(&predicted, &actual, 3));
            if f1 > best.0 {
                best = (f1, cutoffs);
            }
        }
    }
    best.1
}

/// Test metrics recorded in a heads manifest, by head: `<dataset>/test.<metric>` → value.
pub fn recorded_metrics(heads: &Heads) -> BTreeMap<String, BTreeMap<String, f64>> {
    heads
        .heads()
        .iter()
        .map(|h| (h.name.clone(), h.metrics.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vader_cutoffs_classify_and_tune() {
        let cases = [
            (-0.5, 0),
            (-0.05, 0),
            (-0.049, 1),
            (0.0, 1),
            (0.049, 1),
            (0.05, 2),
            (0.9, 2),
        ];
        for (compound, class) in cases {
            assert_eq!(
                vader_class(compound, VADER_STANDARD_CUTOFFS),
                class,
                "{compound}"
            );
        }
        // Data whose neutral band is wide: tuning finds it.
        let examples: Vec<Example> = [
            (-0.8, 0),
            (-0.6, 0),
            (-0.3, 1),
            (0.2, 1),
            (0.35, 1),
            (0.7, 2),
            (0.9, 2),
        ]
        .iter()
        .enumerate()
        .map(|(i, &(c, class))| Example {
            id: i.to_string(),
            text: String::new(),
            class,
            source: String::new(),
            vader_compound: Some(c),
        })
        .collect();
        let (low, high) = tune_vader_cutoffs(&examples);
        assert!(low > -0.6 && low < -0.3, "{low}");
        assert!(high > 0.35 && high <= 0.7, "{high}");
    }

    #[test]
    fn evaluations_flatten_to_named_metrics() {
        let binary = Evaluation::Binary(BinaryEvaluation::new(
            vec![0.9, 0.8, 0.3, 0.1],
            vec![true, false, true, false],
            0.5,
        ));
        let m = binary.metrics();
        assert_eq!(m["roc_auc"], 0.75);
        assert_eq!(m["precision"], 0.5);
        assert_eq!(m["recall"], 0.5);
        assert_eq!(m["fpr"], 0.5);
        let multi = Evaluation::Multiclass(MulticlassEvaluation::new(
            &[0, 1, 2, 2],
            &[0, 1, 2, 1],
            &["negative", "neutral", "positive"],
        ));
        let m = multi.metrics();
        assert_eq!(m["accuracy"], 0.75);
        assert_eq!(m["f1_negative"], 1.0);
        assert!((m["f1_neutral"] - 2.0 / 3.0).abs() < 1e-12);
        assert!((m["macro_f1"] - (1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }
}
