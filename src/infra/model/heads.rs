//! Classification heads: small networks from a sentence embedding to label probabilities.
//!
//! A heads directory (`model.heads_dir`, written by `modbot train`) holds a manifest,
//! `heads.json`, and one safetensors file per head:
//!
//! ```json
//! {
//!   "version": "2026-11-22.1",
//!   "encoder": "all-MiniLM-L6-v2",
//!   "embedding_dim": 384,
//!   "heads": [
//!     { "name": "toxicity", "file": "toxicity.safetensors", "multi_label": true,
//!       "labels": ["insult"], "thresholds": { "insult": 0.62 },
//!       "version": "1", "metrics": { "roc_auc": 0.91 } }
//!   ]
//! }
//! ```
//!
//! A head's file holds `layers.0.weight` (`[out, in]`) and `layers.0.bias` (`[out]`), then
//! `layers.1.*` and so on: linear layers with ReLU between them. The last layer's outputs are
//! the labels' logits: a multi-label head turns each into a probability with a sigmoid, a
//! multi-class head all of them together with a softmax. Heads are tiny next to the encoder
//! (a 384×k matrix or a small MLP), so they run in plain Rust on the model thread.
//!
//! A head may also have a lexical half: an entry with `"ngram": {config}` holds a TF-IDF
//! n-gram logistic regression ([`super::ngram`]) in the same file (`ngram.idf` and
//! `ngram.weight`, one value per bucket, stored as f16; `ngram.bias`, one value). Its logit
//! on the normalised text is one more input of the head after the embedding, so `layers.0`
//! then takes `embedding_dim + 1` inputs. Words the encoder only knows as sub-word pieces
//! (misspelt slurs, spam vocabulary) are what the n-grams see best; meaning is what the
//! embedding sees best: the head weighs the two.
//!
//! An entry with `"per_label": true` (multi-label heads only) is one small network per label
//! instead of one network for all: its file holds `<label>.layers.N.*` and, with an n-gram
//! half, `<label>.ngram.*` for every label, each network with one output. Labels taught by
//! different data (insults by forum comments, threats by the team's own chat lines, identity
//! attacks by HateXplain) are trained apart, each with its own lexical half, candidates and
//! calibration, and served as one head with one threshold per label.
//!
//! An entry with `"vader": true` also takes VADER's four scores of the normalised text
//! (negative, neutral, positive, compound: a lexicon and rules made for social-media text) as
//! inputs after the n-gram logit, if any.
//!
//! An entry with `"links": "links-1"` also takes the evidence in the message's links
//! ([`LinkSignals`]: any link, several, a look-alike host, a risky top-level domain, a
//! shortener) after those: the engine finds it with the default link rules' built-in lists
//! and the caller passes it in, as these heads know no rules. A manifest naming another
//! definition is refused: the head was trained on inputs this build cannot make.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::ModelError;
use super::ngram::{NgramConfig, NgramModel};
use super::simd::Kernels;
use crate::domain::LinkSignals;

/// The manifest's file name.
pub const MANIFEST: &str = "heads.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    version: String,
    #[serde(default)]
    encoder: String,
    embedding_dim: usize,
    heads: Vec<HeadEntry>,
    /// How the heads were made (data hashes, seed, encoder): provenance for people, not read.
    #[serde(default, rename = "training")]
    _training: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadEntry {
    name: String,
    file: PathBuf,
    multi_label: bool,
    labels: Vec<String>,
    #[serde(default)]
    thresholds: BTreeMap<String, f64>,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metrics: BTreeMap<String, f64>,
    /// The lexical half, when the head has one.
    #[serde(default)]
    ngram: Option<NgramConfig>,
    /// Whether VADER's scores are inputs.
    #[serde(default)]
    vader: bool,
    /// The link evidence's definition ([`LinkSignals::VERSION`]) when it is an input.
    #[serde(default)]
    links: Option<String>,
    /// One network (and n-gram half) per label, each with one output, rather than one for all.
    #[serde(default)]
    per_label: bool,
    /// How this head was trained (candidates, calibration, validation metrics): provenance.
    #[serde(default, rename = "training")]
    _training: Option<serde_json::Value>,
}

