"""The peer a user could pick instead of modbot, on the team's chat set: `alt-profanity-check`.

`alt-profanity-check` (PyPI; a linear SVM over TF-IDF trained on ~200k labelled comments) says
whether a text is offensive. This decides every line of models/chatset/ (lines.jsonl and
evasions.jsonl) with its `predict` (its own 0.5 cut-off) and writes one `{"id", "acted"}` per
line; `modbot eval --chat --peer FILE` summarises them with the same code as modbot's own
decisions and prints them as a column beside modbot's (categories, evasions, targets):

    python3 scripts/peer_profanity_check.py --out /tmp/peer.jsonl
    cargo run --release -- eval --chat --peer /tmp/peer.jsonl

With `--datasets`, it scores every test split under data/datasets/ instead (as
scripts/fetch_datasets.py prepared them), one `{"set", "id", "acted", "score"}` per example
(`score` is its `predict_prob`), and `modbot eval --peer FILE` adds it as a column beside the
heads on every binary set (ROC-AUC, precision, recall, F1, FPR at its own cut-off):

    python3 scripts/peer_profanity_check.py --datasets --out /tmp/peer-datasets.jsonl
    cargo run --release -- eval --peer /tmp/peer-datasets.jsonl

The peer lives in a throwaway virtualenv outside the repository,
${MODBOT_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/modbot/profanity-check-venv}, made on the
first run with the pinned packages below (PyPI only); later runs reuse it. Not part of
`scripts/test`: it measures, it does not test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHATSET = ROOT / "models" / "chatset"
DATASETS = ROOT / "data" / "datasets"
# Pinned: the peer as measured in models/README.md.
REQUIREMENTS = ["alt-profanity-check==1.9.1", "scikit-learn==1.9.1", "joblib==1.6.0"]
PEER = "alt-profanity-check 1.9.1"


def venv_dir() -> Path:
    if os.environ.get("MODBOT_PEER_VENV"):
        return Path(os.environ["MODBOT_PEER_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "modbot" / "profanity-check-venv"


def enter() -> None:
    """Re-runs this script inside the peer's virtualenv, making it first if needed."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    marker = venv / ".modbot-requirements"
    if not python.exists() or not marker.exists() or marker.read_text() != "\n".join(REQUIREMENTS):
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
            check=True,
        )
        marker.write_text("\n".join(REQUIREMENTS))
    os.execv(str(python), [str(python), *sys.argv])


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_datasets(out: Path) -> None:
    """Every dataset's test split: its decision and its probability per example."""
    from profanity_check import predict, predict_prob  # noqa: PLC0415 (inside the venv only)

    splits = sorted(DATASETS.glob("*/test.jsonl"))
    if not splits:
        sys.exit(f"no test splits under {DATASETS}: run scripts/fetch_datasets.py first")
    total = 0
    with out.open("w", encoding="utf-8") as f:
        for path in splits:
            examples = read(path)
            texts = [e["text"] for e in examples]
            flagged, probabilities = predict(texts), predict_prob(texts)
            for example, flag, p in zip(examples, flagged, probabilities):
                line = {"set": f"{path.parent.name}/test", "id": example["id"], "acted": bool(flag),
                        "score": round(float(p), 6), "peer": PEER}
                f.write(json.dumps(line) + "\n")
            total += len(examples)
            print(f"{PEER}: {path.parent.name}/test: {sum(bool(x) for x in flagged)} of {len(examples)} flagged",
                  file=sys.stderr)
    print(f"{PEER}: wrote {total} decisions to {out}", file=sys.stderr)


def main() -> None:
    args = sys.argv[1:]
    datasets = "--datasets" in args
    args = [a for a in args if a != "--datasets"]
    if args[:1] != ["--out"] or len(args) != 2:
        sys.exit("usage: python3 scripts/peer_profanity_check.py [--datasets] --out FILE")
    out = Path(args[1]).resolve()
    enter()
    if datasets:
        score_datasets(out)
        return
    from profanity_check import predict  # noqa: PLC0415 (inside the venv only)

    lines = read(CHATSET / "lines.jsonl") + read(CHATSET / "evasions.jsonl")
    flagged = predict([line["text"] for line in lines])
    with out.open("w", encoding="utf-8") as f:
        for line, flag in zip(lines, flagged):
            f.write(json.dumps({"id": line["id"], "acted": bool(flag), "peer": PEER}) + "\n")
    print(f"{PEER}: {sum(bool(x) for x in flagged)} of {len(lines)} lines flagged; wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
