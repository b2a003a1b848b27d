"""GLMConfig: the model's hyperparameters, with the field names of the reference GLMModel constructor."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# Python types a JSON value may have for a field annotated with this type (bool is not an int here).
_JSON_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,)}


def _check_type(source: str, name: str, annotation: str, value: Any) -> None:
    """DataError ``<source>: field 'x': expected int, got 'two' (str)`` unless ``value`` fits the annotation
    (``int``, ``float``, ``bool``, optionally ``| None``)."""
    from common.errors import DataError

    kinds = [k.strip() for k in annotation.split("|")]
    if value is None and "None" in kinds:
        return
    for k in kinds:
        ok = _JSON_TYPES.get(k)
        if ok is not None and isinstance(value, ok) and (k == "bool" or not isinstance(value, bool)):
            return
    expected = " or ".join("null" if k == "None" else k for k in kinds)
    raise DataError(f"{source}: field {name!r}: expected {expected}, got {value!r} ({type(value).__name__})")


@dataclass
class GLMConfig:
    """Architecture of a GLM / mGLM decoder.

    ``max_sequence_length`` is the GLM ``--max-position-embeddings``: the position and block-position tables
    have ``max_sequence_length + 1`` rows (the GLM layout; mGLM: 1024 -> 1025 rows, equal to SAT's table).
    ``vocab_size`` is the padded vocabulary; it must divide by the TP size (tokenizers pad new models to a
    multiple of 128 * TP, as GLM does; a released table such as mGLM's 250112 is kept as is at any TP size
    that divides it). Pretraining may override it from the tokenizer. ``intermediate_size`` defaults to
    4 * hidden_size.
    ``attention_scale`` is GLM's fp16-range trick (scores computed as (q/sqrt(s)) (k/sqrt(D s))^T, row max
    subtracted, times s): the softmax is invariant to a per-row shift, so it equals softmax(q k^T / sqrt(D))
    exactly in real arithmetic. Attention here runs through ``scaled_dot_product_attention``, whose softmax
    accumulates in fp32, so the field is kept only for config / checkpoint compatibility and changes nothing.
    """

    num_layers: int = 2
    vocab_size: int = 1024
    hidden_size: int = 64
    num_attention_heads: int = 4
    max_sequence_length: int = 512
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layernorm_epsilon: float = 1e-5
    init_method_std: float = 0.02
    checkpoint_activations: bool = False
    checkpoint_num_layers: int = 1
    block_position_encoding: bool = True
    max_memory_length: int = 0
    attention_scale: float = 1.0
    parallel_output: bool = True
    intermediate_size: int | None = None

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_table_rows(self) -> int:
        return self.max_sequence_length + 1 if self.block_position_encoding else self.max_sequence_length

    # ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "<dict>") -> GLMConfig:
        """Build from a dict; unknown keys are an error naming the key and ``source``."""
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise ValueError(f"{source}: unknown GLMConfig key(s) {unknown}; expected a subset of {sorted(known)}")
        for name, value in values.items():
            _check_type(source, name, str(known[name]), value)
        return cls(**values)

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json_file(cls, path: str | Path) -> GLMConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model config {path} does not exist")
        from common.errors import read_json_object

        return cls.from_dict(read_json_object(path, "model config"), source=str(path))

    def validate(self, tensor_parallel_size: int = 1, seq_length: int | None = None) -> GLMConfig:
        """Raise ValueError naming the field when the config cannot build a model at this TP size."""
        tp = tensor_parallel_size
        for name in ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "max_sequence_length",
                     "checkpoint_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"GLMConfig.{name}={getattr(self, name)} must be >= 1")
        if tp < 1:
            raise ValueError(f"tensor_parallel_size={tp} must be >= 1")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % tp:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not divisible by "
                             f"tensor_parallel_size={tp}")
        if self.ffn_size % tp:
            raise ValueError(f"intermediate size {self.ffn_size} is not divisible by tensor_parallel_size={tp}")
        # Each rank holds V/p rows, so V must split evenly; the multiple of 128 (* TP) that tokenizers pad to is
        # for speed only. Released tables (mGLM: 250112 = 2^8 * 977) must also load at TP 4 and 8.
        if self.vocab_size % tp:
            raise ValueError(f"vocab_size={self.vocab_size} is not divisible by tensor_parallel_size={tp} "
                             "(pad the tokenizer vocabulary, e.g. to a multiple of 128 * tensor_parallel_size)")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"GLMConfig.{name}={getattr(self, name)} must be in [0, 1)")
        if self.layernorm_epsilon <= 0 or self.init_method_std <= 0:
            raise ValueError("GLMConfig.layernorm_epsilon and init_method_std must be > 0")
        if self.max_memory_length < 0:
            raise ValueError(f"GLMConfig.max_memory_length={self.max_memory_length} must be >= 0")
        if self.attention_scale < 1.0:
            raise ValueError(f"GLMConfig.attention_scale={self.attention_scale} must be >= 1")
        if seq_length is not None and seq_length > self.max_sequence_length:
            raise ValueError(f"seq_length={seq_length} exceeds max_sequence_length={self.max_sequence_length} "
                             "(position table too small)")
        return self


class ModelFlags(Protocol):
    """The model flags a run was given (``training.arguments.ModelArgs``); None = not given."""

    model_config: str | None
    num_layers: int | None
    hidden_size: int | None
    num_attention_heads: int | None
    max_position_embeddings: int | None
    hidden_dropout: float | None
    attention_dropout: float | None
    checkpoint_activations: bool
    checkpoint_num_layers: int


def build_model_config(flags: ModelFlags, vocab_size: int, *, seq_length: int, tensor_parallel_size: int,
                       base_config: dict | None = None) -> GLMConfig:
    """GLMConfig from ``--model-config`` (else ``base_config``, e.g. a checkpoint's recorded config), the model
    flags overriding its fields, and the tokenizer's padded vocabulary.

    The position table is never grown behind the user's back: ``--max-position-embeddings`` when given (also
    above a pretrained checkpoint's table, whose rows are then copied into the first rows), else the config's
    ``max_sequence_length``; a ``seq_length`` above it is a UsageError naming both numbers."""
    from common.errors import UsageError

    m = flags
    if m.model_config:
        base = GLMConfig.from_json_file(m.model_config).to_dict()
        origin = m.model_config
    elif base_config:
        base = dict(base_config)
        origin = "the checkpoint's meta.json"
    else:
        base = {}
        origin = "GLMConfig's default; no --model-config"
    overrides = {
        "num_layers": m.num_layers, "hidden_size": m.hidden_size, "num_attention_heads": m.num_attention_heads,
        "max_sequence_length": m.max_position_embeddings, "hidden_dropout": m.hidden_dropout,
        "attention_dropout": m.attention_dropout,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    base["vocab_size"] = vocab_size
    if m.checkpoint_activations:
        base["checkpoint_activations"] = True
        base["checkpoint_num_layers"] = m.checkpoint_num_layers
    where = m.model_config or ("the checkpoint's model_config" if base_config else "the model flags")
    config = GLMConfig.from_dict(base, source=where)  # its errors name the source already
    seq, positions = seq_length, config.max_sequence_length
    if seq > positions:
        if m.max_position_embeddings is not None:
            raise UsageError(f"--seq-length {seq} exceeds --max-position-embeddings {positions}; raise "
                             f"--max-position-embeddings to at least {seq} or lower --seq-length")
        if base_config and not m.model_config:
            raise UsageError(f"--seq-length {seq} exceeds the {positions} positions of the pretrained model "
                             f"({origin}); lower --seq-length, or pass --max-position-embeddings {seq} to grow "
                             f"its position table (rows past {positions} start untrained)")
        raise UsageError(f"--seq-length {seq} exceeds the model's {positions} positions ({origin}); to train "
                         f"from scratch with longer sequences pass --max-position-embeddings {seq} (or set "
                         f"max_sequence_length in the model config), or lower --seq-length")
    try:
        config.validate(tensor_parallel_size, seq_length=seq)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return config
