"""Data pipeline throughput: preprocessing (tokens/s per worker), BlockDataset and collator (samples/s at seq 512).

    python benchmarks/data_pipeline.py [--repeat 20] [--workers 2]

Uses the bundled sample corpus (``data/sample/corpus``, repeated ``--repeat`` times) and the sample tokenizer,
training a small tokenizer on the corpus when the bundled one is absent. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    from data_utils.blank_infilling import MODES, BlankInfillingCollator, BlankInfillingConfig
    from data_utils.corpus import open_stores, preprocess
    from data_utils.datasets import BlockDataset, BlockDatasetConfig
    from data_utils.sentence_end import SentenceEnds
    from data_utils.tokenizer import GLMTokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20, help="copies of the sample corpus to tokenize")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seq-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=60)
    a = ap.parse_args(argv)

    corpus_dir = REPO / "data" / "sample" / "corpus"
    files = sorted(corpus_dir.glob("*.jsonl"))
    result: dict = {"corpus": str(corpus_dir.relative_to(REPO)), "languages": [f.stem for f in files]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok_path = REPO / "data" / "sample" / "tokenizer" / "mglm-sample.model"
        if not tok_path.is_file():
            import contextlib

            from tools.train_tokenizer import train

            with contextlib.redirect_stdout(sys.stderr):  # keep stdout pure JSON
                tok_path = train([str(f) for f in files], str(tmp / "tok"), vocab_size=4000)
            result["tokenizer"] = "trained on the sample corpus (vocab 4000): bundled model absent"
        else:
            result["tokenizer"] = str(tok_path.relative_to(REPO))
        src = tmp / "in"
        src.mkdir()
        for f in files:  # each language file repeated
            data = f.read_bytes()
            (src / f.name).write_bytes(data * a.repeat)

        pre = {}
        for w in sorted({1, a.workers}):
            out = tmp / f"store{w}"
            s = preprocess([src], out, tok_path, workers=w, progress=False)
            pre[f"workers_{w}"] = {"docs": s.num_docs, "tokens": s.num_tokens, "seconds": round(s.seconds, 3),
                                   "tokens_per_s": round(s.num_tokens / s.seconds),
                                   "tokens_per_s_per_worker": round(s.num_tokens / s.seconds / w)}
        result["preprocess"] = pre

        tok = GLMTokenizer(tok_path)
        stores = open_stores(tmp / "store1")
        ends = SentenceEnds(tok)
        ds = BlockDataset(stores, BlockDatasetConfig(seq_length=a.seq_length), tok.cls_id, tok.eos_id, ends)
        n = a.batch_size * a.batches
        t0 = time.perf_counter()
        samples = [ds[i] for i in range(n)]
        t_ds = time.perf_counter() - t0
        result["block_dataset"] = {"samples_per_s": round(n / t_ds), "mean_len": float(np.mean([len(s["text"]) for s in samples]))}

        col = BlankInfillingCollator.from_tokenizer(BlankInfillingConfig(), tok, ends)
        coll = {}
        for mode in (*MODES, None):
            rng = np.random.default_rng(0)
            t0 = time.perf_counter()
            for b in range(a.batches):
                col.collate_numpy(samples[b * a.batch_size : (b + 1) * a.batch_size], rng, mode=mode)
            dt = time.perf_counter() - t0
            coll[mode or "mixed"] = round(n / dt)
        result[f"collator_samples_per_s_seq{a.seq_length}"] = coll
        # What one DataLoader worker does per batch: build the samples (BlockDataset) and collate them.
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for b in range(a.batches):
            batch = [ds[n + b * a.batch_size + j] for j in range(a.batch_size)]  # indices not yet drawn
            col.collate_numpy(batch, rng)
        worker = n / (time.perf_counter() - t0)
        # The mGLM recipe's extra options (block mask 0.1, short sequences 0.02) against none, same samples and
        # generators, plus short sequences on every batch (the split's own cost; output rows grow) and GLM's
        # context mask. All in bert mode (where the options act): a drawn mode mix would differ between
        # variants (their extra draws shift the stream) and swamp the options' cost.
        tok_d = GLMTokenizer(tok_path, add_dblock=True)
        variants = {"options_off": BlankInfillingConfig(),
                    "mglm_options": BlankInfillingConfig(block_mask_prob=0.1, short_seq_prob=0.02,
                                                         seq_length=a.seq_length),
                    "short_seq_every_batch": BlankInfillingConfig(short_seq_prob=1.0, seq_length=a.seq_length),
                    "context_mask_0.1": BlankInfillingConfig(context_mask_ratio=0.1)}
        opt = {}
        for name, cfg in variants.items():
            c = BlankInfillingCollator.from_tokenizer(cfg, tok_d, ends)
            rng = np.random.default_rng(0)
            t0 = time.perf_counter()
            for b in range(a.batches):
                c.collate_numpy(samples[b * a.batch_size : (b + 1) * a.batch_size], rng, mode="bert")
            opt[name] = round(n / (time.perf_counter() - t0))
        opt["ratio_mglm_options_vs_off"] = round(opt["mglm_options"] / opt["options_off"], 3)
        result[f"collator_options_bert_samples_per_s_seq{a.seq_length}"] = opt
        result["collator_target_samples_per_s"] = 600
        result["ratio_collator_mixed_vs_target"] = round(coll["mixed"] / 600, 3)
        result["worker_dataset_plus_collator_samples_per_s"] = round(worker)
        result["ratio_worker_vs_target"] = round(worker / 600, 3)
        shutil.rmtree(tmp / "in")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
