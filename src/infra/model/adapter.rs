//! Low-rank adapters (LoRA) for the encoder's top layer: fine-tuning the encoder, kept small.
//!
//! An adapter adds `scale · B·A` to some weight matrices of the top transformer layer (`A`:
//! rank × inputs, `B`: outputs × rank, `scale = alpha / rank`). It is trained with the rest of
//! the encoder frozen: the token vectors entering the top layer are computed once by the
//! packed forward ([`super::packed::PackedBert::states`]); only the top layer then runs, in
//! candle with autograd, followed by the model's pooling and one linear probe per task (a
//! binary label: insult, spam …). The probes are trained alone first (linear probing, on the
//! frozen layer's vectors computed once); from the probe-only epoch with the lowest validation
//! loss (the frozen baseline), they train together with the adapter, and the adapter epoch
//! with the lowest validation loss is kept.
//!
//! Training is deterministic: the factors are initialised, the examples shuffled and batched
//! from a seeded SplitMix64, and candle's CPU kernels reduce in a fixed order.
//!
//! When the encoder loads with an adapter ([`super::Encoder::load_adapted`]), the products are
//! added to the weights before anything else happens, so an adapted encoder is a plain BERT
//! again: every forward (packed f32, int8, candle) runs it, at no extra cost per message.
//!
//! On disk an adapter is a directory: `adapter.json` ([`AdapterManifest`]: the encoder weights
//! it belongs to, the layer, rank, alpha and targets, how it was made) and
//! `adapter.safetensors` (`<target>.lora_a`, `<target>.lora_b` per target). An adapter made
//! for other weights is refused.
//!
//! Architecture Invariant: like [`super::fit`], this module takes plain vectors and returns
//! plain weights; it knows nothing of datasets or tasks beyond their index.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use candle_transformers::models::bert::Config as BertConfig;
use serde::{Deserialize, Serialize};

use super::{
    ModelError, Pooling, PoolingMode, packed, pool_padded, read_json, read_pooling, required,
};

/// The adapter's manifest file.
pub const ADAPTER_JSON: &str = "adapter.json";
/// The adapter's factors.
pub const ADAPTER_WEIGHTS: &str = "adapter.safetensors";
/// The matrices of a layer an adapter may change, as named in BERT checkpoints (under
/// `encoder.layer.N.`).
pub const TARGETS: &[&str] = &[
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];
/// The manifest format this build reads and writes.
const FORMAT: u32 = 1;

/// `adapter.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// SHA-256 of the `model.safetensors` it was trained on; another encoder refuses it.
    pub base_sha256: String,
    /// The transformer layer it changes (0-based).
    pub layer: usize,
    /// Rank of the factors.
    pub rank: usize,
    /// The products are scaled by `alpha / rank`.
    pub alpha: f32,
    /// The matrices it changes, from [`TARGETS`].
    pub targets: Vec<String>,
    /// How it was made (seed, data, metrics): for people, not read.
    #[serde(default)]
    pub provenance: serde_json::Value,
}

/// A loaded adapter.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// What it is.
    pub manifest: AdapterManifest,
    /// Per target, in manifest order: `A` (rank × inputs) and `B` (outputs × rank), as
    /// tensors on the CPU.
    factors: Vec<(Tensor, Tensor)>,
    /// SHA-256 of `adapter.safetensors`: part of the adapted encoder's identity.
    sha256: String,
}

