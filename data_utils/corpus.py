"""Raw multilingual corpora -> a tokenized, memory-mapped store (one per language).

Inputs (a file or a folder of them):

- JSONL (``*.jsonl``, ``*.jsonl.gz``): one ``{"text": ..., "lang": ...}`` object per line; ``lang`` is optional.
- plain text (``*.txt``, ``*.txt.gz``): documents separated by blank lines, a document = its lines joined by ``\\n``.
- the Multilingual-GLM layout (``<lang>_*.json.gz``): gzipped *plain text* (not JSON) with blank-line-separated
  documents. Unlike the reference reader, the last document of a file is kept even when the file does not end
  with a blank line.

Language of a document: the JSONL ``lang`` field, else the ``lang`` argument (``--lang``), else the file name
(``<lang>.jsonl`` / ``<lang>.txt`` / ``<lang>_anything.json.gz``).

Store layout (all little-endian, no pickle)::

    <out>/index.json                 {"languages": [...], totals, skipped counts by reason, tokenizer}
    <out>/<lang>/tokens.bin          int32 token ids of all documents, concatenated
    <out>/<lang>/offsets.npy         int64 [num_docs + 1]; document i = tokens[offsets[i]:offsets[i+1]]
    <out>/<lang>/meta.json           tokenizer file + sha256 + vocab size, sources, counts, skipped by reason,
                                     max_token_id (checked against the tokenizer when the store is opened)

The store is written into a temporary sibling folder that is renamed to ``<out>`` only when complete;
``meta.json`` / ``index.json`` are written last, and readers refuse a folder without them.
Documents are tokenized with the sentencepiece model only: command-token strings that happen to occur in raw
text (``[MASK]``, ``<|endoftext|>``) stay text, so web data cannot inject control tokens.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import DataError, UsageError, read_json_object

logger = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
TEXT_SUFFIXES = (".txt", ".txt.gz")
MGLM_SUFFIX = ".json.gz"
ALL_SUFFIXES = JSONL_SUFFIXES + TEXT_SUFFIXES + (MGLM_SUFFIX,)
_LANG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")

STORE_VERSION = 1
TOKEN_DTYPE = np.int32
OFFSET_DTYPE = np.int64

# Skip reasons (keys of the "skipped" counters).
EMPTY_FILE = "empty_file"
BLANK_LINE = "blank_line"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
TEXT_NOT_STRING = "text_not_string"
EMPTY_TEXT = "empty_text"
INVALID_UTF8 = "invalid_utf8"
BAD_LANG = "bad_lang"
NO_TOKENS = "no_tokens"


# ------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class RawRecord:
    """One unit of raw input: a JSONL line or a blank-line-separated plain-text document (still bytes)."""

    source: str  # file path as given
    line: int  # 1-based line number where the record starts
    kind: str  # "jsonl" | "text"
    lang: str | None  # language from --lang / the file name (JSONL "lang" may override)
    data: bytes


def find_input_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand folders (recursively, sorted) to input files; missing paths raise FileNotFoundError."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(ALL_SUFFIXES))
            if not found:
                raise DataError(f"{p}: folder holds no input files ({', '.join(ALL_SUFFIXES)})")
            files.extend(found)
        elif p.is_file():
            if not p.name.endswith(ALL_SUFFIXES):
                raise UsageError(f"{p}: unknown input type; expected one of {', '.join(ALL_SUFFIXES)}")
            files.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return files


def file_kind(path: Path) -> str:
    name = path.name
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES) or name.endswith(MGLM_SUFFIX):
        return "text"
    raise UsageError(f"{path}: unknown input type; expected one of {', '.join(ALL_SUFFIXES)}")


def language_from_filename(path: Path) -> str | None:
    """``en.jsonl`` -> en, ``zh.txt.gz`` -> zh, ``de_0001.json.gz`` -> de (mGLM layout: prefix before ``_``)."""
    name = path.name
    if name.endswith(MGLM_SUFFIX):
        lang = name[: -len(MGLM_SUFFIX)].split("_", 1)[0]
    else:
        for suf in JSONL_SUFFIXES + TEXT_SUFFIXES:
            if name.endswith(suf):
                lang = name[: -len(suf)]
                break
        else:
            return None
    return lang if _LANG_RE.match(lang) else None


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def iter_raw_records(path: Path, lang: str | None = None) -> Iterator[RawRecord | tuple[str, int, str, str | None]]:
    """Raw records of one file, in file order. Yields ``RawRecord`` or a skip ``(source, line, reason, lang)``.

    Decoding and parsing happen later (in the workers); this only splits bytes into records.
    """
    try:
        yield from _split_records(path, lang)
    except (OSError, EOFError) as e:  # a damaged .gz (BadGzipFile, truncated stream), an unreadable file
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None


def _split_records(path: Path, lang: str | None) -> Iterator[RawRecord | tuple[str, int, str, str | None]]:
    kind = file_kind(path)
    src = str(path)
    lang = lang or language_from_filename(path)
    any_content = False
    with _open_binary(path) as f:
        if kind == "jsonl":
            for lineno, line in enumerate(f, 1):
                any_content = True
                if not line.strip():
                    yield (src, lineno, BLANK_LINE, lang)
                    continue
                yield RawRecord(src, lineno, kind, lang, line)
        else:
            buf: list[bytes] = []
            start = 0
            for lineno, line in enumerate(f, 1):
                any_content = True
                if line.strip():
                    if not buf:
                        start = lineno
                    buf.append(line.rstrip(b"\r\n"))
                elif buf:
                    yield RawRecord(src, start, kind, lang, b"\n".join(buf))
                    buf = []
            if buf:  # the last document counts even without a trailing blank line
                yield RawRecord(src, start, kind, lang, b"\n".join(buf))
    if not any_content:
        yield (src, 0, EMPTY_FILE, lang)


def parse_record(rec: RawRecord) -> tuple[str | None, str | None, str | None, str]:
    """-> (lang, text, skip_reason, detail). Exactly one of text / skip_reason is set."""
    try:
        s = rec.data.decode("utf-8")
    except UnicodeDecodeError as e:
        # a plain-text document spans several lines: name the line of the bad byte, not the document's first
        line = rec.line + rec.data.count(b"\n", 0, e.start)
        col = e.start - (rec.data.rfind(b"\n", 0, e.start) + 1) + 1
        where = f" (line {line})" if line != rec.line else ""
        return rec.lang, None, INVALID_UTF8, f"byte 0x{rec.data[e.start]:02x} at column {col}{where} is not UTF-8"
    lang = rec.lang
    if rec.kind == "jsonl":
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            return lang, None, INVALID_JSON, f"invalid JSON ({e.msg} at column {e.colno})"
        if not isinstance(obj, dict):
            return lang, None, NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}"
        if "lang" in obj:
            if not isinstance(obj["lang"], str) or not _LANG_RE.match(obj["lang"]):
                return lang, None, BAD_LANG, f"'lang' must be a language code, got {obj['lang']!r}"
            lang = obj["lang"]
        if "text" not in obj:
            return lang, None, MISSING_TEXT, "no 'text' field"
        text = obj["text"]
        if not isinstance(text, str):
            return lang, None, TEXT_NOT_STRING, f"'text' must be a string, got {type(text).__name__}"
    else:
        text = s
    if not text.strip():
        return lang, None, EMPTY_TEXT, "document has no text (empty or whitespace)"
    if lang is None:
        return lang, None, BAD_LANG, "no language: give --lang, a 'lang' field, or name the file <lang>.jsonl"
    return lang, text, None, ""


# ------------------------------------------------------------------------------------------ workers
@dataclass
class _ChunkResult:
    # kept documents, in order: their languages, token counts, and all their tokens concatenated (one array
    # per chunk keeps the inter-process traffic to a few pickles per chunk)
    langs: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=TOKEN_DTYPE))
    # per skipped record: (source, line, reason, lang, detail)
    skips: list[tuple[str, int, str, str | None, str]] = field(default_factory=list)

    def docs(self) -> Iterator[tuple[str, np.ndarray]]:
        ends = np.cumsum(self.lengths)
        for lang, e, n in zip(self.langs, ends.tolist(), self.lengths, strict=True):
            yield lang, self.tokens[e - n : e]


class _Encoder:
    """Per-process sentencepiece encoder (loaded once per worker)."""

    sp = None

    @classmethod
    def init(cls, model_path: str) -> None:
        import sentencepiece as spm

        cls.sp = spm.SentencePieceProcessor(model_file=model_path)


def _process_chunk(records: list[RawRecord]) -> _ChunkResult:
    out = _ChunkResult()
    kept: list[tuple[RawRecord, str]] = []
    texts: list[str] = []
    for rec in records:
        lang, text, reason, detail = parse_record(rec)
        if reason is not None:
            out.skips.append((rec.source, rec.line, reason, lang, detail))
        else:
            kept.append((rec, lang))
            texts.append(text)
    encoded = _Encoder.sp.encode(texts, out_type=int) if texts else []
    flat: list[int] = []
    for (rec, lang), ids in zip(kept, encoded, strict=True):
        if not ids:
            out.skips.append((rec.source, rec.line, NO_TOKENS, lang, "document tokenizes to zero tokens"))
            continue
        out.langs.append(lang)
        out.lengths.append(len(ids))
        flat.extend(ids)
    out.tokens = np.asarray(flat, dtype=TOKEN_DTYPE)
    return out


def _chunks(files: list[Path], lang: str | None, chunk_docs: int) -> Iterator[list]:
    """Deterministic stream of work items: lists of RawRecord, or single skip tuples from the reader."""
    chunk: list[RawRecord] = []
    for path in files:
        for item in iter_raw_records(path, lang):
            if isinstance(item, RawRecord):
                chunk.append(item)
                if len(chunk) >= chunk_docs:
                    yield chunk
                    chunk = []
            else:
                if chunk:
                    yield chunk
                    chunk = []
                yield [item]
    if chunk:
        yield chunk


def _dispatch(item: list) -> _ChunkResult:
    if item and not isinstance(item[0], RawRecord):
        src, line, reason, lang = item[0]
        detail = "file is empty" if reason == EMPTY_FILE else "blank line"
        return _ChunkResult(skips=[(src, line, reason, lang, detail)])
    return _process_chunk(item)


# ------------------------------------------------------------------------------------------ writing
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _LangWriter:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True)
        self.folder = folder
        self.f = open(folder / "tokens.bin", "wb")
        self.offsets = [0]
        self.max_token_id = -1  # recorded in meta.json: opening the store checks it against the tokenizer

    def add(self, tokens: np.ndarray) -> None:
        self.f.write(tokens.astype("<i4", copy=False).tobytes())
        self.offsets.append(self.offsets[-1] + len(tokens))
        if len(tokens):
            self.max_token_id = max(self.max_token_id, int(tokens.max()))

    def close(self) -> None:
        self.f.close()
        np.save(self.folder / "offsets.npy", np.asarray(self.offsets, dtype="<i8"), allow_pickle=False)


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


@dataclass
class PreprocessSummary:
    languages: dict[str, dict]  # lang -> {"docs", "tokens"}
    skipped: dict[str, int]
    empty_languages: list[str]
    seconds: float
    workers: int

    @property
    def num_docs(self) -> int:
        return sum(v["docs"] for v in self.languages.values())

    @property
    def num_tokens(self) -> int:
        return sum(v["tokens"] for v in self.languages.values())

    def format(self) -> str:
        lines = [f"{'lang':<8}{'docs':>12}{'tokens':>16}"]
        for lang, v in sorted(self.languages.items()):
            lines.append(f"{lang:<8}{v['docs']:>12}{v['tokens']:>16}")
        lines.append(f"{'total':<8}{self.num_docs:>12}{self.num_tokens:>16}")
        rate = self.num_tokens / max(self.seconds, 1e-9)
        lines.append(f"time {self.seconds:.2f}s, {rate:,.0f} tokens/s with {self.workers} worker(s)")
        if self.skipped:
            lines.append("skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())))
        else:
            lines.append("skipped: none")
        if self.empty_languages:
            lines.append("languages with zero documents (no store written): " + ", ".join(self.empty_languages))
        return "\n".join(lines)


def preprocess(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    tokenizer_model: str | os.PathLike,
    lang: str | None = None,
    workers: int = 1,
    chunk_docs: int = 1024,
    progress: bool = True,
    overwrite: bool = False,
) -> PreprocessSummary:
    """Tokenize ``inputs`` into a store at ``output`` (see the module docstring). Deterministic for any ``workers``.

    Bad records are skipped with a warning naming file and line and counted by reason in ``index.json`` and
    each language's ``meta.json``; nothing is dropped silently.
    """

    from data_utils.tokenizer import GLMTokenizer

    if lang is not None and not _LANG_RE.match(lang):
        raise UsageError(f"--lang {lang!r} is not a language code (letters, digits, '_' or '-')")
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} is a file; expected the folder of a new store (--output DIR)")
    if out.exists() and not overwrite:
        raise UsageError(f"output {out} exists; pass overwrite=True (--overwrite) to replace it")
    if out.exists() and not (out / "index.json").is_file() and any(out.iterdir()):
        raise UsageError(f"refusing to replace {out}: it is not an mglm token store (no index.json)")
    files = find_input_files(inputs)
    tok_path = Path(tokenizer_model)
    tokenizer = GLMTokenizer(tok_path)  # validates the model and gives the vocab sizes
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()

    try:
        summary = _write_store(tmp, files, lang, workers, chunk_docs, progress, tok_path, tokenizer)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written store behind
        raise
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash)
    else:
        os.replace(tmp, out)
    return summary


def _write_store(tmp: Path, files: list[Path], lang: str | None, workers: int, chunk_docs: int, progress: bool,
                 tok_path: Path, tokenizer) -> PreprocessSummary:
    from common.progress import report_progress

    writers: dict[str, _LangWriter] = {}
    skipped: Counter = Counter()
    skipped_by_lang: dict[str | None, Counter] = {}
    # language -> files with skipped records of it: a language seen only in skipped records has zero documents,
    # reported with those files (a file-name language that every record overrides is no language of the run)
    lang_sources: dict[str, set[str]] = {}
    t0 = time.time()
    n_tok = 0
    bar = report_progress(desc="tokenizing", unit="doc", enabled=progress, smoothing=0.1)
    pool = None
    try:
        if workers > 1:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers, initializer=_Encoder.init, initargs=(str(tok_path),))
            results = pool.imap(_dispatch, _chunks(files, lang, chunk_docs), chunksize=1)
        else:
            _Encoder.init(str(tok_path))
            results = map(_dispatch, _chunks(files, lang, chunk_docs))
        for res in results:
            for src, line, reason, rlang, detail in res.skips:
                where = f"{src}:{line}" if line > 0 else src
                logger.warning("skipped %s (%s): %s", where, reason, detail)
                skipped[reason] += 1
                skipped_by_lang.setdefault(rlang, Counter())[reason] += 1
                if rlang is not None:
                    lang_sources.setdefault(rlang, set()).add(src)
            for dlang, toks in res.docs():
                w = writers.get(dlang)
                if w is None:
                    w = writers[dlang] = _LangWriter(tmp / dlang)
                w.add(toks)
                n_tok += len(toks)
            bar.update(len(res.langs))
            elapsed = max(time.time() - t0, 1e-9)
            bar.set_postfix_str(f"{n_tok / elapsed:,.0f} tok/s", refresh=False)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    seconds = time.time() - t0

    tok_info = {
        "file": str(tok_path),
        "sha256": sha256_file(tok_path),
        "sentencepiece_size": tokenizer.num_text_tokens,
        "vocab_size": len(tokenizer),
        "padded_vocab_size": tokenizer.padded_vocab_size(),
    }
    sources = [str(p) for p in files]
    langs_summary: dict[str, dict] = {}
    for dlang in sorted(writers):
        w = writers[dlang]
        w.close()
        n_docs = len(w.offsets) - 1
        info = {"docs": n_docs, "tokens": int(w.offsets[-1])}
        langs_summary[dlang] = info
        _write_json(
            w.folder / "meta.json",
            {
                "format": "mglm-token-store",
                "version": STORE_VERSION,
                "language": dlang,
                "token_dtype": "int32",
                "offset_dtype": "int64",
                "num_docs": n_docs,
                "num_tokens": info["tokens"],
                "max_token_id": w.max_token_id,
                "tokenizer": tok_info,
                "sources": sources,
                "skipped": dict(sorted(skipped_by_lang.get(dlang, Counter()).items())),
            },
        )
    empty = sorted(set(lang_sources) - set(writers))
    for e in empty:
        logger.warning("language %s has zero documents (from %s); no store is written for it", e,
                       ", ".join(sorted(lang_sources[e])))
    summary = PreprocessSummary(langs_summary, dict(sorted(skipped.items())), empty, seconds, workers)
    _write_json(
        tmp / "index.json",
        {
            "format": "mglm-token-store",
            "version": STORE_VERSION,
            "languages": sorted(writers),
            "counts": langs_summary,
            "num_docs": summary.num_docs,
            "num_tokens": summary.num_tokens,
            "empty_languages": empty,
            "skipped": summary.skipped,
            "skipped_without_language": dict(sorted(skipped_by_lang.get(None, Counter()).items())),
            "tokenizer": tok_info,
            "sources": sources,
        },
    )
    return summary


# ------------------------------------------------------------------------------------------ reading
def _field(obj: dict, path: Path, name: str, kind: type | tuple[type, ...]):
    v = obj.get(name)
    if not isinstance(v, kind) or isinstance(v, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{path}: field {name!r}: expected {names}, got {v!r}")
    return v


def read_index(root: str | os.PathLike) -> dict:
    """A store's ``index.json``, checked to list its languages (DataError naming the file otherwise)."""
    index = Path(root) / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{root} is not a complete token store (no index.json)")
    obj = read_json_object(index, "store index")
    langs = _field(obj, index, "languages", list)
    if not all(isinstance(x, str) and _LANG_RE.match(x) for x in langs):
        raise DataError(f"{index}: field 'languages': expected a list of language codes, got {langs!r}")
    return obj


