//! The encoder on the real default model (fetched by `modbot fetch-model`, which the test
//! script runs first): against sentence-transformers' committed reference, and the packed CPU
//! forward pass (what `Encoder::load` uses on the CPU) against candle's padded `BertModel`.

use std::path::{Path, PathBuf};

use candle_core::Device;
use modbot::infra::model::{Encoder, Forward, ModelError, PoolingMode};

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
    if !modbot::infra::model::fetch::is_present(&dir) {
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

/// The default model on candle's padded forward pass (the packed path's reference).
fn candle_encoder() -> Encoder {
    let encoder = Encoder::load_with(&model_dir(), &Device::Cpu, Forward::Candle)
        .expect("the default model loads on candle");
    assert_eq!(encoder.backend(), "candle");
    encoder
}

/// Largest element-wise difference.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
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
fn the_encoder_can_move_to_and_be_shared_with_a_model_thread() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Encoder>();
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
    assert!(
        encoder.backend().starts_with("cpu-packed"),
        "the CPU encoder runs the packed forward pass, not {}",
        encoder.backend()
    );
    // Both forward passes, as one batch (packed, or padded to the longest) and one by one: all
    // must match.
    let mut worst = (1f64, 0f32);
    for encoder in [encoder, candle_encoder()] {
        let batched = encoder.embed(&texts).unwrap();
        for ((text, got), expected) in texts.iter().zip(&batched).zip(&reference.embeddings) {
            let alone = &encoder.embed(&[text]).unwrap()[0];
            for ours in [got, alone] {
                let cos = cosine(ours, expected);
                let max_diff = max_abs_diff(ours, expected);
                let backend = encoder.backend();
                assert!(cos >= 0.9999, "{backend} {text:?}: cosine {cos}");
                assert!(
                    max_diff <= 1e-4,
                    "{backend} {text:?}: max abs diff {max_diff}"
                );
                worst = (worst.0.min(cos), worst.1.max(max_diff));
            }
        }
    }
    eprintln!(
        "vs sentence-transformers: worst cosine {}, worst max abs diff {:e}",
        worst.0, worst.1
    );
}

/// Chat lines of mixed lengths (the corpus: emotes, links, zalgo, floods), plus a line truncated
/// at 256 tokens and an empty one (`[CLS] [SEP]`).
fn chat_batch(encoder: &Encoder) -> Vec<Vec<u32>> {
    let mut texts: Vec<String> = modbot::corpus::generate(7, 120)
        .into_iter()
        .map(|m| m.text)
        .collect();
    texts.insert(17, "spam ".repeat(400));
    texts.push(String::new());
    let tokens: Vec<Vec<u32>> = texts.iter().map(|t| encoder.tokenize(t).unwrap()).collect();
    let lengths: Vec<usize> = tokens.iter().map(Vec::len).collect();
    assert_eq!(lengths.iter().min(), Some(&2));
    assert_eq!(lengths.iter().max(), Some(&256));
    assert!(
        lengths.iter().filter(|&&n| n > 24).count() >= 5,
        "a mix of lengths: {lengths:?}"
    );
    tokens
}

