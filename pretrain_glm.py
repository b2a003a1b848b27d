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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from data_utils.blank_infilling import MODES, BlankInfillingCollator, BlankInfillingConfig
from data_utils.corpus import open_train_valid_stores, store_tokenizer_path
from data_utils.datasets import BlockDataset, BlockDatasetConfig
from data_utils.samplers import build_pretrain_loader
from data_utils.sentence_end import SentenceEnds
from data_utils.tokenizer import GLMTokenizer
from model import GLMModel
from model.config import build_model_config
from model.glm import glm_lm_loss, model_flops_per_token, num_parameters, param_groups_for_weight_decay
from mpu.initialize import ParallelState
from training import checkpoint as ckpt
from training import setup
from training.arguments import PretrainConfig, TrainArgs, parse_pretrain_args
from training.engine import build_engine
from training.loop import LoopConfig, LoopState, perplexity, train
from training.lr_schedule import LRSchedule


# ------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    cfg = parse_pretrain_args(argv)
    return run(cfg)


def run(cfg: PretrainConfig) -> dict:
    t, d, o = cfg.train, cfg.data, cfg.optim
    if not d.train_data:
        raise ValueError("--train-data STORE is required (make a store with tools/preprocess_data.py)")
    with setup.run_session(t, "pretrain") as session:
        info, parallel_state, log = session.info, session.parallel_state, session.log
        # Tokenizer, data: [dBLOCK] (N+10) exists only when the objective uses it; it can change the padded
        # vocabulary, so checkpoints record it and finetuning / generation rebuild the same tokenizer.
        tok = GLMTokenizer(store_tokenizer_path(d.tokenizer_model, d.train_data, d.valid_data),
                           add_dblock=d.block_mask_prob > 0 or d.context_mask_ratio > 0)
        # A new table: the tokenizer padded to 128 x TP; --load-pretrained keeps the checkpoint's rows (a
        # released 250,112-row mGLM table at TP 4 too), refused before any tensor is read when the tokenizer
        # does not match them.
        pre = t.load_pretrained if t.load_pretrained and not t.load else None
        pre_meta = ckpt.pretrained_meta(pre)  # our checkpoint's meta.json: its architecture and positions
        vocab = setup.vocab_rows(tok, parallel_state, cfg.model.make_vocab_size_divisible_by, pretrained=pre,
                                 pretrained_meta=pre_meta, trust=t.trust_checkpoint)
        data = build_data(cfg, tok, log)

        # Model, engine, resume -------------------------------------------------------------------
        model_config = build_model_config(cfg.model, vocab, seq_length=d.seq_length,
                                          tensor_parallel_size=t.model_parallel_size,
                                          base_config=(pre_meta or {}).get("model_config"))
        model = GLMModel(model_config, parallel_state, init_seed=t.seed).to(info.device)
        log.info(f"GLM {model_config.num_layers} layers, hidden {model_config.hidden_size}, heads "
                 f"{model_config.num_attention_heads}, vocab {vocab} ({len(tok)} tokens); "
                 f"{num_parameters(model) * parallel_state.tp_size / 1e6:.2f} M parameters")
        setup.load_pretrained_weights(model, t, parallel_state, log)
        setup.compile_model(model, t, log)
        engine = build_engine(model, param_groups_for_weight_decay(model, o.weight_decay), parallel_state, o, t,
                              cfg.ds_config, info.device)
        schedule = LRSchedule(lr=o.lr, decay_iters=o.lr_decay_iters or t.train_iters, warmup=o.warmup,
                              decay_style=o.lr_decay_style, decay_ratio=o.lr_decay_ratio)
        state = LoopState()
        found = setup.find_resume(t.load)
        if found is not None:
            state.step = setup.resume(engine, found, model_config, parallel_state, info.rank, t)
            log.info(f"resumed from {found.where} at step {state.step}")
        meta_base = setup.checkpoint_meta(cfg.to_dict(), model_config, parallel_state, tok, t.seed)

        # Loop ------------------------------------------------------------------------------------
        gas, device = engine.grad_accum, info.device

        def loss_fn(eng, batch):
            b = setup.to_device(batch, device)
            # Logits of the scored (Part B) positions only: [N, V/p].
            logits, _ = eng(b["text"], b["position_id"], b["sep"], logit_mask=b["loss_mask"] != 0)
            return glm_lm_loss(logits, b["target"], b["loss_mask"], parallel_state), batch["mode"]

        def train_batches(start_step: int) -> Iterator[dict]:
            # Loader step k = micro-batch k (GAS micro-batches per optimizer step), so resume is exact.
            return iter(data.loader(data.train, parallel_state, t, start_step * gas, d.num_workers,
                                    pin_memory=device.type == "cuda"))

        eval_fn = None
        if data.valid is not None:
            def eval_fn(step: int) -> dict[str, float]:
                return validate(engine, loss_fn, data, parallel_state, t)

        save_fn = setup.checkpoint_saver(engine, t.save, lambda step: {**meta_base, "data_position": {
            "step": step, "micro_batches": step * gas, "samples": step * gas * t.batch_size * parallel_state.dp_size}},
            parallel_state, info.rank, log)
        writer, log_dir = setup.metrics_writer(t, info.rank, state.step)
        loop_cfg = LoopConfig(
            train_iters=t.train_iters, grad_accum=gas, log_interval=t.log_interval, eval_interval=t.eval_interval,
            save_interval=t.save_interval, exit_signal_save=t.exit_signal_save,
            tokens_per_sample=d.seq_length, flops_per_token=model_flops_per_token(model_config, d.seq_length),
            peak_flops=setup.peak_flops(device),
        )
        t0 = time.time()
        state = train(engine, parallel_state, loop_cfg, state, schedule, loss_fn, train_batches, save_fn, eval_fn,
                      writer, info.rank)
        writer.close()
        result = {"step": state.step, **setup.loss_record(state), "valid": state.last_eval,
                  "stopped_by_signal": state.stopped_by_signal, "wall_s": time.time() - t0,
                  "world": {"tp": parallel_state.tp_size, "dp": parallel_state.dp_size}}
        if info.rank == 0 and (t.save or log_dir):
            out = Path(t.save or log_dir) / "results.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2))
        return result


