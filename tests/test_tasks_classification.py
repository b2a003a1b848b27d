"""Cloze classification: readers of the official formats, encoding (mGLM pvp.py), cloze scores vs the
model's full logits, TP=2 scores vs TP=1, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import SAMPLE_TOKENIZER
from distributed import run_distributed
from task_fixtures import TASK_DATA, train_task_tokenizer

from common.errors import DataError
from tasks.registry import TASKS


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from data_utils.tokenizer import GLMTokenizer

    return GLMTokenizer(train_task_tokenizer(tmp_path_factory.mktemp("tok")))


def xnli(tok, seq_length=128):
    from tasks.xnli import XNLI

    return XNLI(tok, seq_length)


# ------------------------------------------------------------------------------------------ readers
def test_xnli_xtreme_and_raw_layouts(tok):
    t = xnli(tok)
    x = TASK_DATA / "xnli" / "xtreme"
    train = t.read_split(x, "train", None)
    assert list(train) == ["en"] and len(train["en"]) == 15
    assert train["en"][1].label == "contradiction" and train["en"][0].text_a.startswith("The children")
    dev = t.read_split(x, "dev", None)
    assert list(dev) == ["ar", "de", "en", "es", "fr", "hi", "ru", "zh"]  # every language present, XNLI order
    test = t.read_split(x, "test", None)
    # The sample test files carry a label column (the reader's 3-column form; the raw test file's labels)
    assert set(test) == {"en", "de", "zh"}
    assert [e.label for e in test["de"]] == ["entailment", "contradiction", "neutral"]

    raw = TASK_DATA / "xnli" / "raw"
    rtrain = t.read_split(raw, "train", None)["en"]
    assert [e.label for e in rtrain] == [e.label for e in train["en"]]  # 'contradictory' -> 'contradiction'
    rdev = t.read_split(raw, "dev", None)
    assert list(rdev) == ["ar", "de", "en", "fr", "zh"]
    assert rdev["zh"][0].text_a == "老人在公园里散步。" and rdev["zh"][0].label == "entailment"
    only = t.read_split(raw, "test", ["de", "fr"])
    assert list(only) == ["de", "fr"] and len(only["de"]) == 6


def test_pawsx_raw_and_xtreme_layouts(tok):
    from tasks.pawsx import PAWSX

    t = PAWSX(tok, 128)
    for d in (TASK_DATA / "pawsx", TASK_DATA / "pawsx" / "x-final", TASK_DATA / "pawsx" / "xtreme"):
        train = t.read_split(d, "train", None)["en"]
        assert len(train) == 6 and [e.label for e in train[:2]] == ["1", "0"]
        dev = t.read_split(d, "dev", None)
        assert list(dev) == ["de", "en", "es", "fr", "ja", "ko", "zh"]
        assert dev["ja"][1].text_b == "彼は大阪から東京へ行った。" and dev["ja"][1].label == "0"
    assert all(e.label is None for e in t.read_split(TASK_DATA / "pawsx" / "xtreme", "test", None)["ko"])
    assert t.read_split(TASK_DATA / "pawsx", "test", None)["ko"][0].label == "1"  # raw test_2k has labels


# ------------------------------------------------------------------------------------------ errors
def test_bad_input_errors(tok, tmp_path):
    from tasks.pawsx import PAWSX

    t = xnli(tok)
    d = tmp_path / "x"
    d.mkdir()
    (d / "train-en.tsv").write_text("a premise\ta hypothesis\tentailment\nonly one column\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train-en\.tsv:2: 1 tab-separated field\(s\); expected"):
        t.read_split(d, "train", None)
    (d / "train-en.tsv").write_text("p\th\tentailment\np\th\tentails\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train-en\.tsv:2: unknown label 'entails'; expected one of "
                                         r"\['neutral', 'entailment', 'contradiction'\]"):
        t.read_split(d, "train", None)
    (d / "train-en.tsv").write_text("p\th\tentailment\np\th\tneutral\textra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train-en\.tsv:2: 4 tab-separated fields, more than the 3 columns"):
        t.read_split(d, "train", None)
    (d / "train-en.tsv").write_text("p\th\tentailment\tshifted\n", encoding="utf-8")  # a trailing field too
    with pytest.raises(DataError, match=r"train-en\.tsv:1: 4 tab-separated fields"):
        t.read_split(d, "train", None)
    (d / "train-en.tsv").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train-en\.tsv: the training file is empty"):
        t.read_split(d, "train", None)
    (d / "train-en.tsv").write_bytes("p\th\tneutral\nd\u00e9j\u00e0\th\tneutral\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"train-en\.tsv:2: not UTF-8 text \(byte 2 of the line: invalid "
                                         r"continuation byte\)"):
        t.read_split(d, "train", None)
    (d / "dev-en.tsv").write_text("p\th\tneutral\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"dev-sw\.tsv: the dev file of language 'sw' is missing"):
        t.read_split(d, "dev", ["en", "sw"])
    # An empty file: an error for a language listed by --languages; otherwise read as empty (the run reports it).
    (d / "dev-de.tsv").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev-de\.tsv: the dev file of language 'de' is empty \(listed by "):
        t.read_split(d, "dev", ["en", "de"])
    assert t.read_split(d, "dev", None) == {"de": [], "en": [t.read_split(d, "dev", ["en"])["en"][0]]}
    # No test file at all: no test split, even for languages asked for; one test file: the others are missing.
    assert t.read_split(d, "test", ["en", "de"]) == {} and t.read_split(d, "test", None) == {}
    (d / "test-en.tsv").write_text("p\th\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"test-de\.tsv: the test file of language 'de' is missing"):
        t.read_split(d, "test", ["en", "de"])
    no_fr = _pawsx_without_fr(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"x-final/fr/dev_2k\.tsv: the dev file of language 'fr'"):
        PAWSX(tok, 128).read_split(no_fr, "dev", ["en", "fr"])
    with pytest.raises(FileNotFoundError, match=r"x-final/fr/test_2k\.tsv: the test file of language 'fr'"):
        PAWSX(tok, 128).read_split(no_fr, "test", ["en", "fr"])
    for f in no_fr.glob("x-final/*/test_2k.tsv"):  # no test file at all: no test split
        f.unlink()
    assert PAWSX(tok, 128).read_split(no_fr, "test", ["en", "fr"]) == {}
    raw = tmp_path / "raw" / "x-final" / "en"
    raw.mkdir(parents=True)
    (raw / "train.tsv").write_text("id\tsentence1\tsentence2\tlabel\n1\ta\tb\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.tsv:2: unknown label '2'; expected one of \['0', '1'\]"):
        PAWSX(tok, 128).read_split(tmp_path / "raw", "train", None)
    (raw / "train.tsv").write_text("id\tsentence1\tsentence2\tlabel\n1\ta\tb\t1\n2\ta\tb\tc\t0\n",
                                   encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv:3: 5 tab-separated fields, more than the 4 columns of the "
                                         r"file \(a tab inside a text\?\); expected id, sentence1"):
        PAWSX(tok, 128).read_split(tmp_path / "raw", "train", None)


def _pawsx_without_fr(tmp_path):
    import shutil

    d = tmp_path / "p"
    shutil.copytree(TASK_DATA / "pawsx" / "x-final", d / "x-final")
    shutil.rmtree(d / "x-final" / "fr")
    return d


def test_multi_token_verbalizer_is_refused(tiny_tokenizer):
    """A tokenizer without the verbalizers as pieces (420 pieces, not trained with them) is refused at start,
    naming the verbalizer, its pieces and the tokenizer file."""
    import re

    pieces = tiny_tokenizer.convert_ids_to_tokens(tiny_tokenizer.encode(" Maybe"))
    assert len(pieces) > 1
    with pytest.raises(ValueError, match=re.escape(f"verbalizer ' Maybe' of label 'neutral' is {len(pieces)} tokens "
                                                   f"{pieces} with {tiny_tokenizer.model_path}")):
        xnli(tiny_tokenizer)


def _fixture_example(task):
    """The first English training example of the task's fixtures."""
    return task.read_split(TASK_DATA / task.name / "xtreme", "train", None)["en"][0]


