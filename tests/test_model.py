"""GLMModel numerics: masks, attention, TP parity, KV cache, checkpoint layouts, overfitting."""

from __future__ import annotations

import time

import pytest
import torch

from model import GLMConfig, GLMModel, glm_lm_loss, param_groups_for_weight_decay
from model.checkpoint_compat import (
    glm_partition_rules,
    load_glm_state_dict,
    merge_state_dicts,
    partition_rules,
    shard_state_dict,
    to_sat_layout,
)
from model.glm import KVCache, attention_core
from model.masks import blank_infilling_position_ids, causal_position_ids, sep_attention_mask
from mpu import ParallelState
from mpu.layers import partition_of
from tests.distributed import run_distributed

TINY = dict(num_layers=2, vocab_size=512, hidden_size=32, num_attention_heads=4, max_sequence_length=32,
            hidden_dropout=0.0, attention_dropout=0.0)
# TP parity model: 384 = 3 * 128 rows, a multiple of 128 but not of 128 * TP for TP 2 and 4 (as the released
# mGLM table, 250112 rows, at TP 4): only the even split across ranks matters.
TP_TINY = {**TINY, "vocab_size": 384}


def _batch(B: int = 2, L: int = 11, V: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, L), generator=g)
    pos = torch.stack([blank_infilling_position_ids(6, [(5, 1), (3, 2)])] * B)  # [B, 2, 11]
    sep = torch.tensor([6, 4][:B])
    loss_mask = (torch.arange(L) >= 6).float().expand(B, L)
    return ids, pos, sep, loss_mask


# --- masks and positions (worked example, GLM paper Fig. 2) ------------------------------------

def test_worked_example_mask_and_positions() -> None:
    # Part A = [CLS] x1 x2 [M] x5 [M] (sep = 6); Part B = [S] x6 | [S] x3 x4.
    expected_rows = [
        "11111100000",  # [CLS]
        "11111100000",  # x1
        "11111100000",  # x2
        "11111100000",  # [M]
        "11111100000",  # x5
        "11111100000",  # [M]
        "11111110000",  # [S] (span x6)
        "11111111000",  # x6
        "11111111100",  # [S] (span x3 x4) also sees span x6
        "11111111110",  # x3
        "11111111111",  # x4
    ]
    expected = torch.tensor([[c == "1" for c in row] for row in expected_rows])
    mask = sep_attention_mask(torch.tensor([6]), 11)
    assert mask.shape == (1, 1, 11, 11) and mask.dtype == torch.bool
    assert torch.equal(mask[0, 0], expected)
    pos = blank_infilling_position_ids(6, [(5, 1), (3, 2)])
    assert pos.tolist() == [[0, 1, 2, 3, 4, 5, 5, 5, 3, 3, 3], [0, 0, 0, 0, 0, 0, 1, 2, 1, 2, 3]]


def test_mask_with_memory_and_per_sample_sep() -> None:
    mask = sep_attention_mask(torch.tensor([0, 2]), query_len=3, key_len=5)  # 2 memory columns
    assert torch.equal(mask[0, 0].int(), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]))
    assert torch.equal(mask[1, 0].int(), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]))


