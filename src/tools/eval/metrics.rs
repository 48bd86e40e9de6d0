//! Classification metrics for `modbot eval` and `modbot train`.
//!
//! - Ranking quality of binary scores: [`roc_auc`], [`average_precision`] and the curves behind
//!   them ([`roc_curve`], [`pr_curve`], thinned for plotting by [`thin`]).
//! - Decisions at a threshold: [`Confusion`], and [`best_threshold`] to choose one.
//! - Multi-class decisions: [`confusion_matrix`], [`per_class_prf`], [`macro_f1`],
//!   [`accuracy`].
//! - Calibration: [`Platt`] scaling, [`brier`], [`expected_calibration_error`], [`log_loss`].
//!
//! The definitions follow scikit-learn's, so numbers compare with published baselines; the tests
//! pin values worked out by hand or given by scikit-learn.
//!
//! Every function that takes scores (or probabilities) and labels takes slices of the same
//! length, one score and one label per example. A length mismatch, or a NaN score, is a bug in
//! the caller (a model that produced NaN has already failed) and panics rather than being
//! folded silently into a number.

use serde::{Deserialize, Serialize};

/// How many points [`thin`] keeps for a plotted curve: more than a 300-pixel chart can show,
/// few enough to keep an SVG file small.
pub const PLOT_POINTS: usize = 400;

/// Panics unless `scores` and `labels` pair up and no score is NaN: both are bugs in the
/// caller, and a metric computed over them would be quietly wrong.
fn assert_paired(scores: &[f64], labels: &[bool]) {
    assert_eq!(
        scores.len(),
        labels.len(),
        "every score has exactly one label. This is a bug"
    );
    assert!(
        !scores.iter().any(|score| score.is_nan()),
        "scores are never NaN. This is a bug"
    );
}

/// `numerator / denominator`, with 0/0 (a rate over no examples) defined as 0.0 so that a
/// metric of an empty class reads as "nothing achieved" instead of NaN spreading into reports.
fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// The harmonic mean of precision and recall, 0.0 when both are 0.
fn harmonic_mean(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// The confusion counts of one threshold equal to a distinct score: how many positives
/// (`true_positives`) and negatives (`false_positives`) score at least `score`.
#[derive(Debug, Clone, Copy)]
struct Cut {
    score: f64,
    true_positives: u64,
    false_positives: u64,
}

/// Every distinct score as a [`Cut`], highest score first, with the class totals.
struct Cuts {
    cuts: Vec<Cut>,
    positives: u64,
    negatives: u64,
}

fn cuts_descending(scores: &[f64], labels: &[bool]) -> Cuts {
    assert_paired(scores, labels);
    let mut examples: Vec<(f64, bool)> =
        scores.iter().copied().zip(labels.iter().copied()).collect();
    examples.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut cuts: Vec<Cut> = Vec::new();
    let (mut true_positives, mut false_positives) = (0u64, 0u64);
    for (score, label) in examples {
        if label {
            true_positives += 1;
        } else {
            false_positives += 1;
        }
        // Tied scores form one cut: a threshold cannot separate them. `==` (not total_cmp)
        // also merges -0.0 with 0.0, which total_cmp sorts next to each other.
        match cuts.last_mut() {
            Some(last) if last.score == score => {
                last.true_positives = true_positives;
                last.false_positives = false_positives;
            }
            _ => cuts.push(Cut {
                score,
                true_positives,
                false_positives,
            }),
        }
    }
    Cuts {
        cuts,
        positives: true_positives,
        negatives: false_positives,
    }
}

/// The area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half (the Mann–Whitney U statistic with average ranks for
/// ties, divided by the number of positive–negative pairs).
///
/// `None` when either class is absent, since no pair exists to rank. Panics on a length
/// mismatch or a NaN score (see the module's documentation).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_paired(scores, labels);
    let positives = labels.iter().filter(|&&label| label).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut examples: Vec<(f64, bool)> =
        scores.iter().copied().zip(labels.iter().copied()).collect();
    examples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < examples.len() {
        let mut end = start + 1;
        while end < examples.len() && examples[end].0 == examples[start].0 {
            end += 1;
        }
        // The tied examples take the 1-based ranks start+1..=end, and share their average.
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = examples[start..end].iter().filter(|e| e.1).count();
        positive_rank_sum += average_rank * tied_positives as f64;
        start = end;
    }
    let positives = positives as f64;
    let u = positive_rank_sum - positives * (positives + 1.0) / 2.0;
    Some(u / (positives * negatives as f64))
}

/// The area under the precision–recall curve as scikit-learn's `average_precision_score`
/// computes it: the step-wise sum over thresholds of (R_n − R_{n−1}) · P_n, one threshold per
/// distinct score (tied scores are one step), without interpolation.
///
/// `None` when there is no positive example (recall is undefined). With no negative it is 1.0.
/// Panics on a length mismatch or a NaN score.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let Cuts {
        cuts, positives, ..
    } = cuts_descending(scores, labels);
    if positives == 0 {
        return None;
    }
    let mut previous_recall = 0.0;
    let mut area = 0.0;
    for cut in &cuts {
        let recall = ratio(cut.true_positives, positives);
        let precision = ratio(cut.true_positives, cut.true_positives + cut.false_positives);
        area += (recall - previous_recall) * precision;
        previous_recall = recall;
    }
    Some(area)
}

