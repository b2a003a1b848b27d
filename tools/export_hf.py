"""Export a checkpoint to a Hugging Face Transformers folder (GLM's hub layout + this project's model classes).

    python tools/export_hf.py CHECKPOINT OUT [--model-config JSON --tokenizer-model FILE.model] [--overwrite]

CHECKPOINT is anything ``--load-pretrained`` takes (our save / tag directory at any TP size, ZeRO-3
partitions, GLM / SAT layouts, a released ``.pt``; the last ones need ``--model-config`` and
``--tokenizer-model``). It is loaded strictly into a TP=1 model, which merges tensor-parallel shards. OUT gets

    config.json              GLM's hub fields, model_type "mglm", auto_map, the tokenizer's ids for fill_blank
    model.safetensors        the weights under GLM's hub key names (glm.word_embeddings.weight, ...)
    tokenizer.model          the sentencepiece model; added_tokens.json: the command tokens' ids;
    tokenizer_config.json    the same for AutoTokenizer (tokenization_mglm.MGLMTokenizer)
    configuration_mglm.py    the Transformers classes (copied from model/hf_export/), loaded with
    modeling_mglm.py         trust_remote_code=True: AutoModel -> logits, AutoModelForSeq2SeqLM -> fill_blank,
    tokenization_mglm.py     AutoTokenizer -> MGLMTokenizer
    README.md                how to use the folder

Neither Transformers nor the mglm code is needed to write it; reading it back needs Transformers (or this
project: ``--load-pretrained OUT``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.errors import UsageError, run_cli  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "model" / "hf_export"
TOKENIZER_FILE = "tokenizer.model"
AUTO_MAP = {"AutoConfig": "configuration_mglm.MGLMConfig", "AutoModel": "modeling_mglm.MGLMModel",
            "AutoModelForSeq2SeqLM": "modeling_mglm.MGLMForConditionalGeneration"}

USAGE = """# {name}

A GLM model exported by mglm's `tools/export_hf.py` (model type `mglm`; GLM's hub key layout).

```python
import torch
from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{name}", trust_remote_code=True)     # sentencepiece + GLM command tokens
model = AutoModelForSeq2SeqLM.from_pretrained("{name}", trust_remote_code=True).eval()
context = tok("[CLS] Paris is the capital of [MASK]. <|endoftext|>")["input_ids"]
span = model.fill_blank(context, max_new_tokens=16, num_beams=4)           # greedy: num_beams=1
print(tok.decode(span))
logits = AutoModel.from_pretrained("{name}", trust_remote_code=True)(torch.tensor([context])).logits
```

