"""Hugging Face checkpoints: THUDM hub-layout folders in (--load-pretrained DIR), tools/export_hf.py out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, SAMPLE_TOKENIZER

from common.errors import DataError, UsageError
from data_utils.tokenizer import GLMTokenizer
from model import GLMConfig, GLMModel
from model.generation import GenerationConfig, generate
from model.hf_compat import config_from_hub
from mpu import ParallelState
from tests.test_model import _batch
from training import checkpoint as ckpt

VOCAB = GLMTokenizer(SAMPLE_TOKENIZER).padded_vocab_size()  # 8064 rows: 8000 pieces + 10 command ids, padded
TINY = dict(num_layers=2, vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, max_sequence_length=32,
            hidden_dropout=0.0, attention_dropout=0.0)


def _trained_like(seed: int = 3) -> GLMModel:
    """A small model whose weights no init seed reproduces (biases and LayerNorms perturbed too)."""
    model = GLMModel(GLMConfig(**TINY), init_seed=seed).eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _thudm_config(**changes) -> dict:
    """config.json as THUDM's hub GLM folders write it (field names of their GLMConfig)."""
    cfg = {"architectures": ["GLMForConditionalGeneration"], "model_type": "glm",
           "auto_map": {"AutoConfig": "configuration_glm.GLMConfig"}, "num_layers": 2, "vocab_size": VOCAB,
           "hidden_size": 32, "num_attention_heads": 4, "embedding_dropout_prob": 0.0,
           "attention_dropout_prob": 0.0, "output_dropout_prob": 0.0, "max_sequence_length": 32,
           "checkpoint_activations": False, "checkpoint_num_layers": 1, "parallel_output": True,
           "relative_encoding": False, "block_position_encoding": True, "output_predict": True,
           "spell_length": None, "spell_func": "lstm", "attention_scale": 1.0, "pool_token": "cls",
           "torch_dtype": "float32", "transformers_version": "4.23.1"}
    cfg.update(changes)
    return cfg