# ------------------------------------------------------------------------------------------ data
@dataclass
class PretrainData:
    """The training and validation datasets (``valid`` None without validation documents) and the collator."""

    train: BlockDataset
    valid: BlockDataset | None
    collator: BlankInfillingCollator

    def loader(self, dataset: BlockDataset, parallel_state: ParallelState, t: TrainArgs, start_micro_batch: int = 0,
               num_workers: int = 0, pin_memory: bool = False, seed_offset: int = 0):
        """Batches of ``dataset`` for this data-parallel rank from micro-batch ``start_micro_batch``."""
        return build_pretrain_loader(dataset, self.collator, global_batch_size=t.batch_size * parallel_state.dp_size,
                                     dp_rank=parallel_state.dp_rank, dp_world_size=parallel_state.dp_size,
                                     seed=t.seed + seed_offset, start_step=start_micro_batch,
                                     num_workers=num_workers, pin_memory=pin_memory)


def build_data(cfg: PretrainConfig, tok: GLMTokenizer, log) -> PretrainData:
    """Per-language stores (validation from --valid-data or held out), temperature-sampled block datasets and
    the blank-infilling collator."""
    t, d = cfg.train, cfg.data
    train_stores, valid_stores = open_train_valid_stores(d.train_data, d.valid_data, d.valid_fraction,
                                                         tok.num_text_tokens)
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
    valid_ds = BlockDataset(valid_stores, ds_cfg, tok.cls_id, tok.eos_id, ends) if valid_stores else None
    return PretrainData(train_ds, valid_ds, collator)


def validate(engine, loss_fn, data: PretrainData, parallel_state: ParallelState, t: TrainArgs) -> dict[str, float]:
    """Mean validation loss (and perplexity), overall and per objective, over the same ``--eval-iters``
    batches every time, so validation losses are comparable across steps."""
    engine.eval()
    sums = torch.zeros(1 + len(MODES))  # total, then each objective
    counts = torch.zeros(1 + len(MODES))
    valid_batches = iter(data.loader(data.valid, parallel_state, t, seed_offset=1))
    with torch.no_grad():
        for _ in range(t.eval_iters):
            batch = next(valid_batches)
            loss, mode = loss_fn(engine, batch)
            j = 1 + MODES.index(mode)
            sums[0] += loss.float().cpu()
            sums[j] += loss.float().cpu()
            counts[0] += 1
            counts[j] += 1
    if parallel_state.dp_size > 1:
        import torch.distributed as dist

        dist.all_reduce(sums, group=parallel_state.dp_group)
        dist.all_reduce(counts, group=parallel_state.dp_group)
    out = {}
    for j, name in enumerate(("loss", *(f"loss_{m}" for m in MODES))):
        if counts[j] > 0:
            v = float(sums[j] / counts[j])
            out[name] = v
            out["ppl" + name[4:]] = perplexity(v)
    return out


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main, "pretrain_glm.py")
