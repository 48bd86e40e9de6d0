#!/usr/bin/env python3
"""Evasion variants of the chat set's harmful lines, and the count tables of its README.

Reads models/chatset/lines.jsonl (hand-written, see models/chatset/README.md) and writes
models/chatset/evasions.jsonl: for every insult, threat, sexual, identity_attack and spam line,
one variant per technique below, each changing only the line's carrying words (its "key"
field; without one, its two longest words that are not stop words). Spam lines with a link also
get a url-obfuscation variant. A technique that cannot change a line's carrying words (no digit
looks like any of their first or last letters, say) gives no variant for that line.

Deterministic: every random choice is drawn from SHA-256 of "<line id>|<technique>|<counter>",
never from a global generator, so the output is byte-identical on every run and every Python
version, and one line's variants do not move when other lines are added.

Run from the repository root:

    python3 scripts/chatset_evasions.py          # write evasions.jsonl, refresh the README tables
    python3 scripts/chatset_evasions.py --check  # exit 1 if either is stale

Stdlib only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHATSET = ROOT / "models" / "chatset"
LINES = CHATSET / "lines.jsonl"
EVASIONS = CHATSET / "evasions.jsonl"
README = CHATSET / "README.md"

# Categories in file order, each with the kinds it must have (a category may have more).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "insult": ("direct", "mild", "slur-free-harsh", "compound"),
    "threat": ("to-person", "wished-on-third-party", "self-harm-encouragement", "doxxing"),
    "sexual": ("unwanted-advances", "sexual-violence-threat", "degrading"),
    "identity_attack": ("slur-free-dehumanising", "stereotype-as-insult"),
    "spam": (
        "followers-viewers", "game-items", "dating", "fake-gift-link", "crypto-get-rich",
        "shortener", "unfamiliar-tld",
    ),
    "flood": (),
    "copypasta": (),
    "benign": (
        "banter", "gaming", "identity-mention", "scunthorpe", "mild-criticism", "emotes", "links",
        "questions", "politics-debate", "quoting", "numbers",
    ),
}
# The categories whose lines get evasion variants (and must name their carrying words).
HARMFUL = ("insult", "threat", "sexual", "identity_attack", "spam")
# Minimum lines per category, and per benign kind.
MIN_PER_CATEGORY = {
    "insult": 70, "threat": 60, "sexual": 40, "identity_attack": 40, "spam": 90, "flood": 30,
    "copypasta": 20, "benign": 210,
}
MIN_PER_BENIGN_KIND = {"identity-mention": 15, "scunthorpe": 15, "mild-criticism": 15, "banter": 15, "links": 15}
MIN_TOTAL = 560
FIELDS = ("id", "text", "category", "kind", "split")
SPLITS = ("validation", "test")

TECHNIQUES = (
    "leet-edges", "leet-inner", "spaced", "dotted", "repeated-letters", "homoglyph", "zero-width",
    "emoji-padding", "case-mix",
)
SPAM_TECHNIQUES = ("url-obfuscation",)


def split_for(position: int) -> str:
    """The split of the line at `position` (0-based) among its (category, kind) in id order:
    positions 0, 2, 5, 7, 10, 12, ... are validation (40%), the rest test (60%)."""
    return "validation" if position % 5 in (0, 2) else "test"


# --- deterministic draws ---------------------------------------------------------------------


class Draw:
    """A stream of choices derived from SHA-256 of a seed string: no global state, the same on
    every Python version (random.Random's methods are not promised to be)."""

    def __init__(self, seed: str):
        self.seed = seed
        self.counter = 0

    def below(self, n: int) -> int:
        if n <= 0:
            raise ValueError("below(0)")
        digest = hashlib.sha256(f"{self.seed}|{self.counter}".encode("utf-8")).digest()
        self.counter += 1
        return int.from_bytes(digest[:8], "big") % n

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def sample(self, seq, k: int) -> list:
        pool = list(seq)
        picked = []
        for _ in range(min(k, len(pool))):
            picked.append(pool.pop(self.below(len(pool))))
        return picked


# --- carrying words --------------------------------------------------------------------------

STOPWORDS = frozenset(
    """a about after again all also am an and any are as at be because been before being both but
    by can could did do does doing down during each for from further had has have having he her
    here hers him his how i if in into is it its just me more most my no nor not now of off on
    once only or other our out over own same she should so some such than that the their them
    then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours u ur ure youre you're i'm im
    i'll i'd it's that's don't can't won't lol lmao rn tbh ngl pls""".split()
)
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def key_words(line: dict) -> list[str]:
    """The words whose change matters: the line's "key", else its two longest non-stop words."""
    if line.get("key"):
        return list(line["key"])
    outside_links = URL.sub(" ", line["text"])
    words = [w for w in WORD.findall(outside_links) if w.lower() not in STOPWORDS and len(w) > 1]
    ranked = sorted(range(len(words)), key=lambda i: (-len(words[i]), i))
    picked: list[str] = []
    for i in ranked:
        if words[i].lower() not in (p.lower() for p in picked):
            picked.append(words[i])
        if len(picked) == 2:
            break
    return picked


def key_spans(text: str, words: list[str]) -> list[tuple[int, int]]:
    """Every whole-word occurrence of the key words (case-insensitive) outside links, left to
    right (a link is url-obfuscation's business)."""
    links = [m.span() for m in urls(text)]
    spans = []
    for word in words:
        pattern = re.compile(r"(?<![^\W_])" + re.escape(word) + r"(?![^\W_])", re.IGNORECASE)
        found = [
            (m.start(), m.end()) for m in pattern.finditer(text)
            if not any(a <= m.start() < b for a, b in links)
        ]
        if not found:
            raise ValueError(f"key word {word!r} is not a word of {text!r} outside its links")
        spans.extend(found)
    spans.sort()
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ValueError(f"key words overlap in {text!r}")
    return spans


# --- techniques: each changes one carrying word ----------------------------------------------

LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "l": "1", "b": "8", "g": "9", "z": "2"}
# Cyrillic and Greek letters that render like Latin ones.
HOMOGLYPHS = {
    "a": "а", "c": "с", "e": "е", "i": "і", "j": "ј", "o": "оο", "p": "р", "s": "ѕ", "x": "х",
    "y": "у", "h": "һ", "k": "κ", "v": "ν", "A": "АΑ", "B": "ВΒ", "C": "С", "E": "ЕΕ", "H": "НΗ",
    "I": "І", "K": "КΚ", "M": "М", "O": "ОΟ", "P": "РΡ", "T": "ТΤ", "X": "Х", "Y": "У",
}
ZERO_WIDTH = ("\u200b", "\u200c", "\u2060")
PADS = (
    "😂", "💀", "🤡", "🔥", "👉", "🙃", "✨", "😈", "🤣", "PepeLaugh", "OMEGALUL", "Kappa",
    "monkaS", "KEKW", "LUL",
)
VOWELS = "aeiouyAEIOUY"