No token is added automatically: a blank-filling context is `[CLS] text-with-[MASK] <|endoftext|>`
(`[sMASK]` for a sentence, `[gMASK]` for a long span, then no `<|endoftext|>`). `added_tokens.json` lists
the command-token ids for use without Transformers (`tokenizer.model` is a plain sentencepiece model).
`forward(input_ids, position_ids [B, 2, L], attention_mask)`: `attention_mask` is GLM's `sep` [B] (the first
`sep` tokens attend to each other, the rest causally) or a full [B, 1, L, L] mask; the default is causal
(sep 0) with positions 0..L-1 and block positions 0. GELU is the tanh approximation GLM was trained with.
Back into mglm: `--load-pretrained {name}`.
"""


def tokenizer_config(tokenizer) -> dict:
    """``tokenizer_config.json`` for ``tokenization_mglm.MGLMTokenizer``: the command tokens at their ids."""
    decoder = {str(c.id): {"content": c.token, "special": True, "lstrip": c.lstrip, "rstrip": False,
                           "normalized": False, "single_word": False} for c in tokenizer.command_tokens}
    named = {"eos_token": "eos", "pad_token": "eos", "cls_token": "cls", "mask_token": "MASK", "sep_token": "sep",
             "unk_token": "unk"}
    special = {key: tokenizer.get_command(name).token for key, name in named.items()}
    roles = set(special.values())
    return {"tokenizer_class": "MGLMTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_mglm.MGLMTokenizer", None]},
            "added_tokens_decoder": decoder, **special,
            "additional_special_tokens": [c.token for c in tokenizer.command_tokens if c.token not in roles],
            "clean_up_tokenization_spaces": False, "model_max_length": 10**9}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/export_hf.py", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint (anything --load-pretrained takes)")
    p.add_argument("out", help="output folder")
    p.add_argument("--model-config", help="model JSON, for checkpoints without meta.json (released .pt, GLM's)")
    p.add_argument("--tokenizer-model", help="sentencepiece .model (default: the one the checkpoint records)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing OUT folder")
    return p


def export(checkpoint: str, out: str, model_config: str | None = None, tokenizer_model: str | None = None,
           overwrite: bool = False) -> Path:
    """Write the Transformers folder ``out`` for ``checkpoint``; returns its path."""
    from safetensors.torch import save_file

    from model import GLMConfig, GLMModel
    from model.generation import SpecialTokens
    from model.hf_compat import config_to_hub, to_hub_keys
    from mpu import ParallelState
    from training import checkpoint as ckpt
    from training.setup import checkpoint_tokenizer

    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise UsageError(f"{out_dir} exists and is not empty; pass --overwrite to replace its files")
    meta = ckpt.pretrained_meta(checkpoint) or {}
    if model_config:
        config = GLMConfig.from_json_file(model_config)
    elif "model_config" in meta:
        config = GLMConfig.from_dict(dict(meta["model_config"]), source=f"{checkpoint} meta.json")
    else:
        raise UsageError(f"{checkpoint} has no meta.json with the model config; pass --model-config JSON")
    tokenizer = checkpoint_tokenizer(tokenizer_model, meta, f"{checkpoint} meta.json")  # [dBLOCK] as recorded
    tok_path = Path(tokenizer.model_path)
    if config.vocab_size < len(tokenizer):
        raise ValueError(f"the model's vocab_size {config.vocab_size} is smaller than the tokenizer {tok_path} "
                         f"({len(tokenizer)} ids): not the tokenizer this model was trained with")
    model = GLMModel(config, ParallelState.single())
    ckpt.load_pretrained(model, checkpoint, ParallelState.single())  # strict; merges TP shards
    state = {k: v.detach().contiguous() for k, v in to_hub_keys(model.state_dict()).items()}

    special = SpecialTokens.from_tokenizer(tokenizer)
    hub = {
        "architectures": ["MGLMForConditionalGeneration"], "model_type": "mglm", "auto_map": AUTO_MAP,
        **config_to_hub(config),
        "sop_token_id": special.sop_id, "end_token_ids": list(special.end_ids),
        "mask_token_ids": list(special.mask_ids), "banned_token_ids": list(special.banned_ids),
        "generatable_vocab_size": special.vocab_limit, "torch_dtype": "float32",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hub, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(tok_path, out_dir / TOKENIZER_FILE)
    commands = {c.token: c.id for c in tokenizer.command_tokens}
    (out_dir / "added_tokens.json").write_text(json.dumps(commands, indent=2) + "\n", encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(tokenizer), indent=2) + "\n",
                                                   encoding="utf-8")
    for name in ("configuration_mglm.py", "modeling_mglm.py", "tokenization_mglm.py"):
        shutil.copyfile(TEMPLATE / name, out_dir / name)
    (out_dir / "README.md").write_text(USAGE.format(name=out_dir.name), encoding="utf-8")
    return out_dir


def main(argv: list[str] | None = None) -> dict:
    a = build_parser().parse_args(argv)
    out = export(a.checkpoint, a.out, a.model_config, a.tokenizer_model, a.overwrite)
    print(f"wrote {out} (load with AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True) or "
          f"--load-pretrained {out})")
    return {"out": str(out)}


if __name__ == "__main__":
    run_cli(main, "export_hf.py")
