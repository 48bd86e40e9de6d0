//! A padding-free ("packed") CPU forward pass for BERT-family encoders.
//!
//! Why: candle's `BertModel` pads a batch to its longest member, so a batch of chat lines (14
//! tokens on average, a few of 60+) spends most of its matrix work on padding, and its
//! element-wise steps (GELU, softmax, LayerNorm) are separate unfused passes over memory. Here
//! the tokens of all sequences of a batch are concatenated into one `[T x hidden]` matrix (`T`
//! = real tokens only), so:
//!
//! - every linear layer is one GEMM over all `T` rows (the `gemm` crate, the same kernel candle
//!   uses, with its run-time dispatch, here including its AVX-512 kernels (`x86-v4` feature),
//!   and rayon threads); Q, K and V are one fused `[3·hidden x hidden]` weight;
//! - attention, the only step that needs sequence boundaries, runs per (sequence, head) pair in
//!   parallel, over that sequence's real tokens only (no mask, nothing to leak between
//!   sequences);
//! - bias + GELU, bias + residual + LayerNorm and softmax are fused, vectorised passes
//!   ([`super::simd`]).
//!
//! Activations live in scratch buffers owned by the model and reused across calls (grown to the
//! largest chunk seen, never shrunk, never cleared: every buffer is fully overwritten before it
//! is read). A batch is processed in chunks of at most [`MAX_CHUNK_TOKENS`] tokens, which bounds
//! the scratch at `MAX_CHUNK_TOKENS × (6·hidden + intermediate) × 4` bytes (31.5 MB for
//! MiniLM-L6) whatever the batch size; bigger chunks would not make the GEMMs faster. The
//! weights are copied out of the safetensors file once (≈ 90 MB for MiniLM-L6, 47 MB of it the
//! word embeddings); the file's map is dropped after loading.
//!
//! Threads: the GEMMs, attention and element-wise passes all run on the rayon pool of the
//! calling thread: the global pool (`RAYON_NUM_THREADS`, one thread per core by default)
//! unless the caller wraps the call in its own `ThreadPool::install`. The caller's thread
//! blocks until the batch is done.
//!
//! The result is the same function as `BertModel` followed by the pooling in `super`: the
//! equivalence is tested against candle and against sentence-transformers in `tests/model.rs`.

use std::sync::Mutex;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use rayon::prelude::*;

use super::int8::{self, QWeight, Quantized};
use super::simd::{KEY_BLOCK, Kernels};
use super::{ModelError, Pooling, PoolingMode};

/// The most tokens one forward pass packs; longer batches are split at sequence boundaries.
pub const MAX_CHUNK_TOKENS: usize = 2048;

/// Rows handed to one rayon task by the element-wise passes (small enough to balance over two
/// cores at T ≈ 100, big enough that task overhead is noise).
const ROWS_PER_TASK: usize = 16;

/// The arithmetic of the packed encoder's linear layers (`model.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 weights and activations (the default; the same function as sentence-transformers
    /// to ~1e-5).
    F32,
    /// Int8 weights (per output channel) and activations (per token), i32 sums
    /// ([`super::int8`]); needs AVX-512 VNNI.
    Int8,
}

/// A linear layer's weight (without its bias, which the fused passes add).
enum Weight {
    /// Row-major `[out x in]`, as stored by PyTorch.
    F32(Vec<f32>),
    /// Quantised for the int8 kernel.
    Int8(QWeight),
}

/// One transformer layer's weights.
struct Layer {
    qkv_w: Weight,
    qkv_b: Vec<f32>,
    out_w: Weight,
    out_b: Vec<f32>,
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    up_w: Weight,
    up_b: Vec<f32>,
    down_w: Weight,
    down_b: Vec<f32>,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
}