impl Adapter {
    /// Reads an adapter directory.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let manifest: AdapterManifest = read_json(&required(dir, ADAPTER_JSON)?)?;
        let weights = required(dir, ADAPTER_WEIGHTS)?;
        let bad = |message: String| ModelError::Config {
            path: dir.join(ADAPTER_JSON),
            message,
        };
        if manifest.format != FORMAT {
            return Err(bad(format!(
                "format {} (this build reads {FORMAT})",
                manifest.format
            )));
        }
        if manifest.rank == 0 || manifest.targets.is_empty() {
            return Err(bad("an adapter needs a rank and targets".to_owned()));
        }
        let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
        let mut factors = Vec::with_capacity(manifest.targets.len());
        for target in &manifest.targets {
            if !TARGETS.contains(&target.as_str()) {
                return Err(bad(format!("`{target}` is not one of {TARGETS:?}")));
            }
            let get = |part: &str| {
                tensors
                    .get(&format!("{target}.{part}"))
                    .ok_or_else(|| bad(format!("{ADAPTER_WEIGHTS} lacks {target}.{part}")))
                    .and_then(|t| Ok(t.to_dtype(DType::F32)?))
            };
            let (a, b) = (get("lora_a")?, get("lora_b")?);
            let (rank_a, _) = a.dims2()?;
            let (_, rank_b) = b.dims2()?;
            if rank_a != manifest.rank || rank_b != manifest.rank {
                return Err(bad(format!(
                    "{target}: factors of rank {rank_a}/{rank_b}, the manifest says {}",
                    manifest.rank
                )));
            }
            factors.push((a, b));
        }
        let sha256 = super::fetch::sha256_file(&weights)
            .map_err(|e| bad(format!("cannot hash {}: {e}", weights.display())))?;
        Ok(Self {
            manifest,
            factors,
            sha256,
        })
    }

    /// Writes the adapter into `dir` (created when missing).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let io = |path: &Path, e: std::io::Error| ModelError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut tensors = HashMap::new();
        for (target, (a, b)) in self.manifest.targets.iter().zip(&self.factors) {
            tensors.insert(format!("{target}.lora_a"), a.clone());
            tensors.insert(format!("{target}.lora_b"), b.clone());
        }
        let weights = dir.join(ADAPTER_WEIGHTS);
        candle_core::safetensors::save(&tensors, &weights)?;
        // The writer leaves the file readable by its owner only; an adapter is read by the
        // service's own user (a read-only volume in the chart), like the heads.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&weights, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| io(&weights, e))?;
        }
        let json =
            serde_json::to_string_pretty(&self.manifest).map_err(|e| ModelError::Config {
                path: dir.join(ADAPTER_JSON),
                message: e.to_string(),
            })?;
        let path = dir.join(ADAPTER_JSON);
        std::fs::write(&path, json + "\n").map_err(|e| io(&path, e))
    }

    /// SHA-256 of the factors' file (empty for an adapter not yet saved and loaded).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Adds every target's `scale · B·A` to the encoder's weights in `tensors` (a checkpoint's
    /// tensors by name). Fails when the weights are not the ones it was trained on, or a
    /// target's shape does not match.
    pub fn apply(
        &self,
        tensors: &mut HashMap<String, Tensor>,
        weights_sha256: &str,
        config: &BertConfig,
    ) -> Result<(), ModelError> {
        if weights_sha256 != self.manifest.base_sha256 {
            return Err(ModelError::Input(format!(
                "the adapter was trained on encoder weights {}, not these ({})",
                short(&self.manifest.base_sha256),
                short(weights_sha256)
            )));
        }
        if self.manifest.layer >= config.num_hidden_layers {
            return Err(ModelError::Input(format!(
                "the adapter changes layer {}; the encoder has {}",
                self.manifest.layer, config.num_hidden_layers
            )));
        }
        let prefix = packed::bert_prefix(|name| tensors.contains_key(name), config)
            .map(|p| format!("{p}."))
            .unwrap_or_default();
        let scale = f64::from(self.manifest.alpha) / self.manifest.rank as f64;
        for (target, (a, b)) in self.manifest.targets.iter().zip(&self.factors) {
            let name = format!(
                "{prefix}encoder.layer.{}.{target}.weight",
                self.manifest.layer
            );
            let weight = tensors
                .get(&name)
                .ok_or_else(|| ModelError::Input(format!("the encoder has no tensor {name}")))?
                .to_dtype(DType::F32)?;
            let delta = (b.matmul(a)? * scale)?;
            if delta.dims() != weight.dims() {
                return Err(ModelError::Input(format!(
                    "{target}: the adapter's product is {:?}, the weight {:?}",
                    delta.dims(),
                    weight.dims()
                )));
            }
            tensors.insert(name, (weight + delta)?);
        }
        Ok(())
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The frozen top layer an adapter is trained for, and what follows it (the pooling).
pub struct TopLayer {
    layer: usize,
    heads: usize,
    eps: f64,
    pooling: Pooling,
    /// Per target in [`TARGETS`] order: the weight transposed (inputs × outputs) and the bias.
    linear: Vec<(Tensor, Tensor)>,
    ln1: (Tensor, Tensor),
    ln2: (Tensor, Tensor),
    base_sha256: String,
}

impl TopLayer {
    /// The last transformer layer of the model in `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let config: BertConfig = read_json(&required(dir, "config.json")?)?;
        let weights = required(dir, "model.safetensors")?;
        let pooling = read_pooling(dir)?;
        if pooling.mode == PoolingMode::Max {
            return Err(ModelError::Input(
                "adapters are trained for mean or CLS pooling, not max".to_owned(),
            ));
        }
        if let Some(reason) = packed::unsupported(&config) {
            return Err(ModelError::Input(reason));
        }
        let base_sha256 = super::fetch::sha256_file(&weights).map_err(|e| ModelError::Config {
            path: weights.clone(),
            message: e.to_string(),
        })?;
        // SAFETY: as in `Encoder::load`: mapped read-only, every tensor copied out.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)? };
        let layer = config.num_hidden_layers - 1;
        let vb = packed::bert_root(vb, &config).pp(format!("encoder.layer.{layer}"));
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let mut linear = Vec::with_capacity(TARGETS.len());
        for target in TARGETS {
            let (outputs, inputs) = match *target {
                "intermediate.dense" => (i, h),
                "output.dense" => (h, i),
                _ => (h, h),
            };
            let w = vb.get((outputs, inputs), &format!("{target}.weight"))?;
            let b = vb.get(outputs, &format!("{target}.bias"))?;
            linear.push((w.t()?.contiguous()?, b));
        }
        let norm = |name: &str| -> Result<(Tensor, Tensor), ModelError> {
            Ok((
                vb.get(h, &format!("{name}.LayerNorm.weight"))?,
                vb.get(h, &format!("{name}.LayerNorm.bias"))?,
            ))
        };
        Ok(Self {
            layer,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps,
            pooling,
            linear,
            ln1: norm("attention.output")?,
            ln2: norm("output")?,
            base_sha256,
        })
    }

    /// The layer's index: train on the states after the layers below it.
    pub fn index(&self) -> usize {
        self.layer
    }

    fn hidden(&self) -> usize {
        self.ln1.0.dims1().unwrap_or(0)
    }

    /// The layer and pooling over a padded batch `x` (`[b, t, h]`, `mask` `[b, t]` of 1/0),
    /// with the adapter's factors added where given: sentence vectors `[b, h]`.
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        lora: &[Option<Lora>],
    ) -> Result<Tensor, ModelError> {
        let (b, t, h) = x.dims3()?;
        let heads = self.heads;
        let d = h / heads;
        let rows = x.reshape((b * t, h))?;
        let linear = |input: &Tensor, target: usize| -> Result<Tensor, ModelError> {
            let (w, bias) = &self.linear[target];
            let mut y = input.matmul(w)?.broadcast_add(bias)?;
            if let Some(f) = &lora[target] {
                y = (y + (input.matmul(&f.a)?.matmul(&f.b)? * f.scale)?)?;
            }
            Ok(y)
        };
        let split = |y: Tensor| -> Result<Tensor, ModelError> {
            Ok(y.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(linear(&rows, 0)?)?;
        let k = split(linear(&rows, 1)?)?;
        let v = split(linear(&rows, 2)?)?;
        // Padding keys get -10000 before the softmax, as BERT does.
        let mask_bias = ((mask.ones_like()? - mask)? * -10_000f64)?.reshape((b, 1, 1, t))?;
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / (d as f64).sqrt())?
            .broadcast_add(&mask_bias)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * t, h))?;
        let attended = layer_norm(&(linear(&ctx, 3)? + &rows)?, &self.ln1, self.eps)?;
        let up = linear(&attended, 4)?.gelu_erf()?;
        let out = layer_norm(&(linear(&up, 5)? + &attended)?, &self.ln2, self.eps)?;
        pool_padded(&out.reshape((b, t, h))?, mask, self.pooling)
    }
}

