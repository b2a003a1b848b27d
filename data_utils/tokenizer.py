"""The multilingual GLM tokenizer: a sentencepiece model plus GLM's command tokens.

GLM (and Multilingual-GLM's `ChineseSPTokenizer`) append the command tokens *after* the sentencepiece
vocabulary. With N = number of sentencepiece pieces, the fixed layout that mGLM uses is

    <|endoftext|> (pad = eos)  N        <|startofpiece|> (sop)  N+6
    [SEP]                      N+1      <|endofpiece|>  (eop)   N+7
    [CLS]                      N+2      [sMASK]                 N+8
    [MASK]                     N+3      [gMASK]                 N+9
    [UNK]                      N+4      [dBLOCK] (optional)     N+10
    (N+5 is unused)

The model's embedding table is then padded to a multiple of 128 (times the tensor-parallel size), so
ids in ``[len(tokenizer), padded_vocab_size)`` exist in the model but are not tokens.

Sentencepiece's own specials (``<unk>``, ``<s>``, ``</s>``) stay ordinary text ids, exactly as in the
reference: characters unknown to the model map to sentencepiece's unk id, never to ``[UNK]``.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# (name, string, offset from N, lstrip). `lstrip` tokens swallow the whitespace before them when
# encoding, as GLM's tokenizer does for the mask tokens.
_COMMAND_LAYOUT: tuple[tuple[str, str, int, bool], ...] = (
    ("eos", "<|endoftext|>", 0, False),
    ("sep", "[SEP]", 1, False),
    ("cls", "[CLS]", 2, False),
    ("MASK", "[MASK]", 3, True),
    ("unk", "[UNK]", 4, False),
    ("sop", "<|startofpiece|>", 6, False),
    ("eop", "<|endofpiece|>", 7, False),
    ("sMASK", "[sMASK]", 8, True),
    ("gMASK", "[gMASK]", 9, True),
)
_DBLOCK = ("dBLOCK", "[dBLOCK]", 10, False)


@dataclass(frozen=True)
class CommandToken:
    name: str
    token: str
    id: int
    lstrip: bool = False


class GLMTokenizer:
    """Sentencepiece model + GLM command tokens in the reference fixed layout.

    Args:
        model_path: a sentencepiece ``.model`` file (for example the released ``mglm250k-uni.model``).
        add_dblock: also define ``[dBLOCK]`` at N+10 (only used with ``block_mask_prob > 0``).
    """

    def __init__(self, model_path: str | os.PathLike, add_dblock: bool = False):
        import sentencepiece as spm

        from common.errors import DataError

        self.model_path = os.fspath(model_path)
        self.add_dblock = bool(add_dblock)  # recorded in checkpoints (meta.json tokenizer_add_dblock)
        if os.path.isdir(self.model_path):
            raise FileNotFoundError(f"{self.model_path} is a directory; expected a sentencepiece .model file")
        if not os.path.isfile(self.model_path):
            raise FileNotFoundError(f"sentencepiece model not found: {self.model_path}")
        self.sp = spm.SentencePieceProcessor()
        try:
            ok = self.sp.Load(self.model_path)
        except Exception as e:  # sentencepiece raises OSError/RuntimeError with a C++ message
            raise DataError(
                f"{self.model_path} is not a valid sentencepiece model ({type(e).__name__}: {str(e).strip()})"
            ) from None
        if not ok:
            raise DataError(f"{self.model_path} is not a valid sentencepiece model")
        self.num_text_tokens = self.sp.GetPieceSize()
        n = self.num_text_tokens
        layout = _COMMAND_LAYOUT + ((_DBLOCK,) if add_dblock else ())
        self.command_tokens = [CommandToken(name, tok, n + off, ls) for name, tok, off, ls in layout]
        self._by_name = {c.name: c for c in self.command_tokens}
        self._by_token = {c.token: c for c in self.command_tokens}
        self._by_id = {c.id: c for c in self.command_tokens}
        # Longest first so that e.g. "[sMASK]" is never read as "[MASK]" preceded by "s".
        alternatives = sorted((re.escape(c.token) for c in self.command_tokens), key=len, reverse=True)
        self._split_re = re.compile("(" + "|".join(alternatives) + ")")

    # ----------------------------------------------------------------------------------------- sizes
    def __len__(self) -> int:
        """Number of token ids that mean something: N + 10 (or N + 11 with ``[dBLOCK]``)."""
        return max(self._by_id) + 1

    def padded_vocab_size(self, multiple: int = 128, tensor_parallel_size: int = 1) -> int:
        """Size of the model's embedding table: ``len(self)`` rounded up to ``multiple * tp``."""
        if multiple < 1 or tensor_parallel_size < 1:
            raise ValueError(f"multiple ({multiple}) and tensor_parallel_size ({tensor_parallel_size}) must be >= 1")
        m = multiple * tensor_parallel_size
        return -(-len(self) // m) * m

    # ------------------------------------------------------------------------------ command tokens
    def get_command(self, name: str) -> CommandToken:
        """Command token by short name (``eos``, ``pad``, ``sep``, ``cls``, ``MASK``, ``sMASK``, ...)."""
        if name == "pad":
            name = "eos"
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(
                f"unknown command token name {name!r}; known: pad, {', '.join(self._by_name)}"
            ) from None

    @property
    def pad_id(self) -> int:
        return self._by_name["eos"].id

    @property
    def eos_id(self) -> int:
        return self._by_name["eos"].id

    @property
    def cls_id(self) -> int:
        return self._by_name["cls"].id

    @property
    def mask_id(self) -> int:
        return self._by_name["MASK"].id

    @property
    def smask_id(self) -> int:
        return self._by_name["sMASK"].id

    @property
    def gmask_id(self) -> int:
        return self._by_name["gMASK"].id

    @property
    def sop_id(self) -> int:
        return self._by_name["sop"].id

    @property
    def eop_id(self) -> int:
        return self._by_name["eop"].id

    def is_command_id(self, token_id: int) -> bool:
        return token_id in self._by_id

    # --------------------------------------------------------------------------------- encoding
    def encode(self, text: str) -> list[int]:
        """Text -> ids. Command-token strings written in the text (``[MASK]``, ``[gMASK]``, ...) become
        their ids; everything else goes through sentencepiece."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        ids: list[int] = []
        parts = self._split_re.split(text)  # text, token, text, token, ..., text
        for i, part in enumerate(parts):
            if i % 2 == 1:
                ids.append(self._by_token[part].id)
                continue
            if i + 1 < len(parts) and self._by_token[parts[i + 1]].lstrip:
                part = part.rstrip()
            if part:
                ids.extend(self.sp.EncodeAsIds(part))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Command tokens are rendered by their string (``[MASK]``, ``<|endofpiece|>``, ...)."""
        out: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                piece = self.sp.IdToPiece(run[0])
                text = self.sp.DecodeIds(run)
                # sentencepiece drops the leading "▁" of a run; keep the space when text follows a token.
                if out and piece.startswith("\u2581") and not out[-1].endswith((" ", "\n")):
                    text = " " + text
                out.append(text)
                run.clear()

        for t in ids:
            t = self._as_id(t)
            if 0 <= t < self.num_text_tokens:
                run.append(t)
                continue
            cmd = self._by_id.get(t)
            if cmd is None:
                raise ValueError(self._bad_id_message(t))
            flush()
            if cmd.lstrip and out and not out[-1].endswith((" ", "\n")):
                out.append(" ")
            out.append(cmd.token)
        flush()
        return "".join(out)

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        """Token strings (sentencepiece pieces or command-token strings) -> ids."""
        ids = []
        for tok in tokens:
            if tok in self._by_token:
                ids.append(self._by_token[tok].id)
                continue
            pid = self.sp.PieceToId(tok)
            # PieceToId maps every unknown string to the unk id; only accept the unk piece itself.
            if pid == self.sp.unk_id() and tok != self.sp.IdToPiece(pid):
                raise ValueError(
                    f"unknown token {tok!r}: neither a piece of {self.model_path} nor a command token "
                    f"({', '.join(self._by_token)})"
                )
            ids.append(pid)
        return ids

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        """Ids -> token strings (pieces or command-token strings)."""
        toks = []
        for t in ids:
            t = self._as_id(t)
            if 0 <= t < self.num_text_tokens:
                toks.append(self.sp.IdToPiece(t))
            elif t in self._by_id:
                toks.append(self._by_id[t].token)
            else:
                raise ValueError(self._bad_id_message(t))
        return toks

    @staticmethod
    def _as_id(t: object) -> int:
        """An id as a Python int: ints, numpy integers and integer 0-d tensors pass; ``int(3.7)`` would
        silently decode token 3, so floats and strings are refused."""
        try:
            return operator.index(t)
        except TypeError:
            raise ValueError(f"token id {t!r} is not an integer ({type(t).__name__})") from None

    def _bad_id_message(self, t: int) -> str:
        if t < 0:
            return f"token id {t} is negative"
        if t < len(self):
            return f"token id {t} is the unused slot N+5 (N={self.num_text_tokens}) of the GLM layout, not a token"
        return (
            f"token id {t} is not a token: valid ids are 0..{len(self) - 1} "
            f"(ids {len(self)}.. are vocabulary padding of the embedding table)"
        )

    def __repr__(self) -> str:
        return f"GLMTokenizer({self.model_path!r}, sentencepiece={self.num_text_tokens}, tokens={len(self)})"
