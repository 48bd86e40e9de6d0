//! `modbot train`: classification heads for the default encoder, trained on labelled data.
//!
//! For each task ([`data::TASKS`]: toxicity on the Kaggle 2012 insults, spam on SpamAssassin,
//! sentiment on VADER's rated texts) it reads the task's training split, carves a validation
//! split out of it by a stable hash of each example's id, embeds both with the encoder (as the
//! service would: normalised text, [`embed`]), and trains a few candidate heads with candle-nn
//! ([`crate::infra::model::fit`]): a linear head and a one-hidden-layer MLP at several L2 strengths,
//! class-weighted, with early stopping on the validation loss. The candidate with the best
//! validation score (ROC-AUC for toxicity, PR-AUC for spam, macro-F1 for sentiment) is kept,
//! calibrated on the validation split, and given thresholds chosen on validation data only.
//! The heads are written as safetensors plus `heads.json`, then evaluated on the held-out test
//! splits ([`crate::tools::eval`]) and the test metrics recorded in the manifest.
//!
//! `--with-feedback` folds the moderators' feedback from the database into the training side
//! of the split, never into validation or test data. Each example counts twice a dataset
//! example (a moderator's judgement is about this community's chat); what it teaches depends
//! on its label:
//!
//! | feedback | from | teaches |
//! | --- | --- | --- |
//! | `head/label`, positive | a review rejection labelled `head/label` | that label: positive |
//! | `head/label`, negative | an approved hold or overturned action a model label asked for | that label: negative |
//! | `benign`, negative | an approved hold or overturned action no model label asked for | every binary label: negative |
//! | `unlabeled`, positive | a mute or ban seen in chat (no reason), a rejection labelled with a team word | nothing: harmful in no known way; counted, not used |
//!
//! The softmax sentiment head takes only its own labels.
//!
//! Inputs besides the embedding: binary heads the out-of-fold logit of their own n-gram model;
//! the spam head also the evidence of the message's links ([`LinkSignals`]: look-alike hosts,
//! risky top-level domains, shorteners, by the default link rules' lists), which a sentence
//! embedding hardly sees (`dlscord-gift.com` and `discord.com` embed alike); the sentiment
//! head VADER's scores where validation data prefers them.

pub mod finetune;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::domain::LinkSignals;
use crate::engine::rules::lookalike::link_signals;
use crate::infra::model::fit::{self, FitConfig, FitData, Fitted};
use crate::infra::model::heads::{self, Heads};
use crate::infra::model::ngram::{NgramConfig, NgramModel};
use crate::service::moderate::BENIGN;
use crate::tools::datasets::data::{self, Example, Task};
use crate::tools::datasets::embed::{self, Embedder};
use crate::tools::datasets::{
    DataOptions, ENCODER_NAME, SPAM_MAX_FPR, TrainError, argmax, load_encoder, load_split, round,
};
use crate::tools::eval::{self, metrics};

/// One feedback example from the moderators, for `--with-feedback`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackExample {
    /// `head/label` it teaches, or `benign` / `unlabeled` (see the module's table).
    pub label: String,
    /// The (normalised) message text.
    pub text: String,
    /// True: the label applies (a moderator acted); false: it does not (an overturned appeal).
    pub positive: bool,
    /// Stable id, for the record.
    pub id: String,
}

/// What `modbot train` is asked to do.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The data, the encoder and the sampling.
    pub data: DataOptions,
    /// Where the heads are written.
    pub out_dir: PathBuf,
    /// The heads to train, by name.
    pub heads: Vec<String>,
    /// Moderators' feedback to fold into the training side.
    pub feedback: Vec<FeedbackExample>,
}

/// Candidate heads tried for every task; the best on validation data is kept. Larger data
/// sets take larger mini-batches: a quarter of the steps per epoch, where candle's per-step
/// overhead, not arithmetic, is the cost.
fn candidates(seed: u64, examples: usize) -> Vec<FitConfig> {
    let batch_size = if examples > 8_000 { 256 } else { 64 };
    let mut out = Vec::new();
    for (hidden, learning_rate) in [(0, 3e-3), (256, 1e-3)] {
        for l2 in [1e-5, 1e-4, 1e-3] {
            out.push(FitConfig {
                hidden,
                l2,
                learning_rate,
                batch_size,
                seed,
                ..FitConfig::default()
            });
        }
    }
    out
}

