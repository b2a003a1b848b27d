"""Preprocessing raw corpora into the token store: formats, bad input reporting, determinism, atomicity."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pytest

from data_utils import corpus
from data_utils.corpus import TokenStore, open_stores
from tools import preprocess_data

EN_DOCS = ["The cat sat on the mat. Where is the dog?", "Bread needs flour, water and salt.", "Here it is!"]
DE_DOCS = ["Der Hund schläft im Garten.", "Morgen regnet es wieder!"]


def run(tmp_path, model, inputs, out="store", extra=()):
    argv = [*map(str, inputs), "--tokenizer-model", str(model), "-o", str(tmp_path / out), "--no-progress", *extra]
    return preprocess_data.main(argv)


def all_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")


def test_formats_and_round_trip(tmp_path, tiny_sp_model, tiny_tokenizer):
    src = tmp_path / "in"
    src.mkdir()
    write_jsonl(src / "en.jsonl", EN_DOCS)
    # mGLM layout: gz plain text, blank-line-separated, NO trailing blank line -> last doc is kept
    with gzip.open(src / "de_0001.json.gz", "wt", encoding="utf-8") as f:
        f.write("Der Hund schläft\nim Garten.\n\n\nMorgen regnet es wieder!")
    (tmp_path / "notes.txt").write_text("यह एक वाक्य है।\n\nहम घर जाते हैं।\n", encoding="utf-8")
    (tmp_path / "mixed.jsonl").write_text(json.dumps({"text": "هل أنت بخير؟", "lang": "ar"}) + "\n", encoding="utf-8")
    run(tmp_path, tiny_sp_model, [src], "s1")
    run(tmp_path, tiny_sp_model, [tmp_path / "notes.txt"], "s2", ["--lang", "hi"])
    run(tmp_path, tiny_sp_model, [tmp_path / "mixed.jsonl"], "s3")
    stores = open_stores(tmp_path / "s1")
    assert sorted(stores) == ["de", "en"]
    en, de = stores["en"], stores["de"]
    assert [tiny_tokenizer.decode(en.doc(i)) for i in range(en.num_docs)] == EN_DOCS
    assert [tiny_tokenizer.decode(de.doc(i)) for i in range(de.num_docs)] == ["Der Hund schläft\nim Garten.",
                                                                               "Morgen regnet es wieder!"]
    assert en.num_tokens == sum(len(tiny_tokenizer.sp.encode(t)) for t in EN_DOCS)
    assert en.doc_lengths.tolist() == [len(tiny_tokenizer.sp.encode(t)) for t in EN_DOCS]
    assert isinstance(en.tokens, np.memmap) and en.doc(0).dtype == np.int32
    meta = json.loads((tmp_path / "s1" / "en" / "meta.json").read_text())
    assert meta["num_docs"] == 3 and meta["tokenizer"]["sha256"] == corpus.sha256_file(tiny_sp_model)
    assert meta["tokenizer"]["vocab_size"] == len(tiny_tokenizer)
    hi = open_stores(tmp_path / "s2")["hi"]
    assert [tiny_tokenizer.decode(hi.doc(i)) for i in range(2)] == ["यह एक वाक्य है।", "हम घर जाते हैं।"]
    assert list(open_stores(tmp_path / "s3")) == ["ar"]
    # every record of mixed.jsonl names its language: "mixed" (the file name) is not a language of the run
    assert json.loads((tmp_path / "s3" / "index.json").read_text())["empty_languages"] == []


def test_bad_input_is_reported_and_counted(tmp_path, tiny_sp_model, caplog, capsys):
    fr = tmp_path / "fr.jsonl"
    fr.write_bytes(
        b'{"text": "Bonjour."}\n'  # 1 ok
        b"not json\n"  # 2 invalid_json
        b'{"text": "   "}\n'  # 3 empty_text
        b'{"title": "x"}\n'  # 4 missing_text
        b'{"text": "caf\xff"}\n'  # 5 invalid_utf8
        b'{"text": "Salut!"}\n'  # 6 ok
    )
    empty = tmp_path / "de.jsonl"
    empty.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="data_utils.corpus"):
        summary = run(tmp_path, tiny_sp_model, [fr, empty])
    msgs = [r.getMessage() for r in caplog.records]
    for line, reason in [(2, "invalid_json"), (3, "empty_text"), (4, "missing_text"), (5, "invalid_utf8")]:
        assert any(f"{fr}:{line} ({reason})" in m for m in msgs), (line, msgs)
    assert any(str(empty) in m and "empty_file" in m for m in msgs)
    assert any(f"language de has zero documents (from {empty})" in m for m in msgs)
    assert any(f"{fr}:5 (invalid_utf8): byte 0xff at column 14 is not UTF-8" in m for m in msgs), msgs
    expected = {"invalid_json": 1, "empty_text": 1, "missing_text": 1, "invalid_utf8": 1, "empty_file": 1}
    assert summary.skipped == expected and summary.empty_languages == ["de"]
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert index["skipped"] == expected and index["languages"] == ["fr"] and index["empty_languages"] == ["de"]
    assert json.loads((tmp_path / "store" / "fr" / "meta.json").read_text())["skipped"] == {
        "invalid_json": 1, "empty_text": 1, "missing_text": 1, "invalid_utf8": 1}
    assert TokenStore(tmp_path / "store" / "fr").num_docs == 2
    out = capsys.readouterr().out
    assert "invalid_json=1" in out and "empty_file=1" in out


def test_missing_input_and_existing_output(tmp_path, tiny_sp_model):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        run(tmp_path, tiny_sp_model, [missing])
    write_jsonl(tmp_path / "en.jsonl", EN_DOCS)
    run(tmp_path, tiny_sp_model, [tmp_path / "en.jsonl"])
    with pytest.raises(ValueError, match="exists"):
        run(tmp_path, tiny_sp_model, [tmp_path / "en.jsonl"])
    run(tmp_path, tiny_sp_model, [tmp_path / "en.jsonl"], extra=["--overwrite"])


def test_byte_identical_with_1_and_2_workers(tmp_path, tiny_sp_model):
    rng = np.random.default_rng(0)
    words = "the cat dog sat on mat bread salt water der hund im garten".split()
    for lang in ("en", "de", "fr"):
        docs = [" ".join(rng.choice(words, size=int(rng.integers(3, 40)))) + "." for _ in range(300)]
        write_jsonl(tmp_path / f"{lang}.jsonl", docs)
    inputs = [tmp_path / f"{x}.jsonl" for x in ("en", "de", "fr")]
    run(tmp_path, tiny_sp_model, inputs, "w1", ["--workers", "1", "--chunk-docs", "7"])
    run(tmp_path, tiny_sp_model, inputs, "w2", ["--workers", "2", "--chunk-docs", "7"])
    run(tmp_path, tiny_sp_model, inputs, "w2b", ["--workers", "2", "--chunk-docs", "7"])
    a, b, c = (all_bytes(tmp_path / x) for x in ("w1", "w2", "w2b"))
    assert a == b == c and "en/tokens.bin" in a


def test_interrupted_run_leaves_no_store(tmp_path, tiny_sp_model, monkeypatch):
    write_jsonl(tmp_path / "en.jsonl", EN_DOCS * 10)
    calls = {"n": 0}
    real = corpus._process_chunk

    def flaky(records):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(records)

    monkeypatch.setattr(corpus, "_process_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_sp_model, [tmp_path / "en.jsonl"], extra=["--chunk-docs", "4"])
    assert not (tmp_path / "store").exists()
    with pytest.raises(FileNotFoundError, match="index.json"):
        open_stores(tmp_path / "store")
    assert not list(tmp_path.glob(".store.tmp-*"))  # the temp folder is removed too
    half = tmp_path / "half" / "en"  # a folder without meta.json is never mistaken for a store
    half.mkdir(parents=True)
    (half / "tokens.bin").write_bytes(b"\0" * 8)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        TokenStore(half)


def test_bad_bytes_in_plain_text_name_their_line(tmp_path, tiny_sp_model, caplog):
    """A plain-text document spans lines: a bad byte on its third line is reported at that line; the other
    documents of the file are kept, and a language whose only document is bad is reported with its file."""
    sw = tmp_path / "sw.txt"
    sw.write_bytes(b"Habari yako.\n\nMstari wa kwanza.\nMstari wa pili.\nMbaya \xc3\x28 sana.\n\nNzuri sana!\n")
    yo = tmp_path / "yo_0001.json.gz"
    with gzip.open(yo, "wb") as f:
        f.write(b"\xfe only bad\n")
    with caplog.at_level(logging.WARNING, logger="data_utils.corpus"):
        summary = run(tmp_path, tiny_sp_model, [sw, yo])
    msgs = [r.getMessage() for r in caplog.records]
    # the document starts on line 3; the bad byte 0xc3 is on line 5, column 7
    assert any(f"{sw}:3 (invalid_utf8): byte 0xc3 at column 7 (line 5) is not UTF-8" in m for m in msgs), msgs
    assert any(f"{yo}:1 (invalid_utf8): byte 0xfe at column 1 is not UTF-8" in m for m in msgs), msgs
    assert any(f"language yo has zero documents (from {yo})" in m for m in msgs), msgs
    assert summary.skipped == {"invalid_utf8": 2} and summary.empty_languages == ["yo"]
    assert summary.languages == {"sw": {"docs": 2, "tokens": summary.languages["sw"]["tokens"]}}


def test_progress_shows_docs_and_tokens_per_second(tmp_path, tiny_sp_model, capsys, monkeypatch):
    # stderr is captured (not a terminal): plain progress lines, one per update with the interval at 0 s
    monkeypatch.setenv("MGLM_PROGRESS_SECONDS", "0")
    write_jsonl(tmp_path / "en.jsonl", EN_DOCS * 20)
    corpus.preprocess([tmp_path / "en.jsonl"], tmp_path / "store", tiny_sp_model, chunk_docs=8, progress=True)
    lines = capsys.readouterr().err.splitlines()
    progress = [line for line in lines if line.startswith("tokenizing: ")]
    assert progress and progress[-1].startswith("tokenizing: 60 doc, ") and progress[-1].endswith(" tok/s"), lines
