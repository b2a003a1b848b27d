"""Argument parsing: GLM flag names, DeepSpeed JSON agreement, clear errors."""

import json

import pytest

from training.arguments import parse_pretrain_args


def write_ds(tmp_path, cfg):
    p = tmp_path / "ds.json"
    p.write_text(json.dumps(cfg))
    return str(p)


DS = {
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 2,
    "gradient_clipping": 1.0,
    "zero_optimization": {"stage": 2},
    "bf16": {"enabled": True},
    "optimizer": {"type": "Adam", "params": {"lr": 1e-4, "weight_decay": 0.01, "betas": [0.9, 0.98], "eps": 1e-6}},
}


def test_glm_flag_names_parse():
    cfg = parse_pretrain_args([
        "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "128",
        "--max-position-embeddings", "256", "--model-parallel-size", "2", "--train-iters", "10", "--lr", "3e-4",
        "--lr-decay-style", "cosine", "--warmup", "0.05", "--weight-decay", "0.1", "--clip-grad", "0.5",
        "--save-interval", "5", "--eval-interval", "5", "--log-interval", "1", "--checkpoint-activations",
        "--bert-prob", "0.5", "--gap-sentence-prob", "0.3", "--avg-block-length", "3", "--gpt-min-ratio", "0.25",
        "--dataset-temperature", "0.3", "--local_rank", "0",
    ])
    assert cfg.model.num_layers == 2 and cfg.model.max_position_embeddings == 256
    assert cfg.model.checkpoint_activations is True
    assert cfg.optim.lr == 3e-4 and cfg.optim.lr_decay_style == "cosine" and cfg.optim.clip_grad == 0.5
    assert cfg.train.model_parallel_size == 2 and cfg.train.local_rank == 0
    assert cfg.data.gpt_min_ratio == 0.25 and cfg.ds_config is None


def test_values_taken_from_deepspeed_json(tmp_path):
    cfg = parse_pretrain_args(["--deepspeed", "--deepspeed_config", write_ds(tmp_path, DS)])
    assert cfg.train.batch_size == 4 and cfg.train.gradient_accumulation_steps == 2
    assert cfg.train.bf16 is True and cfg.train.zero_stage == 2
    assert cfg.optim.lr == 1e-4 and cfg.optim.adam_beta2 == 0.98 and cfg.optim.adam_eps == 1e-6


def test_flags_fill_the_json(tmp_path):
    ds = {"zero_optimization": {"stage": 1}, "optimizer": {"type": "AdamW", "params": {}}}
    cfg = parse_pretrain_args(["--deepspeed_config", write_ds(tmp_path, ds), "--batch-size", "3", "--lr", "2e-4",
                               "--clip-grad", "0.0"])
    assert cfg.ds_config["train_micro_batch_size_per_gpu"] == 3
    assert cfg.ds_config["optimizer"]["params"]["lr"] == 2e-4
    assert cfg.ds_config["gradient_clipping"] == 0.0  # explicit: DeepSpeed would silently default to 1.0


@pytest.mark.parametrize("flags, names", [
    (["--lr", "3e-4"], ["--lr 0.0003", "optimizer.params.lr = 0.0001"]),
    (["--batch-size", "8"], ["--batch-size 8", "train_micro_batch_size_per_gpu = 4"]),
    (["--clip-grad", "0.5"], ["--clip-grad 0.5", "gradient_clipping = 1.0"]),
    (["--zero-stage", "3"], ["--zero-stage 3", "zero_optimization.stage = 2"]),
    (["--fp16"], ["fp16", "bf16"]),
])
def test_contradiction_is_an_error(tmp_path, flags, names):
    path = write_ds(tmp_path, DS)
    with pytest.raises(ValueError) as e:
        parse_pretrain_args(["--deepspeed_config", path, *flags])
    msg = str(e.value)
    assert path in msg
    for n in names:
        assert n in msg


def test_missing_data_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="--train-data /nonexistent/store"):
        parse_pretrain_args(["--train-data", "/nonexistent/store"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"train_micro_batch_size_per_gpu": 4,\n oops}')
    with pytest.raises(ValueError, match=f"{bad}:2"):
        parse_pretrain_args(["--deepspeed_config", str(bad)])
    with pytest.raises(ValueError, match="scheduler"):
        parse_pretrain_args(["--deepspeed_config", write_ds(tmp_path, {**DS, "scheduler": {"type": "WarmupLR"}})])