/// The ROC curve as (false positive rate, true positive rate) points, from (0, 0) (nothing
/// flagged) through one point per distinct score (everything scoring at least that score
/// flagged) to (1, 1).
///
/// Empty when either class is absent (one of the rates is undefined). Panics on a length
/// mismatch or a NaN score. For a plot, pass the result through [`thin`].
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    let Cuts {
        cuts,
        positives,
        negatives,
    } = cuts_descending(scores, labels);
    if positives == 0 || negatives == 0 {
        return Vec::new();
    }
    std::iter::once((0.0, 0.0))
        .chain(cuts.iter().map(|cut| {
            (
                ratio(cut.false_positives, negatives),
                ratio(cut.true_positives, positives),
            )
        }))
        .collect()
}

/// The precision–recall curve as (recall, precision) points: first (0, 1), scikit-learn's
/// convention for "nothing flagged", then one point per distinct score from the highest down,
/// ending at recall 1 with precision equal to the share of positives.
///
/// Empty when there is no positive example. Panics on a length mismatch or a NaN score. For a
/// plot, pass the result through [`thin`].
pub fn pr_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    let Cuts {
        cuts, positives, ..
    } = cuts_descending(scores, labels);
    if positives == 0 {
        return Vec::new();
    }
    std::iter::once((0.0, 1.0))
        .chain(cuts.iter().map(|cut| {
            (
                ratio(cut.true_positives, positives),
                ratio(cut.true_positives, cut.true_positives + cut.false_positives),
            )
        }))
        .collect()
}

/// At most `max` of `points` (at least 2: `max` below 2 counts as 2), in their order, always
/// keeping the first and the last, for plotting a curve with thousands of points.
///
/// The points kept are spread evenly along the curve's length rather than by index, because a
/// ROC curve's points crowd where scores are dense: thinning by index would draw its steep
/// start with a handful of points. A curve of zero length (or with non-finite points) is
/// thinned by index instead.
pub fn thin(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    let max = max.max(2);
    if points.len() <= max {
        return points.to_vec();
    }
    let last = points.len() - 1;
    let mut travelled = Vec::with_capacity(points.len());
    let mut length = 0.0;
    travelled.push(0.0);
    for pair in points.windows(2) {
        length += (pair[1].0 - pair[0].0).hypot(pair[1].1 - pair[0].1);
        travelled.push(length);
    }
    if !(length.is_finite() && length > 0.0) {
        return (0..max).map(|k| points[k * last / (max - 1)]).collect();
    }
    let spacing = length / (max - 1) as f64;
    let mut kept = Vec::with_capacity(max);
    kept.push(points[0]);
    let mut next_mark = spacing;
    for (index, &distance) in travelled.iter().enumerate().take(last).skip(1) {
        // The cap leaves room for the last point even when rounding puts an interior point
        // on the final mark.
        if kept.len() == max - 1 {
            break;
        }
        if distance >= next_mark {
            kept.push(points[index]);
            next_mark = ((distance / spacing).floor() + 1.0) * spacing;
        }
    }
    kept.push(points[last]);
    kept
}

/// Confusion counts of binary decisions at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Positives flagged.
    pub tp: u64,
    /// Negatives flagged.
    pub fp: u64,
    /// Negatives passed.
    pub tn: u64,
    /// Positives passed (`fn` is a keyword).
    pub fn_: u64,
}

impl Confusion {
    /// The counts when every example scoring at least `threshold` is flagged as positive.
    /// Panics on a length mismatch or a NaN score.
    pub fn at(scores: &[f64], labels: &[bool], threshold: f64) -> Confusion {
        assert_paired(scores, labels);
        let mut counts = Confusion {
            tp: 0,
            fp: 0,
            tn: 0,
            fn_: 0,
        };
        for (&score, &label) in scores.iter().zip(labels) {
            match (score >= threshold, label) {
                (true, true) => counts.tp += 1,
                (true, false) => counts.fp += 1,
                (false, false) => counts.tn += 1,
                (false, true) => counts.fn_ += 1,
            }
        }
        counts
    }

    /// The share of flagged examples that are positive (0.0 when nothing is flagged).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// The share of positives flagged (0.0 when there are no positives).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// The harmonic mean of precision and recall (0.0 when both are 0).
    pub fn f1(&self) -> f64 {
        harmonic_mean(self.precision(), self.recall())
    }

    /// The share of negatives flagged (0.0 when there are no negatives).
    pub fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }

    /// The share of examples decided correctly (0.0 when there are none).
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.tp + self.fp + self.tn + self.fn_)
    }
}

/// A threshold chosen by [`best_threshold`] and how it does on the data it was chosen on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdChoice {
    /// Flag an example when its score is at least this.
    pub threshold: f64,
    /// F1 at the threshold.
    pub f1: f64,
    /// Precision at the threshold.
    pub precision: f64,
    /// Recall at the threshold.
    pub recall: f64,
    /// False positive rate at the threshold.
    pub fpr: f64,
    /// Whether the threshold keeps the false positive rate within the requested limit (always
    /// true when no limit was given). When false, no threshold could, and this is the one with
    /// the lowest false positive rate instead.
    pub met_fpr_limit: bool,
}

