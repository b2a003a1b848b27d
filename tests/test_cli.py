"""Every command a user types runs as written: entry scripts and tools as subprocesses, from the repository
root and from another working directory, and every script path the README names exists.

The other tests import these modules in-process (the repository root is on ``sys.path`` there), so they
cannot see a script that fails to import its own packages when started as ``python tools/X.py``.
"""

from __future__ import annotations

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
