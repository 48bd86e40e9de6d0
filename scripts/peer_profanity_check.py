"""The peer a user could pick instead of modbot, on the team's chat set: `alt-profanity-check`.

`alt-profanity-check` (PyPI; a linear SVM over TF-IDF trained on ~200k labelled comments) says
whether a text is offensive. This scores every line of models/chatset/ (lines.jsonl and
evasions.jsonl) with its `predict` (its own 0.5 cut-off) and prints, per split, the share of
each category it flags and what it keeps of plain recall under each evasion: the same tables
`modbot eval --chat` prints for modbot, so the two can be read side by side.

The peer lives in a throwaway virtualenv outside the repository,
${MODBOT_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/modbot/profanity-check-venv}, made on the
first run with the pinned packages below (PyPI only); later runs reuse it. Not part of
`scripts/test`: it measures, it does not test.

    python3 scripts/peer_profanity_check.py [--json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHATSET = ROOT / "models" / "chatset"
# Pinned: the peer as measured in models/README.md.
REQUIREMENTS = ["alt-profanity-check==1.9.1", "scikit-learn==1.9.1", "joblib==1.6.0"]
TOXIC = {"insult", "threat", "sexual", "identity_attack"}
ORDER = ["insult", "threat", "sexual", "identity_attack", "spam", "flood", "copypasta", "benign"]


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


def main() -> None:
    enter()
    from profanity_check import predict  # noqa: PLC0415 (inside the venv only)

    lines = read(CHATSET / "lines.jsonl") + read(CHATSET / "evasions.jsonl")
    flagged = predict([line["text"] for line in lines])
    acted = {line["id"]: bool(flag) for line, flag in zip(lines, flagged)}
    plain = {line["id"]: line for line in lines if "of" not in line}
    report: dict = {}
    for split in ("validation", "test"):
        categories: dict = defaultdict(lambda: [0, 0])
        evasions: dict = defaultdict(lambda: [0, 0, 0, 0])
        for line in lines:
            if line["split"] != split:
                continue
            if "of" in line:
                original = plain.get(line["of"])
                if original is None:
                    continue
                tally = evasions[line["evasion"]]
                tally[0] += 1
                tally[1] += acted[line["id"]]
                tally[2] += 1
                tally[3] += acted[original["id"]]
                continue
            groups = [line["category"]]
            if line["category"] in TOXIC:
                groups.append("toxic")
            if line["category"] in TOXIC or line["category"] == "spam":
                groups.append("toxic + spam")
            if line["category"] == "benign" and line["kind"] in ("identity-mention", "scunthorpe"):
                groups.append("identity mentions + Scunthorpe")
            for group in groups:
                categories[group][0] += 1
                categories[group][1] += acted[line["id"]]
        every = [sum(t[i] for t in evasions.values()) for i in range(4)]
        kept = lambda t: 1.0 if t[3] == 0 else (t[1] / t[0]) / (t[3] / t[2])  # noqa: E731
        report[split] = {
            "categories": {k: {"n": v[0], "acted": v[1]} for k, v in categories.items()},
            "evasions": {k: {"n": v[0], "acted": v[1], "kept": kept(v)} for k, v in evasions.items()},
            "all_evasions_kept": kept(every),
        }
    if "--json" in sys.argv:
        print(json.dumps(report, indent=2))
        return
    print("alt-profanity-check 1.9.1 on models/chatset (its predict(), cut-off 0.5)\n")
    print("| category | validation | test |\n| --- | --- | --- |")
    for group in [*ORDER, "toxic", "toxic + spam", "identity mentions + Scunthorpe"]:
        cells = []
        for split in ("validation", "test"):
            c = report[split]["categories"].get(group, {"n": 0, "acted": 0})
            rate = 100.0 * c["acted"] / c["n"] if c["n"] else 0.0
            cells.append(f"{c['acted']}/{c['n']} ({rate:.1f}%)")
        print(f"| {group} | {' | '.join(cells)} |")
    print("\n| evasion | validation: kept of plain recall | test: kept of plain recall |\n| --- | --- | --- |")
    for technique in sorted(report["test"]["evasions"]):
        cells = [f"{100.0 * report[s]['evasions'].get(technique, {'kept': 1.0})['kept']:.1f}%" for s in ("validation", "test")]
        print(f"| {technique} | {' | '.join(cells)} |")
    cells = [f"{100.0 * report[s]['all_evasions_kept']:.1f}%" for s in ("validation", "test")]
    print(f"| **all** | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
