//! Training classification heads with candle-nn: small networks on fixed input vectors
//! (sentence embeddings), for `modbot train`.
//!
//! Every head is trained as a softmax over its classes with class-weighted cross-entropy, so
//! a rare class (insults, spam) counts as much as a common one, and an L2 penalty on the
//! weights. Training is deterministic: weights are initialised and mini-batches shuffled from
//! a seeded SplitMix64, dropout masks come from the same generator, and candle's CPU kernels
//! reduce in a fixed order, so the same data and seed give bit-identical heads. Early stopping
//! keeps the weights of the epoch with the lowest validation loss.
//!
//! Calibration is fitted afterwards on validation data: the head's logits `z` become
//! `softmax(scale × z + bias)` with one scale and a bias per class chosen to minimise the
//! (unweighted) validation log-loss. For two classes this is Platt scaling of the logit
//! difference; for more it is temperature scaling with class offsets. Both fold into the last
//! layer, so a calibrated head is still a plain stack of linear layers ([`super::heads`]).
//!
//! Architecture Invariant: this module sees plain `&[Vec<f32>]` inputs and class indices and
//! returns plain weights; it knows nothing of datasets, files or tasks.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use super::ModelError;

/// How one head is trained.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FitConfig {
    /// Hidden units of the one hidden layer (ReLU); 0 for a linear head (logistic
    /// regression).
    pub hidden: usize,
    /// L2 penalty on the weights (not the biases), added to the mean loss.
    pub l2: f64,
    /// Dropout on the hidden layer while training.
    pub dropout: f32,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Examples per mini-batch.
    pub batch_size: usize,
    /// Most passes over the training data.
    pub max_epochs: usize,
    /// Epochs without a better validation loss before training stops.
    pub patience: usize,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            hidden: 0,
            l2: 1e-4,
            dropout: 0.1,
            learning_rate: 1e-3,
            batch_size: 64,
            max_epochs: 200,
            patience: 12,
            seed: 0,
        }
    }
}

/// Training data for one head: input vectors and their classes.
#[derive(Debug, Clone, Copy)]
pub struct FitData<'a> {
    /// Input vectors, all the same length.
    pub inputs: &'a [Vec<f32>],
    /// Class of each input, below `classes`.
    pub classes: &'a [usize],
    /// Weight of each example (1.0 for plain data; class weights are applied on top).
    pub weights: Option<&'a [f32]>,
}

/// One linear layer's weights: `(weight [out][in], bias [out])`.
pub type LayerWeights = (Vec<Vec<f32>>, Vec<f32>);

/// A trained (not yet calibrated) head.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// Layers as `(weight [out][in], bias [out])`, ReLU between them; the last layer's outputs
    /// are the classes' logits.
    pub layers: Vec<LayerWeights>,
    /// The epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Epochs run.
    pub epochs: usize,
    /// Class-weighted validation loss of the kept weights.
    pub validation_loss: f64,
}

impl Fitted {
    /// The logits of one input.
    pub fn logits(&self, input: &[f32]) -> Vec<f32> {
        let mut current = input.to_vec();
        let last = self.layers.len() - 1;
        for (i, (weight, bias)) in self.layers.iter().enumerate() {
            current = weight
                .iter()
                .zip(bias)
                .map(|(row, b)| {
                    let z = row.iter().zip(&current).map(|(w, x)| w * x).sum::<f32>() + b;
                    if i == last { z } else { z.max(0.0) }
                })
                .collect();
        }
        current
    }

    /// Folds a calibration into the last layer: logits become `scale × z + bias`.
    pub fn calibrated(&self, calibration: &Calibration) -> Fitted {
        let mut out = self.clone();
        let (weight, bias) = out
            .layers
            .last_mut()
            .expect("a head has layers. This is a bug");
        for w in weight.iter_mut().flatten() {
            *w *= calibration.scale;
        }
        for (b, offset) in bias.iter_mut().zip(&calibration.bias) {
            *b = *b * calibration.scale + offset;
        }
        out
    }

