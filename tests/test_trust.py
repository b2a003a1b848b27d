"""Trust at the edges (issue 13, checkpoint side): no checkpoint runs code, damage is named, a damaged newest
checkpoint falls back to an intact one, one run per save directory, every metrics row survives a resume, and
a full disk says so.

The attacker's file is a real ``torch.save`` whose pickle calls ``exec`` through ``__reduce__`` to write a
marker file: on every load path the marker must never appear and the refusal must name the file and the
``--trust-checkpoint`` flag.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, SAMPLE_CORPUS, SAMPLE_TOKENIZER

from common import safe_load
from common.safe_load import UnreadableCheckpointError, UnsafeCheckpointError
from training import checkpoint as ckpt

PY = sys.executable


class Payload:
    """Unpickling calls exec(code): writes ``marker``. A weights-only load must never get that far."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def write_evil(path: Path, marker: Path, module: dict | None = None) -> Path:
    """A checkpoint-shaped file (weights under ``module``) that carries the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"module": module or {"word_embeddings.weight": torch.zeros(4, 2)}, "extra": Payload(marker)}, path)
    return path


def write_vouched(path: Path, obj: dict) -> Path:
    """``obj`` plus a harmless object the weights-only unpickler does not allow (argparse.Namespace, as
    old training scripts saved their ``args``): refused without the flag, loaded with it."""
    torch.save({**obj, "args": argparse.Namespace(lr=1e-3)}, path)
    return path


def replace_recorded(tag_dir: Path, name: str) -> None:
    """An attacker who rewrites a file can rewrite meta.json's record of it too: integrity is no defence
    against a malicious file, only the unpickler is. Update the record so the load reaches the unpickler."""
    meta = json.loads((tag_dir / "meta.json").read_text())
    meta["files"][name] = {"size": (tag_dir / name).stat().st_size, "sha256": ckpt.sha256_of(tag_dir / name)}
    (tag_dir / "meta.json").write_text(json.dumps(meta))


def flip_bytes(path: Path, n: int = 1000, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 2 if offset is None else offset
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tools.preprocess_data import main as preprocess

    out = tmp_path_factory.mktemp("store") / "sample"
    preprocess([str(SAMPLE_CORPUS), "-o", str(out), "--tokenizer-model", str(SAMPLE_TOKENIZER), "--no-progress"])
    return out


def pretrain_args(store, save, iters=6, *extra):
    return ["--model-config", str(REPO / "config/model/glm-tiny.json"), "--train-data", str(store),
            "--seq-length", "64", "--train-iters", str(iters), "--lr-decay-iters", str(iters), "--batch-size", "2",
            "--lr", "1e-3", "--log-interval", "1", "--eval-interval", "1000", "--num-workers", "0",
            "--save", str(save), "--save-interval", "2", "--device", "cpu", "--no-tensorboard", *extra]


@pytest.fixture(scope="module")
def run6(store, tmp_path_factory):
    """An uninterrupted 6-step run with checkpoints at steps 2, 4 and 6 (copied by the tests that damage it)."""
    import pretrain_glm

    save = tmp_path_factory.mktemp("run6") / "save"
    result = pretrain_glm.main(pretrain_args(store, save))
    return save, result


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------- 1. no checkpoint runs code
def test_safe_load_refuses_the_payload_and_names_the_file(tmp_path):
    marker = tmp_path / "MARKER"
    evil = write_evil(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_load.load(evil, what="--load-pretrained")
    msg = str(e.value)
    assert "\n" not in msg and str(evil) in msg and "--trust-checkpoint" in msg and "exec" in msg
    assert not marker.exists()


def test_trust_flag_reads_a_harmless_file_the_allowlist_refuses(tmp_path):
    f = write_vouched(tmp_path / "ns.pt", {"module": {"w": torch.ones(2)}})
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        safe_load.load(f)
    obj = safe_load.load(f, trust=True)
    assert obj["args"].lr == 1e-3 and torch.equal(obj["module"]["w"], torch.ones(2))


@pytest.mark.parametrize("content", [b"", b"hello, this is text\n", os.urandom(3000)], ids=["empty", "text", "random"])
def test_files_that_are_not_checkpoints_are_one_line_naming_the_file(tmp_path, content):
    f = tmp_path / "weights.pt"
    f.write_bytes(content)
    with pytest.raises(UnreadableCheckpointError) as e:
        safe_load.load(f, trust=True)  # vouching for a file does not make garbage readable
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_truncated_checkpoint_is_named(tmp_path):
    f = tmp_path / "t.pt"
    torch.save({"module": {"w": torch.randn(1000)}}, f)
    f.write_bytes(f.read_bytes()[:2000])
    with pytest.raises(UnreadableCheckpointError, match="t.pt: not a readable torch checkpoint"):
        safe_load.load(f)


def test_our_saves_load_weights_only_without_any_allowlist(tmp_path):
    """What we write needs no extra global at all (numpy's RNG state is stored as a tensor), and the RNG
    streams come back exactly."""
    import random

    import numpy as np

    from model import GLMConfig, GLMModel
    from mpu.initialize import ParallelState
    from training.engine import TorchEngine

    model = GLMModel(GLMConfig(num_layers=1, vocab_size=128, hidden_size=16, num_attention_heads=2,
                               max_sequence_length=16), init_seed=0)
    eng = TorchEngine(model, [{"params": list(model.parameters())}], ParallelState.single(), lr=1e-3)
    ckpt.save_checkpoint(eng, tmp_path, 3, {"tp_size": 1}, {"iteration": 3}, rank=0)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    for f in (tmp_path / "global_step3").glob("*.pt"):
        torch.load(f, weights_only=True)  # torch's own defaults: no numpy, no custom class
    random.random(), np.random.rand(), torch.rand(1)
    assert ckpt.load_rng(tmp_path, "global_step3", 0)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_rng_files_of_the_previous_version_still_load(tmp_path):
    """Earlier versions stored numpy's state as an array: allowed by name (numpy's array rebuild only)."""
    import numpy as np

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "meta.json").write_text(json.dumps({"step": 1}))
    state = np.random.get_state()
    torch.save({"python": __import__("random").getstate(), "numpy": state, "torch": torch.get_rng_state(),
                "cuda": None}, tmp_path / "t" / "rng_rank_00000.pt")
    expected = np.random.rand()
    assert ckpt.load_rng(tmp_path, "t", 0)
    assert np.random.rand() == expected


def test_finetune_load_pretrained_file_and_dir_refuse(tmp_path):
    import finetune_glm

    marker = tmp_path / "MARKER"
    evil_file = write_evil(tmp_path / "pretrained.pt", marker)
    evil_dir = write_evil(tmp_path / "released" / "mp_rank_00_model_states.pt", marker).parent
    for src, named in ((evil_file, evil_file), (evil_dir, evil_dir / "mp_rank_00_model_states.pt")):
        with pytest.raises(UnsafeCheckpointError, match=f"{named}.*--trust-checkpoint"):
            finetune_glm.main(["--task", "xnli", "--data-dir", str(REPO / "data/sample/tasks/xnli/xtreme"),
                               "--load-pretrained", str(src), "--tokenizer-model", str(SAMPLE_TOKENIZER),
                               "--device", "cpu", "--epochs", "1", "--seq-length", "64"])
    assert not marker.exists()


def test_pretrain_load_pretrained_and_load_refuse(store, run6, tmp_path):
    import pretrain_glm

    marker = tmp_path / "MARKER"
    evil = write_evil(tmp_path / "pretrained.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match=f"{evil}.*--trust-checkpoint"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "a", 1, "--load-pretrained", str(evil)))
    # --load of our layout, the model file replaced and its record in meta.json rewritten to match
    save = copy_run(run6[0], tmp_path / "run")
    tag_dir = save / "global_step6"
    write_evil(tag_dir / "mp_rank_00_model_states.pt", marker)
    replace_recorded(tag_dir, "mp_rank_00_model_states.pt")
    with pytest.raises(UnsafeCheckpointError, match="mp_rank_00_model_states.pt.*--trust-checkpoint"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "b", 8, "--load", str(save)))
    # the RNG file too
    save2 = copy_run(run6[0], tmp_path / "run2")
    write_evil(save2 / "global_step6" / "rng_rank_00000.pt", marker)
    replace_recorded(save2 / "global_step6", "rng_rank_00000.pt")
    with pytest.raises(UnsafeCheckpointError, match="rng_rank_00000.pt.*--trust-checkpoint"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "c", 8, "--load", str(save2)))
    assert not marker.exists()


def test_trust_flag_lets_pretraining_start_from_a_vouched_file(store, run6, tmp_path):
    """A released file carrying one harmless extra object: refused, then accepted with --trust-checkpoint,
    and the weights are the file's."""
    import pretrain_glm

    weights = torch.load(run6[0] / "global_step6" / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    f = write_vouched(tmp_path / "pretrained.pt", {"module": weights})
    args = pretrain_args(store, tmp_path / "a", 1, "--load-pretrained", str(f), "--lr", "1e-9")
    with pytest.raises(UnsafeCheckpointError):
        pretrain_glm.main(args)
    r = pretrain_glm.main(args + ["--trust-checkpoint"])
    # step 7 of the run that wrote the weights sees other data, but the model is the trained one: its first
    # loss is far below a fresh model's (~log(vocab) = 9.0)
    assert r["train_losses"][0] < run6[1]["train_losses"][0] - 0.05


def test_generate_samples_load_pretrained_refuses(tmp_path):
    import generate_samples

    marker = tmp_path / "MARKER"
    evil = write_evil(tmp_path / "pretrained.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match=f"{evil}.*--trust-checkpoint"):
        generate_samples.main(["--load-pretrained", str(evil), "--model-config",
                               str(REPO / "config/model/glm-tiny.json"), "--tokenizer-model", str(SAMPLE_TOKENIZER),
                               "--device", "cpu", "--input-file", os.devnull])
    assert not marker.exists()


def test_change_mp_refuses_and_trusts(tmp_path):
    from tools.change_mp import main as change_mp

    marker = tmp_path / "MARKER"
    src = tmp_path / "ckpt"
    write_evil(src / "7" / "mp_rank_00_model_states.pt", marker)
    (src / "latest").write_text("7")
    with pytest.raises(UnsafeCheckpointError, match="mp_rank_00_model_states.pt.*--trust-checkpoint"):
        change_mp([str(src), "1", "--out", str(tmp_path / "out")])
    assert not marker.exists()
    write_vouched(src / "7" / "mp_rank_00_model_states.pt", {"module": {"transformer.final_layernorm.weight": torch.ones(4)}})
    change_mp([str(src), "1", "--out", str(tmp_path / "out"), "--trust-checkpoint"])
    out = torch.load(tmp_path / "out" / "7" / "mp_rank_00_model_states.pt", weights_only=False)
    assert torch.equal(out["module"]["transformer.final_layernorm.weight"], torch.ones(4))


def test_cli_refusal_is_one_line_with_exit_code(tmp_path):
    """The process-level view: exit 2, one stderr line naming the file and the flag, no traceback."""
    marker = tmp_path / "MARKER"
    src = tmp_path / "ckpt"
    evil = write_evil(src / "7" / "mp_rank_00_model_states.pt", marker)
    (src / "latest").write_text("7")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([PY, "tools/change_mp.py", str(src), "1", "--out", str(tmp_path / "out")], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn" not in ln]
    assert p.returncode == 1 and len(lines) == 1, p.stderr  # a data error (the file), not a usage error
    assert str(evil) in lines[0] and "--trust-checkpoint" in lines[0] and "Traceback" not in p.stderr
    assert not marker.exists()


def test_zero_to_fp32_reads_go_through_the_safe_loader(tmp_path):
    """DeepSpeed's zero_to_fp32 (ZeRO-3 --load-pretrained) calls torch.load itself: inside torch_loads it is
    ours, outside torch.load is untouched."""
    marker = tmp_path / "MARKER"
    evil = write_evil(tmp_path / "zero_pp_rank_0_mp_rank_00_model_states.pt", marker)
    with safe_load.torch_loads(trust=False), pytest.raises(UnsafeCheckpointError, match=str(evil)):
        torch.load(evil, map_location="cpu", weights_only=False)
    assert not marker.exists()
    assert torch.load is not None and torch.load.__module__ == "torch.serialization"


@pytest.mark.parametrize("stage", [0, 1])
def test_deepspeed_engine_load_goes_through_the_safe_loader(tmp_path, stage, monkeypatch):
    """engine.load_checkpoint reads model states and ZeRO partitions through DeepSpeed's checkpoint-engine
    hook: a payload in either is refused (no marker); with --trust-checkpoint a vouched file loads."""
    from mpu.initialize import ParallelState
    from training.arguments import OptimArgs, TrainArgs
    from training.distributed import init_distributed, shutdown
    from training.engine import build_engine

    monkeypatch.setenv("LOCAL_RANK", "0")  # DeepSpeed insists on it even with the group already built
    init_distributed(device="cpu")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    parallel_state = ParallelState.from_torch_distributed(1)  # DeepSpeed's mpu= needs real groups
    eng = build_engine(model, [{"params": list(model.parameters())}], parallel_state, OptimArgs(lr=1e-3),
                       TrainArgs(batch_size=2, deepspeed=True), {"zero_optimization": {"stage": stage}},
                       torch.device("cpu"))
    ckpt.save_checkpoint(eng, tmp_path, 1, {"tp_size": 1}, {"iteration": 1}, rank=0)
    tag_dir = tmp_path / "global_step1"
    marker = tmp_path / "MARKER"
    names = ["mp_rank_00_model_states.pt"] + [p.name for p in tag_dir.glob("*optim_states.pt")]
    for name in names:
        original = (tag_dir / name).read_bytes()
        obj = torch.load(tag_dir / name, weights_only=False)
        torch.save({**obj, "extra": Payload(marker)}, tag_dir / name)
        with pytest.raises(UnsafeCheckpointError, match=f"{name}.*--trust-checkpoint"):
            eng.load(str(tmp_path), "global_step1")
        assert not marker.exists()
        write_vouched(tag_dir / name, obj)
        with pytest.raises(UnsafeCheckpointError):
            eng.load(str(tmp_path), "global_step1")
        eng.load(str(tmp_path), "global_step1", trust=True)
        (tag_dir / name).write_bytes(original)
    # after our call DeepSpeed's own loader is back
    assert "load" not in vars(eng.engine.checkpoint_engine)
    # DeepSpeed's writer on a full disk: one line, latest unchanged
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device", str(f))))
    with pytest.raises(ckpt.DiskFullError, match=r"writing .*global_step2.partial.*; `latest` still names .*global_step1"):
        ckpt.save_checkpoint(eng, tmp_path, 2, {"tp_size": 1}, {"iteration": 2}, rank=0)
    shutdown()


# ------------------------------------------------------------------------------------------ 2. integrity
def test_meta_records_size_and_sha256_of_every_file(run6):
    import hashlib

    tag_dir = run6[0] / "global_step6"
    meta = json.loads((tag_dir / "meta.json").read_text())
    on_disk = sorted(p.name for p in tag_dir.iterdir() if p.name != "meta.json")
    assert sorted(meta["files"]) == on_disk and "rng_rank_00000.pt" in on_disk
    for name, rec in meta["files"].items():
        data = (tag_dir / name).read_bytes()
        assert rec == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_flipped_bytes_are_named(store, run6, tmp_path):
    """1000 bytes XOR-flipped inside the model file: --load of that checkpoint, --load-pretrained and
    change_mp each name the file; nothing loads."""
    import pretrain_glm
    from tools.change_mp import main as change_mp

    save = copy_run(run6[0], tmp_path / "run")
    damaged = save / "global_step6" / "mp_rank_00_model_states.pt"
    flip_bytes(damaged)
    with pytest.raises(ckpt.DamagedCheckpointError, match=f"{damaged} is damaged"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "a", 8, "--load", str(save / "global_step6")))
    with pytest.raises(ckpt.DamagedCheckpointError, match=f"{damaged} is damaged"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "b", 1, "--load-pretrained", str(save)))
    with pytest.raises(ckpt.DamagedCheckpointError, match=f"{damaged} is damaged"):
        change_mp([str(save), "1", "--out", str(tmp_path / "out")])
    truncated = save / "global_step4" / "mp_rank_00_model_states.pt"
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(ckpt.DamagedCheckpointError, match=f"{truncated} has .* bytes, meta.json records"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "c", 1, "--load-pretrained", str(save / "global_step4")))


