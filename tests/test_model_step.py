"""benchmarks/model_step.py --model (issue 15 item 7) on the CPU, and the GPU check's refusal without CUDA.

The MFU in the JSON is recomputed here from the printed step time and the config's own numbers with the
closed form 72*L*h^2 + 12*L*s*h + 6*V*h model FLOPs per token; the GPU figures themselves come from
``bash scripts/gpu_check.sh`` on a device (README, Benchmarks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import model_step  # noqa: E402
from common.errors import UsageError  # noqa: E402

TINY = {"num_layers": 2, "vocab_size": 512, "hidden_size": 64, "num_attention_heads": 4,
        "max_sequence_length": 64, "checkpoint_activations": True, "hidden_dropout": 0.1,
        "attention_dropout": 0.1}
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


def test_bf16_model_step_json_and_mfu_closed_form(tmp_path, monkeypatch, capsys) -> None:
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    monkeypatch.setenv("MGLM_PEAK_TFLOPS", "0.25")
    out_file = tmp_path / "step.json"
    out = model_step.main(["--model", str(cfg), "--dtype", "bf16", "--seq", "32", "--batch", "2", "--sep", "same",
                           "random", "--steps", "2", "--warmup", "1", "--out", str(out_file)])
    assert json.loads(out_file.read_text()) == out
    assert json.loads(capsys.readouterr().out) == out
    L, h, V = TINY["num_layers"], TINY["hidden_size"], TINY["vocab_size"]
    per_token = 72 * L * h * h + 12 * L * 32 * h + 6 * V * h
    assert out["model_flops_per_token"] == per_token
    assert (out["dtype"], out["device"], out["checkpoint_activations"], out["peak_flops"]) == ("bf16", "cpu", True,
                                                                                               0.25e12)
    assert out["matmul_flops"] > 0 and out["parameters"] > 0 and out["torch"] == torch.__version__
    assert [(c["batch"], c["sep"]) for c in out["cases"]] == [(2, "same"), (2, "random")]
    for c in out["cases"]:
        assert c["step_s"] > 0 and len(c["step_s_all"]) == 2 and c["first_step_s"] > 0
        assert c["step_s"] == pytest.approx(sorted(c["step_s_all"])[0] / 2 + sorted(c["step_s_all"])[1] / 2)
        tokens_per_s = 32 * 2 / c["step_s"]
        assert c["tokens_per_s"] == pytest.approx(tokens_per_s, rel=1e-12)
        assert c["mfu"] == pytest.approx(per_token * tokens_per_s / 0.25e12, rel=1e-12)
        assert c["ratio_to_matmul"] == pytest.approx(per_token * tokens_per_s / out["matmul_flops"], rel=1e-12)
        assert c["attention_path"] == "dense-mask" and c["peak_memory_bytes"] is None
        assert torch.isfinite(torch.tensor(c["loss"]))


def test_model_flags_without_model_and_bad_values_are_usage_errors(tmp_path) -> None:
    with pytest.raises(UsageError, match="--batch, --dtype need --model"):
        model_step.main(["--batch", "4", "--dtype", "bf16"])
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    with pytest.raises(UsageError, match="--seq 65 exceeds the 64 positions"):
        model_step.main(["--model", str(cfg), "--seq", "65", "--batch", "1"])
    with pytest.raises(UsageError, match="--batch 0: expected an integer >= 1"):
        model_step.main(["--model", str(cfg), "--batch", "0"])


@no_cuda
def test_device_cuda_without_cuda_is_one_line_exit_2() -> None:
    r = subprocess.run([sys.executable, "benchmarks/model_step.py", "--model", "config/model/mglm-1b.json",
                        "--device", "cuda"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"model_step.py: error: --device cuda: torch {torch.__version__} sees no CUDA device (built for CUDA "
        f"{torch.version.cuda}); run it on a GPU machine or use --device cpu"]


@no_cuda
def test_gpu_check_without_cuda_says_so_and_exits_3(tmp_path) -> None:
    """No python here imports a torch that sees CUDA: nothing runs, one line, exit 3 (the device machine's
    python3 does)."""
    r = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OUT": str(tmp_path)})
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "gpu_check: no CUDA device" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.txt"]