/// Reused activations (see the module docs).
#[derive(Default)]
struct Scratch {
    /// The hidden state, `[T x hidden]`.
    x: Vec<f32>,
    /// Q, K, V side by side, `[T x 3·hidden]`.
    qkv: Vec<f32>,
    /// Attention output (heads concatenated), `[T x hidden]`.
    ctx: Vec<f32>,
    /// A linear layer's output before its LayerNorm, `[T x hidden]`.
    tmp: Vec<f32>,
    /// The feed-forward's inner activation, `[T x intermediate]`.
    up: Vec<f32>,
    /// The int8 layers' quantised input.
    quantized: Quantized,
    /// While calibrating: per linear layer (4 per transformer layer, in order), the largest
    /// magnitude seen of each input channel.
    calibration: Option<Vec<Vec<f32>>>,
}

/// Grows `buf` to at least `len` floats; never shrinks, never clears what is there.
fn ensure(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// What a forward pass hands back for each sequence.
#[derive(Debug, Clone, Copy)]
enum Output {
    /// The sentence vector after every layer.
    Pooled(Pooling),
    /// The token vectors after the first `layers` layers.
    Rows { layers: usize },
}

/// A BERT encoder's weights in plain buffers, and its scratch.
pub struct PackedBert {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    vocab: usize,
    max_positions: usize,
    eps: f32,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    emb_ln_g: Vec<f32>,
    emb_ln_b: Vec<f32>,
    layers: Vec<Layer>,
    precision: Precision,
    kernels: Kernels,
    scratch: Mutex<Scratch>,
}

impl std::fmt::Debug for PackedBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBert")
            .field("hidden", &self.hidden)
            .field("heads", &self.heads)
            .field("layers", &self.layers.len())
            .field("precision", &self.precision)
            .field("kernels", &self.kernels)
            .finish_non_exhaustive()
    }
}

/// Why a config cannot run on the packed path (the caller falls back to candle), or `None`.
pub fn unsupported(config: &BertConfig) -> Option<String> {
    if config.hidden_act != HiddenAct::Gelu {
        return Some(format!(
            "hidden_act {:?} (the packed path implements exact \"gelu\" only)",
            config.hidden_act
        ));
    }
    if config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Some(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden_size, config.num_attention_heads
        ));
    }
    if !config.hidden_size.is_multiple_of(8) {
        return Some(format!(
            "hidden_size {} is not a multiple of 8",
            config.hidden_size
        ));
    }
    // position_embedding_type: candle's config only parses "absolute", the one implemented here.
    None
}

/// Why `config` cannot run in int8 on this CPU (the caller stays in f32), or `None`.
pub fn int8_unsupported(config: &BertConfig) -> Option<String> {
    if !int8::supported() {
        return Some("this CPU lacks AVX-512 VNNI".to_owned());
    }
    let (h, i) = (config.hidden_size, config.intermediate_size);
    [(3 * h, h), (h, h), (i, h), (h, i)]
        .into_iter()
        .find_map(|(n, k)| int8::unsupported_shape(n, k))
}

impl PackedBert {
    /// Reads the weights of `model.safetensors` (through candle, on the CPU) into plain buffers.
    pub fn load(weights: &std::path::Path, config: &BertConfig) -> Result<Self, ModelError> {
        // SAFETY: as in `Encoder::load`: the file is mapped read-only and not modified while
        // loading; every tensor is copied out before the map is dropped.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)? };
        Self::from_var_builder(vb, config)
    }

