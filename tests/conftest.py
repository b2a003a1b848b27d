"""Shared pytest fixtures: paths to the bundled sample data and to the team's shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SAMPLE_CORPUS = SAMPLE / "corpus"
SAMPLE_TOKENIZER = SAMPLE / "tokenizer" / "mglm-sample.model"
SHARED_DATA = Path(os.environ.get("MGLM_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("DS_ACCELERATOR", "cpu")

# Rendezvous variables left in this process by an in-process distributed test (or by the shell that
# runs pytest) would be inherited by every subprocess a later test starts, pointing it at a port that
# may be taken. Each test starts without them; tests that launch ranks set their own.
_RENDEZVOUS_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need CUDA: skipped, with the reason, where there is none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu); none is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_inherited_rendezvous(monkeypatch):
    for k in _RENDEZVOUS_VARS:
        monkeypatch.delenv(k, raising=False)


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason when a user's clone lacks it."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared/data is only laid out on the team's machines and CI)")
    return p


@pytest.fixture(scope="session")
def sample_tokenizer():
    from data_utils.tokenizer import GLMTokenizer

    return GLMTokenizer(SAMPLE_TOKENIZER)


@pytest.fixture(scope="session")
def cog_tokenizer():
    from data_utils.tokenizer import GLMTokenizer

    return GLMTokenizer(shared_path("tokenizers", "cog-pretrain.model"))


# A few sentences per script; enough for sentencepiece to learn pieces for each (data_utils tests).
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
    """A tiny unigram sentencepiece model with byte fallback, trained in a temp dir (no downloads)."""
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