def test_sdpa_matches_reference_formula() -> None:
    g = torch.Generator().manual_seed(3)
    B, H, L, D = 2, 3, 7, 8
    q, k, v = (torch.randn(B, H, L, D, generator=g) for _ in range(3))
    mask = sep_attention_mask(torch.tensor([3, 5]), L)
    m = mask.float()
    scores = q @ (k / D ** 0.5).transpose(-1, -2)
    scores = scores * m + (-65504.0) * (1.0 - m)
    ref = torch.softmax(scores, dim=-1) @ v
    assert (attention_core(q, k, v, mask) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("scale", [2.0, 16.0])
def test_attention_scale_formula_is_the_same_softmax(scale: float) -> None:
    # GLM with attention_scale s > 1: (q/sqrt(s)) @ (k/sqrt(D*s))^T, masked by multiplication, row max
    # subtracted, times s, then -65504 on masked entries. Large activations as in a 10B model.
    g = torch.Generator().manual_seed(4)
    B, H, L, D = 2, 3, 9, 16
    q, k, v = (torch.randn(B, H, L, D, generator=g) * 4 for _ in range(3))
    mask = sep_attention_mask(torch.tensor([2, 6]), L)
    m = mask.float()
    scores = (q / scale ** 0.5) @ (k / (D * scale) ** 0.5).transpose(-1, -2)
    scores = scores * m
    scores = (scores - scores.max(dim=-1, keepdim=True).values) * scale
    scores = scores + (-65504.0) * (1.0 - m)
    ref = torch.softmax(scores, dim=-1) @ v
    assert (attention_core(q, k, v, mask) - ref).abs().max() <= 1e-5
    cfg = GLMConfig(**TINY)
    ids, pos, sep, _ = _batch()
    with torch.no_grad():
        base = GLMModel(cfg, init_seed=9).eval()(ids, pos, sep)[0]
        scaled = GLMModel(GLMConfig(**{**TINY, "attention_scale": scale}), init_seed=9).eval()(ids, pos, sep)[0]
    assert torch.equal(base, scaled)


# --- model properties ------------------------------------------------------------------------------

def test_state_dict_keys_are_glm_layout() -> None:
    model = GLMModel(GLMConfig(**TINY))
    keys = set(model.state_dict())
    expected = {"word_embeddings.weight", "transformer.position_embeddings.weight",
                "transformer.block_position_embeddings.weight", "transformer.final_layernorm.weight",
                "transformer.final_layernorm.bias"}
    for i in range(2):
        for name in ("input_layernorm", "post_attention_layernorm", "attention.query_key_value",
                     "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"):
            expected |= {f"transformer.layers.{i}.{name}.weight", f"transformer.layers.{i}.{name}.bias"}
    assert keys == expected
    assert model.state_dict()["transformer.position_embeddings.weight"].shape == (33, 32)


def test_part_a_outputs_ignore_part_b_and_part_b_is_causal() -> None:
    model = GLMModel(GLMConfig(**TINY)).eval()
    ids, pos, sep, _ = _batch(B=1)
    sep = torch.tensor([6])
    base, _ = model(ids, pos, sep)
    changed_b = ids.clone()
    changed_b[0, 9:] = (changed_b[0, 9:] + 7) % 512  # change the last Part-B tokens
    out, _ = model(changed_b, pos, sep)
    assert torch.allclose(out[:, :9], base[:, :9], atol=1e-6)  # Part A and earlier Part B untouched
    assert not torch.allclose(out[:, 9:], base[:, 9:], atol=1e-4)
    changed_a = ids.clone()
    changed_a[0, 5] = (changed_a[0, 5] + 3) % 512  # a late Part-A token is seen by every row
    out, _ = model(changed_a, pos, sep)
    assert not torch.allclose(out[:, 0], base[:, 0], atol=1e-4)


def test_full_mask_equals_sep_mask() -> None:
    model = GLMModel(GLMConfig(**TINY)).eval()
    ids, pos, sep, _ = _batch()
    a, _ = model(ids, pos, sep)
    b, _ = model(ids, pos, sep_attention_mask(sep, 11).float())
    assert torch.allclose(a, b, atol=1e-6)


def test_kv_cache_two_segments_equal_one_pass() -> None:
    # Was the Transformer-XL ``mems`` test; the KV cache replaces that path (issue 15).
    model = GLMModel(GLMConfig(**TINY)).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 512, (2, 12), generator=g)
    causal = torch.zeros(2, dtype=torch.long)  # sep = 0: plain causal attention
    full, rest = model(ids, causal_position_ids(2, 12), causal)
    assert rest == []
    cache = KVCache(2)
    first, _ = model(ids[:, :5], causal_position_ids(2, 5), causal, kv_cache=cache)
    second, _ = model(ids[:, 5:], causal_position_ids(2, 7, offset=5), causal, kv_cache=cache)
    assert cache.length == 12
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-5)
    with pytest.raises(TypeError):
        model(ids, causal_position_ids(2, 12), causal, mems=[])  # the mems path is gone


def test_init_is_reproducible_and_scaled() -> None:
    cfg = GLMConfig(**{**TINY, "num_layers": 8, "hidden_size": 128})
    a, b = GLMModel(cfg, init_seed=5), GLMModel(cfg, init_seed=5)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    sd = a.state_dict()
    assert abs(float(sd["transformer.layers.0.mlp.dense_h_to_4h.weight"].std()) - 0.02) < 0.002
    assert abs(float(sd["transformer.layers.0.mlp.dense_4h_to_h.weight"].std()) - 0.02 / 4.0) < 0.0005
    assert float(sd["transformer.layers.0.attention.dense.bias"].abs().max()) == 0.0
    assert torch.equal(sd["transformer.final_layernorm.weight"], torch.ones(128))