    /// Copies the weights a [`VarBuilder`] holds (a file's, or tensors an adapter changed)
    /// into plain buffers.
    pub fn from_var_builder(vb: VarBuilder<'_>, config: &BertConfig) -> Result<Self, ModelError> {
        let vb = bert_root(vb, config);
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let get = |shape: &[usize], name: &str| -> Result<Vec<f32>, ModelError> {
            Ok(vb.get(shape, name)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let mut qkv_w = get(&[h, h], &format!("{p}.attention.self.query.weight"))?;
            qkv_w.extend(get(&[h, h], &format!("{p}.attention.self.key.weight"))?);
            qkv_w.extend(get(&[h, h], &format!("{p}.attention.self.value.weight"))?);
            let mut qkv_b = get(&[h], &format!("{p}.attention.self.query.bias"))?;
            qkv_b.extend(get(&[h], &format!("{p}.attention.self.key.bias"))?);
            qkv_b.extend(get(&[h], &format!("{p}.attention.self.value.bias"))?);
            let weight = |name: &str, n: usize, k: usize| -> Result<Weight, ModelError> {
                Ok(Weight::F32(get(&[n, k], &format!("{p}.{name}.weight"))?))
            };
            layers.push(Layer {
                qkv_w: Weight::F32(qkv_w),
                qkv_b,
                out_w: weight("attention.output.dense", h, h)?,
                out_b: get(&[h], &format!("{p}.attention.output.dense.bias"))?,
                ln1_g: get(&[h], &format!("{p}.attention.output.LayerNorm.weight"))?,
                ln1_b: get(&[h], &format!("{p}.attention.output.LayerNorm.bias"))?,
                up_w: weight("intermediate.dense", i, h)?,
                up_b: get(&[i], &format!("{p}.intermediate.dense.bias"))?,
                down_w: weight("output.dense", h, i)?,
                down_b: get(&[h], &format!("{p}.output.dense.bias"))?,
                ln2_g: get(&[h], &format!("{p}.output.LayerNorm.weight"))?,
                ln2_b: get(&[h], &format!("{p}.output.LayerNorm.bias"))?,
            });
        }
        let token_types = get(
            &[config.type_vocab_size, h],
            "embeddings.token_type_embeddings.weight",
        )?;
        Ok(Self {
            hidden: h,
            heads: config.num_attention_heads,
            intermediate: i,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
            eps: config.layer_norm_eps as f32,
            word: get(&[config.vocab_size, h], "embeddings.word_embeddings.weight")?,
            position: get(
                &[config.max_position_embeddings, h],
                "embeddings.position_embeddings.weight",
            )?,
            token_type0: token_types[..h].to_vec(),
            emb_ln_g: get(&[h], "embeddings.LayerNorm.weight")?,
            emb_ln_b: get(&[h], "embeddings.LayerNorm.bias")?,
            layers,
            precision: Precision::F32,
            kernels: Kernels::detect(),
            scratch: Mutex::new(Scratch::default()),
        })
    }

    /// The instruction set of the element-wise kernels (`avx512f`, `avx2+fma` or `portable`).
    pub fn kernels(&self) -> &'static str {
        self.kernels.name()
    }

    /// The linear layers' arithmetic.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Turns the linear layers to int8 (the caller has checked [`int8_unsupported`]),
    /// calibrated on `calibration` (token sequences of typical inputs).
    ///
    /// Activations of transformers have a few input channels far larger than the rest, which
    /// would set every token's int8 scale and leave the other channels a few levels. So, as
    /// in SmoothQuant (Xiao et al., 2023), each input channel `k` of a layer is divided by a
    /// factor from its largest activation over `calibration` (in f32) and its largest weight
    /// ([`smoothing`]) and the weight's column multiplied by it: the same product, with the
    /// range shared between the two; then the weights are quantised.
    pub fn quantize(&mut self, calibration: &[Vec<u32>]) -> Result<(), ModelError> {
        if self.precision == Precision::Int8 {
            return Ok(());
        }
        let maxima = {
            let scratch = self
                .scratch
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            scratch.calibration = Some(Vec::new());
            let pooling = Pooling {
                mode: PoolingMode::Cls,
                normalize: false,
            };
            let result = self.embed(calibration, pooling);
            let scratch = self
                .scratch
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let maxima = scratch.calibration.take().unwrap_or_default();
            result?;
            maxima
        };
        let (h, i) = (self.hidden, self.intermediate);
        let mut maxima = maxima.into_iter();
        for layer in &mut self.layers {
            for (weight, n, k) in [
                (&mut layer.qkv_w, 3 * h, h),
                (&mut layer.out_w, h, h),
                (&mut layer.up_w, i, h),
                (&mut layer.down_w, h, i),
            ] {
                let seen = maxima.next().unwrap_or_default();
                if let Weight::F32(w) = weight {
                    let smooth = smoothing(w, n, k, &seen);
                    *weight = Weight::Int8(QWeight::new(w, n, k, &smooth));
                }
            }
        }
        self.precision = Precision::Int8;
        Ok(())
    }