/// The midpoint of two distinct scores `lower < upper`, such that `lower < midpoint <= upper`
/// even when they are adjacent floats (whose exact midpoint rounds to one of them) or
/// infinite.
fn midpoint(lower: f64, upper: f64) -> f64 {
    // Halving first cannot overflow, and -inf/2 + x/2 stays -inf rather than becoming NaN.
    let middle = lower / 2.0 + upper / 2.0;
    if middle > lower { middle } else { upper }
}

/// The threshold with the highest F1 among those whose false positive rate is at most
/// `max_fpr` (when given); ties go to the lower false positive rate, then to the higher
/// threshold.
///
/// Candidates lie midway between consecutive distinct scores, never on a score itself, so a
/// threshold chosen on validation data sits in the gap between what it flags and what it
/// passes and does not depend on one example's exact score. When no candidate meets
/// `max_fpr`, the choice is the candidate with the lowest false positive rate (best F1 among
/// those) and [`ThresholdChoice::met_fpr_limit`] says so.
///
/// `None` when either class is absent or there are fewer than two distinct scores (no
/// threshold separates anything). Panics on a length mismatch, a NaN score or a NaN
/// `max_fpr`.
pub fn best_threshold(
    scores: &[f64],
    labels: &[bool],
    max_fpr: Option<f64>,
) -> Option<ThresholdChoice> {
    assert!(
        !max_fpr.is_some_and(f64::is_nan),
        "the false positive rate limit is a number. This is a bug"
    );
    let Cuts {
        cuts,
        positives,
        negatives,
    } = cuts_descending(scores, labels);
    if positives == 0 || negatives == 0 {
        return None;
    }
    let candidates = cuts.windows(2).map(|pair| {
        let (flagged, passed) = (pair[0], pair[1]);
        let counts = Confusion {
            tp: flagged.true_positives,
            fp: flagged.false_positives,
            tn: negatives - flagged.false_positives,
            fn_: positives - flagged.true_positives,
        };
        let fpr = counts.fpr();
        ThresholdChoice {
            threshold: midpoint(passed.score, flagged.score),
            f1: counts.f1(),
            precision: counts.precision(),
            recall: counts.recall(),
            fpr,
            met_fpr_limit: max_fpr.is_none_or(|limit| fpr <= limit),
        }
    });
    // Candidates come highest threshold first, and only a strictly better one replaces the
    // best so far, so ties keep the higher threshold.
    let mut best_within: Option<ThresholdChoice> = None;
    let mut lowest_fpr: Option<ThresholdChoice> = None;
    for candidate in candidates {
        if candidate.met_fpr_limit {
            let better = best_within.is_none_or(|best| {
                candidate.f1 > best.f1 || (candidate.f1 == best.f1 && candidate.fpr < best.fpr)
            });
            if better {
                best_within = Some(candidate);
            }
        }
        let lower = lowest_fpr.is_none_or(|best| {
            candidate.fpr < best.fpr || (candidate.fpr == best.fpr && candidate.f1 > best.f1)
        });
        if lower {
            lowest_fpr = Some(candidate);
        }
    }
    best_within.or(lowest_fpr)
}

/// The multi-class confusion matrix, `matrix[actual][predicted]`, of `classes` × `classes`
/// counts (scikit-learn's layout: rows are the truth).
///
/// Panics when the slices differ in length or a class index is `classes` or more: mapping
/// labels to indices is the caller's job, and an index out of range means it went wrong.
pub fn confusion_matrix(predicted: &[usize], actual: &[usize], classes: usize) -> Vec<Vec<u64>> {
    assert_eq!(
        predicted.len(),
        actual.len(),
        "every prediction has exactly one actual class. This is a bug"
    );
    let mut matrix = vec![vec![0u64; classes]; classes];
    for (&predicted, &actual) in predicted.iter().zip(actual) {
        assert!(
            predicted < classes && actual < classes,
            "class indices are below the number of classes ({classes}), got predicted \
             {predicted}, actual {actual}. This is a bug"
        );
        matrix[actual][predicted] += 1;
    }
    matrix
}

/// Panics unless `matrix` is square, as every matrix from [`confusion_matrix`] is.
fn assert_square(matrix: &[Vec<u64>]) {
    assert!(
        matrix.iter().all(|row| row.len() == matrix.len()),
        "a confusion matrix is square. This is a bug"
    );
}

/// (precision, recall, F1) of each class of a `matrix[actual][predicted]`, each 0.0 where it
/// divides by zero (as scikit-learn's `zero_division=0`). Panics unless the matrix is square.
pub fn per_class_prf(matrix: &[Vec<u64>]) -> Vec<(f64, f64, f64)> {
    assert_square(matrix);
    (0..matrix.len())
        .map(|class| {
            let correct = matrix[class][class];
            let predicted: u64 = matrix.iter().map(|row| row[class]).sum();
            let actual: u64 = matrix[class].iter().sum();
            let precision = ratio(correct, predicted);
            let recall = ratio(correct, actual);
            (precision, recall, harmonic_mean(precision, recall))
        })
        .collect()
}

/// The unweighted mean of the per-class F1 scores over the classes that occur, as actual or
/// predicted, at least once (scikit-learn's `f1_score(average="macro")`, which only knows the
/// labels it sees). 0.0 for an empty matrix. Panics unless the matrix is square.
pub fn macro_f1(matrix: &[Vec<u64>]) -> f64 {
    let scores = per_class_prf(matrix);
    let occurring: Vec<f64> = scores
        .iter()
        .enumerate()
        .filter(|&(class, _)| {
            matrix[class].iter().sum::<u64>() + matrix.iter().map(|row| row[class]).sum::<u64>() > 0
        })
        .map(|(_, &(_, _, f1))| f1)
        .collect();
    if occurring.is_empty() {
        0.0
    } else {
        occurring.iter().sum::<f64>() / occurring.len() as f64
    }
}

