//! modbot's encoder path: messages/s for all-MiniLM-L6-v2 on chat lines, tokenisation
//! included, f32, on the CPU, for both forward passes: candle's `BertModel` (each batch padded
//! to its longest member) and the packed, padding-free one `Encoder::load` uses on the CPU.
//!
//! ```text
//! cargo run --release -- fetch-model          # once
//! cargo bench --bench encoder -- [--lines N] [--batches 1,8,32,128,256,512]
//!     [--candle-max-batch 128] [--write-lines FILE] [--peak]
//! ```
//!
//! The lines are `corpus::generate(42, N)` (default 2,000). Each batch size is measured in
//! arrival order (batches of consecutive lines) and length-sorted (all lines sorted by token
//! count first, so a batch's members have similar lengths), after a warm-up. candle is measured
//! only up to `--candle-max-batch` (bigger padded batches only get slower; 0 skips candle, for a
//! clean profile of the packed path). `--write-lines FILE`
//! also writes the lines, one per line, for the PyTorch peer (`benches/pytorch_peer.py --lines
//! FILE`), so both measure the same text. Threads: both use rayon's pool (`RAYON_NUM_THREADS`,
//! all cores by default).
//!
//! The packed rows also show the GEMM-equivalent GFLOP/s reached (the model's multiply-adds
//! over real tokens, ×2, attention included, per second). `--peak` first measures the `gemm`
//! crate alone on the encoder's own shapes (T = 1,792 rows: a batch of 128 chat lines), the
//! practical f32 ceiling for that figure on this machine.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use modbot::infra::model::{Encoder, Forward};

struct Args {
    lines: usize,
    batches: Vec<usize>,
    candle_max_batch: usize,
    write_lines: Option<String>,
    peak: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        lines: 2000,
        batches: vec![1, 8, 32, 128, 256, 512],
        candle_max_batch: 128,
        write_lines: None,
        peak: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--lines" => args.lines = value().parse().expect("--lines N"),
            "--batches" => {
                args.batches = value()
                    .split(',')
                    .map(|b| b.trim().parse().expect("--batches 1,8,32"))
                    .collect();
            }
            "--write-lines" => args.write_lines = Some(value()),
            "--candle-max-batch" => {
                args.candle_max_batch = value().parse().expect("--candle-max-batch N");
            }
            "--peak" => args.peak = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// Messages per second embedding `order` (indices into `texts`) in batches of `size`.
fn measure(encoder: &Encoder, texts: &[String], order: &[usize], size: usize) -> f64 {
    let started = Instant::now();
    for chunk in order.chunks(size) {
        // Tokenisation counts: it is part of the path a message takes.
        let batch: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&i| encoder.tokenize(&texts[i]).expect("tokenize"))
            .collect();
        std::hint::black_box(encoder.embed_tokens(&batch).expect("embed"));
    }
    order.len() as f64 / started.elapsed().as_secs_f64()
}

/// Multiply-adds ×2 of one forward pass over a sequence of `len` tokens (all-MiniLM-L6-v2:
/// 6 layers, hidden 384, FFN 1536): the four linear layers per token, plus QKᵀ and PV.
fn flops(len: usize) -> f64 {
    let (layers, h, i) = (6.0, 384.0, 1536.0);
    let len = len as f64;
    layers * (2.0 * len * (h * 3.0 * h + h * h + 2.0 * h * i) + 4.0 * len * len * h)
}

/// The `gemm` crate alone on the encoder's shapes, GFLOP/s (best of several runs).
fn gemm_peak() {
    let threads = rayon::current_num_threads();
    let t = 1792;
    println!("gemm f32 on the encoder's shapes, T = {t} rows, rayon threads {threads}:");
    let mut total_flops = 0.0;
    let mut total_secs = 0.0;
    for (k, n, what) in [
        (384, 1152, "QKV"),
        (384, 384, "attention output"),
        (384, 1536, "FFN up"),
        (1536, 384, "FFN down"),
    ] {
        let x: Vec<f32> = (0..t * k).map(|i| (i % 17) as f32 * 0.01).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let mut out = vec![0f32; t * n];
        let run = |out: &mut [f32], par: gemm::Parallelism| {
            // SAFETY: sizes as allocated above; row-major x and out, w read transposed.
            unsafe {
                gemm::gemm(
                    t,
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
                    par,
                )
            }
        };
        let mut line = format!("  {what:<17} {t}x{k} · {k}x{n}:");
        for (name, par) in [
            ("1 thread", gemm::Parallelism::None),
            ("all", gemm::Parallelism::Rayon(threads)),
        ] {
            let mut best = f64::MAX;
            for _ in 0..20 {
                let started = Instant::now();
                run(&mut out, par);
                best = best.min(started.elapsed().as_secs_f64());
            }
            let gflops = 2.0 * (t * n * k) as f64 / best / 1e9;
            line += &format!(" {gflops:7.1} GFLOP/s ({name})");
            if name == "all" {
                total_flops += 2.0 * (t * n * k) as f64;
                total_secs += best;
            }
        }
        println!("{line}");
    }
    println!(
        "  one layer's four GEMMs together: {:.1} GFLOP/s (all threads)",
        total_flops / total_secs / 1e9
    );
}