    /// Pooled (and, if asked, L2-normalised) embeddings of token sequences, in order.
    pub fn embed(&self, batch: &[Vec<u32>], pooling: Pooling) -> Result<Vec<Vec<f32>>, ModelError> {
        self.run(batch, Output::Pooled(pooling))
    }

    /// Each sequence's token vectors (`len × hidden`, row-major) after the first `layers`
    /// transformer layers: the input of layer `layers`, which [`super::adapter`] trains on.
    pub fn states(&self, batch: &[Vec<u32>], layers: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        if layers > self.layers.len() {
            return Err(ModelError::Input(format!(
                "the encoder has {} layers, not {layers}",
                self.layers.len()
            )));
        }
        self.run(batch, Output::Rows { layers })
    }

    fn run(&self, batch: &[Vec<u32>], output: Output) -> Result<Vec<Vec<f32>>, ModelError> {
        for tokens in batch {
            if tokens.len() > self.max_positions {
                return Err(ModelError::Input(format!(
                    "{} tokens, the model takes at most {}",
                    tokens.len(),
                    self.max_positions
                )));
            }
            if let Some(id) = tokens.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(ModelError::Input(format!(
                    "token id {id} is outside the vocabulary ({})",
                    self.vocab
                )));
            }
        }
        // A poisoned lock only means an earlier call panicked mid-forward: the scratch holds
        // no state that outlives a call, so it is safe to reuse.
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            // At least one sequence per chunk, then as many as fit.
            let mut end = start + 1;
            let mut tokens = batch[start].len();
            while end < batch.len() && tokens + batch[end].len() <= MAX_CHUNK_TOKENS {
                tokens += batch[end].len();
                end += 1;
            }
            self.forward_chunk(&batch[start..end], output, &mut scratch, &mut out);
            start = end;
        }
        Ok(out)
    }

    /// One packed forward pass over `seqs`, pooled embeddings appended to `out`.
    fn forward_chunk(
        &self,
        seqs: &[Vec<u32>],
        output: Output,
        s: &mut Scratch,
        out: &mut Vec<Vec<f32>>,
    ) {
        let h = self.hidden;
        // Row offset of each sequence (plus the end), empty sequences included (they pool to
        // zeros, as a fully masked row does in the padded path).
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0usize);
        for seq in seqs {
            offsets.push(offsets.last().copied().unwrap_or(0) + seq.len());
        }
        let t = offsets[seqs.len()];
        let (upto, pooling) = match output {
            Output::Pooled(pooling) => (self.layers.len(), Some(pooling)),
            Output::Rows { layers } => (layers, None),
        };
        if t == 0 {
            let width = if pooling.is_some() { h } else { 0 };
            out.extend(seqs.iter().map(|_| vec![0.0; width]));
            return;
        }
        ensure(&mut s.x, t * h);
        ensure(&mut s.qkv, t * 3 * h);
        ensure(&mut s.ctx, t * h);
        ensure(&mut s.tmp, t * h);
        ensure(&mut s.up, t * self.intermediate);
        let x = &mut s.x[..t * h];

        self.embeddings(seqs, x);
        for (l, layer) in self.layers.iter().enumerate().take(upto) {
            let qkv = &mut s.qkv[..t * 3 * h];
            let ctx = &mut s.ctx[..t * h];
            let tmp = &mut s.tmp[..t * h];
            let up = &mut s.up[..t * self.intermediate];
            let q = &mut s.quantized;
            let k = self.kernels;
            let calibration = &mut s.calibration;
            let mut observe = |linear: usize, x: &[f32], width: usize| {
                if let Some(maxima) = calibration.as_mut() {
                    observe_maxima(maxima, 4 * l + linear, x, width);
                }
            };
            observe(0, x, h);
            linear(k, x, t, h, &layer.qkv_w, 3 * h, q, qkv);
            self.attention(&offsets, qkv, &layer.qkv_b, ctx);
            observe(1, ctx, h);
            linear(k, ctx, t, h, &layer.out_w, h, q, tmp);
            self.add_layer_norm(tmp, &layer.out_b, x, &layer.ln1_g, &layer.ln1_b);
            observe(2, x, h);
            linear(k, x, t, h, &layer.up_w, self.intermediate, q, up);
            self.bias_gelu(up, &layer.up_b);
            observe(3, up, self.intermediate);
            linear(k, up, t, self.intermediate, &layer.down_w, h, q, tmp);
            self.add_layer_norm(tmp, &layer.down_b, x, &layer.ln2_g, &layer.ln2_b);
        }
        for (seq, range) in offsets.windows(2).enumerate() {
            let rows = &x[range[0] * h..range[1] * h];
            out.push(match pooling {
                Some(pooling) => pool(rows, h, seqs[seq].len(), pooling),
                None => rows.to_vec(),
            });
        }
    }

    /// Word + position + token type 0 embeddings, then LayerNorm, into `x`.
    fn embeddings(&self, seqs: &[Vec<u32>], x: &mut [f32]) {
        let h = self.hidden;
        let mut rows = x.chunks_exact_mut(h);
        for seq in seqs {
            for (pos, (&id, row)) in seq.iter().zip(rows.by_ref()).enumerate() {
                let word = &self.word[id as usize * h..][..h];
                let position = &self.position[pos * h..][..h];
                for (((o, w), p), tt) in row
                    .iter_mut()
                    .zip(word)
                    .zip(position)
                    .zip(&self.token_type0)
                {
                    *o = w + p + tt;
                }
            }
        }
        let k = self.kernels;
        let (g, b, eps) = (&self.emb_ln_g[..], &self.emb_ln_b[..], self.eps);
        x.par_chunks_mut(h * ROWS_PER_TASK)
            .for_each(|rows| k.layer_norm(rows, g, b, eps));
    }

    /// `x = LayerNorm(y + bias + x)` over all rows, in parallel.
    fn add_layer_norm(&self, y: &mut [f32], bias: &[f32], x: &mut [f32], g: &[f32], b: &[f32]) {
        let k = self.kernels;
        let (h, eps) = (self.hidden, self.eps);
        y.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks_mut(h * ROWS_PER_TASK))
            .for_each(|(y, x)| k.add_layer_norm(y, bias, x, g, b, eps));
    }

    /// `up = GELU(up + bias)` over all rows, in parallel.
    fn bias_gelu(&self, up: &mut [f32], bias: &[f32]) {
        let k = self.kernels;
        up.par_chunks_mut(self.intermediate * ROWS_PER_TASK)
            .for_each(|rows| k.bias_gelu(rows, bias));
    }

    /// Scaled dot-product attention per (sequence, head) over each sequence's own tokens:
    /// `ctx[rows of seq, cols of head] = softmax(q kᵀ / √d) v`, with the QKV bias added as each
    /// task copies its head's slices into contiguous local buffers (K transposed, so a row of
    /// scores is a few vector FMAs across all keys).
    fn attention(&self, offsets: &[usize], qkv: &[f32], qkv_b: &[f32], ctx: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let k = self.kernels;
        let seqs = offsets.len() - 1;
        let ctx_ptr = SharedMut(ctx.as_mut_ptr());
        let ctx_len = ctx.len();
        (0..seqs * self.heads)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |local, task| {
                let (seq, head) = (task / self.heads, task % self.heads);
                let (start, end) = (offsets[seq], offsets[seq + 1]);
                let len = end - start;
                if len == 0 {
                    return;
                }
                // Local layout: q [len x d], kᵀ [d x stride], v [len x d], ctx [len x d], then
                // one row of scores [stride]; stride = len rounded up to whole key blocks.
                let stride = len.next_multiple_of(KEY_BLOCK);
                local.resize(3 * len * d + d * stride + stride, 0.0);
                let (q, rest) = local.split_at_mut(len * d);
                let (kt, rest) = rest.split_at_mut(d * stride);
                let (values, rest) = rest.split_at_mut(len * d);
                let (ctx_local, scores) = rest.split_at_mut(len * d);
                let (qc, kc, vc) = (head * d, h + head * d, 2 * h + head * d);
                for r in 0..len {
                    let row = &qkv[(start + r) * 3 * h..][..3 * h];
                    for ((o, x), b) in q[r * d..][..d]
                        .iter_mut()
                        .zip(&row[qc..qc + d])
                        .zip(&qkv_b[qc..qc + d])
                    {
                        *o = x + b;
                    }
                    for (c, (x, b)) in row[kc..kc + d].iter().zip(&qkv_b[kc..kc + d]).enumerate() {
                        kt[c * stride + r] = x + b;
                    }
                    for ((o, x), b) in values[r * d..][..d]
                        .iter_mut()
                        .zip(&row[vc..vc + d])
                        .zip(&qkv_b[vc..vc + d])
                    {
                        *o = x + b;
                    }
                }
                // The padding keys' scores are computed but never enter the softmax; zero them so
                // they are at least finite.
                for row in kt.chunks_exact_mut(stride) {
                    row[len..].fill(0.0);
                }
                for (qi, oi) in q.chunks_exact(d).zip(ctx_local.chunks_exact_mut(d)) {
                    k.attend(qi, kt, values, scale, len, scores, oi);
                }
                for (r, row) in ctx_local.chunks_exact(d).enumerate() {
                    let at = (start + r) * h + head * d;
                    debug_assert!(at + d <= ctx_len);
                    // SAFETY: (sequence, head) pairs are distinct tasks, and each writes only
                    // the rows of its sequence and the columns of its head: the regions are
                    // disjoint and inside `ctx` (offsets end at T, head·d + d <= hidden).
                    unsafe {
                        std::ptr::copy_nonoverlapping(row.as_ptr(), ctx_ptr.get().add(at), d);
                    }
                }
            });
    }
}