def leet_edges(word: str, draw: Draw) -> str:
    chars = list(word)
    start = chars[0].lower() in LEET
    end = len(chars) > 1 and chars[-1].lower() in LEET
    if start and end:
        start, end = draw.choice(((True, False), (False, True), (True, True)))
    if start:
        chars[0] = LEET[chars[0].lower()]
    if end:
        last = word[-1].lower()
        j = len(chars) - 1
        while j - 1 > 0 and word[j - 1].lower() == last:  # fr-ee -> fr33
            j -= 1
        for i in range(j, len(chars)):
            chars[i] = LEET[last]
    return "".join(chars)


def leet_inner(word: str, draw: Draw) -> str:
    inner = [i for i in range(1, len(word) - 1) if word[i].lower() in LEET]
    if not inner:
        return word
    chars = list(word)
    for i in draw.sample(inner, 1 + draw.below(2)):
        chars[i] = LEET[chars[i].lower()]
    return "".join(chars)


def spaced(word: str, draw: Draw) -> str:
    return " ".join(word)


def dotted(word: str, draw: Draw) -> str:
    return ".".join(word)


def repeated_letters(word: str, draw: Draw) -> str:
    positions = [i for i, c in enumerate(word) if c in VOWELS] or [len(word) - 1]
    picked = set(draw.sample(positions, 2 if len(word) >= 7 and len(positions) >= 2 else 1))
    return "".join(c * (3 + draw.below(3)) if i in picked else c for i, c in enumerate(word))


