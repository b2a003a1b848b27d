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