def _hub_folder(path, model: GLMModel, fmt: str = "bin", config: dict | None = None):
    """A folder in THUDM's hub layout, written from a TP=1 ``model`` by hand: the ``glm.`` key names of
    GLMForConditionalGeneration. A TP=1 ``query_key_value`` is already the hub's contiguous [q; k; v] thirds
    (checked against per-rank heads below and against the independent Transformers class in the export test)."""
    path.mkdir(parents=True)
    hub = {"glm." + name: t.clone() for name, t in model.state_dict().items()}
    (path / "config.json").write_text(json.dumps(config or _thudm_config()))
    shutil.copyfile(SAMPLE_TOKENIZER, path / "cog-pretrain.model")
    if fmt == "bin":
        torch.save(hub, path / "pytorch_model.bin")
        return path
    # two shards and their index, as save_pretrained(max_shard_size=...) writes them
    from safetensors.torch import save_file

    ext = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    names = sorted(hub)
    parts = {f"{stem}-00001-of-00002.{ext}": names[: len(names) // 2],
             f"{stem}-00002-of-00002.{ext}": names[len(names) // 2:]}
    for fname, keys in parts.items():
        shard = {k: hub[k].contiguous() for k in keys}
        if ext == "safetensors":
            save_file(shard, str(path / fname))
        else:
            torch.save(shard, path / fname)
    index = {"metadata": {}, "weight_map": {k: f for f, keys in parts.items() for k in keys}}
    (path / f"{stem}.{ext}.index.json").write_text(json.dumps(index))
    return path


def _logits(model: GLMModel) -> torch.Tensor:
    ids, pos, sep, _ = _batch(V=VOCAB)
    with torch.no_grad():
        return model(ids, pos, sep)[0]


# ------------------------------------------------------------------------------------------ hub in
@pytest.mark.parametrize("fmt", ["bin", "safetensors", "sharded-bin"])
def test_hub_folder_loads_strictly_with_the_same_logits(tmp_path, fmt) -> None:
    source = _trained_like()
    folder = _hub_folder(tmp_path / "hub", source, fmt)
    meta = ckpt.pretrained_meta(folder)
    assert meta["model_config"] == GLMConfig(**TINY).to_dict()
    assert meta["tokenizer"] == str(folder / "cog-pretrain.model") and meta["tokenizer_add_dblock"] is False
    assert ckpt.embedding_rows(GLMTokenizer(meta["tokenizer"]), 1, pretrained=folder, meta=meta) == VOCAB
    target = GLMModel(GLMConfig.from_dict(meta["model_config"]), init_seed=99).eval()
    assert "hub layout" in ckpt.load_pretrained(target, folder, ParallelState.single())
    assert torch.equal(_logits(target), _logits(source))


@pytest.mark.parametrize("rank", [0, 1])
def test_hub_folder_at_tp2_gives_each_rank_its_qkv_heads(tmp_path, rank) -> None:
    source = _trained_like()
    folder = _hub_folder(tmp_path / "hub", source)
    state = ParallelState(tp_size=2, tp_rank=rank)
    target = GLMModel(GLMConfig(**TINY), state, init_seed=5)
    ckpt.load_pretrained(target, folder, state)
    hub_qkv = source.state_dict()["transformer.layers.1.attention.query_key_value.weight"]  # [3h, h] = [q; k; v]
    h, half = 32, 16  # rank r holds heads 2r, 2r+1: rows r*16..(r+1)*16 of each third
    want = torch.cat([hub_qkv[t * h + rank * half: t * h + (rank + 1) * half] for t in range(3)])
    got = target.state_dict()
    assert torch.equal(got["transformer.layers.1.attention.query_key_value.weight"], want)
    assert torch.equal(got["word_embeddings.weight"],
                       source.state_dict()["word_embeddings.weight"][rank * VOCAB // 2:(rank + 1) * VOCAB // 2])
    w = source.state_dict()["transformer.layers.0.mlp.dense_4h_to_h.weight"]  # row parallel: input columns
    assert torch.equal(got["transformer.layers.0.mlp.dense_4h_to_h.weight"], w[:, rank * 64:(rank + 1) * 64])


def test_hub_key_problems_are_listed(tmp_path) -> None:
    folder = _hub_folder(tmp_path / "hub", _trained_like())
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del sd["glm.transformer.final_layernorm.bias"]
    sd["glm.transformer.layers.0.attention.dense.weight"] = torch.zeros(3, 3)
    sd["glm.lm_head.weight"] = torch.zeros(2, 2)
    torch.save(sd, folder / "pytorch_model.bin")
    model = GLMModel(GLMConfig(**TINY))
    with pytest.raises(ValueError) as e:
        ckpt.load_pretrained(model, folder, ParallelState.single())
    msg = str(e.value)
    assert "missing key 'transformer.final_layernorm.bias'" in msg and "unexpected key 'lm_head.weight'" in msg
    assert "wrong shape for 'transformer.layers.0.attention.dense.weight': got (3, 3)" in msg


def test_pickled_objects_are_refused_unless_vouched_for(tmp_path) -> None:
    """pytorch_model.bin goes through common.safe_load like every checkpoint: an object the weights-only
    unpickler does not allow is a DataError naming the file and --trust-checkpoint; with the flag
    (``trust``) it is unpickled, and what comes out is still checked to be a state dict."""
    folder = _hub_folder(tmp_path / "hub", _trained_like())
    bin_file = folder / "pytorch_model.bin"
    torch.save({"glm.word_embeddings.weight": torch.zeros(2), "evil": GLMConfig()}, bin_file)
    model = GLMModel(GLMConfig(**TINY))
    with pytest.raises(DataError, match=r"pytorch_model.bin: refused: .*model.config.GLMConfig.*--trust-checkpoint"):
        ckpt.load_pretrained(model, folder, ParallelState.single())
    with pytest.raises(DataError, match=r"pytorch_model.bin: expected a dict of tensors"):
        ckpt.load_pretrained(model, folder, ParallelState.single(), trust=True)


def test_hub_folder_with_a_code_payload_is_exit_1_naming_the_file(tmp_path) -> None:
    """The attacker's pytorch_model.bin (a __reduce__ that calls exec) never runs: generate_samples.py exits
    with 1 (a data error, as for our own checkpoints) and one stderr line naming the file and the flag."""
    from tests.test_trust import write_evil

    folder = _hub_folder(tmp_path / "hub", _trained_like())
    marker = tmp_path / "MARKER"
    write_evil(folder / "pytorch_model.bin", marker)
    prompts = tmp_path / "p.txt"
    prompts.write_text("Paris is the [MASK] of France.\n")
    p = subprocess.run([sys.executable, "generate_samples.py", "--load-pretrained", str(folder), "--input-file",
                        str(prompts), "--output-file", str(tmp_path / "out.jsonl"), "--device", "cpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=180)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 1 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert lines[0].startswith("generate_samples.py: error: ")
    assert str(folder / "pytorch_model.bin") in lines[0] and "--trust-checkpoint" in lines[0]
    assert not marker.exists()


def test_damaged_hub_files_are_data_errors(tmp_path) -> None:
    """A truncated pytorch_model.bin and a broken config.json are DataErrors (exit 1) naming the file."""
    folder = _hub_folder(tmp_path / "hub", _trained_like())
    bin_file = folder / "pytorch_model.bin"
    bin_file.write_bytes(bin_file.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"pytorch_model.bin: not a readable torch checkpoint"):
        ckpt.load_pretrained(GLMModel(GLMConfig(**TINY)), folder, ParallelState.single())
    (folder / "config.json").write_text("{\"num_layers\": 2,")
    with pytest.raises(DataError, match=r"config.json:1: broken hub config"):
        ckpt.pretrained_meta(folder)


@pytest.mark.parametrize("change, message", [
    ({"relative_encoding": True}, "relative_encoding=true"),
    ({"spell_length": 4}, "spell_length=4"),
    ({"block_position_encoding": False}, "block_position_encoding=false"),
    ({"embedding_dropout_prob": 0.2}, "embedding_dropout_prob=0.2 != output_dropout_prob=0.0"),
    ({"rotary_dim": 8}, r"unknown field\(s\) \['rotary_dim'\]"),
    ({"num_attention_heads": 5}, "hidden_size=32 is not divisible by num_attention_heads=5"),
])
def test_config_fields_that_cannot_be_honoured_are_refused(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_hub(_thudm_config(**change), "hub/config.json")


def test_unsupported_tokenizers_are_refused(tmp_path) -> None:
    folder = _hub_folder(tmp_path / "bpe", _trained_like())
    (folder / "cog-pretrain.model").unlink()
    (folder / "vocab.json").write_text("{}")
    (folder / "merges.txt").write_text("")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GLMGPT2Tokenizer"}))
    with pytest.raises(ValueError, match=r"tokenizer GLMGPT2Tokenizer \(vocab.json, merges.txt\) is not supported"):
        ckpt.pretrained_meta(folder)
    other = _hub_folder(tmp_path / "ids", _trained_like())
    # GLM's English layouts put [sop]/[eop] elsewhere; here the embedding rows would mean other tokens.
    (other / "added_tokens.json").write_text(json.dumps({"[MASK]": 8003, "<|startofpiece|>": 8005}))
    with pytest.raises(ValueError, match=r"<\|startofpiece\|> at 8005 \(here 8006\)"):
        ckpt.pretrained_meta(other)


def test_generate_samples_runs_on_a_hub_folder(tmp_path) -> None:
    import generate_samples

    folder = _hub_folder(tmp_path / "hub", _trained_like())
    prompts = tmp_path / "p.txt"
    prompts.write_text("Paris is the [MASK] of France.\n")
    generate_samples.main(["--load-pretrained", str(folder), "--input-file", str(prompts), "--output-file",
                           str(tmp_path / "out.jsonl"), "--out-seq-length", "4", "--device", "cpu"])
    row = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert row["prompt"] == "Paris is the [MASK] of France."


# ------------------------------------------------------------------------------------------ export out
def _checkpoint(path, model: GLMModel):
    """A TP-1 checkpoint as pretraining writes it (TorchEngine + save_checkpoint + meta.json)."""
    from training.engine import TorchEngine

    engine = TorchEngine(model, [{"params": list(model.parameters())}], ParallelState.single(), lr=1e-3)
    meta = {"tp_size": 1, "dp_size": 1, "model_config": model.config.to_dict(), "tokenizer": str(SAMPLE_TOKENIZER),
            "tokenizer_add_dblock": False}
    ckpt.save_checkpoint(engine, path, 5, meta, {"iteration": 5}, rank=0)
    return path


def _export(tmp_path, model: GLMModel):
    from tools.export_hf import main

    src = _checkpoint(tmp_path / "ckpt", model)
    main([str(src), str(tmp_path / "hf")])
    return tmp_path / "hf"


def test_export_writes_the_hub_layout_and_loads_back_exactly(tmp_path) -> None:
    from safetensors.torch import load_file

    source = _trained_like()
    out = _export(tmp_path, source)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mglm" and config["auto_map"]["AutoModel"] == "modeling_mglm.MGLMModel"
    assert config_from_hub(config).to_dict() == GLMConfig(**TINY).to_dict()
    tok = GLMTokenizer(SAMPLE_TOKENIZER)
    assert config["sop_token_id"] == tok.sop_id and config["end_token_ids"] == [tok.eop_id, tok.eos_id]
    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == {"glm." + k for k in source.state_dict()}
    assert (out / "tokenizer.model").read_bytes() == SAMPLE_TOKENIZER.read_bytes()
    assert json.loads((out / "added_tokens.json").read_text())["[gMASK]"] == tok.gmask_id
    assert {p.name for p in out.iterdir()} >= {"configuration_mglm.py", "modeling_mglm.py", "tokenization_mglm.py",
                                               "tokenizer_config.json", "README.md"}
    # round trip: --load-pretrained OUT
    meta = ckpt.pretrained_meta(out)
    back = GLMModel(GLMConfig.from_dict(meta["model_config"]), init_seed=77)
    ckpt.load_pretrained(back, out, ParallelState.single())
    for k, v in source.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    from tools.export_hf import main

    with pytest.raises(UsageError, match="exists and is not empty"):  # not overwritten silently
        main([str(tmp_path / "ckpt"), str(out)])


def test_export_merges_a_tp2_checkpoint(tmp_path) -> None:
    from safetensors.torch import load_file

    from tools.change_mp import change_mp

    source = _trained_like()
    _checkpoint(tmp_path / "tp1", source)
    change_mp(tmp_path / "tp1", 2, tmp_path / "tp2")
    assert len(list((tmp_path / "tp2" / "global_step5").glob("mp_rank_*_model_states.pt"))) == 2
    from tools.export_hf import main

    main([str(tmp_path / "tp2"), str(tmp_path / "hf")])
    weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
    for k, v in source.state_dict().items():
        assert torch.equal(weights["glm." + k], v), k


def _transformers(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import transformers

    return transformers


def test_transformers_gives_this_projects_logits_and_blanks(tmp_path, monkeypatch) -> None:
    transformers = _transformers(monkeypatch)
    source = _trained_like()
    out = _export(tmp_path, source)
    ids, pos, sep, _ = _batch(V=VOCAB)
    expected = _logits(source)
    base = transformers.AutoModel.from_pretrained(str(out), trust_remote_code=True, local_files_only=True).eval()
    assert type(base).__name__ == "MGLMModel"
    lm = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(out), trust_remote_code=True,
                                                           local_files_only=True).eval()
    with torch.no_grad():
        for model in (base, lm):
            got = model(input_ids=ids, position_ids=pos, attention_mask=sep).logits
            assert got.shape == expected.shape
            assert (got - expected).abs().max() <= 1e-5
        # a full [B, 1, L, L] mask means the same as sep
        from model.masks import sep_attention_mask

        full = base(input_ids=ids, position_ids=pos, attention_mask=sep_attention_mask(sep, ids.shape[1])).logits
        assert (full - expected).abs().max() <= 1e-5
    tok = GLMTokenizer(SAMPLE_TOKENIZER)
    context = [tok.cls_id] + tok.encode("Paris is the [MASK] of France.") + [tok.eos_id]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out), trust_remote_code=True, local_files_only=True)
    assert hf_tok("[CLS] Paris is the [MASK] of France.<|endoftext|>")["input_ids"] == context
    for text in ("Das ist ein [sMASK] Test [gMASK]", "中文摘要：[sMASK]", "x<|startofpiece|>y  z"):
        assert hf_tok(text)["input_ids"] == tok.encode(text), text
    assert hf_tok.decode(tok.encode("Hello world")) == "Hello world"
    for beams in (1, 3):
        cfg = GenerationConfig(max_new_tokens=6, num_beams=beams, length_penalty=0.7)
        want = generate(source, tok, context, cfg)[0].tokens
        assert lm.fill_blank(context, max_new_tokens=6, num_beams=beams, length_penalty=0.7) == want
    # Make <|endofpiece|> a close rival of the tokens this model likes, in both copies, so that beams end
    # (hypotheses closed, length penalty deciding between short and long ones) and greedy stops at once.
    with torch.no_grad():
        for emb in (source.word_embeddings.weight, lm.glm.word_embeddings.weight):
            emb[tok.eop_id] = emb[7529] * 0.9 + emb[2337] * 0.3
    ended = set()
    for beams, alpha in ((1, 0.7), (2, 0.7), (2, 1.5), (3, 1.5)):
        best = generate(source, tok, context, GenerationConfig(max_new_tokens=8, num_beams=beams,
                                                               length_penalty=alpha))[0]
        ended.add(best.ended)
        assert lm.fill_blank(context, max_new_tokens=8, num_beams=beams, length_penalty=alpha) == best.tokens
    assert ended == {True, False}


@pytest.mark.slow
def test_finetune_from_a_hub_folder_equals_finetune_from_the_same_weights(tmp_path) -> None:
    """finetune_glm --load-pretrained HUB (config and tokenizer from the folder) trains and scores exactly as
    from this project's checkpoint of the same weights (losses and per-language predictions);
    --max-position-embeddings 96 beyond the folder's 32 positions (asked for explicitly: positions never grow
    silently) extends the position tables in both the same way."""
    from conftest import SAMPLE

    import finetune_glm

    source = _trained_like()
    hub = _hub_folder(tmp_path / "hub", source)
    ours = _checkpoint(tmp_path / "ours", source)
    results = {}
    for name, src in (("hub", hub), ("ours", ours)):
        results[name] = finetune_glm.main([
            "--task", "xnli", "--data-dir", str(SAMPLE / "tasks/xnli/xtreme"), "--load-pretrained", str(src),
            "--epochs", "1", "--batch-size", "8", "--seq-length", "96", "--max-position-embeddings", "96",
            "--device", "cpu", "--save",
            str(tmp_path / f"ft-{name}"), "--seed", "3"])
    assert results["hub"]["train_losses"] == results["ours"]["train_losses"]
    assert results["hub"]["dev"] == results["ours"]["dev"] and len(results["hub"]["dev"]) > 3
    for f in (tmp_path / "ft-ours" / "predictions").iterdir():
        assert (tmp_path / "ft-hub" / "predictions" / f.name).read_text() == f.read_text()


def _hub_tp2_worker(rank: int, world: int, folder: str) -> torch.Tensor:
    state = ParallelState.from_torch_distributed(world)
    model = GLMModel(GLMConfig(**TINY), state, init_seed=11).eval()
    ckpt.load_pretrained(model, folder, state)
    return _logits(model)  # this rank's V/2 vocabulary columns


@pytest.mark.slow
def test_hub_folder_at_tp2_gives_the_tp1_logits(tmp_path) -> None:
    from tests.distributed import run_distributed

    source = _trained_like()
    folder = _hub_folder(tmp_path / "hub", source, "safetensors")
    got = torch.cat(run_distributed(_hub_tp2_worker, 2, str(folder)), dim=-1)
    assert (got - _logits(source)).abs().max() <= 1e-5