class TokenStore:
    """Read-only view of one language's store (``<out>/<lang>``), memory-mapped.

    ``doc(i)`` is an int32 view into the mapped file: no copy, do not write to it. With ``vocab_size`` (the
    tokenizer's sentencepiece pieces) the token ids are checked to lie in ``[0, vocab_size)``: against the
    ``max_token_id`` that preprocessing records in ``meta.json`` (free), or, for a store written before that
    field existed, by one numpy pass over ``tokens.bin`` at opening (measured 0.44 s per GB from the page cache;
    the disk's read speed when cold; logged at INFO).
    """

    def __init__(self, path: str | os.PathLike, vocab_size: int | None = None):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not self.path.is_dir():
            raise FileNotFoundError(f"token store not found: {self.path}")
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a complete token store (no meta.json: interrupted run?)")
        self.meta = read_json_object(meta_path, "store meta.json")
        if self.meta.get("format") != "mglm-token-store" or self.meta.get("version") != STORE_VERSION:
            raise DataError(f"{meta_path}: not an mglm token store of version {STORE_VERSION}")
        self.language: str = _field(self.meta, meta_path, "language", str)
        num_tokens = _field(self.meta, meta_path, "num_tokens", int)
        num_docs = _field(self.meta, meta_path, "num_docs", int)
        off_path = self.path / "offsets.npy"
        try:
            self.offsets = np.load(off_path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:  # truncated, empty or not an .npy file
            raise DataError(f"{off_path}: not a readable offsets array ({type(e).__name__}: {e}); "
                            "re-run tools/preprocess_data.py") from None
        if (self.offsets.ndim != 1 or self.offsets.dtype.kind not in "iu" or len(self.offsets) == 0
                or int(self.offsets[0]) != 0 or bool((np.diff(self.offsets) < 0).any())):
            raise DataError(f"{off_path}: expected non-decreasing int64 document offsets starting at 0, got "
                            f"{self.offsets.dtype} of shape {self.offsets.shape}")
        n_tok = int(self.offsets[-1])
        if n_tok != num_tokens or len(self.offsets) - 1 != num_docs:
            raise DataError(f"{off_path} ({len(self.offsets) - 1} documents, {n_tok} tokens) disagrees with "
                            f"{meta_path} ({num_docs} documents, {num_tokens} tokens): corrupt store")
        if not (self.path / "tokens.bin").is_file():
            raise DataError(f"{self.path}/tokens.bin is missing (corrupt store); re-run tools/preprocess_data.py")
        size = os.path.getsize(self.path / "tokens.bin")
        if size != n_tok * 4:
            raise DataError(f"{self.path}/tokens.bin has {size} bytes, expected {n_tok * 4} (corrupt store)")
        if n_tok:
            self.tokens = np.memmap(self.path / "tokens.bin", dtype="<i4", mode="r", shape=(n_tok,))
        else:
            self.tokens = np.zeros(0, dtype=TOKEN_DTYPE)
        if vocab_size is not None:
            self.check_token_ids(vocab_size)

    def check_token_ids(self, vocab_size: int) -> None:
        """DataError naming ``tokens.bin`` when an id is outside ``[0, vocab_size)`` (see the class docstring)."""
        where = self.path / "tokens.bin"
        recorded = self.meta.get("max_token_id")
        if not self.num_tokens:
            return
        if isinstance(recorded, int) and not isinstance(recorded, bool):
            lo, hi = 0, recorded
        else:  # a store from before max_token_id was recorded: one pass, 16 M tokens at a time
            t0 = time.time()
            lo, hi = None, None
            for i in range(0, self.num_tokens, 1 << 24):
                block = self.tokens[i:i + (1 << 24)]
                lo = int(block.min()) if lo is None else min(lo, int(block.min()))
                hi = int(block.max()) if hi is None else max(hi, int(block.max()))
            logger.info("%s records no max_token_id (older store): scanned %d tokens in %.1fs", self.path,
                        self.num_tokens, time.time() - t0)
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise DataError(f"{where} holds token id {bad}, outside the tokenizer's {vocab_size} pieces (ids 0.."
                            f"{vocab_size - 1}); the store was made with another tokenizer or is damaged: "
                            "re-run tools/preprocess_data.py")

    @property
    def num_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def doc_lengths(self) -> np.ndarray:
        """int64 [num_docs]."""
        return np.diff(self.offsets)

    def doc(self, i: int) -> np.ndarray:
        if not -self.num_docs <= i < self.num_docs:
            raise IndexError(f"document {i} out of range for {self.path} ({self.num_docs} documents)")
        i %= self.num_docs
        return self.tokens[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def __len__(self) -> int:
        return self.num_docs

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r}, docs={self.num_docs}, tokens={self.num_tokens})"