/// LayerNorm over the last dimension, written out so that autograd sees every step.
fn layer_norm(x: &Tensor, (g, b): &(Tensor, Tensor), eps: f64) -> Result<Tensor, ModelError> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(g)?.broadcast_add(b)?)
}

/// One target's factors as the forward uses them, transposed: `a` is `Aᵀ` (inputs × rank),
/// `b` is `Bᵀ` (rank × outputs). While training they are the variables' own tensors (so
/// gradients reach them).
#[derive(Clone)]
struct Lora {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

impl TopLayer {
    /// Sentence vectors of token vectors entering this layer ([`TuneExample::rows`]), through
    /// the layer with `adapter`'s factors added unmerged (none: the frozen layer) and the
    /// pooling: what an encoder loaded with the adapter must compute.
    pub fn embed_states(
        &self,
        states: &[Vec<f32>],
        adapter: Option<&Adapter>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut lora: Vec<Option<Lora>> = TARGETS.iter().map(|_| None).collect();
        if let Some(adapter) = adapter {
            let scale = f64::from(adapter.manifest.alpha) / adapter.manifest.rank as f64;
            for (target, (a, b)) in adapter.manifest.targets.iter().zip(&adapter.factors) {
                let index = TARGETS.iter().position(|t| t == target).unwrap_or(0);
                lora[index] = Some(Lora {
                    a: a.t()?,
                    b: b.t()?,
                    scale,
                });
            }
        }
        let h = self.hidden();
        let examples: Vec<TuneExample> = states
            .iter()
            .map(|rows| TuneExample {
                rows: rows.clone(),
                task: 0,
                positive: false,
                weight: 1.0,
            })
            .collect();
        let mut out = Vec::with_capacity(states.len());
        for chunk in examples.chunks(64) {
            let batch: Vec<&TuneExample> = chunk.iter().collect();
            let (x, mask) = pad(&batch, h)?;
            out.extend(self.forward(&x, &mask, &lora)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }
}

/// One training example: the token vectors entering the top layer, and the label.
#[derive(Debug, Clone)]
pub struct TuneExample {
    /// `len × hidden` floats, row-major ([`super::packed::PackedBert::states`]).
    pub rows: Vec<f32>,
    /// The task (probe) it belongs to.
    pub task: usize,
    /// Whether the task's label applies.
    pub positive: bool,
    /// Weight of the example (1 for a dataset example).
    pub weight: f32,
}

/// How an adapter is trained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuneConfig {
    /// Rank of the factors.
    pub rank: usize,
    /// Products are scaled by `alpha / rank`.
    pub alpha: f32,
    /// The matrices to adapt, from [`TARGETS`].
    pub targets: Vec<String>,
    /// AdamW learning rate of the factors.
    pub learning_rate: f64,
    /// AdamW learning rate of the probes.
    pub probe_learning_rate: f64,
    /// AdamW weight decay of the factors.
    pub weight_decay: f64,
    /// Examples per mini-batch.
    pub batch_size: usize,
    /// Epochs training the probes alone first.
    pub probe_epochs: usize,
    /// Most epochs with the adapter.
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
    /// Seeds initialisation, shuffling and batching.
    pub seed: u64,
}

impl Default for TuneConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: vec![
                "attention.self.query".to_owned(),
                "attention.self.value".to_owned(),
                "intermediate.dense".to_owned(),
                "output.dense".to_owned(),
            ],
            learning_rate: 1e-3,
            probe_learning_rate: 1e-2,
            weight_decay: 0.01,
            batch_size: 32,
            probe_epochs: 20,
            max_epochs: 6,
            patience: 2,
            seed: 0,
        }
    }
}

