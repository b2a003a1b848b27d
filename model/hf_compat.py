"""Hugging Face hub layout of GLM checkpoints (THUDM's ``modeling_glm.py``) <-> this project.

A hub folder holds ``config.json`` (GLM's constructor fields), the weights in ``pytorch_model.bin`` or
``*.safetensors`` (one file, or shards listed by ``*.index.json``) and the tokenizer files. Its keys are ours
with the ``glm.`` prefix of ``GLMForConditionalGeneration`` (a bare ``GLMModel`` save has none):

    glm.word_embeddings.weight                      [V, h]   the output layer is tied to it
    glm.transformer.position_embeddings.weight      [S+1, h] (S = max_sequence_length; S rows without
    glm.transformer.block_position_embeddings.weight [S+1, h] block position encoding)
    glm.transformer.layers.N.attention.query_key_value.{weight [3h, h], bias [3h]}
    ...  input_layernorm, attention.dense, post_attention_layernorm, mlp.dense_h_to_4h, mlp.dense_4h_to_h
    glm.transformer.final_layernorm.{weight, bias}

The hub's ``query_key_value`` is one ``Linear(h, 3h)`` whose output is split into contiguous thirds
(q, k, v), each third head-major (head i = rows i*D..(i+1)*D). Our full (TP=1) weight is the same tensor:
``SelfAttention`` views the output as [3, n, D]. Under TP the rank-r shard is the strided slice
``[Q_r; K_r; V_r]`` (the stride-3 tag ``mpu.layers`` puts on the parameter), so a hub tensor is this project's
TP=1 tensor and a TP>1 load is ``shard_state_dict(full, tp, rank, partition_rules(model))``; an export loads
every shard into a TP=1 model (``training.checkpoint.load_pretrained``, which merges them).

Weights are read only through ``common.safe_load.load`` (the weights-only unpickler every loader uses,
``--trust-checkpoint`` to vouch for a file) or the safetensors library: a hub folder is downloaded data,
never trusted code. A file whose content is bad (damaged, refused, not a state dict) is a ``DataError``
naming it, as for every other checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common import safe_load
from common.errors import DataError, read_json_object
from model.config import GLMConfig

HUB_PREFIX = "glm."
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"

# Hub config field -> GLMConfig field, for the fields that map one to one.
_SAME_FIELDS = ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "max_sequence_length",
                "checkpoint_activations", "checkpoint_num_layers", "parallel_output", "attention_scale",
                "block_position_encoding")
# Fields our own export adds (THUDM's code has them fixed: eps 1e-5, 4h feed-forward, std 0.02).
_EXTRA_FIELDS = {"layernorm_epsilon": "layernorm_epsilon", "intermediate_size": "intermediate_size",
                 "initializer_range": "init_method_std"}
# Transformers' own bookkeeping, the tokenizer ids our export records, and fields with no effect on the
# network's weights or logits (``output_predict``: return logits rather than hidden states, which is what this
# project's model always does; ``pool_token``: the hub's classification head; ``spell_func``: only used when
# ``spell_length`` > 0, refused below).
_IGNORED_FIELDS = {"architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version",
                   "output_predict", "pool_token", "spell_func", "_name_or_path", "use_cache",
                   "tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
                   "decoder_start_token_id", "sop_token_id", "end_token_ids", "mask_token_ids",
                   "generatable_vocab_size", "banned_token_ids", "cls_token_id", "tokenizer_file",
                   "is_encoder_decoder", "return_dict", "output_hidden_states", "output_attentions"}

# This project's fixed command-token layout (data_utils.tokenizer): string -> offset from N sentencepiece pieces.
_COMMAND_OFFSETS = {"<|endoftext|>": 0, "[SEP]": 1, "[CLS]": 2, "[MASK]": 3, "[UNK]": 4, "<|startofpiece|>": 6,
                    "<|endofpiece|>": 7, "[sMASK]": 8, "[gMASK]": 9, "[dBLOCK]": 10}


def is_hub_folder(path: str | os.PathLike | None) -> bool:
    """True for a directory holding ``config.json`` and no checkpoint of this project / GLM's own layout."""
    if not path:
        return False
    p = Path(path)
    if not p.is_dir() or not (p / CONFIG_FILE).is_file():
        return False
    return not any((p / t).exists() for t in ("latest", "latest_checkpointed_iteration.txt", "meta.json")) \
        and not any(p.glob("mp_rank_*_model_states.pt"))