/// Folds the largest magnitude of each of the `width` channels of `x` (rows of `width`) into
/// `maxima[slot]`.
fn observe_maxima(maxima: &mut Vec<Vec<f32>>, slot: usize, x: &[f32], width: usize) {
    if maxima.len() <= slot {
        maxima.resize(slot + 1, Vec::new());
    }
    let m = &mut maxima[slot];
    m.resize(width, 0.0);
    for row in x.chunks_exact(width) {
        for (m, v) in m.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
}

/// How much of an input channel's range moves from the activations to the weights (SmoothQuant's
/// α). Measured on all-MiniLM-L6-v2 over 1,000 corpus lines (`cargo bench --bench encoder`),
/// worst cosine to f32: 0.982 at 0.35, 0.992 at 0.5, 0.994 at 0.6, 0.993 at 0.65–0.7, 0.988 at
/// 0.8; without smoothing 0.974.
const SMOOTHING_ALPHA: f32 = 0.6;

/// SmoothQuant's per-input-channel factors for a row-major `[n x k]` weight, from the largest
/// activation seen on each input channel: `s_k = max|x_k|^α / max|w_·k|^(1-α)`, 1 where either
/// is zero (or nothing was seen), kept within [1e-3, 1e3].
fn smoothing(w: &[f32], n: usize, k: usize, seen: &[f32]) -> Vec<f32> {
    let mut w_max = vec![0f32; k];
    for row in w.chunks_exact(k).take(n) {
        for (m, v) in w_max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    (0..k)
        .map(|c| {
            let x = seen.get(c).copied().unwrap_or(0.0);
            if x > 0.0 && w_max[c] > 0.0 {
                (x.powf(SMOOTHING_ALPHA) / w_max[c].powf(1.0 - SMOOTHING_ALPHA)).clamp(1e-3, 1e3)
            } else {
                1.0
            }
        })
        .collect()
}

/// A raw pointer parallel tasks share to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(super) struct SharedMut(pub(super) *mut f32);
// SAFETY: only used by `attention` and `int8::linear`, whose tasks write disjoint regions.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Up to this many rows, a linear layer is computed weight row by weight row ([`linear_small`])
/// instead of by `gemm`.
const SMALL_ROWS: usize = 16;

/// Weight rows per task of [`linear_small`].
const SMALL_BLOCK: usize = 64;

/// A linear layer for a few rows (a lone chat line, at low load). `gemm` packs the whole
/// weight matrix into its blocked layout on every call, which for a 14-row input costs more
/// than the arithmetic: 42 MB of weights read and written per forward pass, ~10 ms per line.
/// Here each weight row is read once, straight from the row-major weights, and dotted with
/// every input row while it is in L1; blocks of rows go to the rayon pool.
fn linear_small(
    kernels: Kernels,
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    out: &mut [f32],
) {
    use rayon::prelude::*;
    let x = &x[..rows * k];
    let mut out_t = vec![0f32; n * rows];
    out_t
        .par_chunks_mut(SMALL_BLOCK * rows)
        .zip(w.par_chunks(SMALL_BLOCK * k))
        .for_each(|(out_block, w_block)| kernels.dots(x, k, w_block, out_block));
    for (j, column) in out_t.chunks_exact(rows).enumerate() {
        for (r, v) in column.iter().enumerate() {
            out[r * n + j] = *v;
        }
    }
}

/// `out[rows x n] = x[rows x k] · wᵀ` in the weight's precision.
#[allow(clippy::too_many_arguments)]
fn linear(
    kernels: Kernels,
    x: &[f32],
    rows: usize,
    k: usize,
    w: &Weight,
    n: usize,
    quantized: &mut Quantized,
    out: &mut [f32],
) {
    match w {
        Weight::F32(w) => linear_f32(kernels, x, rows, k, w, n, out),
        Weight::Int8(w) => {
            debug_assert!(w.n() == n && w.k() == k);
            int8::linear(x, rows, k, w, quantized, out);
        }
    }
}

/// `out[rows x n] = x[rows x k] · wᵀ` with `w` row-major `[n x k]` (PyTorch's layout): one GEMM
/// on rayon's threads (or [`linear_small`]); `out` is overwritten, not read.
fn linear_f32(
    kernels: Kernels,
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    out: &mut [f32],
) {
    assert!(x.len() >= rows * k && w.len() == n * k && out.len() >= rows * n);
    if rows <= SMALL_ROWS {
        linear_small(kernels, x, rows, k, w, n, out);
        return;
    }
    // SAFETY: the bounds are checked above; the strides describe row-major `x` and `out` and
    // `w` read as its transpose (k along a row of w, n down its rows).
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

/// The prefix under which a checkpoint keeps BERT's tensors: none, `bert.`, or the model type,
/// as `BertModel::load` accepts.
pub(super) fn bert_root<'a>(vb: VarBuilder<'a>, config: &BertConfig) -> VarBuilder<'a> {
    match bert_prefix(|name| vb.contains_tensor(name), config) {
        Some(prefix) => vb.pp(prefix),
        None => vb,
    }
}

/// That prefix (without its dot), given which tensor names a checkpoint `has`.
pub(super) fn bert_prefix(has: impl Fn(&str) -> bool, config: &BertConfig) -> Option<String> {
    if has("embeddings.word_embeddings.weight") {
        None
    } else if has("bert.embeddings.word_embeddings.weight") {
        Some("bert".to_owned())
    } else {
        config.model_type.clone()
    }
}

/// One sequence's token vectors (`len` rows of `h`) to its sentence vector.
fn pool(rows: &[f32], h: usize, len: usize, pooling: Pooling) -> Vec<f32> {
    let mut v = vec![0f32; h];
    if len > 0 {
        match pooling.mode {
            PoolingMode::Cls => v.copy_from_slice(&rows[..h]),
            PoolingMode::Mean => {
                for row in rows.chunks_exact(h) {
                    for (a, x) in v.iter_mut().zip(row) {
                        *a += x;
                    }
                }
                let inv = 1.0 / len as f32;
                v.iter_mut().for_each(|a| *a *= inv);
            }
            PoolingMode::Max => {
                v.fill(f32::NEG_INFINITY);
                for row in rows.chunks_exact(h) {
                    for (a, x) in v.iter_mut().zip(row) {
                        *a = a.max(*x);
                    }
                }
            }
        }
    }
    if pooling.normalize {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
