"""Shared fixtures: a tiny multilingual sentencepiece model trained in a temp dir (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A few sentences per script; enough for sentencepiece to learn pieces for each.
MULTILINGUAL_SENTENCES = [
    "The cat sat on the mat. Where is the dog? Here it is! Wait; look: a bird.",
    "Bread needs flour, water and salt. Yeast makes it rise… Then we bake it.",
    "Der Hund schläft im Garten. Morgen regnet es wieder!",
    "今天天气很好。我们去公园吧！你去吗？好；走吧。",
    "यह एक वाक्य है। यह दूसरा वाक्य है॥ हम घर जाते हैं।",
    "هذه جملة عربية. هل أنت بخير؟ نعم أنا بخير.",
    "یہ ایک جملہ ہے۔ وہ گھر گیا۔",
    "ይህ ዓረፍተ ነገር ነው። ሌላ ዓረፍተ ነገር።",
    "สวัสดีครับ วันนี้อากาศดีมาก เราไปเที่ยวกันไหม ผมชอบกินข้าว",
    "ภาษาไทยไม่มีจุด ประโยคแยกด้วยช่องว่าง hello world",
]


def train_tiny_sp(prefix: Path, sentences: list[str], vocab_size: int = 420) -> Path:
    import sentencepiece as spm

    text = prefix.with_suffix(".txt")
    text.write_text("\n".join(sentences * 3) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.Train(
        input=str(text), model_prefix=str(prefix), model_type="unigram", vocab_size=vocab_size,
        character_coverage=1.0, byte_fallback=True, hard_vocab_limit=False, normalization_rule_name="identity",
        num_threads=1, shuffle_input_sentence=False, minloglevel=2,
    )
    return prefix.with_name(prefix.name + ".model")


@pytest.fixture(scope="session")
def tiny_sp_model(tmp_path_factory) -> Path:
    return train_tiny_sp(tmp_path_factory.mktemp("sp") / "tiny", MULTILINGUAL_SENTENCES)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_sp_model):
    from data_utils.tokenizer import GLMTokenizer

    return GLMTokenizer(tiny_sp_model)


@pytest.fixture(scope="session")
def cog_tokenizer():
    path = SHARED_DATA / "tokenizers" / "cog-pretrain.model"
    if not path.is_file():
        pytest.skip(f"shared data absent: {path} (needs ../shared/data next to the repo)")
    from data_utils.tokenizer import GLMTokenizer

    return GLMTokenizer(path)
