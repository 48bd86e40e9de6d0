//! `modbot finetune`: an adapter for the encoder's top layer ([`adapter`]), trained on the
//! binary labels' data (by default insult, threat, sexual, identity attack, spam, promotion),
//! written as a
//! directory that `modbot train --adapter` and `modbot eval --adapter` load the encoder with.
//!
//! Each task contributes at most `per_task` training examples and a quarter of that from its
//! validation side, half of them positive where there are enough: the same examples, cut by the same stable hash, that `modbot train` uses
//! ([`super::task_data`]), so the adapter never sees a test split. The token vectors entering
//! the top layer are computed once with the frozen encoder; the adapter is then trained on them
//! with one probe per task (see [`adapter`]). The report compares, per task, the validation
//! ROC-AUC of the probe on the frozen layer with the adapted layer's: a first look. Whether an
//! adapter pays is decided by heads retrained on it and scored on test data (`modbot train
//! --adapter DIR --out HEADS`, then `modbot eval --adapter DIR --heads-dir HEADS`).

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::task_data;
use crate::infra::model::adapter::{self, TopLayer, TuneConfig, TuneExample};
use crate::tools::datasets::data::{self, Example, Task};
use crate::tools::datasets::embed;
use crate::tools::datasets::{DataOptions, TrainError, load_encoder, round};
use crate::tools::eval::metrics;

/// What `modbot finetune` is asked to do.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// The data and the encoder (`data.adapter` must be `None`: an adapter is trained on the
    /// plain encoder).
    pub data: DataOptions,
    /// Where the adapter is written.
    pub out_dir: PathBuf,
    /// Heads (or `head/label`s) whose binary labels the probes learn.
    pub heads: Vec<String>,
    /// Most training examples per task (validation: a quarter of it).
    pub per_task: usize,
    /// How the adapter is trained.
    pub tune: TuneConfig,
}

/// One task's validation ROC-AUC with the frozen and the adapted top layer.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskComparison {
    /// `head/label`.
    pub label: String,
    /// Validation examples.
    pub examples: usize,
    /// The probe on the frozen layer.
    pub frozen_auc: f64,
    /// The probe on the adapted layer.
    pub tuned_auc: f64,
}

