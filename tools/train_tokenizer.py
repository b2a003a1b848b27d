"""Train a unigram sentencepiece model for mglm on raw multilingual text.

Inputs are what ``tools/preprocess_data.py`` reads: files or folders of ``*.jsonl`` (one ``{"text": ...}``
object per line), ``*.txt`` (documents separated by blank lines), each optionally gzipped, and mGLM's
``<lang>_*.json.gz``. Every line of a document becomes one training sentence. Training is
deterministic (one thread, every sentence used, fixed seed), so the same input gives the same model file.

    python tools/train_tokenizer.py data/sample/corpus --vocab-size 8000 --model-prefix data/sample/tokenizer/mglm-sample \
        --cloze-verbalizers

(the command that made the bundled ``data/sample/tokenizer/mglm-sample.model``). ``--user-defined-symbols``
adds pieces that are always one token (sentencepiece's ``user_defined_symbols``: they count in the vocabulary
size and are cut out of the text before segmentation, so "Nobody" becomes "▁No" "body"); a space in them is
sentencepiece's meta symbol "▁". ``--cloze-verbalizers`` adds the verbalizers of every registered cloze task
(XNLI " True" " False" " Maybe", PAWS-X " Yes" " No"), which must be single tokens.

Defaults suit a multilingual model: byte fallback (no text is ever unknown), character coverage 0.9995
(the usual setting for CJK), digits split, and the ``identity`` normalisation so decoding returns the
input exactly (sentencepiece still collapses runs of spaces). The GLM command tokens are *not* part of
the sentencepiece model: ``data_utils.tokenizer.GLMTokenizer`` appends them after its vocabulary.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as ``python tools/X.py`` from any directory: the root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Sentencepiece's C++ log line: "I0000 00:00:1795918010.121490    1911 file.cc:903] message".
_SP_LOG = re.compile(r"^([IWEF])\d{4} \S+\s+\d+ [\w.]+:\d+\] (.*)$")
# The messages that tell how far training is (corpus loaded, seed pieces, each EM round and its vocabulary
# size, which shrinks towards the target, model saved); the rest of the INFO log is setup detail.
_SP_PROGRESS = re.compile(r"^(Loaded all \d+ sentences|Done! preprocessed|Initialized \d+ seed|EM sub_iter=|Saving model)")


def iter_sentences(files: list[Path]) -> Iterator[str]:
    """Training sentences: each non-empty line of each document, read exactly as preprocessing reads them
    (``data_utils.corpus``: JSONL, blank-line-separated text, mGLM ``<lang>_*.json.gz``). A bad record stops
    training with its file and line: a tokenizer silently trained on less text is worse than no tokenizer."""
    from data_utils.corpus import BLANK_LINE, EMPTY_FILE, RawRecord, iter_raw_records, parse_record

    for path in files:
        # The language does not matter here; "xx" keeps parse_record from rejecting unnamed files.
        for rec in iter_raw_records(path, lang="xx"):
            if not isinstance(rec, RawRecord):
                src, line, reason, _ = rec
                if reason == EMPTY_FILE:
                    print(f"[train_tokenizer] warning: {src} is empty", file=sys.stderr)
                elif reason != BLANK_LINE:
                    raise ValueError(f"{src}:{line}: {reason}")
                continue
            _, text, reason, detail = parse_record(rec)
            if reason is not None:
                raise ValueError(f"{rec.source}:{rec.line}: {detail}")
            for sent in text.split("\n"):
                sent = sent.strip()
                if sent:
                    yield sent


def _strip_paths(model: Path, name: str) -> None:
    """The model file records the training-input and output paths (a random temp dir here); replace them by
    fixed names so that the same corpus always gives a byte-identical model wherever it is trained."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model.read_bytes())
    del proto.trainer_spec.input[:]
    proto.trainer_spec.input.append("sentences.txt")
    proto.trainer_spec.model_prefix = name
    model.write_bytes(proto.SerializeToString())


@contextlib.contextmanager
def sentencepiece_progress(t0: float) -> Iterator[None]:
    """Turn sentencepiece's stderr log (written by C++ to fd 2) into a short progress report while the block
    runs: one ``[train_tokenizer]`` line per progress message with the elapsed time, warnings and errors as
    they are, the setup detail (trainer spec dump, one line per byte piece, ...) dropped. Works because
    sentencepiece releases the GIL while training, so the reader thread keeps the pipe drained."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()

    def forward() -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                m = _SP_LOG.match(line.rstrip("\n"))
                if m is None:  # the trainer-spec dump, absl's preamble
                    continue
                level, msg = m.groups()
                if level != "I":
                    out = line
                elif _SP_PROGRESS.match(msg):
                    out = f"[train_tokenizer] {time.time() - t0:7.1f}s  {msg}\n"
                else:
                    continue
                os.write(saved, out.encode("utf-8"))

    reader = threading.Thread(target=forward, daemon=True)
    reader.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
        reader.join()
        os.close(saved)


def our_flags(message: str) -> str:
    """sentencepiece's error text with its option names (``vocab_size``, ``--character_coverage``) spelled as
    this tool's flags, which are what the user can change."""
    message = message.strip().replace(" with --character_coverage option", "")
    for option in ("vocab_size", "character_coverage"):
        message = re.sub(rf"(?<![\w-])(?:--)?{option}\b", "--" + option.replace("_", "-"), message)
    return message