/// The validation score a task's candidates are ranked by (higher is better), from class
/// probabilities.
fn selection_score(task: &Task, probabilities: &[Vec<f32>], classes: &[usize]) -> f64 {
    if task.is_binary() {
        let scores: Vec<f64> = probabilities.iter().map(|p| f64::from(p[1])).collect();
        let labels: Vec<bool> = classes.iter().map(|&c| c == 1).collect();
        let score = if task.head == "spam" {
            metrics::average_precision(&scores, &labels)
        } else {
            metrics::roc_auc(&scores, &labels)
        };
        score.unwrap_or(0.0)
    } else {
        let predicted: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
        metrics::macro_f1(&metrics::confusion_matrix(
            &predicted,
            classes,
            task.classes(),
        ))
    }
}

/// A trained, calibrated head with its thresholds, ready to be written.
struct TrainedHead {
    task: &'static Task,
    fitted: Fitted,
    vader: bool,
    /// Whether the link evidence is an input.
    links: bool,
    ngram: Option<NgramModel>,
    thresholds: BTreeMap<String, f64>,
    training: serde_json::Value,
}

/// Trains the heads asked for and writes them to `options.out_dir`, then evaluates them on the
/// test splits and records the metrics in the manifest. Progress goes to standard error.
pub fn run(options: &TrainOptions) -> Result<(), TrainError> {
    let started = Instant::now();
    let (encoder, encoder_id) =
        load_encoder(&options.data.model_dir, options.data.adapter.as_deref())?;
    let embedder = Embedder::new(&encoder, encoder_id.clone(), options.data.cache_dir.clone());
    let mut trained = Vec::new();
    for name in &options.heads {
        let tasks = data::tasks(name);
        if tasks.is_empty() {
            let mut known: Vec<&str> = data::TASKS.iter().map(|t| t.head).collect();
            known.dedup();
            return Err(TrainError::Missing(format!(
                "no head `{name}` (known: {}; or one label, e.g. toxicity/threat)",
                known.join(", ")
            )));
        }
        for task in tasks {
            trained.push(train_task(task, options, &embedder)?);
        }
    }
    write_heads(
        &options.out_dir,
        &trained,
        &encoder_id,
        embedder.dim(),
        options,
    )?;
    eprintln!("evaluating the new heads on the held-out test splits");
    let heads = Heads::load(&options.out_dir, embedder.dim())?;
    let mut test_metrics = BTreeMap::new();
    for trained in &trained {
        for dataset in std::iter::once(trained.task.dataset)
            .chain(trained.task.also_evaluated_on.iter().copied())
        {
            let split = options.data.split(dataset, "test")?;
            let evaluation = eval::evaluate_heads(
                &heads,
                trained.task,
                &split.examples,
                &embedder,
                &format!("{dataset}/test"),
            )?;
            let entry: &mut BTreeMap<String, f64> =
                test_metrics.entry(trained.task.head).or_default();
            for (key, value) in evaluation.metrics() {
                entry.insert(format!("{dataset}/test.{key}"), value);
            }
            eprintln!(
                "  {}: {dataset}/test {}",
                trained.task.head,
                evaluation.summary()
            );
        }
    }
    record_metrics(&options.out_dir, &test_metrics)?;
    eprintln!(
        "wrote {} head(s) to {} in {:.0} s",
        trained.len(),
        options.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A task's examples as `modbot train` (and `modbot finetune`) learn from them: the
/// dataset's training split cut into training and validation by a stable hash, the task's
/// extra negatives (cut the same way), and moderators' feedback (training side only).
pub struct TaskData {
    /// Training examples: the dataset's own first, then extra negatives, then feedback.
    pub train: Vec<Example>,
    /// Validation examples: the dataset's own first, then extra negatives.
    pub validation: Vec<Example>,
    /// Weight of each training example (feedback counts double).
    pub weights: Vec<f32>,
    /// How many of `train` are the dataset's own.
    pub own_train: usize,
    /// How many of `validation` are the dataset's own.
    pub own_validation: usize,
    /// Extra negatives added (both sides).
    pub extra_negatives: usize,
    /// Feedback examples added.
    pub feedback_used: usize,
    /// sha256 of the dataset's training file.
    pub train_file_sha256: String,
}

/// [`TaskData`] of `task`.
pub fn task_data(
    task: &'static Task,
    source: &DataOptions,
    feedback: &[FeedbackExample],
) -> Result<TaskData, TrainError> {
    let split = source.split(task.dataset, "train")?;
    let (mut train, mut validation) = data::validation_split(
        split.examples.clone(),
        source.validation_fraction,
        source.seed,
    );
    // The dataset's own examples come first, additions after: the first part's embeddings
    // are then the same list as on every run, and come from the cache.
    let (own_train, own_validation) = (train.len(), validation.len());
    let mut extra_negatives = 0;
    for dataset in task.extra_negatives {
        let other = load_split(&source.data_dir, dataset, "train", None, source.seed)?;
        let limit = source
            .subset
            .unwrap_or(EXTRA_NEGATIVES)
            .min(EXTRA_NEGATIVES);
        let sample = data::subset(other.examples, limit, source.seed);
        let (more_train, more_validation) =
            data::validation_split(sample, source.validation_fraction, source.seed);
        for (mut example, held_out) in more_train
            .into_iter()
            .map(|e| (e, false))
            .chain(more_validation.into_iter().map(|e| (e, true)))
        {
            example.class = 0;
            extra_negatives += 1;
            if held_out {
                validation.push(example);
            } else {
                train.push(example);
            }
        }
    }
    let mut weights = vec![1.0f32; train.len()];
    let mut feedback_used = 0;
    for feedback in feedback {
        let (head, label) = match feedback.label.split_once('/') {
            Some(pair) => pair,
            // A negative of everything: of this label too, if it is a binary one.
            None if feedback.label == BENIGN && !feedback.positive => (task.head, task.labels[0]),
            // Unlabeled positives (and anything else) teach no label.
            None => continue,
        };
        if head != task.head {
            continue;
        }
        let class = match (task.is_binary(), feedback.positive) {
            (true, true) if label == task.labels[0] => 1,
            (true, false) if label == task.labels[0] => 0,
            (false, true) => match task.labels.iter().position(|l| *l == label) {
                Some(class) => class,
                None => continue,
            },
            _ => continue,
        };
        train.push(Example {
            id: format!("feedback/{}", feedback.id),
            text: feedback.text.clone(),
            class,
            source: "feedback".to_owned(),
            vader_compound: None,
        });
        // A moderator's judgement is about this community's chat, the data's is about someone
        // else's: it counts double.
        weights.push(2.0);
        feedback_used += 1;
    }
    Ok(TaskData {
        train,
        validation,
        weights,
        own_train,
        own_validation,
        extra_negatives,
        feedback_used,
        train_file_sha256: split.sha256,
    })
}

fn train_task(
    task: &'static Task,
    options: &TrainOptions,
    embedder: &Embedder<'_>,
) -> Result<TrainedHead, TrainError> {
    eprintln!("training head `{}` on {}", task.head, task.dataset);
    let TaskData {
        train,
        validation,
        weights,
        own_train,
        own_validation,
        extra_negatives,
        feedback_used,
        train_file_sha256,
    } = task_data(task, &options.data, &options.feedback)?;
    let counts = data::class_counts(&train, task.classes());
    let val_counts = data::class_counts(&validation, task.classes());
    for (side, side_counts) in [("training", &counts), ("validation", &val_counts)] {
        if let Some(class) = side_counts.iter().position(|&n| n == 0) {
            return Err(TrainError::Other(format!(
                "{}: the {side} split has no `{}` example ({} training and {} validation                  examples): too little data, or try another --validation-fraction",
                task.head,
                task.class_names()[class],
                train.len(),
                validation.len()
            )));
        }
    }
    eprintln!(
        "  {} training examples {:?}, {} validation {:?}, {extra_negatives} extra negatives, \
         {feedback_used} from feedback (classes {:?})",
        train.len(),
        counts,
        validation.len(),
        val_counts,
        task.class_names()
    );
    let texts: Vec<&str> = train.iter().map(|e| e.text.as_str()).collect();
    let norm_train = embed::normalized(&texts);
    let mut x_train = embed_in_parts(
        embedder,
        &format!("{}/train", task.dataset),
        &norm_train,
        own_train,
    )?;
    let texts: Vec<&str> = validation.iter().map(|e| e.text.as_str()).collect();
    let norm_val = embed::normalized(&texts);
    let mut x_val = embed_in_parts(
        embedder,
        &format!("{}/validation", task.dataset),
        &norm_val,
        own_validation,
    )?;
    let y_train: Vec<usize> = train.iter().map(|e| e.class).collect();
    let y_val: Vec<usize> = validation.iter().map(|e| e.class).collect();

    // Binary heads get a lexical half: an n-gram model whose logit is one more input. The
    // head learns from out-of-fold logits (a model never scores its own training texts), so
    // it learns how far to trust the n-grams on unseen text.
    let ngram = if task.is_binary() {
        let half = ngram_half(
            task,
            &train,
            &norm_train,
            &norm_val,
            &y_val,
            options.data.seed,
        )?;
        for (x, logit) in x_train.iter_mut().zip(&half.out_of_fold) {
            x.push(*logit);
        }
        for (x, text) in x_val.iter_mut().zip(&norm_val) {
            x.push(half.model.logit(text) as f32);
        }
        Some(half)
    } else {
        None
    };
    // The spam head also reads what the links show (look-alike hosts, risky top-level
    // domains, shorteners), after the n-gram logit, as the server passes them.
    if task.takes_links() {
        for (x, text) in x_train.iter_mut().zip(&norm_train) {
            x.extend(link_signals(text).inputs());
        }
        for (x, text) in x_val.iter_mut().zip(&norm_val) {
            x.extend(link_signals(text).inputs());
        }
    }
    // Multi-class (sentiment) heads may also take VADER's scores; both variants are tried
    // and validation data decides.
    let with_vader = |xs: &[Vec<f32>], texts: &[String]| -> Vec<Vec<f32>> {
        xs.iter()
            .zip(texts)
            .map(|(x, t)| {
                let mut x = x.clone();
                x.extend(heads::vader_scores(t));
                x
            })
            .collect()
    };
    // (with VADER's scores, training inputs, validation inputs)
    type Variant = (bool, Vec<Vec<f32>>, Vec<Vec<f32>>);
    let variants: Vec<Variant> = if task.is_binary() {
        vec![(false, x_train, x_val)]
    } else {
        let vader_train = with_vader(&x_train, &norm_train);
        let vader_val = with_vader(&x_val, &norm_val);
        vec![(false, x_train, x_val), (true, vader_train, vader_val)]
    };

    let mut best: Option<(f64, Fitted, FitConfig, usize)> = None;
    let mut tried = Vec::new();
    for (variant, (vader, x_train, x_val)) in variants.iter().enumerate() {
        let train_data = FitData {
            inputs: x_train,
            classes: &y_train,
            weights: Some(&weights),
        };
        let val_data = FitData {
            inputs: x_val,
            classes: &y_val,
            weights: None,
        };
        for config in candidates(options.data.seed, y_train.len()) {
            let fit_started = Instant::now();
            let fitted = fit::fit(train_data, val_data, task.classes(), &config, |_, _, _| {})?;
            let probabilities: Vec<Vec<f32>> = x_val
                .iter()
                .map(|x| fit::softmax(&fitted.logits(x)))
                .collect();
            let score = selection_score(task, &probabilities, &y_val);
            eprintln!(
                "  candidate hidden={} l2={:e}{}: validation score {score:.4}, loss {:.4}, best \
                 epoch {}/{} ({:.1} s)",
                config.hidden,
                config.l2,
                if *vader { " +VADER" } else { "" },
                fitted.validation_loss,
                fitted.best_epoch,
                fitted.epochs,
                fit_started.elapsed().as_secs_f64()
            );
            tried.push(json!({
                "hidden": config.hidden, "l2": config.l2, "vader": vader,
                "validation_score": round(score),
                "validation_loss": round(fitted.validation_loss), "best_epoch": fitted.best_epoch,
            }));
            if best.as_ref().is_none_or(|(s, _, _, _)| score > *s) {
                best = Some((score, fitted, config, variant));
            }
        }
    }
    let (score, fitted, config, variant) = best.expect("there are candidates. This is a bug");
    let (vader, _, x_val) = &variants[variant];
    let vader = *vader;
    let val_data = FitData {
        inputs: x_val,
        classes: &y_val,
        weights: None,
    };
    let calibration = fit::calibrate(&fitted, val_data, task.classes())?;
    let fitted = fitted.calibrated(&calibration);
    eprintln!(
        "  kept hidden={} l2={:e}{} (validation score {score:.4}); calibration scale {:.3}, \
         bias {:?}",
        config.hidden,
        config.l2,
        if vader { " +VADER" } else { "" },
        calibration.scale,
        calibration.bias
    );

    // Thresholds and validation metrics from the calibrated head, on validation data only.
    let probabilities: Vec<Vec<f32>> = x_val
        .iter()
        .map(|x| fit::softmax(&fitted.logits(x)))
        .collect();
    let mut thresholds = BTreeMap::new();
    let mut validation_metrics = BTreeMap::new();
    if task.is_binary() {
        let scores: Vec<f64> = probabilities.iter().map(|p| f64::from(p[1])).collect();
        let labels: Vec<bool> = y_val.iter().map(|&c| c == 1).collect();
        let max_fpr = (task.head == "spam").then_some(SPAM_MAX_FPR);
        let choice = metrics::best_threshold(&scores, &labels, max_fpr).ok_or_else(|| {
            TrainError::Other(format!("{}: no threshold could be chosen", task.head))
        })?;
        if !choice.met_fpr_limit {
            eprintln!(
                "  warning: no threshold keeps the validation false-positive rate at or below \
                 {max_fpr:?}; chose the lowest ({:.4})",
                choice.fpr
            );
        }
        thresholds.insert(task.labels[0].to_owned(), round(choice.threshold));
        validation_metrics.insert("f1".to_owned(), round(choice.f1));
        validation_metrics.insert("precision".to_owned(), round(choice.precision));
        validation_metrics.insert("recall".to_owned(), round(choice.recall));
        validation_metrics.insert("fpr".to_owned(), round(choice.fpr));
    } else {
        for (class, label) in task.labels.iter().enumerate() {
            let scores: Vec<f64> = probabilities.iter().map(|p| f64::from(p[class])).collect();
            let labels: Vec<bool> = y_val.iter().map(|&c| c == class).collect();
            if let Some(choice) = metrics::best_threshold(&scores, &labels, None) {
                thresholds.insert((*label).to_owned(), round(choice.threshold));
            }
        }
    }
    validation_metrics.insert(
        "score".to_owned(),
        round(selection_score(task, &probabilities, &y_val)),
    );
    let training = json!({
        "ngram": ngram.as_ref().map(|h| &h.report),
        "dataset": task.dataset,
        "train_file_sha256": train_file_sha256,
        "train_examples": train.len(),
        "train_class_counts": counts,
        "validation_examples": validation.len(),
        "validation_class_counts": val_counts,
        "feedback_examples": feedback_used,
        "extra_negatives": {"datasets": task.extra_negatives, "examples": extra_negatives},
        "candidates": tried,
        "kept": {"hidden": config.hidden, "l2": config.l2, "vader": vader, "links": task.takes_links(),
                  "learning_rate": config.learning_rate,
                  "dropout": config.dropout, "batch_size": config.batch_size,
                  "best_epoch": fitted.best_epoch, "epochs": fitted.epochs},
        "calibration": {"scale": calibration.scale, "bias": calibration.bias},
        "validation": validation_metrics,
    });
    Ok(TrainedHead {
        task,
        fitted,
        vader,
        links: task.takes_links(),
        ngram: ngram.map(|h| h.model),
        thresholds,
        training,
    })
}

/// Buckets of the heads' n-gram halves: 2^18 keeps a head file near 1 MB (two f16 tables)
/// at little cost in quality next to the baseline's 2^20.
const HEAD_NGRAM_BUCKETS_LOG2: u32 = 18;
/// L2 strengths tried for an n-gram half (scikit-learn's 1/C), chosen on validation data.
const NGRAM_L2: [f64; 3] = [0.3, 1.0, 3.0];
/// Folds of the out-of-fold logits.
const NGRAM_FOLDS: u64 = 5;

/// A head's trained n-gram half.
struct NgramHalf {
    /// The model as stored (f16 tables), fitted on all the training side.
    model: NgramModel,
    /// Each training example's logit from a model that did not see it.
    out_of_fold: Vec<f32>,
    /// How it was chosen, for the manifest.
    report: serde_json::Value,
}

fn ngram_half(
    task: &Task,
    train: &[Example],
    norm_train: &[String],
    norm_val: &[String],
    y_val: &[usize],
    seed: u64,
) -> Result<NgramHalf, TrainError> {
    let started = Instant::now();
    let labels: Vec<bool> = train.iter().map(|e| e.class == 1).collect();
    let val_labels: Vec<bool> = y_val.iter().map(|&c| c == 1).collect();
    let texts: Vec<&str> = norm_train.iter().map(String::as_str).collect();
    let config_with = |l2: f64| NgramConfig {
        buckets_log2: HEAD_NGRAM_BUCKETS_LOG2,
        l2,
        seed,
        ..NgramConfig::default()
    };
    let mut best: Option<(f64, f64, NgramModel)> = None;
    let mut tried = Vec::new();
    for l2 in NGRAM_L2 {
        let model = NgramModel::fit(&texts, &labels, &config_with(l2));
        let scores: Vec<f64> = norm_val.iter().map(|t| model.logit(t)).collect();
        let score = if task.head == "spam" {
            metrics::average_precision(&scores, &val_labels)
        } else {
            metrics::roc_auc(&scores, &val_labels)
        }
        .unwrap_or(0.0);
        tried.push(json!({"l2": l2, "validation_score": round(score)}));
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, l2, model));
        }
    }
    let (score, l2, model) = best.expect("there are candidates. This is a bug");
    let mut out_of_fold = vec![0f32; train.len()];
    let fold_of: Vec<u64> = train
        .iter()
        .map(|e| data::stable_hash(seed ^ 0xf01d, &e.id) % NGRAM_FOLDS)
        .collect();
    for fold in 0..NGRAM_FOLDS {
        let (inside, outside): (Vec<usize>, Vec<usize>) =
            (0..train.len()).partition(|&i| fold_of[i] != fold);
        let fold_texts: Vec<&str> = inside.iter().map(|&i| texts[i]).collect();
        let fold_labels: Vec<bool> = inside.iter().map(|&i| labels[i]).collect();
        let fold_model = NgramModel::fit(&fold_texts, &fold_labels, &config_with(l2));
        for i in outside {
            out_of_fold[i] = fold_model.logit(texts[i]) as f32;
        }
    }
    let model = heads::stored_ngram(&model)?;
    eprintln!(
        "  n-gram half: l2 {l2} (validation score {score:.4}), out-of-fold logits from \
         {NGRAM_FOLDS} folds ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(NgramHalf {
        model,
        out_of_fold,
        report: json!({
            "buckets_log2": HEAD_NGRAM_BUCKETS_LOG2, "kept_l2": l2, "candidates": tried,
            "folds": NGRAM_FOLDS,
        }),
    })
}

