"""The README's two commands and the environment set-up behind them (scripts/setup_env.sh, test.sh, demo.sh,
.ci/run), run against stand-in interpreters that record what they are asked to do (no pip, no network):
torch is installed first, then the requirement files; a second run does no pip work; a changed requirement
file or torch pin installs again; CI runs exactly the README's test command. Also the declared dependency
ranges and tool settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

SEP = "\x1f"  # joins one invocation's arguments in the log (arguments may contain spaces)

# The venv's python: logs every `-m ...` call; `-c` snippets run in the real interpreter, except the torch probe.
VENV_PY = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then
  case "$2" in *torch*) echo cpu; exit 0;; esac
  exec "{real}" "$@"
fi
(IFS=$'\\x1f'; echo "$*") >> "{log}"
"""
# The base interpreter (MGLM_PYTHON): `-m venv DIR` makes DIR/bin/python the logging stand-in above.
BASE_PY = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then exec "{real}" "$@"; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "{venv_py}" "$3/bin/python" && chmod +x "$3/bin/python"
  printf 'venv\\037%s\\n' "$3" >> "{log}"
  exit 0
fi
exit 3
"""


@pytest.fixture()
def sandbox(tmp_path):
    """A copy of the scripts and requirement files (so tests may edit them) and the stand-in interpreters."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not available")
    root = tmp_path / "repo"
    for rel in ["scripts/setup_env.sh", "scripts/test.sh", "scripts/demo.sh", ".ci/run", "requirements.txt",
                "requirements-dev.txt", "requirements-mt5.txt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
    log = tmp_path / "calls.log"
    venv_py = tmp_path / "venv_python"
    venv_py.write_text(VENV_PY.format(real=sys.executable, log=log))
    base = tmp_path / "base_python"
    base.write_text(BASE_PY.format(real=sys.executable, log=log, venv_py=venv_py))
    base.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGLM_") and k not in ("DS_ACCELERATOR", "OUT")}
    env["MGLM_PYTHON"] = str(base)

    def run(*cmd: str, **extra_env: str) -> tuple[list[list[str]], str]:
        """Run a command in the sandbox repo; return the stand-ins' calls made by it and its output."""
        log.write_text("")
        p = subprocess.run(list(cmd), cwd=root, env={**env, **extra_env}, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        calls = [line.split(SEP) for line in log.read_text().splitlines() if line]
        return calls, p.stdout + p.stderr

    return root, run


def pip_calls(calls):
    return [c for c in calls if c[:3] == ["-m", "pip", "install"]]


def test_setup_installs_torch_first_then_requirements_and_is_idempotent(sandbox):
    root, run = sandbox
    venv = root / ".venv"
    calls, out = run("bash", "scripts/setup_env.sh")
    assert calls[0] == ["venv", str(venv)], "a fresh machine gets a venv inside the repo"
    pips = pip_calls(calls)
    assert len(pips) == 2
    assert pips[0][-1] == "torch==2.13.0" and not any(a == "-r" for a in pips[0])
    reqs = [pips[1][i + 1] for i, a in enumerate(pips[1]) if a == "-r"]
    assert reqs == [str(root / f) for f in ("requirements.txt", "requirements-dev.txt", "requirements-mt5.txt")]
    assert (venv / ".mglm-installed").is_file()

    calls, out = run("bash", "scripts/setup_env.sh")
    assert calls == [], "a second run reuses the venv and does no pip work"
    assert "environment up to date" in out

    # a changed pin or requirement file installs again (and only then)
    calls, _ = run("bash", "scripts/setup_env.sh", MGLM_TORCH="torch==2.13.0+cpu")
    assert [c[-1] for c in pip_calls(calls)][0] == "torch==2.13.0+cpu"
    calls, _ = run("bash", "scripts/setup_env.sh", MGLM_TORCH="torch==2.13.0+cpu")
    assert calls == []
    with open(root / "requirements.txt", "a") as f:
        f.write("einops>=0.6\n")
    calls, _ = run("bash", "scripts/setup_env.sh")
    assert len(pip_calls(calls)) == 2
    calls, _ = run("bash", "scripts/setup_env.sh")
    assert calls == []


def test_setup_torch_index_applies_to_the_torch_install_only(sandbox):
    _, run = sandbox
    url = "https://download.pytorch.org/whl/cpu"
    calls, out = run("bash", "scripts/setup_env.sh", MGLM_TORCH_INDEX=url)
    torch_call, req_call = pip_calls(calls)
    i = torch_call.index("--extra-index-url")
    assert torch_call[i + 1] == url and torch_call[-1] == "torch==2.13.0"
    assert "--extra-index-url" not in req_call


def test_setup_refuses_an_old_interpreter(sandbox, tmp_path):
    root, _ = sandbox
    old = tmp_path / "python2"
    old.write_text("#!/usr/bin/env bash\nexit 1\n")
    old.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGLM_")}
    p = subprocess.run(["bash", "scripts/setup_env.sh"], cwd=root, env={**env, "MGLM_PYTHON": str(old)},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert f"{old} is not a Python >= 3.10 interpreter" in p.stderr
    assert not (root / ".venv").exists()


def readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Two commands\s+```bash\n(.*?)```", readme, re.S)
    assert block, "README has a 'Two commands' section with a bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_commands_and_ci_run_the_scripts(sandbox):
    root, run = sandbox
    assert readme_commands() == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    run("bash", "scripts/setup_env.sh")  # install once; the calls below only run the entry points

    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == readme_commands()[1], ".ci/run ends with exactly the README's test command"
    calls, _ = run("bash", ".ci/run")
    assert calls == [["-m", "pytest"]]

    calls, _ = run("bash", "scripts/test.sh", "-m", "not slow", "tests/test_tokenizer.py")
    assert calls == [["-m", "pytest", "-m", "not slow", "tests/test_tokenizer.py"]]

    calls, _ = run("bash", "scripts/demo.sh")
    assert calls == [["tools/demo.py", "--out", "demo_output"]]


# ------------------------------------------------------------------------ dependencies and tool settings
def test_requirements_ranges_hold_cpu_torch_and_installed_versions():
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    lines = [x.split("#")[0].strip() for x in (REPO / "requirements.txt").read_text().splitlines()]
    reqs = {Requirement(x).name.lower(): Requirement(x) for x in lines if x}
    assert {"torch", "deepspeed", "sentencepiece", "numpy", "tensorboardx", "tqdm"} <= set(reqs)
    assert "apex" not in reqs
    assert reqs["torch"].specifier.contains("2.13.0")
    assert not reqs["torch"].specifier.contains("1.13.1"), "a torch range, not an open lower bound"
    for name, req in reqs.items():
        try:
            have = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} (requirements.txt) is not installed in this environment")
        assert req.specifier.contains(have, prereleases=True), f"installed {name} {have} outside {req}"


def test_pyproject_markers_and_ruff():
    import tomllib

    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    markers = {m.split(":")[0] for m in conf["tool"]["pytest"]["ini_options"]["markers"]}
    assert {"slow", "gpu"} <= markers
    assert "--strict-markers" in conf["tool"]["pytest"]["ini_options"]["addopts"]
    assert "ruff" in conf["tool"]


def test_gitignore_covers_the_venv_and_outputs():
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    for path in [".venv/bin/python", "demo_output/results.json", "tests/__pycache__/x.pyc"]:
        p = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert p.returncode == 0, f"{path} is not ignored by .gitignore"
