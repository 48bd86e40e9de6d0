//! The labelled datasets `modbot train` learns from and `modbot eval` measures on: the tasks,
//! reading and splitting their files, embedding them with the encoder as the service would,
//! and what both commands share (the data options, the encoder's identity, the error type).

pub mod data;
pub mod embed;

use std::path::{Path, PathBuf};

use self::data::Split;
use crate::infra::model::{Encoder, ModelError};

/// Why training or evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A data file is malformed.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0 for the whole file).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The data needed is not there.
    #[error("{0}")]
    Missing(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Anything else, said in a sentence.
    #[error("{0}")]
    Other(String),
}

/// The command that prepares the datasets, for messages about missing files.
pub const FETCH_DATA_COMMAND: &str = "python3 scripts/fetch_datasets.py";

/// Reads a dataset's split, cut to `subset` examples when given.
pub fn load_split(
    data_dir: &Path,
    dataset: &str,
    split: &str,
    subset: Option<usize>,
    seed: u64,
) -> Result<Split, TrainError> {
    let task = data::task_of_dataset(dataset)
        .ok_or_else(|| TrainError::Missing(format!("no dataset `{dataset}`")))?;
    let path = data::split_path(data_dir, dataset, split);
    if !path.is_file() {
        return Err(TrainError::Missing(format!(
            "{} is missing: prepare the datasets with `{FETCH_DATA_COMMAND}`",
            path.display()
        )));
    }
    let mut split = data::read_split(&path, task)?;
    if let Some(limit) = subset {
        split.examples = data::subset(split.examples, limit, seed);
    }
    Ok(split)
}

/// The default place of a dataset's prepared files.
pub fn default_data_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("datasets")
}

/// Where the data, the encoder and the cache are, and how examples are drawn from the data:
/// what `modbot train` and `modbot eval` share, so that eval's validation split (for the
/// baselines' thresholds) is the one training used.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Where the prepared datasets are (`<dataset>/<split>.jsonl`).
    pub data_dir: PathBuf,
    /// The encoder's directory.
    pub model_dir: PathBuf,
    /// Where embeddings are cached; `None` for no cache.
    pub cache_dir: Option<PathBuf>,
    /// Use at most this many examples of each split (smoke runs).
    pub subset: Option<usize>,
    /// Seed of splits, subsets, initialisation and shuffling.
    pub seed: u64,
    /// Share of the training data held out for validation.
    pub validation_fraction: f64,
    /// An adapter directory (`modbot finetune`) whose changes the encoder loads with.
    pub adapter: Option<PathBuf>,
}

impl DataOptions {
    /// A dataset's split, cut to [`DataOptions::subset`] examples when one is set.
    pub fn split(&self, dataset: &str, split: &str) -> Result<data::Split, TrainError> {
        load_split(&self.data_dir, dataset, split, self.subset, self.seed)
    }
}

/// The encoder's name as manifests and verdicts say it.
pub const ENCODER_NAME: &str = "all-MiniLM-L6-v2";

/// Loads the encoder on the CPU with its identity (`name@sha256[..12]`).
pub fn load_encoder(
    model_dir: &Path,
    adapter: Option<&Path>,
) -> Result<(Encoder, String), TrainError> {
    let adapter = adapter
        .map(crate::infra::model::adapter::Adapter::load)
        .transpose()?;
    let encoder = Encoder::load_cpu(model_dir, adapter.as_ref())?;
    let weights = model_dir.join("model.safetensors");
    let hash = crate::infra::model::fetch::sha256_file(&weights)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let name = model_dir.file_name().map_or_else(
        || ENCODER_NAME.to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    // An adapted encoder is another encoder: its embeddings are cached under another key
    // and heads trained on them say so.
    let adapted = adapter
        .as_ref()
        .map(|a| format!("+adapter@{}", &a.sha256()[..12]))
        .unwrap_or_default();
    Ok((encoder, format!("{name}@{}{adapted}", &hash[..12])))
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// The highest false-positive rate on validation data that a spam head's threshold may give
/// (a moderation service must rarely hold an honest message), and the rule its baseline's
/// threshold follows too.
pub const SPAM_MAX_FPR: f64 = 0.005;

/// Rounds a metric for the manifest: four decimals are more than the data can tell apart.
pub fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}