    /// The head as served with one sigmoid output (a two-class head's logit difference,
    /// `z₁ − z₀`): `softmax([z₀, z₁])₁ = sigmoid(z₁ − z₀)`, so nothing changes but the shape.
    pub fn as_binary(&self) -> Fitted {
        let mut out = self.clone();
        let (weight, bias) = out
            .layers
            .last_mut()
            .expect("a head has layers. This is a bug");
        assert_eq!(
            weight.len(),
            2,
            "as_binary needs a two-class head. This is a bug"
        );
        let row: Vec<f32> = weight[1]
            .iter()
            .zip(&weight[0])
            .map(|(a, b)| a - b)
            .collect();
        *weight = vec![row];
        *bias = vec![bias[1] - bias[0]];
        out
    }
}

/// A fitted calibration: logits `z` become `softmax(scale × z + bias)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// Multiplies every logit (an inverse temperature).
    pub scale: f32,
    /// Added per class after scaling.
    pub bias: Vec<f32>,
}

/// SplitMix64: a tiny, well-mixed generator, enough for initialisation, shuffling and
/// dropout, and the same on every platform.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        crate::corpus::splitmix64(&mut self.0)
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

fn matrix(rows: &[Vec<f32>], device: &Device) -> Result<Tensor, ModelError> {
    let width = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != width) {
        return Err(ModelError::Input(
            "training inputs differ in length".to_owned(),
        ));
    }
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), width), device)?)
}

/// One layer's parameters as candle variables.
struct LayerVars {
    weight: Var,
    bias: Var,
}

impl LayerVars {
    /// PyTorch's default for linear layers: uniform in ±1/√inputs.
    fn init(inputs: usize, outputs: usize, rng: &mut SplitMix64) -> Result<Self, ModelError> {
        let bound = 1.0 / (inputs as f32).sqrt();
        let weight: Vec<f32> = (0..inputs * outputs)
            .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
            .collect();
        Ok(Self {
            weight: Var::from_tensor(&Tensor::from_vec(weight, (outputs, inputs), &Device::Cpu)?)?,
            bias: Var::from_tensor(&Tensor::zeros(outputs, DType::F32, &Device::Cpu)?)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }

    fn export(&self) -> Result<LayerWeights, ModelError> {
        Ok((
            self.weight.as_tensor().to_vec2()?,
            self.bias.as_tensor().to_vec1()?,
        ))
    }
}

/// The network being trained.
struct Network {
    layers: Vec<LayerVars>,
}

impl Network {
    fn forward(&self, x: &Tensor, dropout_mask: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i != last {
                h = h.relu()?;
                if let Some(mask) = dropout_mask {
                    h = h.broadcast_mul(mask)?;
                }
            }
        }
        Ok(h)
    }

    fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|l| [l.weight.clone(), l.bias.clone()])
            .collect()
    }

    fn l2(&self) -> Result<Tensor, ModelError> {
        let mut total = Tensor::zeros((), DType::F32, &Device::Cpu)?;
        for layer in &self.layers {
            total = (total + layer.weight.as_tensor().sqr()?.sum_all()?)?;
        }
        Ok(total)
    }

    fn export(&self) -> Result<Vec<LayerWeights>, ModelError> {
        self.layers.iter().map(LayerVars::export).collect()
    }
}

/// Weighted mean cross-entropy of logits `[n, c]` against `targets` (`[n]`, u32) with
/// per-example `weights` (`[n]`).
fn weighted_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor, ModelError> {
    let log_p = candle_nn::ops::log_softmax(logits, 1)?;
    let picked = log_p.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let total = (picked * weights)?.sum_all()?;
    Ok((total.neg()? / weights.sum_all()?.to_scalar::<f32>()? as f64)?)
}

/// Per-example weights: the caller's weight times the class weight `n / (classes × n_c)`
/// ("balanced"), so every class weighs the same in total.
fn example_weights(data: &FitData<'_>, classes: usize) -> Vec<f32> {
    let mut counts = vec![0f64; classes];
    for &c in data.classes {
        counts[c] += 1.0;
    }
    let n = data.classes.len() as f64;
    data.classes
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let class_weight = n / (classes as f64 * counts[c].max(1.0));
            class_weight as f32 * data.weights.map_or(1.0, |w| w[i])
        })
        .collect()
}

