"""Decoding throughput: KV-cached incremental decoding vs re-encoding the whole sequence every step.

    python benchmarks/generation.py [--context 512] [--new-tokens 64] [--batch-sizes 1 4] [--device cpu]

glm-small (4 layers, hidden 256, 4 heads, vocab 32000) with max_sequence_length raised to fit
context + new tokens; random weights; greedy; no end token, so every run generates exactly
``--new-tokens`` tokens per row. Prints one JSON object: tokens/s of both paths per batch size and the ratio
(cached / uncached), measured in this run. Generated tokens are checked to agree between the two paths.
``--compile``: also the cached path with the model under ``torch.compile`` (a second copy, same weights),
timed alternately with the eager cached path after one warm-up decode of each batch size; reports
compiled/eager time and the warm-up (compilation) time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere


def decoding_model(cfg, max_length: int, device: str = "cpu"):
    """``(GLMModel in eval mode, SpecialTokens)`` for timing decoding: random weights (seed 1), the position
    table raised to ``max_length``, and no reachable end token (ids beyond V are never generated), so every
    run decodes exactly the requested number of tokens. ``sop`` = V-3, the mask token V-2."""
    from model import GLMModel
    from model.generation import SpecialTokens

    cfg.max_sequence_length = max(cfg.max_sequence_length, max_length)
    model = GLMModel(cfg, init_seed=1).to(device).eval()
    V = cfg.vocab_size
    return model, SpecialTokens(sop_id=V - 3, end_ids=(V + 1,), mask_ids=(V - 2,), vocab_limit=V - 4)


def random_contexts(special, batch: int, length: int, generator: torch.Generator) -> list[list[int]]:
    """``batch`` random contexts of ``length`` text ids (< the vocabulary limit), the mask token in the middle."""
    rows = torch.randint(0, special.vocab_limit, (batch, length), generator=generator).tolist()
    for r in rows:
        r[length // 2] = special.mask_ids[0]
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-config", default=str(REPO / "config/model/glm-small.json"))
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="also time the cached path under torch.compile")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from model import GLMConfig
    from model.generation import GenerationConfig, generate

    model, special = decoding_model(GLMConfig.from_json_file(a.model_config), a.context + a.new_tokens, a.device)
    g = torch.Generator().manual_seed(0)

    def contexts(b: int) -> list[list[int]]:
        return random_contexts(special, b, a.context, g)

    compiled = None
    if a.compile:
        compiled = decoding_model(GLMConfig.from_json_file(a.model_config), a.context + a.new_tokens, a.device)[0]
        compiled.compile()

    def timed(ctx, use_cache: bool, net=model) -> tuple[float, list]:
        conf = GenerationConfig(max_new_tokens=a.new_tokens, use_cache=use_cache)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = generate(net, special, ctx, conf)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, [r[0].tokens for r in out]

    generate(model, special, contexts(1), GenerationConfig(max_new_tokens=4))  # warm-up
    results = {}
    for b in a.batch_sizes:
        ctx = contexts(b)
        t_cached, tok_cached = timed(ctx, True)
        t_full, tok_full = timed(ctx, False)
        n = b * a.new_tokens
        results[f"batch_{b}"] = {
            "cached_tokens_per_s": n / t_cached, "uncached_tokens_per_s": n / t_full,
            "speedup": t_full / t_cached, "cached_s": t_cached, "uncached_s": t_full,
            "same_tokens": tok_cached == tok_full,
        }
        if compiled is not None:
            warm, _ = timed(ctx, True, compiled)
            pairs = [(timed(ctx, True)[0], timed(ctx, True, compiled)) for _ in range(2)]
            t_eager = min(p[0] for p in pairs)
            t_comp = min(p[1][0] for p in pairs)
            results[f"batch_{b}"].update({"compiled_over_eager": t_comp / t_eager, "compile_warmup_s": warm,
                                          "compiled_same_tokens": pairs[0][1][1] == tok_cached})
    out = {"benchmark": "generation", "model": Path(a.model_config).name, "context": a.context,
           "new_tokens": a.new_tokens, "device": a.device, "threads": torch.get_num_threads(), "results": results}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