def _cloze_task_names() -> list[str]:
    from tasks import registry
    from tasks.classification import ClozeClassificationTask

    # The benchmarks' cloze tasks (cloze on a user's files takes its verbalizers from the command line).
    names = [n for n in sorted(TASKS) if issubclass(registry.get(n), ClozeClassificationTask)
             and registry.get(n).verbalizers]
    assert {"xnli", "pawsx"} <= set(names)
    return names


@pytest.mark.parametrize("name", _cloze_task_names())
def test_registered_cloze_tasks_build_with_the_bundled_tokenizer(name):
    """Every registered cloze task runs with data/sample/tokenizer: each verbalizer is one token, the piece
    of the word after a space, and the same token comes out when the word fills the blank in running text
    (the pattern's text with the verbalizer in place of [MASK], tokenized as one string)."""
    from data_utils.tokenizer import GLMTokenizer
    from tasks import registry
    from tasks.classification import MASK, ClozeClassificationTask

    cls = registry.get(name)
    assert issubclass(cls, ClozeClassificationTask)
    tok = GLMTokenizer(SAMPLE_TOKENIZER)
    task = cls(tok, 256)
    assert len(set(task.label_ids.tolist())) == len(task.labels)
    ex = _fixture_example(task)
    for label, vid in zip(task.labels, task.label_ids.tolist(), strict=True):
        word = task.verbalizers[label]
        assert tok.convert_ids_to_tokens([vid]) == [word.replace(" ", "\u2581")]
        parts_a, parts_b = task.pattern(ex)
        texts = [p for p, _ in parts_a + parts_b]
        m = texts.index(MASK)
        before, after = "".join(texts[:m]), "".join(texts[m + 1:])
        head = tok.encode(before + word)
        assert head[-1] == vid, tok.convert_ids_to_tokens(head[-3:])
        assert tok.encode(before + word + after)[len(head) - 1] == vid  # what follows does not merge into it