/// Trains an adapter and writes it to `options.out_dir`; returns the per-task comparison.
pub fn run(options: &FinetuneOptions) -> Result<Vec<TaskComparison>, TrainError> {
    if options.data.adapter.is_some() {
        return Err(TrainError::Other(
            "an adapter is trained on the plain encoder: drop --adapter".to_owned(),
        ));
    }
    if options.per_task < 10 {
        return Err(TrainError::Other(
            "--per-task: at least 10 examples per task".to_owned(),
        ));
    }
    let mut tasks: Vec<&'static Task> = Vec::new();
    for name in &options.heads {
        let found: Vec<&'static Task> = data::tasks(name)
            .into_iter()
            .filter(|t| t.is_binary())
            .collect();
        if found.is_empty() {
            return Err(TrainError::Missing(format!(
                "no binary label under `{name}` (e.g. toxicity, spam, toxicity/threat)"
            )));
        }
        for task in found {
            if !tasks.iter().any(|t| std::ptr::eq(*t, task)) {
                tasks.push(task);
            }
        }
    }
    let started = Instant::now();
    let top = TopLayer::load(&options.data.model_dir)?;
    let (encoder, encoder_id) = load_encoder(&options.data.model_dir, None)?;
    let mut train = Vec::new();
    let mut validation = Vec::new();
    let mut sources = Vec::new();
    for (index, task) in tasks.iter().enumerate() {
        let all = task_data(task, &options.data, &[])?;
        let seed = options.data.seed;
        let train_part = balanced(&all.train, options.per_task, seed);
        let validation_part = balanced(&all.validation, options.per_task.div_ceil(4), seed);
        eprintln!(
            "{}/{}: {} training examples {:?}, {} validation {:?}",
            task.head,
            task.labels[0],
            train_part.len(),
            data::class_counts(&train_part, 2),
            validation_part.len(),
            data::class_counts(&validation_part, 2),
        );
        sources.push(json!({
            "label": format!("{}/{}", task.head, task.labels[0]),
            "dataset": task.dataset,
            "train_file_sha256": all.train_file_sha256,
            "train_examples": train_part.len(),
            "validation_examples": validation_part.len(),
        }));
        for (part, out) in [
            (&train_part, &mut train),
            (&validation_part, &mut validation),
        ] {
            out.extend(states(&encoder, &top, part, index)?);
        }
    }
    eprintln!(
        "top-layer states of {} examples in {:.0} s; training the adapter",
        train.len() + validation.len(),
        started.elapsed().as_secs_f64()
    );
    let tuned = adapter::tune(
        &top,
        tasks.len(),
        &train,
        &validation,
        &options.tune,
        |epoch| {
            eprintln!(
                "  epoch {} ({}): train loss {:.4}, validation loss {:.4}",
                epoch.epoch,
                if epoch.adapter { "adapter" } else { "probes" },
                epoch.train_loss,
                epoch.validation_loss
            );
        },
    )?;
    let mut comparison = Vec::new();
    for (index, task) in tasks.iter().enumerate() {
        let mut labels = Vec::new();
        let mut frozen = Vec::new();
        let mut adapted = Vec::new();
        for (i, example) in validation.iter().enumerate() {
            if example.task == index {
                labels.push(example.positive);
                frozen.push(f64::from(tuned.frozen_logits[i]));
                adapted.push(f64::from(tuned.tuned_logits[i]));
            }
        }
        comparison.push(TaskComparison {
            label: format!("{}/{}", task.head, task.labels[0]),
            examples: labels.len(),
            frozen_auc: metrics::roc_auc(&frozen, &labels).unwrap_or(f64::NAN),
            tuned_auc: metrics::roc_auc(&adapted, &labels).unwrap_or(f64::NAN),
        });
    }
    let mut adapter = tuned.adapter;
    adapter.manifest.provenance = json!({
        "command": "modbot finetune",
        "encoder": encoder_id,
        "seed": options.data.seed,
        "validation_fraction": options.data.validation_fraction,
        "per_task": options.per_task,
        "config": options.tune,
        "data": sources,
        "epochs": tuned.epochs,
        "best_epoch": tuned.best_epoch,
        "validation_roc_auc": comparison.iter().map(|c| json!({
            "label": c.label,
            "examples": c.examples,
            "frozen": round(c.frozen_auc),
            "adapted": round(c.tuned_auc),
        })).collect::<Vec<_>>(),
        "seconds": started.elapsed().as_secs(),
    });
    adapter.save(&options.out_dir)?;
    eprintln!(
        "wrote the adapter (epoch {}) to {} in {:.0} s",
        tuned.best_epoch,
        options.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(comparison)
}

/// At most `limit` examples, half of each class where the data has them (a stable hash picks
/// which), the rest from the other class: the extra negatives and rare labels would otherwise
/// leave a handful of positives.
fn balanced(examples: &[Example], limit: usize, seed: u64) -> Vec<Example> {
    let (positives, negatives): (Vec<Example>, Vec<Example>) =
        examples.iter().cloned().partition(|e| e.class == 1);
    let half = limit / 2;
    let take_positive = positives.len().min(limit - half.min(negatives.len()));
    let take_negative = negatives.len().min(limit - take_positive);
    let mut out = data::subset(positives, take_positive, seed);
    out.extend(data::subset(negatives, take_negative, seed));
    out
}

/// The examples' token vectors entering the top layer, as [`TuneExample`]s of `task`.
fn states(
    encoder: &crate::infra::model::Encoder,
    top: &TopLayer,
    examples: &[Example],
    task: usize,
) -> Result<Vec<TuneExample>, TrainError> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let normalized = embed::normalized(&texts);
    let mut out = Vec::with_capacity(examples.len());
    for (chunk, labelled) in normalized.chunks(64).zip(examples.chunks(64)) {
        let tokens = chunk
            .iter()
            .map(|t| encoder.tokenize(t))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = encoder.states(&tokens, top.index())?;
        for (rows, example) in rows.into_iter().zip(labelled) {
            if rows.is_empty() {
                continue;
            }
            out.push(TuneExample {
                rows,
                task,
                positive: example.class == 1,
                weight: 1.0,
            });
        }
    }
    Ok(out)
}
