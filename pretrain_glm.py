"""Blank-infilling pretraining of (multilingual) GLM.

    python pretrain_glm.py --model-config config/model/glm-small.json --train-data STORE --train-iters 200
    deepspeed --num_gpus 8 pretrain_glm.py --deepspeed --deepspeed_config config/ds/zero1_bf16.json ...
    torchrun --nproc_per_node 2 pretrain_glm.py --model-parallel-size 2 ...

Flow: config (parsed once) -> torch.distributed + TP/DP groups -> tokenizer -> per-language token stores,
temperature-sampled ``BlockDataset`` and the blank-infilling collator -> ``GLMModel`` -> engine (DeepSpeed
or plain torch) -> optional ``--load`` (exact resume) / ``--load-pretrained`` (weights only) -> the loop.

Every batch is a pure function of (seed, step, micro-batch, data-parallel rank): the ranks of one
tensor-parallel group build the same batch without a broadcast, any number of loader workers gives the same
stream, and a resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from training.arguments import PretrainConfig, parse_pretrain_args


# ------------------------------------------------------------------------------------------ data
class StoreView:
    """A contiguous range of documents of a token store, with offsets rebased to start at 0 (no copy)."""

    def __init__(self, store, first_doc: int, end_doc: int):
        off = np.asarray(store.offsets)
        self.tokens = store.tokens[int(off[first_doc]):int(off[end_doc])]
        self.offsets = off[first_doc:end_doc + 1] - off[first_doc]
        self.num_tokens = int(self.offsets[-1])
        self.num_docs = end_doc - first_doc


def split_stores(stores: dict, valid_fraction: float) -> tuple[dict, dict]:
    """Hold out the last ``valid_fraction`` of every language's documents (at least one) for validation."""
    train, valid = {}, {}
    for lang, s in stores.items():
        n = s.num_docs
        if n < 2 or valid_fraction <= 0:
            train[lang] = s
            continue
        k = min(max(1, int(round(n * valid_fraction))), n - 1)
        train[lang] = StoreView(s, 0, n - k)
        valid[lang] = StoreView(s, n - k, n)
    return train, valid


