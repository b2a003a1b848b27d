"""tools/change_mp.py: 1 -> 2 -> 4 -> 1 resharding of DeepSpeed-layout checkpoints."""

from __future__ import annotations

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
