"""tools/change_mp.py: 1 -> 2 -> 4 -> 1 resharding of DeepSpeed-layout checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from model import GLMConfig, GLMModel
from tools.change_mp import change_mp

TINY = dict(num_layers=2, vocab_size=512, hidden_size=32, num_attention_heads=4, max_sequence_length=32)


def _write(dir_, module_states, extra=None):
    (dir_ / "7").mkdir(parents=True)
    for r, sd in enumerate(module_states):
        torch.save({"module": sd, "mp_world_size": len(module_states), "iteration": 7,
                    "optimizer": {"state": 1}, **(extra or {})}, dir_ / "7" / f"mp_rank_{r:02d}_model_states.pt")
    (dir_ / "latest").write_text("7")


def test_reshard_roundtrip(tmp_path, capsys) -> None:
    full = GLMModel(GLMConfig(**TINY)).state_dict()
    _write(tmp_path / "tp1", [full])
    d2 = change_mp(tmp_path / "tp1", 2, tmp_path / "tp2")
    assert "optimizer" in capsys.readouterr().err
    r1 = torch.load(d2 / "7" / "mp_rank_01_model_states.pt", weights_only=False)
    assert r1["mp_world_size"] == 2 and r1["iteration"] == 7 and r1["optimizer"] is None
    qkv = full["transformer.layers.1.attention.query_key_value.weight"]
    assert torch.equal(r1["module"]["transformer.layers.1.attention.query_key_value.weight"],
                       torch.cat([qkv[16:32], qkv[48:64], qkv[80:96]]))
    assert torch.equal(r1["module"]["transformer.layers.1.mlp.dense_4h_to_h.weight"],
                       full["transformer.layers.1.mlp.dense_4h_to_h.weight"][:, 64:])
    d4 = change_mp(d2, 4, tmp_path / "tp4")
    assert len(list((d4 / "7").glob("mp_rank_*"))) == 4
    d1 = change_mp(d4, 1, tmp_path / "back")
    back = torch.load(d1 / "7" / "mp_rank_00_model_states.pt", weights_only=False)
    assert (d1 / "latest").read_text() == "7"
    assert back["module"].keys() == full.keys()
    for k, v in full.items():
        assert torch.equal(back["module"][k], v), k


def test_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        change_mp(tmp_path / "nope", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="latest"):
        change_mp(tmp_path / "empty", 2)
    full = GLMModel(GLMConfig(**TINY)).state_dict()
    _write(tmp_path / "tp2", [{k: v for k, v in full.items()}] * 2)
    with pytest.raises(ValueError, match="TP=2 to TP=3"):
        change_mp(tmp_path / "tp2", 3)


# --- end to end: files written by change_mp -> a TP-2 model's logits ---------------------------------

# Dropout 0 so the forward is deterministic; 256 rows split evenly over TP 2 (and 4).
E2E = dict(num_layers=2, vocab_size=256, hidden_size=32, num_attention_heads=4, max_sequence_length=32,
           hidden_dropout=0.0, attention_dropout=0.0)


def _tp2_worker(rank: int, world: int, resharded: str) -> dict:
    """Load the TP-2 files the way a user would, at TP 2, and return this rank's vocabulary slice of logits."""
    from mpu import ParallelState
    from tests.test_model import _batch
    from training import checkpoint as ckpt
    from training.engine import TorchEngine

    parallel_state = ParallelState.from_torch_distributed(world)
    cfg = GLMConfig(**E2E)
    ids, pos, sep, _ = _batch(V=E2E["vocab_size"])
    # --load-pretrained DIR (finetune / continued pretraining): weights only. Different init seeds than the
    # source, so a load that silently did nothing would show in the logits.
    pretrained = GLMModel(cfg, parallel_state, init_seed=101).eval()
    ckpt.load_pretrained(pretrained, resharded, parallel_state)
    # --load DIR (exact resume): resolve the tag, refuse an incompatible meta.json, engine.load the tag.
    resumed = GLMModel(cfg, parallel_state, init_seed=202).eval()
    engine = TorchEngine(resumed, [{"params": list(resumed.parameters())}], parallel_state, lr=1e-3)
    load_dir, tag = ckpt.resolve(resharded)
    meta = ckpt.read_meta(load_dir, tag)
    ckpt.check_compatible(meta, cfg.to_dict(), parallel_state.tp_size, f"--load {load_dir / tag}", parallel_state.dp_size)
    client = engine.load(str(load_dir), tag)
    with torch.no_grad():
        return {"pretrained": pretrained(ids, pos, sep)[0], "resumed": resumed(ids, pos, sep)[0],
                "tag": tag, "iteration": client.get("iteration"), "global_steps": engine.global_steps}