def as_piece(symbol: str) -> str:
    """A string as the sentencepiece piece that matches it in text: spaces become the meta symbol "▁"
    (" True" -> "▁True", which is what sentencepiece makes of "True" after a space or at the start)."""
    if not symbol.strip():
        raise ValueError(f"user-defined symbol {symbol!r}: expected a non-blank string")
    return symbol.replace(" ", "\u2581")


def cloze_verbalizer_pieces() -> list[str]:
    """The pieces of every verbalizer of every registered cloze task (``tasks/registry.py``), sorted, so that
    a tokenizer trained with them can run every cloze task (which refuses multi-token verbalizers)."""
    from tasks import registry
    from tasks.classification import ClozeClassificationTask

    pieces = set()
    for name in registry.TASKS:
        cls = registry.get(name)
        if issubclass(cls, ClozeClassificationTask):
            pieces.update(as_piece(v) for v in cls.verbalizers.values())
    return sorted(pieces)


def train(
    inputs: list[str],
    model_prefix: str,
    vocab_size: int = 8000,
    character_coverage: float = 0.9995,
    normalization: str = "identity",
    byte_fallback: bool = True,
    verbose: bool = False,
    user_defined_symbols: Sequence[str] = (),
    progress: bool = False,
) -> Path:
    """Train and write ``<model_prefix>.model`` (+ ``.vocab``); returns the model path.

    ``user_defined_symbols``: pieces (spaces written as " " or "▁") that are always a single token; they
    are part of ``vocab_size``. ``progress``: report each training round (sentencepiece's EM iterations and
    the vocabulary size they have pruned to) on stderr; ``verbose``: sentencepiece's whole log instead."""
    import sentencepiece as spm

    from common.progress import report_progress
    from data_utils.corpus import find_input_files

    symbols = list(dict.fromkeys(as_piece(x) for x in user_defined_symbols))  # de-duplicated, order kept
    files = find_input_files(inputs)
    out = Path(model_prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "sentences.txt"
        n_sent = n_chars = 0
        with open(corpus, "w", encoding="utf-8") as w:
            for sent in report_progress(iter_sentences(files), desc="reading", unit=" sentences"):
                w.write(sent + "\n")
                n_sent += 1
                n_chars += len(sent)
        print(f"[train_tokenizer] {len(files)} files, {n_sent} sentences, {n_chars} characters", flush=True)
        if n_sent == 0:
            raise ValueError(f"no text found in {', '.join(map(str, files))}")
        t0 = time.time()
        print(f"[train_tokenizer] training unigram model, vocab {vocab_size} ...", flush=True)
        report = progress and not verbose
        try:
            with sentencepiece_progress(t0) if report else contextlib.nullcontext():
                spm.SentencePieceTrainer.Train(
                    input=str(corpus),
                    model_prefix=str(out),
                    model_type="unigram",
                    vocab_size=vocab_size,
                    character_coverage=character_coverage,
                    byte_fallback=byte_fallback,
                    split_digits=True,
                    normalization_rule_name=normalization,
                    input_sentence_size=0,  # use every sentence: no random sampling
                    shuffle_input_sentence=False,
                    num_threads=1,  # unigram EM with several threads is not bit-reproducible
                    max_sentence_length=16384,
                    user_defined_symbols=symbols,
                    minloglevel=0 if verbose or report else 2,
                )
        except RuntimeError as e:  # sentencepiece's C++ errors, e.g. "Vocabulary size too high (N)"
            what = ", ".join(map(str, files)) if len(files) <= 3 else f"{len(files)} files ({files[0]}, ...)"
            raise ValueError(f"sentencepiece could not train on {what}: {our_flags(str(e).split('] ')[-1])}") from None
    model = out.with_name(out.name + ".model")
    _strip_paths(model, out.name)
    print(f"[train_tokenizer] wrote {model} ({os.path.getsize(model)} bytes) in {time.time() - t0:.1f}s", flush=True)
    return model


def main(argv: list[str] | None = None) -> Path:
    from training.arguments import DefaultsHelpFormatter

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="text files (.jsonl, .txt, optionally .gz) or folders of them")
    ap.add_argument("--model-prefix", required=True, help="output path without the .model suffix")
    ap.add_argument("--vocab-size", type=int, default=8000, help="pieces, user-defined symbols included")
    ap.add_argument("--character-coverage", type=float, default=0.9995,
                    help="share of the characters the pieces must cover (the rest become bytes or [UNK])")
    ap.add_argument("--normalization", default="identity", choices=["identity", "nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf"],
                    help="sentencepiece normalization rule (identity: decoding returns the input)")
    ap.add_argument("--no-byte-fallback", dest="byte_fallback", action="store_false",
                    help="unknown characters become [UNK] instead of UTF-8 byte pieces")
    ap.add_argument("--user-defined-symbols", default="", metavar="A,B,...",
                    help="comma-separated pieces that are always one token (a leading space = '▁')")
    ap.add_argument("--cloze-verbalizers", action="store_true",
                    help="add the verbalizers of every registered cloze task (XNLI, PAWS-X) as single pieces")
    ap.add_argument("--verbose", action="store_true", help="show sentencepiece's whole training log")
    ap.add_argument("--quiet", action="store_true", help="no progress report during training")
    a = ap.parse_args(argv)
    symbols = [x for x in a.user_defined_symbols.split(",") if x != ""]
    if a.cloze_verbalizers:
        symbols += cloze_verbalizer_pieces()
    return train(a.inputs, a.model_prefix, a.vocab_size, a.character_coverage, a.normalization, a.byte_fallback,
                 a.verbose, symbols, progress=not a.quiet)


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main, "train_tokenizer.py")