/// The share of examples on the diagonal of `matrix` (0.0 when it counts none). Panics unless
/// the matrix is square.
pub fn accuracy(matrix: &[Vec<u64>]) -> f64 {
    assert_square(matrix);
    let correct: u64 = (0..matrix.len()).map(|class| matrix[class][class]).sum();
    let total: u64 = matrix.iter().flatten().sum();
    ratio(correct, total)
}

/// Platt scaling: a logistic map from a classifier's logit to a calibrated probability,
/// `P(positive | logit) = 1 / (1 + exp(a · logit + b))`.
///
/// Note the sign: this is the convention of Platt (1999) and Lin, Lin & Weng (2007), in which
/// a higher logit meaning "more likely positive" gives a *negative* `a`. A classifier whose
/// logits are already calibrated fits `a ≈ −1, b ≈ 0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    /// The logit's coefficient (negative for a useful classifier).
    pub a: f64,
    /// The offset.
    pub b: f64,
}

/// `ln(1 + exp(x))` without overflow for large `x` or lost precision for very negative `x`.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

impl Platt {
    /// Fits `a` and `b` to held-out `logits` and their `labels` by Platt's (1999) method as
    /// refined by Lin, Lin & Weng (2007), "A note on Platt's probabilistic outputs for support
    /// vector machines" (their Algorithm 1):
    ///
    /// - The targets are smoothed, t+ = (N+ + 1)/(N+ + 2) for positives and t− = 1/(N− + 2)
    ///   for negatives, which keeps the fit finite on separable data and is a Bayesian prior
    ///   against over-confidence on small sets.
    /// - It minimises the cross-entropy by Newton's method with a backtracking line search,
    ///   from a = 0, b = ln((N− + 1)/(N+ + 1)), computing the loss in a form that cannot
    ///   overflow.
    ///
    /// The logits must be finite. Panics on a length mismatch or a non-finite logit.
    pub fn fit(logits: &[f64], labels: &[bool]) -> Platt {
        assert_eq!(
            logits.len(),
            labels.len(),
            "every logit has exactly one label. This is a bug"
        );
        assert!(
            logits.iter().all(|logit| logit.is_finite()),
            "logits to calibrate are finite. This is a bug"
        );
        const MAX_ITERATIONS: usize = 100;
        const MIN_STEP: f64 = 1e-10;
        // A tiny ridge on the Hessian keeps it invertible when all logits are equal.
        const HESSIAN_RIDGE: f64 = 1e-12;
        const GRADIENT_TOLERANCE: f64 = 1e-5;

        let positives = labels.iter().filter(|&&label| label).count() as f64;
        let negatives = labels.len() as f64 - positives;
        let high_target = (positives + 1.0) / (positives + 2.0);
        let low_target = 1.0 / (negatives + 2.0);
        let targets: Vec<f64> = labels
            .iter()
            .map(|&label| if label { high_target } else { low_target })
            .collect();
        // The cross-entropy of targets t against p = 1/(1 + exp(f)), f = a·logit + b, is
        // t·f + ln(1 + exp(−f)), which softplus evaluates without overflow for any f.
        let loss = |a: f64, b: f64| -> f64 {
            logits
                .iter()
                .zip(&targets)
                .map(|(&logit, &target)| {
                    let f = a * logit + b;
                    target * f + softplus(-f)
                })
                .sum()
        };

        let mut a = 0.0;
        let mut b = ((negatives + 1.0) / (positives + 1.0)).ln();
        let mut current = loss(a, b);
        for _ in 0..MAX_ITERATIONS {
            let (mut h11, mut h22, mut h21) = (HESSIAN_RIDGE, HESSIAN_RIDGE, 0.0);
            let (mut g1, mut g2) = (0.0, 0.0);
            for (&logit, &target) in logits.iter().zip(&targets) {
                let f = a * logit + b;
                // p = 1/(1 + e^f) and q = 1 − p, each from the exponential that cannot
                // overflow.
                let (p, q) = if f >= 0.0 {
                    let e = (-f).exp();
                    (e / (1.0 + e), 1.0 / (1.0 + e))
                } else {
                    let e = f.exp();
                    (1.0 / (1.0 + e), e / (1.0 + e))
                };
                let d2 = p * q;
                h11 += logit * logit * d2;
                h22 += d2;
                h21 += logit * d2;
                let d1 = target - p;
                g1 += logit * d1;
                g2 += d1;
            }
            if g1.abs() < GRADIENT_TOLERANCE && g2.abs() < GRADIENT_TOLERANCE {
                break;
            }
            let determinant = h11 * h22 - h21 * h21;
            let da = -(h22 * g1 - h21 * g2) / determinant;
            let db = -(-h21 * g1 + h11 * g2) / determinant;
            let slope = g1 * da + g2 * db;
            let mut step = 1.0;
            while step >= MIN_STEP {
                let (next_a, next_b) = (a + step * da, b + step * db);
                let next = loss(next_a, next_b);
                // Armijo's sufficient decrease, as in the paper.
                if next < current + 1e-4 * step * slope {
                    (a, b, current) = (next_a, next_b, next);
                    break;
                }
                step /= 2.0;
            }
            if step < MIN_STEP {
                // The line search found no decrease: the fit is as good as doubles allow.
                break;
            }
        }
        Platt { a, b }
    }

