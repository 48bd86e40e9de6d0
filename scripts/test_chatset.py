"""Tests of the chat set (models/chatset/) and of scripts/chatset_evasions.py (stdlib unittest).

Run from the repository root:

    python3 -m unittest scripts/test_chatset.py
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import unittest
from collections import Counter
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("chatset_evasions", Path(__file__).with_name("chatset_evasions.py"))
ce = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("chatset_evasions", ce)
_SPEC.loader.exec_module(ce)

SCRIPT = Path(__file__).with_name("chatset_evasions.py")
LINES = ce.read_lines(ce.LINES)
BY_ID = {line["id"]: line for line in LINES}
EVASIONS = ce.read_lines(ce.EVASIONS)
EVASION_FIELDS = ("id", "text", "category", "kind", "split", "evasion", "of")
# Techniques that change characters of the carrying words and nothing else in the line.
IN_WORD = ("leet-edges", "leet-inner", "spaced", "dotted", "repeated-letters", "homoglyph", "zero-width", "case-mix")


class LinesTest(unittest.TestCase):
    def test_no_problems(self):
        self.assertEqual(ce.problems(LINES), [])

    def test_fields_and_values(self):
        for line in LINES:
            with self.subTest(id=line["id"]):
                self.assertIn(tuple(line), (ce.FIELDS, ce.FIELDS + ("key",)))
                self.assertIn(line["category"], ce.CATEGORIES)
                self.assertRegex(line["id"], r"^" + line["category"] + r"/\d{3}$")
                self.assertIn(line["split"], ce.SPLITS)
                self.assertRegex(line["kind"], r"^[a-z0-9]+(-[a-z0-9]+)*$")
                self.assertTrue(line["text"])
                self.assertEqual(line["text"], line["text"].strip())
                self.assertNotRegex(line["text"], r"[\n\r\t]|  ")
                self.assertEqual(line["category"] in ce.HARMFUL, "key" in line)

    def test_ids_unique_and_numbered_within_category(self):
        ids = [line["id"] for line in LINES]
        self.assertEqual(len(ids), len(set(ids)))
        for cat in ce.CATEGORIES:
            numbers = [int(i.split("/")[1]) for i in ids if i.startswith(cat + "/")]
            self.assertEqual(numbers, list(range(1, len(numbers) + 1)), cat)

    def test_texts_unique(self):
        texts = Counter(line["text"].lower() for line in LINES)
        self.assertEqual([t for t, n in texts.items() if n > 1], [])

    def test_every_kind_has_both_splits_by_the_rule(self):
        kinds: dict[tuple[str, str], list[dict]] = {}
        for line in LINES:
            kinds.setdefault((line["category"], line["kind"]), []).append(line)
        for (cat, kind), members in kinds.items():
            with self.subTest(category=cat, kind=kind):
                self.assertEqual({l["split"] for l in members}, set(ce.SPLITS))
                members.sort(key=lambda l: l["id"])
                self.assertEqual([l["split"] for l in members], [ce.split_for(i) for i in range(len(members))])
                validation = sum(1 for l in members if l["split"] == "validation")
                self.assertAlmostEqual(validation / len(members), 0.4, delta=0.15)

    def test_required_kinds_and_minimum_counts(self):
        per_category = Counter(line["category"] for line in LINES)
        per_kind = Counter((line["category"], line["kind"]) for line in LINES)
        self.assertGreaterEqual(len(LINES), 560)
        for cat, least in ce.MIN_PER_CATEGORY.items():
            self.assertGreaterEqual(per_category[cat], least, cat)
        for cat, kinds in ce.CATEGORIES.items():
            for kind in kinds:
                self.assertGreaterEqual(per_kind[(cat, kind)], 2, f"{cat}/{kind}")
        for kind, least in ce.MIN_PER_BENIGN_KIND.items():
            self.assertGreaterEqual(per_kind[("benign", kind)], least, kind)
        for cat in ("flood", "copypasta"):
            self.assertGreaterEqual(len({k for c, k in per_kind if c == cat}), 3, cat)

    def test_keys_are_words_of_the_text_outside_links(self):
        for line in LINES:
            if line["category"] not in ce.HARMFUL:
                continue
            with self.subTest(id=line["id"]):
                self.assertTrue(1 <= len(line["key"]) <= 2)
                spans = ce.key_spans(line["text"], line["key"])
                links = [m.span() for m in ce.urls(line["text"])]
                for start, _ in spans:
                    self.assertFalse(any(a <= start < b for a, b in links))

    def test_no_spelt_out_slurs(self):
        # The set is harsh without slurs (README); a short list of the commonest catches slips.
        banned = ("nigger", "nigga", "faggot", "fag", "retard", "retarded", "tranny", "kike", "spic", "chink", "paki", "dyke")
        for line in LINES:
            words = set(re.findall(r"[a-z]+", line["text"].lower()))
            self.assertFalse(words & set(banned), line["id"])

    def test_problems_finds_broken_lines(self):
        def broken(change):
            lines = copy.deepcopy(LINES)
            change(lines)
            return "\n".join(ce.problems(lines))

        def first(cat, lines):
            return next(l for l in lines if l["category"] == cat)

        self.assertIn("duplicate id", broken(lambda ls: ls.insert(1, dict(ls[0]))))
        self.assertIn("the rule says", broken(lambda ls: first("threat", ls).update(split="test")))
        self.assertIn("needs a key", broken(lambda ls: first("spam", ls).pop("key")))
        self.assertIn("is not a word", broken(lambda ls: first("insult", ls).update(key=["zebra"])))
        self.assertIn("key on a benign line", broken(lambda ls: first("benign", ls).update(key=["chat"])))
        self.assertIn("unknown category", broken(lambda ls: first("flood", ls).update(category="noise")))
        self.assertIn("stray whitespace", broken(lambda ls: first("benign", ls).update(text="gg  wp")))
        self.assertIn("want at least", broken(lambda ls: ls.__delitem__(slice(0, 10))))
        self.assertIn("no lines", broken(lambda ls: [l.update(kind="direct") for l in ls if l["kind"] == "doxxing"]))


class TechniqueTest(unittest.TestCase):
    def test_draw_is_pinned(self):
        # SHA-256 based, so these never change across Python versions or runs.
        draw = ce.Draw("insult/001|spaced")
        got = [draw.below(1000) for _ in range(5)]
        again = ce.Draw("insult/001|spaced")
        self.assertEqual(got, [again.below(1000) for _ in range(5)])
        import hashlib
        want = int.from_bytes(hashlib.sha256(b"insult/001|spaced|0").digest()[:8], "big") % 1000
        self.assertEqual(got[0], want)

    def check(self, fn, word, allowed):
        for n in range(20):
            with self.subTest(word=word, seed=n):
                self.assertIn(fn(word, ce.Draw(f"t{n}")), allowed)

    def test_leet_edges(self):
        self.check(ce.leet_edges, "free", {"fr33"})
        self.check(ce.leet_edges, "shit", {"5hit", "shi7", "5hi7"})
        self.check(ce.leet_edges, "idiot", {"1diot", "idio7", "1dio7"})
        self.check(ce.leet_edges, "kys", {"ky5"})
        self.check(ce.leet_edges, "moron", {"moron"})  # no digit looks like m or n: no variant

    def test_leet_inner(self):
        self.check(ce.leet_inner, "loser", {"l0ser", "lo5er", "los3r", "l05er", "l0s3r", "lo53r"})
        self.check(ce.leet_inner, "kys", {"kys"})

    def test_spaced_dotted(self):
        self.check(ce.spaced, "idiot", {"i d i o t"})
        self.check(ce.dotted, "idiot", {"i.d.i.o.t"})

    def test_repeated_letters(self):
        for n in range(20):
            got = ce.repeated_letters("stupid", ce.Draw(f"t{n}"))
            self.assertRegex(got, r"^st(u{3,5}pid|upi{3,5}d)$")

    def test_homoglyph_zero_width_case_mix(self):
        for n in range(20):
            draw = ce.Draw(f"t{n}")
            glyphs = ce.homoglyph("scam", draw)
            self.assertNotEqual(glyphs, "scam")
            self.assertEqual(unhomoglyph(glyphs), "scam")
            zw = ce.zero_width("idiot", draw)
            self.assertEqual(len(zw), 7)
            self.assertEqual(strip_zero_width(zw), "idiot")
            mixed = ce.case_mix("idiot", draw)
            self.assertNotEqual(mixed, "idiot")
            self.assertEqual(mixed.lower(), "idiot")
            self.assertTrue(any(c.isupper() for c in mixed) and any(c.islower() for c in mixed))

    def test_url_obfuscation(self):
        text = "free nitro https://dlscord-gift.com/a7Kq2 and bit.ly/x1 now"
        for n in range(10):
            got = ce.url_obfuscation(text, ce.Draw(f"t{n}"))
            self.assertIn("hxxps://dlscord-gift", got)
            self.assertEqual(ce.urls(got), [])
            self.assertNotIn("dlscord-gift.com", got)
            self.assertNotIn("bit.ly", got)
            self.assertTrue(got.startswith("free nitro ") and got.endswith(" now"))

    def test_emoji_padding_pads_the_carrying_token(self):
        text = "shut up you absolute idiot, seriously"
        got = ce.emoji_padding(text, ce.key_spans(text, ["idiot"]), ce.Draw("t"))
        tokens = got.split(" ")
        i = tokens.index("idiot,")
        self.assertIn(tokens[i - 1], ce.PADS)
        self.assertIn(tokens[i + 1], ce.PADS)
        self.assertEqual([t for t in tokens if t not in ce.PADS], text.split(" "))

    def test_key_fallback_longest_words(self):
        self.assertEqual(ce.key_words({"text": "you are a pathetic little troll lol"}), ["pathetic", "little"])
        self.assertEqual(ce.key_words({"text": "free stuff at freestuffnow.xyz", "key": None}), ["stuff", "free"])


class EvasionsTest(unittest.TestCase):
    def run_script(self, out: Path):
        subprocess.run(
            [sys.executable, str(SCRIPT), "--out", str(out), "--no-readme"],
            check=True, capture_output=True, text=True,
        )
        return out.read_bytes()

    def test_generation_is_deterministic_and_committed_file_is_fresh(self):
        with tempfile.TemporaryDirectory() as tmp:
            first = self.run_script(Path(tmp) / "a.jsonl")
            second = self.run_script(Path(tmp) / "b.jsonl")
        self.assertEqual(first, second)
        self.assertEqual(ce.EVASIONS.read_bytes(), first, "run python3 scripts/chatset_evasions.py")
        self.assertEqual(ce.dump(ce.generate(LINES)).encode("utf-8"), first)

    def test_check_mode(self):
        result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_variants_keep_the_label_and_differ(self):
        ids = set()
        for ev in EVASIONS:
            with self.subTest(id=ev["id"]):
                self.assertEqual(tuple(ev), EVASION_FIELDS)
                original = BY_ID[ev["of"]]
                self.assertEqual(ev["id"], f"{ev['of']}~{ev['evasion']}")
                self.assertNotIn(ev["id"], ids)
                ids.add(ev["id"])
                self.assertIn(original["category"], ce.HARMFUL)
                for field in ("category", "kind", "split"):
                    self.assertEqual(ev[field], original[field])
                self.assertNotEqual(ev["text"], original["text"])
                self.assertIn(ev["evasion"], ce.TECHNIQUES + ce.SPAM_TECHNIQUES)
                if ev["evasion"] in ce.SPAM_TECHNIQUES:
                    self.assertEqual(ev["category"], "spam")

    def test_coverage(self):
        harmful = [l for l in LINES if l["category"] in ce.HARMFUL]
        per_line = Counter(ev["of"] for ev in EVASIONS)
        per_technique = Counter(ev["evasion"] for ev in EVASIONS)
        for line in harmful:
            self.assertGreaterEqual(per_line[line["id"]], 7, line["id"])
        for technique in ce.TECHNIQUES:
            self.assertGreaterEqual(per_technique[technique], 0.85 * len(harmful), technique)
        linked = [l for l in harmful if l["category"] == "spam" and ce.urls(l["text"])]
        self.assertGreaterEqual(len(linked), 40)
        self.assertEqual(per_technique["url-obfuscation"], len(linked))
        # in file order: lines in lines.jsonl order, techniques in their order
        order = {line["id"]: i for i, line in enumerate(LINES)}
        techniques = ce.TECHNIQUES + ce.SPAM_TECHNIQUES
        keys = [(order[ev["of"]], techniques.index(ev["evasion"])) for ev in EVASIONS]
        self.assertEqual(keys, sorted(keys))

    def test_only_the_carrying_words_change(self):
        for ev in EVASIONS:
            if ev["evasion"] not in IN_WORD:
                continue
            original = BY_ID[ev["of"]]
            text = original["text"]
            spans = ce.key_spans(text, ce.key_words(original))
            if ev["evasion"] in ("spaced", "dotted"):
                sep = " " if ev["evasion"] == "spaced" else "."
                want = ce.apply_to_words(text, spans, lambda w, _: sep.join(w), None)
                self.assertEqual(ev["text"], want, ev["id"])
                continue
            pattern, at = "", 0
            for start, end in spans:
                pattern += re.escape(text[at:start]) + "(.+?)"
                at = end
            pattern += re.escape(text[at:])
            with self.subTest(id=ev["id"]):
                match = re.fullmatch(pattern, ev["text"], re.DOTALL)
                self.assertIsNotNone(match)
                for (start, end), changed in zip(spans, match.groups()):
                    word = text[start:end]
                    if ev["evasion"] == "zero-width":
                        self.assertEqual(strip_zero_width(changed), word)
                    elif ev["evasion"] == "homoglyph":
                        self.assertEqual(unhomoglyph(changed), word)
                    elif ev["evasion"] == "case-mix":
                        self.assertEqual(changed.lower(), word.lower())
                    elif ev["evasion"] == "repeated-letters":
                        self.assertEqual(re.sub(r"(.)\1+", r"\1", changed), re.sub(r"(.)\1+", r"\1", word))
                    else:  # leet
                        self.assertEqual(len(changed), len(word))
                        for a, b in zip(word, changed):
                            self.assertTrue(a == b or ce.LEET.get(a.lower()) == b, (word, changed))

    def test_emoji_padding_only_adds_pads(self):
        for ev in EVASIONS:
            if ev["evasion"] == "emoji-padding":
                with self.subTest(id=ev["id"]):
                    kept = [t for t in ev["text"].split(" ") if t not in ce.PADS]
                    self.assertEqual(kept, BY_ID[ev["of"]]["text"].split(" "))

    def test_url_obfuscation_hides_every_link(self):
        for ev in EVASIONS:
            if ev["evasion"] == "url-obfuscation":
                with self.subTest(id=ev["id"]):
                    self.assertEqual(ce.urls(ev["text"]), [])


class FilesTest(unittest.TestCase):
    def test_utf8_canonical_json_no_stray_whitespace(self):
        for path in (ce.LINES, ce.EVASIONS, ce.README):
            raw = path.read_bytes()
            with self.subTest(path=path.name):
                text = raw.decode("utf-8")  # valid UTF-8
                self.assertFalse(text.startswith("\ufeff"))
                self.assertNotIn("\r", text)
                self.assertTrue(text.endswith("\n") and not text.endswith("\n\n"))
                for n, row in enumerate(text.split("\n")[:-1], 1):
                    self.assertEqual(row, row.rstrip(), f"{path.name}:{n} trailing whitespace")
                    if path.suffix == ".jsonl":
                        self.assertEqual(json.dumps(json.loads(row), ensure_ascii=False), row, f"{path.name}:{n}")

    def test_readme_tables_match_the_data(self):
        readme = ce.README.read_text(encoding="utf-8")
        self.assertEqual(ce.refresh_readme(readme, ce.tables(LINES, EVASIONS)), readme,
                         "run python3 scripts/chatset_evasions.py")
        self.assertIn("Apache-2.0", readme)
        license_line = re.search(r'^license = "([^"]+)"', (ce.ROOT / "Cargo.toml").read_text(), re.MULTILINE)
        self.assertEqual(license_line.group(1), "Apache-2.0")

    def test_committed_not_ignored(self):
        self.assertIn("!/models/chatset/", (ce.ROOT / ".gitignore").read_text().splitlines())


HOMOGLYPH_BACK = {g: latin for latin, glyphs in ce.HOMOGLYPHS.items() for g in glyphs}


def unhomoglyph(text: str) -> str:
    return "".join(HOMOGLYPH_BACK.get(c, c) for c in text)


def strip_zero_width(text: str) -> str:
    return "".join(c for c in text if c not in ce.ZERO_WIDTH)


if __name__ == "__main__":
    unittest.main()
