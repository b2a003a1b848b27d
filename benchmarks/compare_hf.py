"""Side by side with Hugging Face GPT-2 at the same dimensions, interleaved in one process (prints JSON).

    python benchmarks/compare_hf.py [--cases 'decode/*/b8' ...] [--repeats 3] [--out FILE] [--quick]

Cases (fp32, random weights, no download; ``--cases`` takes shell patterns of these names):

- ``train/small``  4 layers / hidden 256 / 4 heads / seq 256 / batch 8 / vocab 32000
- ``train/base``  12 layers / hidden 512 / 8 heads / seq 512 / batch 4 / vocab 32000
  one training step: forward, backward, AdamW, dropout 0, every position scored (GPT-2's shifted LM loss;
  ours: ``glm_lm_loss`` with loss mask 1, Part A = first half). Both counted with the same model FLOPs
  per token, ``model_flops_per_token`` = 72 L h^2 + 12 L s h + 6 V h, and reported as a fraction of
  this process's 2048^3 fp32 matmul rate.
- ``decode/{greedy,sample,beam}/b{1,8,32}``  4 layers / hidden 256, a 512-token context, 64 new tokens
  with the KV cache, no end token (both generate exactly 64 tokens per row); beam = 5 beams; sampling is
  plain (temperature 1, no top-k / top-p). Ours: ``model.generation.generate`` filling a blank in the
  middle of the context; GPT-2: ``GPT2LMHeadModel.generate`` continuing the same ids.

Each repetition times ours and GPT-2 back to back (the order alternates), after one untimed warm-up of
each; ``ratio`` = median(ours) / median(GPT-2): below 1 we are faster. ``--quick`` shrinks every shape
(2 layers / hidden 64 / vocab 512; a 16-token context, 4 new tokens, batches 1 and 2) for a smoke test.
Transformers is needed only here (``pip install transformers``), not by the project.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.generation import decoding_model, random_contexts  # noqa: E402
from benchmarks.model_step import matmul_flops, train_step  # noqa: E402
from model import GLMConfig  # noqa: E402
from model.glm import model_flops_per_token  # noqa: E402


@dataclass(frozen=True)
class Dims:
    """Model dimensions shared by both sides."""

    layers: int
    hidden: int
    heads: int
    vocab: int = 32000

    def glm(self, max_length: int) -> GLMConfig:
        return GLMConfig(num_layers=self.layers, hidden_size=self.hidden, num_attention_heads=self.heads,
                         vocab_size=self.vocab, max_sequence_length=max_length, hidden_dropout=0.0,
                         attention_dropout=0.0)

    def gpt2(self, max_length: int):
        from transformers import GPT2Config

        # No bos / eos: GPT-2's defaults (50256) lie outside a 32000 vocabulary.
        return GPT2Config(vocab_size=self.vocab, n_positions=max_length, n_embd=self.hidden, n_layer=self.layers,
                          n_head=self.heads, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=0,
                          loss_type="ForCausalLM")


@dataclass(frozen=True)
class TrainCase:
    dims: Dims
    seq: int
    batch: int


@dataclass(frozen=True)
class DecodeCase:
    dims: Dims
    mode: str  # greedy | sample | beam
    batch: int
    context: int
    new_tokens: int
    num_beams: int = 5


def cases(quick: bool) -> dict[str, TrainCase | DecodeCase]:
    if quick:
        tiny = Dims(2, 64, 4, 512)
        train = {"small": TrainCase(tiny, 32, 2), "base": TrainCase(Dims(2, 64, 4, 512), 64, 1)}
        context, new, batches, dec = 16, 4, (1, 2), tiny
    else:
        train = {"small": TrainCase(Dims(4, 256, 4), 256, 8), "base": TrainCase(Dims(12, 512, 8), 512, 4)}
        context, new, batches, dec = 512, 64, (1, 8, 32), Dims(4, 256, 4)
    out: dict[str, TrainCase | DecodeCase] = {f"train/{k}": v for k, v in train.items()}
    for mode in ("greedy", "sample", "beam"):
        for b in batches:
            out[f"decode/{mode}/b{b}"] = DecodeCase(dec, mode, b, context, new)
    return out


def hf_train_step(case: TrainCase) -> Callable[[], None]:
    """GPT-2's training step at the same shape: forward with its LM loss, backward, AdamW."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(case.dims.gpt2(case.seq)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, case.dims.vocab, (case.batch, case.seq))

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


