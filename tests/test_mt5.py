"""mT5 baseline: task table and readers, loss shifting, truncation, end-to-end training / resume / multi-process.

The model is a tiny randomly initialised MT5 (d_model 32, one layer each side) with a sentencepiece model
trained here on the fixture text; nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import UsageError
from mt5.data import PROMPTS, Example, load_task, parse_source, read_source, take

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "data" / "sample" / "tasks"
PY = sys.executable


def fixture_rows() -> list[dict[str, str]]:
    with open(FIXTURES / "scisummnet" / "scisummnet.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- data (no Transformers needed)


def test_take_head_tail_fraction_count():
    rows = list(range(10))
    assert take(rows, 0.8) == list(range(8))
    assert take(rows, -0.2) == [8, 9]
    assert take(rows, 3) == [0, 1, 2]
    assert take(rows, -3) == [7, 8, 9]
    assert take(list(range(7)), 0.8) == list(range(5)) and take(list(range(7)), -0.2) == [6]  # floor: no overlap
    assert take(rows, None) == rows
    assert parse_source("ncls:zh:19200").size == 19200 and parse_source("scisummnet:zh").size is None


def test_scisummnet_simple_split_and_prompt():
    rows = fixture_rows()
    train, valid = load_task("scisummnet", "simple", FIXTURES)
    assert [e.summary for e in train] == [r["zh_sum"] for r in rows[:8]]
    assert [e.summary for e in valid] == [r["zh_sum"] for r in rows[8:]]
    assert train[0].text == rows[0]["text"] and train[0].lang == "zh" and train[0].prompt == " 中文摘要："


def test_ncls_languages_and_cross_dataset_eval():
    train, valid = load_task("ncls", "sum2en", FIXTURES)
    assert len(train) == 7 and len(valid) == 3 and all(e.lang == "en" for e in train + valid)
    assert valid[0].summary == "A neural scorer ranks antecedents for coreference."
    assert valid[0].prompt == PROMPTS["en"]
    train, valid = load_task("ncls", "multitask", FIXTURES)
    assert [e.lang for e in train] == ["zh"] * 7 + ["en"] * 7 and len(valid) == 3
    train, valid = load_task("ncls", "sci_eval", FIXTURES)
    assert len(train) == 7 and len(valid) == 10  # validation on the whole scisummnet file


def test_ncls_release_files_give_the_csv_examples(tmp_path):
    """Without the original's CSV, the NCLS release (EN2ZHSUM_*.txt, the GLM NCLS task's input) is read; the
    two team-written fixtures hold the same 7 + 3 articles, so both layouts must give the same examples."""
    (tmp_path / "ncls").symlink_to(FIXTURES / "ncls_raw", target_is_directory=True)
    # The raw fixture's first article has curly quotes and an en dash around two extra words; the shared reader
    # standardises the punctuation (mGLM's punctuation_standardization), as the GLM NCLS task sees it.
    first = ("We present a new method for parsing sentences with neural networks. The parser reads words from left "
             "to right and builds a tree with a {}stack. Experiments on the English treebank show higher accuracy "
             "than earlier parsers.")
    for subtask in ("sum2zh", "sum2en", "multitask"):
        raw, csv_ = load_task("ncls", subtask, tmp_path), load_task("ncls", subtask, FIXTURES)
        for got, want in zip(raw, csv_, strict=True):
            assert [(e.summary, e.lang) for e in got] == [(e.summary, e.lang) for e in want]
            csv_texts = [first.format("\"small\" stack - the 'shift' ") if e.text == first.format("small ") else e.text
                         for e in want]
            assert [e.text for e in got] == csv_texts
    with pytest.raises(FileNotFoundError, match=r"ncls_en2zh_train\.csv \(nor the NCLS release's EN2ZHSUM_train\.txt"):
        load_task("ncls", "sum2zh", tmp_path / "nowhere")


def test_mtgcrosssum_reader(tmp_path):
    d = tmp_path / "mtg_sum"
    d.mkdir()
    (d / "dev.annotation.doc.de").write_text("Ein  Dokument.\nNoch eins.\n", encoding="utf-8")
    (d / "dev.annotation.sum.zh").write_text("一个文档。\n另一个。\n", encoding="utf-8")
    ex = read_source(tmp_path, "mtgcrosssum:de2zh", "valid")
    assert ex == [Example("Ein Dokument.", "一个文档。", "zh"), Example("Noch eins.", "另一个。", "zh")]
    with pytest.raises(ValueError, match="<src>2zh"):
        read_source(tmp_path, "mtgcrosssum:de2en", "valid")


def test_transformers_and_accelerate_only_under_mt5():
    """The GLM stack never imports them (they are optional: requirements-mt5.txt, not requirements.txt).
    Exempt: the mT5 baseline, the model classes an export ships for Transformers to load
    (``model/hf_export/``, run by Transformers, never imported here), the side-by-side benchmark against
    GPT-2 (an optional dependency of that benchmark) and the tests of these."""
    import ast

    exempt = {Path("tests/test_mt5.py"), Path("tests/test_hf_compat.py"), Path("benchmarks/compare_hf.py"),
              Path("tests/test_compare_hf.py")}
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("mt5", "build") or rel.parts[0].startswith(".") or rel in exempt \
                or rel.parts[:2] == ("model", "hf_export"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{rel}:{node.lineno}" for n in names if n.split(".")[0] in ("transformers", "accelerate")]
    assert offenders == []
    base = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower()
            for line in (ROOT / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert not base & {"transformers", "accelerate"}
    mt5_reqs = (ROOT / "requirements-mt5.txt").read_text()
    assert "transformers" in mt5_reqs and "accelerate" in mt5_reqs


# ---------------------------------------------------------------- bad input


def test_unknown_task_and_subtask_list_valid_ones():
    from mt5.finetune_mt5 import main

    with pytest.raises(ValueError, match="unknown task 'xsum'; valid tasks: ncls, scisummnet, mtgcrosssum"):
        main(["xsum", "simple"])
    with pytest.raises(ValueError, match="unknown subtask 'simple' of task 'ncls'; valid subtasks: multitask, sum2zh, sum2en, sci_eval"):
        main(["ncls", "simple"])


def test_missing_data_file_is_named(tmp_path):
    from mt5.finetune_mt5 import main

    with pytest.raises(FileNotFoundError, match=r"scisummnet[/\\]scisummnet\.csv"):
        main(["scisummnet", "simple", "--data-dir", str(tmp_path)])
    (tmp_path / "ncls").mkdir()
    (tmp_path / "ncls" / "ncls_en2zh_train.csv").write_text("text,zh_sum\na,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing column\\(s\\) en_sum"):
        main(["ncls", "sum2en", "--data-dir", str(tmp_path)])


def test_wandb_requested_but_missing(monkeypatch):
    from mt5.finetune_mt5 import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(UsageError, match="wandb package is not installed: `pip install wandb`"):
        main(["scisummnet", "simple", "--wandb", "--data-dir", str(FIXTURES)])
    with pytest.raises(ValueError, match="--wandb-offline needs --wandb"):
        main(["scisummnet", "simple", "--wandb-offline"])


def test_defaults_are_the_reference_ones():
    """Reference tasks_finetune_eval.md 5.3: Adam lr 5e-4, batch 8, 40 epochs, 768 / 160 tokens, seed 42,
    generate(max_length=110, num_beams=5, no_repeat_ngram_size=3, repetition_penalty=1.0, length_penalty=0.7);
    no clipping, no weight decay; wandb off; every legacy switch off."""
    from mt5.finetune_mt5 import parse_args

    cfg = parse_args(["scisummnet", "simple"])
    assert (cfg.lr, cfg.batch_size, cfg.eval_batch_size, cfg.epochs, cfg.seed) == (5e-4, 8, 8, 40, 42)
    assert (cfg.max_source_length, cfg.max_target_length, cfg.max_gen_length) == (768, 160, 110)
    assert (cfg.num_beams, cfg.no_repeat_ngram_size, cfg.repetition_penalty, cfg.length_penalty) == (5, 3, 1.0, 0.7)
    assert (cfg.max_grad_norm, cfg.weight_decay, cfg.wandb, cfg.wandb_project) == (0.0, 0.0, False, "mt5-ncls")
    assert not (cfg.legacy_double_shift or cfg.legacy_truncation or cfg.legacy_rouge)


def test_cli_prints_one_line_error():
    r = subprocess.run([PY, "mt5/finetune_mt5.py", "ncls", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "finetune_mt5.py: error: unknown subtask 'nope' of task 'ncls'; valid subtasks: multitask, sum2zh, sum2en, sci_eval"
    ]


def test_cli_data_error_is_exit_1_usage_error_exit_2(tmp_path):
    """common.errors.run_cli, as every entry script: a data file whose content is bad (a CSV without the
    summary column) is exit 1, a data folder without the file exit 2; one line each."""
    cmd = [PY, "mt5/finetune_mt5.py", "scisummnet", "simple", "--data-dir", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    csv_file = tmp_path / "scisummnet" / "scisummnet.csv"
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"finetune_mt5.py: error: data file not found: {csv_file} (check --data-dir)"]
    csv_file.parent.mkdir()
    csv_file.write_text("text,en_sum\na,b\n", encoding="utf-8")
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"finetune_mt5.py: error: {csv_file}: missing column(s) zh_sum; header is ['text', 'en_sum']"]


# ---------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random 1+1 layer MT5 and a sentencepiece tokenizer trained on the fixtures, saved like a hub checkpoint."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import sentencepiece as spm
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration, T5Tokenizer

    out = tmp_path_factory.mktemp("tiny_mt5")
    text = [t for r in fixture_rows() for t in (r["text"], r["zh_sum"])] + [PROMPTS["zh"], PROMPTS["en"]]
    (out / "corpus.txt").write_text("\n".join(text), encoding="utf-8")
    spm.SentencePieceTrainer.Train(
        input=str(out / "corpus.txt"), model_prefix=str(out / "spiece"), vocab_size=400, hard_vocab_limit=False,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, model_type="unigram", num_threads=1,
        minloglevel=2,
    )
    tok = T5Tokenizer.from_pretrained(str(out), extra_ids=0)
    tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = MT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
                    relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                    eos_token_id=1)
    MT5ForConditionalGeneration(cfg).save_pretrained(out)
    return out


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; reset them so each in-process run starts clean."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def test_loss_shift_fixed_and_legacy(tiny_model):
    """Fixed: decoder input = [start] + y[:-1], labels = y. Legacy: decoder input y[:-1], labels y[1:]."""
    import torch
    import torch.nn.functional as F
    from transformers import MT5ForConditionalGeneration

    from mt5.finetune_mt5 import seq2seq_loss

    model = MT5ForConditionalGeneration.from_pretrained(tiny_model)
    x = torch.tensor([[5, 6, 7, 1], [8, 9, 1, 0]])
    y = torch.tensor([[11, 12, 13, 1], [14, 1, 0, 0]])  # 0 = pad
    batch = {"input_ids": x, "attention_mask": (x != 0).long(), "labels": y}

    def manual(dec_in, labels):
        logits = model(input_ids=x, attention_mask=batch["attention_mask"], decoder_input_ids=dec_in).logits
        keep = labels != 0
        return F.cross_entropy(logits[keep], labels[keep])

    start = torch.zeros((2, 1), dtype=torch.long)  # decoder_start_token_id = pad = 0
    fixed = manual(torch.cat([start, y[:, :-1]], 1), y)
    legacy = manual(y[:, :-1], y[:, 1:])
    assert seq2seq_loss(model, batch, 0, legacy_double_shift=False).item() == pytest.approx(fixed.item(), rel=1e-5)
    assert seq2seq_loss(model, batch, 0, legacy_double_shift=True).item() == pytest.approx(legacy.item(), rel=1e-5)
    assert abs(fixed.item() - legacy.item()) > 1e-4


def test_source_truncation_keeps_prompt(tiny_model):
    from transformers import AutoTokenizer

    from mt5.finetune_mt5 import FinetuneConfig, encode_example

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ex = Example(" ".join(r["text"] for r in fixture_rows()), "本文提出一种方法。", "zh")
    prompt = tok(ex.prompt, add_special_tokens=False).input_ids
    fixed = encode_example(tok, ex, FinetuneConfig("scisummnet", "simple", max_source_length=24, max_target_length=6))
    assert len(fixed["input_ids"]) == 24 and fixed["input_ids"][-len(prompt) - 1 :] == prompt + [tok.eos_token_id]
    assert len(fixed["labels"]) == 6 and fixed["labels"][-1] == tok.eos_token_id
    legacy = encode_example(tok, ex, FinetuneConfig("scisummnet", "simple", max_source_length=24, legacy_truncation=True))
    assert len(legacy["input_ids"]) == 24 and legacy["input_ids"][-len(prompt) - 1 : -1] != prompt  # prompt cut off


def common_args(model: Path, out: Path) -> list[str]:
    return ["scisummnet", "simple", "--model", str(model), "--data-dir", str(FIXTURES), "--output-dir", str(out),
            "--cpu", "--lr", "1e-2", "--log-every", "1", "--max-source-length", "64", "--max-gen-length", "12",
            "--no-eval-every-epoch"]


def read_log(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_train_generate_score_and_resume(tiny_model, tmp_path, fresh_accelerate_state):
    from accelerate.state import AcceleratorState
    from safetensors.torch import load_file

    from mt5.finetune_mt5 import main
    from tasks.rouge import rouge_scores

    a, b = tmp_path / "a", tmp_path / "b"
    # 8 training rows, batch 2: 4 steps per epoch; checkpoints mid-epoch (step 2) and at the epoch's end (step 4),
    # so the resumed run must skip the 2 batches it already did.
    args = ["--batch-size", "2", "--epochs", "3", "--max-steps", "4", "--save-every", "2"]
    metrics = main(common_args(tiny_model, a) + args)
    losses = read_log(a)
    assert sorted(losses) == [1, 2, 3, 4] and losses[4] < losses[1] - 1.0  # it learns
    assert metrics["step"] == 4 and metrics["epoch"] == 1 and metrics["num_valid"] == 2
    preds = [json.loads(line) for line in (a / "predictions_step4.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in preds] == [r["zh_sum"] for r in fixture_rows()[8:]]
    assert all(p["prediction"] for p in preds)  # generation produced text
    # Chinese targets are scored on characters.
    expected = rouge_scores([p["prediction"] for p in preds], [p["reference"] for p in preds], "char")
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    saved = json.loads((a / "results.json").read_text())
    assert saved["metrics"]["rouge-1"] == pytest.approx(metrics["rouge-1"])
    assert (a / "best" / "config.json").is_file() and list((a / "tensorboard" / "scisummnet-simple").glob("events.out.tfevents.*"))
    assert (a / "checkpoints" / "latest").read_text() == "step_4"

    AcceleratorState._reset_state(reset_partial_state=True)
    resumed = main(common_args(tiny_model, b) + args + ["--resume-from", str(a / "checkpoints" / "step_2")])
    assert read_log(b) == pytest.approx({3: losses[3], 4: losses[4]}, rel=1e-6)
    wa = load_file(a / "checkpoints" / "step_4" / "model.safetensors")
    wb = load_file(b / "checkpoints" / "step_4" / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] - wb[k]).abs().max() < 1e-6 for k in wa)
    assert resumed["step"] == 4 and resumed["epoch"] == 1 and resumed["rouge-1"] == pytest.approx(metrics["rouge-1"])


def test_epochs_zero_only_evaluates(tiny_model, tmp_path, fresh_accelerate_state):
    """The original crashed (NameError) with TRAIN_EPOCHS = 0; here it scores the given model and writes results."""
    from mt5.finetune_mt5 import main
    from tasks.rouge import rouge_scores

    out = tmp_path / "eval"
    metrics = main(common_args(tiny_model, out) + ["--epochs", "0"])
    assert metrics["step"] == 0 and not (out / "train_log.jsonl").exists() and not (out / "checkpoints").exists()
    preds = [json.loads(line) for line in (out / "predictions_step0.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in preds] == [r["zh_sum"] for r in fixture_rows()[8:]]
    expected = rouge_scores([p["prediction"] for p in preds], [p["reference"] for p in preds], "char")
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert json.loads((out / "results.json").read_text())["metrics"]["step"] == 0


@pytest.mark.slow
def test_wandb_offline_run_logs_to_wandb_not_tensorboard(tiny_model, tmp_path, monkeypatch, fresh_accelerate_state):
    """--wandb --wandb-offline: wandb.init gets the project, run name, entity, offline mode and the output
    folder; the config, the training loss of every step and the validation ROUGE are logged; the run is
    finished. A stand-in ``wandb`` module records the calls (wandb itself is not a test dependency)."""
    import types

    from mt5.finetune_mt5 import main

    calls: list[tuple] = []
    fake = types.ModuleType("wandb")
    fake.config = types.SimpleNamespace(update=lambda values, allow_val_change=False: calls.append(("config", dict(values))))

    class Run:
        def log(self, values, step=None):
            calls.append(("log", dict(values), step))

        def finish(self):
            calls.append(("finish",))

    fake.init = lambda **kw: calls.append(("init", kw)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    out = tmp_path / "wb"
    main(common_args(tiny_model, out) + ["--batch-size", "4", "--max-steps", "2", "--wandb", "--wandb-offline",
                                         "--wandb-project", "mglm-vs-mt5", "--wandb-entity", "lab"])
    assert calls[0] == ("init", {"project": "mglm-vs-mt5", "name": "scisummnet-simple", "entity": "lab",
                                 "dir": str(out), "mode": "offline"})
    assert calls[1][0] == "config" and calls[1][1]["lr"] == 1e-2 and calls[1][1]["task"] == "scisummnet"
    logged = {(step, k): v for c in calls if c[0] == "log" for k, v in c[1].items() for step in [c[2]]}
    assert logged[(1, "train/loss")] == pytest.approx(read_log(out)[1]) and (2, "train/loss") in logged
    assert logged[(2, "valid/rouge-1")] == pytest.approx(json.loads((out / "results.json").read_text())["metrics"]["rouge-1"])
    assert calls[-1] == ("finish",) and not (out / "tensorboard").exists()


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tiny_model, tmp_path):
    out = tmp_path / "ddp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # MGLM_PROGRESS_SECONDS=0: a plain progress line per update (stderr is a pipe, not a terminal)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "MGLM_PROGRESS_SECONDS": "0"}
    launcher = [PY, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    # 8 training rows over 2 processes, batch 2 each: 2 steps per epoch.
    args = common_args(tiny_model, out) + ["--batch-size", "2", "--epochs", "2", "--eval-batch-size", "1"]
    r = subprocess.run(launcher + ["mt5/finetune_mt5.py"] + args, cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes" in r.stderr
    losses = read_log(out)
    assert sorted(losses) == [1, 2, 3, 4] and losses[4] < losses[1]
    result = json.loads((out / "results.json").read_text())
    assert result["metrics"]["step"] == 4 and 0 <= result["metrics"]["rouge-1"] <= 100
    preds = [json.loads(line) for line in (out / "predictions_step4.jsonl").read_text().splitlines()]
    assert [p["index"] for p in preds] == [0, 1]  # one example generated on each rank, gathered once
    assert all(p["prediction"] for p in preds)
    from safetensors.torch import load_file

    assert not [k for k in load_file(out / "best" / "model.safetensors") if k.startswith("module.")]  # no DDP prefix
    # plain progress lines from the main process only, no carriage returns
    assert "train: 4/4 it (100%)" in r.stderr
    assert re.search(r"^generate: (\d+)/\1 it \(100%\)", r.stderr, re.M)


@pytest.mark.slow
def test_legacy_switches_reproduce_token_id_rouge(tiny_model, tmp_path, fresh_accelerate_state):
    """--legacy-rouge scores mT5 token ids (with </s>) of predictions and of the truncated references."""
    from transformers import AutoTokenizer

    from mt5.finetune_mt5 import main
    from tasks.rouge import rouge_n

    out = tmp_path / "legacy"
    metrics = main(common_args(tiny_model, out) + ["--batch-size", "4", "--max-steps", "2", "--max-target-length", "8",
                                                   "--legacy-rouge", "--legacy-double-shift", "--legacy-truncation"])
    tok = AutoTokenizer.from_pretrained(tiny_model)
    preds = [json.loads(line) for line in (out / "predictions_step2.jsonl").read_text().splitlines()]
    r1 = []
    for p in preds:
        ref_ids = tok(p["reference"], max_length=8, truncation=True).input_ids  # the original's truncated target
        ref = tok(tok.decode(ref_ids, skip_special_tokens=True)).input_ids
        pred = tok(p["prediction"]).input_ids
        assert ref[-1] == pred[-1] == tok.eos_token_id
        r1.append(rouge_n(list(map(str, pred)), list(map(str, ref)), 1).fmeasure)
    assert metrics["rouge-1"] == pytest.approx(100 * sum(r1) / len(r1))
    assert metrics["rouge-1"] > 0  # the shared </s> alone makes it positive: the bias the fix removes
