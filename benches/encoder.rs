//! modbot's encoder path: messages/s for all-MiniLM-L6-v2 on chat lines, tokenisation
//! included, f32, on the CPU.
//!
//! ```text
//! cargo run --release -- fetch-model          # once
//! cargo bench --bench encoder -- [--lines N] [--batches 1,8,32,128] [--write-lines FILE]
//! ```
//!
//! The lines are `corpus::generate(42, N)` (default 2,000). Each batch size is measured in
//! arrival order (batches of consecutive lines, padded to their longest) and length-sorted
//! (all lines sorted by token count first, so a batch's members have similar lengths), after
//! a warm-up. `--write-lines FILE` also writes the lines, one per line, for the PyTorch peer
//! (`benches/pytorch_peer.py --lines FILE`), so both measure the same text. Threads: candle's
//! matrix multiplications use rayon's pool (`RAYON_NUM_THREADS`, all cores by default).

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use modbot::model::Encoder;

struct Args {
    lines: usize,
    batches: Vec<usize>,
    write_lines: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        lines: 2000,
        batches: vec![1, 8, 32, 128],
        write_lines: None,
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

fn main() {
    let args = parse_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let encoder = Encoder::load(&dir, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e} (run `cargo run --release -- fetch-model` first)"));
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

    // Warm-up: page in the weights, size the allocator and the thread pool.
    measure(&encoder, &texts, &arrival[..texts.len().min(256)], 32);

    println!(
        "encoder: all-MiniLM-L6-v2, {} lines of {mean_tokens:.1} tokens on average, rayon threads {}",
        texts.len(),
        rayon_threads()
    );
    println!("{:>6}  {:>12}  {:>12}", "batch", "arrival/s", "sorted/s");
    for &size in &args.batches {
        let in_order = measure(&encoder, &texts, &arrival, size);
        let by_length = measure(&encoder, &texts, &sorted, size);
        println!("{size:>6}  {in_order:>12.1}  {by_length:>12.1}");
    }
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism().map_or("?".into(), |n| n.to_string())
    })
}