/// One linear layer, weights row-major `[out][in]`.
#[derive(Debug, Clone)]
struct Layer {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Layer {
    fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `y_r = W · x_r + b` for each of `rows` inputs (`x`: rows × inputs, row-major; `y` the
    /// same, rows × outputs), ReLU'd when `relu`. The encoder's dot-product kernel for this
    /// CPU (AVX-512 or AVX2 with FMA where there is one: the crate is built for baseline
    /// x86_64, where a plain loop runs 4 floats wide without FMA) reads each weight row once
    /// for all the rows: a head's MLP is ~100,000 weights per network, more than L2 holds
    /// for all the heads together, so a batch pays for reading them once.
    fn forward_rows(
        &self,
        x: &[f32],
        rows: usize,
        relu: bool,
        scratch: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        let outputs = self.outputs();
        scratch.clear();
        scratch.resize(outputs * rows, 0.0);
        kernels().dots(x, self.inputs, &self.weight, scratch);
        // The kernel leaves output j of row r at j * rows + r.
        y.clear();
        y.resize(rows * outputs, 0.0);
        for (j, (column, bias)) in scratch.chunks_exact(rows).zip(&self.bias).enumerate() {
            for (r, value) in column.iter().enumerate() {
                let v = value + bias;
                y[r * outputs + j] = if relu { v.max(0.0) } else { v };
            }
        }
    }
}

/// The CPU's kernels, chosen once.
fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(Kernels::detect)
}

/// One loaded head.
#[derive(Debug, Clone)]
pub struct Head {
    /// Task name (`toxicity`, `spam`, `sentiment`).
    pub name: String,
    /// Its labels, in output order.
    pub labels: Vec<String>,
    /// Independent labels (sigmoid) rather than one-of (softmax).
    pub multi_label: bool,
    /// Thresholds chosen on validation data, by label.
    pub thresholds: BTreeMap<String, f64>,
    /// The head's own version.
    pub version: String,
    /// Quality on held-out data.
    pub metrics: BTreeMap<String, f64>,
    /// Whether VADER's four scores are inputs after the n-gram logit(s).
    pub vader: bool,
    /// Whether the link evidence ([`LinkSignals::inputs`]) is an input after VADER's.
    pub links: bool,
    /// The networks: one for all labels, or one per label (`per_label` in the manifest).
    parts: Vec<Part>,
}

/// One network of a head, with its lexical half.
#[derive(Debug, Clone)]
struct Part {
    /// An n-gram model whose logit is an input after the embedding.
    ngram: Option<NgramModel>,
    layers: Vec<Layer>,
}

impl Part {
    /// The logits of `rows` inputs (`a`: rows × (embedding and the part's lexical inputs)),
    /// left in `a` as rows × outputs.
    fn forward(&self, a: &mut Vec<f32>, rows: usize, scratch: &mut [Vec<f32>; 2]) {
        let last = self.layers.len() - 1;
        let [b, transposed] = scratch;
        for (i, layer) in self.layers.iter().enumerate() {
            layer.forward_rows(a, rows, i != last, transposed, b);
            std::mem::swap(a, b);
        }
    }
}

impl Head {
    /// How many lexical inputs the head takes after the embedding: its parts' n-gram logits,
    /// then VADER's scores, then the link evidence.
    fn lexical_inputs(&self) -> usize {
        self.parts.iter().filter(|p| p.ngram.is_some()).count() + self.dense_lexical_inputs()
    }

    /// Its lexical inputs that every part takes: VADER's scores, then the link evidence.
    fn dense_lexical_inputs(&self) -> usize {
        dense_lexical_inputs(self.vader, self.links)
    }

    /// Label probabilities for a batch: each message's embedding and the head's own lexical
    /// inputs (the parts' n-gram logits in part order, then VADER's scores and the link
    /// evidence), appended to
    /// `out[r]` in label order.
    fn score_rows(
        &self,
        embeddings: &[&[f32]],
        lexicals: &[&[f32]],
        scratch: &mut [Vec<f32>; 3],
        out: &mut [Vec<f32>],
    ) {
        let rows = embeddings.len();
        let ngrams = self.parts.iter().filter(|p| p.ngram.is_some()).count();
        let starts: Vec<usize> = out.iter().map(Vec::len).collect();
        let [a, rest @ ..] = scratch;
        let mut next_ngram = 0;
        for part in &self.parts {
            a.clear();
            for (embedding, lexical) in embeddings.iter().zip(lexicals) {
                let (ngram_logits, dense) = lexical.split_at(ngrams.min(lexical.len()));
                a.extend_from_slice(embedding);
                if part.ngram.is_some() {
                    a.push(ngram_logits.get(next_ngram).copied().unwrap_or(0.0));
                }
                a.extend_from_slice(dense);
            }
            if part.ngram.is_some() {
                next_ngram += 1;
            }
            part.forward(a, rows, rest);
            let outputs = a.len() / rows.max(1);
            for (row, logits) in out.iter_mut().zip(a.chunks_exact(outputs.max(1))) {
                row.extend_from_slice(logits);
            }
        }
        for (row, start) in out.iter_mut().zip(starts) {
            let own = &mut row[start..];
            if self.multi_label {
                for z in own.iter_mut() {
                    *z = 1.0 / (1.0 + (-*z).exp());
                }
            } else {
                let max = own.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for z in own.iter_mut() {
                    *z = (*z - max).exp();
                }
                let sum: f32 = own.iter().sum();
                for p in own.iter_mut() {
                    *p /= sum;
                }
            }
        }
    }
}

/// Every head of a heads directory. Scores are laid out flat, head after head, label after
/// label; [`Heads::label_names`] names each position `head/label`.
#[derive(Debug, Clone, Default)]
pub struct Heads {
    /// The manifest's version ("" when no heads are loaded).
    pub version: String,
    /// The encoder the heads were trained on.
    pub encoder: String,
    heads: Vec<Head>,
    label_names: Vec<String>,
}

impl Heads {
    /// No heads: the encoder runs alone and nothing is scored.
    pub fn none() -> Self {
        Self::default()
    }