class DecodePair:
    """Both decoders at one set of dimensions (built once, shared by every decoding case)."""

    def __init__(self, dims: Dims, max_length: int) -> None:
        from transformers import GPT2LMHeadModel

        self.model, self.special = decoding_model(dims.glm(max_length), max_length)
        torch.manual_seed(0)
        self.hf = GPT2LMHeadModel(dims.gpt2(max_length)).eval()

    def steps(self, case: DecodeCase) -> tuple[Callable[[], None], Callable[[], None]]:
        from model.generation import GenerationConfig, generate

        ctx = random_contexts(self.special, case.batch, case.context, torch.Generator().manual_seed(case.batch))
        ids = torch.tensor(ctx)
        beams = case.num_beams if case.mode == "beam" else 1
        sample = case.mode == "sample"
        conf = GenerationConfig(max_new_tokens=case.new_tokens, do_sample=sample, num_beams=beams)
        extra = {"top_k": 0, "top_p": 1.0, "temperature": 1.0} if sample else {}

        def ours() -> None:
            out = generate(self.model, self.special, ctx, conf)
            assert all(len(r[0].tokens) == case.new_tokens for r in out), "ours stopped early"

        def theirs() -> None:
            with torch.no_grad():
                out = self.hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=case.new_tokens,
                                       min_new_tokens=case.new_tokens, do_sample=sample, num_beams=beams,
                                       num_return_sequences=1, use_cache=True, **extra)
            assert out.shape == (case.batch, case.context + case.new_tokens), "GPT-2 stopped early"

        return ours, theirs


def interleaved(ours: Callable[[], None], theirs: Callable[[], None], repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of each call, ours and theirs back to back ``repeats`` times (order alternating), after one
    untimed warm-up call of each."""
    ours()
    theirs()
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for r in range(repeats):
        order = [("ours", ours), ("theirs", theirs)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times["ours"], times["theirs"]


def run(selected: dict[str, TrainCase | DecodeCase], repeats: int, matmul_n: int) -> dict:
    import transformers

    mm = matmul_flops(matmul_n)
    out = {"benchmark": "compare_hf", "torch": torch.__version__, "transformers": transformers.__version__,
           "threads": torch.get_num_threads(), "repeats": repeats, "matmul_n": matmul_n, "matmul_flops": mm,
           "cases": {}}
    pairs: dict[tuple[Dims, int], DecodePair] = {}
    for name, case in selected.items():
        entry: dict = {"kind": "train" if isinstance(case, TrainCase) else "decode", **asdict(case)}
        if isinstance(case, TrainCase):
            cfg = case.dims.glm(case.seq)
            ours, theirs = train_step(cfg, case.seq, case.batch), hf_train_step(case)
        else:
            key = (case.dims, case.context + case.new_tokens + 1)  # + the [sop] of the blank
            if key not in pairs:
                pairs[key] = DecodePair(*key)
            ours, theirs = pairs[key].steps(case)
        t_ours, t_hf = interleaved(ours, theirs, repeats)
        m_ours, m_hf = statistics.median(t_ours), statistics.median(t_hf)
        entry.update(ours_s=m_ours, hf_s=m_hf, ratio=m_ours / m_hf, ours_times=t_ours, hf_times=t_hf)
        if isinstance(case, TrainCase):
            flops = model_flops_per_token(cfg, case.seq) * case.seq * case.batch  # the same count for both
            entry.update(model_flops_per_step=flops, ours_matmul_fraction=flops / m_ours / mm,
                         hf_matmul_fraction=flops / m_hf / mm)
        else:
            n = case.batch * case.new_tokens
            entry.update(ours_tokens_per_s=n / m_ours, hf_tokens_per_s=n / m_hf)
        out["cases"][name] = entry
        print(f"{name}: ours {m_ours:.3f}s  gpt2 {m_hf:.3f}s  ratio {m_ours / m_hf:.2f}", file=sys.stderr, flush=True)
    out["matmul_flops_after"] = matmul_flops(matmul_n)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["*"], help="shell patterns of case names (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each side per case (default 3)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    a = p.parse_args(argv)
    try:
        import transformers
    except ImportError:
        sys.exit("compare_hf.py needs Hugging Face transformers, an optional dependency of this benchmark only: "
                 "pip install transformers")
    transformers.logging.set_verbosity_error()
    if a.repeats < 1:
        sys.exit(f"--repeats {a.repeats}: expected >= 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    all_cases = cases(a.quick)
    selected = {k: v for k, v in all_cases.items() if any(fnmatch.fnmatchcase(k, pat) for pat in a.cases)}
    if not selected:
        sys.exit(f"--cases {' '.join(a.cases)} matches none of: {', '.join(all_cases)}")
    out = run(selected, a.repeats, 256 if a.quick else 2048)
    out["quick"] = a.quick
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
