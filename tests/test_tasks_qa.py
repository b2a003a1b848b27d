"""Extractive QA as generation (tasks/qa.py, xquad, mlqa, tydiqa): windows against a hand-worked example,
reading the real XQuAD files and the fixtures, aggregation and the official metrics, bad input, and an end-to-end
CPU finetune whose predictions JSON scores identically under tools/evaluate.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, SAMPLE_TOKENIZER, shared_path

from common.errors import DataError
from tasks.base import language_scores
from tasks.mlqa import MLQA
from tasks.qa import NA, QAExample, QAOptions, read_squad_file
from tasks.tydiqa import TyDiQA
from tasks.xquad import XQuAD

TASKS = REPO / "data" / "sample" / "tasks"
XQUAD_LANGS = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]


# ------------------------------------------------------------------------------- a word-level tokenizer
class _SP:
    def __init__(self, owner):
        self.owner = owner

    def PieceToId(self, piece):  # noqa: N802 (sentencepiece's spelling)
        return self.owner.vocab.get(piece, 0)

    def unk_id(self):
        return 0


class WordTokenizer:
    """One token per whitespace-separated word: lets the window arithmetic be worked out by hand."""

    def __init__(self, words):
        self.vocab = {"<unk>": 0, ".": 1, **{w: i + 2 for i, w in enumerate(words)}}
        self.words = {i: w for w, i in self.vocab.items()}
        self.num_text_tokens = len(self.vocab)
        n = self.num_text_tokens
        self.pad_id = self.eos_id = n
        self.cls_id, self.mask_id, self.sop_id, self.eop_id, self.smask_id, self.gmask_id = (
            n + 2, n + 3, n + 6, n + 7, n + 8, n + 9)
        self.sp = _SP(self)

    def __len__(self):
        return self.num_text_tokens + 10

    def encode(self, text):
        return [self.vocab[w] for w in text.split()]

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


CONTEXT = " ".join(f"w{i}" for i in range(30))
WORDS = [f"w{i}" for i in range(30)] + ["who?", "Question:", "Answer:", "nothing", "N/A"]


def test_windows_hand_worked():
    """s = 16, prompt [CLS] who? [sMASK] . -> L = 12, stride 8: windows [0,12) [8,20) [16,28) [24,30)."""
    tok = WordTokenizer(WORDS)
    task = XQuAD(tok, 16, options=QAOptions())
    ex = QAExample("q1", "en", "who?", CONTEXT, ("w18 w19",), "test")
    wins = task.windows(ex)
    w = [f"w{i}" for i in range(30)]
    expect = [w[0:12], w[8:20], w[16:28], w[24:30]]
    assert [tok.decode(win) for _, win in wins] == [" ".join(x) for x in expect]
    cls, sm, dot, q = tok.cls_id, tok.smask_id, 1, tok.vocab["who?"]
    assert wins[1][0] == [cls, q, sm, dot, *tok.encode(" ".join(expect[1]))]
    assert all(len(src) <= 16 for src, _ in wins)
    # Every context token is in some window.
    covered = set()
    for _, win in wins:
        covered |= {tok.words[i] for i in win}
    assert covered == set(w)
    # Targets: the answer w18 w19 lies in windows 1 and 2 only.
    assert [task.window_target(ex, win) for _, win in wins] == [NA, "w18 w19", "w18 w19", NA]
    samples = task.train_samples([ex])
    assert [s["window"] for s in samples] == [0, 1, 2, 3]
    assert samples[0]["target"] == [tok.vocab["N/A"], tok.eop_id]
    drop = XQuAD(tok, 16, options=QAOptions(qa_na_train="drop")).train_samples([ex])
    assert [s["window"] for s in drop] == [1, 2]
    assert drop[0]["target"] == [tok.vocab["w18"], tok.vocab["w19"], tok.eop_id]
    # An empty first answer is in no window (mGLM: "answer_tokens_text and ..."): N/A everywhere, not "".
    blank = QAExample("q2", "en", "who?", CONTEXT, (" ", "w18 w19"), "test")
    assert [task.window_target(blank, win) for _, win in wins] == [NA, NA, NA, NA]
    # Evaluation windows never depend on the gold answers.
    other = QAExample("q1", "en", "who?", CONTEXT, ("nothing",), "test")
    assert [s["source"] for s in task.eval_samples([ex])] == [s["source"] for s in task.eval_samples([other])]
    assert all(s["target"] == [] for s in task.eval_samples([ex]))
    # --qa-stride 5: windows [0,12) [5,17) [10,22) [15,27) [20,30); a stride beyond L is capped at L.
    t5 = XQuAD(tok, 16, options=QAOptions(qa_stride=5))
    assert t5.window_spans(30, 4) == [(0, 12), (5, 17), (10, 22), (15, 27), (20, 30)]
    assert XQuAD(tok, 16, options=QAOptions(qa_stride=50)).window_spans(30, 4) == [(0, 12), (12, 24), (24, 30)]
    # MLQA order: [CLS] window . Question: who? Answer: [sMASK] (overhead 3 + |q| = 6 -> L = 10, stride 8).
    m = MLQA(tok, 16, options=QAOptions())
    mw = m.windows(ex)
    assert [(len(win)) for _, win in mw] == [10, 10, 10, 6]
    assert mw[0][0] == [cls, *tok.encode(" ".join(w[0:10])), dot, tok.vocab["Question:"], q,
                        tok.vocab["Answer:"], sm]


def test_training_questions_without_their_answer_are_counted(capsys):
    """Questions whose answer is in no window (here: not in the context at all) are counted and named in one
    warning, whether their N/A windows are kept or dropped; answered questions are not."""
    from training.logging import get_logger

    tok = WordTokenizer(WORDS)
    src = "f.json: data[0].paragraphs[0].qas[{}]"
    exs = [QAExample("q1", "en", "who?", CONTEXT, ("w18 w19",), src.format(0)),
           QAExample("q2", "en", "who?", CONTEXT, ("nothing",), src.format(1)),
           QAExample("q3", "en", "who?", CONTEXT, ("nothing w1",), src.format(2))]
    get_logger(0)
    capsys.readouterr()
    keep = XQuAD(tok, 16, options=QAOptions()).train_samples(exs)
    assert len(keep) == 3 * 4  # every window of every question (4 windows each)
    out = capsys.readouterr().out
    assert ("xquad: 2 of 3 training questions have their answer in no window of their context (2 of them: the "
            "answer text is not in the context at all); they are trained on N/A targets only; first: "
            "'q2' (data[0].paragraphs[0].qas[1]), 'q3' (data[0].paragraphs[0].qas[2]) in f.json") in out, out
    drop = XQuAD(tok, 16, options=QAOptions(qa_na_train="drop")).train_samples(exs)
    assert [s["example"] for s in drop] == [0, 0]
    assert "they are dropped (--qa-na-train drop)" in capsys.readouterr().out
    XQuAD(tok, 16, options=QAOptions()).train_samples(exs[:1])
    assert "training questions" not in capsys.readouterr().out


def test_aggregation_picks_the_right_window_and_na_is_wrong():
    tok = WordTokenizer(WORDS)
    exs = [QAExample(f"q{i}", "en", "who?", CONTEXT, ("w5 w6",), "t") for i in range(3)]
    # Samples out of window order: aggregation must use the window index, not the list order.
    samples = [{"example": 0, "window": 2}, {"example": 0, "window": 0}, {"example": 0, "window": 1},
               {"example": 1, "window": 0}, {"example": 1, "window": 1}, {"example": 2, "window": 0}]
    preds = [("w7", -0.5), ("w5 w6", -2.0), ("n / A", 0.0), ("N/A", -0.1), ("w5 w6", -3.0), ("N/A", -0.1)]
    best = XQuAD(tok, 16, options=QAOptions())
    first = XQuAD(tok, 16, options=QAOptions(qa_aggregate="first"))
    assert best.aggregate(exs, samples, preds) == ["w7", "w5 w6", NA]
    assert first.aggregate(exs, samples, preds) == ["w5 w6", "w5 w6", NA]
    # SQuAD v1.1: "w7" vs "w5 w6": EM 0, F1 0; N/A scores as "" -> 0. Question 1 right: 1/3 of 100.
    m = best.metrics(best.aggregate(exs, samples, preds), exs)
    assert m["exact_match"] == pytest.approx(100 / 3) and m["f1"] == pytest.approx(100 / 3)
    assert first.metrics(first.aggregate(exs, samples, preds), exs)["f1"] == pytest.approx(200 / 3)
    # Ties: the earlier window.
    assert best.aggregate(exs[:1], samples[:3], [("a", -1.0), ("b", -1.0), ("c", -1.0)]) == ["b"]


def _count_questions(path: Path) -> list[str]:
    obj = json.loads(path.read_text(encoding="utf-8"))
    return [qa["id"] for art in obj["data"] for p in art["paragraphs"] for qa in p["qas"]]


@pytest.fixture(scope="module")
def xquad_dev(sample_tokenizer):
    folder = shared_path("xquad")
    task = XQuAD(sample_tokenizer, 512, options=QAOptions())
    return task, folder, task.read_split(folder, "dev", None)


def test_real_xquad_every_question_and_gold_scores_100(xquad_dev):
    task, folder, dev = xquad_dev
    assert sorted(dev) == XQUAD_LANGS and dev["en"][0].lang == "en"
    for lang, exs in dev.items():
        ids = _count_questions(folder / f"xquad.{lang}.json")
        assert [e.uid for e in exs] == ids and len(ids) == 1190
        # Gold answer in the middle window, N/A around it (better scores on the N/A windows).
        samples = [{"example": i, "window": w} for i in range(len(exs)) for w in range(3)]
        gold = [(NA, 0.0) if s["window"] != 1 else (exs[s["example"]].answers[0], -9.0) for s in samples]
        preds = task.aggregate(exs, samples, gold)
        m = task.metrics(preds, exs)
        assert m["exact_match"] == 100.0 and m["f1"] == 100.0, lang
        none = task.aggregate(exs, samples, [(NA, 0.0)] * len(samples))
        assert task.metrics(none, exs)["exact_match"] == 0.0 and task.metrics(none, exs)["f1"] == 0.0
        wrong = task.metrics(["qqqq zzzz"] * len(exs), exs)
        assert wrong == {**wrong, "exact_match": 0.0, "f1": 0.0}
    scores = language_scores({k: [e.answers[0] for e in v] for k, v in dev.items()}, dev, task.metrics,
                             task.has_gold)
    assert scores["avg"]["f1"] == 100.0 and scores["pooled"]["exact_match"] == 100.0


def test_real_xquad_windows_cover_the_context_and_hold_the_answers(xquad_dev):
    """Windows reproduce the context tokens; every English/Chinese/Arabic answer lands in a window whose
    training target is that answer (the sample tokenizer's byte pieces make a few Greek answers too long)."""
    task, _, dev = xquad_dev
    for lang in ("en", "zh", "ar"):
        for e in dev[lang][:300]:
            ctx = task.context_ids(e)
            q = task.question_ids(e)
            spans = task.window_spans(len(ctx), len(task.prompt(q, [])))
            rebuilt = {i for a, b in spans for i in range(a, b)}
            assert rebuilt == set(range(len(ctx))), e.uid
            targets = [task.window_target(e, win) for _, win in task.windows(e)]
            assert e.answers[0].strip() in targets, (lang, e.uid)


def test_fixtures_read_per_layout(sample_tokenizer):
    t = MLQA(sample_tokenizer, 128, options=QAOptions())
    dev = t.read_split(TASKS / "mlqa", "dev", None)
    assert list(dev) == ["en", "de", "zh"]  # the matched pairs only, in the benchmark's order
    assert list(t.read_split(TASKS / "mlqa", "test", ["de-en", "zh"])) == ["de-en", "zh"]
    assert len(t.read_split(TASKS / "mlqa", "train", None)["en"]) == 12  # the sibling ../squad
    ty = TyDiQA(sample_tokenizer, 128, options=QAOptions())
    assert list(ty.read_split(TASKS / "tydiqa", "dev", None)) == ["en", "fi", "ru"]
    assert ty.read_split(TASKS / "tydiqa", "test", None) == {}
    assert [e.uid for e in ty.read_split(TASKS / "tydiqa", "train", None)["en"]][:2] == ["english-1000-0",
                                                                                       "english-1000-1"]
    # MLQA scores with the context language's normalisation: zh mixed segmentation (mlqa_evaluation_v1.py).
    e = QAExample("x", "zh", "q", "北京是中国的首都", ("北京是中国的首都",), "t")
    assert t.metrics(["北京是首都"], [e])["f1"] == pytest.approx(76.923, abs=1e-3)
    assert XQuAD(sample_tokenizer, 128).metrics(["北京是首都"], [e])["f1"] == 0.0  # SQuAD: one token each
    e = QAExample("x", "de-en", "q", "c", ("der Hund",), "t")  # context language de: articles dropped
    assert t.metrics(["Hund"], [e])["exact_match"] == 100.0


def test_bad_input(tmp_path, sample_tokenizer):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json:1:.*not valid JSON"):
        read_squad_file(bad, "en")
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "a", "question": "q", "answers": [{"text": "c"}]}, {"id": "b", "question": 3, "answers": []}]}]}]}))
    with pytest.raises(DataError, match=r"bad\.json: .*data\[0\]\.paragraphs\[0\]\.qas\[1\]\.question expected a "
                                         r"string, got number"):
        read_squad_file(bad, "en")
    bad.write_text(json.dumps({"version": "1.1", "data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "a", "question": "q", "answers": []}]}]}]}))
    assert read_squad_file(bad, "en")[0].answers == ()  # unlabelled at evaluation
    with pytest.raises(DataError, match=r"bad\.json: question 'a' at data\[0\]\.paragraphs\[0\]\.qas\[0\] has no "
                                         "answer"):
        read_squad_file(bad, "en", require_answers=True)
    t = XQuAD(sample_tokenizer, 128)
    xq = tmp_path / "xq"
    xq.mkdir()
    shutil.copy(TASKS / "squad" / "train-v1.1.json", xq / "xquad.en.json")
    assert list(t.read_split(xq, "dev", None)) == ["en"]
    with pytest.raises(FileNotFoundError, match=r"no file for language\(s\) \['xx'\].*xquad\.<lang>\.json"):
        t.read_split(xq, "dev", ["en", "xx"])
    with pytest.raises(FileNotFoundError, match="no SQuAD v1.1 training file"):
        t.read_split(tmp_path, "train", None)
    with pytest.raises(ValueError, match="MLQA context language 'xx'"):
        MLQA(sample_tokenizer, 128).read_split(TASKS / "mlqa", "dev", ["xx"])
    from tasks.cli import parse_finetune_args

    for flag, value in (("--qa-na-train", "sometimes"), ("--qa-aggregate", "last"), ("--qa-stride", "0")):
        with pytest.raises(ValueError, match=flag):
            parse_finetune_args(["--task", "xquad", "--data-dir", str(tmp_path), "--tokenizer-model",
                                 str(SAMPLE_TOKENIZER), flag, value])


def _squad(tmp_path: Path, ids: list[str], name: str = "f.json") -> Path:
    """A SQuAD-format file with one paragraph whose questions carry ``ids`` (answer "c" in context "c d")."""
    path = tmp_path / name
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c d", "qas": [
        {"id": i, "question": f"q{k}", "answers": [{"text": "c"}]} for k, i in enumerate(ids)]}]}]}),
        encoding="utf-8")
    return path


