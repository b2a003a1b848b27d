"""Blank filling with a (multilingual) GLM checkpoint, interactively or over a file of prompts.

    python generate_samples.py --load checkpoints/run1                       # interactive, greedy
    python generate_samples.py --load run1 --top-k 40 --top-p 0.9 --temperature 0.8 --seed 3
    python generate_samples.py --load run1 --num-beams 4 --length-penalty 1 --no-repeat-ngram-size 3 \\
        --input-file prompts.txt --output-file filled.jsonl
    python generate_samples.py --load-pretrained mglm-1b/pretrained.pt --model-config config/model/mglm-1b.json \\
        --tokenizer-model mglm250k-uni.model
    torchrun --nproc_per_node 2 generate_samples.py --model-parallel-size 2 --load run1 ...

A prompt is text with ``[MASK]`` (a short span), ``[sMASK]`` (a sentence) or ``[gMASK]`` (a long span /
continuation) blanks; they are filled left to right, each seeing the spans filled before it. A prompt
without any mask is continued: `` [gMASK]`` is appended (GLM's behaviour). An unknown mask-like token such
as ``[XMASK]`` is an error naming it. Decoding: beam search with ``--num-beams > 1``; sampling with
``--sample`` or any of ``--top-k`` / ``--top-p`` > 0; greedy otherwise.

Interactive mode reads one prompt per line from stdin and stops at end of input (Ctrl-D) or an empty
line; greedy / sampled tokens are printed as they are produced, a beam-searched blank when it is done;
then the filled text. File mode (``--input-file``) writes one JSON object per prompt (``prompt``,
``filled``, ``spans``, ``scores``) to ``--output-file`` (or stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common.errors import ArgumentParser

PROG = "generate_samples.py"


def build_parser() -> argparse.ArgumentParser:
    from training.arguments import DefaultsHelpFormatter

    p = ArgumentParser(prog=PROG, description="GLM blank filling from a checkpoint",
                       formatter_class=DefaultsHelpFormatter)
    src = p.add_argument_group("model")
    src.add_argument("--load", help="checkpoint directory saved by pretrain_glm.py / finetune_glm.py (reads "
                                    "<tag>/meta.json for the model config and tokenizer)")
    src.add_argument("--load-pretrained", help="released weights (.pt file or a directory of mp_rank_XX files; "
                                               "needs --model-config and --tokenizer-model), or a Hugging Face "
                                               "hub folder (config.json + weights + sentencepiece file)")
    src.add_argument("--trust-checkpoint", action="store_true",
                     help="you vouch for the weights file: read it with the full unpickler (can run code) when a "
                          "weights-only load refuses it")
    src.add_argument("--model-config", help="model JSON (config/model/*.json)")
    src.add_argument("--tokenizer-model", help="sentencepiece .model (overrides the one recorded in meta.json)")
    src.add_argument("--make-vocab-size-divisible-by", type=int, default=128, metavar="N",
                     help="--load-pretrained: the checkpoint's embedding rows must be the tokenizer padded to a "
                          "multiple of N x the tensor-parallel size (as in pretraining)")
    src.add_argument("--model-parallel-size", type=int, default=1, metavar="N",
                     help="tensor-parallel size (start one process per rank, e.g. with torchrun)")
    src.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    io = p.add_argument_group("input / output")
    io.add_argument("--input-file", help="one prompt per line (default: interactive, stdin)")
    io.add_argument("--output-file", help="JSONL output for --input-file (default: stdout)")
    io.add_argument("--no-stream", action="store_true", help="interactive: print only the filled text")
    g = p.add_argument_group("decoding")
    g.add_argument("--out-seq-length", type=int, default=64, help="max tokens per blank (end token included)")
    g.add_argument("--min-tgt-length", type=int, default=0, help="min tokens per blank before it may end")
    g.add_argument("--sample", action="store_true", help="sample (also implied by --top-k / --top-p > 0)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="X", help="sampling: divide the logits by this")
    g.add_argument("--top-k", type=int, default=0, metavar="N",
                   help="sampling: keep the N most probable tokens (0 = all)")
    g.add_argument("--top-p", type=float, default=0.0, metavar="X",
                   help="sampling: keep the smallest set of tokens with probability >= X (0 = all)")
    g.add_argument("--seed", type=int, default=1234, metavar="N", help="sampling seed")
    g.add_argument("--num-beams", type=int, default=1, metavar="N", help="beam search with N beams (1 = greedy)")
    g.add_argument("--length-penalty", type=float, default=1.0, metavar="X",
                   help="beam search: score = sum of log-probs / length**X")
    g.add_argument("--no-repeat-ngram-size", type=int, default=0, metavar="N",
                   help="never repeat an n-gram of this size within a blank (0 = off)")
    g.add_argument("--candidates", type=int, default=0, metavar="K",
                   help="also show the K likeliest first tokens of each blank with their probabilities")
    return p


def _generation_config(a: argparse.Namespace):
    from model.generation import GenerationConfig

    return GenerationConfig(
        max_new_tokens=a.out_seq_length, min_new_tokens=a.min_tgt_length,
        do_sample=a.sample or a.top_k > 0 or a.top_p > 0, temperature=a.temperature, top_k=a.top_k,
        top_p=a.top_p, num_beams=a.num_beams, length_penalty=a.length_penalty,
        no_repeat_ngram_size=a.no_repeat_ngram_size, seed=a.seed).validate()


EMPTY_BLANK_HINT = ("(looks empty: the model ended the blank or wrote only spaces; --candidates 5 shows its likeliest "
                    "first tokens, --min-tgt-length N asks for N tokens)")


def read_prompts(path: str) -> list[tuple[int, str]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--input-file {p}: no such file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        from common.errors import DataError

        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"--input-file {p}:{line}: byte 0x{data[e.start]:02x} is not UTF-8") from None
    return [(i, line.rstrip("\n")) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


class Printer:
    """Streams one blank at a time: decodes the span so far and prints what is new."""

    def __init__(self, tokenizer, out, enabled: bool) -> None:
        self.tok, self.out, self.enabled = tokenizer, out, enabled
        self.blank, self.ids, self.shown = 0, [], ""

    def on_token(self, row: int, token: int) -> None:
        if not self.enabled or row != 0:
            return
        if not self.ids:
            self.out.write(f"[blank {self.blank + 1}] ")
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        self.out.write(text[len(self.shown):] if text.startswith(self.shown) else "\n" + text)
        self.out.flush()
        self.shown = text

    def on_blank(self, index: int, result) -> None:
        if self.enabled:
            if not self.ids:
                self.out.write(f"[blank {index + 1}] " + self.tok.decode(result.tokens))
            if not self.tok.decode(result.tokens).strip():  # a weak model's likeliest fill is the end or a bare "▁"
                self.out.write(EMPTY_BLANK_HINT)
            self.out.write("\n")
            self.out.flush()
        self.blank, self.ids, self.shown = index + 1, [], ""


def main(argv: list[str] | None = None) -> dict:
    a = build_parser().parse_args(argv)
    from model.generation import blank_candidates, fill_blanks
    from training import setup
    from training.distributed import shutdown

    cfg = _generation_config(a)
    src = setup.generation_sources(a.load, a.load_pretrained, a.model_config, a.tokenizer_model)
    parallel_state, device, rank, world = setup.start_generation(a.model_parallel_size, a.device)
    try:
        tokenizer = src.tokenizer
        model = setup.generation_model(src, parallel_state, device, a.make_vocab_size_divisible_by,
                                       load_pretrained=bool(a.load_pretrained), trust=a.trust_checkpoint)

        def fill(text: str, printer: Printer | None):
            hooks = dict(on_token=printer.on_token, on_blank=printer.on_blank) if printer else {}
            return fill_blanks(model, tokenizer, text, cfg, **hooks)

        def candidates(res) -> list[list[tuple[str, float]]]:
            """Per blank: [(piece, probability)] of the --candidates likeliest first tokens."""
            return [[(tokenizer.convert_ids_to_tokens([i])[0], p) for i, p in blank]
                    for blank in blank_candidates(model, tokenizer, res, a.candidates)]

        t0 = time.time()
        if a.input_file:
            counts = _fill_file(a, fill, candidates, tokenizer, rank)
        else:
            counts = _fill_interactive(a, fill, candidates, tokenizer, rank, world)
        seconds = time.time() - t0
        return {**counts, "seconds": seconds,
                "tokens_per_s": counts["generated_tokens"] / seconds if seconds > 0 else 0.0, "mode": cfg.mode}
    finally:
        if world > 1:
            shutdown()


def _count(counts: dict[str, int], res) -> None:
    counts["prompts"] += 1
    counts["blanks"] += len(res.spans)
    counts["generated_tokens"] += sum(len(s) for s in res.spans)


def _fill_file(a: argparse.Namespace, fill, candidates, tokenizer, rank: int) -> dict[str, int]:
    """--input-file: one JSON line per prompt to --output-file (or stdout); a bad prompt names its line."""
    counts = {"prompts": 0, "blanks": 0, "generated_tokens": 0}
    out = open(a.output_file, "w", encoding="utf-8") if a.output_file and rank == 0 else sys.stdout
    try:
        for line_no, text in read_prompts(a.input_file):
            try:
                res = fill(text, None)
            except ValueError as e:
                raise ValueError(f"{a.input_file}:{line_no}: {e}") from None
            _count(counts, res)
            if rank == 0:
                row = {"prompt": text, "filled": res.text, "spans": [tokenizer.decode(s) for s in res.spans],
                       "scores": res.scores}
                if a.candidates > 0:
                    row["candidates"] = candidates(res)
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return counts


def _fill_interactive(a: argparse.Namespace, fill, candidates, tokenizer, rank: int, world: int) -> dict[str, int]:
    """Prompts from stdin until an empty line or end of input; rank 0 reads and broadcasts each one."""
    import torch.distributed as dist

    counts = {"prompts": 0, "blanks": 0, "generated_tokens": 0}
    ask = rank == 0 and sys.stdin.isatty()  # prompts piped in (echo ... |) get no "Prompt >>>" in the output
    while True:
        text = None
        if rank == 0:
            if ask:
                print("Prompt with [MASK]/[sMASK]/[gMASK] (empty line or Ctrl-D to stop) >>> ",
                      end="", file=sys.stderr, flush=True)
            try:
                line = sys.stdin.readline()
            except KeyboardInterrupt:
                line = ""
            text = line.rstrip("\n") if line else ""
        if world > 1:
            box = [text]
            dist.broadcast_object_list(box, src=0)
            text = box[0]
        if not text.strip():
            if ask:
                print(file=sys.stderr)  # end the prompt's line
            return counts
        printer = Printer(tokenizer, sys.stdout, enabled=rank == 0 and not a.no_stream)
        try:
            res = fill(text, printer)
        except ValueError as e:
            if rank == 0:
                print(f"error: {e}", file=sys.stderr, flush=True)
            continue
        _count(counts, res)
        if rank == 0:
            print(f"Filled: {res.text}", flush=True)
        if a.candidates > 0:
            shown = candidates(res)  # a forward per blank: every tensor-parallel rank runs it
            for k, blank in enumerate(shown if rank == 0 else []):
                print(f"  blank {k + 1} candidates: " + "  ".join(f"{t!r} {p:.3f}" for t, p in blank),
                      flush=True)


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main, PROG)
