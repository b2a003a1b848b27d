"""Checkpoints: atomic saves, resolution of --load, weight-only loading from every layout users have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model import GLMConfig, GLMModel
from model.checkpoint_compat import shard_state_dict, to_sat_layout
from mpu.initialize import ParallelState
from training import checkpoint as ckpt
from training.engine import TorchEngine

CFG = dict(num_layers=2, vocab_size=256, hidden_size=32, num_attention_heads=4, max_sequence_length=64,
           hidden_dropout=0.0, attention_dropout=0.0)


def make_model(seed=0, **kw):
    return GLMModel(GLMConfig(**{**CFG, **kw}), init_seed=seed)


def engine_for(model):
    parallel_state = ParallelState.single()
    return TorchEngine(model, [{"params": list(model.parameters())}], parallel_state, lr=1e-3)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_is_atomic_and_latest_moves_last(tmp_path):
    model = make_model()
    eng = engine_for(model)
    meta = {"tp_size": 1, "model_config": model.config.to_dict()}
    ckpt.save_checkpoint(eng, tmp_path, 10, meta, {"iteration": 10}, rank=0)
    assert (tmp_path / "latest").read_text() == "global_step10"
    saved = json.loads((tmp_path / "global_step10" / "meta.json").read_text())
    assert saved["step"] == 10 and saved["tp_size"] == 1

    class Crash(RuntimeError):
        pass

    class CrashingEngine:
        def save(self, save_dir, tag, client_state):
            eng.save(save_dir, tag, client_state)
            raise Crash("disk full")  # dies after writing part of the checkpoint

    with pytest.raises(Crash):
        ckpt.save_checkpoint(CrashingEngine(), tmp_path, 20, meta, {}, rank=0)
    # The half-written step-20 checkpoint is invisible: latest still names step 10, which is complete.
    assert (tmp_path / "latest").read_text() == "global_step10"
    assert not (tmp_path / "global_step20").exists() and (tmp_path / "global_step20.partial").exists()
    assert ckpt.resolve(tmp_path) == (tmp_path, "global_step10")
    # The next save cleans the leftovers and succeeds.
    ckpt.save_checkpoint(eng, tmp_path, 20, meta, {}, rank=0)
    assert ckpt.resolve(tmp_path) == (tmp_path, "global_step20")
    assert not (tmp_path / "global_step20.partial").exists()


def test_resolve_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        ckpt.resolve(tmp_path / "nope")
    (tmp_path / "latest").write_text("global_step5")
    with pytest.raises(FileNotFoundError, match="incomplete checkpoint"):
        ckpt.resolve(tmp_path)


def test_check_compatible_names_differences():
    model_config = GLMConfig(**CFG).to_dict()
    meta = {"tp_size": 1, "model_config": {**model_config, "hidden_size": 64}}
    with pytest.raises(ValueError, match="hidden_size: checkpoint 64 vs run 32"):
        ckpt.check_compatible(meta, model_config, 1, "--load x")
    with pytest.raises(ValueError, match="tensor-parallel size 1, this run uses 2"):
        ckpt.check_compatible({"tp_size": 1, "model_config": model_config}, model_config, 2, "--load x")


def test_load_pretrained_from_our_checkpoint(tmp_path):
    src = make_model(seed=1)
    ckpt.save_checkpoint(engine_for(src), tmp_path, 3, {"tp_size": 1}, {}, rank=0)
    dst = make_model(seed=2)
    assert not same_weights(src, dst)
    ckpt.load_pretrained(dst, tmp_path, ParallelState.single())
    assert same_weights(src, dst)


@pytest.mark.parametrize("layout", ["glm", "sat"])
def test_load_pretrained_single_file_released_layouts(tmp_path, layout):
    """mGLM's pretrained.pt: one file, weights under 'module', GLM or SAT key names."""
    src = make_model(seed=1)
    sd = src.state_dict()
    if layout == "sat":
        sd = to_sat_layout(sd)
        assert "transformer.word_embeddings.weight" in sd
    torch.save({"module": sd, "iteration": 500000}, tmp_path / "pretrained.pt")
    dst = make_model(seed=2)
    ckpt.load_pretrained(dst, tmp_path / "pretrained.pt", ParallelState.single())
    assert same_weights(src, dst)


def test_load_pretrained_merges_a_tp2_checkpoint(tmp_path):
    """A checkpoint written at TP=2 (two mp_rank files) loads into a TP=1 model."""
    src = make_model(seed=1)
    full = src.state_dict()
    tag = tmp_path / "release"
    tag.mkdir()
    for r in range(2):
        torch.save({"module": shard_state_dict(full, 2, r)}, tag / f"mp_rank_{r:02d}_model_states.pt")
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("release")  # GLM's tracker file
    dst = make_model(seed=2)
    ckpt.load_pretrained(dst, tmp_path, ParallelState.single())
    assert same_weights(src, dst)