def test_damaged_newest_checkpoint_falls_back_and_resumes_exactly(store, run6, tmp_path, caplog):
    """The newest checkpoint (step 6) damaged: --load DIR warns naming both and resumes from step 4; the
    resumed losses of steps 5-6 equal the uninterrupted run's. metrics.jsonl then holds every step once."""
    import pretrain_glm

    save, full = run6
    save = copy_run(save, tmp_path / "run")
    flip_bytes(save / "global_step6" / "mp_rank_00_model_states.pt")
    with caplog.at_level("WARNING", logger="mglm"):
        r = pretrain_glm.main(pretrain_args(store, save, 6, "--load", str(save)))
    warning = [m for m in caplog.messages if "damaged or incomplete" in m]
    assert warning and str(save / "global_step6") in warning[0] and str(save / "global_step4") in warning[0]
    assert len(r["train_losses"]) == 2
    assert r["train_losses"] == pytest.approx(full["train_losses"][4:], abs=1e-6)
    rows = [json.loads(x) for x in (save / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(row["step"] for row in rows if row["group"] == "train") == [1, 2, 3, 4, 5, 6]
    # the re-saved step-6 checkpoint is intact again
    assert ckpt.resolve_intact(save)[1] == "global_step6"


def test_incomplete_newest_checkpoint_falls_back(run6, tmp_path, caplog):
    save = copy_run(run6[0], tmp_path / "run")
    (save / "global_step6" / "rng_rank_00000.pt").unlink()
    with caplog.at_level("WARNING", logger="mglm"):
        load_dir, tag, meta = ckpt.resolve_intact(save)
    assert tag == "global_step4" and meta["step"] == 4
    assert any("rng_rank_00000.pt is missing" in m for m in caplog.messages)
    # latest naming a directory that is gone (a crash between two renames of an earlier version)
    import shutil

    shutil.rmtree(save / "global_step6")
    assert ckpt.resolve_intact(save)[1] == "global_step4"
    for t in ("global_step4", "global_step2"):
        flip_bytes(save / t / "mp_rank_00_model_states.pt")
    with pytest.raises(ckpt.DamagedCheckpointError, match="no older checkpoint is intact"):
        ckpt.resolve_intact(save)


def test_resolve_intact_reads_each_meta_json_once(run6, tmp_path, monkeypatch):
    """A fallback over three checkpoints parses every meta.json it needs exactly once (it used to read the
    newest one's and each older one's up to 3 times: verification, step, result)."""
    save = copy_run(run6[0], tmp_path / "run")
    flip_bytes(save / "global_step6" / "mp_rank_00_model_states.pt")
    flip_bytes(save / "global_step4" / "mp_rank_00_model_states.pt")
    reads: list[str] = []
    real = ckpt.read_meta
    monkeypatch.setattr(ckpt, "read_meta", lambda d, t: reads.append(t) or real(d, t))
    assert ckpt.resolve_intact(save)[1] == "global_step2"
    assert sorted(reads) == ["global_step2", "global_step4", "global_step6"]


def _generate(save, tmp_path) -> list[str]:
    """The command line of generate_samples.py --load SAVE on one prompt."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("Paris is the [MASK] of France.\n")
    return [PY, "generate_samples.py", "--load", str(save), "--input-file", str(prompts), "--output-file",
            str(tmp_path / "out.jsonl"), "--out-seq-length", "2", "--device", "cpu"]


def test_generate_load_falls_back_like_training(run6, tmp_path):
    """generate_samples.py --load picks its checkpoint as training's --load does: a save dir whose newest
    weights are damaged falls back to the newest intact checkpoint with a warning naming both; a file
    generation does not read (an RNG file) does not count; a damaged tag dir named directly is one line,
    exit 1, that says --load (not --load-pretrained)."""
    save = copy_run(run6[0], tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    (save / "global_step6" / "rng_rank_00000.pt").unlink()
    p = subprocess.run(_generate(save, tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0 and "damaged or incomplete" not in p.stderr, p.stderr[-2000:]
    flip_bytes(save / "global_step6" / "mp_rank_00_model_states.pt")
    p = subprocess.run(_generate(save, tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    warning = [ln for ln in p.stderr.splitlines() if "damaged or incomplete" in ln]
    assert p.returncode == 0 and len(warning) == 1, p.stderr[-2000:]
    assert str(save / "global_step6") in warning[0] and f"resuming from {save / 'global_step4'}" in warning[0]
    assert json.loads((tmp_path / "out.jsonl").read_text())["prompt"] == "Paris is the [MASK] of France."
    p = subprocess.run(_generate(save / "global_step6", tmp_path), cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=180)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 1 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert lines[0].startswith(f"generate_samples.py: error: --load {save / 'global_step6'}: ")
    assert "mp_rank_00_model_states.pt is damaged" in lines[0]


def test_missing_rng_file_is_an_error(store, run6, tmp_path):
    """Named explicitly (no fallback), and in a checkpoint of the previous version (no hashes to tell)."""
    import pretrain_glm

    save = copy_run(run6[0], tmp_path / "run")
    (save / "global_step6" / "rng_rank_00000.pt").unlink()
    with pytest.raises(ckpt.DamagedCheckpointError, match="rng_rank_00000.pt is missing"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "a", 8, "--load", str(save / "global_step6")))
    meta = json.loads((save / "global_step6" / "meta.json").read_text())
    del meta["files"]
    (save / "global_step6" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ckpt.DamagedCheckpointError, match="rng_rank_00000.pt is missing.*RNG state"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "b", 8, "--load", str(save / "global_step6")))


def test_checkpoint_of_the_previous_version_loads_unverified(store, run6, tmp_path, caplog):
    """No ``files`` in meta.json and numpy arrays in the RNG file (what the previous main wrote): it
    resumes exactly, with a warning that it is unverified."""
    import numpy as np

    import pretrain_glm

    save = copy_run(run6[0], tmp_path / "run")
    tag_dir = save / "global_step4"
    meta = json.loads((tag_dir / "meta.json").read_text())
    del meta["files"]
    (tag_dir / "meta.json").write_text(json.dumps(meta))
    rng = torch.load(tag_dir / "rng_rank_00000.pt", weights_only=True)
    kind, keys, *rest = rng["numpy"]
    rng["numpy"] = (kind, keys.numpy().astype(np.uint32), *rest)
    torch.save(rng, tag_dir / "rng_rank_00000.pt")
    with caplog.at_level("WARNING", logger="mglm"):
        r = pretrain_glm.main(pretrain_args(store, tmp_path / "b", 6, "--load", str(tag_dir)))
    assert any("records no file hashes" in m and str(tag_dir) in m for m in caplog.messages)
    assert r["train_losses"] == pytest.approx(run6[1]["train_losses"][4:], abs=1e-6)


# ------------------------------------------------------------------------------------- 3. one writer
def test_lock_refuses_a_second_run_in_process(store, tmp_path):
    import pretrain_glm

    save = tmp_path / "save"
    holder = ckpt.SaveLock(save)
    holder.acquire()
    try:
        with pytest.raises(ckpt.SaveDirLocked, match=f"pid {os.getpid()}"):
            pretrain_glm.main(pretrain_args(store, save, 1))
    finally:
        holder.release()
    assert not (save / "global_step1").exists()
    # released at the end of a run, also one that fails after taking it
    with pytest.raises(FileNotFoundError):
        pretrain_glm.main(pretrain_args(store, save, 1, "--load", str(tmp_path / "nowhere")))
    again = ckpt.SaveLock(save)
    again.acquire()
    again.release()


def test_lock_refuses_a_second_process(store, tmp_path):
    """A second process on the same --save exits 2 at start with one line naming host and pid of the
    holder (here: this test process)."""
    import socket

    save = tmp_path / "save"
    holder = ckpt.SaveLock(save)
    holder.acquire()
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"}
        p = subprocess.run([PY, "pretrain_glm.py", *pretrain_args(store, save, 1)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=180)
    finally:
        holder.release()
    err = [ln for ln in p.stderr.splitlines() if "pretrain_glm.py: error" in ln]
    assert p.returncode == 2 and len(err) == 1, p.stderr[-2000:]
    assert f"pid {os.getpid()}" in err[0] and socket.gethostname() in err[0] and "Traceback" not in p.stderr


# ------------------------------------------------------------------------------------------ 4. log rows
def test_resume_keeps_the_checkpoint_step_row(tmp_path):
    """Resumed from checkpoint 4: the rows of step 4 stay (the checkpoint holds step 4 complete), the rows
    of later steps are replaced by the resumed run's."""
    from training.logging import MetricsWriter

    w = MetricsWriter(tmp_path, rank=0, tensorboard=False)
    for step in range(1, 7):
        w.scalars("train", {"loss": float(step)}, step)
        w.scalars("valid", {"loss": float(step)}, step)
    w.close()
    w = MetricsWriter(tmp_path, rank=0, tensorboard=False, purge_step=4 + 1)  # what pretrain/finetune pass
    for step in (5, 6):
        w.scalars("train", {"loss": 10.0 * step}, step)
    w.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows if r["group"] == "train"] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0)]
    assert [r["step"] for r in rows if r["group"] == "valid"] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------ 5. disk full
