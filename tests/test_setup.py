"""training/setup.py, the run set-up every entry script shares, and the import graph it keeps clean:
checkpoint metadata that rebuilds the same tokenizer ([dBLOCK] included, also when resuming a finetune),
tokenizer resolution, and which packages may import which."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_TOKENIZER
from task_fixtures import TASK_DATA, one_thread, train_task_tokenizer  # noqa: F401 (autouse)

from mpu.initialize import ParallelState

ENTRY_SCRIPTS = {"pretrain_glm", "finetune_glm", "generate_samples"}


# --------------------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("add_dblock", [False, True])
def test_checkpoint_meta_rebuilds_the_same_tokenizer(add_dblock):
    """The meta.json fields of every checkpoint give back the tokenizer the run trained with: with [dBLOCK]
    at N+10 (N + 11 ids) or without it (N + 10 ids)."""
    from data_utils.tokenizer import GLMTokenizer
    from model import GLMConfig
    from training.setup import checkpoint_meta, checkpoint_tokenizer

    tok = GLMTokenizer(SAMPLE_TOKENIZER, add_dblock=add_dblock)
    meta = checkpoint_meta({"x": 1}, GLMConfig(num_layers=1, vocab_size=8064, hidden_size=8, num_attention_heads=2),
                           ParallelState.single(), tok, 7, task="xnli")
    meta = json.loads(json.dumps(meta))  # as written to and read from meta.json
    assert meta["tokenizer_add_dblock"] is add_dblock and meta["task"] == "xnli" and meta["seed"] == 7
    assert meta["tp_size"] == 1 and meta["dp_size"] == 1 and meta["model_config"]["vocab_size"] == 8064
    again = checkpoint_tokenizer(None, meta, "meta.json")
    n = tok.num_text_tokens
    assert len(again) == n + (11 if add_dblock else 10) == len(tok)
    assert again.add_dblock is add_dblock
    assert ((n + 10) in again.encode("a [dBLOCK] b")) is add_dblock  # a command token (N+10) only when defined


def test_tokenizer_path_flag_record_and_errors(tmp_path, monkeypatch):
    """The flag wins over the record; a record relative to the repository root is found from anywhere; a
    missing file or no tokenizer at all is one line naming it."""
    from training.setup import tokenizer_path

    rel = str(SAMPLE_TOKENIZER.relative_to(REPO))
    monkeypatch.chdir(tmp_path)  # a run started outside the repository
    assert tokenizer_path(None, {"tokenizer": rel}, "m.json") == str(REPO / rel)
    assert tokenizer_path(str(SAMPLE_TOKENIZER), {"tokenizer": "gone.model"}, "m.json") == str(SAMPLE_TOKENIZER)
    with pytest.raises(FileNotFoundError, match=r"tokenizer gone.model \(recorded in m.json\) not found"):
        tokenizer_path(None, {"tokenizer": "gone.model"}, "m.json")
    with pytest.raises(FileNotFoundError, match=r"--tokenizer-model .*x.model: file not found"):
        tokenizer_path(str(tmp_path / "x.model"), None, "m.json")
    with pytest.raises(ValueError, match=r"--tokenizer-model FILE.model is required \(m.json records no tokenizer\)"):
        tokenizer_path(None, {}, "m.json")


@pytest.mark.slow
def test_resumed_finetune_of_a_dblock_model_keeps_the_token(tmp_path):
    """A model pretrained with --block-mask-prob has [dBLOCK] at N+10. Finetuning it records that in its
    checkpoints (it did not: a resumed finetune rebuilt the tokenizer without the token), so --load gives
    the resumed run the same tokenizer, and its own checkpoints record it again."""
    import finetune_glm
    import pretrain_glm
    from data_utils.tokenizer import GLMTokenizer
    from tools.preprocess_data import main as preprocess
    from training import setup

    tok = train_task_tokenizer(tmp_path / "tok")
    preprocess([str(REPO / "data/sample/corpus"), "-o", str(tmp_path / "store"), "--tokenizer-model", str(tok),
                "--no-progress"])
    pre = tmp_path / "pre"
    pretrain_glm.main(["--model-config", str(REPO / "config/model/glm-tiny.json"), "--train-data",
                       str(tmp_path / "store"), "--tokenizer-model", str(tok), "--seq-length", "64",
                       "--train-iters", "2", "--batch-size", "2", "--block-mask-prob", "0.5", "--eval-interval",
                       "1000", "--num-workers", "0", "--save", str(pre), "--device", "cpu", "--no-tensorboard"])
    args = ["--task", "xnli", "--data-dir", str(TASK_DATA / "xnli" / "xtreme"), "--epochs", "2",
            "--batch-size", "8", "--seq-length", "96", "--device", "cpu", "--no-tensorboard", "--select-on", "en-dev"]
    finetune_glm.main(args + ["--load-pretrained", str(pre), "--save", str(tmp_path / "a"), "--save-interval", "2"])
    meta = json.loads((tmp_path / "a" / "global_step2" / "meta.json").read_text())
    assert meta["tokenizer_add_dblock"] is True and meta["task"] == "xnli"

    built = []
    real = setup.checkpoint_tokenizer

    def spy(*a, **k):
        built.append(real(*a, **k))
        return built[-1]

    import unittest.mock

    with unittest.mock.patch.object(setup, "checkpoint_tokenizer", spy):
        r = finetune_glm.main(args + ["--load", str(tmp_path / "a" / "global_step2"), "--save", str(tmp_path / "b")])
    assert r["step"] == 4
    expected = GLMTokenizer(tok, add_dblock=True)
    assert [len(t) for t in built] == [len(expected)] and built[0].add_dblock
    last = json.loads((tmp_path / "b" / "global_step4" / "meta.json").read_text())
    assert last["tokenizer_add_dblock"] is True


# ------------------------------------------------------------------------------------- import graph
def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (at module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((REPO / folder).rglob("*.py"))]


def test_import_graph():
    """Layers: no entry script imports another; training/ does not import tasks/; model/, mpu/, data_utils/
    import neither training/ nor tasks/; common/ imports no package of the repository."""
    bad = []
    for name in ENTRY_SCRIPTS:
        bad += [f"{name}.py imports {m}" for m in _imports(REPO / f"{name}.py") & (ENTRY_SCRIPTS - {name})]
    for p in _files("training"):
        bad += [f"{p.relative_to(REPO)} imports tasks" for m in _imports(p) if m == "tasks"]
    for p in _files("model", "mpu", "data_utils"):
        bad += [f"{p.relative_to(REPO)} imports {m}" for m in _imports(p) & {"training", "tasks"}]
    ours = {"model", "mpu", "data_utils", "training", "tasks", "tools", "benchmarks", "mt5", *ENTRY_SCRIPTS}
    for p in _files("common"):
        bad += [f"{p.relative_to(REPO)} imports {m}" for m in _imports(p) & ours]
    assert not bad, "\n".join(bad)


def test_import_graph_check_sees_an_import_inside_a_function(tmp_path):
    """The checker reads imports inside functions too (the entry scripts import lazily)."""
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from pretrain_glm import run\n    import training.setup as s\n")
    assert _imports(p) == {"pretrain_glm", "training"}


# ------------------------------------------------------------------------------------- task options
def test_each_task_shows_and_owns_its_options():
    """``--task X --help`` lists X's own options and no other task's; plain ``--help`` lists none of them and
    says how to see them; a flag of another task is refused in one line naming it and the task."""
    from common.errors import UsageError
    from tasks.cli import build_parser, parse_finetune_args

    def listed(task: str | None) -> set[str]:  # the flags --help describes (one per option line)
        return set(re.findall(r"^  (--[\w-]+)", build_parser(task).format_help(), re.M))

    plain = listed(None)
    assert {"--epochs", "--task"} <= plain and not plain & {"--qa-stride", "--num-beams", "--train-file"}
    assert "--task NAME --help" in build_parser().format_help()
    qa, cloze, xnli = listed("xquad"), listed("cloze"), listed("xnli")
    assert {"--qa-stride", "--num-beams"} <= qa and "--train-file" not in qa
    assert {"--verbalizers", "--train-file"} <= cloze and not cloze & {"--num-beams", "--qa-stride"}
    assert xnli == plain
    data = str(TASK_DATA / "xnli" / "xtreme")
    with pytest.raises(UsageError, match=r"^--num-beams --qa-stride: not an option of --task xnli "):
        parse_finetune_args(["--task", "xnli", "--data-dir", data, "--qa-stride", "3", "--num-beams", "2"])
    cfg = parse_finetune_args(["--task", "xquad", "--data-dir", data, "--qa-stride", "3", "--num-beams", "2"])
    assert (cfg.task_options.qa_stride, cfg.task_options.num_beams, cfg.task_options.qa_aggregate) == (3, 2, "best")
    # meta.json's config keeps the task's options beside the shared ones, as before the split
    recorded = cfg.to_dict()["finetune"]
    assert recorded["qa_stride"] == 3 and recorded["task"] == "xquad" and "task_options" not in cfg.to_dict()


def test_qa_options_are_checked_once_by_their_owner(monkeypatch):
    """The QA options are validated by QAOptions.validate only (the parser called it; building the task does
    not check again), and a bad value is refused there."""
    from tasks.cli import parse_finetune_args
    from tasks.qa import QAOptions

    calls = []
    real = QAOptions.validate
    monkeypatch.setattr(QAOptions, "validate", lambda self, f: (calls.append(self), real(self, f))[1])
    data = str(TASK_DATA / "xnli" / "xtreme")
    cfg = parse_finetune_args(["--task", "xquad", "--data-dir", data])
    from data_utils.tokenizer import GLMTokenizer
    from tasks.xquad import XQuAD

    task = XQuAD(GLMTokenizer(SAMPLE_TOKENIZER), 64, options=cfg.task_options)
    assert len(calls) == 1 and task.stride == 32 and task.na_train == "keep"
    with pytest.raises(ValueError, match="--qa-na-train 'sometimes': expected keep or drop"):
        parse_finetune_args(["--task", "xquad", "--data-dir", data, "--qa-na-train", "sometimes"])