    /// Loads the heads in `dir` for an encoder with `embedding_dim`-sized embeddings. A missing
    /// directory or manifest means no heads (`Ok` with none); anything malformed is an error
    /// naming the file and what is wrong.
    pub fn load(dir: &Path, embedding_dim: usize) -> Result<Self, ModelError> {
        let manifest_path = dir.join(MANIFEST);
        if !manifest_path.is_file() {
            return Ok(Self::none());
        }
        let manifest: Manifest = super::read_json(&manifest_path)?;
        let bad = |message: String| ModelError::Config {
            path: manifest_path.clone(),
            message,
        };
        if manifest.embedding_dim != embedding_dim {
            return Err(bad(format!(
                "the heads were trained on {}-dimensional embeddings ({}), but the encoder makes \
                 {embedding_dim}",
                manifest.embedding_dim, manifest.encoder
            )));
        }
        let mut heads = Vec::with_capacity(manifest.heads.len());
        for (i, entry) in manifest.heads.into_iter().enumerate() {
            let place = format!("heads[{i}] ({})", entry.name);
            if entry.name.is_empty() || entry.name.contains('/') {
                return Err(bad(format!("{place}.name: must be non-empty without `/`")));
            }
            if entry.labels.is_empty() {
                return Err(bad(format!(
                    "{place}.labels: at least one label is required"
                )));
            }
            if !entry.multi_label && entry.labels.len() < 2 {
                return Err(bad(format!(
                    "{place}.labels: a multi-class (softmax) head needs two labels or more"
                )));
            }
            if let Some(label) = entry.thresholds.keys().find(|l| !entry.labels.contains(l)) {
                return Err(bad(format!(
                    "{place}.thresholds: `{label}` is not one of its labels"
                )));
            }
            if let Some((label, t)) = entry
                .thresholds
                .iter()
                .find(|(_, t)| !(0.0..=1.0).contains(*t))
            {
                return Err(bad(format!(
                    "{place}.thresholds.{label}: {t} is outside [0, 1]"
                )));
            }
            if entry.per_label && !entry.multi_label {
                return Err(bad(format!(
                    "{place}.per_label: only a multi-label (sigmoid) head has a network per label"
                )));
            }
            let links = match entry.links.as_deref() {
                None => false,
                Some(LinkSignals::VERSION) => true,
                Some(other) => {
                    return Err(bad(format!(
                        "{place}.links: `{other}` is not a link evidence this build makes (it \
                         makes `{}`): retrain the heads",
                        LinkSignals::VERSION
                    )));
                }
            };
            let path = dir.join(&entry.file);
            let dense_inputs = embedding_dim + dense_lexical_inputs(entry.vader, links);
            let mut file = HeadFile::open(&path)?;
            let parts = if entry.per_label {
                entry
                    .labels
                    .iter()
                    .map(|label| file.part(&format!("{label}."), dense_inputs, 1, &entry.ngram))
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                vec![file.part("", dense_inputs, entry.labels.len(), &entry.ngram)?]
            };
            file.finish()?;
            heads.push(Head {
                name: entry.name,
                labels: entry.labels,
                multi_label: entry.multi_label,
                thresholds: entry.thresholds,
                version: entry.version,
                metrics: entry.metrics,
                vader: entry.vader,
                links,
                parts,
            });
        }
        let label_names = heads
            .iter()
            .flat_map(|h| h.labels.iter().map(move |l| format!("{}/{l}", h.name)))
            .collect();
        Ok(Self {
            version: manifest.version,
            encoder: manifest.encoder,
            heads,
            label_names,
        })
    }

    /// Whether there is anything to score.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// The heads.
    pub fn heads(&self) -> &[Head] {
        &self.heads
    }

    /// `head/label` for every score position.
    pub fn label_names(&self) -> &[String] {
        &self.label_names
    }

    /// The heads' lexical inputs for a normalised text and the evidence of its links
    /// (`crate::engine::rules::lookalike::link_signals` of the same text), in head order:
    /// each head's n-gram logits, then VADER's scores and the link evidence if it takes them
    /// (empty when no head takes any). Cheap next to the encoder, and computed where the text
    /// is (the caller's task), not on the model thread.
    pub fn lexical(&self, normalized_text: &str, links: &LinkSignals) -> Vec<f32> {
        let mut out = Vec::new();
        for head in &self.heads {
            // The parts' n-gram halves share their features (the manifest has one config):
            // the text is hashed once for them all.
            let mut counts = None;
            for ngram in head.parts.iter().filter_map(|p| p.ngram.as_ref()) {
                let counts = counts.get_or_insert_with(|| ngram.counts(normalized_text));
                out.push(ngram.logit_of_counts(counts) as f32);
            }
            if head.vader {
                out.extend(vader_scores(normalized_text));
            }
            if head.links {
                out.extend(links.inputs());
            }
        }
        out
    }

    /// Every label's probability for one embedding and the text's [`Heads::lexical`] inputs,
    /// in [`Heads::label_names`] order.
    pub fn score(&self, embedding: &[f32], lexical: &[f32]) -> Vec<f32> {
        self.score_batch(&[embedding], &[lexical])
            .pop()
            .unwrap_or_default()
    }