def open_stores(root: str | os.PathLike, languages: Sequence[str] | None = None,
                vocab_size: int | None = None) -> dict[str, TokenStore]:
    """All (or the named) language stores under ``root`` as listed by ``index.json``; with ``vocab_size``
    their token ids are checked against the tokenizer (``TokenStore``)."""
    root = Path(root)
    listed = read_index(root)["languages"]
    if languages is not None:
        missing = [x for x in languages if x not in listed]
        if missing:
            raise ValueError(f"languages {missing} are not in {root / 'index.json'} (it lists {listed})")
        listed = list(languages)
    return {lang: TokenStore(root / lang, vocab_size) for lang in listed}


class StoreView:
    """A contiguous range of documents of a token store, with offsets rebased to start at 0 (no copy)."""

    def __init__(self, store, first_doc: int, end_doc: int):
        off = np.asarray(store.offsets)
        self.tokens = store.tokens[int(off[first_doc]):int(off[end_doc])]
        self.offsets = off[first_doc:end_doc + 1] - off[first_doc]
        self.num_tokens = int(self.offsets[-1])
        self.num_docs = end_doc - first_doc


def split_stores(stores: dict, valid_fraction: float) -> tuple[dict, dict]:
    """Hold out the last ``valid_fraction`` of every language's documents (at least one) for validation."""
    train, valid = {}, {}
    for lang, s in stores.items():
        n = s.num_docs
        if n < 2 or valid_fraction <= 0:
            train[lang] = s
            continue
        k = min(max(1, int(round(n * valid_fraction))), n - 1)
        train[lang] = StoreView(s, 0, n - k)
        valid[lang] = StoreView(s, n - k, n)
    return train, valid