def test_pattern_ids(tok):
    from tasks.pawsx import PAWSX

    with pytest.raises(ValueError, match="XNLI defines pattern 4 only"):
        from tasks.xnli import XNLI

        XNLI(tok, 128, pattern_id=0)
    with pytest.raises(ValueError, match="PAWS-X defines patterns 0-3"):
        PAWSX(tok, 128, pattern_id=5)


# ------------------------------------------------------------------------------------------ mGLM's parts
@pytest.fixture(scope="module")
def spaced_tok(tmp_path_factory):
    """The bundled sample model with sentencepiece's whitespace handling off (``task_fixtures.spaced_tokenizer``):
    a tokenizer that keeps every space, so a part ``" " + s`` and ``s``, or a stripped and an unstripped text,
    get different ids."""
    from task_fixtures import spaced_tokenizer

    return spaced_tokenizer(tmp_path_factory.mktemp("spaced"))


# mGLM's part lists (tasks/superglue/pvp.py, PawsxPVP / XnliPVP), for text_a = "The cat sleeps." and
# text_b = "A cat sleeps." (PAWS-X: s1 = text_a, s2 = text_b without its final period), as pieces of the
# space-keeping tokenizer worked out by hand: a leading space is the piece "▁", or part of a "▁word" piece.
S1 = ["T", "he", "▁ca", "t", "▁sleep", "s", "."]  # "The cat sleeps." (no leading space: no "▁The")
S1_SPACED = ["▁The", "▁ca", "t", "▁sleep", "s", "."]  # " " + "The cat sleeps."
S2 = ["A", "▁ca", "t", "▁sleep", "s"]  # "A cat sleeps"
PAWSX_PIECES = {
    0: [['"'], S2, ['"', "▁", "?"], "MASK", [","], ["▁", '"'], S1, ['"']],  # '"' s2 '" ?' M ',' ' "' s1 '"'
    1: [S2, ["?"], "MASK", [","], S1_SPACED],  # s2 '?' M ',' ' ' + s1
    2: [['"'], S2, ['"', "▁", "?"], "MASK", [".", "▁", '"'], S1, ['"']],  # '"' s2 '" ?' M '. "' s1 '"'
    3: [S2, ["?"], "MASK", ["."], S1_SPACED],  # s2 '?' M '.' ' ' + s1
}


def _ids(tok, parts) -> list[int]:
    """[CLS] parts <eos>: each part a list of pieces, a literal mGLM string (encoded by sentencepiece alone),
    or "MASK"."""
    ids = [tok.cls_id]
    for p in parts:
        if p == "MASK":
            ids.append(tok.mask_id)
        elif isinstance(p, str):
            ids.extend(tok.sp.EncodeAsIds(p))
        else:
            ids.extend(tok.sp.PieceToId(x) for x in p)
    assert tok.sp.unk_id() not in ids
    return ids + [tok.eos_id]


