"""Every command a user types runs as written: entry scripts and tools as subprocesses, from the repository
root and from another working directory, and every script path the README names exists.

The other tests import these modules in-process (the repository root is on ``sys.path`` there), so they
cannot see a script that fails to import its own packages when started as ``python tools/X.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from model import GLMConfig, GLMModel

ENTRY_SCRIPTS = ["pretrain_glm.py", "finetune_glm.py", "generate_samples.py", "mt5/finetune_mt5.py"]
TOOLS = sorted(f"tools/{p.name}" for p in (REPO / "tools").glob("*.py") if not p.name.startswith("_"))

README = (REPO / "README.md").read_text(encoding="utf-8")
# A script path after the program that runs it: `python X.py`, `torchrun ... X.py`, `bash scripts/X.sh`.
_PY_CMD = re.compile(r"\b(?:python|torchrun(?: --[\w-]+(?: \d+)?)*) ((?:[\w-]+/)*[\w-]+\.py)\b")
_SH_CMD = re.compile(r"\bbash ((?:[\w-]+/)*[\w-]+\.sh)\b")


def readme_scripts() -> tuple[list[str], list[str]]:
    """(python scripts, shell scripts) the README runs, in code blocks and inline code alike."""
    return sorted(set(_PY_CMD.findall(README))), sorted(set(_SH_CMD.findall(README)))


def test_readme_command_parser_finds_the_documented_commands() -> None:
    py, sh = readme_scripts()
    # Commands the README has carried since the first release; if one goes, this list is edited on purpose.
    assert {"pretrain_glm.py", "finetune_glm.py", "generate_samples.py", "tools/change_mp.py",
            "tools/preprocess_data.py", "tools/train_tokenizer.py", "tools/evaluate.py"} <= set(py)
    assert {"scripts/demo.sh", "scripts/test.sh", "scripts/ds_pretrain_multilingual.sh"} <= set(sh)


@pytest.mark.parametrize("script", sorted(set(ENTRY_SCRIPTS + TOOLS + readme_scripts()[0])))
@pytest.mark.parametrize("where", ["repo root", "elsewhere"])
def test_script_answers_help(script: str, where: str, tmp_path) -> None:
    path = REPO / script
    assert path.is_file(), f"the README or the entry list names {script}, which does not exist"
    cwd = REPO if where == "repo root" else tmp_path
    arg = script if where == "repo root" else str(path)
    r = subprocess.run([sys.executable, arg, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"python {arg} --help (cwd {cwd}) exited {r.returncode}:\n{r.stderr[-2000:]}"
    assert r.stdout.startswith("usage:"), r.stdout[:300]


@pytest.mark.parametrize("script", readme_scripts()[1])
def test_readme_shell_script_exists_and_parses(script: str) -> None:
    path = REPO / script
    assert path.is_file(), f"the README runs `bash {script}`, which does not exist"
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_change_mp_runs_as_documented_from_another_directory(tmp_path) -> None:
    """`python tools/change_mp.py CKPT 2 --out DIR`, started outside the repository, writes two shards whose
    concatenation along the output dimension is the TP-1 MLP weight (the issue's ModuleNotFoundError)."""
    cfg = GLMConfig(num_layers=1, vocab_size=256, hidden_size=32, num_attention_heads=4, max_sequence_length=16)
    full = GLMModel(cfg).state_dict()
    (tmp_path / "ckpt" / "3").mkdir(parents=True)
    torch.save({"module": full, "mp_world_size": 1, "iteration": 3},
               tmp_path / "ckpt" / "3" / "mp_rank_00_model_states.pt")
    (tmp_path / "ckpt" / "latest").write_text("3")
    r = subprocess.run([sys.executable, str(REPO / "tools" / "change_mp.py"), "ckpt", "2", "--out", "tp2"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    shards = [torch.load(tmp_path / "tp2" / "3" / f"mp_rank_{i:02d}_model_states.pt", weights_only=False)
              for i in range(2)]
    key = "transformer.layers.0.mlp.dense_h_to_4h.weight"
    assert torch.equal(torch.cat([s["module"][key] for s in shards]), full[key])
    assert (tmp_path / "tp2" / "latest").read_text() == "3"


# --- --help: every flag explained, every default shown ----------------------------------------------

def _help_entries(script: str) -> dict[str, str]:
    """{first option string: help text} of every option in ``python SCRIPT --help`` (one wide line per
    option where it fits; continuation lines are joined)."""
    env = {**os.environ, "COLUMNS": "250"}
    out = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout
    entries: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"^  (-[^\s,]+)\S*(?: \S+)*?(?:\s{2,}(.*))?$", line)  # invocation, 2+ spaces, help
        if m:
            current = m.group(1)
            entries[current] = (m.group(2) or "").strip()
        elif current and re.match(r"^\s{10,}\S", line):
            entries[current] = (entries[current] + " " + line.strip()).strip()
        else:
            current = None
    return entries


def _actual_defaults(script: str) -> dict[str, object]:
    """The values a run really uses when no flag is given, read from the parsed configuration (not from
    the help machinery under test)."""
    from dataclasses import asdict

    if script == "pretrain_glm.py":
        from training.arguments import parse_pretrain_args

        cfg = asdict(parse_pretrain_args([]))
        return {k: v for part in ("model", "data", "optim", "train") for k, v in cfg[part].items()}
    if script == "finetune_glm.py":
        from tasks.cli import parse_finetune_args

        cfg = asdict(parse_finetune_args(["--task", "xnli", "--data-dir", str(REPO / "data/sample/tasks/xnli/xtreme")]))
        values = {k: v for part in ("model", "optim", "train", "finetune") for k, v in cfg[part].items()}
        for placeholder in ("train_iters", "eval_interval", "save_interval", "task", "data_dir"):
            values.pop(placeholder)  # filled from the data at run time, or given above
        return values
    if script == "generate_samples.py":
        import generate_samples

        return vars(generate_samples.build_parser().parse_args([]))
    from mt5.finetune_mt5 import parse_args

    return {k: v for k, v in asdict(parse_args(["ncls", "sum2zh"])).items() if k not in ("task", "subtask")}


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_every_flag_has_help_and_shows_its_default(script: str) -> None:
    entries = _help_entries(script)
    assert len(entries) > 10, entries
    missing = sorted(flag for flag, text in entries.items() if not text)
    assert not missing, f"{script} --help: flags without help text: {missing}"
    defaults = _actual_defaults(script)
    unshown, wrong = [], []
    for dest, value in defaults.items():
        if value is None or isinstance(value, bool) or value in ((), []):
            continue  # not set / a switch: nothing to show
        flag = "--" + dest.replace("_", "-")
        flag = flag if flag in entries else "--" + dest  # GLM spellings such as --local_rank
        text = entries[flag]
        m = re.search(r"\(default: ([^)]*)\)", text)
        if "default" not in text:
            unshown.append(f"{flag} (default {value!r})")
        elif m and not m.group(1).startswith("-") and m.group(1) != str(value):
            wrong.append(f"{flag}: help says {m.group(1)!r}, the run uses {value!r}")
    assert not unshown, f"{script} --help hides defaults: {unshown}"
    assert not wrong, f"{script} --help shows wrong defaults: {wrong}"


@pytest.mark.parametrize("script", TOOLS)
def test_every_tool_flag_has_help(script: str) -> None:
    entries = _help_entries(script)
    assert "-h" in entries
    missing = sorted(flag for flag, text in entries.items() if not text)
    assert not missing, f"{script} --help: flags without help text: {missing}"


def _parsers_built_by(module_name: str, argv: list[str], monkeypatch, capsys) -> list[argparse.ArgumentParser]:
    """Every ArgumentParser that ``module.main(argv)`` parses with (argv ends in --help, so main stops
    there), and the sub-command parsers under them."""
    import importlib

    seen: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_known_args

    def recording(self, *args, **kwargs):
        seen.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", recording)
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module_name).main(argv)
    capsys.readouterr()
    assert stop.value.code == 0 and seen, f"{module_name}.main({argv}) did not show its help"
    parsers = []
    while seen:
        p = seen.pop()
        parsers.append(p)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen.extend(action.choices.values())
    return parsers


def _help_argvs() -> list[tuple[str, list[str]]]:
    from tasks import registry

    modules = ["pretrain_glm", "finetune_glm", "generate_samples", "mt5.finetune_mt5"]
    modules += [t[:-3].replace("/", ".") for t in TOOLS]
    return [(m, ["--help"]) for m in modules] + [("finetune_glm", ["--task", t, "--help"]) for t in registry.TASKS]


@pytest.mark.parametrize(("module_name", "argv"), _help_argvs(), ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_every_argument_of_every_parser_has_help(module_name: str, argv: list[str], monkeypatch, capsys) -> None:
    """Positionals included (the --help text tests above see only options): every action of every parser
    an entry point builds, sub-commands and their arguments too, explains itself."""
    missing = []
    for parser in _parsers_built_by(module_name, argv, monkeypatch, capsys):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{parser.prog} {c.dest}" for c in action._choices_actions if not c.help]
            elif not action.help:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"arguments without help text: {missing}"


def test_readme_preprocess_command_runs_with_its_flags(tmp_path, capsys) -> None:
    """The README's `tools/preprocess_data.py` line, its placeholder paths pointed at the sample data: every
    flag it shows exists (the tool's flag is --tokenizer-model, as in every other entry point)."""
    import shlex

    from conftest import SAMPLE_CORPUS, SAMPLE_TOKENIZER

    from tools import preprocess_data

    (line,) = re.findall(r"^python tools/preprocess_data\.py (.*)$", README, flags=re.MULTILINE)
    assert "--tokenizer-model " in line, line
    where = {"/data/raw": str(SAMPLE_CORPUS / "de.jsonl"), "/data/stores/mglm": str(tmp_path / "store"),
             "mglm250k-uni.model": str(SAMPLE_TOKENIZER), "16": "1"}  # one worker: the test machine is small
    argv = [where.get(word, word) for word in shlex.split(line)]
    assert sorted(set(where.values()) - set(argv)) == [], (line, argv)
    summary = preprocess_data.main([*argv, "--no-progress"])
    capsys.readouterr()
    assert summary.num_docs == len((SAMPLE_CORPUS / "de.jsonl").read_text(encoding="utf-8").splitlines())
    assert (tmp_path / "store" / "index.json").is_file()