    /// [`Heads::score`] for a batch of messages (embeddings and their lexical inputs, in the
    /// same order): the same numbers, with each head's weights read once for the batch.
    pub fn score_batch(&self, embeddings: &[&[f32]], lexicals: &[&[f32]]) -> Vec<Vec<f32>> {
        let rows = embeddings.len().min(lexicals.len());
        if rows == 0 {
            // The kernels split their output by rows: nothing to split, nothing to score.
            return Vec::new();
        }
        let mut out: Vec<Vec<f32>> = (0..rows)
            .map(|_| Vec::with_capacity(self.label_names.len()))
            .collect();
        let mut scratch = [Vec::new(), Vec::new(), Vec::new()];
        let mut offset = 0;
        let mut own: Vec<Vec<f32>> = vec![Vec::new(); rows];
        for head in &self.heads {
            let wanted = head.lexical_inputs();
            for (own, lexical) in own.iter_mut().zip(lexicals) {
                // Too few inputs is a caller's bug; zeros keep the answer sane.
                own.clear();
                own.extend_from_slice(lexical.get(offset..).unwrap_or_default());
                own.resize(wanted, 0.0);
            }
            offset += wanted;
            let own: Vec<&[f32]> = own.iter().map(Vec::as_slice).collect();
            head.score_rows(&embeddings[..rows], &own, &mut scratch, &mut out);
        }
        out
    }

    /// The threshold of a `head/label` chosen at training time, if the manifest has one.
    pub fn threshold(&self, label_name: &str) -> Option<f64> {
        let (head, label) = label_name.split_once('/')?;
        self.heads
            .iter()
            .find(|h| h.name == head)?
            .thresholds
            .get(label)
            .copied()
    }
}

/// VADER's scores as inputs: negative, neutral, positive, compound.
pub const VADER_INPUTS: usize = 4;

/// How many inputs every part of a head takes after the embedding and its n-gram logit.
fn dense_lexical_inputs(vader: bool, links: bool) -> usize {
    (if vader { VADER_INPUTS } else { 0 }) + if links { LinkSignals::INPUTS } else { 0 }
}

/// VADER's four scores of a text.
pub fn vader_scores(text: &str) -> [f32; VADER_INPUTS] {
    // The analyser only borrows the crate's lexicons, parsed once on first use (the server
    // warms them up before it reports SERVING).
    let analyzer = vader_sentiment::SentimentIntensityAnalyzer::new();
    let scores = analyzer.polarity_scores(text);
    let get = |key: &str| scores.get(key).copied().unwrap_or(0.0) as f32;
    [get("neg"), get("neu"), get("pos"), get("compound")]
}

/// A head file's tensors, taken part by part; anything left over is an error.
struct HeadFile {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl HeadFile {
    fn open(path: &Path) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Missing(path.to_owned()));
        }
        Ok(Self {
            path: path.to_owned(),
            tensors: candle_core::safetensors::load(path, &Device::Cpu)?,
        })
    }

    fn bad(&self, message: String) -> ModelError {
        ModelError::Config {
            path: self.path.clone(),
            message,
        }
    }

    /// Takes one part's tensors, `{prefix}layers.N.weight` / `{prefix}layers.N.bias` and the
    /// n-gram half's when the manifest says there is one, checking that the shapes chain from
    /// the inputs (`dense_inputs`: the embedding, VADER's scores and the link evidence when
    /// the head takes them, plus the n-gram logit) to `outputs`.
    fn part(
        &mut self,
        prefix: &str,
        dense_inputs: usize,
        outputs: usize,
        ngram: &Option<NgramConfig>,
    ) -> Result<Part, ModelError> {
        let ngram = match ngram {
            None => None,
            Some(config) => {
                let mut take = |name: &str| -> Result<Vec<f32>, ModelError> {
                    let name = format!("{prefix}{name}");
                    let tensor = self.tensors.remove(&name).ok_or_else(|| {
                        self.bad(format!(
                            "the manifest says it has an n-gram half, but `{name}` is missing"
                        ))
                    })?;
                    Ok(tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
                };
                let idf = take("ngram.idf")?;
                let weights = take("ngram.weight")?;
                let bias = take("ngram.bias")?;
                let [bias] = bias[..] else {
                    return Err(self.bad(format!(
                        "{prefix}ngram.bias has {} values, not 1",
                        bias.len()
                    )));
                };
                Some(
                    NgramModel::from_parts(config.clone(), idf, weights, f64::from(bias))
                        .map_err(|e| self.bad(format!("{prefix}ngram: {e}")))?,
                )
            }
        };
        let mut layers = Vec::new();
        let mut width = dense_inputs + usize::from(ngram.is_some());
        loop {
            let n = layers.len();
            let (Some(weight), Some(bias)) = (
                self.tensors.remove(&format!("{prefix}layers.{n}.weight")),
                self.tensors.remove(&format!("{prefix}layers.{n}.bias")),
            ) else {
                break;
            };
            let weight = weight.to_dtype(DType::F32)?;
            let bias = bias.to_dtype(DType::F32)?;
            let (rows, cols) = weight.dims2()?;
            if cols != width || bias.dims1()? != rows {
                return Err(self.bad(format!(
                    "{prefix}layers.{n}: weight is {rows}x{cols} and bias {:?}; expected \
                     {{out}}x{width} and {{out}}",
                    bias.dims()
                )));
            }
            layers.push(Layer {
                weight: weight.flatten_all()?.to_vec1()?,
                bias: bias.to_vec1()?,
                inputs: width,
            });
            width = rows;
        }
        if layers.is_empty() {
            return Err(self.bad(format!(
                "no {prefix}layers.0.weight / {prefix}layers.0.bias"
            )));
        }
        let last = layers.last().map_or(0, Layer::outputs);
        if last != outputs {
            return Err(self.bad(format!(
                "{prefix}layers: the last layer has {last} outputs for {outputs} labels"
            )));
        }
        Ok(Part { ngram, layers })
    }

    /// Fails on tensors no part took.
    fn finish(self) -> Result<(), ModelError> {
        match self.tensors.keys().min() {
            Some(extra) => Err(self.bad(format!("unexpected tensor `{extra}`"))),
            None => Ok(()),
        }
    }
}