@pytest.mark.parametrize("pattern_id", [0, 1, 2, 3])
def test_pawsx_patterns_give_mglm_ids(spaced_tok, pattern_id):
    from tasks.base import Example
    from tasks.pawsx import PAWSX

    ex = Example("u", "en", "The cat sleeps.", "A cat sleeps.", "1", "f:1")
    s = PAWSX(spaced_tok, 128, pattern_id=pattern_id).encode(ex)
    expect = _ids(spaced_tok, PAWSX_PIECES[pattern_id])
    assert s["input_ids"] == expect, spaced_tok.convert_ids_to_tokens(s["input_ids"])
    assert s["mask_pos"] == expect.index(spaced_tok.mask_id)


def test_xnli_pattern_gives_mglm_ids(spaced_tok):
    """Premise ``text_a.strip()``, hypothesis ``text_b.rstrip(punctuation).strip()``: surrounding spaces are
    gone, and a hypothesis ending in ". " keeps its period (the strip comes after the punctuation strip)."""
    from tasks.base import Example

    t = xnli(spaced_tok)
    ex = Example("u", "en", "  The cat sleeps. ", "A cat sleeps. ", "entailment", "f:1")
    expect = _ids(spaced_tok, ['Based on the fact written in foreign language: "', S1, ['"', "."],
                               ' Is the followling statement reasonably True or definitely False: "', S2 + ["."],
                               ['"', "?"], ["▁An", "s", "w", "er", ":"], "MASK"])
    assert t.encode(ex)["input_ids"] == expect, spaced_tok.convert_ids_to_tokens(t.encode(ex)["input_ids"])
    plain = Example("v", "en", "The cat sleeps.", "A cat sleeps!?", "entailment", "f:2")
    assert t.encode(plain)["input_ids"] == _ids(spaced_tok, [
        'Based on the fact written in foreign language: "', S1, ['"', "."],
        ' Is the followling statement reasonably True or definitely False: "', S2, ['"', "?"],
        ["▁An", "s", "w", "er", ":"], "MASK"])


# mGLM's cut of an over-long input (PVP.truncate): per removed token, the group (parts_a / parts_b) whose
# shortenable parts are longer in total (a tie: parts_b) loses the last token of its LAST non-empty
# shortenable part. The pieces below are S1 / S2 cut by hand; seq_length = full length + 1 (<sop>) - k.
XNLI_HEAD = 'Based on the fact written in foreign language: "'
XNLI_MID = ' Is the followling statement reasonably True or definitely False: "'
XNLI_TAIL = [['"', "?"], ["▁An", "s", "w", "er", ":"], "MASK"]


def _xnli_pieces(premise, hypothesis):
    return [XNLI_HEAD, premise, ['"', "."], XNLI_MID, hypothesis, *XNLI_TAIL]


def test_xnli_overlong_input_cuts_the_hypothesis_first(spaced_tok):
    """XNLI has one group (premise ... hypothesis): the hypothesis is cut first even while the premise is
    longer (7 pieces against 5), down to nothing, and only then the premise."""
    from tasks.base import Example

    ex = Example("u", "en", "The cat sleeps.", "A cat sleeps.", "entailment", "f:1")
    full = len(_ids(spaced_tok, _xnli_pieces(S1, S2)))
    for k, premise, hypothesis in [(3, S1, ["A", "▁ca"]),  # over-long hypothesis: S1 untouched
                                   (5, S1, []),  # the hypothesis is gone, the premise still whole
                                   (8, S1[:4], [])]:  # then the premise loses its end
        got = xnli(spaced_tok, seq_length=full + 1 - k).encode(ex)["input_ids"]
        assert got == _ids(spaced_tok, _xnli_pieces(premise, hypothesis)), (k, spaced_tok.convert_ids_to_tokens(got))


def test_xnli_overlong_premise_loses_the_hypothesis_before_its_own_end(spaced_tok):
    """A long premise and a short hypothesis: mGLM still empties the hypothesis before cutting the premise."""
    from tasks.base import Example

    long_premise = S1 + ["▁The", "▁ca", "t", "▁sleep", "s", "."]  # "The cat sleeps. The cat sleeps."
    ex = Example("u", "en", "The cat sleeps. The cat sleeps.", "A cat.", "neutral", "f:1")
    full = len(_ids(spaced_tok, _xnli_pieces(long_premise, ["A", "▁ca", "t"])))
    got = xnli(spaced_tok, seq_length=full + 1 - 5).encode(ex)["input_ids"]
    assert got == _ids(spaced_tok, _xnli_pieces(long_premise[:-2], [])), spaced_tok.convert_ids_to_tokens(got)