def homoglyph(word: str, draw: Draw) -> str:
    candidates = [i for i, c in enumerate(word) if c in HOMOGLYPHS]
    if not candidates:
        return word
    chars = list(word)
    for i in draw.sample(candidates, 1 + draw.below(len(candidates))):
        chars[i] = draw.choice(HOMOGLYPHS[chars[i]])
    return "".join(chars)


def zero_width(word: str, draw: Draw) -> str:
    if len(word) < 2:
        return word
    cuts = sorted(draw.sample(range(1, len(word)), 2 if len(word) >= 4 else 1), reverse=True)
    chars = list(word)
    for cut in cuts:
        chars.insert(cut, draw.choice(ZERO_WIDTH))
    return "".join(chars)


def case_mix(word: str, draw: Draw) -> str:
    letters = [i for i, c in enumerate(word) if c.lower() != c.upper()]
    if not letters:
        return word
    chars = [c.upper() if draw.below(2) else c.lower() for c in word]
    if "".join(chars) == word or len({chars[i].isupper() for i in letters}) < 2 <= len(letters):
        # all one case, or unchanged: flip one letter so the case is visibly mixed
        i = draw.choice(letters)
        chars[i] = chars[i].lower() if chars[i].isupper() else chars[i].upper()
    return "".join(chars)


WORD_TECHNIQUES = {
    "leet-edges": leet_edges,
    "leet-inner": leet_inner,
    "spaced": spaced,
    "dotted": dotted,
    "repeated-letters": repeated_letters,
    "homoglyph": homoglyph,
    "zero-width": zero_width,
    "case-mix": case_mix,
}


def apply_to_words(text: str, spans: list[tuple[int, int]], fn, draw: Draw) -> str:
    out, at = [], 0
    for start, end in spans:
        out.append(text[at:start])
        out.append(fn(text[start:end], draw))
        at = end
    out.append(text[at:])
    return "".join(out)


def emoji_padding(text: str, spans: list[tuple[int, int]], draw: Draw) -> str:
    """An emote or emoji before and after each whitespace token holding a carrying word."""
    tokens = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    carrying = [any(s < t1 and t0 < e for s, e in spans) for t0, t1 in tokens]
    out: list[str] = []
    for (t0, t1), carries in zip(tokens, carrying):
        if carries and not (out and out[-1] in PADS):
            out.append(draw.choice(PADS))
        out.append(text[t0:t1])
        if carries:
            out.append(draw.choice(PADS))
    return " ".join(out)


URL = re.compile(r"(?i)(?<![\w@.])(https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?![\w-])(/\S*)?")


def urls(text: str) -> list[re.Match]:
    return list(URL.finditer(text))


def url_obfuscation(text: str, draw: Draw) -> str:
    """Links spelt so no link parser sees them: dots as [.], ' . ' or (dot); http as hxxp."""
    dot = draw.choice(("[.]", " . ", "(dot)", "[dot]"))
    out, at = [], 0
    for m in urls(text):
        scheme, host, path = m.group(1) or "", m.group(2), m.group(3) or ""
        if scheme:
            scheme = scheme.replace("ttp", "xxp").replace("TTP", "XXP")
        out.append(text[at:m.start()])
        out.append(scheme + host.replace(".", dot) + path)
        at = m.end()
    out.append(text[at:])
    return "".join(out)


