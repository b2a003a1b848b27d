"""finetune_glm.py end to end on CPU: tiny pretraining -> finetuning on the fixtures -> per-language results;
exact resume; TP=2 == TP=1 losses; DeepSpeed engine; launchers; clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_TOKENIZER
from task_fixtures import TASK_DATA, one_thread, pretrain_tiny, train_task_tokenizer  # noqa: F401 (autouse)

PY = sys.executable


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    tok = train_task_tokenizer(d / "tok")
    return tok, pretrain_tiny(tok, d)


def base_args(setup, task, data, save, epochs=2, *extra):
    tok, ck = setup
    return ["--task", task, "--data-dir", str(data), "--load-pretrained", str(ck), "--tokenizer-model", str(tok),
            "--epochs", str(epochs), "--batch-size", "8", "--lr", "3e-3", "--seq-length", "96", "--save", str(save),
            "--device", "cpu", "--no-tensorboard", "--log-interval", "10", "--hidden-dropout", "0",
            "--attention-dropout", "0", *extra]


def env() -> dict:
    e = dict(os.environ)
    e.update(PYTHONUNBUFFERED="1", DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return e


@pytest.mark.slow
def test_xnli_separable_reaches_100_percent(setup, tmp_path):
    """Labels fixed by a cue word: the model gets every English dev example right and scores every language.

    Only English (the training language) is held to 100 %: with the whole premises (--seq-length 128) this
    tiny model's zero-shot transfer of the cue is not reliable (ar/de/fr 50-67 %). At --seq-length 96 it
    used to reach 100 % everywhere only because the old cut shortened the long premises; mGLM's cut empties
    the hypothesis, which holds the cue, first."""
    import finetune_glm

    save = tmp_path / "ft"
    # --seq-length 128: the longest dev rows need 106 positions with this tokenizer (none is cut).
    r = finetune_glm.main(base_args(setup, "xnli", TASK_DATA / "xnli" / "separable", save, 60,
                                    "--eval-epoch", "10", "--select-on", "avg-dev", "--seq-length", "128"))
    langs = ["ar", "de", "en", "fr", "zh"]
    assert [k for k in r["dev"] if k not in ("avg", "pooled")] == langs
    assert r["dev"]["en"]["accuracy"] == 100.0, r["dev"]
    losses = r["train_losses"]
    assert len(losses) == r["train_iters"] == 60 * r["steps_per_epoch"] == 120  # 15 examples, batch 8
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10, losses  # the loss falls
    on_disk = json.loads((save / "results.json").read_text())
    assert on_disk["dev"] == r["dev"] and "pooled" in (save / "results.txt").read_text()
    preds = [json.loads(x) for x in (save / "predictions" / "xnli-dev-en.jsonl").read_text().splitlines()]
    gold = [line.split("\t")[2].strip() for line in (TASK_DATA / "xnli" / "separable" / "dev-en.tsv")
            .read_text(encoding="utf-8").splitlines() if line.strip()]
    assert [p["label"] for p in preds] == gold
    assert (save / "best" / "latest").is_file() and len([p for p in (save / "best").iterdir() if p.is_dir()]) == 1


@pytest.mark.slow
def test_pawsx_raw_layout_results_and_exact_resume(setup, tmp_path):
    """Per-language dev and test accuracy with unweighted mean; a --load resume repeats the same losses."""
    import finetune_glm

    data = TASK_DATA / "pawsx"
    full = finetune_glm.main(base_args(setup, "pawsx", data, tmp_path / "a", 6, "--save-interval", "3",
                                       "--batch-size", "2", "--select-on", "all-dev"))
    langs = ["de", "en", "es", "fr", "ja", "ko", "zh"]
    for split in ("dev", "test"):
        s = full[split]
        assert [k for k in s if k not in ("avg", "pooled")] == langs
        mean = sum(s[lang]["accuracy"] for lang in langs) / 7
        assert abs(s["avg"]["accuracy"] - mean) < 1e-9
        assert all(s[lang]["accuracy"] in (0.0, 50.0, 100.0) for lang in langs)  # 2 examples per language
    assert full["train_iters"] == 18 and full["steps_per_epoch"] == 3
    resumed = finetune_glm.main(base_args(setup, "pawsx", data, tmp_path / "b", 6, "--save-interval", "3",
                                          "--batch-size", "2", "--select-on", "all-dev", "--load",
                                          str(tmp_path / "a" / "global_step9")))
    assert resumed["step"] == 18
    assert resumed["train_losses"] == pytest.approx(full["train_losses"][9:], abs=1e-6)


@pytest.mark.slow
def test_tp2_losses_equal_tp1(setup, tmp_path):
    """torchrun, 2 gloo processes, TP=2 (dropout off): the per-step losses of TP=1."""
    import finetune_glm
    from training.distributed import free_port

    args = base_args(setup, "xnli", TASK_DATA / "xnli" / "xtreme", tmp_path / "tp1", 2, "--eval-epoch", "2")
    one = finetune_glm.main(args)
    args2 = base_args(setup, "xnli", TASK_DATA / "xnli" / "xtreme", tmp_path / "tp2", 2, "--eval-epoch", "2",
                      "--model-parallel-size", "2")
    cmd = [str(Path(PY).parent / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
           "finetune_glm.py", *args2]
    p = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    two = json.loads((tmp_path / "tp2" / "results.json").read_text())
    assert two["world"] == {"tp": 2, "dp": 1}
    assert two["train_losses"] == pytest.approx(one["train_losses"], abs=1e-5)
    assert two["dev"] == one["dev"]  # same predictions
    assert two["test"] == one["test"] and {"de", "en", "zh"} <= set(two["test"])  # labelled sample test files
    assert (tmp_path / "tp2" / "predictions" / "xnli-test-zh.jsonl").is_file()


@pytest.mark.slow
def test_deepspeed_engine_and_json_agreement(setup, tmp_path):
    """--deepspeed with a JSON: values only in the JSON are used; a flag contradicting it is refused."""
    import finetune_glm

    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1,
                              "gradient_clipping": 1.0, "zero_optimization": {"stage": 0},
                              "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "weight_decay": 0.0,
                                                                       "betas": [0.9, 0.999], "eps": 1e-8}}}))
    args = base_args(setup, "xnli", TASK_DATA / "xnli" / "xtreme", tmp_path / "ds", 1, "--deepspeed",
                     "--deepspeed_config", str(ds))
    r = finetune_glm.main(args)
    plain = finetune_glm.main(base_args(setup, "xnli", TASK_DATA / "xnli" / "xtreme", tmp_path / "pl", 1,
                                        "--adam-eps", "1e-8", "--weight-decay", "0"))
    assert r["train_losses"] == pytest.approx(plain["train_losses"], abs=1e-4)
    with pytest.raises(ValueError, match=r"--lr 0.001 contradicts optimizer.params.lr = 0.003"):
        finetune_glm.main(args[:args.index("--lr")] + ["--lr", "1e-3"] + args[args.index("--lr") + 2:])


def test_errors(setup, tmp_path):
    import finetune_glm

    data = TASK_DATA / "xnli" / "xtreme"
    with pytest.raises(ValueError, match=r"--task 'mnli': unknown task; expected one of .*pawsx.*xnli"):
        finetune_glm.main(base_args(setup, "mnli", data, tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match=r"--data-dir /nonexistent: no such directory"):
        finetune_glm.main(base_args(setup, "xnli", "/nonexistent", tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match=r"dev-sw\.tsv: the dev file of language 'sw' is missing"):
        finetune_glm.main(base_args(setup, "xnli", data, tmp_path / "x", 1, "--languages", "en", "sw"))
    with pytest.raises(FileNotFoundError, match=r"--select-on ko-dev: no dev set of language 'ko'"):
        finetune_glm.main(base_args(setup, "xnli", data, tmp_path / "x", 1, "--select-on", "ko-dev"))
    with pytest.raises(ValueError, match=r"--select-on 'best': expected"):
        finetune_glm.main(base_args(setup, "xnli", data, tmp_path / "x", 1, "--select-on", "best"))
    # A checkpoint pretrained with another vocabulary: both sizes named, before any tensor is touched.
    args = base_args(setup, "pawsx", TASK_DATA / "pawsx", tmp_path / "x", 1)
    args[args.index("--tokenizer-model") + 1] = str(SAMPLE_TOKENIZER)
    from data_utils.tokenizer import GLMTokenizer

    rows, sample = GLMTokenizer(setup[0]).padded_vocab_size(), GLMTokenizer(SAMPLE_TOKENIZER)
    assert rows != sample.padded_vocab_size()
    with pytest.raises(ValueError, match=rf"its vocabulary has {rows} rows, but the tokenizer .*mglm-sample\.model "
                                         rf"has {len(sample)} tokens \(its padded table has {sample.padded_vocab_size()} or "):
        finetune_glm.main(args)
    out = tmp_path / "done"
    out.mkdir()
    (out / "results.json").write_text("{}")
    with pytest.raises(ValueError, match=r"results\.json exists; pass --overwrite"):
        finetune_glm.main(base_args(setup, "xnli", data, out, 1))


def _pawsx_partial(tmp_path: Path) -> Path:
    """x-final with the English training file but no English dev set, German dev and test, French dev and an
    empty test file (header only), nothing for es, ja, ko, zh."""
    import shutil

    src, d = TASK_DATA / "pawsx" / "x-final", tmp_path / "partial" / "x-final"
    (d / "en").mkdir(parents=True)
    shutil.copy(src / "en" / "train.tsv", d / "en" / "train.tsv")
    shutil.copytree(src / "de", d / "de")
    (d / "fr").mkdir()
    shutil.copy(src / "fr" / "dev_2k.tsv", d / "fr" / "dev_2k.tsv")
    (d / "fr" / "test_2k.tsv").write_text("id\tsentence1\tsentence2\tlabel\n", encoding="utf-8")
    return d


def test_selection_default_and_absent_languages(setup, tmp_path, capsys):
    """Without an English dev set the model is selected on the first language's dev set, and the log says so;
    missing and empty files are listed in a warning and shown as absent (not in avg); a language asked for
    with --languages whose file is empty is an error naming the file; --epochs 0 needs no selection set."""
    import finetune_glm

    data = _pawsx_partial(tmp_path)
    r = finetune_glm.main(base_args(setup, "pawsx", data, tmp_path / "a", 1))
    log = capsys.readouterr().out
    assert r["select_on"] == "de-dev" and r["best_step"] == 1
    assert "--select-on not given: selecting on de-dev (no labelled English dev set; the first language's dev set)" in log
    assert f"pawsx dev in {data}: no file for en, es, ja, ko, zh (shown as absent" in log
    assert f"pawsx test in {data}: no file for en, es, ja, ko, zh; empty file for fr (shown as absent" in log
    assert r["absent"] == {"dev": ["en", "es", "ja", "ko", "zh"], "test": ["en", "es", "fr", "ja", "ko", "zh"]}
    assert [k for k in r["dev"]] == ["de", "fr", "avg", "pooled"] and list(r["test"]) == ["de", "avg", "pooled"]
    assert r["dev"]["avg"]["accuracy"] == (r["dev"]["de"]["accuracy"] + r["dev"]["fr"]["accuracy"]) / 2
    header, row = (tmp_path / "a" / "results.txt").read_text().splitlines()[:2]
    assert header.split()[2:] == ["de", "en", "es", "fr", "ja", "ko", "zh", "avg", "pooled"]  # PAWS-X order
    assert row.split()[1:] == [f"{r['dev']['de']['accuracy']:.2f}", "absent", "absent",
                               f"{r['dev']['fr']['accuracy']:.2f}", "absent", "absent", "absent",
                               f"{r['dev']['avg']['accuracy']:.2f}", f"{r['dev']['pooled']['accuracy']:.2f}"]

    with pytest.raises(ValueError, match=r"fr/test_2k\.tsv: the test file of language 'fr' is empty \(listed by "
                                         r"--languages\)"):
        finetune_glm.main(base_args(setup, "pawsx", data, tmp_path / "b", 1, "--languages", "fr", "de"))
    with pytest.raises(FileNotFoundError, match=r"es/dev_2k\.tsv: the dev file of language 'es' is missing"):
        finetune_glm.main(base_args(setup, "pawsx", data, tmp_path / "b", 1, "--languages", "de", "es"))
    capsys.readouterr()
    r = finetune_glm.main(base_args(setup, "pawsx", data, tmp_path / "b", 1, "--languages", "de"))
    assert r["select_on"] == "de-dev" and "the first requested language's dev set" in capsys.readouterr().out
    assert r["absent"] == {"dev": [], "test": []} and list(r["dev"]) == ["de", "avg", "pooled"]
    r = finetune_glm.main(base_args(setup, "pawsx", data, tmp_path / "c", 0))  # no English dev, no training
    assert r["select_on"] is None and r["train_iters"] == 0 and list(r["dev"]) == ["de", "fr", "avg", "pooled"]


def test_load_refuses_a_checkpoint_that_is_not_a_finetune_of_the_task(setup, tmp_path):
    """--load resumes a finetune of this task: a pretraining checkpoint or another task's finetune is refused
    before any tensor is read, pointing to --load-pretrained."""
    import finetune_glm

    tok, pretrained = setup
    args = base_args(setup, "xnli", TASK_DATA / "xnli" / "xtreme", tmp_path / "x", 1, "--load", str(pretrained))
    with pytest.raises(ValueError, match=r"--load .*global_step4: not a finetune \(its meta\.json names no task: a "
                                         r"pretraining checkpoint\); .* use --load-pretrained .*global_step4"):
        finetune_glm.main(args)
    pawsx = tmp_path / "pawsx"
    finetune_glm.main(base_args(setup, "pawsx", TASK_DATA / "pawsx", pawsx, 1, "--batch-size", "8"))
    args = base_args(setup, "xnli", TASK_DATA / "xnli" / "xtreme", tmp_path / "y", 1, "--load", str(pawsx))
    with pytest.raises(ValueError, match=r"a finetune of task 'pawsx', not 'xnli'; --load resumes a finetune of "
                                         r"this task\. To start finetuning from its weights use --load-pretrained"):
        finetune_glm.main(args)


def test_selection_helpers_hand_worked():
    from tasks.base import default_select_on, format_table

    labelled = lambda exs: all(e is not None for e in exs)  # noqa: E731
    assert default_select_on({"de": [1], "en": [1]}, None, labelled) == ("en-dev", "English dev set")
    assert default_select_on({"de": [1], "en": [None]}, ["fr", "de"], labelled)[0] == "de-dev"  # en unlabelled
    assert default_select_on({"de": [1], "fr": [1]}, ["fr", "de"], labelled)[0] == "fr-dev"  # requested order
    assert default_select_on({"de": [None]}, None, labelled)[0] is None
    table = format_table("t dev", {"de": {"acc": 50.0}, "avg": {"acc": 50.0}}, ["acc"], ["fr"])
    assert table.splitlines() == ["t dev              de     fr    avg", "acc             50.00 absent  50.00"]
    assert format_table("t test", {}, ["acc"], ["fr"]).splitlines()[1:] == ["acc            absent",
                                                                           "(no labelled examples)"]
    table = format_table("t", {"zh": {"acc": 1.0}, "de-en": {"acc": 2.0}}, ["acc"], ["ar"], ["ar", "de", "zh"])
    assert table.splitlines()[0].split()[1:] == ["ar", "zh", "de-en"]  # benchmark order, then the others


def test_selection_set_and_absent_checks():
    """The checks finetune_glm runs before training, on hand-made dev sets (None = an unlabelled example)."""
    from types import SimpleNamespace

    from finetune_glm import absent_languages, check_selection_set

    labelled = lambda exs: all(e is not None for e in exs)  # noqa: E731
    d = Path("D")
    with pytest.raises(ValueError, match=r"--select-on de-dev: the dev set of 'de' in D carries no labels"):
        check_selection_set("de-dev", "de", {"de": [None], "en": [1]}, labelled, d)
    with pytest.raises(ValueError, match=r"--select-on avg-dev: no dev set in D carries labels"):
        check_selection_set("avg-dev", "avg", {"de": [None]}, labelled, d)
    with pytest.raises(FileNotFoundError, match=r"--select-on fr-dev: no dev set of language 'fr' in D \(dev "
                                                 r"languages found: de\)"):
        check_selection_set("fr-dev", "fr", {"de": [1]}, labelled, d)
    check_selection_set("all-dev", "pooled", {"de": [None], "en": [1]}, labelled, d)

    warnings = []
    task = SimpleNamespace(name="t", expected_languages=lambda split: ("de", "en", "fr", "zh"))
    log = SimpleNamespace(warning=warnings.append)
    assert absent_languages(task, "dev", {"de": [1], "fr": []}, None, d, log) == ["en", "fr", "zh"]
    assert warnings == ["t dev in D: no file for en, zh; empty file for fr (shown as absent in the results; "
                        "not in avg or pooled)"]
    assert absent_languages(task, "dev", {"de": [1]}, ["de"], d, log) == [] and len(warnings) == 1
    with pytest.raises(ValueError, match=r"--languages fr: the test set of D has an empty file for fr"):
        absent_languages(task, "test", {"de": [1], "fr": []}, ["de", "fr"], d, log)


@pytest.mark.slow
def test_cli_one_line_error_and_launcher_passthrough(setup, tmp_path):
    """The launcher builds the deepspeed command with mGLM's defaults and passes extra flags through."""
    fake = tmp_path / "deepspeed"
    fake.write_text("#!/bin/sh\necho \"$@\"\n")
    fake.chmod(0o755)
    tok, ck = setup
    e = env()
    e.update(DEEPSPEED=str(fake), CHECKPOINT=str(ck), DATA=str(TASK_DATA / "xnli" / "xtreme"), NUM_GPUS="2",
             MP_SIZE="2", PY=PY, SAVE=str(tmp_path / "s"))
    for script, task, ds in (("finetune_xnli.sh", "xnli", "config/tasks/xnli.json"),
                             ("finetune_pawsx.sh", "pawsx", "config/tasks/pawsx.json")):
        p = subprocess.run(["bash", f"scripts/{script}", "--epochs", "1", "--log-interval", "7"], cwd=REPO, env=e,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        out = p.stdout.split()
        assert out[out.index("--task") + 1] == task and out[out.index("--deepspeed_config") + 1] == ds
        assert out[out.index("--model-parallel-size") + 1] == "2" and out[out.index("--num_gpus") + 1] == "2"
        assert out[-4:] == ["--epochs", "1", "--log-interval", "7"]
        assert out[out.index("--load-pretrained") + 1] == str(ck)
    p = subprocess.run([PY, "finetune_glm.py", "--task", "nope", "--data-dir", str(tmp_path)], cwd=REPO, env=env(),
                       capture_output=True, text=True, timeout=60)
    from tasks.registry import TASKS

    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"finetune_glm.py: error: --task 'nope': unknown task; expected one of {', '.join(sorted(TASKS))}"]
