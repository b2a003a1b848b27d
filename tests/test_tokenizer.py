"""GLMTokenizer: command-token layout, padding, round trips in every sample language, bad input."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SAMPLE_CORPUS, SAMPLE_TOKENIZER, shared_path

from data_utils.tokenizer import GLMTokenizer

SAMPLE_LANGS = ["ar", "de", "en", "es", "fr", "hi", "ja", "ru", "th", "zh"]


def sp_whitespace(s: str) -> str:
    """What sentencepiece's whitespace handling does to text: runs of spaces collapse, ends are stripped."""
    return re.sub(" +", " ", s).strip(" ")


# ------------------------------------------------------------------------ released GLM tokenizer
def test_cog_pretrain_command_ids(cog_tokenizer):
    tok = cog_tokenizer
    assert tok.num_text_tokens == 50000
    expected = {
        "<|endoftext|>": 50000,
        "[SEP]": 50001,
        "[CLS]": 50002,
        "[MASK]": 50003,
        "[UNK]": 50004,
        "<|startofpiece|>": 50006,
        "<|endofpiece|>": 50007,
        "[sMASK]": 50008,
        "[gMASK]": 50009,
    }
    assert tok.convert_tokens_to_ids(list(expected)) == list(expected.values())
    assert tok.convert_ids_to_tokens(list(expected.values())) == list(expected)
    assert (tok.pad_id, tok.eos_id, tok.mask_id, tok.sop_id, tok.eop_id, tok.smask_id, tok.gmask_id) == (
        50000, 50000, 50003, 50006, 50007, 50008, 50009,
    )
    assert len(tok) == 50010
    assert tok.padded_vocab_size(128) == 50048  # ceil(50010 / 128) * 128 = 391 * 128
    assert tok.padded_vocab_size(128, tensor_parallel_size=2) == 50176  # 196 * 256
    assert tok.padded_vocab_size(128, tensor_parallel_size=4) == 50176  # 98 * 512