def open_train_valid_stores(train_data: Sequence[str], valid_data: Sequence[str], valid_fraction: float,
                            vocab_size: int) -> tuple[dict, dict]:
    """(train, valid) stores per language: every language of the ``train_data`` roots (a language in two
    roots is an error), validation from ``valid_data`` when given, else the last ``valid_fraction`` of each
    language's documents (``split_stores``)."""
    stores = {}
    for root in train_data:
        for lang, s in open_stores(root, vocab_size=vocab_size).items():
            if lang in stores:
                raise ValueError(f"language {lang!r} appears in two --train-data stores")
            stores[lang] = s
    if not valid_data:
        return split_stores(stores, valid_fraction)
    valid = {lang: s for root in valid_data for lang, s in open_stores(root, vocab_size=vocab_size).items()}
    return stores, valid


def _store_tokenizer(root: str) -> dict:
    if not (Path(root) / "index.json").is_file():
        raise FileNotFoundError(f"--train-data {root}: not a complete token store (no index.json)")
    rec = read_index(root).get("tokenizer", {})
    return rec if isinstance(rec, dict) else {}


def store_tokenizer_path(tokenizer_model: str | None, train_data: Sequence[str], valid_data: Sequence[str]) -> str:
    """``--tokenizer-model``, else the file recorded by the first store; every store's tokenizer hash must
    match the file (the file is hashed once)."""
    path = tokenizer_model
    if not path:
        path = _store_tokenizer(train_data[0]).get("file")
        if not path or not os.path.isfile(path):
            raise ValueError(f"the store {train_data[0]} records tokenizer {path!r}, which is not readable "
                             "here; pass --tokenizer-model FILE.model")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--tokenizer-model {path}: file not found")
    digest = sha256_file(path)
    for root in (*train_data, *valid_data):
        rec = _store_tokenizer(root)
        if rec.get("sha256") and rec["sha256"] != digest:
            raise ValueError(f"store {root} was tokenized with {rec.get('file')} (sha256 {rec['sha256'][:12]}...), "
                             f"not with {path} (sha256 {digest[:12]}...); re-run tools/preprocess_data.py")
    return path
