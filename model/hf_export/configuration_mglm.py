"""Transformers configuration of an mglm GLM model (copied into every ``tools/export_hf.py`` folder).

The field names are those of GLM's hub ``config.json`` (THUDM), so the folder also loads back into mglm
(``--load-pretrained OUT``). ``model_type`` is ``"mglm"``, not ``"glm"``: Transformers registers ``"glm"``
for its built-in GLM-4 classes, which a GLM-1 config would be mistaken for.

This file needs only ``transformers``; it must not import anything of the mglm repository.
"""

from __future__ import annotations

from transformers import PretrainedConfig


class MGLMConfig(PretrainedConfig):
    """GLM (blank infilling) decoder: pre-LN transformer, tanh GELU, tied output embedding, 2D positions.

    Token ids (``sop_token_id``, ``end_token_ids`` (eop, eos), ``mask_token_ids``, ``banned_token_ids``,
    ``generatable_vocab_size``) are those of the tokenizer the model was trained with; ``fill_blank`` uses them.
    """

    model_type = "mglm"

    def __init__(self, num_layers: int = 2, vocab_size: int = 1024, hidden_size: int = 64,
                 num_attention_heads: int = 4, embedding_dropout_prob: float = 0.1,
                 attention_dropout_prob: float = 0.1, output_dropout_prob: float = 0.1,
                 max_sequence_length: int = 512, checkpoint_activations: bool = False,
                 checkpoint_num_layers: int = 1, parallel_output: bool = True, relative_encoding: bool = False,
                 block_position_encoding: bool = True, output_predict: bool = True, spell_length=None,
                 spell_func: str = "lstm", attention_scale: float = 1.0, layernorm_epsilon: float = 1e-5,
                 intermediate_size: int | None = None, initializer_range: float = 0.02,
                 sop_token_id: int | None = None, end_token_ids: list[int] | None = None,
                 mask_token_ids: list[int] | None = None, banned_token_ids: list[int] | None = None,
                 generatable_vocab_size: int | None = None, **kwargs) -> None:
        self.num_layers = num_layers
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.embedding_dropout_prob = embedding_dropout_prob
        self.attention_dropout_prob = attention_dropout_prob
        self.output_dropout_prob = output_dropout_prob
        self.max_sequence_length = max_sequence_length
        self.checkpoint_activations = checkpoint_activations
        self.checkpoint_num_layers = checkpoint_num_layers
        self.parallel_output = parallel_output
        self.relative_encoding = relative_encoding
        self.block_position_encoding = block_position_encoding
        self.output_predict = output_predict
        self.spell_length = spell_length
        self.spell_func = spell_func
        self.attention_scale = attention_scale
        self.layernorm_epsilon = layernorm_epsilon
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.initializer_range = initializer_range
        self.sop_token_id = sop_token_id
        self.end_token_ids = list(end_token_ids or [])
        self.mask_token_ids = list(mask_token_ids or [])
        self.banned_token_ids = list(banned_token_ids or [])
        self.generatable_vocab_size = generatable_vocab_size
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(**kwargs)