    /// The calibrated probability of a logit, `1 / (1 + exp(a · logit + b))`, computed without
    /// overflow.
    pub fn apply(&self, logit: f64) -> f64 {
        let f = self.a * logit + self.b;
        if f >= 0.0 {
            let e = (-f).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + f.exp())
        }
    }
}

/// Panics unless `probabilities` pair up with `labels` and each lies in [0, 1]: anything
/// else is not a probability, and a calibration metric over it means nothing.
fn assert_probabilities(probabilities: &[f64], labels: &[bool]) {
    assert_eq!(
        probabilities.len(),
        labels.len(),
        "every probability has exactly one label. This is a bug"
    );
    assert!(
        probabilities.iter().all(|p| (0.0..=1.0).contains(p)),
        "probabilities lie in [0, 1] (and are not NaN). This is a bug"
    );
}

/// The Brier score: the mean squared difference between each probability and its outcome
/// (1 for a positive). Lower is better; 0.0 for no examples. Panics on a length mismatch or a
/// value outside [0, 1].
pub fn brier(probabilities: &[f64], labels: &[bool]) -> f64 {
    assert_probabilities(probabilities, labels);
    if probabilities.is_empty() {
        return 0.0;
    }
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &label)| (p - f64::from(u8::from(label))).powi(2))
        .sum();
    total / probabilities.len() as f64
}

/// The expected calibration error: probabilities go into `bins` equal-width bins over
/// [0, 1] (1.0 into the last), and the gaps |mean probability − share of positives| of the
/// bins are averaged, each weighted by its share of the examples. 0.0 for no examples.
///
/// Panics when `bins` is 0, on a length mismatch or a value outside [0, 1].
pub fn expected_calibration_error(probabilities: &[f64], labels: &[bool], bins: usize) -> f64 {
    assert!(
        bins > 0,
        "calibration takes at least one bin. This is a bug"
    );
    assert_probabilities(probabilities, labels);
    if probabilities.is_empty() {
        return 0.0;
    }
    // (examples, sum of probabilities, positives) per bin.
    let mut totals = vec![(0u64, 0.0f64, 0u64); bins];
    for (&p, &label) in probabilities.iter().zip(labels) {
        let bin = ((p * bins as f64) as usize).min(bins - 1);
        totals[bin].0 += 1;
        totals[bin].1 += p;
        totals[bin].2 += u64::from(label);
    }
    let n = probabilities.len() as f64;
    totals
        .iter()
        .filter(|&&(count, _, _)| count > 0)
        .map(|&(count, probability_sum, positives)| {
            let count_f = count as f64;
            (probability_sum / count_f - positives as f64 / count_f).abs() * count_f / n
        })
        .sum()
}

