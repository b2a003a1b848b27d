"""Sentence ends over token ids, for every script mGLM covers.

GLM decides "this token ends a sentence" by looking for ``. ? ! ; : 。 ？ ！ ； … \\n`` in the token's string.
That misses most non-Latin scripts, so here the set is extended (Devanagari ``। ॥``, Arabic ``؟ ۔``,
Ethiopic ``።``) and Thai, which separates sentences by a space rather than a mark, gets a context rule.

The decision is a boolean table over the vocabulary, computed once from the sentencepiece pieces, so that
marking a whole sequence is one fancy-indexing op: ``table[tokens]``.

- Byte-fallback pieces (``<0x..>``) never end a sentence, except the newline byte ``<0x0A>``.
- Control / unknown pieces and GLM command tokens (ids >= N) never end a sentence.
- Thai rule: a token containing Thai characters that is followed by a piece starting with ``▁`` (that is,
  whitespace follows it in the text) ends a sentence when the text after the space is Thai as well (the next
  piece holds Thai characters, or is a bare ``▁`` followed by a Thai piece).
"""

from __future__ import annotations

import numpy as np

# One string; membership of any of these characters in a piece makes it a sentence end.
SENTENCE_END_CHARS = (
    ".?!;:"  # Latin (and Arabic full stop)
    "\u2026"  # … ellipsis
    "\u3002\uff01\uff1f\uff1b"  # CJK 。！？；
    "\u0964\u0965"  # Devanagari । ॥
    "\u061f\u06d4"  # Arabic ؟ ۔
    "\u1362"  # Ethiopic ።
    "\n"
)
_SPACE = "\u2581"  # sentencepiece's whitespace marker


def _is_thai_char(c: str) -> bool:
    return "\u0e00" <= c <= "\u0e7f"


class SentenceEnds:
    """Vocabulary tables for sentence-end detection.

    Args:
        tokenizer: a ``GLMTokenizer`` (uses ``tokenizer.sp`` and ``len(tokenizer)``); or pass ``pieces``.
        size: table length (default ``len(tokenizer)``); ids >= the sentencepiece size are never ends.
    """

    def __init__(self, tokenizer=None, *, pieces: list[str] | None = None, byte_ids=(), size: int | None = None):
        if tokenizer is not None:
            sp = tokenizer.sp
            n = sp.GetPieceSize()
            pieces = [sp.IdToPiece(i) for i in range(n)]
            byte_ids = [i for i in range(n) if sp.IsByte(i)]
            special = {i for i in range(n) if sp.IsControl(i) or sp.IsUnknown(i)}
            size = size or len(tokenizer)
        else:
            assert pieces is not None, "give a tokenizer or pieces"
            n = len(pieces)
            special = set()
            size = size or n
        assert size >= n
        end = np.zeros(size, dtype=bool)
        thai = np.zeros(size, dtype=bool)
        space_start = np.zeros(size, dtype=bool)
        chars = set(SENTENCE_END_CHARS)
        bytes_ = set(byte_ids)
        self.bare_space_id = -1
        for i, p in enumerate(pieces):
            if i in special:
                continue
            if i in bytes_:
                end[i] = p.upper() == "<0X0A>"
                continue
            end[i] = any(c in chars for c in p)
            thai[i] = any(_is_thai_char(c) for c in p)
            space_start[i] = p.startswith(_SPACE)
            if p == _SPACE:
                self.bare_space_id = i
        self.table = end  # static ends: bool [size]
        self.thai = thai
        self.space_start = space_start
        self.has_thai = bool(thai.any())

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        """bool [n]: does token i end a sentence (static table, plus the Thai whitespace rule)."""
        tokens = np.asarray(tokens)
        ends = self.table[tokens]
        if self.has_thai and len(tokens) > 1:
            th = self.thai[tokens]
            if th.any():
                nxt = tokens[1:]
                nxt_thai = th[1:].copy()
                # a bare "▁" piece: look one further for the Thai text after the space
                bare = nxt == self.bare_space_id
                if bare.any():
                    after = np.zeros_like(nxt_thai)
                    after[:-1] = th[2:]
                    nxt_thai |= bare & after
                ends[:-1] |= th[:-1] & self.space_start[nxt] & nxt_thai
        return ends