def variants(line: dict) -> list[dict]:
    """The evasion variants of one harmful line, in technique order."""
    if line["category"] not in HARMFUL:
        return []
    spans = key_spans(line["text"], key_words(line))
    techniques = TECHNIQUES + (SPAM_TECHNIQUES if line["category"] == "spam" else ())
    result = []
    for technique in techniques:
        draw = Draw(f"{line['id']}|{technique}")
        if technique == "emoji-padding":
            text = emoji_padding(line["text"], spans, draw)
        elif technique == "url-obfuscation":
            if not urls(line["text"]):
                continue
            text = url_obfuscation(line["text"], draw)
        else:
            text = apply_to_words(line["text"], spans, WORD_TECHNIQUES[technique], draw)
        if text == line["text"]:
            continue  # the technique cannot change these words
        result.append({
            "id": f"{line['id']}~{technique}",
            "text": text,
            "category": line["category"],
            "kind": line["kind"],
            "split": line["split"],
            "evasion": technique,
            "of": line["id"],
        })
    return result


# --- reading, checking, writing --------------------------------------------------------------


def read_lines(path: Path = LINES) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(raw) for raw in f]


def problems(lines: list[dict]) -> list[str]:
    """What is wrong with lines.jsonl's lines: fields, values, ids, splits, keys, counts."""
    found = []
    seen = set()
    by_kind: dict[tuple[str, str], list[dict]] = {}
    for line in lines:
        lid = line.get("id", "?")
        keys = tuple(line)
        if keys not in (FIELDS, FIELDS + ("key",)):
            found.append(f"{lid}: fields {keys}, want {FIELDS} (+ optional key)")
            continue
        if lid in seen:
            found.append(f"{lid}: duplicate id")
        seen.add(lid)
        cat, kind, text = line["category"], line["kind"], line["text"]
        if cat not in CATEGORIES:
            found.append(f"{lid}: unknown category {cat!r}")
            continue
        if not re.fullmatch(re.escape(cat) + r"/\d{3}", lid):
            found.append(f"{lid}: id is not {cat}/NNN")
        if not isinstance(kind, str) or not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", kind):
            found.append(f"{lid}: kind {kind!r} is not lower-case-with-dashes")
        if line["split"] not in SPLITS:
            found.append(f"{lid}: split {line['split']!r}")
        if not isinstance(text, str) or not text or text != text.strip() or "  " in text or re.search(r"[\n\r\t]", text):
            found.append(f"{lid}: text is empty or has stray whitespace")
        if "key" in line:
            if cat not in HARMFUL:
                found.append(f"{lid}: key on a {cat} line")
            elif not (isinstance(line["key"], list) and 1 <= len(line["key"]) <= 2):
                found.append(f"{lid}: key must name 1 or 2 words")
            else:
                try:
                    key_spans(text, line["key"])
                except ValueError as e:
                    found.append(f"{lid}: {e}")
        elif cat in HARMFUL:
            found.append(f"{lid}: a {cat} line needs a key")
        by_kind.setdefault((cat, kind), []).append(line)
    for (cat, kind), members in by_kind.items():
        members.sort(key=lambda l: l["id"])
        for position, line in enumerate(members):
            if line["split"] != split_for(position):
                found.append(f"{line['id']}: split {line['split']}, the rule says {split_for(position)}")
        if {l["split"] for l in members} != set(SPLITS):
            found.append(f"{cat}/{kind}: has only {sorted({l['split'] for l in members})}")
    ids = [l.get("id") for l in lines]
    if ids != sorted(ids, key=lambda i: (list(CATEGORIES).index(i.split("/")[0]) if i.split("/")[0] in CATEGORIES else 99, i)):
        found.append("lines are not in category order, then id order")
    for cat, kinds in CATEGORIES.items():
        count = sum(1 for l in lines if l.get("category") == cat)
        if count < MIN_PER_CATEGORY[cat]:
            found.append(f"{cat}: {count} lines, want at least {MIN_PER_CATEGORY[cat]}")
        for kind in kinds:
            if (cat, kind) not in by_kind:
                found.append(f"{cat}/{kind}: no lines")
    for kind, least in MIN_PER_BENIGN_KIND.items():
        count = len(by_kind.get(("benign", kind), []))
        if count < least:
            found.append(f"benign/{kind}: {count} lines, want at least {least}")
    if len(lines) < MIN_TOTAL:
        found.append(f"{len(lines)} lines, want at least {MIN_TOTAL}")
    return found