def _tiny_engine():
    from model import GLMConfig, GLMModel
    from mpu.initialize import ParallelState
    from training.engine import TorchEngine

    model = GLMModel(GLMConfig(num_layers=1, vocab_size=128, hidden_size=16, num_attention_heads=2,
                               max_sequence_length=16), init_seed=0)
    return TorchEngine(model, [{"params": list(model.parameters())}], ParallelState.single(), lr=1e-3)


def test_disk_full_names_the_file_and_the_checkpoint_latest_keeps(tmp_path, monkeypatch):
    eng = _tiny_engine()
    ckpt.save_checkpoint(eng, tmp_path, 10, {"tp_size": 1}, {}, rank=0)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if "rng_rank" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ckpt.DiskFullError) as e:
        ckpt.save_checkpoint(eng, tmp_path, 20, {"tp_size": 1}, {}, rank=0)
    rng = tmp_path / "global_step20.partial" / "rng_rank_00000.pt"
    assert str(e.value) == f"no space left on device writing {rng}; `latest` still names {tmp_path / 'global_step10'}"
    assert (tmp_path / "latest").read_text() == "global_step10"

    # torch's zip writer on a full disk says only "unexpected pos": recognised by the free space left
    def zip_writer_fails(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4352 vs 4240")

    monkeypatch.setattr(torch, "save", zip_writer_fails)
    monkeypatch.setattr(ckpt, "_free_bytes", lambda path: 0)
    with pytest.raises(ckpt.DiskFullError, match="no space left on device writing .*global_step30.partial"):
        ckpt.save_checkpoint(eng, tmp_path, 30, {"tp_size": 1}, {}, rank=0)
    monkeypatch.setattr(ckpt, "_free_bytes", lambda path: 1 << 40)  # other write errors stay what they are
    with pytest.raises(RuntimeError, match="unexpected pos"):
        ckpt.save_checkpoint(eng, tmp_path, 30, {"tp_size": 1}, {}, rank=0)


def test_disk_full_on_a_first_save_and_in_the_cli(store, tmp_path):
    """No checkpoint yet: the line says so. Through run_cli: one line, no traceback."""
    code = (
        "import errno, sys, torch\n"
        "real = torch.save\n"
        "def full(obj, f, *a, **k):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', str(f))\n"
        "torch.save = full\n"
        "import pretrain_glm\n"
        "from common.errors import run_cli\n"
        f"sys.argv = ['pretrain_glm.py'] + {pretrain_args(store, tmp_path / 'save', 2)!r}\n"
        "run_cli(pretrain_glm.main, 'pretrain_glm.py')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"}
    p = subprocess.run([PY, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    err = [ln for ln in p.stderr.splitlines() if "error:" in ln]
    assert p.returncode != 0 and len(err) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "no space left on device writing" in err[0] and "no complete checkpoint yet" in err[0]


def _events(path: Path) -> list:
    """The records of a TensorBoard event file (TFRecord framing: length, crc, payload, crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        e = event_pb2.Event()
        e.ParseFromString(data[i + 12:i + 12 + n])
        out.append(e)
        i += 12 + n + 4
    return out


def test_tensorboard_purges_only_the_steps_after_the_checkpoint(store, tmp_path):
    """TensorBoard hides events at steps >= the purge step of a restarted writer: the resumed run must
    purge from N + 1, so step N (complete in checkpoint N) stays."""
    import pretrain_glm

    save = tmp_path / "save"
    args = [a for a in pretrain_args(store, save, 4) if a != "--no-tensorboard"]
    pretrain_glm.main(args)
    first = set((save / "logs").glob("events.out.tfevents*"))
    pretrain_glm.main(args[:args.index("--train-iters")] + ["--train-iters", "5"]
                      + args[args.index("--train-iters") + 2:] + ["--load", str(save / "global_step4")])
    (resumed,) = set((save / "logs").glob("events.out.tfevents*")) - first
    events = _events(resumed)
    starts = [e.step for e in events if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [5]
    assert sorted({e.step for e in events if e.HasField("summary")}) == [5]


def test_garbage_weights_rng_and_meta_files_are_one_line_naming_them(store, run6, tmp_path):
    """A text file as --load-pretrained, a truncated RNG file of an unverified (earlier-version) checkpoint,
    a garbage meta.json: each a ValueError (one line through run_cli) that names the file."""
    import pretrain_glm

    text = tmp_path / "pretrained.pt"
    text.write_text("these are not weights\n")
    with pytest.raises(UnreadableCheckpointError, match=f"--load-pretrained {text}: not a readable torch"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "a", 1, "--load-pretrained", str(text)))
    save = copy_run(run6[0], tmp_path / "run")
    tag_dir = save / "global_step6"
    meta = json.loads((tag_dir / "meta.json").read_text())
    del meta["files"]  # as the previous version wrote it: nothing tells the truncation but the unpickler
    (tag_dir / "meta.json").write_text(json.dumps(meta))
    rng = tag_dir / "rng_rank_00000.pt"
    rng.write_bytes(rng.read_bytes()[:100])
    with pytest.raises(UnreadableCheckpointError, match=f"--load {rng}: not a readable torch checkpoint"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "b", 8, "--load", str(tag_dir)))
    (tag_dir / "meta.json").write_text('{"step": 6,\n "tp_size": 1,,}')
    with pytest.raises(ckpt.DamagedCheckpointError, match=f"{tag_dir / 'meta.json'}:2: not valid JSON"):
        pretrain_glm.main(pretrain_args(store, tmp_path / "c", 8, "--load", str(tag_dir)))


def test_lock_is_free_right_after_kill_9_of_a_holder_with_a_forked_child(tmp_path):
    """A run killed with -9 while its data-loader worker (a forked child) lives: the child's copy of the
    lock descriptor used to keep the lock held, so the README's immediate `--load` resume was refused
    naming a pid that no longer existed."""
    save = tmp_path / "save"
    code = (f"import os, signal, sys, time; sys.path.insert(0, {str(REPO)!r})\n"
            "from training.checkpoint import SaveLock\n"
            f"SaveLock({str(save)!r}).acquire()\n"
            "if os.fork() == 0:\n    time.sleep(20)\n    os._exit(0)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    child_alive = subprocess.run([PY, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 timeout=60)
    assert child_alive.returncode == -9
    lock = ckpt.SaveLock(save)
    lock.acquire()  # raised SaveDirLocked for the 20 s the orphaned child slept
    lock.release()


def test_a_released_lock_is_not_kept_for_the_fork_hook(tmp_path):
    """The at-fork hook closes the locks held now; a released one leaves its set (a long process taking
    many locks, a sweep of runs, keeps none of them alive)."""
    locks = [ckpt.SaveLock(tmp_path / f"s{i}") for i in range(3)]
    for lock in locks:
        lock.acquire()
    assert set(locks) <= ckpt._HELD
    for lock in locks:
        lock.release()
    assert not set(locks) & ckpt._HELD