/// When the heads just written to `out` are a set that already exists (the same version as
/// `shipped` or a set under `registry`: a retrain that learned nothing new), removes what
/// training wrote there (the manifest and the head files, then the directory if that left it
/// empty) and returns the existing set's directory. A scheduled retrain thus never adds a
/// second copy of a version, which the registry would refuse to serve as a duplicate.
pub fn drop_if_known(
    out: &Path,
    shipped: &Path,
    registry: &Path,
) -> Result<Option<PathBuf>, TrainError> {
    let written = crate::infra::model::registry::summarize(out, false);
    if written.version.is_empty() {
        return Ok(None);
    }
    let known = crate::infra::model::registry::list(shipped, registry)?
        .into_iter()
        .filter(|e| !same_dir(&e.dir, out))
        .find(|e| e.version == written.version);
    let Some(known) = known else {
        return Ok(None);
    };
    for head in &written.heads {
        let file = out.join(format!("{}.safetensors", head.name));
        std::fs::remove_file(&file).map_err(io_error("cannot remove", &file))?;
    }
    let manifest = out.join(heads::MANIFEST);
    std::fs::remove_file(&manifest).map_err(io_error("cannot remove", &manifest))?;
    // Only when nothing else is in it.
    let _ = std::fs::remove_dir(out);
    Ok(Some(known.dir))
}

