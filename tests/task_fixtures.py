"""Test helpers for finetuning: a tiny tokenizer whose pieces include the cloze verbalizers, and a tiny
pretrained checkpoint made by the real pretraining entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_CORPUS

# In this order (the ids they get): the separable-fixture test's trajectory depends on them.
VERBALIZER_PIECES = ["▁True", "▁False", "▁Maybe", "▁Yes", "▁No"]
TASK_DATA = REPO / "data" / "sample" / "tasks"


def train_task_tokenizer(out_dir: Path) -> Path:
    """A 3,000-piece sentencepiece model of the sample corpus with the cloze verbalizers as single pieces: like
    the bundled 8,000-piece sample tokenizer, but its smaller embedding table keeps the finetuning tests fast
    (and a checkpoint made with it has another vocabulary than the bundled tokenizer: the mismatch test)."""
    import sentencepiece as spm

    from tools.train_tokenizer import cloze_verbalizer_pieces

    missing = set(cloze_verbalizer_pieces()) - set(VERBALIZER_PIECES)
    assert not missing, f"add the verbalizer pieces {sorted(missing)} of a new cloze task to VERBALIZER_PIECES"

    out_dir.mkdir(parents=True, exist_ok=True)
    text = out_dir / "text.txt"
    with open(text, "w", encoding="utf-8") as w:
        for f in sorted(SAMPLE_CORPUS.glob("*.jsonl")):
            for line in f.open(encoding="utf-8"):
                w.write(json.loads(line)["text"] + "\n")
    spm.SentencePieceTrainer.Train(input=str(text), model_prefix=str(out_dir / "task"), model_type="unigram",
                                   vocab_size=3000, character_coverage=0.98, byte_fallback=True,
                                   user_defined_symbols=VERBALIZER_PIECES, num_threads=1, minloglevel=2,
                                   max_sentence_length=16384)
    return out_dir / "task.model"


def pretrain_tiny(tokenizer: Path, out_dir: Path, steps: int = 4) -> Path:
    """glm-tiny pretrained for a few steps on the sample corpus; returns the save directory."""
    import pretrain_glm
    from tools.preprocess_data import main as preprocess

    store = out_dir / "store"
    preprocess([str(SAMPLE_CORPUS), "-o", str(store), "--tokenizer-model", str(tokenizer), "--no-progress"])
    save = out_dir / "pretrained"
    pretrain_glm.main(["--model-config", str(REPO / "config/model/glm-tiny.json"), "--train-data", str(store),
                       "--tokenizer-model", str(tokenizer), "--seq-length", "64", "--train-iters", str(steps),
                       "--batch-size", "4", "--lr", "1e-3", "--log-interval", str(steps), "--eval-interval", "1000",
                       "--num-workers", "0", "--save", str(save), "--device", "cpu", "--no-tensorboard"])
    return save


def spaced_tokenizer(out_dir: Path):
    """The bundled sample model with sentencepiece's whitespace handling off (no dummy prefix, no removal of
    leading/trailing/repeated spaces): a tokenizer that keeps every space."""
    from conftest import SAMPLE_TOKENIZER
    from sentencepiece import sentencepiece_model_pb2

    from data_utils.tokenizer import GLMTokenizer

    m = sentencepiece_model_pb2.ModelProto()
    m.ParseFromString(SAMPLE_TOKENIZER.read_bytes())
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    path = out_dir / "spaced.model"
    path.write_bytes(m.SerializeToString())
    return GLMTokenizer(path)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: threads only contend (on a shared 2-core runner they cost 5-10x). Autouse in every test
    module that imports it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
