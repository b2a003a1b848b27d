"""Reshard a DeepSpeed-layout checkpoint between tensor-parallel sizes (e.g. 1 <-> 2 <-> 4).

Input:  <ckpt>/latest (holding the tag) and <ckpt>/<tag>/mp_rank_XX_model_states.pt (model under ``module``).
Output: <out>/<tag>/mp_rank_YY_model_states.pt for the target size, plus <out>/latest.
Model tensors are split/merged along the dimension and stride each parameter is tagged with by ``mpu.layers``
(``model.checkpoint_compat.glm_partition_rules``; QKV 3-way interleave included);
other keys are kept with ``mp_world_size`` updated; optimizer / ZeRO state is dropped (it cannot be resharded
here) with a warning.

The source files are verified against their ``meta.json`` (our checkpoints) and read weights-only
(``--trust-checkpoint`` vouches for a file that needs more); the output's ``meta.json`` records its own files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as ``python tools/X.py`` from any directory: the root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import safe_load
from model.checkpoint_compat import glm_partition_rules, merge_state_dicts, shard_state_dict
from training import checkpoint as ckpt

_DROPPED = ("optimizer",)


def read_tag(ckpt_dir: Path) -> str:
    tag = ckpt.read_tracker(ckpt_dir)
    if tag is None:
        raise FileNotFoundError(f"{ckpt_dir}: no '{ckpt.LATEST}' tracker file; pass --tag")
    return tag


def change_mp(ckpt_dir: str | Path, target_tp: int, out_dir: str | Path | None = None,
              tag: str | None = None, trust: bool = False) -> Path:
    """Write the resharded checkpoint and return the output directory."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory {ckpt_dir} does not exist")
    tag = tag or read_tag(ckpt_dir)
    tag_dir = ckpt_dir / tag
    if not tag_dir.is_dir():
        raise FileNotFoundError(f"{tag_dir} does not exist (tag {tag!r})")
    files = list(enumerate(ckpt.model_state_files(tag_dir)))
    if not files:
        raise FileNotFoundError(f"{tag_dir}: no {ckpt.MODEL_STATES_GLOB} files")
    names = [p.name for _, p in files]
    if names != [ckpt.model_states_name(r) for r in range(len(files))]:
        raise FileNotFoundError(f"{tag_dir}: model-state files {names} are not ranks 0..{len(files) - 1}")
    source_tp = len(files)
    if target_tp < 1 or (source_tp % target_tp and target_tp % source_tp):
        raise ValueError(f"cannot reshard from TP={source_tp} to TP={target_tp}: one must divide the other")
    out_dir = Path(out_dir) if out_dir else ckpt_dir.with_name(f"{ckpt_dir.name}_MP{target_tp}")

    ckpt.verify_tag_dir(tag_dir, [p.name for _, p in files], what="change_mp")
    states = [safe_load.load(p, trust=trust) for _, p in files]
    for (_, p), s in zip(files, states, strict=True):
        if not isinstance(s, dict) or "module" not in s:
            raise ValueError(f"{p}: expected a dict with a 'module' state dict")
    # The split of each tensor: the tags of a TP=1 GLMModel with these keys (mpu.layers sets them).
    rules = glm_partition_rules(states[0]["module"].keys())
    full = merge_state_dicts([s["module"] for s in states], rules)
    dropped = sorted(k for k in states[0] if k in _DROPPED and states[0][k] is not None)
    if dropped:
        print(f"warning: dropping {dropped} from the checkpoint (optimizer state cannot be resharded)",
              file=sys.stderr)
    zero_files = sorted(p.name for p in tag_dir.glob("*optim_states.pt"))
    if zero_files:
        print(f"warning: not copying ZeRO optimizer shards {zero_files}", file=sys.stderr)

    target_dir = out_dir / tag
    target_dir.mkdir(parents=True, exist_ok=True)
    for r in range(target_tp):
        out = {k: v for k, v in states[0].items() if k != "module"}
        for k in _DROPPED:
            if k in out:
                out[k] = None
        out["module"] = shard_state_dict(full, target_tp, r, rules)
        out["mp_world_size"] = target_tp
        torch.save(out, target_dir / ckpt.model_states_name(r))
    if (tag_dir / ckpt.META).is_file():  # our checkpoints describe themselves: keep that true for the new TP size
        import json

        meta = ckpt.read_meta(ckpt_dir, tag)
        # No optimizer state (it cannot be resharded) and no RNG files (per-TP-rank streams do not map to
        # another TP size): a resume says so. ``files`` records what this directory holds.
        meta.update(tp_size=target_tp, resharded_from={"dir": str(ckpt_dir), "tp_size": source_tp},
                    optimizer_state=False, rng_state=False,
                    files=ckpt.file_records(target_dir, [ckpt.model_states_name(r) for r in range(target_tp)]))
        (target_dir / ckpt.META).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    (out_dir / ckpt.LATEST).write_text(tag)
    return out_dir


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt_dir", help="checkpoint folder to reshard (the --save of a run, holding `latest`)")
    parser.add_argument("target_tp", type=int, help="tensor-parallel size to write (it or the source size must divide the other)")
    parser.add_argument("--out", default=None, help="output directory (default: <ckpt_dir>_MP<target>)")
    parser.add_argument("--tag", default=None, help="checkpoint tag (default: read from <ckpt_dir>/latest)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="you vouch for the files: read them with the full unpickler (can run code) when a "
                             "weights-only load refuses them")
    args = parser.parse_args(argv)
    out = change_mp(args.ckpt_dir, args.target_tp, args.out, args.tag, trust=args.trust_checkpoint)
    print(f"wrote {out}")
    return {"out_dir": str(out), "target_tp": args.target_tp}


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main, "change_mp.py")
