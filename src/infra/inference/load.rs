//! Loading the configured model into a [`Scorer`]: fetching the default model if asked to,
//! opening the device, loading the encoder and the heads, and one warm-up batch. Never fails:
//! a model that cannot be loaded gives a scorer that says why, and decisions go on by the
//! rules alone, marked degraded.

use std::sync::Arc;

use super::{Description, HeadSet, Limits, ModelBackend, ModelFailure, ModelStatus, Scorer};
use crate::config::{DeviceSpec, ModelConfig, ModelPrecision, parse_device};
use crate::domain::LinkSignals;
use crate::infra::model::adapter::Adapter;
use crate::infra::model::heads::Heads;
use crate::infra::model::{Encoder, Forward, fetch, open_device};

/// Loads the configured model (fetching the default one first if it is missing and
/// `model.fetch_if_missing` says so) and starts its scorer. Never fails: a model that cannot
/// be loaded gives a scorer that says why, and decisions go on by the rules alone, marked
/// degraded.
pub async fn open_model(config: &ModelConfig) -> Scorer {
    if !config.enabled() {
        tracing::info!("no model configured (model.dir is empty): deciding by the rules alone");
        return Scorer::idle(ModelStatus::Off, Description::default());
    }
    let config = config.clone();
    tokio::task::spawn_blocking(move || load_model(&config))
        .await
        .unwrap_or_else(|error| {
            model_failed(
                ModelFailure::LoadPanicked(error.to_string()),
                Description::default(),
            )
        })
}

fn model_failed(reason: ModelFailure, description: Description) -> Scorer {
    tracing::error!(
        %reason,
        "the model is unavailable: deciding by the rules alone, verdicts marked degraded"
    );
    metrics::gauge!("modbot_model_up").set(0.0);
    Scorer::idle(ModelStatus::Failed(reason), description)
}

fn load_model(config: &ModelConfig) -> Scorer {
    let spec = parse_device(&config.device).unwrap_or(DeviceSpec::Cpu);
    let mut description = Description {
        device: spec.name(),
        encoder: config
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..Description::default()
    };
    let dir = &config.dir;
    if !fetch::is_present(dir) {
        if !config.fetch_if_missing {
            return model_failed(
                ModelFailure::Missing {
                    dir: dir.display().to_string(),
                },
                description,
            );
        }
        tracing::info!(dir = %dir.display(), "the model is missing: fetching the default model");
        if let Err(error) = fetch::fetch(dir, "python3") {
            return model_failed(
                ModelFailure::Fetch {
                    dir: dir.display().to_string(),
                    error: error.to_string(),
                },
                description,
            );
        }
    }
    let started = std::time::Instant::now();
    let device = match open_device(spec) {
        Ok(device) => device,
        Err(error) => {
            let failure = ModelFailure::Device {
                device: spec.name(),
                error: error.to_string(),
            };
            return model_failed(failure, description);
        }
    };
    let backend = match config.precision {
        ModelPrecision::F32 => Forward::Auto,
        ModelPrecision::Int8 => Forward::Int8,
    };
    let adapter = if config.adapter.as_os_str().is_empty() {
        None
    } else {
        match Adapter::load(&config.adapter) {
            Ok(adapter) => Some(adapter),
            Err(error) => {
                let failure = ModelFailure::Encoder {
                    dir: config.adapter.display().to_string(),
                    error: error.to_string(),
                };
                return model_failed(failure, description);
            }
        }
    };
    // An adapted encoder is another encoder: heads trained on it name it so (`modbot train
    // --adapter`), and so does the version of every verdict it scores.
    let adapted = adapter
        .as_ref()
        .map(|a| format!("+adapter@{}", &a.sha256()[..12]))
        .unwrap_or_default();
    let encoder = match Encoder::load_adapted(dir, &device, backend, adapter.as_ref()) {
        Ok(encoder) => encoder,
        Err(error) => {
            let failure = ModelFailure::Encoder {
                dir: dir.display().to_string(),
                error: error.to_string(),
            };
            return model_failed(failure, description);
        }
    };
    // One full-size batch before the first message: pages the weights in, starts the thread
    // pools and grows the forward pass's scratch buffers to the batch budget, so no caller
    // pays for it.
    let warm_text = "warming up the encoder before the first chat message arrives";
    let warm_batch =
        (config.max_batch_tokens as usize / 16).clamp(1, config.max_batch_messages as usize);
    if let Err(error) = encoder.embed(&vec![warm_text; warm_batch]) {
        return model_failed(ModelFailure::FirstPass(error.to_string()), description);
    }
    description.embedding_dim = encoder.dim();
    description.max_tokens = encoder.max_tokens();
    let hash = match fetch::sha256_file(&dir.join("model.safetensors")) {
        Ok(hash) => hash,
        Err(error) => return model_failed(ModelFailure::Weights(error.to_string()), description),
    };
    // Int8 scores differ from f32 ones a little: the version says which produced a verdict.
    let precision = if encoder.is_int8() { "/int8" } else { "" };
    description.version = format!(
        "{}@{}{adapted}{precision}",
        description.encoder,
        &hash[..12]
    );
    description.encoder.push_str(&adapted);
    let heads = match Heads::load(&config.heads_dir, encoder.dim()) {
        Ok(heads) => heads,
        Err(error) => {
            return model_failed(ModelFailure::Heads(error.to_string()), description);
        }
    };
    if heads.is_empty() {
        tracing::warn!(
            heads_dir = %config.heads_dir.display(),
            "the encoder is loaded but there are no classification heads: deciding by the rules \
             alone until a head set is promoted (`modbot train` makes heads)"
        );
    } else if !heads.encoder.is_empty() && heads.encoder != description.encoder {
        tracing::warn!(
            heads_encoder = %heads.encoder,
            encoder = %description.encoder,
            "the heads were trained on another encoder's embeddings"
        );
    }
    let active = HeadSet::new(&description.version, heads.clone());
    tracing::info!(
        version = %active.version,
        device = %description.device,
        forward = %encoder.backend(),
        labels = ?heads.label_names(),
        elapsed = ?started.elapsed(),
        "model loaded"
    );
    // The heads' lexical inputs build their tables on first use (VADER's lexicons): here,
    // not on the first chat message.
    heads.lexical(warm_text, &LinkSignals::default());
    let backend = ModelBackend::new(encoder);
    Scorer::start(
        Arc::new(backend),
        description,
        active,
        Limits::from_config(config),
    )
}