fn check(data: &FitData<'_>, classes: usize, what: &str) -> Result<(), ModelError> {
    if data.inputs.is_empty() || data.inputs.len() != data.classes.len() {
        return Err(ModelError::Input(format!(
            "{what}: {} inputs for {} classes",
            data.inputs.len(),
            data.classes.len()
        )));
    }
    if data.weights.is_some_and(|w| w.len() != data.inputs.len()) {
        return Err(ModelError::Input(format!(
            "{what}: weights and inputs differ in number"
        )));
    }
    if let Some(c) = data.classes.iter().find(|&&c| c >= classes) {
        return Err(ModelError::Input(format!("{what}: class {c} of {classes}")));
    }
    Ok(())
}

/// Trains a head with `classes` outputs on `train`, stopping early on `validation`'s
/// class-weighted loss. `progress` is called after every epoch with (epoch, train loss,
/// validation loss).
pub fn fit(
    train: FitData<'_>,
    validation: FitData<'_>,
    classes: usize,
    config: &FitConfig,
    mut progress: impl FnMut(usize, f64, f64),
) -> Result<Fitted, ModelError> {
    check(&train, classes, "training data")?;
    check(&validation, classes, "validation data")?;
    if classes < 2 {
        return Err(ModelError::Input(
            "a head needs two classes or more".to_owned(),
        ));
    }
    let device = Device::Cpu;
    let dim = train.inputs[0].len();
    let mut rng = SplitMix64(config.seed ^ 0x6d6f_6462_6f74);

    let mut layers = Vec::new();
    let mut width = dim;
    if config.hidden > 0 {
        layers.push(LayerVars::init(width, config.hidden, &mut rng)?);
        width = config.hidden;
    }
    layers.push(LayerVars::init(width, classes, &mut rng)?);
    let network = Network { layers };
    let mut optimizer = AdamW::new(
        network.vars(),
        ParamsAdamW {
            lr: config.learning_rate,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;

    let x_train = matrix(train.inputs, &device)?;
    let train_weights = example_weights(&train, classes);
    let x_val = matrix(validation.inputs, &device)?;
    let y_val = Tensor::from_vec(
        validation
            .classes
            .iter()
            .map(|&c| c as u32)
            .collect::<Vec<_>>(),
        validation.classes.len(),
        &device,
    )?;
    let w_val = Tensor::from_vec(
        example_weights(&validation, classes),
        validation.classes.len(),
        &device,
    )?;

    let batch_size = config.batch_size.max(1);
    let mut order: Vec<u32> = (0..train.inputs.len() as u32).collect();
    let mut best: Option<(f64, usize, Vec<LayerWeights>)> = None;
    let mut epochs = 0;
    for epoch in 1..=config.max_epochs.max(1) {
        epochs = epoch;
        rng.shuffle(&mut order);
        let mut epoch_loss = 0.0;
        for chunk in order.chunks(batch_size) {
            let index = Tensor::new(chunk, &device)?;
            let x = x_train.index_select(&index, 0)?;
            let y = Tensor::from_vec(
                chunk
                    .iter()
                    .map(|&i| train.classes[i as usize] as u32)
                    .collect::<Vec<_>>(),
                chunk.len(),
                &device,
            )?;
            let w = Tensor::from_vec(
                chunk
                    .iter()
                    .map(|&i| train_weights[i as usize])
                    .collect::<Vec<_>>(),
                chunk.len(),
                &device,
            )?;
            let mask = if config.hidden > 0 && config.dropout > 0.0 {
                let keep = 1.0 - config.dropout;
                let values: Vec<f32> = (0..chunk.len() * config.hidden)
                    .map(|_| {
                        if rng.next_f32() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Some(Tensor::from_vec(
                    values,
                    (chunk.len(), config.hidden),
                    &device,
                )?)
            } else {
                None
            };
            let logits = network.forward(&x, mask.as_ref())?;
            let loss = weighted_cross_entropy(&logits, &y, &w)?;
            let penalised = (&loss + (network.l2()? * config.l2)?)?;
            optimizer.backward_step(&penalised)?;
            epoch_loss += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        }
        let val_loss = weighted_cross_entropy(&network.forward(&x_val, None)?, &y_val, &w_val)?
            .to_scalar::<f32>()? as f64;
        progress(epoch, epoch_loss / train.inputs.len() as f64, val_loss);
        match &best {
            Some((loss, _, _)) if val_loss >= *loss => {
                if epoch - best.as_ref().map_or(0, |b| b.1) >= config.patience {
                    break;
                }
            }
            _ => best = Some((val_loss, epoch, network.export()?)),
        }
    }
    let (validation_loss, best_epoch, layers) =
        best.expect("at least one epoch ran. This is a bug");
    Ok(Fitted {
        layers,
        best_epoch,
        epochs,
        validation_loss,
    })
}

/// Fits a [`Calibration`] of `fitted` on held-out data by minimising the unweighted
/// log-loss of `softmax(scale × z + bias)`: a convex problem in (scale, bias), solved by
/// full-batch Adam.
pub fn calibrate(
    fitted: &Fitted,
    data: FitData<'_>,
    classes: usize,
) -> Result<Calibration, ModelError> {
    check(&data, classes, "calibration data")?;
    let device = Device::Cpu;
    let logits: Vec<Vec<f32>> = data.inputs.iter().map(|x| fitted.logits(x)).collect();
    let z = matrix(&logits, &device)?;
    let y = Tensor::from_vec(
        data.classes.iter().map(|&c| c as u32).collect::<Vec<_>>(),
        data.classes.len(),
        &device,
    )?;
    let ones = Tensor::ones(data.classes.len(), DType::F32, &device)?;
    let scale = Var::from_tensor(&Tensor::ones((), DType::F32, &device)?)?;
    let bias = Var::from_tensor(&Tensor::zeros(classes, DType::F32, &device)?)?;
    let mut optimizer = AdamW::new(
        vec![scale.clone(), bias.clone()],
        ParamsAdamW {
            lr: 0.02,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    for _ in 0..1500 {
        let calibrated = z
            .broadcast_mul(scale.as_tensor())?
            .broadcast_add(bias.as_tensor())?;
        let loss = weighted_cross_entropy(&calibrated, &y, &ones)?;
        optimizer.backward_step(&loss)?;
    }
    // Only differences between class offsets matter to a softmax: centre them.
    let mut bias: Vec<f32> = bias.as_tensor().to_vec1()?;
    let mean = bias.iter().sum::<f32>() / bias.len() as f32;
    for b in &mut bias {
        *b -= mean;
    }
    Ok(Calibration {
        scale: scale.as_tensor().to_scalar()?,
        bias,
    })
}

/// Softmax of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|z| (z - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two noisy Gaussian blobs in 8 dimensions, the positive class rarer.
    fn blobs(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = SplitMix64(seed);
        let mut inputs = Vec::new();
        let mut classes = Vec::new();
        for i in 0..n {
            let class = usize::from(i % 4 == 0);
            let centre = if class == 1 { 0.6 } else { -0.6 };
            let x: Vec<f32> = (0..8)
                .map(|d| {
                    let noise = (0..4).map(|_| rng.next_f32()).sum::<f32>() - 2.0;
                    if d < 2 { centre + noise } else { noise }
                })
                .collect();
            inputs.push(x);
            classes.push(class);
        }
        (inputs, classes)
    }

    fn data<'a>(inputs: &'a [Vec<f32>], classes: &'a [usize]) -> FitData<'a> {
        FitData {
            inputs,
            classes,
            weights: None,
        }
    }

    fn accuracy(fitted: &Fitted, inputs: &[Vec<f32>], classes: &[usize]) -> f64 {
        let right = inputs
            .iter()
            .zip(classes)
            .filter(|(x, c)| {
                let z = fitted.logits(x);
                usize::from(z[1] > z[0]) == **c
            })
            .count();
        right as f64 / classes.len() as f64
    }

    #[test]
    fn linear_and_mlp_heads_learn_and_are_deterministic() {
        let (x, y) = blobs(2000, 1);
        let (xv, yv) = blobs(500, 2);
        for hidden in [0, 16] {
            let config = FitConfig {
                hidden,
                learning_rate: 1e-2,
                max_epochs: 30,
                seed: 3,
                ..FitConfig::default()
            };
            let first = fit(data(&x, &y), data(&xv, &yv), 2, &config, |_, _, _| {}).unwrap();
            let again = fit(data(&x, &y), data(&xv, &yv), 2, &config, |_, _, _| {}).unwrap();
            assert_eq!(
                first, again,
                "hidden {hidden}: training is not deterministic"
            );
            assert_eq!(first.layers.len(), if hidden > 0 { 2 } else { 1 });
            // The Bayes rate here is about 0.88; class weighting trades a little accuracy for
            // recall of the rare class.
            let acc = accuracy(&first, &xv, &yv);
            assert!(acc > 0.8, "hidden {hidden}: accuracy {acc}");
            let other = fit(
                data(&x, &y),
                data(&xv, &yv),
                2,
                &FitConfig { seed: 4, ..config },
                |_, _, _| {},
            )
            .unwrap();
            assert_ne!(first.layers, other.layers, "the seed changes nothing");
        }
    }

    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        let (x, y) = blobs(300, 5);
        let (xv, yv) = blobs(300, 6);
        let mut losses = Vec::new();
        let fitted = fit(
            data(&x, &y),
            data(&xv, &yv),
            2,
            &FitConfig {
                hidden: 64,
                l2: 0.0,
                dropout: 0.0,
                learning_rate: 3e-2,
                max_epochs: 200,
                patience: 5,
                ..FitConfig::default()
            },
            |_, _, val| losses.push(val),
        )
        .unwrap();
        assert_eq!(losses.len(), fitted.epochs);
        assert!(fitted.epochs < 200, "an overfitting MLP never stopped");
        assert_eq!(fitted.epochs, fitted.best_epoch + 5);
        let best = losses.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(fitted.validation_loss, best);
        assert_eq!(losses[fitted.best_epoch - 1], best);
    }

    #[test]
    fn calibration_undoes_class_weighting_and_folds_into_the_head() {
        let (x, y) = blobs(3000, 7);
        let (xv, yv) = blobs(2000, 8);
        let fitted = fit(
            data(&x, &y),
            data(&xv, &yv),
            2,
            &FitConfig {
                learning_rate: 1e-2,
                max_epochs: 20,
                ..FitConfig::default()
            },
            |_, _, _| {},
        )
        .unwrap();
        // Balanced class weights push probabilities of the rare class (25%) up: the mean
        // predicted probability is above the base rate before calibration...
        let mean_p = |f: &Fitted| {
            xv.iter()
                .map(|x| softmax(&f.logits(x))[1] as f64)
                .sum::<f64>()
                / xv.len() as f64
        };
        let log_loss = |f: &Fitted| {
            xv.iter()
                .zip(&yv)
                .map(|(x, &c)| -f64::from(softmax(&f.logits(x))[c].max(1e-7)).ln())
                .sum::<f64>()
                / xv.len() as f64
        };
        assert!(mean_p(&fitted) > 0.28, "{}", mean_p(&fitted));
        let calibration = calibrate(&fitted, data(&xv, &yv), 2).unwrap();
        let calibrated = fitted.calibrated(&calibration);
        // ...and close to it after, with a better log-loss.
        let after = mean_p(&calibrated);
        assert!((after - 0.25).abs() < 0.02, "{after}");
        assert!(
            log_loss(&calibrated) < log_loss(&fitted) - 0.01,
            "{} -> {}",
            log_loss(&fitted),
            log_loss(&calibrated)
        );
        // The binary form gives the same probability through a sigmoid.
        let binary = calibrated.as_binary();
        for input in xv.iter().take(20) {
            let p2 = softmax(&calibrated.logits(input))[1];
            let z = binary.logits(input)[0];
            let p1 = 1.0 / (1.0 + (-z).exp());
            assert!((p1 - p2).abs() < 1e-5, "{p1} {p2}");
        }
    }

    #[test]
    fn bad_data_is_refused() {
        let x = vec![vec![0.0; 3]; 4];
        let y = vec![0, 1, 2, 0];
        let error = fit(
            data(&x, &y),
            data(&x, &y),
            2,
            &FitConfig::default(),
            |_, _, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("class 2 of 2"), "{error}");
        let error = fit(
            data(&x, &y[..3]),
            data(&x, &y),
            3,
            &FitConfig::default(),
            |_, _, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("4 inputs for 3"), "{error}");
    }
}