/// Whether two paths name the same directory (or are the same path).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

/// Most examples taken from each of a task's extra-negative datasets.
const EXTRA_NEGATIVES: usize = 1_500;

/// Embeds `texts[..own]` and `texts[own..]` as two cached lists: the first is the dataset's
/// own split, the same on every run; the second whatever was added (extra negatives,
/// feedback), which changes.
fn embed_in_parts(
    embedder: &Embedder<'_>,
    what: &str,
    texts: &[String],
    own: usize,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let mut rows = embedder.embed_normalized(what, &texts[..own])?;
    if own < texts.len() {
        rows.extend(embedder.embed_normalized(&format!("{what} (additions)"), &texts[own..])?);
    }
    Ok(rows)
}

fn io_error<'p>(
    what: &'static str,
    path: &'p Path,
) -> impl FnOnce(std::io::Error) -> TrainError + 'p {
    move |source| TrainError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn write_heads(
    dir: &Path,
    trained: &[TrainedHead],
    encoder_id: &str,
    embedding_dim: usize,
    options: &TrainOptions,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(io_error("cannot create", dir))?;
    let mut entries = Vec::new();
    let mut all_bytes = Vec::new();
    // The tasks of one head, in training order, make one file.
    let mut names: Vec<&str> = trained.iter().map(|t| t.task.head).collect();
    names.dedup();
    for name in names {
        let members: Vec<&TrainedHead> = trained.iter().filter(|t| t.task.head == name).collect();
        let per_label = members.len() > 1;
        if per_label && members.iter().any(|m| !m.task.is_binary()) {
            return Err(TrainError::Other(format!(
                "{name}: only binary tasks can share a head"
            )));
        }
        let served: Vec<_> = members
            .iter()
            .map(|m| {
                if m.task.is_binary() {
                    m.fitted.as_binary()
                } else {
                    m.fitted.clone()
                }
            })
            .collect();
        let prefixes: Vec<String> = members
            .iter()
            .map(|m| {
                if per_label {
                    format!("{}.", m.task.labels[0])
                } else {
                    String::new()
                }
            })
            .collect();
        let parts: Vec<heads::PartToWrite<'_>> = members
            .iter()
            .zip(&served)
            .zip(&prefixes)
            .map(|((m, s), p)| (p.as_str(), &s.layers[..], m.ngram.as_ref()))
            .collect();
        let file = format!("{name}.safetensors");
        let path = dir.join(&file);
        heads::write_head_parts(&path, &parts)?;
        let bytes = std::fs::read(&path).map_err(io_error("cannot read", &path))?;
        let version = crate::infra::model::fetch::sha256_bytes(&bytes)[..12].to_owned();
        all_bytes.extend_from_slice(&bytes);
        let labels: Vec<&str> = members
            .iter()
            .flat_map(|m| m.task.labels.iter().copied())
            .collect();
        let thresholds: BTreeMap<&String, &f64> =
            members.iter().flat_map(|m| m.thresholds.iter()).collect();
        // The n-gram features must be the same for every part: the manifest names one config.
        let features = |m: &&TrainedHead| {
            m.ngram.as_ref().map(|n| {
                let c = n.parts().0;
                (
                    c.char_min,
                    c.char_max,
                    c.word_min,
                    c.word_max,
                    c.buckets_log2,
                )
            })
        };
        let ngram = members[0].ngram.as_ref().map(|m| m.parts().0);
        if members.iter().any(|m| features(m) != features(&members[0])) {
            return Err(TrainError::Other(format!(
                "{name}: the labels' n-gram halves differ in their features"
            )));
        }
        if members.iter().any(|m| m.links != members[0].links) {
            return Err(TrainError::Other(format!(
                "{name}: the labels differ in whether they take the link evidence"
            )));
        }
        let training = if per_label {
            json!(
                members
                    .iter()
                    .map(|m| (m.task.labels[0], &m.training))
                    .collect::<BTreeMap<_, _>>()
            )
        } else {
            members[0].training.clone()
        };
        entries.push(json!({
            "name": name,
            "file": file,
            "multi_label": members[0].task.is_binary(),
            "per_label": per_label,
            "labels": labels,
            "thresholds": thresholds,
            "version": version,
            "metrics": {},
            "ngram": ngram,
            "vader": members[0].vader,
            "links": members[0].links.then_some(LinkSignals::VERSION),
            "training": training,
        }));
    }
    // Heads trained on an adapted encoder's embeddings name the adapter with the encoder:
    // served by the plain encoder, they would be fed vectors they never saw.
    let encoder_name = match encoder_id.split_once("+adapter@") {
        Some((_, adapter)) => format!("{ENCODER_NAME}+adapter@{adapter}"),
        None => ENCODER_NAME.to_owned(),
    };
    let manifest = json!({
        "version": crate::infra::model::fetch::sha256_bytes(&all_bytes)[..12].to_owned(),
        "encoder": encoder_name,
        "embedding_dim": embedding_dim,
        "heads": entries,
        "training": {
            "encoder": encoder_id,
            "seed": options.data.seed,
            "validation_fraction": options.data.validation_fraction,
            "subset": options.data.subset,
            "normalize": embed::NORMALIZE_VERSION,
            "tool": format!("modbot {}", env!("CARGO_PKG_VERSION")),
        },
    });
    write_manifest(dir, &manifest)
}

fn write_manifest(dir: &Path, manifest: &serde_json::Value) -> Result<(), TrainError> {
    let path = dir.join(heads::MANIFEST);
    let text =
        serde_json::to_string_pretty(manifest).expect("JSON values serialise. This is a bug");
    std::fs::write(&path, text + "\n").map_err(io_error("cannot write", &path))
}

/// Puts test metrics into the manifest's heads.
fn record_metrics(
    dir: &Path,
    metrics: &BTreeMap<&str, BTreeMap<String, f64>>,
) -> Result<(), TrainError> {
    let path = dir.join(heads::MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(io_error("cannot read", &path))?;
    let mut manifest: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::Other(format!("{}: {e}", path.display())))?;
    if let Some(entries) = manifest["heads"].as_array_mut() {
        for entry in entries {
            let name = entry["name"].as_str().unwrap_or_default().to_owned();
            if let Some(values) = metrics.get(name.as_str()) {
                entry["metrics"] = json!(
                    values
                        .iter()
                        .map(|(k, v)| (k.clone(), round(*v)))
                        .collect::<BTreeMap<_, _>>()
                );
            }
        }
    }
    write_manifest(dir, &manifest)
}