def test_load_pretrained_extends_position_tables(tmp_path):
    """Finetuning with longer sequences: the source's position rows fill the first rows."""
    src = make_model(seed=1, max_sequence_length=32)
    torch.save(src.state_dict(), tmp_path / "short.pt")
    dst = make_model(seed=2, max_sequence_length=64)
    ckpt.load_pretrained(dst, tmp_path / "short.pt", ParallelState.single())
    for name in ("transformer.position_embeddings.weight", "transformer.block_position_embeddings.weight"):
        got = dst.state_dict()[name]
        assert torch.equal(got[:33], src.state_dict()[name])
    assert torch.equal(dst.state_dict()["word_embeddings.weight"], src.state_dict()["word_embeddings.weight"])


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        ckpt.load_pretrained(make_model(), tmp_path / "missing", ParallelState.single())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable torch checkpoint"):
        ckpt.load_pretrained(make_model(), tmp_path / "junk.pt", ParallelState.single())
    other = make_model(hidden_size=64)
    torch.save({"module": other.state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="wrong shape for 'word_embeddings.weight'"):
        ckpt.load_pretrained(make_model(), tmp_path / "wide.pt", ParallelState.single())
    sd = make_model().state_dict()
    del sd["transformer.final_layernorm.bias"]
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing key 'transformer.final_layernorm.bias'"):
        ckpt.load_pretrained(make_model(), Path(tmp_path / "partial.pt"), ParallelState.single())


def test_embedding_rows_keep_a_pretrained_table(tmp_path):
    """A new table pads the tokenizer to 128 x TP; a pretrained one keeps its rows when they are this
    tokenizer's padding at some source TP size and split over this TP size (mGLM's 250,112 rows at TP 4)."""
    from conftest import SAMPLE_TOKENIZER

    from data_utils.tokenizer import GLMTokenizer

    tok = GLMTokenizer(SAMPLE_TOKENIZER)
    n = len(tok)
    pad1 = -(-n // 128) * 128  # padded for TP 1, computed here by hand
    pad4 = -(-n // 512) * 512
    assert pad1 != pad4  # the case the rule exists for
    assert ckpt.embedding_rows(tok, 4) == pad4
    released = tmp_path / "pretrained.pt"
    torch.save({"module": {"word_embeddings.weight": torch.zeros(pad1, 4)}}, released)
    assert ckpt.embedding_rows(tok, 4, pretrained=released) == pad1
    assert ckpt.embedding_rows(tok, 1, pretrained=released) == pad1
    odd = next(t for t in (3, 5, 7, 9, 11) if pad1 % t)
    with pytest.raises(ValueError, match=f"do not split over tensor-parallel size {odd}"):
        ckpt.embedding_rows(tok, odd, pretrained=released)
    other = tmp_path / "other.pt"  # a model of a tokenizer with 128 fewer ids
    torch.save({"module": {"word_embeddings.weight": torch.zeros(pad1 - 128, 4)}}, other)
    with pytest.raises(ValueError, match=rf"{pad1 - 128} rows, but the tokenizer .* has {n} tokens"):
        ckpt.embedding_rows(tok, 1, pretrained=other, tokenizer_path=str(SAMPLE_TOKENIZER))
    # Our checkpoints: the rows come from meta.json next to the model files, without reading tensors.
    tag = tmp_path / "run" / "global_step5"
    tag.mkdir(parents=True)
    (tmp_path / "run" / "latest").write_text("global_step5")
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"not read")
    (tag / "meta.json").write_text(json.dumps({"model_config": {"vocab_size": pad1}}))
    assert ckpt.embedding_rows(tok, 2, pretrained=tmp_path / "run") == pad1


def test_resave_of_the_latest_step_never_leaves_latest_dangling(tmp_path):
    """Saving the step ``latest`` names again replaces it via a rename aside; if a crash left only that
    copy (``<tag>.old``), --load falls back to it instead of failing."""
    model = make_model()
    eng = engine_for(model)
    meta = {"tp_size": 1, "dp_size": 1, "model_config": model.config.to_dict()}
    ckpt.save_checkpoint(eng, tmp_path, 5, meta, {"iteration": 5}, rank=0)
    ckpt.save_checkpoint(eng, tmp_path, 5, meta, {"iteration": 5}, rank=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step5", "latest"]
    assert ckpt.resolve(tmp_path) == (tmp_path, "global_step5")
    (tmp_path / "global_step5").rename(tmp_path / "global_step5.old")  # the state between the two renames
    assert ckpt.resolve(tmp_path) == (tmp_path, "global_step5.old")
    assert ckpt.read_meta(tmp_path, "global_step5.old")["step"] == 5


def test_check_compatible_refuses_another_dp_size():
    cfg = dict(CFG)
    meta = {"tp_size": 1, "dp_size": 2, "model_config": cfg}
    ckpt.check_compatible(meta, cfg, 1, "--load x", dp_size=2)
    with pytest.raises(ValueError, match="--load x: checkpoint was written with data-parallel size 2, this run uses 4"):
        ckpt.check_compatible(meta, cfg, 1, "--load x", dp_size=4)
    # A resharded checkpoint (no optimizer state, as tools/change_mp.py writes) resumes at any DP size.
    ckpt.check_compatible({**meta, "optimizer_state": False}, cfg, 1, "--load x", dp_size=4)
