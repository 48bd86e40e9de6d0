//! The `modbot eval` command: which sets to score, the baselines, the printed tables, the
//! JSON, the Markdown report with its curves, `--compare` and `--check`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::peer::PeerFile;
use super::plot::{Series, line_chart};
use super::{
    BinaryEvaluation, Evaluation, MulticlassEvaluation, VADER_STANDARD_CUTOFFS, evaluate_embedded,
    metrics, ngram_baseline, tune_vader_cutoffs, vader_class,
};
use crate::infra::model::heads::Heads;
use crate::tools::datasets::data::{self, Example, Split, Task};
use crate::tools::datasets::embed::{self, Embedder};
use crate::tools::datasets::{DataOptions, TrainError, load_encoder, round};

/// What `modbot eval` is asked to do.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The data, the encoder and the sampling (the validation split as training drew it).
    pub data: DataOptions,
    /// The heads directories to evaluate: one, or two (old, new) to compare.
    pub heads_dirs: Vec<PathBuf>,
    /// Dataset names whose test split to score; empty for every test split of the heads'
    /// tasks.
    pub datasets: Vec<String>,
    /// A labelled JSONL file to score instead, with the head it is for.
    pub file: Option<(PathBuf, String)>,
    /// Whether to compute the baselines.
    pub baselines: bool,
    /// Print JSON instead of tables.
    pub json: bool,
    /// Write a Markdown report with curves here.
    pub report_dir: Option<PathBuf>,
    /// Fail when a recorded test metric moved by more than this.
    pub check: Option<f64>,
    /// Write every example's scores here (JSONL), for error analysis.
    pub scores_out: Option<PathBuf>,
    /// A peer's decisions on the dataset splits ([`super::peer`], lines with a `set`): a
    /// column beside the heads on every binary set the file covers.
    pub peer: Option<PathBuf>,
}

