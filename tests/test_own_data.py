"""Finetuning on a user's own files (--task cloze / seq2seq, tasks/own_data.py): the pattern parser, the
JSONL/CSV/TSV readers, one-line errors, flag ownership, and end to end runs compared with the benchmark
tasks on the same rows (same token ids, same training losses, same per-language scores)."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import string
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_TOKENIZER, shared_path
from task_fixtures import TASK_DATA, one_thread, spaced_tokenizer  # noqa: F401 (one_thread: autouse)

from common.errors import DataError, UsageError


@pytest.fixture(scope="module")
def tok():
    from data_utils.tokenizer import GLMTokenizer

    return GLMTokenizer(SAMPLE_TOKENIZER)


@pytest.fixture(scope="module")
def spaced(tmp_path_factory):
    return spaced_tokenizer(tmp_path_factory.mktemp("spaced"))


def opts(**kw):
    """The own options of --task seq2seq (given a source or target field) or --task cloze."""
    from tasks.own_data import ClozeOptions, Seq2SeqFileOptions

    return (Seq2SeqFileOptions if "source_field" in kw or "target_field" in kw else ClozeOptions)(**kw)


NLI = dict(text_fields="premise,hypothesis", label_field="label", language_field="lang",
           pattern="{premise}? [MASK], {hypothesis}", verbalizers="entailment=Yes,contradiction=No,neutral=Maybe")


def cloze(tok, seq_length=128, **kw):
    from tasks.own_data import Cloze

    return Cloze(tok, seq_length, options=opts(**{**NLI, **kw}))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------ pattern
def test_pattern_parts_worked_by_hand():
    from tasks.own_data import Part, parse_pattern

    p = parse_pattern("{premise}? [MASK], {hypothesis}", ["premise", "hypothesis"], ("MASK",))
    # the space before [MASK] goes to the verbalizers, the one before {hypothesis} to its value
    assert p.parts == (Part("field", "premise"), Part("literal", "?"), Part("mask", "[MASK]"), Part("literal", ","),
                       Part("field", "hypothesis", " "))
    assert p.mask_space == " "
    assert p.texts({"premise": "A cat", "hypothesis": "B"})[3:] == [(",", False), (" B", True)]
    q = parse_pattern(' {doc} tl;dr:[sMASK] ', ["doc"], ("sMASK", "gMASK"))
    assert q.parts == (Part("field", "doc", " "), Part("literal", " tl;dr:"), Part("mask", "[sMASK]"))
    assert q.mask_space == "" and q.mask == "[sMASK]"
    assert parse_pattern("{a} {b}[gMASK]", ["a", "b"], ("sMASK", "gMASK")).parts == (
        Part("field", "a"), Part("field", "b", " "), Part("mask", "[gMASK]"))


@pytest.mark.parametrize("pattern, fields, message", [
    ("{premise}? [MASK], {hyp}", ["premise", "hypothesis"], r"\{hyp\} names no field of the row; expected one of "
                                                            r"\{premise\}, \{hypothesis\}"),
    ("{premise}? [MASK]", ["premise", "hypothesis"], "does not use the field\\(s\\) hypothesis"),
    ("{premise}?", ["premise"], r"no \[MASK\] blank\(s\); expected exactly one"),
    ("{premise} [MASK] [MASK]", ["premise"], r"2 \[MASK\] blank\(s\); expected exactly one"),
    ("{premise} [sMASK]", ["premise"], r"\[sMASK\] at character 11; this task's blank is \[MASK\]"),
    ("{premise} [MASK] }", ["premise"], r"unmatched '\}' at character 18"),
])
def test_pattern_errors_name_the_problem(pattern, fields, message):
    from tasks.own_data import parse_pattern

    with pytest.raises(UsageError, match=message):
        parse_pattern(pattern, fields, ("MASK",))


def test_verbalizers_must_be_single_tokens(tok):
    with pytest.raises(ValueError, match=r"verbalizer ' Entailed' of label 'entailment' is \d+ tokens"):
        cloze(tok, verbalizers="entailment=Entailed,contradiction=No")
    with pytest.raises(UsageError, match="'entailment' is not label=word"):
        cloze(tok, verbalizers="entailment,contradiction=No")
    with pytest.raises(UsageError, match="--verbalizers is required for this task"):
        cloze(tok, verbalizers=None)
    t = cloze(tok, pattern="{premise}?[MASK], {hypothesis}")  # no space before the blank: the word as given
    assert t.verbalizers["entailment"] == "Yes" and t.labels == ("entailment", "contradiction", "neutral")


def _xnli_rows(split: str, lang: str) -> list[dict]:
    """The XTREME fixture rows with XNLI's own text normalisation done by hand (premise stripped, hypothesis
    without trailing punctuation), which a user converting their data would do."""
    out = []
    for line in (TASK_DATA / "xnli" / "xtreme" / f"{split}-{lang}.tsv").read_text(encoding="utf-8").splitlines():
        a, b, *label = line.split("\t")
        row = {"premise": a.strip(), "hypothesis": b.rstrip(string.punctuation).strip(), "lang": lang}
        if label:
            row["label"] = label[0]
        out.append(row)
    return out


XNLI_PATTERN = ('Based on the fact written in foreign language: "{premise}". Is the followling statement '
                'reasonably True or definitely False: "{hypothesis}"? Answer: [MASK]')
XNLI_VERBALIZERS = "neutral=Maybe,entailment=True,contradiction=False"  # XNLI's label order


@pytest.mark.parametrize("which", ["sample", "spaced"])
def test_cloze_equals_xnli_and_pawsx_ids(tok, spaced, tmp_path, which):
    """The generic task with the benchmarks' patterns gives their token ids, mask positions and labels, with
    a dummy-prefix tokenizer and with one that keeps every space, for inputs that fit (an over-long one is
    cut by each task's own rule: test_cloze_cuts_the_longest_field_first)."""
    from tasks.base import Example
    from tasks.own_data import RecordExample
    from tasks.pawsx import PAWSX
    from tasks.xnli import XNLI

    t = tok if which == "sample" else spaced
    seq = 128
    ref = XNLI(t, seq)
    rows = write_jsonl(tmp_path / "train.jsonl", _xnli_rows("train", "en"))
    own = cloze(t, seq, pattern=XNLI_PATTERN, verbalizers=XNLI_VERBALIZERS, train_file=str(rows))
    ours = own.read_split(None, "train", None)["en"]
    theirs = ref.read_split(TASK_DATA / "xnli" / "xtreme", "train", None)["en"]
    assert own.label_ids.tolist() == ref.label_ids.tolist()
    assert len(ours) == len(theirs) == 15
    for a, b in zip(ours, theirs, strict=True):
        assert own.encode(a) == ref.encode(b)
    # PAWS-X pattern 1: s2 '?' [MASK] ',' ' ' + s1
    p = PAWSX(t, 128, pattern_id=1)
    own = cloze(t, 128, text_fields="sentence1,sentence2", pattern="{sentence2}? [MASK], {sentence1}",
                verbalizers="0=No,1=Yes", language_field=None)
    ex = Example("u", "en", "The cat sleeps.", "A cat sleeps.", "1", "f:1")
    rec = RecordExample("u", "en", {"sentence1": "The cat sleeps.", "sentence2": "A cat sleeps"}, "1", "f:1")
    assert own.encode(rec) == p.encode(ex)
    assert own.label_ids.tolist() == p.label_ids.tolist()


def test_cloze_cuts_the_longest_field_first(spaced):
    """Own data keeps its rule on an over-long row: the longest field loses a token first (the first of equal
    ones), where --task xnli cuts as mGLM, the hypothesis first. Premise "The cat sleeps." (7 pieces of the
    space-keeping tokenizer), hypothesis "A cat sleeps" (5), 3 tokens too many: premise 7 -> 6 -> 5, tie ->
    premise 4; the hypothesis stays whole."""
    from tasks.base import Example
    from tasks.own_data import RecordExample
    from tasks.xnli import XNLI

    t = spaced
    lit1 = 'Based on the fact written in foreign language: "'
    lit2 = '". Is the followling statement reasonably True or definitely False: "'
    premise = ["T", "he", "▁ca", "t", "▁sleep", "s", "."]
    hypothesis = ["A", "▁ca", "t", "▁sleep", "s"]

    def ids(p, h):
        return [t.cls_id, *t.sp.EncodeAsIds(lit1), *map(t.sp.PieceToId, p), *t.sp.EncodeAsIds(lit2),
                *map(t.sp.PieceToId, h), *t.sp.EncodeAsIds('"? Answer:'), t.mask_id, t.eos_id]

    seq = len(ids(premise, hypothesis)) + 1 - 3
    rec = RecordExample("u", "en", {"premise": "The cat sleeps.", "hypothesis": "A cat sleeps"}, "neutral", "f:1")
    assert cloze(t, seq, pattern=XNLI_PATTERN, verbalizers=XNLI_VERBALIZERS).encode(rec)["input_ids"] == ids(
        premise[:4], hypothesis)
    ex = Example("u", "en", "The cat sleeps.", "A cat sleeps", "neutral", "f:1")
    assert XNLI(t, seq).encode(ex)["input_ids"] == ids(premise, hypothesis[:2])


def test_seq2seq_source_equals_summarization_prompt(spaced, tok):
    """'{document} tl;dr:[sMASK]' with a leading space is mGLM's summary prompt: [CLS] ' ' + source, the cue
    and the blank, the source cut first when the input is too long."""
    from tasks.own_data import RecordExample, Seq2Seq
    from tasks.summarization import summary_source_ids

    for t in (spaced, tok):
        for seq in (64, 12):
            task = Seq2Seq(t, seq, options=opts(source_field="document", target_field="summary",
                                                pattern=" {document} tl;dr: [sMASK]"))
            doc = "A long document about parsers, trees and the people who build them."
            rec = RecordExample("u", "all", {"document": doc}, ("A summary.",), "f:1")
            assert task.source_ids(rec) == summary_source_ids(t, doc, "en", seq)
            s = task.encode(rec)
            assert s["target"] == t.encode(" A summary.") + [t.eop_id] and s["source"][-1] == t.smask_id
    g = Seq2Seq(tok, 32, options=opts(source_field="q", target_field="a"))  # default pattern '{q} [sMASK]'
    assert g.source_ids(RecordExample("u", "all", {"q": "Who?"}, None, "f:1")) == [tok.cls_id, *tok.encode("Who?"),
                                                                                  tok.smask_id]
    gm = Seq2Seq(tok, 32, options=opts(source_field="q", target_field="a", pattern="{q} [gMASK]"))
    assert gm.encode(RecordExample("u", "all", {"q": "Who?"}, ("Me",), "f:1"))["source"][-1] == tok.gmask_id


def test_seq2seq_squad_metric_by_hand(tok):
    """EM / F1 of SQuAD v1.1 over every example, several gold answers, worked by hand."""
    from tasks.own_data import RecordExample, Seq2Seq

    task = Seq2Seq(tok, 32, options=opts(source_field="q", target_field="a", metric="squad"))
    exs = [RecordExample("0", "en", {"q": ""}, ("the Alder river", "Alder"), "f:1"),
           RecordExample("1", "en", {"q": ""}, ("1412",), "f:2")]
    # 1: "Alder" matches the second gold exactly (EM 1, F1 1); 2: "in 1412" vs "1412": EM 0, F1 2*(1/2*1)/(1.5)
    m = task.metrics(["Alder", "in 1412"], exs)
    assert m["exact_match"] == pytest.approx(50.0) and m["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert task.metric_name == "f1"


# ------------------------------------------------------------------------------------------ readers
def test_jsonl_csv_tsv_read_the_same_rows(tok, tmp_path):
    rows = [["A cat, sleeping.", 'He said "no"', "neutral", "en"], ["Ein Hund.", "Kein Hund.", "contradiction", "de"]]
    head = ["premise", "hypothesis", "label", "lang"]
    files = {
        "jsonl": write_jsonl(tmp_path / "d.jsonl", [dict(zip(head, r, strict=True)) for r in rows]),
        "csv": write_csv(tmp_path / "d.csv", head, rows),
        "tsv": tmp_path / "d.tsv",
    }
    files["tsv"].write_text("\t".join(head) + "\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    got = {}
    for kind, path in files.items():
        t = cloze(tok, dev_file=str(path))
        dev = t.read_split(None, "dev", None)
        assert list(dev) == ["en", "de"]
        got[kind] = [(e.lang, e.fields, e.label, e.source) for v in dev.values() for e in v]
        first = 1 if kind == "jsonl" else 2  # CSV/TSV: line 1 is the header
        assert [x[3] for x in got[kind]] == [f"{path}:{first}", f"{path}:{first + 1}"]
    assert got["jsonl"][0][1] == {"premise": "A cat, sleeping.", "hypothesis": 'He said "no"'}
    assert [x[:3] for x in got["jsonl"]] == [x[:3] for x in got["csv"]] == [x[:3] for x in got["tsv"]]
    # a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
    for kind in ("csv", "tsv", "jsonl"):
        bom = tmp_path / f"bom.{kind}"
        bom.write_bytes(b"\xef\xbb\xbf" + files[kind].read_bytes())
        assert [e.fields for v in cloze(tok, dev_file=str(bom)).read_split(None, "dev", None).values()
                for e in v] == [x[1] for x in got[kind]]
    # an integer label in JSONL reads as its digits; --languages keeps the listed languages in their order
    t = cloze(tok, verbalizers="0=No,1=Yes", dev_file=str(write_jsonl(tmp_path / "i.jsonl", [
        {"premise": "a", "hypothesis": "b", "label": 1, "lang": "de"},
        {"premise": "c", "hypothesis": "d", "label": 0, "lang": "en"}])))
    dev = t.read_split(None, "dev", ["en", "de"])
    assert list(dev) == ["en", "de"] and dev["de"][0].label == "1" and t.expected_languages("test") == ("en", "de")


def test_test_file_without_labels_and_absent_languages(tok, tmp_path):
    t = cloze(tok, dev_file=str(TASK_DATA / "own" / "nli-dev.csv"), test_file=str(TASK_DATA / "own" / "nli-test.csv"))
    dev = t.read_split(None, "dev", None)
    test = t.read_split(None, "test", None)
    assert list(dev) == ["ar", "de", "en", "es", "fr", "hi", "ru", "zh"] and list(test) == ["de", "en", "zh"]
    assert all(e.label is None for v in test.values() for e in v) and not t.has_gold(test["de"])
    assert sum(map(len, dev.values())) == 30
    # the run reports the dev languages the test file lacks as absent (finetune_glm.absent_languages)
    missing = [lang for lang in t.expected_languages("test") if lang not in test]
    assert missing == ["ar", "es", "fr", "hi", "ru"]


def _error(tok, tmp_path, name: str, text: str, split: str = "dev", **kw) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    languages = kw.pop("languages", None)  # read_split's argument (--languages), not a task option
    t = cloze(tok, **{f"{split}_file": str(path)}, **kw)
    with pytest.raises((DataError, UsageError)) as e:
        t.read_split(None, split, languages)
    return str(e.value).replace(str(tmp_path) + "/", "")


def test_bad_rows_are_one_line_naming_file_and_line(tok, tmp_path):
    good = '{"premise": "a", "hypothesis": "b", "label": "neutral", "lang": "en"}\n'
    cases = [
        ("a.jsonl", good + '{"premise": "a", "label": "neutral", "lang": "en"}\n',
         "a.jsonl:2: no field(s) hypothesis (the row has premise, label, lang); expected premise, hypothesis, "
         "lang"),
        ("a2.jsonl", '{"premise": "a", "hypothesis": "b", "lang": "en"}\n' + good,
         "a2.jsonl:2: a 'label' where the rows before have none; a dev file is labelled in every row or in none"),
        ("b.jsonl", good + '{"premise": "a", "hypothesis": "b", "label": "entails", "lang": "en"}\n',
         "b.jsonl:2: unknown label 'entails' in field 'label'; expected one of ['entailment', 'contradiction', "
         "'neutral'] (--verbalizers)"),
        ("c.jsonl", good + "{premise: a}\n", "c.jsonl:2: not valid JSON (Expecting property name enclosed in "
                                             "double quotes at column 2)"),
        ("d.jsonl", good + '["a", "b"]\n', "d.jsonl:2: a JSON list, not an object"),
        ("e.jsonl", good.replace('"b"', "null"), "e.jsonl:1: field 'hypothesis' is null (None); expected a string"),
        ("f.csv", "A cat.,A dog.,neutral,en\n", "f.csv:1: the header ['A cat.', 'A dog.', 'neutral', 'en'] has no "
                                              "column(s) premise, hypothesis, lang; expected a header row naming "
                                              "the fields premise, hypothesis, lang (a file without a header row?)"),
        ("g.csv", "premise,hypothesis,label,lang\na,b,neutral,en\na,b,neutral\n",
         "g.csv:3: row has fewer fields than the header"),
        ("h.tsv", "premise\thypothesis\tlabel\tlang\na\tb\tneutral\ten\textra\n",
         "h.tsv:2: 5 tab-separated fields, more than the 4 columns"),
        ("i.csv", "premise,hypothesis,label,lang\na,b,neutral,en\na,b,,en\n",
         "i.csv:3: an empty 'label' where the rows before have one; a dev file is labelled in every row or in none"),
        ("j.csv", "premise,hypothesis,label,lang\na,b,neutral,\n",
         "j.csv:2: language '' in field 'lang'; expected a language name"),
        ("k.txt", "x", "--dev-file k.txt: unknown file type '.txt'; expected .jsonl (JSON lines), .csv or .tsv"),
        ("l.csv", "premise,hypothesis,label,lang\n", "l.csv: no rows; expected a header and one example per line"),
    ]
    for name, text, message in cases:
        got = _error(tok, tmp_path, name, text)
        assert got.startswith(message), (name, got)
        assert "\n" not in got
    got = _error(tok, tmp_path, "m.csv", "premise,hypothesis,lang\na,b,en\n", split="train")
    assert got.startswith("m.csv:1: the header ['premise', 'hypothesis', 'lang'] has no column(s) label"), got
    got = _error(tok, tmp_path, "n.csv", "premise,hypothesis,label,lang\na,b,neutral,en\n", languages=["de"])
    assert got == "n.csv: no rows of language 'de' in field 'lang' (listed by --languages)"


def test_flags_belong_to_their_task(tmp_path):
    """Own-data flags are refused with the benchmark tasks, --data-dir / --pattern-id / the other task's flags
    with cloze and seq2seq; a missing file or dev set is named before anything runs."""
    from tasks.cli import parse_finetune_args

    f = write_csv(tmp_path / "t.csv", ["a", "label"], [["x", "0"]])
    cl = ["--task", "cloze", "--train-file", str(f), "--dev-file", str(f)]
    bad = [
        (["--task", "xnli", "--data-dir", str(TASK_DATA / "xnli" / "xtreme"), "--train-file", str(f)],
         r"--train-file: not an option of --task xnli \(`finetune_glm.py --task xnli --help` lists its options\)"),
        ([*cl, "--data-dir", str(tmp_path)], "--data-dir: not an option of --task cloze"),
        ([*cl, "--pattern-id", "1"], r"--pattern-id \(use --pattern\): not an option of --task cloze"),
        ([*cl, "--metric", "squad"], "--metric: not an option of --task cloze"),
        (["--task", "seq2seq", "--train-file", str(f), "--dev-file", str(f), "--verbalizers", "a=b"],
         "--verbalizers: not an option of --task seq2seq"),
        (["--task", "cloze", "--train-file", str(f)], "selects the model on --dev-file; give both"),
        (["--task", "cloze", "--epochs", "0"], "nothing to evaluate; give --dev-file and/or --test-file"),
        ([*cl, "--languages", "de"], "--languages needs --language-field"),
        (["--task", "cloze", "--train-file", str(tmp_path / "no.csv"), "--dev-file", str(f)],
         "--train-file .*no.csv: file not found"),
    ]
    for argv, message in bad:
        with pytest.raises(UsageError, match=message):
            parse_finetune_args(argv)
    assert parse_finetune_args([*cl, "--pattern", "{a} [MASK]"]).task_options.train_file == str(f)


def test_cli_error_is_one_line_with_exit_code(tmp_path):
    """A bad row stops finetune_glm.py before training with one line and exit code 1 (a data error)."""
    bad = write_jsonl(tmp_path / "train.jsonl", [{"premise": "a", "hypothesis": "b", "label": "entails"}])
    cmd = [sys.executable, str(REPO / "finetune_glm.py"), "--task", "cloze", "--model-config",
           str(REPO / "config/model/glm-tiny.json"), "--tokenizer-model", str(SAMPLE_TOKENIZER), "--device", "cpu",
           "--train-file", str(bad), "--dev-file", str(bad), "--text-fields", "premise,hypothesis",
           "--label-field", "label", "--pattern", "{premise}? [MASK], {hypothesis}",
           "--verbalizers", "entailment=Yes,contradiction=No", "--no-tensorboard"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"finetune_glm.py: error: {bad}:1: unknown label 'entails' in field 'label'; expected one of "
        "['entailment', 'contradiction'] (--verbalizers)")
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------ end to end
def _run(argv: list[str]) -> dict:
    import finetune_glm

    return finetune_glm.main(argv)


COMMON = ["--model-config", str(REPO / "config/model/glm-tiny.json"), "--tokenizer-model", str(SAMPLE_TOKENIZER),
          "--device", "cpu", "--no-tensorboard", "--hidden-dropout", "0", "--attention-dropout", "0",
          "--lr", "3e-3", "--log-interval", "100", "--seed", "7"]


def _scores(r: dict, split: str) -> dict:
    return {k: v for k, v in r[split].items() if k not in ("avg", "pooled")}


def _same_scores(a: dict, b: dict) -> None:
    """Per-language (and avg / pooled) score dicts equal up to float rounding."""
    assert list(a) == list(b)
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-9), k


@pytest.mark.slow
def test_cloze_jsonl_end_to_end_equals_xnli(tmp_path):
    """XNLI's fixtures as JSONL through --task cloze with XNLI's pattern: the same training losses, the same
    per-language dev and test scores as --task xnli on the XTREME files, and the same tables."""
    langs = ["ar", "de", "en", "es", "fr", "hi", "ru", "zh"]
    train = write_jsonl(tmp_path / "train.jsonl", _xnli_rows("train", "en"))
    dev = write_jsonl(tmp_path / "dev.jsonl", [r for lang in langs for r in _xnli_rows("dev", lang)])
    test = write_jsonl(tmp_path / "test.jsonl", [r for lang in ("de", "en", "zh") for r in _xnli_rows("test", lang)])
    run = ["--epochs", "2", "--batch-size", "8", "--seq-length", "96", *COMMON]
    ref = _run(["--task", "xnli", "--data-dir", str(TASK_DATA / "xnli" / "xtreme"), "--save", str(tmp_path / "x"),
                *run])
    own = _run(["--task", "cloze", "--train-file", str(train), "--dev-file", str(dev), "--test-file", str(test),
                "--text-fields", "premise,hypothesis", "--label-field", "label", "--language-field", "lang",
                "--pattern", XNLI_PATTERN, "--verbalizers", XNLI_VERBALIZERS, "--save", str(tmp_path / "c"), *run])
    assert len(own["train_losses"]) == 4
    assert own["train_losses"] == pytest.approx(ref["train_losses"], abs=1e-6)
    assert list(_scores(own, "dev")) == langs
    _same_scores(own["dev"], ref["dev"])
    assert list(_scores(own, "test")) == ["de", "en", "zh"]  # the labelled sample test files
    _same_scores(own["test"], ref["test"])
    assert own["best_step"] == ref["best_step"]
    assert own["absent"] == {"dev": [], "test": ["ar", "es", "fr", "hi", "ru"]}
    table = (tmp_path / "c" / "results.txt").read_text().splitlines()
    assert table[0].split() == ["cloze", "dev", *langs, "avg", "pooled"]
    ref_row = [x for x in (tmp_path / "x" / "results.txt").read_text().splitlines()[1].split() if x != "absent"]
    assert table[1].split() == ref_row  # the same accuracy row, XNLI's absent languages aside
    preds = [json.loads(x) for x in (tmp_path / "c" / "predictions" / "cloze-dev-de.jsonl").read_text().splitlines()]
    ref_preds = (tmp_path / "x" / "predictions" / "xnli-dev-de.jsonl").read_text().splitlines()
    assert [p["label"] for p in preds] == [json.loads(x)["label"] for x in ref_preds]
    assert [p["idx"] for p in preds][:2] == ["dev-de-0", "dev-de-1"]


@pytest.mark.slow
def test_cloze_csv_of_real_pawsx_rows_equals_pawsx(tmp_path):
    """Real PAWS-X rows (XTREME's dev files: train on 24 English rows, score 8 rows of each of 4 languages,
    the unlabelled test rows of 2) as CSV through --task cloze with pattern 1: the training losses and
    per-language scores of --task pawsx --pattern-id 1 on the same rows in XTREME's layout."""
    from tasks.base import read_tsv

    real = shared_path("real", "pawsx_xtreme")

    def rows(name: str, n: int, skip: int = 0) -> list[list[str]]:
        cols = [0, 1, 2] if name.startswith("dev") else [0, 1]
        got = [f for _, f in read_tsv(real / name, cols, header=False, expect="XTREME columns")][skip:skip + n]
        assert len(got) == n
        return got

    xt = tmp_path / "xtreme"
    xt.mkdir()
    split_rows = {"train-en": rows("dev-en.tsv", 24), **{f"dev-{lang}": rows(f"dev-{lang}.tsv", 8, 24 if lang == "en"
                                                                              else 0) for lang in ("de", "en", "ja", "zh")},
                  **{f"test-{lang}": rows(f"test-{lang}.tsv", 4) for lang in ("de", "en")}}
    for name, rs in split_rows.items():
        (xt / f"{name}.tsv").write_text("".join("\t".join(r) + "\n" for r in rs), encoding="utf-8")

    def own_rows(prefix: str) -> list[list[str]]:  # PAWS-X drops sentence 2's final punctuation; the CSV does too
        return [[r[0], r[1].rstrip(string.punctuation), *r[2:], name.split("-")[1]]
                for name, rs in split_rows.items() if name.startswith(prefix) for r in rs]

    head = ["sentence1", "sentence2", "label", "lang"]
    train = write_csv(tmp_path / "train.csv", head, own_rows("train"))
    dev = write_csv(tmp_path / "dev.csv", head, own_rows("dev"))
    test = write_csv(tmp_path / "test.csv", ["sentence1", "sentence2", "lang"], own_rows("test"))
    run = ["--epochs", "1", "--batch-size", "8", "--seq-length", "128", "--select-on", "avg-dev", *COMMON]
    ref = _run(["--task", "pawsx", "--data-dir", str(xt), "--pattern-id", "1", "--save", str(tmp_path / "p"), *run])
    own = _run(["--task", "cloze", "--train-file", str(train), "--dev-file", str(dev), "--test-file", str(test),
                "--text-fields", "sentence1,sentence2", "--label-field", "label", "--language-field", "lang",
                "--pattern", "{sentence2}? [MASK], {sentence1}", "--verbalizers", "0=No,1=Yes",
                "--save", str(tmp_path / "c"), *run])
    assert len(own["train_losses"]) == 3
    assert own["train_losses"] == pytest.approx(ref["train_losses"], abs=1e-6)
    assert list(_scores(own, "dev")) == ["de", "en", "ja", "zh"]
    _same_scores(own["dev"], ref["dev"])
    assert own["absent"] == {"dev": [], "test": ["ja", "zh"]}
    text = (tmp_path / "c" / "results.txt").read_text()
    # unlabelled test rows (XTREME's test files carry no labels) are predicted, not scored
    assert re.search(r"cloze test +ja +zh\naccuracy +absent +absent", text)
    preds = (tmp_path / "c" / "predictions" / "cloze-test-de.jsonl").read_text().splitlines()
    assert len(preds) == 4 and json.loads(preds[0])["label"] in ("0", "1")
    assert preds == (tmp_path / "p" / "predictions" / "pawsx-test-de.jsonl").read_text().splitlines()


def _summary_rows(split: str) -> list[dict]:
    """mGLM's alternating-line NCLS sample as JSONL, texts cleaned as the NCLS reader cleans them."""
    from tasks.summarization import clean_text

    lines = (TASK_DATA / "ncls_mglm" / f"{split}.txt").read_text(encoding="utf-8").splitlines()
    return [{"document": clean_text(lines[i]), "summary": clean_text(lines[i + 1]), "lang": "zh2en"}
            for i in range(0, len(lines), 2)]


@pytest.mark.slow
def test_seq2seq_jsonl_end_to_end_equals_ncls_with_language_tables(tmp_path):
    """The NCLS sample as JSONL through --task seq2seq with the summary prompt: the training losses and the
    ROUGE of --task ncls; then the same dev rows split into two languages give per-language tables whose
    pooled score is NCLS's, and a test file with one of them shows the other absent."""
    train = write_jsonl(tmp_path / "train.jsonl", _summary_rows("train"))
    dev_rows = _summary_rows("dev")
    dev = write_jsonl(tmp_path / "dev.jsonl", dev_rows)
    gen = ["--seq-length", "64", "--tgt-seq-length", "12", "--min-tgt-length", "0", "--num-beams", "1",
           "--length-penalty", "0", "--no-repeat-ngram-size", "0", "--label-smoothing", "0.1",
           "--select-on", "avg-dev", "--epochs", "2", "--batch-size", "4", *COMMON]
    ref = _run(["--task", "ncls", "--data-dir", str(TASK_DATA / "ncls_mglm"), "--save", str(tmp_path / "n"), *gen])
    own_args = ["--task", "seq2seq", "--train-file", str(train), "--source-field", "document", "--target-field",
                "summary", "--language-field", "lang", "--pattern", " {document} tl;dr: [sMASK]", *gen]
    own = _run([*own_args, "--dev-file", str(dev), "--save", str(tmp_path / "s")])
    assert own["train_losses"] == pytest.approx(ref["train_losses"], abs=1e-6)
    _same_scores(own["dev"], ref["dev"])
    assert own["metric"] == "rouge-l" and list(own["dev"]) == ["zh2en", "avg", "pooled"]
    pred = (tmp_path / "s" / "predictions" / "seq2seq-dev-zh2en.pred.txt").read_text()
    assert pred == (tmp_path / "n" / "predictions" / "ncls-dev-zh2en.pred.txt").read_text()

    two = write_jsonl(tmp_path / "dev2.jsonl", [{**r, "lang": "xx" if i == 1 else "yy"} for i, r in enumerate(dev_rows)])
    test = write_jsonl(tmp_path / "test.jsonl", [{**dev_rows[1], "lang": "xx"}])
    split = _run([*own_args, "--dev-file", str(two), "--test-file", str(test), "--save", str(tmp_path / "t"),
                  "--epochs", "0"])
    assert list(_scores(split, "dev")) == ["yy", "xx"] and split["absent"] == {"dev": [], "test": ["yy"]}
    assert split["dev"]["xx"]["rouge-l"] == split["test"]["xx"]["rouge-l"]
    table = (tmp_path / "t" / "results.txt").read_text()
    assert re.search(r"seq2seq test +yy +xx +avg +pooled", table) and "absent" in table


@pytest.mark.slow
def test_seq2seq_squad_metric_end_to_end_equals_official_script(tmp_path):
    """SQuAD questions as JSONL (several gold answers per question, two languages) through --task seq2seq
    --metric squad with mGLM's QA prompt: per-language exact match / F1 equal the official SQuAD v1.1
    evaluation of the written predictions."""
    from tasks.metrics import squad_evaluate

    squad = json.loads((TASK_DATA / "squad" / "train-v1.1.json").read_text(encoding="utf-8"))
    rows = [{"id": qa["id"], "question": qa["question"], "context": p["context"], "lang": "en" if i % 2 else "xx",
             "answers": [a["text"] for a in qa["answers"]] + ["something else"]}
            for a in squad["data"] for p in a["paragraphs"] for i, qa in enumerate(p["qas"])]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    r = _run(["--task", "seq2seq", "--train-file", str(data), "--dev-file", str(data), "--source-field",
              "question,context", "--target-field", "answers", "--language-field", "lang", "--metric", "squad",
              "--pattern", "{question} [sMASK]. {context}", "--epochs", "1", "--batch-size", "4", "--seq-length",
              "96", "--tgt-seq-length", "6", "--save", str(tmp_path / "s"), *COMMON])
    assert list(r["dev"]) == ["xx", "en", "avg", "pooled"] and r["metric"] == "f1"
    for lang in ("xx", "en"):
        recs = [json.loads(x) for x in (tmp_path / "s" / "predictions" / f"seq2seq-dev-{lang}.jsonl")
                .read_text(encoding="utf-8").splitlines()]
        mine = [row for row in rows if row["lang"] == lang]
        assert [x["gold"] for x in recs] == [row["answers"] for row in mine]
        dataset = [{"paragraphs": [{"context": "", "qas": [{"id": row["id"], "answers": [{"text": t} for t in
                                                                                        row["answers"]]}
                                                          for row in mine]}]}]
        official = squad_evaluate(dataset, {row["id"]: x["prediction"] for row, x in zip(mine, recs, strict=True)})
        assert r["dev"][lang] == pytest.approx(official, abs=1e-9)


# ------------------------------------------------------------------------------------------ README
def readme_examples() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Finetune on your own data", 1)[1].split("\n#", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```bash\n")[1:]]


@pytest.mark.slow
def test_readme_examples_run_as_written(tmp_path):
    """The README's two examples, run as written (``python`` is this interpreter) in a folder that has the
    repository's data, configs and scripts: per-language dev scores and absent test languages come out."""
    cloze_cmd, seq2seq_cmd = readme_examples()
    assert len(cloze_cmd.strip().splitlines()) == 5 and cloze_cmd.startswith("python finetune_glm.py --task cloze")
    for name in ("data", "config", "finetune_glm.py"):
        os.symlink(REPO / name, tmp_path / name)
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    results = []
    for cmd in (cloze_cmd, seq2seq_cmd):
        r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        argv = shlex.split(cmd.replace("\\\n", " "))
        out = tmp_path / argv[argv.index("--save") + 1]
        results.append((json.loads((out / "results.json").read_text()), (out / "results.txt").read_text()))
    (cl, cl_table), (s2s, s2s_table) = results
    assert list(_scores(cl, "dev")) == ["ar", "de", "en", "es", "fr", "hi", "ru", "zh"]
    assert cl["absent"]["test"] == ["ar", "es", "fr", "hi", "ru"] and "cloze dev" in cl_table
    assert list(s2s["dev"]) == ["zh-en", "avg", "pooled"] and "rouge-l" in s2s["dev"]["zh-en"]
    assert "seq2seq dev" in s2s_table