def generate(lines: list[dict]) -> list[dict]:
    return [v for line in lines for v in variants(line)]


def dump(objs: list[dict]) -> str:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)


# --- README tables ---------------------------------------------------------------------------

BEGIN = "<!-- {name}: generated by scripts/chatset_evasions.py, do not edit -->"
END = "<!-- {name}: end -->"


def counts_table(lines: list[dict]) -> str:
    rows = ["| category | kind | validation | test | all |", "| --- | --- | ---: | ---: | ---: |"]
    total = {"validation": 0, "test": 0}
    for cat in CATEGORIES:
        members = [l for l in lines if l["category"] == cat]
        kinds = list(dict.fromkeys(l["kind"] for l in members))
        for kind in kinds:
            v = sum(1 for l in members if l["kind"] == kind and l["split"] == "validation")
            t = sum(1 for l in members if l["kind"] == kind and l["split"] == "test")
            rows.append(f"| {cat} | {kind} | {v} | {t} | {v + t} |")
        v = sum(1 for l in members if l["split"] == "validation")
        t = sum(1 for l in members if l["split"] == "test")
        rows.append(f"| **{cat}** | **all** | **{v}** | **{t}** | **{v + t}** |")
        total["validation"] += v
        total["test"] += t
    v, t = total["validation"], total["test"]
    rows.append(f"| **all** | | **{v}** | **{t}** | **{v + t}** |")
    return "\n".join(rows)


def evasions_table(lines: list[dict], evasions: list[dict]) -> str:
    harmful = [l for l in lines if l["category"] in HARMFUL]
    rows = [
        "| technique | lines it applies to | variants (validation / test) | no variant (cannot change the carrying words) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for technique in TECHNIQUES + SPAM_TECHNIQUES:
        if technique == "url-obfuscation":
            eligible = [l for l in harmful if l["category"] == "spam" and urls(l["text"])]
        else:
            eligible = harmful
        made = [e for e in evasions if e["evasion"] == technique]
        v = sum(1 for e in made if e["split"] == "validation")
        rows.append(f"| {technique} | {len(eligible)} | {len(made)} ({v} / {len(made) - v}) | {len(eligible) - len(made)} |")
    v = sum(1 for e in evasions if e["split"] == "validation")
    rows.append(f"| **all** | | **{len(evasions)} ({v} / {len(evasions) - v})** | |")
    return "\n".join(rows)


def tables(lines: list[dict], evasions: list[dict]) -> dict[str, str]:
    return {"counts": counts_table(lines), "evasions": evasions_table(lines, evasions)}


def refresh_readme(readme: str, generated: dict[str, str]) -> str:
    for name, table in generated.items():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
        if not pattern.search(readme):
            raise ValueError(f"README has no {begin} ... {end} block")
        readme = pattern.sub(lambda _: f"{begin}\n{table}\n{end}", readme, count=1)
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=Path, default=LINES)
    parser.add_argument("--out", type=Path, default=EVASIONS)
    parser.add_argument("--readme", type=Path, default=README, help="README whose tables to refresh")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)

    lines = read_lines(args.lines)
    wrong = problems(lines)
    if wrong:
        for p in wrong:
            print(f"{args.lines}: {p}", file=sys.stderr)
        return 1
    evasions = generate(lines)
    text = dump(evasions)
    outputs = {args.out: text}
    if not args.no_readme:
        outputs[args.readme] = refresh_readme(args.readme.read_text(encoding="utf-8"), tables(lines, evasions))
    stale = []
    for path, content in outputs.items():
        current = path.read_bytes() if path.exists() else None
        if current != content.encode("utf-8"):
            stale.append(path)
            if not args.check:
                path.write_bytes(content.encode("utf-8"))
    if args.check:
        for path in stale:
            print(f"{path} is stale: run python3 scripts/chatset_evasions.py", file=sys.stderr)
        return 1 if stale else 0
    print(f"{len(lines)} lines, {len(evasions)} evasion variants -> {args.out}"
          + ("" if stale else " (unchanged)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
