"""Transformers tokenizer of an mglm GLM model (copied into every ``tools/export_hf.py`` folder).

A sentencepiece model (``tokenizer.model``) plus GLM's command tokens at fixed ids after its N pieces:
``<|endoftext|>`` N (eos = pad), ``[SEP]`` N+1, ``[CLS]`` N+2, ``[MASK]`` N+3, ``[UNK]`` N+4,
``<|startofpiece|>`` N+6, ``<|endofpiece|>`` N+7, ``[sMASK]`` N+8, ``[gMASK]`` N+9 (``[dBLOCK]`` N+10 when
the model was trained with it). ``tokenizer_config.json`` lists them under ``added_tokens_decoder``. Text
between command tokens goes through sentencepiece; no token is added automatically (a blank-filling context
is ``[CLS] text-with-[MASK] <|endoftext|>``, written out in the text or added by the caller).

This file needs only ``sentencepiece`` and ``transformers``; it must not import anything of the mglm repository.
"""

from __future__ import annotations

import os
import shutil

from transformers import PreTrainedTokenizer


class MGLMTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids"]

    def __init__(self, vocab_file: str, **kwargs) -> None:
        import sentencepiece as spm

        # The base constructor looks the vocabulary up, so the model must be loaded first.
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor()
        self.sp_model.Load(vocab_file)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        """Sentencepiece pieces N (the command tokens are added tokens above them)."""
        return self.sp_model.GetPieceSize()

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp_model.IdToPiece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.EncodeAsPieces(text)

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.PieceToId(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.IdToPiece(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.sp_model.DecodePieces(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + self.vocab_files_names["vocab_file"]
        out = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(out):
            shutil.copyfile(self.vocab_file, out)
        return (out,)