# ------------------------------------------------------------------------------------------ config
def read_hub_config(folder: str | os.PathLike) -> dict[str, Any]:
    return read_json_object(Path(folder) / CONFIG_FILE, "hub config (a JSON object of GLM config fields)")


def config_from_hub(values: Mapping[str, Any], source: str = CONFIG_FILE) -> GLMConfig:
    """GLMConfig from a hub ``config.json``; every field this project cannot honour is refused, all named.

    Dropout: GLM's hub config has ``embedding_dropout_prob`` and ``output_dropout_prob``; this model applies
    one ``hidden_dropout`` at both places, so they must be equal.
    """
    problems = []
    missing = [k for k in ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "max_sequence_length")
               if k not in values]
    if missing:
        problems.append(f"missing field(s) {missing}")
    if values.get("relative_encoding"):
        problems.append("relative_encoding=true (Transformer-XL relative positions) is not implemented here")
    if values.get("spell_length"):
        problems.append(f"spell_length={values['spell_length']} (P-tuning prompt encoder) is not implemented here")
    if values.get("block_position_encoding", True) is False:
        problems.append("block_position_encoding=false: this project's data pipeline and generation always build "
                        "2D (position, block position) ids")
    emb, out = values.get("embedding_dropout_prob"), values.get("output_dropout_prob")
    if emb is not None and out is not None and emb != out:
        problems.append(f"embedding_dropout_prob={emb} != output_dropout_prob={out}: this model has one hidden "
                        "dropout for both")
    known = set(_SAME_FIELDS) | set(_EXTRA_FIELDS) | _IGNORED_FIELDS | {
        "relative_encoding", "spell_length", "embedding_dropout_prob", "output_dropout_prob",
        "attention_dropout_prob"}
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        problems.append(f"unknown field(s) {unknown} (not GLM config fields this loader knows)")
    if problems:
        raise ValueError(f"{source}: cannot load this GLM config: " + "; ".join(problems))
    fields: dict[str, Any] = {k: values[k] for k in _SAME_FIELDS if k in values and values[k] is not None}
    fields.update({ours: values[k] for k, ours in _EXTRA_FIELDS.items() if values.get(k) is not None})
    if fields.get("intermediate_size") == 4 * fields.get("hidden_size", 0):
        del fields["intermediate_size"]  # GLMConfig's default (None) means 4h: keep round trips equal
    dropout = out if out is not None else emb
    if dropout is not None:
        fields["hidden_dropout"] = dropout
    if values.get("attention_dropout_prob") is not None:
        fields["attention_dropout"] = values["attention_dropout_prob"]
    try:
        return GLMConfig.from_dict(fields, source=source).validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from None


def config_to_hub(config: GLMConfig) -> dict[str, Any]:
    """The hub ``config.json`` fields of ``config`` (THUDM's names, plus eps / FFN size / init std)."""
    return {
        "num_layers": config.num_layers, "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads, "embedding_dropout_prob": config.hidden_dropout,
        "attention_dropout_prob": config.attention_dropout, "output_dropout_prob": config.hidden_dropout,
        "max_sequence_length": config.max_sequence_length,
        "checkpoint_activations": config.checkpoint_activations,
        "checkpoint_num_layers": config.checkpoint_num_layers, "parallel_output": config.parallel_output,
        "relative_encoding": False, "block_position_encoding": config.block_position_encoding,
        "output_predict": True, "spell_length": None, "spell_func": "lstm",
        "attention_scale": config.attention_scale, "layernorm_epsilon": config.layernorm_epsilon,
        "intermediate_size": config.ffn_size, "initializer_range": config.init_method_std,
    }