/// The mean negative log-likelihood of the labels (natural log), with each probability
/// clamped to [1e−15, 1 − 1e−15] (scikit-learn's fixed `eps` of old) so a confident mistake
/// costs about 34.5 instead of infinity. 0.0 for no examples. Panics on a length mismatch or a
/// value outside [0, 1].
pub fn log_loss(probabilities: &[f64], labels: &[bool]) -> f64 {
    const CLAMP: f64 = 1e-15;
    assert_probabilities(probabilities, labels);
    if probabilities.is_empty() {
        return 0.0;
    }
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &label)| {
            let p = p.clamp(CLAMP, 1.0 - CLAMP);
            if label { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / probabilities.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: bool = true;
    const F: bool = false;

    fn close(got: f64, expected: f64, tolerance: f64) -> bool {
        (got - expected).abs() <= tolerance
    }

    fn assert_points(got: &[(f64, f64)], expected: &[(f64, f64)]) {
        assert_eq!(got.len(), expected.len(), "{got:?} vs {expected:?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(
                close(g.0, e.0, 1e-12) && close(g.1, e.1, 1e-12),
                "{got:?} vs {expected:?}"
            );
        }
    }

    /// One row of a ranking metric: scores, labels, the expected value.
    type Row = (&'static [f64], &'static [bool], Option<f64>);

    fn check(metric: fn(&[f64], &[bool]) -> Option<f64>, rows: &[Row]) {
        for &(scores, labels, expected) in rows {
            let got = metric(scores, labels);
            let same = match (got, expected) {
                (Some(g), Some(e)) => close(g, e, 1e-12),
                (None, None) => true,
                _ => false,
            };
            assert!(
                same,
                "{scores:?} {labels:?}: got {got:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn roc_auc_values() {
        check(
            roc_auc,
            &[
                // scikit-learn's documentation example: roc_auc_score gives 0.75.
                (&[0.1, 0.4, 0.35, 0.8], &[F, F, T, T], Some(0.75)),
                // Pairs (pos, neg): (2,1)=1, (2,2)=½, (3,1)=1, (3,2)=1, so 3.5 of 4.
                (&[1.0, 2.0, 2.0, 3.0], &[F, T, F, T], Some(0.875)),
                // All tied: every pair counts one half.
                (&[0.5, 0.5, 0.5, 0.5], &[T, F, T, F], Some(0.5)),
                (&[0.1, 0.2, 0.8, 0.9], &[F, F, T, T], Some(1.0)),
                (&[0.1, 0.2, 0.8, 0.9], &[T, T, F, F], Some(0.0)),
                // -0.0 and 0.0 are the same score.
                (&[-0.0, 0.0], &[T, F], Some(0.5)),
                (&[f64::NEG_INFINITY, f64::INFINITY], &[F, T], Some(1.0)),
                (&[0.1, 0.2], &[T, T], None),
                (&[0.1, 0.2], &[F, F], None),
                (&[], &[], None),
            ],
        );
    }

    #[test]
    fn average_precision_values() {
        check(
            average_precision,
            &[
                // scikit-learn's documentation example: average_precision_score gives 0.8333:
                // 0.5 · 1 (at 0.8) + 0 · ½ (at 0.4) + 0.5 · ⅔ (at 0.35) + 0 (at 0.1).
                (&[0.1, 0.4, 0.35, 0.8], &[F, F, T, T], Some(0.5 + 1.0 / 3.0)),
                // ⅓ · 1 + ⅓ · ⅔ + ⅓ · ¾ (recall steps at 0.9, 0.7, 0.6).
                (
                    &[0.9, 0.8, 0.7, 0.6, 0.5],
                    &[T, F, T, T, F],
                    Some(1.0 / 3.0 + 2.0 / 9.0 + 0.25),
                ),
                // Ties are one step: recall 0 → 1 at precision ⅔, not an optimistic order.
                (&[0.5, 0.5, 0.5, 0.1], &[T, F, T, F], Some(2.0 / 3.0)),
                (&[0.1, 0.2, 0.8, 0.9], &[F, F, T, T], Some(1.0)),
                (&[0.1, 0.2], &[T, T], Some(1.0)),
                (&[0.1, 0.2], &[F, F], None),
                (&[], &[], None),
            ],
        );
    }

    #[test]
    fn curves_match_scikit_learn() {
        let scores = [0.1, 0.4, 0.35, 0.8];
        let labels = [F, F, T, T];
        // roc_curve's fpr [0, 0, .5, .5, 1] and tpr [0, .5, .5, 1, 1].
        assert_points(
            &roc_curve(&scores, &labels),
            &[(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)],
        );
        // precision_recall_curve's points, which it lists from the lowest threshold up.
        assert_points(
            &pr_curve(&scores, &labels),
            &[
                (0.0, 1.0),
                (0.5, 1.0),
                (0.5, 0.5),
                (1.0, 2.0 / 3.0),
                (1.0, 0.5),
            ],
        );
        assert!(roc_curve(&scores, &[T, T, T, T]).is_empty());
        assert!(pr_curve(&scores, &[F, F, F, F]).is_empty());
        // Ties give one point.
        assert_points(
            &roc_curve(&[0.3, 0.3, 0.3], &[T, F, F]),
            &[(0.0, 0.0), (1.0, 1.0)],
        );
    }

    #[test]
    fn thinning_keeps_endpoints_and_the_limit() {
        let short = [(0.0, 0.0), (0.5, 0.7), (1.0, 1.0)];
        assert_eq!(thin(&short, 400), short.to_vec());
        // A staircase of 5,001 points, like a ROC curve of 5,000 examples.
        let long: Vec<(f64, f64)> = (0..=5000u32)
            .map(|i| {
                let x = f64::from(i / 2) / 2500.0;
                let y = f64::from(i.div_ceil(2)) / 2500.0;
                (x, y)
            })
            .collect();
        for max in [0, 1, 2, 3, 10, 400, 5000] {
            let kept = thin(&long, max);
            assert!(kept.len() <= max.max(2), "max {max}: {} kept", kept.len());
            assert!(
                kept.len() >= max.clamp(2, 400) - 1,
                "max {max}: only {} kept",
                kept.len()
            );
            assert_eq!(kept.first(), long.first(), "max {max}");
            assert_eq!(kept.last(), long.last(), "max {max}");
            // Kept points are points of the curve, in order.
            let mut position = 0;
            for point in &kept {
                position += long[position..]
                    .iter()
                    .position(|p| p == point)
                    .expect("a kept point is on the curve");
            }
        }
        // A curve that never moves is thinned by index.
        let still = vec![(0.5, 0.5); 1000];
        assert_eq!(thin(&still, 10).len(), 10);
    }

    #[test]
    fn confusion_counts_and_rates() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let labels = [T, F, T, T, F, F];
        // At 0.6: flagged 0.9 T, 0.8 F, 0.7 T, 0.6 T (>= is positive); passed 0.5 F, 0.4 F.
        let counts = Confusion::at(&scores, &labels, 0.6);
        assert_eq!(
            counts,
            Confusion {
                tp: 3,
                fp: 1,
                tn: 2,
                fn_: 0
            }
        );
        assert_eq!(counts.precision(), 0.75);
        assert_eq!(counts.recall(), 1.0);
        assert!(close(counts.f1(), 6.0 / 7.0, 1e-15));
        assert!(close(counts.fpr(), 1.0 / 3.0, 1e-15));
        assert!(close(counts.accuracy(), 5.0 / 6.0, 1e-15));
        // Nothing flagged, no positives: every 0/0 reads 0.
        let none = Confusion::at(&scores, &[F; 6], 2.0);
        assert_eq!(
            (none.precision(), none.recall(), none.f1()),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(none.accuracy(), 1.0);
        let empty = Confusion::at(&[], &[], 0.5);
        assert_eq!((empty.fpr(), empty.accuracy()), (0.0, 0.0));
    }

    #[test]
    fn best_threshold_choices() {
        let scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        let labels = [F, F, T, F, T, T];
        // Candidates, by hand: 0.55 → F1 ½; 0.45 → P 1, R ⅔, F1 0.8; 0.35 → F1 ⅔;
        // 0.25 → P ¾, R 1, F1 6/7, FPR ⅓; 0.15 → F1 0.75.
        let rows: &[(Option<f64>, f64, f64, f64, bool)] = &[
            // (max_fpr, threshold, f1, fpr, met_fpr_limit)
            (None, 0.25, 6.0 / 7.0, 1.0 / 3.0, true),
            (Some(1.0), 0.25, 6.0 / 7.0, 1.0 / 3.0, true),
            (Some(1.0 / 3.0), 0.25, 6.0 / 7.0, 1.0 / 3.0, true),
            (Some(0.2), 0.45, 0.8, 0.0, true),
            (Some(0.0), 0.45, 0.8, 0.0, true),
        ];
        for &(max_fpr, threshold, f1, fpr, met) in rows {
            let choice = best_threshold(&scores, &labels, max_fpr).expect("both classes");
            assert!(
                close(choice.threshold, threshold, 1e-12)
                    && close(choice.f1, f1, 1e-12)
                    && close(choice.fpr, fpr, 1e-12)
                    && choice.met_fpr_limit == met,
                "max_fpr {max_fpr:?}: {choice:?}"
            );
            // The reported numbers are those of the threshold itself.
            let counts = Confusion::at(&scores, &labels, choice.threshold);
            assert_eq!(
                (
                    counts.f1(),
                    counts.precision(),
                    counts.recall(),
                    counts.fpr()
                ),
                (choice.f1, choice.precision, choice.recall, choice.fpr)
            );
        }

        // The top score is a negative: every threshold flags it, so no FPR is 0. The lowest
        // FPR (½, both candidates) with the better F1 (0.3: P ½, R 1, F1 ⅔) is chosen.
        let choice = best_threshold(&[0.9, 0.5, 0.1], &[F, T, F], Some(0.0)).expect("both");
        assert!(!choice.met_fpr_limit);
        assert!(close(choice.threshold, 0.3, 1e-12) && close(choice.f1, 2.0 / 3.0, 1e-12));

        assert_eq!(best_threshold(&[0.4, 0.4], &[T, F], None), None);
        assert_eq!(best_threshold(&[0.1, 0.4], &[T, T], None), None);
        assert_eq!(best_threshold(&[], &[], None), None);
    }

    #[test]
    fn thresholds_between_adjacent_floats_and_infinities() {
        let upper = 1.0f64.next_up();
        let choice = best_threshold(&[1.0, upper], &[F, T], None).expect("both classes");
        assert_eq!(choice.threshold, upper);
        assert_eq!(
            Confusion::at(&[1.0, upper], &[F, T], choice.threshold).f1(),
            1.0
        );
        let choice =
            best_threshold(&[f64::NEG_INFINITY, 0.0], &[F, T], None).expect("both classes");
        assert_eq!(choice.f1, 1.0);
        let choice = best_threshold(&[0.0, f64::INFINITY], &[F, T], None).expect("both classes");
        assert_eq!(choice.f1, 1.0);
    }

    #[test]
    #[should_panic(expected = "every score has exactly one label")]
    fn length_mismatch_is_a_bug() {
        roc_auc(&[0.1, 0.2], &[T]);
    }

    #[test]
    #[should_panic(expected = "scores are never NaN")]
    fn nan_scores_are_a_bug() {
        average_precision(&[0.1, f64::NAN], &[T, F]);
    }

    #[test]
    fn multi_class_matches_scikit_learn() {
        // confusion_matrix([2, 0, 2, 2, 0, 1], [0, 0, 2, 2, 0, 2]) from its documentation.
        let matrix = confusion_matrix(&[0, 0, 2, 2, 0, 2], &[2, 0, 2, 2, 0, 1], 3);
        assert_eq!(matrix, vec![vec![2, 0, 0], vec![0, 0, 1], vec![1, 0, 2]]);
        assert!(close(accuracy(&matrix), 4.0 / 6.0, 1e-15));

        // f1_score([0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 1], average="macro") is 0.2667: class 0
        // has P ⅔, R 1, F1 0.8; classes 1 and 2 are never right.
        let matrix = confusion_matrix(&[0, 2, 1, 0, 0, 1], &[0, 1, 2, 0, 1, 2], 3);
        let scores = per_class_prf(&matrix);
        assert!(close(scores[0].0, 2.0 / 3.0, 1e-15));
        assert!(close(scores[0].1, 1.0, 1e-15));
        assert!(close(scores[0].2, 0.8, 1e-15));
        assert_eq!(scores[1], (0.0, 0.0, 0.0));
        assert!(close(macro_f1(&matrix), 0.8 / 3.0, 1e-15));
        assert!(close(accuracy(&matrix), 2.0 / 6.0, 1e-15));

        // A fourth class that never occurs does not dilute the macro average.
        let wider = confusion_matrix(&[0, 2, 1, 0, 0, 1], &[0, 1, 2, 0, 1, 2], 4);
        assert_eq!(per_class_prf(&wider).len(), 4);
        assert!(close(macro_f1(&wider), 0.8 / 3.0, 1e-15));

        assert_eq!(macro_f1(&confusion_matrix(&[], &[], 2)), 0.0);
        assert_eq!(accuracy(&confusion_matrix(&[], &[], 2)), 0.0);
    }

    #[test]
    #[should_panic(expected = "class indices are below the number of classes")]
    fn class_out_of_range_is_a_bug() {
        confusion_matrix(&[0, 3], &[0, 1], 3);
    }

    /// SplitMix64, for reproducible synthetic data.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            crate::corpus::splitmix64(&mut self.0)
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Logits uniform in [−4, 4] and labels drawn with P(positive) = σ(slope · logit +
    /// offset).
    fn sampled(n: usize, slope: f64, offset: f64, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| {
                let logit = rng.unit() * 8.0 - 4.0;
                let p = 1.0 / (1.0 + (-(slope * logit + offset)).exp());
                (logit, rng.unit() < p)
            })
            .unzip()
    }

    #[test]
    fn platt_recovers_the_true_map() {
        // (slope, offset) of the true P(positive | logit) = σ(slope · logit + offset), which
        // is 1/(1 + exp(a · logit + b)) with a = −slope, b = −offset. With 20,000 examples
        // the estimates' standard errors are about 0.03, so 0.1 is over three of them.
        let rows = [(1.0, 0.0), (2.0, -1.0), (0.5, 0.5)];
        for (seed, &(slope, offset)) in rows.iter().enumerate() {
            let (logits, labels) = sampled(20_000, slope, offset, seed as u64);
            let platt = Platt::fit(&logits, &labels);
            assert!(
                close(platt.a, -slope, 0.1) && close(platt.b, -offset, 0.1),
                "σ({slope} · logit + {offset}) fitted as {platt:?}"
            );
        }
    }

    #[test]
    fn platt_degenerate_inputs_stay_finite() {
        // Only positives: the targets are all t+ = 11/12, and the best fit is the constant
        // a = 0, 1/(1 + e^b) = 11/12.
        let logits: Vec<f64> = (0..10).map(f64::from).collect();
        let platt = Platt::fit(&logits, &[T; 10]);
        assert!(close(platt.apply(3.0), 11.0 / 12.0, 1e-4), "{platt:?}");
        // Separable data: the smoothed targets keep a and b finite.
        let platt = Platt::fit(&[-2.0, -1.0, 1.0, 2.0], &[F, F, T, T]);
        assert!(
            platt.a.is_finite() && platt.b.is_finite() && platt.a < 0.0,
            "{platt:?}"
        );
        // Nothing to fit: the starting point, ln(1/1) = 0.
        let platt = Platt::fit(&[], &[]);
        assert_eq!(platt, Platt { a: 0.0, b: 0.0 });
        assert_eq!(platt.apply(5.0), 0.5);
        // Far logits do not overflow.
        let sharp = Platt { a: -1.0, b: 0.0 };
        assert_eq!(sharp.apply(1000.0), 1.0);
        assert_eq!(sharp.apply(-1000.0), 0.0);
    }

    #[test]
    fn calibration_scores() {
        let probabilities = [0.1, 0.9, 0.8, 0.3];
        let labels = [F, T, T, F];
        // brier_score_loss's documentation example: 0.0375.
        assert!(close(brier(&probabilities, &labels), 0.0375, 1e-15));
        // log_loss(["spam", "ham", "ham", "spam"], [[.1, .9], [.9, .1], [.8, .2], [.35, .65]])
        // is 0.21616 in scikit-learn's documentation, with spam the positive class.
        let loss = log_loss(&[0.9, 0.1, 0.2, 0.65], &[T, F, F, T]);
        assert!(close(loss, 0.21616, 1e-5), "{loss}");
        // A certain mistake costs −ln(1e−15), not infinity.
        assert!(close(log_loss(&[0.0], &[T]), 34.538_776, 1e-5));
        assert_eq!(log_loss(&[], &[]), 0.0);
        assert_eq!(brier(&[], &[]), 0.0);

        // Two bins: [0.1, 0.2] has mean ½·(0.1 + 0.2) = 0.15 against ½ positive, gap 0.35;
        // [0.8, 0.9] has mean 0.85 against 1, gap 0.15; each holds half: 0.25.
        let ece = expected_calibration_error(&[0.1, 0.2, 0.8, 0.9], &[F, T, T, T], 2);
        assert!(close(ece, 0.25, 1e-12), "{ece}");
        // One bin: |mean 0.5 − ¾|.
        let ece = expected_calibration_error(&[0.1, 0.2, 0.8, 0.9], &[F, T, T, T], 1);
        assert!(close(ece, 0.25, 1e-12), "{ece}");
        // 1.0 lands in the last bin; a bin of perfectly calibrated examples costs nothing.
        let ece = expected_calibration_error(&[1.0, 1.0, 0.0, 0.0], &[T, T, F, F], 10);
        assert_eq!(ece, 0.0);
        assert_eq!(expected_calibration_error(&[], &[], 10), 0.0);
    }

    #[test]
    #[should_panic(expected = "probabilities lie in [0, 1]")]
    fn probabilities_out_of_range_are_a_bug() {
        brier(&[1.5], &[T]);
    }
}
