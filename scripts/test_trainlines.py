"""Tests of the training lines (models/trainlines/) and of scripts/trainlines.py (stdlib unittest).

Run from the repository root:

    python3 -m unittest scripts/test_trainlines.py

The disjointness test reads the held-out chat set (models/chatset/lines.jsonl and
evasions.jsonl) and, on failure, prints only the ids of the *training* lines that match: fix
those without reading the chat-set lines they matched (models/trainlines/README.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import subprocess
import sys
import unittest
from collections import Counter, defaultdict
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("trainlines", Path(__file__).with_name("trainlines.py"))
tl = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("trainlines", tl)
_SPEC.loader.exec_module(tl)

SCRIPT = Path(__file__).with_name("trainlines.py")
CHATSET = tl.ROOT / "models" / "chatset"
EVAL_FILES = (CHATSET / "lines.jsonl", CHATSET / "evasions.jsonl")

HAND = tl.read_lines(tl.HAND)
GENERATED = tl.read_lines(tl.GENERATED)
ALL = HAND + GENERATED

# At least this many lines per label in each file (the targets the set was written to).
MIN_HAND = {"threat": 300, "sexual": 220, "identity_attack": 200, "insult": 120, "spam": 250, "benign": 620}
MIN_GENERATED = {"threat": 400, "sexual": 250, "identity_attack": 200, "spam": 400, "benign": 850}

# Chat spam's kinds, each written by hand (at least this many lines) and generated.
SPAM_KINDS = ("followers_viewers", "self_promo", "game_items", "fake_gift", "crypto_get_rich", "dating_adult",
              "phishing", "contact_me", "shortener", "unfamiliar_tld")
MIN_HAND_PER_SPAM_KIND = 20
# Benign lines that look like spam (links, money, gifts, recommendations, scam warnings, trading).
SPAM_NEGATIVE_KINDS = ("links_normal", "crypto_talk", "gift_subs", "recommendation", "scam_warning", "game_trading_talk")

WORD_N, WORD_JACCARD = 3, 0.6
CHAR_N, CHAR_JACCARD, CHAR_MIN_WORDS = 4, 0.8, 4


def word_grams(norm: str) -> frozenset:
    words = norm.split()
    return frozenset(tuple(words[i : i + WORD_N]) for i in range(len(words) - WORD_N + 1))


def char_grams(norm: str) -> frozenset:
    return frozenset(norm[i : i + CHAR_N] for i in range(len(norm) - CHAR_N + 1))


class GramIndex:
    """Sets of n-grams with an inverted index, to find every set whose Jaccard similarity
    with a query reaches a threshold without comparing the query against all of them."""

    def __init__(self, sets: list[frozenset]):
        self.sizes = [len(s) for s in sets]
        self.postings: dict = defaultdict(list)
        for i, grams in enumerate(sets):
            for g in grams:
                self.postings[g].append(i)

    def best(self, query: frozenset) -> float:
        if not query:
            return 0.0
        shared: Counter[int] = Counter()
        for g in query:
            for i in self.postings.get(g, ()):
                shared[i] += 1
        return max((n / (len(query) + self.sizes[i] - n) for i, n in shared.items()), default=0.0)


def leaks(training: list[dict], eval_texts: list[str]) -> dict[str, str]:
    """Training line id -> how it matches the evaluation texts: "exact", "word-3-gram" or
    "char-4-gram". Never says which evaluation text it matched."""
    norms = {tl.normalise(t) for t in eval_texts}
    norms.discard("")
    words = GramIndex([word_grams(n) for n in norms])
    long = [n for n in norms if len(n.split()) >= CHAR_MIN_WORDS]
    chars = GramIndex([char_grams(n) for n in long])
    found = {}
    for line in training:
        norm = tl.normalise(line["text"])
        if norm in norms:
            found[line["id"]] = "exact"
        elif words.best(word_grams(norm)) >= WORD_JACCARD:
            found[line["id"]] = "word-3-gram"
        elif len(norm.split()) >= CHAR_MIN_WORDS and chars.best(char_grams(norm)) >= CHAR_JACCARD:
            found[line["id"]] = "char-4-gram"
    return found


class FormatTest(unittest.TestCase):
    def test_keys_labels_ids_and_sources(self):
        for origin, lines in (("hand", HAND), ("gen", GENERATED)):
            numbers = defaultdict(list)
            for line in lines:
                with self.subTest(id=line.get("id")):
                    self.assertEqual(tuple(line), tl.FIELDS)
                    self.assertTrue(all(isinstance(line[k], str) for k in tl.FIELDS))
                    self.assertIn(line["label"], tl.LABELS)
                    m = re.fullmatch(rf"{origin}/([a-z_]+)/(\d{{4}})", line["id"])
                    self.assertIsNotNone(m)
                    self.assertEqual(m.group(1), line["label"])
                    numbers[line["label"]].append(int(m.group(2)))
                    self.assertRegex(line["source"], rf"^{origin}/{line['label']}/[a-z]+(_[a-z]+)*$")
            for label, got in numbers.items():
                self.assertEqual(got, list(range(1, len(got) + 1)), f"{origin}/{label} ids are not 0001, 0002, … in order")

    def test_files_are_one_json_object_per_line(self):
        for path in (tl.HAND, tl.GENERATED):
            raw = path.read_text(encoding="utf-8")
            self.assertTrue(raw.endswith("\n"), path)
            for n, text in enumerate(raw.split("\n")[:-1], 1):
                with self.subTest(path=path.name, line=n):
                    self.assertIsInstance(json.loads(text), dict)

    def test_ids_unique(self):
        ids = Counter(line["id"] for line in ALL)
        self.assertEqual([i for i, n in ids.items() if n > 1], [])

    def test_texts_clean(self):
        for line in ALL:
            with self.subTest(id=line["id"]):
                self.assertTrue(line["text"])
                self.assertEqual(line["text"], line["text"].strip())
                self.assertNotRegex(line["text"], r"[\n\r\t]|  ")
                self.assertTrue(tl.normalise(line["text"]), "nothing left after normalising")

    def test_no_duplicate_texts(self):
        # Normalised: case-folded, punctuation removed, whitespace collapsed; within and across files.
        seen: dict[str, str] = {}
        dupes = []
        for line in ALL:
            key = tl.normalise(line["text"])
            if key in seen:
                dupes.append(f"{line['id']} repeats {seen[key]}")
            seen.setdefault(key, line["id"])
        self.assertEqual(dupes, [])

    def test_minimum_counts(self):
        for lines, least in ((HAND, MIN_HAND), (GENERATED, MIN_GENERATED)):
            per = Counter(line["label"] for line in lines)
            for label, n in least.items():
                self.assertGreaterEqual(per[label], n, label)

    def test_no_spelt_out_slurs(self):
        # Harsh without slurs (README); the chat set's short list of the commonest catches slips.
        banned = {"nigger", "nigga", "faggot", "fag", "retard", "retarded", "tranny", "kike", "spic", "chink", "paki", "dyke"}
        for line in ALL:
            words = set(re.findall(r"[a-z]+", line["text"].lower()))
            self.assertFalse(words & banned, line["id"])

    def test_spam_kinds_and_their_hard_negatives(self):
        hand = Counter(line["source"] for line in HAND)
        gen = Counter(line["source"] for line in GENERATED)
        for kind in SPAM_KINDS:
            with self.subTest(kind=kind):
                self.assertGreaterEqual(hand[f"hand/spam/{kind}"], MIN_HAND_PER_SPAM_KIND)
                self.assertGreater(gen[f"gen/spam/{kind}"], 0)
        spam_sources = {line["source"].split("/", 2)[2] for line in ALL if line["label"] == "spam"}
        self.assertEqual(spam_sources, set(SPAM_KINDS))
        for kind in SPAM_NEGATIVE_KINDS:
            with self.subTest(kind=kind):
                self.assertGreater(hand[f"hand/benign/{kind}"], 0)
                self.assertGreater(gen[f"gen/benign/{kind}"], 0)

    def test_phone_numbers_are_in_the_drama_range(self):
        # UK mobile numbers only from the range Ofcom keeps for drama (07700 900000-900999).
        mobile = re.compile(r"(?:\+44\s?|\b0)7\d{3}\s?\d{3}\s?\d{3}\b")
        for line in ALL:
            for number in mobile.findall(line["text"]):
                with self.subTest(id=line["id"]):
                    self.assertRegex(re.sub(r"\s", "", number), r"^(\+44|0)7700900\d{3}$")

    def test_harmful_lines_aim_at_you_the_streamer_and_others(self):
        # Roughly a third each; checked loosely: each of the three is at least a sixth.
        you = re.compile(r"(^|\s)@\w|\b(you|u|ur|your|you're|yourself|urself)\b")
        streamer = re.compile(r"\b(destiny|streamer|he|she|him|her|his|host|cohost|e-girl)\b")
        for label in ("threat", "sexual", "identity_attack"):
            texts = [line["text"].lower() for line in ALL if line["label"] == label]
            n_you = sum(1 for t in texts if you.search(t))
            n_streamer = sum(1 for t in texts if not you.search(t) and streamer.search(t))
            n_other = len(texts) - n_you - n_streamer
            for name, n in (("you/@nick", n_you), ("streamer", n_streamer), ("others", n_other)):
                with self.subTest(label=label, target=name):
                    self.assertGreaterEqual(n / len(texts), 1 / 6)


class GeneratorTest(unittest.TestCase):
    def test_generated_file_and_readme_are_up_to_date(self):
        self.assertEqual(tl.main(["--check"]), 0, "run python3 scripts/trainlines.py")

    def test_generation_is_deterministic(self):
        once = tl.dump(tl.generate(HAND))
        self.assertEqual(once, tl.dump(tl.generate(HAND)))
        self.assertEqual(once.encode("utf-8"), tl.GENERATED.read_bytes())

    def test_check_exits_nonzero_when_stale(self):
        # A fresh interpreter, as CI runs it: exit 0 now; and the in-process check says 1 for a changed file.
        done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        original = tl.GENERATED.read_bytes()
        try:
            tl.GENERATED.write_bytes(original.replace(b"\n", b"\n ", 1))
            with contextlib.redirect_stderr(io.StringIO()) as err:
                self.assertEqual(tl.main(["--check"]), 1)
            self.assertIn("stale: models/trainlines/generated.jsonl", err.getvalue())
        finally:
            tl.GENERATED.write_bytes(original)

    def test_generated_never_repeats_hand(self):
        hand = {tl.normalise(line["text"]) for line in HAND}
        self.assertEqual([l["id"] for l in GENERATED if tl.normalise(l["text"]) in hand], [])

    def test_generated_kinds_match_templates(self):
        kinds = Counter(line["source"] for line in GENERATED)
        want = {f"gen/{label}/{kind}": n for label, kind, n, _ in tl.KINDS}
        self.assertEqual(dict(kinds), want)

    def test_normalise(self):
        self.assertEqual(tl.normalise("  Hello,   WORLD!! "), "hello world")
        self.assertEqual(tl.normalise("k.y.s"), "kys")
        self.assertEqual(tl.normalise("i\u200bdiot"), "idiot")
        self.assertEqual(tl.normalise("😂😂"), "😂😂")


class ReadmeTest(unittest.TestCase):
    def test_counts_table_matches(self):
        readme = tl.README.read_text(encoding="utf-8")
        start = readme.index(tl.TABLE_START) + len(tl.TABLE_START)
        table = readme[start : readme.index(tl.TABLE_END)].strip()
        self.assertEqual(table, tl.counts_table(HAND, GENERATED))
        # And the table's own arithmetic, read back from its rows.
        rows = [r.strip("|").split("|") for r in table.splitlines()[2:]]
        rows = [[c.strip().strip("*") for c in r] for r in rows]
        kinds = [r for r in rows if r[1] not in ("all", "")]
        per = Counter()
        for line in ALL:
            per[(line["label"], line["source"].split("/", 2)[2])] += 1
        for label, kind, hand, gen, total in kinds:
            self.assertEqual(int(hand) + int(gen), int(total))
            self.assertEqual(per[(label, kind)], int(total), f"{label}/{kind}")
        self.assertEqual(int(rows[-1][4]), len(ALL))

    def test_readme_names_the_licence_of_cargo_toml(self):
        cargo = (tl.ROOT / "Cargo.toml").read_text(encoding="utf-8")
        licence = re.search(r'^license\s*=\s*"([^"]+)"', cargo, re.M).group(1)
        readme = tl.README.read_text(encoding="utf-8")
        self.assertIn(f"**{licence}**", readme)
        self.assertIn("models/chatset/", readme)
        self.assertIn("Content warning", readme)


@unittest.skipUnless(all(p.exists() for p in EVAL_FILES), "models/chatset/ is missing")
class DisjointFromChatsetTest(unittest.TestCase):
    def test_no_training_line_equals_or_nearly_equals_an_evaluation_line(self):
        eval_texts = [line["text"] for path in EVAL_FILES for line in tl.read_lines(path)]
        self.assertGreater(len(eval_texts), 0)
        found = leaks(ALL, eval_texts)
        if found:
            listing = "\n".join(f"  {i} ({how})" for i, how in sorted(found.items()))
            self.fail(f"{len(found)} training line(s) equal or close to a line of models/chatset/ "
                      f"(rewrite them without reading the chat set):\n{listing}")

    def test_the_check_finds_what_it_should(self):
        # On made-up evaluation texts, never the chat set's.
        training = [
            {"id": "t/1", "text": "I'll break your legs, mate!"},
            {"id": "t/2", "text": "gonna break your legs after the stream tonight"},
            {"id": "t/3", "text": "see you at the meetup tomorrow night friend"},
            {"id": "t/4", "text": "see you at the meetup tomorrow night friends"},
            {"id": "t/5", "text": "completely unrelated words here"},
        ]
        evals = ["ill break your legs mate", "gonna break your legs after the stream tonight lol",
                 "see you at the meetup tomorrow night friendo"]
        self.assertEqual(leaks(training, evals), {"t/1": "exact", "t/2": "word-3-gram", "t/3": "word-3-gram", "t/4": "word-3-gram"})
        self.assertEqual(leaks([{"id": "c", "text": "the qiuck brown foxes jumped"}], ["the quick brown foxes jumped"]), {})
        self.assertEqual(leaks([{"id": "c", "text": "a realllly long sentence about nothing much at all"}],
                               ["a reallly long sentence about nothing much at all"]), {"c": "char-4-gram"})


if __name__ == "__main__":
    unittest.main()