/// One scored set.
#[derive(Debug, Serialize)]
struct SetResult {
    /// `dataset/test`, or the file scored.
    set: String,
    /// The head it tests.
    head: String,
    /// What was scored, in order: the heads (one or two), then baselines, then the peer.
    models: Vec<(String, Evaluation)>,
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Outcome {
    encoder: String,
    heads: Vec<String>,
    subset: Option<usize>,
    sets: Vec<SetResult>,
    check_failures: Vec<String>,
}

fn heads_name(dir: &Path, heads: &Heads, compare: bool, index: usize) -> String {
    if compare {
        format!(
            "{} ({}, heads@{})",
            ["old", "new"][index.min(1)],
            dir.display(),
            heads.version
        )
    } else {
        format!("modbot heads@{}", heads.version)
    }
}

/// The spam head's threshold rule, mirrored for its baseline.
fn max_fpr_for(task: &Task) -> Option<f64> {
    (task.head == "spam").then_some(crate::tools::datasets::SPAM_MAX_FPR)
}

/// Runs `modbot eval`; `Ok(false)` when `--check` found metrics that moved.
pub fn run(options: &EvalOptions) -> Result<bool, TrainError> {
    let (encoder, encoder_id) =
        load_encoder(&options.data.model_dir, options.data.adapter.as_deref())?;
    let embedder = Embedder::new(&encoder, encoder_id.clone(), options.data.cache_dir.clone());
    let compare = options.heads_dirs.len() > 1;
    let mut loaded = Vec::new();
    for dir in &options.heads_dirs {
        let heads = Heads::load(dir, embedder.dim())?;
        if heads.is_empty() {
            return Err(TrainError::Missing(format!(
                "no heads in {} (run `modbot train`)",
                dir.display()
            )));
        }
        loaded.push((dir.clone(), heads));
    }

    // Which sets to score, and for which task.
    let mut sets: Vec<(String, &'static Task, Split)> = Vec::new();
    if let Some((path, head)) = &options.file {
        let task = data::task(head).ok_or_else(|| {
            TrainError::Missing(format!(
                "--head: `{head}` names no single task (a head of one task, e.g. spam, or one \
                 label, e.g. toxicity/threat)"
            ))
        })?;
        let mut split = data::read_split(path, task)?;
        if let Some(limit) = options.data.subset {
            split.examples = data::subset(split.examples, limit, options.data.seed);
        }
        sets.push((path.display().to_string(), task, split));
    } else {
        let datasets: Vec<String> = if options.datasets.is_empty() {
            data::TASKS
                .iter()
                .filter(|t| {
                    let label = format!("{}/{}", t.head, t.labels[0]);
                    loaded.iter().any(|(_, h)| h.label_names().contains(&label))
                })
                .flat_map(|t| std::iter::once(t.dataset).chain(t.also_evaluated_on.iter().copied()))
                .map(str::to_owned)
                .collect()
        } else {
            options.datasets.clone()
        };
        for dataset in datasets {
            let task = data::task_of_dataset(&dataset)
                .ok_or_else(|| TrainError::Missing(format!("no dataset `{dataset}`")))?;
            let split = options.data.split(&dataset, "test")?;
            sets.push((format!("{dataset}/test"), task, split));
        }
    }

    // Read before anything is embedded: a bad peer file is refused at once.
    let mut peer = options.peer.as_deref().map(PeerFile::read).transpose()?;
    let mut results = Vec::new();
    let mut train_splits: BTreeMap<&str, Split> = BTreeMap::new();
    for (name, task, split) in &sets {
        let texts: Vec<&str> = split.examples.iter().map(|e| e.text.as_str()).collect();
        let normalized = embed::normalized(&texts);
        let embeddings = embedder.embed_normalized(name, &normalized)?;
        let mut models = Vec::new();
        for (i, (dir, heads)) in loaded.iter().enumerate() {
            let evaluation =
                evaluate_embedded(heads, task, &split.examples, &normalized, &embeddings)?;
            eprintln!("  {name}: {}", evaluation.summary());
            models.push((heads_name(dir, heads, compare, i), evaluation));
        }
        if options.baselines {
            if !train_splits.contains_key(task.dataset) {
                let train = options.data.split(task.dataset, "train")?;
                train_splits.insert(task.dataset, train);
            }
            let train = &train_splits[task.dataset];
            models.extend(baselines(task, train, &split.examples, options));
        }
        if let Some(file) = peer.as_mut().filter(|f| task.is_binary() && f.covers(name)) {
            models.push(peer_column(file, name, &split.examples, options)?);
        }
        results.push(SetResult {
            set: name.clone(),
            head: task.head.to_owned(),
            models,
        });
    }

    if let Some(path) = &options.scores_out {
        write_scores(path, &sets, &results)?;
        eprintln!("wrote every example's scores to {}", path.display());
    }
    let mut check_failures = Vec::new();
    if let Some(tolerance) = options.check {
        check_failures = check(
            &loaded[0].1,
            &results,
            tolerance,
            options.data.subset.is_some(),
        );
    }
    let outcome = Outcome {
        encoder: encoder_id,
        heads: loaded
            .iter()
            .map(|(d, h)| format!("{}@{}", d.display(), h.version))
            .collect(),
        subset: options.data.subset,
        sets: results,
        check_failures,
    };
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome).expect("evaluations serialise. This is a bug")
        );
    } else {
        print!("{}", tables(&outcome, compare));
    }
    if let Some(dir) = &options.report_dir {
        write_report(dir, &outcome)?;
        eprintln!("wrote the report to {}", dir.join("README.md").display());
    }
    if options.check.is_some() {
        if outcome.check_failures.is_empty() {
            eprintln!("check: every recorded test metric reproduced within the tolerance");
        } else {
            for failure in &outcome.check_failures {
                eprintln!("check failed: {failure}");
            }
        }
    }
    Ok(outcome.check_failures.is_empty())
}