def test_layout_at_mglm250k_size(tmp_path):
    """mglm250k-uni.model itself is not available here; a 250,000-piece unigram model stands in for it (the
    bundled model's 8,000 pieces plus rarely-matching filler pieces). Reference 4.6: with N = 250,000,
    [gMASK] = 250,009 and the table has ceil(250,010 / 128) * 128 = 250,112 rows."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(SAMPLE_TOKENIZER.read_bytes())
    for i in range(250_000 - len(proto.pieces)):
        piece = proto.pieces.add()
        piece.piece = f"\u2581\ue000{i}"  # private-use character: never in real text
        piece.score = -50.0
    path = tmp_path / "mglm250k-standin.model"
    path.write_bytes(proto.SerializeToString())
    tok = GLMTokenizer(path)
    assert tok.num_text_tokens == 250_000 and len(tok) == 250_010
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "[MASK]", "<|startofpiece|>", "<|endofpiece|>", "[sMASK]",
                                      "[gMASK]"]) == [250_000, 250_003, 250_006, 250_007, 250_008, 250_009]
    assert tok.padded_vocab_size(128) == 250_112
    assert tok.padded_vocab_size(128, tensor_parallel_size=4) == 250_368  # ceil(250,010 / 512) * 512
    s = "Die Katze schläft. 今天天气很好。 [gMASK]"
    ids = tok.encode(s)
    assert ids[-1] == 250_009 and tok.decode(ids) == s
    with pytest.raises(ValueError, match="token id 250112 "):
        tok.decode([250_112])


def test_dblock_is_optional(cog_tokenizer):
    with_dblock = GLMTokenizer(cog_tokenizer.model_path, add_dblock=True)
    assert with_dblock.get_command("dBLOCK").id == 50010
    assert len(with_dblock) == 50011
    with pytest.raises(ValueError, match="dBLOCK"):
        cog_tokenizer.get_command("dBLOCK")


def test_command_tokens_in_text(cog_tokenizer):
    tok = cog_tokenizer
    ids = tok.encode("北京是中国的首都 [MASK] 你好 [sMASK] x[gMASK]")
    assert ids.count(tok.mask_id) == 1 and ids.count(tok.smask_id) == 1 and ids.count(tok.gmask_id) == 1
    # "[sMASK]" must never be read as "s" + "[MASK]"
    assert tok.encode("[sMASK]") == [tok.smask_id]
    # lstrip tokens swallow the space before them: "a [MASK]" and "a[MASK]" encode the same
    assert tok.encode("hello [MASK]") == tok.encode("hello[MASK]")
    text = tok.decode(tok.encode("hello [MASK] world"))
    assert text == "hello [MASK] world"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_cog_pretrain_round_trip_on_xquad(cog_tokenizer, lang):
    """cog-pretrain is a zh/en model with NFKC normalisation: compare after the same normalisation."""
    import unicodedata

    data = json.loads(shared_path("xquad", f"xquad.{lang}.json").read_text(encoding="utf-8"))
    for article in data["data"][:5]:
        for para in article["paragraphs"]:
            s = para["context"]
            expected = sp_whitespace(unicodedata.normalize("NFKC", s))
            got = cog_tokenizer.decode(cog_tokenizer.encode(s))
            if "\u2047" in got:  # sentencepiece's unk rendering: characters outside this model's vocabulary
                continue
            assert got == expected


# ------------------------------------------------------------------------ bundled sample tokenizer
def iter_sample_texts(lang):
    with open(SAMPLE_CORPUS / f"{lang}.jsonl", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def test_sample_tokenizer_layout(sample_tokenizer):
    tok = sample_tokenizer
    n = tok.num_text_tokens
    assert [tok.eos_id, tok.mask_id, tok.sop_id, tok.eop_id, tok.smask_id, tok.gmask_id] == [
        n, n + 3, n + 6, n + 7, n + 8, n + 9,
    ]
    assert tok.padded_vocab_size() % 128 == 0 and tok.padded_vocab_size() >= n + 10


@pytest.mark.parametrize("lang", SAMPLE_LANGS)
def test_sample_round_trip_corpus(sample_tokenizer, lang):
    texts = list(iter_sample_texts(lang))
    assert len(texts) >= 40
    for s in texts:
        for line in s.split("\n"):
            assert sample_tokenizer.decode(sample_tokenizer.encode(line)) == sp_whitespace(line)


XQUAD_LANGS = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]


@pytest.mark.parametrize("lang", XQUAD_LANGS)
def test_sample_round_trip_xquad(sample_tokenizer, lang):
    """Byte fallback: even scripts absent from the sample corpus (Greek, Vietnamese) round-trip exactly."""
    data = json.loads(shared_path("xquad", f"xquad.{lang}.json").read_text(encoding="utf-8"))
    n = 0
    for article in data["data"]:
        for para in article["paragraphs"][:3]:
            texts = [para["context"]] + [qa["question"] for qa in para["qas"]]
            texts += [a["text"] for qa in para["qas"] for a in qa["answers"]]
            for s in texts:
                for line in s.split("\n"):
                    assert sample_tokenizer.decode(sample_tokenizer.encode(line)) == sp_whitespace(line)
                    n += 1
    assert n > 100


def test_convert_tokens_round_trip(sample_tokenizer):
    tok = sample_tokenizer
    ids = tok.encode("Multilingual GLM [MASK] 多语言")
    assert tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(ids)) == ids


# ------------------------------------------------------------------------------------ bad input
def test_missing_model_file(tmp_path):
    p = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(p))):
        GLMTokenizer(p)


def test_corrupt_model_file(tmp_path):
    p = tmp_path / "bad.model"
    p.write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(ValueError, match=re.escape(str(p))):
        GLMTokenizer(p)


def test_model_path_is_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path} is a directory")):
        GLMTokenizer(tmp_path)


@pytest.mark.parametrize("content", [b"", b"this is not a sentencepiece model", "half"])
def test_bad_model_errors_are_one_line_naming_the_path(tmp_path, content):
    p = tmp_path / "bad.model"
    if content == "half":  # a download cut short: a valid model's first half
        data = SAMPLE_TOKENIZER.read_bytes()
        content = data[: len(data) // 2]
    p.write_bytes(content)
    with pytest.raises(ValueError) as e:
        GLMTokenizer(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg


def test_non_integer_ids_are_refused(sample_tokenizer):
    """int(3.7) would silently decode token 3; integer types from numpy and torch are ids."""
    import numpy as np
    import torch

    for bad in (3.7, "5", None):
        with pytest.raises(ValueError, match=re.escape(f"token id {bad!r} is not an integer")):
            sample_tokenizer.decode([5, bad])
        with pytest.raises(ValueError, match="is not an integer"):
            sample_tokenizer.convert_ids_to_tokens([bad])
    ids = sample_tokenizer.encode("Le chat dort. [MASK]")
    assert sample_tokenizer.decode(np.array(ids, dtype=np.int64)) == "Le chat dort. [MASK]"
    assert sample_tokenizer.decode(torch.tensor(ids)) == "Le chat dort. [MASK]"
    assert sample_tokenizer.convert_ids_to_tokens(torch.tensor(ids)) == sample_tokenizer.convert_ids_to_tokens(ids)


def test_unknown_command_token(sample_tokenizer):
    with pytest.raises(ValueError, match="'BOGUS'"):
        sample_tokenizer.get_command("BOGUS")
    with pytest.raises(ValueError, match=re.escape("'[BOGUS]'")):
        sample_tokenizer.convert_tokens_to_ids(["[BOGUS]"])


@pytest.mark.parametrize("offset", [5, 10, 100])
def test_out_of_range_ids(sample_tokenizer, offset):
    bad = sample_tokenizer.num_text_tokens + offset
    with pytest.raises(ValueError, match=f"token id {bad} "):
        sample_tokenizer.decode([5, bad])
    with pytest.raises(ValueError, match=f"token id {bad} "):
        sample_tokenizer.convert_ids_to_tokens([bad])
    with pytest.raises(ValueError, match="token id -1 "):
        sample_tokenizer.decode([-1])


def test_bundled_model_is_the_one_in_the_repo():
    assert SAMPLE_TOKENIZER.is_file(), "the sample tokenizer is bundled in data/sample/tokenizer"


# ----------------------------------------------------------------------------- training tool
def test_train_tokenizer_is_reproducible(tmp_path):
    """Same corpus, different output folders and input spellings (files vs folder): identical model bytes."""
    import shutil

    from tools.train_tokenizer import train

    src = tmp_path / "corpus"
    src.mkdir()
    for lang in ("en", "zh", "hi"):
        shutil.copy(SAMPLE_CORPUS / f"{lang}.jsonl", src)
    a = train([str(src / f"{x}.jsonl") for x in ("en", "hi", "zh")], str(tmp_path / "a" / "m"), vocab_size=1500)
    b = train([str(src)], str(tmp_path / "b" / "m"), vocab_size=1500)
    assert a.read_bytes() == b.read_bytes()
    tok = GLMTokenizer(a)
    text = next(iter_sample_texts("hi")).split("\n")[0]
    assert tok.decode(tok.encode(text)) == sp_whitespace(text)


def test_train_tokenizer_bad_jsonl(tmp_path):
    from tools.train_tokenizer import train

    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n{"txt": "oops"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{src}:2")):
        train([str(src)], str(tmp_path / "m"), vocab_size=50)


def test_train_tokenizer_user_defined_symbols(tmp_path):
    """--user-defined-symbols: each symbol is one piece (a leading space is sentencepiece's "▁"), in running
    text too, and the vocabulary keeps its size; without the option the same words are split."""
    import shutil

    from tools.train_tokenizer import main

    src = tmp_path / "corpus"
    src.mkdir()
    for lang in ("en", "de"):
        shutil.copy(SAMPLE_CORPUS / f"{lang}.jsonl", src)
    words = [" Maybe", " Yes"]
    plain = GLMTokenizer(main([str(src), "--model-prefix", str(tmp_path / "p" / "m"), "--vocab-size", "1200"]))
    assert all(len(plain.encode(w)) > 1 for w in words), "pick words this corpus does not make single pieces"
    with_sym = GLMTokenizer(main([str(src), "--model-prefix", str(tmp_path / "u" / "m"), "--vocab-size", "1200",
                                  "--user-defined-symbols", " Maybe,\u2581Yes"]))
    assert with_sym.num_text_tokens == plain.num_text_tokens == 1200
    for w in words:
        ids = with_sym.encode(w)
        assert with_sym.convert_ids_to_tokens(ids) == ["\u2581" + w.strip()]
        assert with_sym.encode(w.strip()) == ids  # at the start of a text sentencepiece adds the "▁" itself
        running = with_sym.encode(f"He said{w}, and left.")
        assert ids[0] in running
        assert with_sym.decode(running) == f"He said{w}, and left."


def test_cloze_verbalizers_preset():
    """The preset is the union of the verbalizers of the registered cloze tasks (XNLI, PAWS-X)."""
    from tools.train_tokenizer import cloze_verbalizer_pieces

    assert cloze_verbalizer_pieces() == sorted(["\u2581True", "\u2581False", "\u2581Maybe", "\u2581Yes", "\u2581No"])


def test_bundled_sample_tokenizer_is_reproduced_by_the_documented_command(tmp_path):
    """The command in README's "Sample data" section, run again, gives the bundled file byte for byte."""
    import shlex

    from tools.train_tokenizer import main

    readme = (SAMPLE_CORPUS.parents[2] / "README.md").read_text(encoding="utf-8")
    lines = [x for x in readme.splitlines() if x.startswith("python tools/train_tokenizer.py data/sample/corpus")]
    assert len(lines) == 1, "README documents one command for the sample tokenizer"
    argv = shlex.split(lines[0])[2:]
    prefix = argv.index("--model-prefix") + 1
    assert argv[prefix] == "data/sample/tokenizer/mglm-sample"
    argv[prefix] = str(tmp_path / "mglm-sample")
    argv[0] = str(SAMPLE_CORPUS)
    assert main(argv).read_bytes() == SAMPLE_TOKENIZER.read_bytes()


def test_train_tokenizer_progress_report(tmp_path, capfd):
    """The command line reports what it read (counted here independently) and each EM round of training
    (sentencepiece's vocabulary shrinking towards the target), with elapsed times; --quiet drops the rounds;
    the report does not change the model."""
    import shutil

    from tools.train_tokenizer import main

    src = tmp_path / "corpus"
    src.mkdir()
    n_sent = n_chars = 0
    for lang in ("en", "de"):
        shutil.copy(SAMPLE_CORPUS / f"{lang}.jsonl", src)
        for text in iter_sample_texts(lang):
            lines = [x.strip() for x in text.split("\n") if x.strip()]
            n_sent += len(lines)
            n_chars += sum(map(len, lines))
    capfd.readouterr()
    a = main([str(src), "--model-prefix", str(tmp_path / "a" / "m"), "--vocab-size", "1200"])
    printed = capfd.readouterr()
    assert f"[train_tokenizer] 2 files, {n_sent} sentences, {n_chars} characters" in printed.out
    rounds = [x for x in printed.err.splitlines() if "EM sub_iter=" in x]
    assert len(rounds) >= 2, printed.err
    assert all(x.startswith("[train_tokenizer] ") for x in printed.err.splitlines() if x.strip())
    times = [float(x.split()[1].rstrip("s")) for x in rounds]
    sizes = [int(re.search(r"size=(\d+)", x).group(1)) for x in rounds]
    assert times == sorted(times) and sizes == sorted(sizes, reverse=True) and sizes[-1] >= 1200
    assert "trainer_spec" not in printed.err and "meta_piece" not in printed.err

    b = main([str(src), "--model-prefix", str(tmp_path / "b" / "m"), "--vocab-size", "1200", "--quiet"])
    printed = capfd.readouterr()
    assert "EM sub_iter=" not in printed.err
    assert a.read_bytes() == b.read_bytes()


def test_train_tokenizer_error_names_this_tools_flags(tmp_path):
    """Too few pieces for the corpus's characters: sentencepiece says `vocab_size` / `--character_coverage`;
    the user types --vocab-size / --character-coverage, so the line says those (and not 10 file names)."""
    from tools.train_tokenizer import train

    with pytest.raises(ValueError) as err:
        train([str(SAMPLE_CORPUS)], str(tmp_path / "m"), vocab_size=300)
    text = str(err.value)
    assert "Increase --vocab-size or decrease --character-coverage." in text, text
    assert "character_coverage" not in text and "vocab_size" not in text
    assert f"10 files ({SAMPLE_CORPUS / 'ar.jsonl'}, ...)" in text
