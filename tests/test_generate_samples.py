"""generate_samples.py end to end on a tiny checkpoint saved by pretrain_glm.py: file and interactive modes,
streaming, clean exit at end of input / empty line, one-line errors for unknown mask tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLE_CORPUS, SAMPLE_TOKENIZER

from generate_samples import main

PY = sys.executable


def _env() -> dict:
    e = dict(os.environ)
    e.update(PYTHONUNBUFFERED="1", DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return e


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A glm-tiny checkpoint after 4 pretraining steps on the bundled corpus."""
    from tools.preprocess_data import main as preprocess

    tmp = tmp_path_factory.mktemp("gen")
    store = tmp / "store" / "sample"
    preprocess([str(SAMPLE_CORPUS), "-o", str(store), "--tokenizer-model", str(SAMPLE_TOKENIZER), "--no-progress"])
    save = tmp / "ck"
    cmd = [PY, "pretrain_glm.py", "--model-config", "config/model/glm-tiny.json", "--train-data", str(store),
           "--seq-length", "64", "--train-iters", "4", "--log-interval", "4", "--eval-interval", "1000",
           "--eval-iters", "1", "--num-workers", "0", "--save", str(save), "--device", "cpu"]
    p = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return save


def _reference_fill(checkpoint, prompts, **cfg):
    """The library on an independently loaded model: what the CLI must print."""
    from data_utils.tokenizer import GLMTokenizer
    from model import GLMConfig, GLMModel
    from model.generation import GenerationConfig, fill_blanks
    from mpu.initialize import ParallelState
    from training.checkpoint import load_pretrained

    meta = json.loads(next(checkpoint.glob("global_step*/meta.json")).read_text())
    tok = GLMTokenizer(SAMPLE_TOKENIZER)
    model = GLMModel(GLMConfig.from_dict(meta["model_config"]))
    load_pretrained(model, checkpoint, ParallelState.single())
    return [fill_blanks(model.eval(), tok, p, GenerationConfig(**cfg)).text for p in prompts]


PROMPTS = ["The cat [MASK] on the mat.", "Heute ist das Wetter [gMASK]"]


@pytest.mark.slow
@pytest.mark.parametrize("beam", [False, True])
def test_file_mode(checkpoint, tmp_path, beam):
    inp = tmp_path / "prompts.txt"
    inp.write_text(PROMPTS[0] + "\n\n" + PROMPTS[1] + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    flags = ["--num-beams", "3", "--no-repeat-ngram-size", "2", "--length-penalty", "0.8"] if beam else []
    metrics = main(["--load", str(checkpoint), "--input-file", str(inp), "--output-file", str(out),
                    "--out-seq-length", "6", "--min-tgt-length", "2", *flags])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS and metrics["prompts"] == 2 and metrics["blanks"] == 2
    kw = dict(max_new_tokens=6, min_new_tokens=2)
    if beam:
        kw.update(num_beams=3, no_repeat_ngram_size=2, length_penalty=0.8)
    assert [r["filled"] for r in rows] == _reference_fill(checkpoint, PROMPTS, **kw)
    for r in rows:
        assert "MASK]" not in r["filled"] and r["spans"][0] and r["spans"][0] in r["filled"]
    assert rows[0]["filled"].startswith("The cat ") and rows[0]["filled"].endswith(" on the mat.")
    assert rows[1]["filled"].startswith("Heute ist das Wetter")


@pytest.mark.slow
def test_load_pretrained_and_file_errors(checkpoint, tmp_path):
    inp = tmp_path / "p.txt"
    inp.write_text("Ein [MASK] Test.\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    main(["--load-pretrained", str(checkpoint), "--model-config", "config/model/glm-tiny.json", "--tokenizer-model",
          str(SAMPLE_TOKENIZER), "--input-file", str(inp), "--output-file", str(out), "--out-seq-length", "4",
          "--top-k", "5", "--seed", "3"])
    assert "MASK" not in json.loads(out.read_text())["filled"]
    inp.write_text("fine [MASK]\nbad [XMASK] here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"p\.txt:2: unknown mask token \[XMASK\]"):
        main(["--load", str(checkpoint), "--input-file", str(inp), "--output-file", str(out)])
    with pytest.raises(ValueError, match="exactly one of --load"):
        main(["--input-file", str(inp)])


def _interactive(checkpoint, stdin: str, *flags: str) -> subprocess.CompletedProcess:
    cmd = [PY, "generate_samples.py", "--load", str(checkpoint), "--out-seq-length", "5", "--min-tgt-length", "2",
           *flags]
    return subprocess.run(cmd, cwd=REPO, env=_env(), input=stdin, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_interactive_streams_and_stops_at_end_of_input(checkpoint):
    p = _interactive(checkpoint, "\n".join(PROMPTS) + "\n")  # then end of input (Ctrl-D)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert ">>>" not in p.stderr + p.stdout  # stdin is a pipe: no interactive prompt text in the output
    filled = [line[len("Filled: "):] for line in p.stdout.splitlines() if line.startswith("Filled: ")]
    assert filled == _reference_fill(checkpoint, PROMPTS, max_new_tokens=5, min_new_tokens=2)
    streamed = [line for line in p.stdout.splitlines() if line.startswith("[blank 1] ")]
    assert len(streamed) == 2 and all(len(s) > len("[blank 1] ") for s in streamed)


@pytest.mark.slow
def test_interactive_unknown_mask_and_empty_line(checkpoint):
    p = _interactive(checkpoint, "[XMASK] what\nA [MASK] b [sMASK]\n\nnever read [MASK]\n", "--num-beams", "2")
    assert p.returncode == 0, p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "unknown mask token [XMASK]" in errors[0] and "Traceback" not in p.stderr
    assert sum(line.startswith("Filled: ") for line in p.stdout.splitlines()) == 1  # stopped at the empty line
    assert "[blank 2] " in p.stdout  # beam search prints each blank when it is done


def test_streamed_empty_blank_is_explained() -> None:
    """A blank that decodes to nothing visible (no token, or the bare word-boundary piece) prints a hint (a new
    user took the empty fill for a bug); a filled blank prints only its text."""
    import io
    from types import SimpleNamespace

    import generate_samples
    from data_utils.tokenizer import GLMTokenizer

    tok = GLMTokenizer(SAMPLE_TOKENIZER)
    out = io.StringIO()
    printer = generate_samples.Printer(tok, out, enabled=True)
    printer.on_blank(0, SimpleNamespace(tokens=[]))
    printer.on_blank(1, SimpleNamespace(tokens=tok.convert_tokens_to_ids(["\u2581"])))  # the bare word boundary
    printer.on_blank(2, SimpleNamespace(tokens=tok.encode("France")))
    hint = generate_samples.EMPTY_BLANK_HINT
    assert out.getvalue() == f"[blank 1] {hint}\n[blank 2] {hint}\n[blank 3] France\n"
    assert "--candidates" in hint and "--min-tgt-length" in hint
