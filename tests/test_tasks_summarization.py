"""Summarization tasks (tasks/summarization.py, ncls, scisummnet_zh): readers on the bundled fixtures,
the prompt, ROUGE in every tokenisation against hand-worked values (and against Google's rouge-score
where it applies), task defaults of the flags, bad input, and finetune_glm end to end on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, SAMPLE_TOKENIZER

from tasks.cli import parse_finetune_args
from tasks.ncls import NCLS, NCLSOptions
from tasks.scisummnet_zh import ScisummNetZh
from tasks.summarization import (
    PROMPTS,
    clean_text,
    punctuation_standardization,
    read_alternating,
    read_ncls_raw,
    summary_rouge,
)

DATA = REPO / "data" / "sample" / "tasks"
RAW, MGLM, SCI = DATA / "ncls_raw", DATA / "ncls_mglm", DATA / "scisummnet_zh"
ROUGE_KEYS = ["rouge-1", "rouge-2", "rouge-l"] + [f"rouge-{n}_{t}" for t in ("char", "word", "mglm") for n in "12l"]


# ------------------------------------------------------------------------------------------ readers
def test_raw_release_reader(sample_tokenizer):
    task = NCLS(sample_tokenizer, 128)
    splits = {s: task.read_split(RAW, s, None) for s in ("train", "dev", "test")}
    assert task.train_language == "en2zh"
    assert {s: {k: len(v) for k, v in d.items()} for s, d in splits.items()} == {
        "train": {"en2zh": 7}, "dev": {"en2zh": 3}, "test": {"en2zh": 2}}
    first = splits["train"]["en2zh"][0]
    assert first.uid == "train-en2zh-0" and first.tgt_lang == "zh" and first.location.endswith("EN2ZHSUM_train.txt:2")
    # the two <ZH-REF-i> sentences joined without a separator; the <EN-REF> line is not used
    assert first.summary == "本文提出一种基于神经网络的句法分析方法，在英文树库上取得了更高的准确率。"
    # punctuation standardisation: curly quotes -> straight, en dash -> hyphen
    assert 'a "small" stack - the \'shift\' stack' in first.source
    # test records: the human-corrected reference replaces the automatic sentences
    assert splits["test"]["en2zh"][0].summary.startswith("人工校对：本文用神经打分器")


def test_alternating_reader_and_direction_from_content(sample_tokenizer):
    task = NCLS(sample_tokenizer, 128)
    train = task.read_split(MGLM, "train", None)
    assert task.train_language == "zh2en" and list(train) == ["zh2en"] and len(train["zh2en"]) == 7
    ex = train["zh2en"][1]
    assert ex.tgt_lang == "en" and ex.source.startswith("本文研究中英机器翻译")
    assert ex.summary == 'An attention model improves English-Chinese translation of "long" sentences.'
    assert ex.location.endswith("train.txt:3")
    assert [len(task.read_split(MGLM, s, None)["zh2en"]) for s in ("dev", "test")] == [3, 2]


def test_direction_flag_subfolders_and_languages(tmp_path, sample_tokenizer):
    (tmp_path / "zh2en").mkdir()
    for s in ("train", "dev"):
        (tmp_path / "zh2en" / f"{s}.txt").write_text("中文文章。\nEnglish summary.\n", encoding="utf-8")
    task = NCLS(sample_tokenizer, 64, options=NCLSOptions(ncls_direction="zh2en"))
    assert task.train_language == "zh2en"
    assert task.read_split(tmp_path, "test", None) == {}  # no test file: no test scores
    assert task.read_split(tmp_path, "dev", ["zh2en"])["zh2en"][0].summary == "English summary."
    with pytest.raises(ValueError, match="keyed by the direction"):
        task.read_split(tmp_path, "dev", ["en"])


def test_punctuation_standardization():
    assert punctuation_standardization("“a” ‘b’ c–d") == "\"a\" 'b' c-d"
    assert clean_text("  a \t b\n c ") == "a b c"


def test_scisummnet_zh_reader(sample_tokenizer):
    task = ScisummNetZh(sample_tokenizer, 128)
    got = {s: task.read_split(SCI, s, None)["en2zh"] for s in ("train", "dev", "test")}
    assert [len(v) for v in got.values()] == [6, 2, 2]
    first = got["train"][0]
    # XML: the <S> of every <SECTION> in order; the title and the abstract are not part of the source
    assert first.source == ("We present a new method for parsing sentences with neural networks. The parser reads "
                            "words from left to right and builds a tree with a small stack. Experiments on the "
                            "English treebank show higher accuracy than earlier parsers.")
    assert first.summary.startswith("本文提出一种") and first.tgt_lang == "zh"
    assert got["dev"][0].summary.startswith("本文收集五种语言")  # Python-dict line
    assert got["dev"][1].summary.startswith("本文用神经打分器")  # JSON line
    assert got["test"][0].source.startswith("Language models predict")  # no XML: from scisummnet.csv


def test_scisummnet_paper_without_sections_falls_back_to_the_whole_document(tmp_path, sample_tokenizer, capsys):
    """A paper whose XML has no <SECTION> (its <S> directly under <PAPER>, as 63 of the CL-SciSumm copies)
    gives every <S> of the document; a paper with sections still gives only theirs; the run says how many."""
    from training.logging import get_logger

    def paper(pid: str, body: str) -> None:
        d = tmp_path / "top1000_complete" / pid / "Documents_xml"
        d.mkdir(parents=True)
        (d / f"{pid}.xml").write_text(f"<PAPER>{body}</PAPER>", encoding="utf-8")

    paper("A1", '<S sid="0">Title  line.</S><ABSTRACT><S sid="1">An abstract.</S></ABSTRACT>'
                '<SECTION title="1"><S sid="2">In a section.</S></SECTION>')
    paper("B2", '<S sid="0">First  sentence.</S>\n  <S sid="1">Second <b>bold</b> one.</S>')
    paper("C3", '<ABSTRACT><S sid="0">Only an abstract.</S></ABSTRACT>')
    (tmp_path / "scisummnet-zh.dev.txt").write_text(
        "".join(json.dumps({"pid": p, "zh_sum": f"摘要{p}"}) + "\n" for p in ("A1", "B2", "C3")), encoding="utf-8")
    get_logger(0)  # the run's logger (rank 0: INFO to stdout)
    capsys.readouterr()
    got = ScisummNetZh(sample_tokenizer, 128).read_split(tmp_path, "dev", None)["en2zh"]
    assert [e.source for e in got] == ["In a section.", "First sentence. Second bold one.", "Only an abstract."]
    notes = [line for line in capsys.readouterr().out.splitlines() if "<SECTION>" in line]
    assert len(notes) == 1 and "(dev): 2 of 3 papers have no <SECTION>" in notes[0] and "(B2, C3)" in notes[0]


def test_scisummnet_zh_mglm_split(tmp_path, sample_tokenizer):
    """One records file: records 1-799 train, 801.. dev and test (record 800 in neither)."""
    n = 805
    with open(tmp_path / "scisummnet.csv", "w", encoding="utf-8") as w:
        w.write("pid,text\n" + "".join(f"P{i},Paper number {i}.\n" for i in range(1, n + 1)))
    (tmp_path / "scisummnet-zh.txt").write_text(
        "".join(repr({"pid": f"P{i}", "zh_sum": f"摘要{i}"}) + "\n" for i in range(1, n + 1)), encoding="utf-8")
    task = ScisummNetZh(sample_tokenizer, 64)
    train = task.read_split(tmp_path, "train", None)["en2zh"]
    dev = task.read_split(tmp_path, "dev", None)["en2zh"]
    test = task.read_split(tmp_path, "test", None)["en2zh"]
    assert len(train) == 799 and train[-1].summary == "摘要799"
    assert [e.summary for e in dev] == [e.summary for e in test] == [f"摘要{i}" for i in range(801, 806)]
    assert dev[0].source == "Paper number 801."


# ------------------------------------------------------------------------------------------ prompt
@pytest.mark.parametrize("tgt", ["zh", "en"])
def test_prompt_truncates_the_source_and_keeps_the_cue(sample_tokenizer, tgt):
    tok = sample_tokenizer
    task = NCLS(tok, 40)
    examples = task.read_split(RAW, "train", None)["en2zh"]
    ex = examples[0].__class__(**{**examples[0].__dict__, "tgt_lang": tgt, "source": examples[0].source * 5})
    cue = tok.encode(PROMPTS[tgt])
    ids = task.source_ids(ex)
    assert len(ids) == 40 and ids[0] == tok.cls_id and ids[-1] == tok.smask_id
    assert ids[-1 - len(cue):-1] == cue
    assert ids[1:-1 - len(cue)] == tok.encode(" " + ex.source)[:40 - 2 - len(cue)]
    short = examples[1]  # fits: the whole source, untouched
    ids = NCLS(tok, 512).source_ids(short)
    assert ids == [tok.cls_id, *tok.encode(" " + short.source), *tok.encode(" 中文摘要："), tok.smask_id]
    assert sum(1 for i in ids if i == tok.smask_id) == 1


def test_prompt_too_short(sample_tokenizer):
    ex = NCLS(sample_tokenizer, 64).read_split(RAW, "dev", None)["en2zh"][0]
    with pytest.raises(ValueError, match="--seq-length 4: too short"):
        NCLS(sample_tokenizer, 4).source_ids(ex)


# ------------------------------------------------------------------------------------------ ROUGE
def _encode_table(text: str) -> list[int]:
    table = {"北京": [7, 8], "is": [9], "big": [10], "the": [11], "capital": [12, 13]}
    return [i for w in text.split() for i in table[w]]


def test_rouge_hand_worked_in_every_tokenisation():
    s = summary_rouge(["北京 is big"], ["北京 is the capital"], "char", _encode_table)
    # char: 北 京 is big | 北 京 is the capital. R1 3/4, 3/5 -> 2/3; R2 overlap 2 of 3 / 4 -> 4/7; LCS 3 -> 2/3
    # word: 北京 is big | 北京 is the capital.   R1 2/3, 2/4 -> 4/7; R2 1 of 2 / 3 -> 2/5;      LCS 2 -> 4/7
    # mglm: 7 8 9 10 | 7 8 9 11 12 13.           R1 3/4, 3/6 -> 3/5; R2 2 of 3 / 5 -> 1/2;      LCS 3 -> 3/5
    expect = {"char": (2 / 3, 4 / 7, 2 / 3), "word": (4 / 7, 2 / 5, 4 / 7), "mglm": (3 / 5, 1 / 2, 3 / 5)}
    for t, (r1, r2, rl) in expect.items():
        assert [s[f"rouge-1_{t}"], s[f"rouge-2_{t}"], s[f"rouge-l_{t}"]] == pytest.approx([100 * r1, 100 * r2, 100 * rl])
    assert [s["rouge-1"], s["rouge-2"], s["rouge-l"]] == pytest.approx([s["rouge-1_char"], s["rouge-2_char"],
                                                                         s["rouge-l_char"]])
    w = summary_rouge(["北京 is big"], ["北京 is the capital"], "word", _encode_table)
    assert w["rouge-l"] == pytest.approx(100 * 4 / 7)
    # per-example mean: adding a perfect pair averages with 100
    m = summary_rouge(["北京 is big", "the capital"], ["北京 is the capital", "the capital"], "mglm", _encode_table)
    assert m["rouge-1"] == pytest.approx((100 * 3 / 5 + 100) / 2)


def test_rouge_identity_disjoint_and_chinese(sample_tokenizer):
    # (every reference has two or more tokens in every tokenisation: a single token has no bigram, so its
    # ROUGE-2 is 0 even against itself, by the definition and in rouge-score)
    refs = ["本文提出 一种基于神经网络的句法分析方法。", "A new neural parser builds trees.", "北京 是中国的首都"]
    same = summary_rouge(refs, refs, "char", sample_tokenizer.encode)
    assert sorted(same) == sorted(ROUGE_KEYS) and all(v == pytest.approx(100.0) for v in same.values())
    # no character in common, so no token in common in any tokenisation (mglm: one id per character)
    disjoint = summary_rouge(["天地玄黄", "big cut"], ["宇宙洪荒", "sod form"], "char",
                             lambda s: [ord(c) for c in s if not c.isspace()])
    assert all(v == 0.0 for v in disjoint.values()), disjoint
    # Chinese is not scored as zero (word-level scorers that keep only [a-z0-9] do): the reference vector
    zh = summary_rouge(["北京是首都"], ["北京是中国的首都"], "char", sample_tokenizer.encode)
    assert zh["rouge-1"] == pytest.approx(100 * 10 / 13) and zh["rouge-2"] == pytest.approx(100 * 18 / 33)
    assert zh["rouge-1_mglm"] > 0


def test_task_metrics_primary_by_target_language(sample_tokenizer):
    task = NCLS(sample_tokenizer, 64)
    zh = task.read_split(RAW, "dev", None)["en2zh"]
    preds = [e.summary[:8] for e in zh]
    m = task.metrics(preds, zh)
    assert m["rouge-l"] == m["rouge-l_char"] > 0 and task.metric_name == "rouge-l"
    en = NCLS(sample_tokenizer, 64).read_split(MGLM, "dev", None)["zh2en"]
    m = NCLS(sample_tokenizer, 64).metrics([e.summary for e in en], en)
    assert m["rouge-l"] == m["rouge-l_word"] == pytest.approx(100.0)
    forced = NCLS(sample_tokenizer, 64, options=NCLSOptions(rouge_tokenization="mglm"))
    m = forced.metrics(preds, zh)
    assert m["rouge-l"] == m["rouge-l_mglm"]


def test_agrees_with_google_rouge_score():
    """tasks/rouge.py on word tokens (and on id strings, the mglm mode) equals rouge-score without stemming
    on lowercase ASCII text: the same clipped counts, LCS and per-example F."""
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer", reason="rouge-score not installed (requirements-dev.txt)")
    import random

    from tasks.rouge import rouge_scores, rouge_scores_from_tokens

    rng = random.Random(0)
    words = "the cat sat on a mat dog barked at night in village 2019 runs 17 523".split()
    preds = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 14))) for _ in range(100)]
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 14))) for _ in range(100)]
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    got = [sc.score(r, p) for p, r in zip(preds, refs, strict=True)]
    ref = {k: 100 * sum(g[n].fmeasure for g in got) / len(got) for k, n in
           (("rouge-1", "rouge1"), ("rouge-2", "rouge2"), ("rouge-l", "rougeL"))}
    assert rouge_scores(preds, refs, "word") == pytest.approx(ref)
    assert rouge_scores_from_tokens([p.split() for p in preds], [r.split() for r in refs]) == pytest.approx(ref)
    assert sc.score("北京是首都", "北京是首都")["rouge1"].fmeasure == 0.0  # why we do not score Chinese with it


# ------------------------------------------------------------------------------------------ flags and errors
def test_task_flag_defaults(tmp_path):
    c = parse_finetune_args(["--task", "ncls", "--data-dir", str(RAW)])
    f, o = c.finetune, c.task_options
    assert (f.seq_length, o.tgt_seq_length, o.min_tgt_length, o.num_beams, o.length_penalty,
            o.no_repeat_ngram_size, o.label_smoothing, f.select_on) == (768, 160, 100, 5, 0.7, 3, 0.1, "avg-dev")
    c = parse_finetune_args(["--task", "ncls", "--data-dir", str(RAW), "--num-beams", "1", "--seq-length", "64",
                             "--rouge-tokenization", "mglm"])
    f, o = c.finetune, c.task_options
    assert (o.num_beams, f.seq_length, o.length_penalty, o.rouge_tokenization) == (1, 64, 0.7, "mglm")
    x = parse_finetune_args(["--task", "xnli", "--data-dir", str(RAW)])
    assert x.task_options is None  # xnli has no options of its own
    assert (x.finetune.seq_length, x.finetune.select_on) == (256, None)  # other tasks: chosen from the dev sets read
    with pytest.raises(ValueError, match=r"--num-beams: not an option of --task xnli"):
        parse_finetune_args(["--task", "xnli", "--data-dir", str(RAW), "--num-beams", "2"])
    with pytest.raises(ValueError, match="--ncls-direction 'fr2de': expected en2zh or zh2en"):
        parse_finetune_args(["--task", "ncls", "--data-dir", str(RAW), "--ncls-direction", "fr2de"])
    with pytest.raises(ValueError, match="--rouge-tokenization 'bpe'"):
        parse_finetune_args(["--task", "ncls", "--data-dir", str(RAW), "--rouge-tokenization", "bpe"])


def test_bad_input(tmp_path, sample_tokenizer):
    odd = tmp_path / "odd.txt"
    odd.write_text("source one\nsummary one\nsource two\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"odd\.txt: 3 lines, an odd number"):
        read_alternating(odd, "train", "en2zh", "zh")
    empty = tmp_path / "empty.txt"
    empty.write_text("source one\nsummary one\nsource two\n   \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.txt:4: empty summary"):
        read_alternating(empty, "train", "en2zh", "zh")
    raw = tmp_path / "EN2ZHSUM_train.txt"
    raw.write_text("<doc id=1>\n<ZH-REF-1>\n摘要。\n</doc>\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"EN2ZHSUM_train\.txt:2: record without an <Article>"):
        read_ncls_raw(raw, "train", "en2zh", "zh")
    raw.write_text("<doc id=1>\n<Article>\nAn article.\n<EN-REF-1>\nA summary.\n</doc>\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"without a <ZH-REF\.\.\.> summary"):
        read_ncls_raw(raw, "train", "en2zh", "zh")

    # missing files, ambiguous direction
    none = tmp_path / "none"
    none.mkdir()
    with pytest.raises(FileNotFoundError, match="no NCLS files"):
        NCLS(sample_tokenizer, 64).read_split(none, "train", None)
    only_dev = tmp_path / "only_dev"
    only_dev.mkdir()
    (only_dev / "dev.txt").write_text("An article.\n一个摘要。\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="no train file for en2zh"):
        NCLS(sample_tokenizer, 64).read_split(only_dev, "train", None)
    both = tmp_path / "both"
    both.mkdir()
    (both / "EN2ZHSUM_train.txt").write_text("", encoding="utf-8")
    (both / "ZH2ENSUM_train.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="files of both directions.*--ncls-direction"):
        NCLS(sample_tokenizer, 64).read_split(both, "train", None)
    bad = tmp_path / "sci"
    bad.mkdir()
    (bad / "scisummnet-zh.train.txt").write_text('{"pid": "X1", "zh_sum": "摘要"}\n', encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="no English source of paper X1"):
        ScisummNetZh(sample_tokenizer, 64).read_split(bad, "train", None)
    # a CSV row with more fields than the header: file:line, not the first fields silently taken
    (bad / "scisummnet.csv").write_text("pid,text\nX1,A paper.\nX2,A paper, with a comma\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"scisummnet\.csv:3: 3 fields, more than the 2 columns of the header "
                                         r"\['pid', 'text'\]"):
        ScisummNetZh(sample_tokenizer, 64).read_split(bad, "train", None)
    # bytes that are not UTF-8: file and line named (CSV, records, NCLS alternating lines)
    (bad / "scisummnet.csv").write_bytes("pid,text\nX1,A paper.\nX2,Caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"scisummnet\.csv:3: not UTF-8 text"):
        ScisummNetZh(sample_tokenizer, 64).read_split(bad, "train", None)
    (bad / "scisummnet-zh.train.txt").write_bytes(b'{"pid": "X1", "zh_sum": "\xff"}\n')
    with pytest.raises(ValueError, match=r"scisummnet-zh\.train\.txt:1: not UTF-8 text"):
        ScisummNetZh(sample_tokenizer, 64).read_split(bad, "train", None)
    (tmp_path / "latin.txt").write_bytes("An article.\nUn r\u00e9sum\u00e9.\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt:2: not UTF-8 text"):
        read_alternating(tmp_path / "latin.txt", "train", "zh2en", "en")


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _finetune(data: Path, save: Path, *extra: str, task: str = "ncls") -> dict:
    import finetune_glm

    return finetune_glm.main([
        "--task", task, "--data-dir", str(data), "--tokenizer-model", str(SAMPLE_TOKENIZER),
        "--model-config", str(REPO / "config/model/glm-tiny.json"), "--hidden-dropout", "0",
        "--attention-dropout", "0", "--epochs", "12", "--eval-epoch", "12", "--batch-size", "4", "--lr", "3e-3",
        "--seq-length", "80", "--tgt-seq-length", "40", "--out-seq-length", "12", "--min-tgt-length", "2",
        "--num-beams", "2", "--save", str(save), "--device", "cpu", "--no-tensorboard", "--log-interval", "100",
        *extra])


@pytest.mark.slow
@pytest.mark.parametrize("layout,direction,n_dev", [("ncls_raw", "en2zh", 3), ("ncls_mglm", "zh2en", 3)])
def test_finetune_end_to_end(tmp_path, one_thread, layout, direction, n_dev):
    save = tmp_path / "ft"
    r = _finetune(DATA / layout, save)
    losses = r["train_losses"]
    assert r["metric"] == "rouge-l" and r["select_on"] == "avg-dev" and len(losses) == 12 * 2  # 7 examples, batch 4
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses  # the loss falls
    assert list(r["dev"]) == [direction, "avg", "pooled"] and list(r["test"]) == [direction, "avg", "pooled"]
    assert sorted(r["dev"][direction]) == sorted(ROUGE_KEYS)
    primary = "char" if direction == "en2zh" else "word"
    assert r["dev"][direction]["rouge-l"] == r["dev"][direction][f"rouge-l_{primary}"]
    on_disk = json.loads((save / "results.json").read_text(encoding="utf-8"))
    assert on_disk["dev"] == r["dev"] and "rouge-l_mglm" in (save / "results.txt").read_text(encoding="utf-8")
    pred_dir = save / "predictions"
    for split, n in (("dev", n_dev), ("test", 2)):
        preds = (pred_dir / f"ncls-{split}-{direction}.pred.txt").read_text(encoding="utf-8").splitlines()
        refs = (pred_dir / f"ncls-{split}-{direction}.ref.txt").read_text(encoding="utf-8").splitlines()
        assert len(preds) == len(refs) == n and all(p.strip() for p in preds)  # a summary for every example
        rows = [json.loads(x) for x in (pred_dir / f"ncls-{split}-{direction}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [x["prediction"] for x in rows] == preds and [x["reference"] for x in rows] == refs
    # the scores on disk are the ROUGE of the written files (independent recomputation, char/word only)
    from tasks.rouge import rouge_scores

    preds = (pred_dir / f"ncls-dev-{direction}.pred.txt").read_text(encoding="utf-8").splitlines()
    refs = (pred_dir / f"ncls-dev-{direction}.ref.txt").read_text(encoding="utf-8").splitlines()
    assert rouge_scores(preds, refs, primary)["rouge-l"] == pytest.approx(r["dev"][direction]["rouge-l"])


@pytest.mark.slow
def test_scisummnet_zh_end_to_end(tmp_path, one_thread, sample_tokenizer):
    save = tmp_path / "sci"
    r = _finetune(SCI, save, "--epochs", "4", "--eval-epoch", "4", task="scisummnet_zh")
    assert r["task"] == "scisummnet_zh" and list(r["dev"]) == ["en2zh", "avg", "pooled"]
    assert r["dev"]["en2zh"]["rouge-l"] == r["dev"]["en2zh"]["rouge-l_char"]
    refs = (save / "predictions" / "scisummnet_zh-test-en2zh.ref.txt").read_text(encoding="utf-8").splitlines()
    assert refs == [e.summary for e in ScisummNetZh(sample_tokenizer, 8).read_split(SCI, "test", None)["en2zh"]]


def test_launcher_script(tmp_path):
    """scripts/finetune_ncls.sh: the deepspeed command with the NCLS recipe, extra flags appended."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "deepspeed"
    fake.write_text("#!/bin/sh\necho \"$@\"\n")
    fake.chmod(0o755)
    e = dict(os.environ, DEEPSPEED=str(fake), CHECKPOINT="ck", DATA=str(RAW), NUM_GPUS="1", PY=sys.executable,
             SAVE=str(tmp_path / "s"), CUDA_VISIBLE_DEVICES="")
    p = subprocess.run(["bash", "scripts/finetune_ncls.sh", "--num-beams", "3"], cwd=REPO, env=e,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout.split()
    assert out[out.index("--task") + 1] == "ncls" and out[out.index("--deepspeed_config") + 1] == "config/tasks/ncls.json"
    for flag, value in (("--seq-length", "768"), ("--tgt-seq-length", "160"), ("--min-tgt-length", "100"),
                        ("--length-penalty", "0.7"), ("--no-repeat-ngram-size", "3"), ("--label-smoothing", "0.1")):
        assert out[out.index(flag) + 1] == value
    assert out[-2:] == ["--num-beams", "3"]
    # the recipe parses (the JSON agrees with the flags)
    i = out.index("finetune_glm.py")
    cfg = parse_finetune_args([a for a in out[i + 1:] if a != "--fp16"])
    assert cfg.task_options.num_beams == 3 and cfg.optim.lr == 5e-5 and cfg.train.batch_size == 8