def test_repeated_ids_train_versus_evaluation(tmp_path):
    """A training file may repeat ids (XTREME's TyDiQA-GoldP train file does): every question is read. An
    evaluation file keys predictions by id: a repeat is one error naming every repeated id and where."""
    path = _squad(tmp_path, ["0", "1", "0", "2", "1", "0"])
    train = read_squad_file(path, "en", require_answers=True)
    assert [e.question for e in train] == [f"q{k}" for k in range(6)] and [e.uid for e in train][:3] == ["0", "1", "0"]
    with pytest.raises(ValueError) as err:
        read_squad_file(path, "en")
    msg = str(err.value)
    assert msg.startswith(f"{path}: 2 question id(s) repeat: '0' at data[0].paragraphs[0].qas[0], "
                          "data[0].paragraphs[0].qas[2], data[0].paragraphs[0].qas[5]; '1' at "
                          "data[0].paragraphs[0].qas[1], data[0].paragraphs[0].qas[4]; "), msg
    assert "'2'" not in msg
    # TyDiQA reads such a training file in XTREME's layout, and refuses it as a dev file.
    d = tmp_path / "ty"
    (d / "tydiqa-goldp-v1.1-train").mkdir(parents=True)
    (d / "tydiqa-goldp-v1.1-dev").mkdir()
    shutil.copy(path, d / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json")
    shutil.copy(path, d / "tydiqa-goldp-v1.1-dev" / "tydiqa.goldp.en.dev.json")
    ty = TyDiQA(WordTokenizer(["c", "d"]), 64, options=QAOptions())
    assert len(ty.read_split(d, "train", None)["en"]) == 6
    with pytest.raises(DataError, match=r"tydiqa\.goldp\.en\.dev\.json: 2 question id\(s\) repeat"):
        ty.read_split(d, "dev", None)


def _run(task, data, save, *extra):
    import finetune_glm

    return finetune_glm.main([
        "--task", task, "--data-dir", str(data), "--tokenizer-model", str(SAMPLE_TOKENIZER),
        "--model-config", str(REPO / "config/model/glm-tiny.json"), "--hidden-dropout", "0",
        "--attention-dropout", "0", "--seq-length", "64", "--tgt-seq-length", "8", "--batch-size", "4",
        "--lr", "3e-3", "--save", str(save), "--device", "cpu", "--no-tensorboard", "--log-interval", "100",
        *extra])


def _tydiqa_with_english_dev_in_train(data: Path) -> Path:
    """The GoldP fixture with the English dev questions added to the training file, so a tiny model can
    learn to answer some of them (non-trivial scores; answers of several lengths)."""
    (data / "tydiqa-goldp-v1.1-train").mkdir(parents=True)
    shutil.copytree(TASKS / "tydiqa" / "tydiqa-goldp-v1.1-dev", data / "tydiqa-goldp-v1.1-dev")
    train = json.loads((TASKS / "tydiqa" / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json").read_text())
    train["data"] += json.loads((data / "tydiqa-goldp-v1.1-dev" / "tydiqa-goldp-dev-english.json").read_text())["data"]
    (data / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json").write_text(json.dumps(train))
    return data


@pytest.mark.slow
def test_finetune_end_to_end_and_official_scoring(tmp_path):
    from tools.evaluate import main as evaluate

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # The GoldP layout with the English dev questions added to the training file, so a tiny model can
        # learn to answer some of them (non-trivial scores to compare with the official scorer).
        data = _tydiqa_with_english_dev_in_train(tmp_path / "tydiqa")
        r = _run("tydiqa", data, tmp_path / "ty", "--epochs", "30", "--eval-epoch", "30", "--batch-size", "3")
        dev_files = TASKS / "tydiqa" / "tydiqa-goldp-v1.1-dev"
        losses = r["train_losses"]
        assert r["train_iters"] == 30 * 6  # 9 questions, one window each at --seq-length 64, batch 3
        assert sum(losses[-10:]) / 10 < 0.2 * sum(losses[:10]) / 10, losses
        assert r["dev"]["en"]["f1"] >= 50.0, r["dev"]  # it learnt the English answers it was shown
        assert [k for k in r["dev"] if k not in ("avg", "pooled")] == ["en", "fi", "ru"] and r["test"] == {}
        for lang, name in (("en", "english"), ("fi", "finnish"), ("ru", "russian")):
            assert set(r["dev"][lang]) >= {"exact_match", "f1"}
            pred = tmp_path / "ty" / "predictions" / f"tydiqa-dev-{lang}.json"
            official = evaluate(["squad", str(dev_files / f"tydiqa-goldp-dev-{name}.json"), str(pred)])
            assert official["exact_match"] == pytest.approx(r["dev"][lang]["exact_match"], abs=1e-9)
            assert official["f1"] == pytest.approx(r["dev"][lang]["f1"], abs=1e-9)
            assert set(json.loads(pred.read_text())) == set(_count_questions(dev_files /
                                                                              f"tydiqa-goldp-dev-{name}.json"))
        on_disk = json.loads((tmp_path / "ty" / "results.json").read_text())
        assert on_disk["dev"] == r["dev"] and on_disk["metric"] == "f1"

        # MLQA, evaluation only: the MLQA script's numbers per context language, dev and test.
        m = _run("mlqa", TASKS / "mlqa", tmp_path / "ml", "--epochs", "0", "--languages", "en", "zh", "de-en")
        for split in ("dev", "test"):
            for lang, ctx in (("en", "en"), ("zh", "zh"), ("de-en", "de")):
                q = lang.split("-")[-1]
                data = TASKS / "mlqa" / "MLQA_V1" / split / f"{split}-context-{ctx}-question-{q}.json"
                pred = tmp_path / "ml" / "predictions" / f"mlqa-{split}-{lang}.json"
                official = evaluate(["mlqa", str(data), str(pred), ctx])
                assert official["f1"] == pytest.approx(m[split][lang]["f1"], abs=1e-9)
                assert official["exact_match"] == pytest.approx(m[split][lang]["exact_match"], abs=1e-9)
    finally:
        torch.set_num_threads(n)


@pytest.mark.slow
def test_real_xquad_twelve_languages_end_to_end(tmp_path):
    """finetune_glm on the real XQuAD files (all 12 languages, ../shared/data) with a tiny model: one epoch
    on the SQuAD-format fixture, then every language's first questions are decoded window by window and
    scored; each language's numbers equal the official SQuAD v1.1 script's on the questions scored."""
    from tools.evaluate import main as evaluate

    xquad = shared_path("xquad")
    data = tmp_path / "data"
    (data / "squad").mkdir(parents=True)
    shutil.copy(TASKS / "squad" / "train-v1.1.json", data / "squad" / "train-v1.1.json")
    (data / "xquad").symlink_to(xquad.resolve(), target_is_directory=True)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = _run("xquad", data, tmp_path / "xq", "--epochs", "1", "--eval-limit", "2", "--out-seq-length", "4")
    finally:
        torch.set_num_threads(n)
    assert r["eval_limit"] == 2 and r["metric"] == "f1"
    assert sorted(k for k in r["dev"] if k not in ("avg", "pooled")) == XQUAD_LANGS
    for lang in XQUAD_LANGS:
        scores = r["dev"][lang]
        assert 0.0 <= scores["exact_match"] <= scores["f1"] <= 100.0, (lang, scores)
        # The official script on a dataset cut to the same first two questions (in file order).
        full = json.loads((xquad / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        keep = set(_count_questions(xquad / f"xquad.{lang}.json")[:2])
        for art in full["data"]:
            for par in art["paragraphs"]:
                par["qas"] = [qa for qa in par["qas"] if qa["id"] in keep]
        cut = tmp_path / f"xquad.{lang}.first2.json"
        cut.write_text(json.dumps(full), encoding="utf-8")
        pred = tmp_path / "xq" / "predictions" / f"xquad-dev-{lang}.json"
        assert set(json.loads(pred.read_text(encoding="utf-8"))) == keep
        official = evaluate(["squad", str(cut), str(pred)])
        assert official["exact_match"] == pytest.approx(scores["exact_match"], abs=1e-9), lang
        assert official["f1"] == pytest.approx(scores["f1"], abs=1e-9), lang
    mean_f1 = sum(r["dev"][lang]["f1"] for lang in XQUAD_LANGS) / 12
    assert r["dev"]["avg"]["f1"] == pytest.approx(mean_f1)


@pytest.mark.slow
def test_zero3_two_dp_ranks_decode_like_one_process(tmp_path):
    """Under ZeRO-3 every forward gathers each layer's parameters from all DP ranks, so two ranks whose
    questions end at different steps must decode in lockstep: under torchrun they finish (no hang) and
    predict exactly what one process predicts from the same weights."""
    import os
    import subprocess
    import sys

    from training.distributed import free_port

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    data = _tydiqa_with_english_dev_in_train(tmp_path / "tydiqa")
    try:  # a model that answers the English questions it saw and not the others: unequal decode lengths
        _run("tydiqa", data, tmp_path / "trained", "--epochs", "30", "--eval-epoch", "30", "--batch-size", "3")
        one = _run("tydiqa", data, tmp_path / "one", "--epochs", "0", "--load-pretrained", str(tmp_path / "trained"))
    finally:
        torch.set_num_threads(n)
    ds = tmp_path / "zero3.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
                              "zero_optimization": {"stage": 3}}))
    args = ["--task", "tydiqa", "--data-dir", str(data), "--tokenizer-model", str(SAMPLE_TOKENIZER),
            "--model-config", str(REPO / "config/model/glm-tiny.json"), "--hidden-dropout", "0",
            "--attention-dropout", "0", "--seq-length", "64", "--tgt-seq-length", "8", "--batch-size", "4",
            "--save", str(tmp_path / "two"), "--device", "cpu", "--no-tensorboard", "--epochs", "0",
            "--load-pretrained", str(tmp_path / "trained"), "--deepspeed", "--deepspeed_config", str(ds)]
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port",
           str(free_port()), "finetune_glm.py", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world"] == {"tp": 1, "dp": 2}
    assert two["dev"] == one["dev"]
    answers = {}
    for lang in ("en", "fi", "ru"):
        a = json.loads((tmp_path / "one" / "predictions" / f"tydiqa-dev-{lang}.json").read_text())
        b = json.loads((tmp_path / "two" / "predictions" / f"tydiqa-dev-{lang}.json").read_text())
        assert a == b, lang
        answers.update(a)
    assert len({len(v) for v in answers.values()}) > 1  # the decodes really had different lengths


def test_mglm_metric_is_reported_when_a_transliterator_is_available():
    """With ``unidecode`` installed the task adds mGLM's metric; here a stand-in transliterator (identity) is
    injected, so only the normalisation order and the raw N/A handling are checked (values by hand)."""
    task = XQuAD(WordTokenizer(WORDS), 16, options=QAOptions())
    task.transliterate = lambda s: s
    exs = [QAExample("a", "en", "q", "c", ("the cat",), "t"), QAExample("b", "en", "q", "c", ("N/A",), "t")]
    m = task.metrics(["Cat!", NA], exs)
    # official: "cat" == "cat" -> 1; N/A is written as "" -> 0 against "na". mGLM: same for a; raw "N/A" == "N/A".
    assert m["exact_match"] == 50.0 and m["mglm_exact_match"] == 100.0 and m["mglm_f1"] == 100.0


@pytest.mark.slow
def test_launchers_build_mglm_recipe_that_parses(tmp_path):
    """scripts/finetune_{xquad,mlqa,tydiqa}.sh: the deepspeed command carries the task, its JSON and mGLM's
    decoding settings, passes extra flags through, and finetune_glm's parser accepts it (JSON and flags agree)."""
    import os
    import subprocess
    import sys

    from tasks.cli import parse_finetune_args

    fake = tmp_path / "deepspeed"
    fake.write_text("#!/bin/sh\necho \"$@\"\n")
    fake.chmod(0o755)
    e = dict(os.environ, DEEPSPEED=str(fake), CHECKPOINT=str(tmp_path), DATA=str(TASKS / "squad"), NUM_GPUS="1",
             PY=sys.executable, SAVE=str(tmp_path / "s"), PYTHONPATH=str(REPO))
    for task, beams, epochs in (("xquad", "20", "10"), ("mlqa", "5", "10"), ("tydiqa", "5", "40")):
        p = subprocess.run(["bash", f"scripts/finetune_{task}.sh", "--qa-aggregate", "first"], cwd=REPO, env=e,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        out = p.stdout.split()
        assert out[out.index("--task") + 1] == task
        assert out[out.index("--deepspeed_config") + 1] == f"config/tasks/{task}.json"
        assert out[out.index("--num-beams") + 1] == beams and out[out.index("--epochs") + 1] == epochs
        assert out[-2:] == ["--qa-aggregate", "first"]
        args = out[out.index("finetune_glm.py") + 1:]
        args = [a for a in args if a not in ("--checkpoint-activations",)]
        args += ["--tokenizer-model", str(SAMPLE_TOKENIZER)]
        cfg = parse_finetune_args(args)
        f, q, o = cfg.finetune, cfg.task_options, cfg.optim
        assert (f.seq_length, q.tgt_seq_length, q.label_smoothing, q.qa_aggregate) == (512, 64, 0.1, "first")
        assert (o.lr, o.weight_decay, o.adam_beta2, cfg.train.batch_size, cfg.train.fp16) == (1e-5, 0.01, 0.95, 2, True)