fn main() {
    let args = parse_args();
    println!("cpu: {}", cpu_features());
    if args.peak {
        gemm_peak();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let encoder = Encoder::load(&dir, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e} (run `cargo run --release -- fetch-model` first)"));
    let candle = (args.candle_max_batch > 0)
        .then(|| Encoder::load_with(&dir, &Device::Cpu, Forward::Candle).expect("candle loads"));
    // The int8 packed forward, when this CPU runs it (AVX-512 VNNI).
    let int8 = Some(Encoder::load_with(&dir, &Device::Cpu, Forward::Int8).expect("int8 loads"))
        .filter(Encoder::is_int8);
    let texts: Vec<String> = modbot::corpus::generate(42, args.lines)
        .into_iter()
        .map(|m| m.text)
        .collect();
    if let Some(path) = &args.write_lines {
        let body: String = texts
            .iter()
            .map(|t| format!("{}\n", t.replace('\n', " ")))
            .collect();
        std::fs::write(path, body).expect("write the lines");
    }
    let tokens: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| encoder.tokenize(t).expect("tokenize"))
        .collect();
    let mean_tokens = tokens.iter().map(Vec::len).sum::<usize>() as f64 / tokens.len() as f64;
    let arrival: Vec<usize> = (0..texts.len()).collect();
    let mut sorted = arrival.clone();
    sorted.sort_by_key(|&i| tokens[i].len());

    let total_flops: f64 = tokens.iter().map(|t| flops(t.len())).sum();

    // Warm-up: page in the weights, size the allocator, the scratch and the thread pool.
    if let Some(candle) = &candle {
        measure(candle, &texts, &arrival[..texts.len().min(256)], 32);
    }
    measure(&encoder, &texts, &arrival[..texts.len().min(256)], 32);
    if let Some(int8) = &int8 {
        measure(int8, &texts, &arrival[..texts.len().min(256)], 32);
        agreement(&encoder, int8, &texts);
    }

    println!(
        "encoder: all-MiniLM-L6-v2, {} lines of {mean_tokens:.1} tokens on average, rayon threads {}, \
         packed backend {}, load average {}",
        texts.len(),
        rayon::current_num_threads(),
        encoder.backend(),
        load_average(),
    );
    println!(
        "{:>6}  {:>14}  {:>14}  {:>14}  {:>14}  {:>13}  {:>12}  {:>12}  {:>10}",
        "batch",
        "candle arr/s",
        "candle sort/s",
        "packed arr/s",
        "packed sort/s",
        "packed GFLOP/s",
        "int8 arr/s",
        "int8 sort/s",
        "int8/f32"
    );
    let mut best = (0.0f64, 0usize, "");
    let mut best_int8 = (0.0f64, 0usize, "");
    for &size in &args.batches {
        let (candle_in_order, candle_by_length) = match &candle {
            Some(candle) if size <= args.candle_max_batch => {
                let a = measure(candle, &texts, &arrival, size);
                let s = measure(candle, &texts, &sorted, size);
                (format!("{a:.1}"), format!("{s:.1}"))
            }
            _ => ("-".to_owned(), "-".to_owned()),
        };
        let in_order = measure(&encoder, &texts, &arrival, size);
        let by_length = measure(&encoder, &texts, &sorted, size);
        for (rate, order) in [(in_order, "arrival"), (by_length, "sorted")] {
            if rate > best.0 {
                best = (rate, size, order);
            }
        }
        let gflops = total_flops / (texts.len() as f64 / in_order.max(by_length)) / 1e9;
        let (int8_in_order, int8_by_length, ratio) = match &int8 {
            Some(int8) => {
                let a = measure(int8, &texts, &arrival, size);
                let s = measure(int8, &texts, &sorted, size);
                for (rate, order) in [(a, "arrival"), (s, "sorted")] {
                    if rate > best_int8.0 {
                        best_int8 = (rate, size, order);
                    }
                }
                let ratio = a.max(s) / in_order.max(by_length);
                (format!("{a:.1}"), format!("{s:.1}"), format!("{ratio:.2}x"))
            }
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        println!(
            "{size:>6}  {candle_in_order:>14}  {candle_by_length:>14}  {in_order:>14.1}  {by_length:>14.1}  {gflops:>13.1}  {int8_in_order:>12}  {int8_by_length:>12}  {ratio:>10}"
        );
    }
    println!(
        "packed best: {:.1} messages/s (batch {}, {}); load average {}",
        best.0,
        best.1,
        best.2,
        load_average()
    );
    if int8.is_some() {
        println!(
            "int8 best: {:.1} messages/s (batch {}, {}) = {:.2}x packed f32's best",
            best_int8.0,
            best_int8.1,
            best_int8.2,
            best_int8.0 / best.0
        );
    }
}

/// How close the int8 embeddings are to the f32 ones, on the normalised lines (what the server
/// embeds): cosine (both are unit vectors), how often a line's nearest neighbour among the
/// first 500 is the same, and, with the committed heads (`models/heads`), how often a label's
/// decision (probability at or above its threshold) differs and by how much a probability
/// moves.
fn agreement(f32_encoder: &Encoder, int8: &Encoder, texts: &[String]) {
    use modbot::engine::normalize::{EmoteSet, normalize};
    use modbot::infra::model::heads::Heads;
    let emotes = EmoteSet::new(modbot::corpus::default_emotes());
    let normalized: Vec<String> = texts.iter().map(|t| normalize(t, &emotes).text).collect();
    let embed = |e: &Encoder| -> Vec<Vec<f32>> {
        normalized
            .chunks(128)
            .flat_map(|c| {
                let batch: Vec<&str> = c.iter().map(String::as_str).collect();
                e.embed(&batch).expect("embed")
            })
            .collect()
    };
    let (a, b) = (embed(f32_encoder), embed(int8));
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    let mut cos: Vec<f32> = a.iter().zip(&b).map(|(x, y)| dot(x, y)).collect();
    cos.sort_by(f32::total_cmp);
    let n = a.len().min(500);
    let nearest = |v: &[Vec<f32>], i: usize| {
        (0..n)
            .filter(|&j| j != i && normalized[j] != normalized[i])
            .max_by(|&p, &q| dot(&v[i], &v[p]).total_cmp(&dot(&v[i], &v[q])))
    };
    let same = (0..n).filter(|&i| nearest(&a, i) == nearest(&b, i)).count();
    println!(
        "int8 vs f32 embeddings over {} lines: cosine min {:.4}, p1 {:.4}, median {:.5}; \
         same nearest neighbour {same}/{n}",
        cos.len(),
        cos[0],
        cos[cos.len() / 100],
        cos[cos.len() / 2],
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/heads");
    let Ok(heads) = Heads::load(&dir, f32_encoder.dim()) else {
        println!("int8 vs f32 heads: no heads in {}", dir.display());
        return;
    };
    let labels = heads.label_names();
    let thresholds: Vec<f64> = labels
        .iter()
        .map(|l| heads.threshold(l).unwrap_or(0.5))
        .collect();
    let (mut flips, mut positives, mut worst) = (vec![0usize; labels.len()], 0usize, 0f32);
    for ((text, x), y) in normalized.iter().zip(&a).zip(&b) {
        let lexical = heads.lexical(text, &modbot::engine::rules::lookalike::link_signals(text));
        let (p, q) = (heads.score(x, &lexical), heads.score(y, &lexical));
        for (l, ((p, q), t)) in p.iter().zip(&q).zip(&thresholds).enumerate() {
            worst = worst.max((p - q).abs());
            let (on_p, on_q) = (f64::from(*p) >= *t, f64::from(*q) >= *t);
            positives += usize::from(on_p);
            flips[l] += usize::from(on_p != on_q);
        }
    }
    let flipped: Vec<String> = labels
        .iter()
        .zip(&flips)
        .filter(|(_, f)| **f > 0)
        .map(|(l, f)| format!("{l} {f}"))
        .collect();
    println!(
        "int8 vs f32 heads ({} labels x {} lines, {positives} f32 positives): {} decisions \
         differ ({}), largest probability change {worst:.4}",
        labels.len(),
        a.len(),
        flips.iter().sum::<usize>(),
        if flipped.is_empty() {
            "none".to_owned()
        } else {
            flipped.join(", ")
        },
    );
}

/// The vector extensions this CPU reports (the packed kernels use AVX2 + FMA; `gemm` picks its
/// own at run time).
fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let f = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ];
        f.iter()
            .map(|(n, on)| format!("{n} {}", if *on { "yes" } else { "no" }))
            .collect::<Vec<_>>()
            .join(", ")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_owned()
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}