# ------------------------------------------------------------------------------------------ tokenizer
def hub_tokenizer(folder: str | os.PathLike) -> tuple[str, bool]:
    """(sentencepiece ``.model`` file, whether ``[dBLOCK]`` exists) of a hub folder, or a ValueError saying
    why its tokenizer cannot be used here.

    The model file is ``tokenizer_config.json``'s ``vocab_file`` or the one ``*.model`` in the folder. When the
    folder lists its command tokens (``added_tokens.json`` or ``added_tokens_decoder``), each must sit at this
    project's fixed GLM id (N + offset, N = sentencepiece pieces), else the embedding rows would mean other
    tokens here.
    """
    p = Path(folder)
    tc_path = p / "tokenizer_config.json"
    tc: dict[str, Any] = {}
    if tc_path.is_file():
        tc = read_json_object(tc_path, "tokenizer config")
    kind = tc.get("tokenizer_class", "unknown")
    model_file = None
    if tc.get("vocab_file") and (p / tc["vocab_file"]).is_file():
        model_file = p / tc["vocab_file"]
    else:
        models = sorted(p.glob("*.model"))
        if len(models) > 1:
            raise ValueError(f"{p}: several sentencepiece files {[m.name for m in models]}; name one as "
                             "'vocab_file' in tokenizer_config.json")
        model_file = models[0] if models else None
    if model_file is None:
        found = [n for n in ("vocab.json", "merges.txt", "vocab.txt", "tokenizer.json") if (p / n).is_file()]
        raise ValueError(f"{p}: tokenizer {kind} ({', '.join(found) or 'no tokenizer files'}) is not supported: "
                         "this project needs a sentencepiece .model file (GLM's BPE / WordPiece tokenizers of "
                         "glm-10b, glm-roberta-large, glm-large are not)")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(model_file))
    except Exception as e:  # the C++ message carries no file name
        raise ValueError(f"{model_file}: not a sentencepiece model ({type(e).__name__}: {str(e).strip()})") from None
    n = sp.GetPieceSize()
    listed: dict[str, int] = {}
    if (p / "added_tokens.json").is_file():
        listed.update(read_json_object(p / "added_tokens.json", "added tokens"))
    for tid, entry in (tc.get("added_tokens_decoder") or {}).items():
        listed[entry["content"] if isinstance(entry, dict) else str(entry)] = int(tid)
    wrong = [f"{tok} at {listed[tok]} (here {n + off})" for tok, off in _COMMAND_OFFSETS.items()
             if tok in listed and listed[tok] != n + off]
    if wrong:
        raise ValueError(f"{p}: its tokenizer's command tokens are not at this project's GLM ids "
                         f"(N={n} sentencepiece pieces): {', '.join(wrong)}")
    return str(model_file), listed.get("[dBLOCK]") == n + _COMMAND_OFFSETS["[dBLOCK]"]


def hub_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """What this project's ``meta.json`` records, for a hub folder: model config and tokenizer."""
    config = config_from_hub(read_hub_config(folder), str(Path(folder) / CONFIG_FILE))
    tokenizer, add_dblock = hub_tokenizer(folder)
    return {"model_config": config.to_dict(), "tokenizer": tokenizer, "tokenizer_add_dblock": add_dblock,
            "hub_folder": str(folder), "tp_size": 1}


