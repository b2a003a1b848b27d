"""Sentence-end tables: every script mGLM covers, byte-fallback pieces, and the Thai whitespace rule."""

from __future__ import annotations

import numpy as np
import pytest

from data_utils.sentence_end import SentenceEnds


def ends_as_text(tok, se, text):
    """Decoded text of each sentence (split after every flagged token)."""
    ids = np.array(tok.sp.encode(text), dtype=np.int64)
    flags = se(ids)
    cuts = [0] + (np.flatnonzero(flags) + 1).tolist()
    if cuts[-1] != len(ids):
        cuts.append(len(ids))
    return [tok.sp.decode(ids[a:b].tolist()).strip() for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def test_cog_pretrain_english_and_chinese(cog_tokenizer):
    se = SentenceEnds(cog_tokenizer)
    assert ends_as_text(cog_tokenizer, se, "Hello world. How are you? Fine!") == ["Hello world.", "How are you?", "Fine!"]
    assert ends_as_text(cog_tokenizer, se, "你好。今天天气好吗？很好！走吧") == ["你好。", "今天天气好吗?", "很好!", "走吧"]
    # command tokens are never sentence ends
    assert not se.table[[cog_tokenizer.eos_id, cog_tokenizer.cls_id, cog_tokenizer.mask_id]].any()
    assert len(se.table) == len(cog_tokenizer)


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("The cat sat. Where is the dog? Here!", ["The cat sat.", "Where is the dog?", "Here!"]),
        ("Wait; look: a bird", ["Wait;", "look:", "a bird"]),
        ("Yeast makes it rise… Then", ["Yeast makes it rise…", "Then"]),
        ("今天天气很好。你去吗？好；走吧", ["今天天气很好。", "你去吗？", "好；", "走吧"]),
        ("यह एक वाक्य है। यह दूसरा वाक्य है॥ हम", ["यह एक वाक्य है।", "यह दूसरा वाक्य है॥", "हम"]),
        ("هل أنت بخير؟ نعم أنا بخير.", ["هل أنت بخير؟", "نعم أنا بخير."]),
        ("یہ ایک جملہ ہے۔ وہ گھر گیا۔", ["یہ ایک جملہ ہے۔", "وہ گھر گیا۔"]),
        ("ይህ ዓረፍተ ነገር ነው። ሌላ", ["ይህ ዓረፍተ ነገር ነው።", "ሌላ"]),
        ("line one\nline two", ["line one", "line two"]),
        # Thai: a space between Thai words separates sentences; Thai followed by Latin does not
        ("สวัสดีครับ วันนี้อากาศดีมาก", ["สวัสดีครับ", "วันนี้อากาศดีมาก"]),
        ("ภาษาไทยไม่มีจุด hello world", ["ภาษาไทยไม่มีจุด hello world"]),
    ],
)
def test_scripts_with_tiny_multilingual_model(tiny_tokenizer, text, sentences):
    se = SentenceEnds(tiny_tokenizer)
    assert ends_as_text(tiny_tokenizer, se, text) == sentences


def test_byte_fallback_pieces(tiny_tokenizer):
    sp = tiny_tokenizer.sp
    se = SentenceEnds(tiny_tokenizer)
    newline = sp.PieceToId("<0x0A>")
    dot = sp.PieceToId("<0x2E>")
    assert sp.IsByte(newline) and sp.IsByte(dot)
    assert se.table[newline]
    assert not se.table[dot]  # a byte piece never ends a sentence unless it is the newline byte
    byte_ids = [i for i in range(sp.GetPieceSize()) if sp.IsByte(i)]
    assert se.table[byte_ids].sum() == 1
    # an unseen character falls back to bytes: no false sentence end inside it
    ids = np.array(sp.encode("☃"), dtype=np.int64)
    assert all(sp.IsByte(int(i)) for i in ids if sp.IdToPiece(int(i)) != "▁")
    assert not se(ids).any()