#[test]
fn the_packed_forward_pass_agrees_with_candle_on_chat_lines() {
    let Some(packed) = encoder("the_packed_forward_pass_agrees_with_candle_on_chat_lines") else {
        return;
    };
    assert!(
        packed.backend().starts_with("cpu-packed"),
        "{}",
        packed.backend()
    );
    let candle = candle_encoder();
    let batch = chat_batch(&packed);
    let ours = packed.embed_tokens(&batch).unwrap();
    let reference = candle.embed_tokens(&batch).unwrap();
    assert_eq!(ours.len(), batch.len());
    let mut worst = (1f64, 0f32);
    for ((tokens, a), b) in batch.iter().zip(&ours).zip(&reference) {
        let cos = cosine(a, b);
        let diff = max_abs_diff(a, b);
        assert!(cos >= 0.9999, "{} tokens: cosine {cos}", tokens.len());
        assert!(diff <= 1e-4, "{} tokens: max abs diff {diff}", tokens.len());
        worst = (worst.0.min(cos), worst.1.max(diff));
    }
    eprintln!(
        "packed vs candle over {} lines: worst cosine {}, worst max abs diff {:e}",
        batch.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn packing_does_not_leak_between_sequences() {
    let Some(packed) = encoder("packing_does_not_leak_between_sequences") else {
        return;
    };
    let batch = chat_batch(&packed);
    let together = packed.embed_tokens(&batch).unwrap();
    // The same lines in reverse order, so every line has different neighbours.
    let reversed: Vec<Vec<u32>> = batch.iter().rev().cloned().collect();
    let mut backwards = packed.embed_tokens(&reversed).unwrap();
    backwards.reverse();
    let mut worst = 0f32;
    for ((tokens, in_batch), in_reverse) in batch.iter().zip(&together).zip(&backwards) {
        let alone = &packed.embed_tokens(std::slice::from_ref(tokens)).unwrap()[0];
        for other in [alone, in_reverse] {
            let diff = max_abs_diff(in_batch, other);
            assert!(
                diff <= 1e-5,
                "{} tokens: the batch changed the embedding by {diff}",
                tokens.len()
            );
            worst = worst.max(diff);
        }
    }
    eprintln!("batched vs alone: worst max abs diff {worst:e}");
}

#[test]
fn batches_bigger_than_one_packed_chunk_are_split_correctly() {
    let Some(packed) = encoder("batches_bigger_than_one_packed_chunk_are_split_correctly") else {
        return;
    };
    // 12 copies of a 256-token line and some short ones: over MAX_CHUNK_TOKENS (2,048).
    let long = packed.tokenize(&"chat ".repeat(300)).unwrap();
    let short = packed.tokenize("hello there").unwrap();
    let batch: Vec<Vec<u32>> = (0..14)
        .map(|i| {
            if i % 7 == 3 {
                short.clone()
            } else {
                long.clone()
            }
        })
        .collect();
    assert!(
        batch.iter().map(Vec::len).sum::<usize>() > modbot::infra::model::packed::MAX_CHUNK_TOKENS
    );
    let got = packed.embed_tokens(&batch).unwrap();
    let want_long = &packed.embed_tokens(std::slice::from_ref(&long)).unwrap()[0];
    let want_short = &packed.embed_tokens(std::slice::from_ref(&short)).unwrap()[0];
    for (tokens, v) in batch.iter().zip(&got) {
        let want = if tokens.len() == long.len() {
            want_long
        } else {
            want_short
        };
        assert!(max_abs_diff(v, want) <= 1e-5);
    }
}

#[test]
fn token_ids_outside_the_vocabulary_are_an_error_not_a_panic() {
    let Some(packed) = encoder("token_ids_outside_the_vocabulary_are_an_error_not_a_panic") else {
        return;
    };
    let error = packed
        .embed_tokens(&[vec![101, 4_000_000, 102]])
        .expect_err("id outside the vocabulary");
    assert!(matches!(error, ModelError::Input(_)), "{error}");
    let error = packed
        .embed_tokens(&[vec![101; 513]])
        .expect_err("longer than the position table");
    assert!(matches!(error, ModelError::Input(_)), "{error}");
}

/// The default model with int8 linear layers, or `None` when this CPU cannot run them. Loaded
/// once for the tests that use it: its calibration is slow in a debug build.
///
/// Where the CPU lacks AVX-512 VNNI the test does not just skip: it checks the documented
/// fallback instead (the encoder loads, runs in f32, says so in its backend, and embeds
/// exactly as the f32 encoder does), then says clearly what was and was not tested.
fn int8_encoder(test: &str, f32_encoder: &Encoder) -> Option<&'static Encoder> {
    static INT8: std::sync::OnceLock<Encoder> = std::sync::OnceLock::new();
    let encoder = INT8.get_or_init(|| {
        Encoder::load_with(&model_dir(), &Device::Cpu, Forward::Int8)
            .expect("the default model loads in int8")
    });
    if encoder.is_int8() {
        assert!(modbot::infra::model::int8::supported());
        assert!(
            encoder.backend().ends_with("+int8"),
            "{}",
            encoder.backend()
        );
        return Some(encoder);
    }
    assert!(
        !modbot::infra::model::int8::supported(),
        "this CPU has AVX-512 VNNI but the default model did not load in int8 ({})",
        encoder.backend()
    );
    assert!(!encoder.backend().contains("int8"), "{}", encoder.backend());
    let batch = chat_batch(f32_encoder);
    assert_eq!(
        encoder.embed_tokens(&batch).unwrap(),
        f32_encoder.embed_tokens(&batch).unwrap(),
        "the int8 fallback must embed exactly as f32"
    );
    eprintln!(
        "FALLBACK CHECKED {test}: this CPU cannot run int8 ({}), so model.precision = \"int8\" \
         loads f32: verified to embed {} lines exactly as f32; the int8 kernel itself was NOT \
         tested on this machine",
        modbot::infra::model::int8::cpu_features(),
        batch.len()
    );
    None
}

#[test]
fn the_int8_forward_pass_stays_close_to_f32() {
    let Some(f32_encoder) = encoder("the_int8_forward_pass_stays_close_to_f32") else {
        return;
    };
    let Some(int8) = int8_encoder("the_int8_forward_pass_stays_close_to_f32", &f32_encoder) else {
        return;
    };
    let batch = chat_batch(&f32_encoder);
    let exact = f32_encoder.embed_tokens(&batch).unwrap();
    let approx = int8.embed_tokens(&batch).unwrap();
    let mut cosines: Vec<f64> = exact
        .iter()
        .zip(&approx)
        .map(|(a, b)| cosine(a, b))
        .collect();
    for (tokens, cos) in batch.iter().zip(&cosines) {
        assert!(*cos >= 0.99, "{} tokens: int8 cosine {cos}", tokens.len());
    }
    cosines.sort_by(f64::total_cmp);
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    assert!(mean >= 0.997, "mean int8 cosine {mean}");
    // What the heads see: which of the other lines is nearest must (nearly) never change.
    let nearest = |v: &[Vec<f32>], i: usize| {
        (0..v.len())
            .filter(|&j| j != i && batch[j] != batch[i])
            .max_by(|&p, &q| cosine(&v[i], &v[p]).total_cmp(&cosine(&v[i], &v[q])))
    };
    let moved = (0..batch.len())
        .filter(|&i| nearest(&exact, i) != nearest(&approx, i))
        .count();
    assert!(
        moved * 10 <= batch.len(),
        "{moved} of {} lines changed nearest neighbour",
        batch.len()
    );
    eprintln!(
        "int8 vs f32 over {} lines: worst cosine {}, mean {mean}, nearest neighbour changed {moved}",
        batch.len(),
        cosines[0]
    );
}

#[test]
fn int8_embeddings_do_not_depend_on_the_batch_at_all() {
    let Some(f32_encoder) = encoder("int8_embeddings_do_not_depend_on_the_batch_at_all") else {
        return;
    };
    let Some(int8) = int8_encoder(
        "int8_embeddings_do_not_depend_on_the_batch_at_all",
        &f32_encoder,
    ) else {
        return;
    };
    // Activations are quantised per token and the sums are exact integers, so a line's
    // embedding is the same bits alone, in a batch, and among other neighbours.
    let batch = chat_batch(int8);
    let together = int8.embed_tokens(&batch).unwrap();
    let reversed: Vec<Vec<u32>> = batch.iter().rev().cloned().collect();
    let mut backwards = int8.embed_tokens(&reversed).unwrap();
    backwards.reverse();
    for (i, ((tokens, in_batch), in_reverse)) in
        batch.iter().zip(&together).zip(&backwards).enumerate()
    {
        assert_eq!(in_batch, in_reverse, "{} tokens reversed", tokens.len());
        // Alone: every fifth line, and the longest (a debug build's int8 kernel is slow).
        if i % 5 == 0 || tokens.len() == 256 {
            let alone = &int8.embed_tokens(std::slice::from_ref(tokens)).unwrap()[0];
            assert_eq!(in_batch, alone, "{} tokens alone", tokens.len());
        }
    }
}

/// A small two-label task on chat lines, as the adapter trains on it: the token vectors
/// entering the top layer, from the frozen encoder.
fn adapter_examples(
    encoder: &Encoder,
    top: &modbot::infra::model::adapter::TopLayer,
) -> (
    Vec<modbot::infra::model::adapter::TuneExample>,
    Vec<modbot::infra::model::adapter::TuneExample>,
) {
    let positive = [
        "i will find you after stream",
        "you better watch your back tonight",
        "someone should hurt this guy",
        "i know where you live",
        "hope your car crashes",
        "wait until i see you irl",
        "you are going to regret this",
        "meet me outside and see what happens",
    ];
    let negative = [
        "that play was insane",
        "what game is this",
        "gg everyone see you tomorrow",
        "the music is too loud",
        "anyone watching the debate later",
        "this map is my favourite",
        "lol the chat is wild today",
        "can you check the settings",
    ];
    let mut train = Vec::new();
    let mut validation = Vec::new();
    for (i, (text, positive)) in positive
        .iter()
        .map(|t| (*t, true))
        .chain(negative.iter().map(|t| (*t, false)))
        .enumerate()
    {
        let tokens = encoder.tokenize(text).expect("tokenizes");
        let rows = encoder
            .states(&[tokens], top.index())
            .expect("states")
            .remove(0);
        let example = modbot::infra::model::adapter::TuneExample {
            rows,
            // Two probes: the second task sees the same lines with the label flipped.
            task: i % 2,
            positive: positive != (i % 2 == 1),
            weight: 1.0,
        };
        if i % 4 == 3 {
            validation.push(example);
        } else {
            train.push(example);
        }
    }
    (train, validation)
}

#[test]
fn an_adapter_trains_deterministically_and_the_adapted_encoder_computes_it_merged() {
    use modbot::infra::model::adapter::{Adapter, TopLayer, TuneConfig, tune};
    let Some(encoder) = encoder("an_adapter_trains_deterministically_…") else {
        return;
    };
    let top = TopLayer::load(&model_dir()).expect("the top layer loads");
    assert_eq!(top.index(), 5, "MiniLM-L6's top layer");
    let (train, validation) = adapter_examples(&encoder, &top);

    // The autograd copy of the top layer is the encoder's: frozen, it gives its embeddings.
    let texts_tokens: Vec<Vec<u32>> = ["i know where you live", "can you check the settings"]
        .iter()
        .map(|t| encoder.tokenize(t).expect("tokenizes"))
        .collect();
    let frozen_states = encoder.states(&texts_tokens, top.index()).expect("states");
    let frozen = top.embed_states(&frozen_states, None).expect("forward");
    let expected = encoder.embed_tokens(&texts_tokens).expect("embeds");
    for (a, b) in frozen.iter().zip(&expected) {
        assert!(max_abs_diff(a, b) < 1e-4, "the frozen top layer differs");
    }

    let config = TuneConfig {
        rank: 4,
        probe_epochs: 1,
        max_epochs: 2,
        patience: 2,
        batch_size: 4,
        learning_rate: 1e-2,
        seed: 7,
        ..TuneConfig::default()
    };
    let first = tune(&top, 2, &train, &validation, &config, |_| {}).expect("trains");
    let second = tune(&top, 2, &train, &validation, &config, |_| {}).expect("trains");
    assert_eq!(first.epochs.len(), 3);
    assert!(!first.epochs[0].adapter && first.epochs[1].adapter);
    assert_eq!(first.tuned_logits.len(), validation.len());
    assert_eq!(first.frozen_logits.len(), validation.len());
    let last = first.epochs.last().expect("epochs");
    assert!(
        last.train_loss < first.epochs[0].train_loss,
        "the adapter lowers the training loss: {:?}",
        first.epochs
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    first.adapter.save(&one).expect("saves");
    second.adapter.save(&two).expect("saves");
    assert_eq!(
        std::fs::read(one.join("adapter.safetensors")).expect("reads"),
        std::fs::read(two.join("adapter.safetensors")).expect("reads"),
        "the same data and seed train byte-identical factors"
    );

    // Merged into the weights, the adapter computes what the unmerged factors compute, on
    // both forward passes; and it changes the embeddings.
    let adapter = Adapter::load(&one).expect("loads");
    assert_eq!(adapter.manifest.targets.len(), 4);
    let packed = Encoder::load_adapted(&model_dir(), &Device::Cpu, Forward::Auto, Some(&adapter))
        .expect("the adapted encoder loads");
    assert!(packed.backend().starts_with("cpu-packed"));
    let padded = Encoder::load_adapted(&model_dir(), &Device::Cpu, Forward::Candle, Some(&adapter))
        .expect("the adapted encoder loads on candle");
    let tokens: Vec<Vec<u32>> = chat_batch(&encoder);
    let states = encoder.states(&tokens, top.index()).expect("states");
    let want = top.embed_states(&states, Some(&adapter)).expect("forward");
    let got_packed = packed.embed_tokens(&tokens).expect("embeds");
    let got_padded = padded.embed_tokens(&tokens).expect("embeds");
    let plain = encoder.embed_tokens(&tokens).expect("embeds");
    let mut moved = 0f32;
    for i in 0..tokens.len() {
        assert!(
            max_abs_diff(&got_packed[i], &want[i]) < 1e-4,
            "packed line {i}"
        );
        assert!(
            max_abs_diff(&got_padded[i], &want[i]) < 1e-4,
            "candle line {i}"
        );
        moved = moved.max(max_abs_diff(&got_packed[i], &plain[i]));
    }
    assert!(moved > 1e-3, "the adapter changes the embeddings ({moved})");

    // An adapter made for other weights, or with a manifest this build cannot read, is
    // refused with the reason.
    let manifest_path = one.join("adapter.json");
    let original = std::fs::read_to_string(&manifest_path).expect("reads");
    let mut other = adapter.clone();
    other.manifest.base_sha256 = "0".repeat(64);
    let error = Encoder::load_adapted(&model_dir(), &Device::Cpu, Forward::Auto, Some(&other))
        .expect_err("other weights are refused");
    assert!(
        error
            .to_string()
            .contains("trained on encoder weights 000000000000"),
        "{error}"
    );
    std::fs::write(
        &manifest_path,
        original.replace("\"format\": 1", "\"format\": 9"),
    )
    .expect("writes");
    let error = Adapter::load(&one).expect_err("an unknown format is refused");
    assert!(error.to_string().contains("format 9"), "{error}");
    std::fs::remove_file(two.join("adapter.safetensors")).expect("removes");
    let error = Adapter::load(&two).expect_err("missing factors are refused");
    assert!(error.to_string().contains("adapter.safetensors"), "{error}");
}