# ------------------------------------------------------------------------------------------ model
def build_model_config(cfg: PretrainConfig, vocab_size: int, base_config: dict | None = None):
    """GLMConfig from --model-config (else ``base_config``, e.g. a checkpoint's recorded config), the model
    flags overriding its fields, and the tokenizer's padded vocabulary.

    The position table is never grown behind the user's back: ``--max-position-embeddings`` when given (also
    above a pretrained checkpoint's table, whose rows are then copied into the first rows), else the config's
    ``max_sequence_length``; a ``--seq-length`` above it is a UsageError naming both numbers."""
    from model import GLMConfig
    from training.errors import UsageError

    m = cfg.model
    if m.model_config:
        base = GLMConfig.from_json_file(m.model_config).to_dict()
        origin = m.model_config
    elif base_config:
        base = dict(base_config)
        origin = "the checkpoint's meta.json"
    else:
        base = {}
        origin = "GLMConfig's default; no --model-config"
    overrides = {
        "num_layers": m.num_layers, "hidden_size": m.hidden_size, "num_attention_heads": m.num_attention_heads,
        "max_sequence_length": m.max_position_embeddings, "hidden_dropout": m.hidden_dropout,
        "attention_dropout": m.attention_dropout,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    base["vocab_size"] = vocab_size
    if m.checkpoint_activations:
        base["checkpoint_activations"] = True
        base["checkpoint_num_layers"] = m.checkpoint_num_layers
    where = m.model_config or ("the checkpoint's model_config" if base_config else "the model flags")
    config = GLMConfig.from_dict(base, source=where)  # its errors name the source already
    seq, positions = cfg.data.seq_length, config.max_sequence_length
    if seq > positions:
        if m.max_position_embeddings is not None:
            raise UsageError(f"--seq-length {seq} exceeds --max-position-embeddings {positions}; raise "
                             f"--max-position-embeddings to at least {seq} or lower --seq-length")
        if base_config and not m.model_config:
            raise UsageError(f"--seq-length {seq} exceeds the {positions} positions of the pretrained model "
                             f"({origin}); lower --seq-length, or pass --max-position-embeddings {seq} to grow "
                             f"its position table (rows past {positions} start untrained)")
        raise UsageError(f"--seq-length {seq} exceeds the model's {positions} positions ({origin}); to train "
                         f"from scratch with longer sequences pass --max-position-embeddings {seq} (or set "
                         f"max_sequence_length in the model config), or lower --seq-length")
    try:
        config.validate(cfg.train.model_parallel_size, seq_length=seq)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return config


def _store_tokenizer(root: str) -> dict:
    from data_utils.corpus import read_index

    if not (Path(root) / "index.json").is_file():
        raise FileNotFoundError(f"--train-data {root}: not a complete token store (no index.json)")
    rec = read_index(root).get("tokenizer", {})
    return rec if isinstance(rec, dict) else {}


def resolve_tokenizer_path(cfg: PretrainConfig) -> str:
    """--tokenizer-model, else the file recorded by the store; the store's tokenizer hash must match."""
    from data_utils.corpus import sha256_file

    path = cfg.data.tokenizer_model
    if not path:
        path = _store_tokenizer(cfg.data.train_data[0]).get("file")
        if not path or not os.path.isfile(path):
            raise ValueError(f"the store {cfg.data.train_data[0]} records tokenizer {path!r}, which is not readable "
                             "here; pass --tokenizer-model FILE.model")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--tokenizer-model {path}: file not found")
    digest = sha256_file(path)
    for root in (*cfg.data.train_data, *cfg.data.valid_data):
        rec = _store_tokenizer(root)
        if rec.get("sha256") and rec["sha256"] != digest:
            raise ValueError(f"store {root} was tokenized with {rec.get('file')} (sha256 {rec['sha256'][:12]}...), "
                             f"not with {path} (sha256 {digest[:12]}...); re-run tools/preprocess_data.py")
    return path


# ------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    cfg = parse_pretrain_args(argv)
    return run(cfg)


def run(cfg: PretrainConfig) -> dict:
    from data_utils.blank_infilling import MODES, BlankInfillingCollator, BlankInfillingConfig
    from data_utils.corpus import open_stores
    from data_utils.datasets import BlockDataset, BlockDatasetConfig
    from data_utils.samplers import build_pretrain_loader
    from data_utils.sentence_end import SentenceEnds
    from data_utils.tokenizer import GLMTokenizer
    from model import GLMModel
    from model.glm import glm_lm_loss, model_flops_per_token, num_parameters, param_groups_for_weight_decay
    from training import checkpoint as ckpt
    from training.distributed import shutdown, start_run
    from training.engine import build_engine
    from training.logging import MetricsWriter
    from training.loop import LoopConfig, LoopState, perplexity, train
    from training.lr_schedule import LRSchedule

    t, d, o = cfg.train, cfg.data, cfg.optim
    if not d.train_data:
        raise ValueError("--train-data STORE is required (make a store with tools/preprocess_data.py)")
    run_ctx = start_run(t, "pretrain")
    info, ps, log = run_ctx.info, run_ctx.ps, run_ctx.log
    save_lock = None
    try:
        save_lock = ckpt.lock_save_dir(t.save, info.rank)  # one writer per --save, for the whole run

        # Tokenizer, data -------------------------------------------------------------------------
        # [dBLOCK] (N+10) exists only when the objective uses it; it can change the padded vocabulary, so
        # checkpoints record it and finetuning / generation rebuild the same tokenizer.
        add_dblock = d.block_mask_prob > 0 or d.context_mask_ratio > 0
        tok_path = resolve_tokenizer_path(cfg)  # hashes the file against the store's record: once
        tok = GLMTokenizer(tok_path, add_dblock=add_dblock)
        # A new table: the tokenizer padded to 128 x TP; --load-pretrained keeps the checkpoint's rows
        # (a released 250,112-row mGLM table at TP 4 too), refused before any tensor is read when the
        # tokenizer does not match them.
        pre = t.load_pretrained if t.load_pretrained and not t.load else None
        pre_meta = ckpt.pretrained_meta(pre)  # our checkpoint's meta.json: its architecture and positions
        vocab = ckpt.embedding_rows(tok, ps.tp_size, cfg.model.make_vocab_size_divisible_by, pre, pre_meta,
                                    tokenizer_path=tok_path, trust=t.trust_checkpoint)
        stores = {}
        for root in d.train_data:
            for lang, s in open_stores(root, vocab_size=tok.num_text_tokens).items():
                if lang in stores:
                    raise ValueError(f"language {lang!r} appears in two --train-data stores")
                stores[lang] = s
        if d.valid_data:
            valid_stores = {lang: s for root in d.valid_data
                            for lang, s in open_stores(root, vocab_size=tok.num_text_tokens).items()}
            train_stores = stores
        else:
            train_stores, valid_stores = split_stores(stores, d.valid_fraction)
        ends = SentenceEnds(tok)
        ds_cfg = BlockDatasetConfig(seq_length=d.seq_length, temperature=d.dataset_temperature, seed=t.seed)
        train_ds = BlockDataset(train_stores, ds_cfg, tok.cls_id, tok.eos_id, ends)
        log.info("language sampling (p_i ~ n_i^%.2f):\n%s", d.dataset_temperature, train_ds.language_table())
        collator = BlankInfillingCollator.from_tokenizer(
            BlankInfillingConfig(bert_prob=d.bert_prob, gap_sentence_prob=d.gap_sentence_prob,
                                 avg_block_length=d.avg_block_length, gpt_min_ratio=d.gpt_min_ratio,
                                 gpt_infill_prob=d.gpt_infill_prob, block_mask_prob=d.block_mask_prob,
                                 short_seq_prob=d.short_seq_prob, single_span_prob=d.single_span_prob,
                                 context_mask_ratio=d.context_mask_ratio,
                                 seq_length=d.seq_length), tok, ends)

        # Model, engine ---------------------------------------------------------------------------
        model_config = build_model_config(cfg, vocab, (pre_meta or {}).get("model_config"))
        model = GLMModel(model_config, ps, init_seed=t.seed).to(info.device)
        log.info(f"GLM {model_config.num_layers} layers, hidden {model_config.hidden_size}, heads "
                 f"{model_config.num_attention_heads}, vocab {vocab} ({len(tok)} tokens); "
                 f"{num_parameters(model) * ps.tp_size / 1e6:.2f} M parameters")
        if t.load_pretrained and not t.load:
            # Before the engine exists: DeepSpeed copies the weights into its fp32 masters / ZeRO partitions.
            src = ckpt.load_pretrained(model, t.load_pretrained, ps, trust=t.trust_checkpoint)
            log.info(f"initialised weights from {src}")
        if t.compile:
            model.compile()  # in place: state_dict keys unchanged, checkpoints stay interchangeable
        groups = param_groups_for_weight_decay(model, o.weight_decay)
        engine = build_engine(model, groups, ps, o, t, cfg.ds_config, info.device)
        schedule = LRSchedule(lr=o.lr, decay_iters=o.lr_decay_iters or t.train_iters, warmup=o.warmup,
                              decay_style=o.lr_decay_style, decay_ratio=o.lr_decay_ratio)

        # Resume / pretrained ---------------------------------------------------------------------
        state = LoopState()
        meta_base = {"config": cfg.to_dict(), "model_config": model_config.to_dict(), "tp_size": ps.tp_size,
                     "dp_size": ps.dp_size, "tokenizer": tok.model_path,
                     "tokenizer_add_dblock": add_dblock, "seed": t.seed}
        if t.load:
            load_dir, tag, meta = ckpt.resolve_intact(t.load)  # verified; falls back from a damaged newest
            ckpt.check_compatible(meta, model_config.to_dict(), ps.tp_size, f"--load {load_dir / tag}", ps.dp_size)
            engine.load(str(load_dir), tag, load_optimizer=not t.no_load_optim, trust=t.trust_checkpoint)
            ckpt.load_rng(load_dir, tag, info.rank, ps.rng_tracker, trust=t.trust_checkpoint)
            state.step = int(meta["step"])
            log.info(f"resumed from {load_dir / tag} at step {state.step}")

        # Loop ------------------------------------------------------------------------------------
        gas = engine.grad_accum
        device = info.device

        def to_device(batch: dict) -> dict:
            return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

        def loss_fn(eng, batch):
            b = to_device(batch)
            # Logits of the scored (Part B) positions only: [N, V/p].
            logits, _ = eng(b["text"], b["position_id"], b["attention_mask"], logit_mask=b["loss_mask"] != 0)
            return glm_lm_loss(logits, b["target"], b["loss_mask"], ps), batch["mode"]

        def train_batches(start_step: int) -> Iterator[dict]:
            # Loader step k = micro-batch k (GAS micro-batches per optimizer step), so resume is exact.
            return iter(build_pretrain_loader(train_ds, collator, global_batch_size=t.batch_size * ps.dp_size,
                                              dp_rank=ps.dp_rank, dp_world_size=ps.dp_size, seed=t.seed,
                                              start_step=start_step * gas, num_workers=d.num_workers,
                                              pin_memory=device.type == "cuda"))

        eval_fn = None
        if valid_stores:
            valid_ds = BlockDataset(valid_stores, ds_cfg, tok.cls_id, tok.eos_id, ends)

            def eval_fn(step: int) -> dict[str, float]:
                # The same eval_iters batches every time, so validation losses are comparable across steps.
                engine.eval()
                sums = torch.zeros(1 + len(MODES))  # total, then each objective
                counts = torch.zeros(1 + len(MODES))
                valid_batches = iter(build_pretrain_loader(valid_ds, collator, global_batch_size=t.batch_size * ps.dp_size,
                                                           dp_rank=ps.dp_rank, dp_world_size=ps.dp_size, seed=t.seed + 1))
                with torch.no_grad():
                    for _ in range(t.eval_iters):
                        batch = next(valid_batches)
                        loss, mode = loss_fn(engine, batch)
                        j = 1 + MODES.index(mode)
                        sums[0] += loss.float().cpu()
                        sums[j] += loss.float().cpu()
                        counts[0] += 1
                        counts[j] += 1
                if ps.dp_size > 1:
                    import torch.distributed as dist

                    dist.all_reduce(sums, group=ps.dp_group)
                    dist.all_reduce(counts, group=ps.dp_group)
                out = {}
                for j, name in enumerate(("loss", *(f"loss_{m}" for m in MODES))):
                    if counts[j] > 0:
                        v = float(sums[j] / counts[j])
                        out[name] = v
                        out["ppl" + name[4:]] = perplexity(v)
                return out

        save_fn = None
        if t.save:
            def save_fn(step: int) -> None:
                meta = {**meta_base, "data_position": {"step": step, "micro_batches": step * gas,
                                                       "samples": step * gas * t.batch_size * ps.dp_size}}
                path = ckpt.save_checkpoint(engine, t.save, step, meta, {"iteration": step}, info.rank,
                                            ps.rng_tracker)
                log.info(f"saved checkpoint {path}")

        log_dir = t.log_dir or (os.path.join(t.save, "logs") if t.save else None)
        # Step N is complete in checkpoint N (logged before it was saved): drop only the rows after it.
        writer = MetricsWriter(log_dir, info.rank, tensorboard=not t.no_tensorboard,
                               purge_step=state.step + 1 if state.step else None)
        peak = _peak_flops(device)
        loop_cfg = LoopConfig(
            train_iters=t.train_iters, grad_accum=gas, log_interval=t.log_interval, eval_interval=t.eval_interval,
            save_interval=t.save_interval, exit_signal_save=t.exit_signal_save,
            tokens_per_sample=d.seq_length, flops_per_token=model_flops_per_token(model_config, d.seq_length),
            peak_flops=peak, progress=sys.stderr.isatty(),
        )
        t0 = time.time()
        state = train(engine, ps, loop_cfg, state, schedule, loss_fn, train_batches, save_fn, eval_fn, writer,
                      info.rank)
        writer.close()
        result = {
            "step": state.step,
            "train_loss_first": state.step_losses[0] if state.step_losses else None,
            "train_loss_last": state.step_losses[-1] if state.step_losses else None,
            "train_losses": state.step_losses,
            "history": state.history,
            "valid": state.last_eval,
            "stopped_by_signal": state.stopped_by_signal,
            "wall_s": time.time() - t0,
            "world": {"tp": ps.tp_size, "dp": ps.dp_size},
        }
        if info.rank == 0 and (t.save or log_dir):
            out = Path(t.save or log_dir) / "results.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2))
        return result
    finally:
        if save_lock is not None:
            save_lock.release()
        shutdown()


def _peak_flops(device: torch.device) -> float:
    """Per-process peak for MFU: MGLM_PEAK_TFLOPS if set, the bf16 dense peak of known GPUs, else 0 (off)."""
    env = os.environ.get("MGLM_PEAK_TFLOPS")
    if env:
        return float(env) * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in (("H200", 989), ("H100", 989), ("A100", 312), ("A800", 312), ("V100", 125)):
            if key in name:
                return tflops * 1e12
    return 0.0


if __name__ == "__main__":
    from training.arguments import run_cli

    run_cli(main, "pretrain_glm.py")