/// An n-gram model as it will be after a round trip through a head file (its tables in f16),
/// so that what training measures is exactly what the service loads.
pub fn stored_ngram(model: &NgramModel) -> Result<NgramModel, ModelError> {
    let (config, idf, weights, bias) = model.parts();
    let round = |values: &[f32]| -> Result<Vec<f32>, ModelError> {
        Ok(Tensor::new(values, &Device::Cpu)?
            .to_dtype(DType::F16)?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    };
    NgramModel::from_parts(
        config.clone(),
        round(idf)?,
        round(weights)?,
        f64::from(bias as f32),
    )
    .map_err(ModelError::Input)
}

/// Writes a head file (`layers.N.weight` / `layers.N.bias`) from row-major weights: how
/// `modbot train` stores heads, and how tests make them.
pub fn write_head(path: &Path, layers: &[(Vec<Vec<f32>>, Vec<f32>)]) -> Result<(), ModelError> {
    write_head_with_ngram(path, layers, None)
}

/// [`write_head`] with an n-gram half (its tables stored as f16: see [`stored_ngram`]).
pub fn write_head_with_ngram(
    path: &Path,
    layers: &[(Vec<Vec<f32>>, Vec<f32>)],
    ngram: Option<&NgramModel>,
) -> Result<(), ModelError> {
    write_head_parts(path, &[("", layers, ngram)])
}

/// One network of a head file: its tensor-name prefix (`""`, or `"<label>."` for a
/// `per_label` head), its layers and its n-gram half.
pub type PartToWrite<'a> = (
    &'a str,
    &'a [(Vec<Vec<f32>>, Vec<f32>)],
    Option<&'a NgramModel>,
);