/// One line per example and set: its id, class, text and every model's score (the positive
/// class's probability for a binary head; the predicted class otherwise).
fn write_scores(
    path: &Path,
    sets: &[(String, &'static Task, Split)],
    results: &[SetResult],
) -> Result<(), TrainError> {
    let mut out = String::new();
    for ((name, _, split), result) in sets.iter().zip(results) {
        for (i, example) in split.examples.iter().enumerate() {
            let scores: BTreeMap<&str, f64> = result
                .models
                .iter()
                .filter_map(|(model, evaluation)| match evaluation {
                    Evaluation::Binary(b) => Some((model.as_str(), round(b.scores[i]))),
                    Evaluation::Multiclass(m) => {
                        m.predicted.get(i).map(|&c| (model.as_str(), c as f64))
                    }
                })
                .collect();
            let line = serde_json::json!({
                "set": name, "id": example.id, "class": example.class, "text": example.text,
                "scores": scores,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
    }
    std::fs::write(path, out).map_err(|source| TrainError::Io {
        what: "cannot write",
        path: path.to_owned(),
        source,
    })
}

/// The peer's column on one binary set: every example must be decided. Its own decisions
/// give precision, recall, F1 and FPR (at 0.5 on its probability, which is what its cut-off
/// is); its probability, when the file has one, the ranking metrics.
fn peer_column(
    file: &mut PeerFile,
    set: &str,
    examples: &[Example],
    options: &EvalOptions,
) -> Result<(String, Evaluation), TrainError> {
    let mut scores = Vec::with_capacity(examples.len());
    for example in examples {
        let decision = file.take(set, &example.id).ok_or_else(|| {
            TrainError::Missing(format!(
                "{}: no decision for `{}` of {set}",
                options
                    .peer
                    .as_deref()
                    .unwrap_or(Path::new("--peer"))
                    .display(),
                example.id
            ))
        })?;
        // Its decision is the truth at the cut-off; a probability only orders the examples.
        let score = decision.ranking_score();
        let at_cutoff = if decision.acted {
            score.max(PEER_CUTOFF)
        } else {
            score.min(PEER_CUTOFF.next_down())
        };
        scores.push(at_cutoff);
    }
    let labels = examples.iter().map(|e| e.class == 1).collect();
    let evaluation = Evaluation::Binary(BinaryEvaluation::new(scores, labels, PEER_CUTOFF));
    eprintln!("  peer {}: {}", file.name, evaluation.summary());
    Ok((format!("peer: {}", file.name), evaluation))
}

/// The cut-off a peer's column is read at: its decisions are put on either side of it.
const PEER_CUTOFF: f64 = 0.5;

fn baselines(
    task: &Task,
    train: &Split,
    test: &[Example],
    options: &EvalOptions,
) -> Vec<(String, Evaluation)> {
    let mut out = Vec::new();
    if task.is_binary() {
        let (model, threshold) = ngram_baseline(
            train,
            options.data.validation_fraction,
            options.data.seed,
            max_fpr_for(task),
        );
        let scores = test.iter().map(|e| model.probability(&e.text)).collect();
        let labels = test.iter().map(|e| e.class == 1).collect();
        let evaluation = Evaluation::Binary(BinaryEvaluation::new(scores, labels, threshold));
        eprintln!("  baseline TF-IDF n-grams: {}", evaluation.summary());
        out.push((
            "baseline: TF-IDF char+word n-gram LR".to_owned(),
            evaluation,
        ));
    } else if test.iter().all(|e| e.vader_compound.is_some()) {
        let actual: Vec<usize> = test.iter().map(|e| e.class).collect();
        let tuned = tune_vader_cutoffs(&train.examples);
        for (name, cutoffs) in [
            (
                "baseline: VADER compound, cut-offs ±0.05".to_owned(),
                VADER_STANDARD_CUTOFFS,
            ),
            (
                format!(
                    "baseline: VADER compound, cut-offs {:+.2}/{:+.2} tuned on train",
                    tuned.0, tuned.1
                ),
                tuned,
            ),
        ] {
            let predicted: Vec<usize> = test
                .iter()
                .map(|e| vader_class(e.vader_compound.unwrap_or(0.0), cutoffs))
                .collect();
            let evaluation = Evaluation::Multiclass(MulticlassEvaluation::new(
                &predicted,
                &actual,
                &task.class_names(),
            ));
            eprintln!("  {name}: {}", evaluation.summary());
            out.push((name, evaluation));
        }
    }
    out
}

/// Recorded metrics of the first heads that moved by more than `tolerance`, or are missing.
fn check(heads: &Heads, results: &[SetResult], tolerance: f64, subset: bool) -> Vec<String> {
    let mut failures = Vec::new();
    if subset {
        failures.push("--check needs the whole test splits, not --subset".to_owned());
        return failures;
    }
    let recorded = super::recorded_metrics(heads);
    let mut computed: BTreeMap<(String, String), f64> = BTreeMap::new();
    for result in results {
        if let Some((_, evaluation)) = result.models.first() {
            for (metric, value) in evaluation.metrics() {
                computed.insert(
                    (result.head.clone(), format!("{}.{metric}", result.set)),
                    value,
                );
            }
        }
    }
    for (head, values) in &recorded {
        for (key, expected) in values {
            match computed.get(&(head.clone(), key.clone())) {
                Some(actual) if (actual - expected).abs() <= tolerance => {}
                Some(actual) => failures.push(format!(
                    "{head} {key}: recorded {expected:.4}, now {actual:.4} (tolerance {tolerance})"
                )),
                None => failures.push(format!("{head} {key}: recorded but not evaluated")),
            }
        }
    }
    if recorded.values().all(BTreeMap::is_empty) {
        failures.push("the heads record no test metrics".to_owned());
    }
    failures
}

fn fmt(value: f64) -> String {
    if value.is_nan() {
        "–".to_owned()
    } else {
        format!("{:.4}", round(value))
    }
}

/// The printed tables: one per set, a row per model.
fn tables(outcome: &Outcome, compare: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "encoder {}", outcome.encoder);
    for result in &outcome.sets {
        let _ = writeln!(out, "\n{} (head {})", result.set, result.head);
        out.push_str(&markdown_table(&result.models));
        if compare && result.models.len() >= 2 {
            let (old, new) = (result.models[0].1.metrics(), result.models[1].1.metrics());
            let deltas: Vec<String> = new
                .iter()
                .filter_map(|(k, v)| old.get(k).map(|o| format!("{k} {:+.4}", v - o)))
                .collect();
            let _ = writeln!(out, "new − old: {}", deltas.join(", "));
        }
    }
    out
}

fn markdown_table(models: &[(String, Evaluation)]) -> String {
    let mut out = String::new();
    match models.first().map(|m| &m.1) {
        Some(Evaluation::Binary(first)) => {
            let _ = writeln!(
                out,
                "n = {}, positives = {}\n\n| model | ROC-AUC | PR-AUC | threshold | precision | recall | F1 | FPR | Brier | ECE |\n|---|---|---|---|---|---|---|---|---|---|",
                first.n, first.positives
            );
            for (name, evaluation) in models {
                if let Evaluation::Binary(b) = evaluation {
                    let _ = writeln!(
                        out,
                        "| {name} | {} | {} | {:.3} | {} | {} | {} | {} | {} | {} |",
                        fmt(b.roc_auc),
                        fmt(b.pr_auc),
                        b.threshold,
                        fmt(b.confusion.precision()),
                        fmt(b.confusion.recall()),
                        fmt(b.confusion.f1()),
                        fmt(b.confusion.fpr()),
                        fmt(b.brier),
                        fmt(b.ece)
                    );
                }
            }
        }
        Some(Evaluation::Multiclass(first)) => {
            let header: Vec<String> = first.classes.iter().map(|c| format!("F1 {c}")).collect();
            let _ = writeln!(
                out,
                "n = {}\n\n| model | accuracy | macro-F1 | {} |\n|---|---|---|{}",
                first.n,
                header.join(" | "),
                "---|".repeat(header.len())
            );
            for (name, evaluation) in models {
                if let Evaluation::Multiclass(m) = evaluation {
                    let f1s: Vec<String> = m.per_class.iter().map(|p| fmt(p.2)).collect();
                    let _ = writeln!(
                        out,
                        "| {name} | {} | {} | {} |",
                        fmt(m.accuracy),
                        fmt(m.macro_f1),
                        f1s.join(" | ")
                    );
                }
            }
        }
        None => {}
    }
    out
}

/// A model's name short enough for a chart's legend.
fn legend_name(name: &str) -> String {
    let name = name.strip_prefix("modbot ").unwrap_or(name);
    let name = name.strip_prefix("baseline: ").unwrap_or(name);
    let name = name.replace("TF-IDF char+word n-gram LR", "n-gram LR");
    // `old (dir, heads@v)` in comparisons: the side and the version are what tell them apart.
    match name.split_once(" (") {
        Some((side, rest)) if side == "old" || side == "new" => {
            let version = rest.rsplit(", ").next().unwrap_or("").trim_end_matches(')');
            format!("{side} {version}")
        }
        _ => name,
    }
}

fn file_stem(set: &str) -> String {
    set.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Writes `DIR/README.md` and the curves beside it.
fn write_report(dir: &Path, outcome: &Outcome) -> Result<(), TrainError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TrainError::Io {
            what: "cannot write",
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# modbot heads: evaluation report\n\nWritten by `modbot eval --report`. Encoder `{}`; heads {}.{}\n\
         Every set below is held out: no example of it was used to train, calibrate or choose a \
         threshold. Thresholds were chosen on validation data carved from the training split.\n",
        outcome.encoder,
        outcome
            .heads
            .iter()
            .map(|h| format!("`{h}`"))
            .collect::<Vec<_>>()
            .join(", "),
        outcome.subset.map_or(String::new(), |n| format!(
            " **Subset of {n} examples per set: a smoke run, not the real numbers.**"
        ))
    );
    for result in &outcome.sets {
        let _ = writeln!(md, "## {} (head `{}`)\n", result.set, result.head);
        md.push_str(&markdown_table(&result.models));
        md.push('\n');
        let binary: Vec<(&String, &BinaryEvaluation)> = result
            .models
            .iter()
            .filter_map(|(n, e)| match e {
                Evaluation::Binary(b) => Some((n, b)),
                Evaluation::Multiclass(_) => None,
            })
            .collect();
        if !binary.is_empty() {
            let stem = file_stem(&result.set);
            let roc: Vec<Series> = binary
                .iter()
                .map(|(n, b)| Series {
                    name: format!("{} (AUC {:.3})", legend_name(n), b.roc_auc),
                    points: metrics::thin(&metrics::roc_curve(&b.scores, &b.labels), 400),
                })
                .collect();
            let pr: Vec<Series> = binary
                .iter()
                .map(|(n, b)| Series {
                    name: format!("{} (AP {:.3})", legend_name(n), b.pr_auc),
                    points: metrics::thin(&metrics::pr_curve(&b.scores, &b.labels), 400),
                })
                .collect();
            for (kind, series, x, y, diagonal) in [
                (
                    "roc",
                    roc,
                    "false-positive rate",
                    "true-positive rate",
                    true,
                ),
                ("pr", pr, "recall", "precision", false),
            ] {
                let file = format!("{kind}-{stem}.svg");
                let title = format!("{} — {}", result.set, kind.to_uppercase());
                let path = dir.join(&file);
                std::fs::write(&path, line_chart(&title, x, y, &series, diagonal))
                    .map_err(io(&path))?;
                let _ = writeln!(md, "![{kind} curve of {}]({file})", result.set);
            }
            md.push('\n');
        }
        for (name, evaluation) in &result.models {
            if let Evaluation::Multiclass(m) = evaluation {
                let _ = writeln!(
                    md,
                    "Confusion matrix of {name} (rows: actual, columns: predicted):\n\n| | {} |\n|---|{}",
                    m.classes.join(" | "),
                    "---|".repeat(m.classes.len())
                );
                for (class, row) in m.classes.iter().zip(&m.matrix) {
                    let cells: Vec<String> = row.iter().map(u64::to_string).collect();
                    let _ = writeln!(md, "| {class} | {} |", cells.join(" | "));
                }
                md.push('\n');
            }
        }
    }
    let path = dir.join("README.md");
    std::fs::write(&path, md).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legend_names_are_short() {
        let cases = [
            ("modbot heads@2c1a57bb9b8b", "heads@2c1a57bb9b8b"),
            ("baseline: TF-IDF char+word n-gram LR", "n-gram LR"),
            ("old (models/heads, heads@abc)", "old heads@abc"),
            ("new (/tmp/x (1), heads@def)", "new heads@def"),
        ];
        for (name, expected) in cases {
            assert_eq!(legend_name(name), expected, "{name}");
        }
    }
}