@pytest.mark.parametrize("pattern_id", [0, 1])
def test_pawsx_overlong_input_cuts_the_longer_group_ties_to_sentence1(spaced_tok, pattern_id):
    """PAWS-X has two groups, a = s2 (5 pieces), b = s1 (pattern 0: 7 pieces, pattern 1: " " + s1, 6).
    Pattern 1, 4 tokens: b 6>5 -> b 5; tie -> b 4; a 5>4 -> a 4; tie -> b 3. Pattern 0, 4 tokens:
    b 7 -> 6 -> 5; tie -> b 4; a 5>4 -> a 4."""
    from tasks.base import Example
    from tasks.pawsx import PAWSX

    ex = Example("u", "en", "The cat sleeps.", "A cat sleeps.", "1", "f:1")
    pieces = PAWSX_PIECES[pattern_id]
    full = len(_ids(spaced_tok, pieces))
    s1, s2 = (S1[:4], S2[:4]) if pattern_id == 0 else (S1_SPACED[:3], S2[:4])
    cut = [s2 if p is S2 else s1 if p in (S1, S1_SPACED) else p for p in pieces]
    got = PAWSX(spaced_tok, full + 1 - 4, pattern_id=pattern_id).encode(ex)["input_ids"]
    assert got == _ids(spaced_tok, cut), spaced_tok.convert_ids_to_tokens(got)


def test_cloze_error_when_the_fixed_parts_alone_do_not_fit(spaced_tok):
    """Both texts cut to nothing and still too long: one error naming the row, the flag and the numbers."""
    from tasks.base import Example
    from tasks.pawsx import PAWSX

    ex = Example("u", "en", "The cat sleeps.", "A cat sleeps.", "entailment", "data/dev-en.tsv:7")
    fixed = len(_ids(spaced_tok, _xnli_pieces([], []))) - 2  # without [CLS] and <eos>
    with pytest.raises(ValueError, match=rf"^data/dev-en.tsv:7: task xnli with --seq-length 30: the fixed parts "
                                         rf"alone need {fixed} tokens, more than the 27 available$"):
        xnli(spaced_tok, seq_length=30).encode(ex)
    xnli(spaced_tok, seq_length=fixed + 3).encode(ex)  # exactly the fixed parts: both texts gone, no error
    # pattern 0's fixed pieces: '"' | '"' '▁' '?' | [MASK] | ',' | '▁' '"' | '"'  = 9
    with pytest.raises(ValueError, match=r"task pawsx with --seq-length 6: the fixed parts alone need 9 tokens"):
        PAWSX(spaced_tok, 6, pattern_id=0).encode(Example("v", "en", "The cat.", "A cat.", "1", "f:2"))


# ------------------------------------------------------------------------------------------ encoding
def test_encoding_layout_and_truncation(tok):
    """[CLS] pattern <eos> <sop>; sop at index sep with position (mask_pos, 1); parts tokenized separately;
    the longer shortenable part loses tokens from its end first."""
    from tasks.base import Example

    t = xnli(tok, seq_length=128)
    ex = Example("u", "en", "The cat sleeps on the warm mat.", "A cat is sleeping.", "entailment", "f:1")
    s = t.encode(ex)
    ids = s["input_ids"]
    parts = ['Based on the fact written in foreign language: "', ex.text_a, '".',
             ' Is the followling statement reasonably True or definitely False: "', "A cat is sleeping", '"?',
             " Answer:"]
    expect = [tok.cls_id] + sum((tok.encode(p) for p in parts), []) + [tok.mask_id, tok.eos_id]
    assert ids == expect and s["mask_pos"] == len(expect) - 2 and s["label"] == 1
    b = t.collate([s, t.encode(Example("v", "en", "x", "y", None, "f:2"))])
    n = len(ids)
    assert b["sep"][0] == n and b["text"][0, n] == tok.sop_id
    assert b["position_id"][0, :, n].tolist() == [n - 2, 1]
    assert b["position_id"][0, 0, :n].tolist() == list(range(n)) and b["position_id"][0, 1, :n].abs().sum() == 0
    assert b["label"].tolist() == [1, -1]

    # Truncation: the hypothesis goes first (mGLM), then the premise shrinks from its end until the whole fits.
    long = Example("w", "en", " ".join(["word"] * 80), "short one", "neutral", "f:3")
    short_len = len(t.encode(Example("w", "en", "", "short one", "neutral", "f:3"))["input_ids"])
    s2 = xnli(tok, seq_length=short_len + 1 + 10).encode(long)
    assert len(s2["input_ids"]) + 1 == short_len + 1 + 10
    assert s2["input_ids"][:12] == t.encode(long)["input_ids"][:12]  # the start of the premise is kept
    with pytest.raises(ValueError, match=r"f:3: task xnli with --seq-length 20: the fixed parts alone need \d+ tokens"):
        xnli(tok, seq_length=20).encode(long)