/// Writes a head file of one or more networks (see [`PartToWrite`]).
pub fn write_head_parts(path: &Path, parts: &[PartToWrite<'_>]) -> Result<(), ModelError> {
    let mut tensors = Vec::new();
    for (prefix, layers, ngram) in parts {
        part_tensors(prefix, layers, *ngram, &mut tensors)?;
    }
    candle_core::safetensors::save(&tensors.into_iter().collect(), path)?;
    Ok(())
}

fn part_tensors(
    prefix: &str,
    layers: &[(Vec<Vec<f32>>, Vec<f32>)],
    ngram: Option<&NgramModel>,
    tensors: &mut Vec<(String, Tensor)>,
) -> Result<(), ModelError> {
    if let Some(model) = ngram {
        let (_, idf, weights, bias) = model.parts();
        tensors.push((
            format!("{prefix}ngram.idf"),
            Tensor::new(idf, &Device::Cpu)?.to_dtype(DType::F16)?,
        ));
        tensors.push((
            format!("{prefix}ngram.weight"),
            Tensor::new(weights, &Device::Cpu)?.to_dtype(DType::F16)?,
        ));
        tensors.push((
            format!("{prefix}ngram.bias"),
            Tensor::new(&[bias as f32], &Device::Cpu)?,
        ));
    }
    for (n, (weight, bias)) in layers.iter().enumerate() {
        let rows = weight.len();
        let cols = weight.first().map_or(0, Vec::len);
        let flat: Vec<f32> = weight.iter().flatten().copied().collect();
        tensors.push((
            format!("{prefix}layers.{n}.weight"),
            candle_core::Tensor::from_vec(flat, (rows, cols), &Device::Cpu)?,
        ));
        tensors.push((
            format!("{prefix}layers.{n}.bias"),
            candle_core::Tensor::new(bias.as_slice(), &Device::Cpu)?,
        ));
    }
    Ok(())
}

/// Writes a heads directory with one head, `toxicity` (label `insult`, threshold 0.5): a
/// nearest-centroid classifier from example texts. The logit is a scaled projection onto the
/// line from the `negative` centroid to the `positive` one, zero half-way. Not a trained
/// model: a few examples' worth of signal, for tests and benchmarks that need the model to
/// score something real (`modbot train` makes the heads the service runs with).
pub fn write_centroid_heads(
    encoder: &super::Encoder,
    dir: &Path,
    positive: &[&str],
    negative: &[&str],
) -> Result<(), ModelError> {
    let centroid = |texts: &[&str]| -> Result<Vec<f32>, ModelError> {
        let rows = encoder.embed(texts)?;
        let mut sum = vec![0f32; encoder.dim()];
        for row in &rows {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v;
            }
        }
        Ok(sum.iter().map(|s| s / rows.len().max(1) as f32).collect())
    };
    let (pos, neg) = (centroid(positive)?, centroid(negative)?);
    let direction: Vec<f32> = pos.iter().zip(&neg).map(|(a, b)| 40.0 * (a - b)).collect();
    let midpoint: f32 = direction
        .iter()
        .zip(pos.iter().zip(&neg))
        .map(|(w, (a, b))| w * (a + b) / 2.0)
        .sum();
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Config {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    write_head(
        &dir.join("toxicity.safetensors"),
        &[(vec![direction], vec![-midpoint])],
    )?;
    let manifest = serde_json::json!({
        "version": "centroid-1",
        "encoder": "all-MiniLM-L6-v2",
        "embedding_dim": encoder.dim(),
        "heads": [{
            "name": "toxicity", "file": "toxicity.safetensors", "multi_label": true,
            "labels": ["insult"], "thresholds": {"insult": 0.5}, "version": "c1",
            "metrics": {}
        }]
    });
    std::fs::write(dir.join(MANIFEST), manifest.to_string()).map_err(|e| ModelError::Config {
        path: dir.join(MANIFEST),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_manifest(dir: &Path, body: &str) {
        std::fs::write(dir.join(MANIFEST), body).unwrap();
    }

    #[test]
    fn a_layer_matches_the_plain_sum() {
        for len in [1, 7, 8, 9, 16, 63, 64, 65, 385] {
            let weight: Vec<f32> = (0..3 * len).map(|i| (i as f32 * 0.37).sin()).collect();
            let input: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let layer = Layer {
                weight: weight.clone(),
                bias: vec![0.5, -1.0, 0.0],
                inputs: len,
            };
            let mut out = vec![9.0; 7];
            layer.forward_rows(&input, 1, false, &mut Vec::new(), &mut out);
            assert_eq!(out.len(), 3);
            for (j, got) in out.iter().enumerate() {
                let plain: f32 = weight[j * len..(j + 1) * len]
                    .iter()
                    .zip(&input)
                    .map(|(w, x)| w * x)
                    .sum::<f32>()
                    + layer.bias[j];
                assert!((got - plain).abs() < 1e-4, "length {len}, row {j}");
            }
        }
    }

    #[test]
    fn a_missing_manifest_means_no_heads() {
        let dir = tempfile::tempdir().unwrap();
        let heads = Heads::load(dir.path(), 4).unwrap();
        assert!(heads.is_empty());
        assert!(heads.label_names().is_empty());
    }

    #[test]
    fn sigmoid_and_softmax_heads_score_as_their_kind_says() {
        let dir = tempfile::tempdir().unwrap();
        // A one-layer multi-label head: logit = 2*x0 - x1 + 0.5, logit2 = -x0.
        write_head(
            &dir.path().join("tox.safetensors"),
            &[(
                vec![vec![2.0, -1.0, 0.0], vec![-1.0, 0.0, 0.0]],
                vec![0.5, 0.0],
            )],
        )
        .unwrap();
        // A two-layer multi-class head: hidden = relu(x), logits = [h0, h1, h2].
        write_head(
            &dir.path().join("sent.safetensors"),
            &[
                (
                    vec![
                        vec![1.0, 0.0, 0.0],
                        vec![0.0, 1.0, 0.0],
                        vec![0.0, 0.0, 1.0],
                    ],
                    vec![0.0; 3],
                ),
                (
                    vec![
                        vec![1.0, 0.0, 0.0],
                        vec![0.0, 1.0, 0.0],
                        vec![0.0, 0.0, 1.0],
                    ],
                    vec![0.0; 3],
                ),
            ],
        )
        .unwrap();
        write_manifest(
            dir.path(),
            r#"{"version": "t1", "encoder": "e", "embedding_dim": 3, "heads": [
                {"name": "toxicity", "file": "tox.safetensors", "multi_label": true,
                 "labels": ["insult", "threat"], "thresholds": {"insult": 0.7}},
                {"name": "sentiment", "file": "sent.safetensors", "multi_label": false,
                 "labels": ["negative", "neutral", "positive"]}
            ]}"#,
        );
        let heads = Heads::load(dir.path(), 3).unwrap();
        assert_eq!(
            heads.label_names(),
            [
                "toxicity/insult",
                "toxicity/threat",
                "sentiment/negative",
                "sentiment/neutral",
                "sentiment/positive"
            ]
        );
        assert_eq!(heads.threshold("toxicity/insult"), Some(0.7));
        assert_eq!(heads.threshold("toxicity/threat"), None);
        let scores = heads.score(&[1.0, 2.0, -3.0], &[]);
        let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
        assert!((scores[0] - sigmoid(0.5)).abs() < 1e-6, "{scores:?}");
        assert!((scores[1] - sigmoid(-1.0)).abs() < 1e-6, "{scores:?}");
        // relu(-3) = 0, so the softmax is over [1, 2, 0].
        let z = [1f32.exp(), 2f32.exp(), 1.0];
        let sum: f32 = z.iter().sum();
        for (got, want) in scores[2..].iter().zip(z.iter().map(|v| v / sum)) {
            assert!((got - want).abs() < 1e-6, "{scores:?}");
        }
        assert!((scores[2..].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_per_label_head_runs_a_network_and_an_ngram_half_per_label() {
        let dir = tempfile::tempdir().unwrap();
        let texts = ["you idiot", "nice play", "i will hurt you", "good game"];
        let fit = |labels: [bool; 4]| {
            let config = NgramConfig {
                buckets_log2: 10,
                ..NgramConfig::default()
            };
            stored_ngram(&NgramModel::fit(&texts, &labels, &config)).unwrap()
        };
        let (insult, threat) = (
            fit([true, false, false, false]),
            fit([false, false, true, false]),
        );
        // insult: logit = x0 + ngram; threat: hidden = relu(x1) (its n-gram input weighs 0),
        // logit = 2h − 1.
        let insult_layers = [(vec![vec![1.0, 0.0, 1.0]], vec![0.0])];
        let threat_layers = [
            (vec![vec![0.0, 1.0, 0.0]], vec![0.0]),
            (vec![vec![2.0]], vec![-1.0]),
        ];
        write_head_parts(
            &dir.path().join("tox.safetensors"),
            &[
                ("insult.", &insult_layers, Some(&insult)),
                ("threat.", &threat_layers, Some(&threat)),
            ],
        )
        .unwrap();
        let entry = |extra: &str| {
            format!(
                r#"{{"version": "t", "embedding_dim": 2, "heads": [
                {{"name": "toxicity", "file": "tox.safetensors", "multi_label": true,
                 "per_label": true, "labels": ["insult", "threat"], "ngram": {config}{extra}}}]}}"#,
                config = serde_json::to_string(insult.parts().0).unwrap()
            )
        };
        write_manifest(dir.path(), &entry(""));
        let heads = Heads::load(dir.path(), 2).unwrap();
        assert_eq!(heads.label_names(), ["toxicity/insult", "toxicity/threat"]);
        let text = "i will hurt you";
        let lexical = heads.lexical(text, &LinkSignals::default());
        assert_eq!(
            lexical,
            [insult.logit(text) as f32, threat.logit(text) as f32],
            "one n-gram logit per label, in label order"
        );
        let scores = heads.score(&[0.5, 2.0], &lexical);
        let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
        let want = [sigmoid(0.5 + lexical[0]), sigmoid(2.0 * 2.0 - 1.0)];
        assert!((scores[0] - want[0]).abs() < 1e-6, "{scores:?} vs {want:?}");
        assert!((scores[1] - want[1]).abs() < 1e-6, "{scores:?} vs {want:?}");

        // A per-label head must be multi-label, and every label needs its network.
        write_manifest(
            dir.path(),
            &entry("").replace(r#""multi_label": true"#, r#""multi_label": false"#),
        );
        let error = Heads::load(dir.path(), 2).unwrap_err().to_string();
        assert!(error.contains("per_label"), "{error}");
        write_manifest(
            dir.path(),
            &entry("").replace(r#"["insult", "threat"]"#, r#"["insult", "sexual"]"#),
        );
        let error = Heads::load(dir.path(), 2).unwrap_err().to_string();
        assert!(error.contains("sexual.ngram.idf"), "{error}");
        write_manifest(
            dir.path(),
            &entry("").replace(r#"["insult", "threat"]"#, r#"["insult"]"#),
        );
        let error = Heads::load(dir.path(), 2).unwrap_err().to_string();
        assert!(error.contains("unexpected tensor `threat."), "{error}");
    }

    #[test]
    fn a_head_with_link_inputs_reads_them_after_the_embedding_and_names_its_definition() {
        let dir = tempfile::tempdir().unwrap();
        // Two embedding inputs, then the five link inputs: only "a look-alike host" counts.
        let mut weights = vec![0.0; 2 + LinkSignals::INPUTS];
        weights[2 + 2] = 3.0;
        write_head(
            &dir.path().join("spam.safetensors"),
            &[(vec![weights], vec![-1.0])],
        )
        .unwrap();
        let manifest = |links: &str| {
            format!(
                r#"{{"version": "t", "embedding_dim": 2, "heads": [
                {{"name": "spam", "file": "spam.safetensors", "multi_label": true,
                 "labels": ["promo"]{links}}}]}}"#
            )
        };
        write_manifest(dir.path(), &manifest(r#", "links": "links-1""#));
        let heads = Heads::load(dir.path(), 2).unwrap();
        let scam = LinkSignals {
            links: 1,
            lookalike: true,
            ..LinkSignals::default()
        };
        let lexical = heads.lexical("free nitro dlscord-gift.com", &scam);
        assert_eq!(lexical, [1.0, 0.0, 1.0, 0.0, 0.0]);
        let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
        let scored = heads.score(&[0.3, 0.3], &lexical)[0];
        assert!((scored - sigmoid(2.0)).abs() < 1e-6, "{scored}");
        let plain = heads.lexical("hello", &LinkSignals::default());
        let scored = heads.score(&[0.3, 0.3], &plain)[0];
        assert!((scored - sigmoid(-1.0)).abs() < 1e-6, "{scored}");

        // Another definition of the inputs, or none where the file expects them, is refused.
        write_manifest(dir.path(), &manifest(r#", "links": "links-9""#));
        let error = Heads::load(dir.path(), 2).unwrap_err().to_string();
        assert!(
            error.contains("links: `links-9`") && error.contains("links-1"),
            "{error}"
        );
        write_manifest(dir.path(), &manifest(""));
        assert!(
            Heads::load(dir.path(), 2).is_err(),
            "7 inputs where 2 are fed"
        );
    }

    #[test]
    fn a_batch_scores_as_its_messages_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let texts = ["you idiot", "nice play", "i will hurt you", "good game"];
        let ngram = stored_ngram(&NgramModel::fit(
            &texts,
            &[true, false, true, false],
            &NgramConfig {
                buckets_log2: 10,
                ..NgramConfig::default()
            },
        ))
        .unwrap();
        // Two per-label MLP parts (3 inputs + n-gram → 4 hidden → 1) and a softmax head.
        let hidden = |seed: f32| {
            (0..4)
                .map(|j| (0..4).map(|i| ((i * 4 + j) as f32 * seed).sin()).collect())
                .collect::<Vec<Vec<f32>>>()
        };
        let mlp = |seed: f32| {
            vec![
                (hidden(seed), vec![0.1, -0.2, 0.3, 0.0]),
                (vec![vec![1.0, -1.0, 0.5, 2.0]], vec![-0.3]),
            ]
        };
        let (a, b) = (mlp(0.7), mlp(1.3));
        write_head_parts(
            &dir.path().join("tox.safetensors"),
            &[("insult.", &a, Some(&ngram)), ("threat.", &b, Some(&ngram))],
        )
        .unwrap();
        write_head(
            &dir.path().join("sent.safetensors"),
            &[(
                vec![
                    vec![1.0, 0.0, 0.0],
                    vec![0.0, 1.0, 0.0],
                    vec![0.5, 0.5, -1.0],
                ],
                vec![0.0; 3],
            )],
        )
        .unwrap();
        write_manifest(
            dir.path(),
            &format!(
                r#"{{"version": "t", "embedding_dim": 3, "heads": [
                {{"name": "toxicity", "file": "tox.safetensors", "multi_label": true,
                 "per_label": true, "labels": ["insult", "threat"], "ngram": {}}},
                {{"name": "sentiment", "file": "sent.safetensors", "multi_label": false,
                 "labels": ["negative", "neutral", "positive"]}}]}}"#,
                serde_json::to_string(ngram.parts().0).unwrap()
            ),
        );
        let heads = Heads::load(dir.path(), 3).unwrap();
        let embeddings: Vec<Vec<f32>> = (0..5)
            .map(|r| (0..3).map(|i| ((r * 3 + i) as f32 * 0.9).cos()).collect())
            .collect();
        let lexicals: Vec<Vec<f32>> = texts
            .iter()
            .chain(&["gg"])
            .map(|t| heads.lexical(t, &LinkSignals::default()))
            .collect();
        let rows: Vec<&[f32]> = embeddings.iter().map(Vec::as_slice).collect();
        let lex: Vec<&[f32]> = lexicals.iter().map(Vec::as_slice).collect();
        let batch = heads.score_batch(&rows, &lex);
        assert_eq!(batch.len(), 5);
        for r in 0..5 {
            let one = heads.score(rows[r], lex[r]);
            assert_eq!(one.len(), 5);
            for (x, y) in batch[r].iter().zip(&one) {
                assert!((x - y).abs() < 1e-6, "row {r}: {:?} vs {one:?}", batch[r]);
            }
            assert!((one[2..].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // Missing lexical inputs are zeros, not a panic; an empty batch is an empty answer.
        let short = heads.score_batch(&rows[..1], &[&[]]);
        assert_eq!(short[0].len(), 5);
        assert!(heads.score_batch(&[], &[]).is_empty());
    }

    #[test]
    fn malformed_heads_are_refused_with_the_place() {
        let dir = tempfile::tempdir().unwrap();
        write_head(
            &dir.path().join("h.safetensors"),
            &[(vec![vec![1.0, 0.0]], vec![0.0])],
        )
        .unwrap();
        let cases = [
            (
                r#"{"version": "v", "embedding_dim": 3, "heads": []}"#,
                "trained on 3-dimensional",
            ),
            (
                r#"{"version": "v", "embedding_dim": 2, "heads": [{"name": "t", "file": "h.safetensors", "multi_label": true, "labels": ["a", "b"]}]}"#,
                "1 outputs for 2 labels",
            ),
            (
                r#"{"version": "v", "embedding_dim": 2, "heads": [{"name": "t", "file": "h.safetensors", "multi_label": true, "labels": ["a"], "thresholds": {"b": 0.5}}]}"#,
                "heads[0] (t).thresholds: `b`",
            ),
            (
                r#"{"version": "v", "embedding_dim": 2, "heads": [{"name": "t", "file": "h.safetensors", "multi_label": true, "labels": ["a"], "thresholds": {"a": 1.5}}]}"#,
                "outside [0, 1]",
            ),
            (
                r#"{"version": "v", "embedding_dim": 2, "heads": [{"name": "t", "file": "h.safetensors", "multi_label": false, "labels": ["a"]}]}"#,
                "two labels or more",
            ),
            (
                r#"{"version": "v", "embedding_dim": 2, "heads": [{"name": "t", "file": "nope.safetensors", "multi_label": true, "labels": ["a"]}]}"#,
                "nope.safetensors is missing",
            ),
            (r#"{"version": 1}"#, "heads.json"),
        ];
        for (manifest, expected) in cases {
            write_manifest(dir.path(), manifest);
            let error = Heads::load(dir.path(), 2).unwrap_err().to_string();
            assert!(error.contains(expected), "`{expected}` not in: {error}");
        }
    }
}