def test_activation_checkpointing_same_grads_with_dropout() -> None:
    cfg = GLMConfig(**{**TINY, "hidden_dropout": 0.1, "attention_dropout": 0.1})
    ids, pos, sep, lm = _batch()
    grads = []
    for ckpt in (False, True):
        cfg.checkpoint_activations = ckpt
        model = GLMModel(cfg, init_seed=3).train()
        torch.manual_seed(11)
        from mpu.random import model_parallel_seed

        model_parallel_seed(11, model.state)
        loss = glm_lm_loss(model(ids, pos, sep)[0], ids, lm)
        loss.backward()
        grads.append((loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    for k, g in grads[0][1].items():
        assert torch.allclose(g, grads[1][1][k], atol=1e-6), k


def test_param_groups() -> None:
    model = GLMModel(GLMConfig(**TINY))
    decay, no_decay = param_groups_for_weight_decay(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.transformer.final_layernorm.weight) in ids
    assert id(model.transformer.layers[0].attention.dense.bias) in ids
    assert id(model.word_embeddings.weight) not in ids
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


# --- tensor parallel parity --------------------------------------------------------------------------

def _model_worker(rank: int, world: int) -> dict:
    torch.manual_seed(0)
    state = ParallelState.from_torch_distributed(world)
    cfg = GLMConfig(**TP_TINY)
    ids, pos, sep, lm = _batch(V=384)
    par = GLMModel(cfg, state, init_seed=42)
    logits, _ = par(ids, pos, sep)
    loss = glm_lm_loss(logits, ids, lm, state)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in par.named_parameters()}
    # Load a resharded TP=1 state dict into a differently initialised TP model: same logits.
    reference = GLMModel(cfg, init_seed=77)
    other = GLMModel(cfg, state, init_seed=78)
    load_glm_state_dict(other, shard_state_dict(reference.state_dict(), world, rank))
    with torch.no_grad():
        resharded_logits = other(ids, pos, sep)[0]
    # Hidden / embedding dropout is outside the TP regions: same masks on every rank as at TP=1.
    dropped = GLMModel(GLMConfig(**{**TP_TINY, "hidden_dropout": 0.3}), state, init_seed=42).train()
    torch.manual_seed(5)
    dropout_logits = dropped(ids, pos, sep)[0].detach()
    return {"logits": logits.detach(), "loss": float(loss), "grads": grads, "params": par.state_dict(),
            "resharded_logits": resharded_logits, "dropout_logits": dropout_logits}


@pytest.mark.slow
@pytest.mark.parametrize("tp", [2, 4])
def test_tensor_parallel_model_matches_single_process(tp: int) -> None:
    results = run_distributed(_model_worker, tp)
    cfg = GLMConfig(**TP_TINY)
    ids, pos, sep, lm = _batch(V=384)
    dense = GLMModel(cfg, init_seed=42)
    logits, _ = dense(ids, pos, sep)
    loss = glm_lm_loss(logits, ids, lm)
    loss.backward()
    # TP init equals slices of the TP=1 init.
    merged_params = merge_state_dicts([r["params"] for r in results])
    for k, v in dense.state_dict().items():
        assert torch.equal(merged_params[k], v), k
    got_logits = torch.cat([r["logits"] for r in results], dim=-1)
    assert (got_logits - logits.detach()).abs().max() <= 1e-5
    for r in results:
        assert r["loss"] == pytest.approx(float(loss), abs=1e-5)
    merged = merge_state_dicts([r["grads"] for r in results])
    for k, p in dense.named_parameters():
        assert (merged[k] - p.grad).abs().max() <= 1e-5, k
    reference = GLMModel(cfg, init_seed=77)
    with torch.no_grad():
        ref_logits = reference(ids, pos, sep)[0]
    got = torch.cat([r["resharded_logits"] for r in results], dim=-1)
    assert (got - ref_logits).abs().max() <= 1e-5
    dropped = GLMModel(GLMConfig(**{**TP_TINY, "hidden_dropout": 0.3}), init_seed=42).train()
    torch.manual_seed(5)
    ref_dropout = dropped(ids, pos, sep)[0].detach()
    assert (ref_dropout - logits.detach()).abs().max() > 1e-3  # dropout really acted
    got = torch.cat([r["dropout_logits"] for r in results], dim=-1)
    assert (got - ref_dropout).abs().max() <= 1e-5


# --- checkpoint layouts --------------------------------------------------------------------------

def test_load_glm_and_sat_layouts_and_errors() -> None:
    cfg = GLMConfig(**TINY)
    src = GLMModel(cfg, init_seed=1).state_dict()
    dst = GLMModel(cfg, init_seed=2)
    load_glm_state_dict(dst, src)
    assert torch.equal(dst.state_dict()["word_embeddings.weight"], src["word_embeddings.weight"])
    sat = to_sat_layout(src)
    assert "transformer.word_embeddings.weight" in sat
    assert "mixins.block_position_embedding.block_position_embeddings.weight" in sat
    dst = GLMModel(cfg, init_seed=2)
    load_glm_state_dict(dst, {"module": sat, "iteration": 0})
    for k, v in src.items():
        assert torch.equal(dst.state_dict()[k], v), k

    bad = dict(src)
    bad["transformer.position_embeddings.weight"] = torch.zeros(32, 32)  # SAT-sized table for a GLM config
    del bad["transformer.final_layernorm.bias"]
    bad["transformer.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        load_glm_state_dict(dst, bad)
    msg = str(err.value)
    assert "wrong shape for 'transformer.position_embeddings.weight': got (32, 32), expected (33, 32)" in msg
    assert "missing key 'transformer.final_layernorm.bias'" in msg
    assert "unexpected key 'transformer.extra.weight'" in msg


def test_shard_merge_roundtrip_1_2_4_1() -> None:
    full = GLMModel(GLMConfig(**TINY)).state_dict()
    two = [shard_state_dict(full, 2, r) for r in range(2)]
    assert two[1]["transformer.layers.0.attention.query_key_value.weight"].shape == (48, 32)
    assert two[1]["transformer.layers.0.attention.dense.weight"].shape == (32, 16)
    assert two[1]["transformer.layers.0.attention.dense.bias"].shape == (32,)
    qkv = full["transformer.layers.0.attention.query_key_value.weight"]
    assert torch.equal(two[1]["transformer.layers.0.attention.query_key_value.weight"],
                       torch.cat([qkv[16:32], qkv[48:64], qkv[80:96]]))
    four = [shard_state_dict(merge_state_dicts(two), 4, r) for r in range(4)]
    back = merge_state_dicts(four)
    assert back.keys() == full.keys()
    for k in full:
        assert torch.equal(back[k], full[k]), k


def _glm_layout_by_name(name: str) -> tuple[int, int] | None:
    """GLM's TP layout written out by key name (GLM ``mpu/layers.py``), the reference for the parameter tags."""
    if "query_key_value" in name:
        return 0, 3
    if name.endswith("word_embeddings.weight") or "dense_h_to_4h" in name:
        return 0, 1
    if name.endswith("attention.dense.weight") or name.endswith("dense_4h_to_h.weight"):
        return 1, 1
    return None


@pytest.mark.parametrize("block", [True, False])
def test_parameter_tags_shard_like_a_tp2_model(block: bool) -> None:
    """The split read from each parameter's tags (mpu.layers) is GLM's layout, and sharding the TP=1 state
    dict with it gives, for every key, the TP=2 model's own tensors (initialisation is TP-independent)."""
    cfg = GLMConfig(**{**TINY, "block_position_encoding": block})
    full_model = GLMModel(cfg, init_seed=5)
    rules = partition_rules(full_model)
    full = full_model.state_dict()
    assert rules.keys() == full.keys()
    import model.checkpoint_compat as compat

    compat._glm_rules.cache_clear()  # so that the tiny model is built here
    before = torch.random.get_rng_state()
    assert glm_partition_rules(full.keys()) == rules  # the tiny-model rules used where no model is at hand
    assert torch.equal(torch.random.get_rng_state(), before)  # building the tiny model draws nothing global
    assert glm_partition_rules(to_sat_layout(full).keys()) == rules
    for name in full:
        assert rules[name] == _glm_layout_by_name(name), name
    assert sum(r is not None for r in rules.values()) == 1 + 6 * cfg.num_layers  # word table; per layer QKV, dense, h_to_4h, 4h_to_h
    for rank in range(2):
        tp2 = GLMModel(cfg, ParallelState(tp_size=2, tp_rank=rank), init_seed=5)
        assert partition_rules(tp2) == rules  # the tags do not depend on the TP size
        shard = shard_state_dict(full, 2, rank, rules)
        own = tp2.state_dict()
        assert shard.keys() == own.keys()
        for name in own:
            assert shard[name].shape == own[name].shape, name
            assert torch.equal(shard[name], own[name]), name
    # SAT names shard the same way (the rules are looked up under the GLM name).
    sat = shard_state_dict(to_sat_layout(full), 2, 1)
    assert torch.equal(sat["transformer.word_embeddings.weight"], full["word_embeddings.weight"][256:])


def test_merge_keeps_an_unknown_replica_and_refuses_an_unknown_split() -> None:
    full = GLMModel(GLMConfig(**TINY)).state_dict()
    shards = [shard_state_dict(full, 2, r) for r in range(2)]
    for r, s in enumerate(shards):
        s["extra.same"] = torch.ones(3)
        s["extra.split"] = torch.full((2,), float(r))
    with pytest.raises(ValueError, match="'extra.split' is not a parameter of the model and differs between TP "
                                         "shard 0 and shard 1"):
        merge_state_dicts(shards)
    for s in shards:
        del s["extra.split"]
    merged = merge_state_dicts(shards)
    assert torch.equal(merged["extra.same"], torch.ones(3))
    assert torch.equal(merged["word_embeddings.weight"], full["word_embeddings.weight"])


def test_sharded_parameter_without_dimension_is_an_error() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    p.model_parallel = True
    with pytest.raises(ValueError, match="no partition_dim"):
        partition_of(p)
    p.model_parallel = False
    assert partition_of(p) is None


# --- config -----------------------------------------------------------------------------------------

def test_config_json_roundtrip_and_validation(tmp_path) -> None:
    cfg = GLMConfig(**TINY)
    path = tmp_path / "m.json"
    cfg.to_json_file(path)
    assert GLMConfig.from_json_file(path) == cfg
    path.write_text('{"num_layers": 2, "hiden_size": 3}')
    with pytest.raises(ValueError, match="hiden_size"):
        GLMConfig.from_json_file(path)
    with pytest.raises(FileNotFoundError):
        GLMConfig.from_json_file(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="num_attention_heads=4 is not divisible by tensor_parallel_size=8"):
        GLMConfig(**TINY).validate(8)
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible"):
        GLMConfig(**{**TINY, "hidden_size": 30}).validate()
    with pytest.raises(ValueError, match="vocab_size=500 is not divisible by tensor_parallel_size=8"):
        GLMConfig(**{**TINY, "num_attention_heads": 8, "vocab_size": 500}).validate(8)
    # Only divisibility by TP is required: a table padded to 128 (not 128*TP) still splits evenly.
    GLMConfig(**{**TINY, "num_attention_heads": 8, "vocab_size": 384}).validate(8)
    with pytest.raises(ValueError, match="seq_length=64 exceeds"):
        GLMConfig(**TINY).validate(seq_length=64)


def test_shipped_configs_load_and_validate() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "config" / "model"
    names = {p.stem: GLMConfig.from_json_file(p).validate() for p in root.glob("*.json")}
    assert {"glm-tiny", "glm-small", "glm-base", "glm-large", "mglm-1b", "glm-10b"} <= set(names)
    m = names["mglm-1b"]
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.vocab_size, m.position_table_rows) == (
        24, 1536, 16, 250112, 1025)
    for tp in (1, 2, 4, 8):  # the released mGLM table (250112 = 2^8 * 977 rows) at every usual TP size
        m.validate(tp)


# --- training -----------------------------------------------------------------------------------

def test_tiny_batch_overfits() -> None:
    torch.manual_seed(0)
    cfg = GLMConfig(**{**TINY, "hidden_size": 64, "hidden_dropout": 0.0, "attention_dropout": 0.0})
    model = GLMModel(cfg, init_seed=0).train()
    ids, pos, sep, lm = _batch()
    target = torch.roll(ids, -1, dims=1)
    opt = torch.optim.AdamW(param_groups_for_weight_decay(model, 0.0), lr=3e-3)
    start = time.monotonic()
    loss = None
    for _ in range(300):
        loss = glm_lm_loss(model(ids, pos, sep)[0], target, lm)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if float(loss) < 0.05:
            break
    assert float(loss) < 0.1
    assert time.monotonic() - start < 30