# ------------------------------------------------------------------------------------------ weights
def _weight_files(p: Path) -> list[Path]:
    for index in (SAFETENSORS_INDEX, BIN_INDEX):
        if (p / index).is_file():
            weight_map = read_json_object(p / index, "shard index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise DataError(f"{p / index}: no 'weight_map' of key -> shard file")
            files = [p / f for f in dict.fromkeys(weight_map.values())]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise FileNotFoundError(f"{p / index} lists shard(s) {absent} that are not in {p}")
            return files
    for name in (SAFETENSORS_FILE, BIN_FILE):
        if (p / name).is_file():
            return [p / name]
    raise FileNotFoundError(f"{p}: no {SAFETENSORS_FILE}, {BIN_FILE} or sharded index ({SAFETENSORS_INDEX}, "
                            f"{BIN_INDEX})")


def _read_file(f: Path, trust: bool) -> dict[str, torch.Tensor]:
    if f.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(f))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types without the path
            raise DataError(f"{f}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    obj = safe_load.load(f, trust=trust, what="--load-pretrained")
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise DataError(f"{f}: expected a dict of tensors (a state dict)")
    return obj


def from_hub_keys(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Hub keys -> ours: drop the ``glm.`` prefix (all keys have it, or none do: a bare ``GLMModel`` save)."""
    prefixed = [k.startswith(HUB_PREFIX) for k in state_dict]
    if any(prefixed) and not all(prefixed):
        others = sorted(k for k in state_dict if not k.startswith(HUB_PREFIX))
        raise ValueError(f"{source}: unexpected key(s) outside the '{HUB_PREFIX}' model: {others}")
    if any(prefixed):
        return {k[len(HUB_PREFIX):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def to_hub_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our full (TP=1) keys -> the hub's ``glm.``-prefixed ones (tensors unchanged, see module docstring)."""
    return {HUB_PREFIX + k: v for k, v in state_dict.items()}


def read_hub_state_dict(folder: str | os.PathLike, *, trust: bool = False) -> dict[str, torch.Tensor]:
    """The full (TP=1) state dict of a hub folder, in this project's key names; ``trust``
    (``--trust-checkpoint``) reads a ``pytorch_model.bin`` that needs more than the weights-only unpickler."""
    p = Path(folder)
    merged: dict[str, torch.Tensor] = {}
    files = _weight_files(p)
    for f in files:
        part = _read_file(f, trust)
        twice = sorted(set(part) & set(merged))
        if twice:
            raise DataError(f"{f}: key(s) {twice} also in another shard")
        merged.update(part)
    return from_hub_keys(merged, ", ".join(str(f) for f in files))


def load_hub_folder(model: torch.nn.Module, folder: str | os.PathLike, parallel_state, *,
                    trust: bool = False) -> str:
    """Load a hub folder's weights into ``model`` (this TP rank's shard), strictly; returns a description.

    The model must have been built from the folder's config (``hub_meta``), position tables possibly longer;
    any other missing or unexpected key or shape is a ValueError listing all of them."""
    from model.checkpoint_compat import load_glm_state_dict, partition_rules, shard_state_dict

    p = Path(folder)
    full = read_hub_state_dict(p, trust=trust)
    own = model.state_dict()
    for name in ("transformer.position_embeddings.weight", "transformer.block_position_embeddings.weight"):
        have, want = full.get(name), own.get(name)
        # A run with --seq-length beyond the folder's max_sequence_length: the folder's rows first, the new rows
        # keep their initialisation (GLM's load_pretrained; training.checkpoint does the same for other layouts).
        if have is not None and want is not None and have.shape[1:] == want.shape[1:] and len(have) < len(want):
            full[name] = torch.cat([have, want[len(have):].detach().cpu()])
    sd = shard_state_dict(full, parallel_state.tp_size, parallel_state.tp_rank, partition_rules(model))
    load_glm_state_dict(model, sd, strict=True, source=f"{p} (hub layout)")
    return f"{p} (Hugging Face hub layout)"


__all__ = ["is_hub_folder", "read_hub_config", "config_from_hub", "config_to_hub", "hub_tokenizer", "hub_meta",
           "read_hub_state_dict", "from_hub_keys", "to_hub_keys", "load_hub_folder", "HUB_PREFIX"]
