//! The encoder on the real default model (fetched by `modbot fetch-model`, which the test
//! script runs first).

use std::path::{Path, PathBuf};

use candle_core::Device;
use modbot::model::{Encoder, ModelError, PoolingMode};

/// Set by `.ci/run`: a missing model is then a failure, not a skip.
const REQUIRE_MODEL_ENV: &str = "MODBOT_TEST_REQUIRE_MODEL";

fn model_dir() -> PathBuf {
    std::env::var_os("MODBOT_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"))
}

/// The default model, or `None` (after saying the test is skipped) when it was not fetched.
fn encoder(test: &str) -> Option<Encoder> {
    let dir = model_dir();
    if !modbot::model::fetch::is_present(&dir) {
        assert!(
            std::env::var_os(REQUIRE_MODEL_ENV).is_none(),
            "{REQUIRE_MODEL_ENV} is set but no model is in {} (run `modbot fetch-model`)",
            dir.display()
        );
        eprintln!(
            "SKIPPED {test}: no model in {} (run `modbot fetch-model`)",
            dir.display()
        );
        return None;
    }
    Some(Encoder::load(&dir, &Device::Cpu).expect("the default model loads"))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn the_default_model_loads_as_its_directory_says() {
    let Some(encoder) = encoder("the_default_model_loads_as_its_directory_says") else {
        return;
    };
    assert_eq!(encoder.dim(), 384);
    assert_eq!(
        encoder.max_tokens(),
        256,
        "sentence_bert_config.json's max_seq_length"
    );
    assert_eq!(encoder.pooling().mode, PoolingMode::Mean);
    assert!(
        encoder.pooling().normalize,
        "modules.json has a Normalize module"
    );
    let long = "word ".repeat(400);
    assert_eq!(
        encoder.tokenize(&long).unwrap().len(),
        256,
        "long inputs are truncated"
    );
    assert_eq!(
        encoder.tokenize("hello chat").unwrap().len(),
        4,
        "[CLS] hello chat [SEP], no padding"
    );
}

#[test]
fn embeddings_are_unit_length_and_independent_of_the_batch() {
    let Some(encoder) = encoder("embeddings_are_unit_length_and_independent_of_the_batch") else {
        return;
    };
    let texts = [
        "hi",
        "free nitro for everyone who clicks this link right now",
        "PepeLaugh OMEGALUL",
        "what a great play by the team, that was honestly incredible to watch live",
    ];
    let batched = encoder.embed(&texts).unwrap();
    for (text, in_batch) in texts.iter().zip(&batched) {
        let norm: f64 = in_batch
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text}: norm {norm}");
        let alone = &encoder.embed(&[text]).unwrap()[0];
        let diff = alone
            .iter()
            .zip(in_batch)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-5,
            "{text}: padding changed the embedding by {diff}"
        );
    }
    assert!(encoder.embed(&[]).unwrap().is_empty());
}

#[test]
fn similar_messages_are_close() {
    let Some(encoder) = encoder("similar_messages_are_close") else {
        return;
    };
    let v = encoder
        .embed(&[
            "free nitro giveaway click here",
            "claim your free discord nitro now",
            "what a great play",
        ])
        .unwrap();
    assert!(
        cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2,
        "{} vs {}",
        cosine(&v[0], &v[1]),
        cosine(&v[0], &v[2])
    );
}

#[test]
fn a_model_directory_missing_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let error = Encoder::load(dir.path(), &Device::Cpu).expect_err("no weights");
    assert!(
        matches!(&error, ModelError::Missing(path) if path.ends_with("model.safetensors")),
        "{error}"
    );
}

/// The committed reference: sentence-transformers (PyTorch, CPU) on the same weights, made by
/// `python3 scripts/reference_embeddings.py`.
#[derive(serde::Deserialize)]
struct Reference {
    sentences: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

#[test]
fn embeddings_match_sentence_transformers() {
    let Some(encoder) = encoder("embeddings_match_sentence_transformers") else {
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(reference.sentences.len() >= 8);
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    for (text, expected) in texts.iter().zip(&reference.token_ids) {
        assert_eq!(
            &encoder.tokenize(text).unwrap(),
            expected,
            "tokens of {text:?}"
        );
    }
    // As one batch (padded to the longest) and one by one: both must match.
    let batched = encoder.embed(&texts).unwrap();
    for ((text, got), expected) in texts.iter().zip(&batched).zip(&reference.embeddings) {
        let alone = &encoder.embed(&[text]).unwrap()[0];
        for candle in [got, alone] {
            let cos = cosine(candle, expected);
            let max_diff = candle
                .iter()
                .zip(expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(cos >= 0.9999, "{text:?}: cosine {cos}");
            assert!(max_diff <= 1e-4, "{text:?}: max abs diff {max_diff}");
        }
    }
}