# ------------------------------------------------------------------------------------------ scores
def _tiny_model(vocab: int, parallel_state=None):
    from model import GLMConfig, GLMModel

    cfg = GLMConfig.from_dict({"num_layers": 2, "vocab_size": vocab, "hidden_size": 32, "num_attention_heads": 4,
                               "max_sequence_length": 128, "hidden_dropout": 0.0, "attention_dropout": 0.0})
    return GLMModel(cfg, parallel_state, init_seed=7).eval()


def _batch(tok):
    from tasks.base import Example

    t = xnli(tok)
    exs = [Example(str(i), "en", p, h, lab, "f") for i, (p, h, lab) in enumerate([
        ("The dog barks at night.", "A dog makes noise.", "entailment"),
        ("Le chat dort sur le lit.", "Le chat court dehors.", "contradiction"),
        ("老人在公园里散步。", "老人每天早上都散步。", "neutral")])]
    return t, t.collate([t.encode(e) for e in exs])


def test_cloze_scores_equal_full_logits(tok):
    """scores[b, c] == logits[b, sop_index_b, verbalizer_id_c] read from the model's own full logits."""
    from mpu.initialize import ParallelState

    t, b = _batch(tok)
    model = _tiny_model(tok.padded_vocab_size())
    parallel_state = ParallelState.single()
    with torch.no_grad():
        scores = t.scores(model, b, parallel_state)
        logits, _ = model(b["text"], b["position_id"], b["sep"])
    ids = [tok.encode(w)[0] for w in (" Maybe", " True", " False")]  # neutral, entailment, contradiction
    for i in range(3):
        sop = int((b["text"][i] == tok.sop_id).nonzero()[0])
        for c in range(3):
            assert torch.allclose(scores[i, c], logits[i, sop, ids[c]].float())
    loss = t.loss(model, b, parallel_state)
    manual = -torch.log_softmax(scores, -1)[torch.arange(3), b["label"]].mean()
    assert torch.allclose(loss, manual)
    assert t.predict(model, b, parallel_state) == [t.labels[j] for j in scores.argmax(-1).tolist()]


def _tp_scores(rank, world, tok_path):
    from data_utils.tokenizer import GLMTokenizer
    from model.checkpoint_compat import shard_state_dict
    from mpu.initialize import ParallelState

    tok = GLMTokenizer(tok_path)
    t, b = _batch(tok)
    parallel_state = ParallelState.from_torch_distributed(world)
    full = _tiny_model(tok.padded_vocab_size(128, world)).state_dict()
    model = _tiny_model(tok.padded_vocab_size(128, world), parallel_state)
    model.load_state_dict(shard_state_dict(full, world, rank))
    scores = t.scores(model, b, parallel_state)
    loss = torch.nn.functional.cross_entropy(scores, b["label"])
    loss.backward()
    return scores.detach(), model.word_embeddings.weight.grad.clone()


@pytest.mark.slow
def test_cloze_scores_tp2_equal_tp1(tok):
    """Vocab-parallel gathering of the verbalizer logits: scores and embedding grads at TP=2 == TP=1."""
    from mpu.initialize import ParallelState

    t, b = _batch(tok)
    model = _tiny_model(tok.padded_vocab_size(128, 2))
    scores = t.scores(model, b, ParallelState.single())
    torch.nn.functional.cross_entropy(scores, b["label"]).backward()
    grad = model.word_embeddings.weight.grad
    out = run_distributed(_tp_scores, 2, tok.model_path)
    for r, (s, g) in enumerate(out):
        assert torch.allclose(s, scores.detach(), atol=1e-5)
        n = g.shape[0]
        assert torch.allclose(g, grad[r * n:(r + 1) * n], atol=1e-6)