@pytest.mark.slow
def test_resharded_files_give_the_tp1_logits_at_tp2(tmp_path) -> None:
    """TP-1 checkpoint (save_checkpoint + TorchEngine, meta.json) -> change_mp CLI -> TP-2 files loaded in
    2 gloo processes through --load-pretrained and --load paths: gathered logits equal the TP-1 model's."""
    from mpu import ParallelState
    from tests.distributed import run_distributed
    from tests.test_model import _batch
    from tools.change_mp import main as change_mp_main
    from training import checkpoint as ckpt
    from training.engine import TorchEngine

    cfg = GLMConfig(**E2E)
    ids, pos, sep, lm = _batch(V=E2E["vocab_size"])
    assert int(sep.min()) < ids.shape[1]  # a real Part B: the sep mask and block positions matter
    source = GLMModel(cfg, init_seed=7)
    engine = TorchEngine(source, [{"params": list(source.parameters())}], ParallelState.single(), lr=1e-2)
    # One optimizer step: the saved weights are no init any TP size could reproduce from a seed.
    logits, _ = engine(ids, pos, sep)
    engine.backward(torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()))
    assert engine.step(1e-2).applied
    source.eval()
    with torch.no_grad():
        expected = source(ids, pos, sep)[0]  # (B, L, V) at TP 1
    meta = {"tp_size": 1, "dp_size": 1, "model_config": cfg.to_dict()}
    ckpt.save_checkpoint(engine, tmp_path / "tp1", 1, meta, {"iteration": 1}, rank=0)

    out = change_mp_main([str(tmp_path / "tp1"), "2", "--out", str(tmp_path / "tp2")])
    assert out == {"out_dir": str(tmp_path / "tp2"), "target_tp": 2}
    written = json.loads((tmp_path / "tp2" / "global_step1" / "meta.json").read_text(encoding="utf-8"))
    assert written["tp_size"] == 2 and written["dp_size"] == 1 and written["step"] == 1
    assert written["model_config"] == cfg.to_dict() and written["optimizer_state"] is False
    assert written["resharded_from"]["tp_size"] == 1
    assert sorted(p.name for p in (tmp_path / "tp2" / "global_step1").glob("mp_rank_*")) == [
        "mp_rank_00_model_states.pt", "mp_rank_01_model_states.pt"]

    results = run_distributed(_tp2_worker, 2, str(tmp_path / "tp2"))
    for key in ("pretrained", "resumed"):
        got = torch.cat([r[key] for r in results], dim=-1)  # each rank holds V / 2 vocabulary columns
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 1e-5, key
    for r in results:
        assert r["tag"] == "global_step1" and r["iteration"] == 1 and r["global_steps"] == 1


def _deepspeed_resume_worker(rank: int, world: int, root: str, stage: int) -> dict:
    """Save with DeepSpeed at ZeRO ``stage``, reshard (1 -> 1: the optimizer state is dropped all the same),
    then resume the resharded tag with the DeepSpeed engine as ``--load`` does (optimizer requested)."""
    from mpu import ParallelState
    from training import checkpoint as ckpt
    from training.engine import DeepSpeedEngine

    cfg = GLMConfig(**{**E2E, "num_layers": 1})
    parallel_state = ParallelState.from_torch_distributed(1)
    ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "steps_per_print": 10**9,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
          "zero_optimization": {"stage": stage}}
    source = GLMModel(cfg, parallel_state, init_seed=1)
    engine = DeepSpeedEngine(source, [{"params": list(source.parameters())}], parallel_state, ds)
    meta = {"tp_size": 1, "dp_size": 1, "model_config": cfg.to_dict()}
    ckpt.save_checkpoint(engine, f"{root}/src", 3, meta, {"iteration": 3}, rank=0)
    change_mp(f"{root}/src", 1, f"{root}/dst")
    target = GLMModel(cfg, parallel_state, init_seed=2)
    resumed = DeepSpeedEngine(target, [{"params": list(target.parameters())}], parallel_state, ds)
    client = resumed.load(f"{root}/dst", "global_step3", load_optimizer=True)
    return {"want": source.state_dict(), "got": resumed.module.state_dict(), "iteration": client.get("iteration")}


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1])
def test_deepspeed_resumes_a_resharded_checkpoint(tmp_path, stage) -> None:
    """Regression: asking DeepSpeed for the dropped optimizer state failed (ZeRO 0: None handed to the
    optimizer; ZeRO 1: missing zero_pp_rank_*optim_states.pt); meta.json's optimizer_state false skips it."""
    from tests.distributed import run_distributed

    (r,) = run_distributed(_deepspeed_resume_worker, 1, str(tmp_path), stage)
    assert r["iteration"] == 3 and r["want"].keys() == r["got"].keys()
    for k, v in r["want"].items():
        assert torch.equal(r["got"][k], v), k
