"""Peak CPU memory of one forward+backward of a small GLMModel at long sequences (prints JSON).

Method: every case runs in a fresh subprocess; it builds the model and the batch, records
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's peak resident set so far), runs one forward
and backward (every position scored, ``sep`` = L/2), and reports the growth of that peak: the memory the
step itself needed beyond what the model and inputs already held. torch allocations are invisible to
``tracemalloc``; the resident-set peak sees them. Not part of the test suite.
``--kernel dense split`` measures both CPU kernels for ``sep`` (``model.glm.CPU_SEP_KERNEL``).
Usage: python benchmarks/attention_memory.py [--seq 2048 4096] [--batch 1] [--layers 2] [--hidden 256]
       [--kernel dense split]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_case(seq: int, batch: int, layers: int, hidden: int, heads: int, kernel: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from model import GLMConfig, GLMModel, glm, glm_lm_loss

    glm.CPU_SEP_KERNEL = kernel

    torch.manual_seed(0)
    cfg = GLMConfig(num_layers=layers, hidden_size=hidden, num_attention_heads=heads, vocab_size=1024,
                    max_sequence_length=seq, hidden_dropout=0.0, attention_dropout=0.0)
    model = GLMModel(cfg).train()
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    pos = torch.stack([torch.arange(seq).expand(batch, seq), torch.zeros(batch, seq, dtype=torch.long)], 1)
    sep = torch.full((batch,), seq // 2)
    loss_mask = torch.ones(batch, seq)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    loss = glm_lm_loss(model(ids, pos, sep)[0], ids, loss_mask)
    loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kernel": kernel, "seq": seq, "batch": batch, "layers": layers, "hidden": hidden, "heads": heads,
            "baseline_mib": before / 1024, "peak_growth_mib": (after - before) / 1024}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kernel", nargs="+", default=["dense"], choices=["dense", "split"])
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(one_case(args.seq[0], args.batch, args.layers, args.hidden, args.heads, args.kernel[0])))
        return []
    out = []
    for seq in args.seq:
        for kernel in args.kernel:
            cmd = [sys.executable, __file__, "--case", "--seq", str(seq), "--batch", str(args.batch),
                   "--layers", str(args.layers), "--hidden", str(args.hidden), "--heads", str(args.heads),
                   "--kernel", kernel]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