/// One epoch's losses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpochReport {
    /// 1-based; the probe-only epochs come first.
    pub epoch: usize,
    /// Whether the adapter was trained this epoch (false: the probes alone).
    pub adapter: bool,
    /// Mean weighted training loss.
    pub train_loss: f64,
    /// Mean weighted validation loss.
    pub validation_loss: f64,
}

/// What [`tune`] returns.
#[derive(Debug, Clone)]
pub struct Tuned {
    /// The adapter of the best epoch (not yet saved: [`Adapter::sha256`] is empty).
    pub adapter: Adapter,
    /// Every epoch.
    pub epochs: Vec<EpochReport>,
    /// The epoch kept.
    pub best_epoch: usize,
    /// Validation logits of each example's own probe with the frozen layer (the best
    /// probe-only epoch): the baseline the adapter must beat.
    pub frozen_logits: Vec<f32>,
    /// The same with the kept adapter and its probes.
    pub tuned_logits: Vec<f32>,
}

/// A deterministic generator for initialisation and shuffling.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        crate::corpus::splitmix64(&mut self.0)
    }

    /// Approximately standard normal (the sum of four uniforms, rescaled).
    fn normal(&mut self) -> f32 {
        let sum: f32 = (0..4)
            .map(|_| (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
            .sum();
        (sum - 2.0) * (3.0f32).sqrt()
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Trains an adapter of `layer` with `tasks` probes on `train`, keeping the epoch with the
/// lowest validation loss. `progress` is called after every epoch.
pub fn tune(
    layer: &TopLayer,
    tasks: usize,
    train: &[TuneExample],
    validation: &[TuneExample],
    config: &TuneConfig,
    mut progress: impl FnMut(&EpochReport),
) -> Result<Tuned, ModelError> {
    let h = layer.hidden();
    for (what, set) in [("training", train), ("validation", validation)] {
        if set.is_empty() {
            return Err(ModelError::Input(format!("no {what} examples")));
        }
        if let Some(e) = set
            .iter()
            .find(|e| e.task >= tasks || e.rows.is_empty() || e.rows.len() % h != 0)
        {
            return Err(ModelError::Input(format!(
                "a {what} example of task {} has {} floats (rows of {h}; {tasks} tasks)",
                e.task,
                e.rows.len()
            )));
        }
    }
    if config.rank == 0 || config.batch_size == 0 || config.max_epochs == 0 {
        return Err(ModelError::Input(
            "rank, batch size and epochs must be at least 1".to_owned(),
        ));
    }
    let mut rng = Rng(config.seed ^ 0xada9_7e55);
    let device = Device::Cpu;
    let scale = f64::from(config.alpha) / config.rank as f64;
    let mut vars: Vec<Option<(Var, Var)>> = TARGETS.iter().map(|_| None).collect();
    for target in &config.targets {
        let Some(index) = TARGETS.iter().position(|t| t == target) else {
            return Err(ModelError::Input(format!(
                "`{target}` is not one of {TARGETS:?}"
            )));
        };
        let (w, _) = &layer.linear[index];
        let (inputs, outputs) = w.dims2()?;
        // A as Kaiming-like noise, B zero: the adapter starts as the identity change.
        let std = 1.0 / (inputs as f32).sqrt();
        let a: Vec<f32> = (0..inputs * config.rank)
            .map(|_| rng.normal() * std)
            .collect();
        vars[index] = Some((
            Var::from_tensor(&Tensor::from_vec(a, (inputs, config.rank), &device)?)?,
            Var::zeros((config.rank, outputs), DType::F32, &device)?,
        ));
    }
    let lora: Vec<Option<Lora>> = vars
        .iter()
        .map(|v| {
            v.as_ref().map(|(a, b)| Lora {
                a: a.as_tensor().clone(),
                b: b.as_tensor().clone(),
                scale,
            })
        })
        .collect();
    let probe_w = Var::zeros((h, tasks), DType::F32, &device)?;
    let probe_b = Var::zeros(tasks, DType::F32, &device)?;
    let factor_vars: Vec<Var> = vars
        .iter()
        .flatten()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    let mut probe_opt = AdamW::new(
        vec![probe_w.clone(), probe_b.clone()],
        ParamsAdamW {
            lr: config.probe_learning_rate,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    let mut factor_opt = AdamW::new(
        factor_vars.clone(),
        ParamsAdamW {
            lr: config.learning_rate,
            weight_decay: config.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let class_weights = class_weights(train, tasks);
    // The probes train alone first, on the frozen layer's vectors: computed once.
    let (frozen_train, frozen_validation) = if config.probe_epochs > 0 {
        (
            Some(frozen_pooled(layer, train)?),
            Some(frozen_pooled(layer, validation)?),
        )
    } else {
        (None, None)
    };

    let mut epochs = Vec::new();
    let mut best: Option<(f64, usize, Vec<Tensor>, Vec<f32>)> = None;
    let mut frozen_logits = Vec::new();
    let mut best_probes: Option<(f64, (Tensor, Tensor))> = None;
    let mut since_best = 0;
    let total = config.probe_epochs + config.max_epochs;
    for epoch in 1..=total {
        let adapting = epoch > config.probe_epochs;
        let (train_source, validation_source) = match (&frozen_train, &frozen_validation) {
            (Some(t), Some(v)) if !adapting => (Source::Frozen(t), Source::Frozen(v)),
            _ => (Source::Layer(&lora), Source::Layer(&lora)),
        };
        let mut loss_sum = 0.0;
        let mut weight_sum = 0.0;
        for batch in batches(train, config.batch_size, &mut rng) {
            let (loss, weight, _) = batch_loss(
                layer,
                &train_source,
                (&probe_w, &probe_b),
                train,
                &batch,
                &class_weights,
            )?;
            let grads = loss.backward()?;
            probe_opt.step(&grads)?;
            if adapting {
                factor_opt.step(&grads)?;
            }
            loss_sum += f64::from(loss.to_scalar::<f32>()?) * weight;
            weight_sum += weight;
        }
        let (validation_loss, logits) = evaluate(
            layer,
            &validation_source,
            (&probe_w, &probe_b),
            validation,
            &class_weights,
        )?;
        let report = EpochReport {
            epoch,
            adapter: adapting,
            train_loss: loss_sum / weight_sum.max(f64::MIN_POSITIVE),
            validation_loss,
        };
        progress(&report);
        epochs.push(report);
        if !adapting {
            // The probes of the best probe-only epoch are the frozen baseline, and where the
            // adapter starts from.
            if best_probes.as_ref().is_none_or(|b| validation_loss < b.0) {
                let saved = (probe_w.as_tensor().copy()?, probe_b.as_tensor().copy()?);
                best_probes = Some((validation_loss, saved));
                frozen_logits = logits;
            }
            if epoch == config.probe_epochs
                && let Some((_, (w, b))) = &best_probes
            {
                probe_w.set(w)?;
                probe_b.set(b)?;
            }
            continue;
        }
        if best.as_ref().is_none_or(|b| validation_loss < b.0) {
            let saved = factor_vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<Result<Vec<_>, _>>()?;
            best = Some((validation_loss, epoch, saved, logits));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= config.patience {
                break;
            }
        }
    }
    let (_, best_epoch, saved, tuned_logits) =
        best.ok_or_else(|| ModelError::Input("no epoch trained the adapter".to_owned()))?;
    // Back to the stored orientation: A is rank × inputs, B outputs × rank.
    let mut factors = Vec::new();
    for pair in saved.chunks_exact(2) {
        factors.push((pair[0].t()?.contiguous()?, pair[1].t()?.contiguous()?));
    }
    let targets: Vec<String> = TARGETS
        .iter()
        .zip(&vars)
        .filter(|(_, f)| f.is_some())
        .map(|(t, _)| (*t).to_owned())
        .collect();
    Ok(Tuned {
        adapter: Adapter {
            manifest: AdapterManifest {
                format: FORMAT,
                base_sha256: layer.base_sha256.clone(),
                layer: layer.layer,
                rank: config.rank,
                alpha: config.alpha,
                targets,
                provenance: serde_json::Value::Null,
            },
            factors,
            sha256: String::new(),
        },
        epochs,
        best_epoch,
        frozen_logits,
        tuned_logits,
    })
}

/// Per task, the weights of a negative and a positive example ("balanced": each class of a
/// task weighs the same in total).
fn class_weights(train: &[TuneExample], tasks: usize) -> Vec<[f32; 2]> {
    let mut counts = vec![[0f64; 2]; tasks];
    for e in train {
        counts[e.task][usize::from(e.positive)] += 1.0;
    }
    counts
        .iter()
        .map(|c| {
            let n = c[0] + c[1];
            [
                (n / (2.0 * c[0].max(1.0))) as f32,
                (n / (2.0 * c[1].max(1.0))) as f32,
            ]
        })
        .collect()
}

/// Shuffled mini-batches of similar length, as indices: the examples are shuffled, cut into
/// pools of eight batches, each pool sorted by length (less padding), and the batches shuffled
/// again.
fn batches(examples: &[TuneExample], size: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    rng.shuffle(&mut order);
    let mut out = Vec::new();
    for pool in order.chunks_mut(size * 8) {
        pool.sort_by_key(|&i| examples[i].rows.len());
        out.extend(pool.chunks(size).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut out);
    out
}

/// Batches of similar length in a fixed order, for evaluation.
fn sorted_batches(examples: &[TuneExample]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].rows.len());
    order.chunks(64).map(<[usize]>::to_vec).collect()
}

/// A padded batch: `[b, t, h]` states and `[b, t]` mask.
fn pad(batch: &[&TuneExample], h: usize) -> Result<(Tensor, Tensor), ModelError> {
    let t = batch.iter().map(|e| e.rows.len() / h).max().unwrap_or(1);
    let mut x = vec![0f32; batch.len() * t * h];
    let mut mask = vec![0f32; batch.len() * t];
    for (i, e) in batch.iter().enumerate() {
        let len = e.rows.len() / h;
        x[i * t * h..][..e.rows.len()].copy_from_slice(&e.rows);
        mask[i * t..][..len].fill(1.0);
    }
    Ok((
        Tensor::from_vec(x, (batch.len(), t, h), &Device::Cpu)?,
        Tensor::from_vec(mask, (batch.len(), t), &Device::Cpu)?,
    ))
}

/// Where a batch's sentence vectors come from: the layer (with the adapter being trained), or
/// the frozen layer's vectors computed once (`[n, h]`, all examples).
enum Source<'a> {
    Layer(&'a [Option<Lora>]),
    Frozen(&'a Tensor),
}

/// The batch's sentence vectors, `[b, h]`.
fn pooled(
    layer: &TopLayer,
    source: &Source<'_>,
    examples: &[TuneExample],
    batch: &[usize],
) -> Result<Tensor, ModelError> {
    match source {
        Source::Layer(factors) => {
            let refs: Vec<&TuneExample> = batch.iter().map(|&i| &examples[i]).collect();
            let (x, mask) = pad(&refs, layer.hidden())?;
            layer.forward(&x, &mask, factors)
        }
        Source::Frozen(all) => {
            let ids: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
            let ids = Tensor::from_vec(ids, batch.len(), &Device::Cpu)?;
            Ok(all.index_select(&ids, 0)?)
        }
    }
}

/// The frozen layer's sentence vectors of every example, `[n, h]`.
fn frozen_pooled(layer: &TopLayer, examples: &[TuneExample]) -> Result<Tensor, ModelError> {
    let none: Vec<Option<Lora>> = TARGETS.iter().map(|_| None).collect();
    let mut rows = vec![Tensor::zeros(0, DType::F32, &Device::Cpu)?; examples.len()];
    for batch in sorted_batches(examples) {
        let vectors = pooled(layer, &Source::Layer(&none), examples, &batch)?;
        for (j, &i) in batch.iter().enumerate() {
            rows[i] = vectors.get(j)?;
        }
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// Weighted binary cross-entropy of a batch's own-probe logits (a scalar tensor, the
/// weighted mean), its total weight, and the logits.
fn batch_loss(
    layer: &TopLayer,
    source: &Source<'_>,
    (w, b): (&Var, &Var),
    examples: &[TuneExample],
    batch: &[usize],
    class_weights: &[[f32; 2]],
) -> Result<(Tensor, f64, Tensor), ModelError> {
    let vectors = pooled(layer, source, examples, batch)?;
    let all = vectors
        .matmul(w.as_tensor())?
        .broadcast_add(b.as_tensor())?;
    let tasks = all.dims2()?.1;
    let mut one_hot = vec![0f32; batch.len() * tasks];
    let mut targets = Vec::with_capacity(batch.len());
    let mut weights = Vec::with_capacity(batch.len());
    for (j, &i) in batch.iter().enumerate() {
        let e = &examples[i];
        one_hot[j * tasks + e.task] = 1.0;
        targets.push(f32::from(u8::from(e.positive)));
        weights.push(e.weight * class_weights[e.task][usize::from(e.positive)]);
    }
    let one_hot = Tensor::from_vec(one_hot, (batch.len(), tasks), &Device::Cpu)?;
    let z = (all * one_hot)?.sum(1)?;
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let y = Tensor::from_vec(targets, batch.len(), &Device::Cpu)?;
    let w = Tensor::from_vec(weights, batch.len(), &Device::Cpu)?;
    // softplus(z) - y·z, written stably: relu(z) + ln(1 + e^-|z|) - y·z.
    let softplus = (z.relu()? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    let per_example = (softplus - (&y * &z)?)?;
    let loss = ((per_example * w)?.sum_all()? / total.max(f64::MIN_POSITIVE))?;
    Ok((loss, total, z))
}

/// Mean weighted validation loss and every example's logit, in order.
fn evaluate(
    layer: &TopLayer,
    source: &Source<'_>,
    probes: (&Var, &Var),
    examples: &[TuneExample],
    class_weights: &[[f32; 2]],
) -> Result<(f64, Vec<f32>), ModelError> {
    let mut loss_sum = 0.0;
    let mut weight_sum = 0.0;
    let mut all = vec![0f32; examples.len()];
    for batch in sorted_batches(examples) {
        let (loss, weight, z) = batch_loss(layer, source, probes, examples, &batch, class_weights)?;
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * weight;
        weight_sum += weight;
        for (&i, z) in batch.iter().zip(z.to_vec1::<f32>()?) {
            all[i] = z;
        }
    }
    Ok((loss_sum / weight_sum.max(f64::MIN_POSITIVE), all))
}
