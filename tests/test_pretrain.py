"""Pretraining end to end: launchers, exact resume after kill -9, ZeRO-stage equivalence, clear errors.

The runs are tiny (glm-tiny, seq 64) but real: the deepspeed launcher / torchrun with gloo on CPU.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, SAMPLE_CORPUS, SAMPLE_TOKENIZER

PY = sys.executable
BIN = Path(PY).parent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The bundled sample corpus tokenized with the bundled tokenizer."""
    from tools.preprocess_data import main as preprocess

    out = tmp_path_factory.mktemp("store") / "sample"
    preprocess([str(SAMPLE_CORPUS), "-o", str(out), "--tokenizer-model", str(SAMPLE_TOKENIZER), "--no-progress"])
    return out


def free_port() -> int:
    from training.distributed import free_port as fp

    return fp()


def env() -> dict:
    e = dict(os.environ)
    e.update(PYTHONUNBUFFERED="1", DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return e


def common(store, save, iters=12, lr_decay_iters=12):
    return ["--model-config", "config/model/glm-tiny.json", "--train-data", str(store), "--seq-length", "64",
            "--train-iters", str(iters), "--lr-decay-iters", str(lr_decay_iters), "--log-interval", "4",
            "--eval-interval", "1000", "--eval-iters", "1", "--num-workers", "0", "--save", str(save),
            "--device", "cpu"]


def ds_json(tmp_path, stage: int, name="ds.json", micro_batch: int = 4) -> str:
    p = tmp_path / name
    p.write_text(json.dumps({
        "train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
        "zero_optimization": {"stage": stage},
        "optimizer": {"type": "AdamW", "params": {"lr": 2e-3, "weight_decay": 0.01, "betas": [0.9, 0.98], "eps": 1e-6}},
    }))
    return str(p)


def launch(args, nproc: int = 1) -> list[str]:
    """The command for 1 plain process or ``nproc`` torchrun workers."""
    if nproc == 1:
        return [PY, "pretrain_glm.py", *args]
    return [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", str(free_port()),
            "pretrain_glm.py", *args]


def run(cmd, timeout=240) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def results(save) -> dict:
    return json.loads((Path(save) / "results.json").read_text())


# ------------------------------------------------------------------------------------ launchers
@pytest.mark.slow
@pytest.mark.parametrize("mp", ["1", "2"])
def test_launcher_script_two_cpu_processes(store, tmp_path, mp):
    """scripts/ds_pretrain_multilingual.sh with the tiny preset under the deepspeed launcher, DP=2 or TP=2."""
    save = tmp_path / "ck"
    e = env()
    e.update(PRESET="cpu-tiny", NUM_GPUS="2", MP_SIZE=mp, DATA=str(store), SAVE=str(save), PY=PY,
             MASTER_PORT=str(free_port()))
    p = subprocess.run(["bash", "scripts/ds_pretrain_multilingual.sh", "--train-iters", "16", "--log-interval", "4"],
                       cwd=REPO, env=e, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert f"TP {mp} x DP {2 // int(mp)}" in p.stdout
    r = results(save)
    assert r["step"] == 16 and r["world"] == {"tp": int(mp), "dp": 2 // int(mp)}
    losses = r["train_losses"]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3, losses  # the loss falls
    assert (save / "latest").read_text() == "global_step16"
    files = {f.name for f in (save / "global_step16").iterdir()}
    assert {f"mp_rank_{r:02d}_model_states.pt" for r in range(int(mp))} <= files and "meta.json" in files


# ---------------------------------------------------------------------------------- exact resume
def _kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process below it (torchrun puts its workers in their own sessions)."""
    import psutil

    parent = psutil.Process(pid)
    children = parent.children(recursive=True)
    for p in [parent, *children]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    # Not the parent: Popen.wait() must reap it itself to see the -9 exit status.
    psutil.wait_procs(children, timeout=30)


def _kill_at_step(cmd, target: int) -> None:
    """Start ``cmd`` (logging every step) and kill -9 every process of the run right after step ``target``."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if re.search(rf"\bstep {target}/\d+ \| loss", line):
                _kill_tree(proc.pid)
                break
        else:
            pytest.fail(f"run ended before step {target}:\n" + "".join(out[-40:]))
    finally:
        proc.wait(timeout=60)
    assert proc.returncode != 0, "the run was supposed to die"


@pytest.mark.slow
@pytest.mark.parametrize("engine, stage, tp, nproc", [("torch", None, 1, 1), ("deepspeed", 0, 1, 1),
                                                      ("deepspeed", 2, 1, 1), ("deepspeed", 0, 2, 2),
                                                      ("deepspeed", 2, 2, 2), ("deepspeed", 1, 1, 2)])
def test_kill9_and_resume_is_exact(store, tmp_path, engine, stage, tp, nproc):
    """Losses after the resume equal the uninterrupted run's, and metrics.jsonl holds every step exactly
    once (the checkpoint's own step included: it was logged before it was saved)."""
    # Big enough steps (~0.1 s) that the run is still alive when the kill lands after the target step.
    iters = 20
    extra = ["--model-parallel-size", str(tp), "--save-interval", "4"]
    if engine == "deepspeed":
        extra += ["--deepspeed", "--deepspeed_config", ds_json(tmp_path, stage, micro_batch=16 // (nproc // tp))]
    else:
        extra += ["--batch-size", "16", "--lr", "2e-3"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run(launch(common(store, ref, iters) + extra, nproc=nproc))
    reference = results(ref)["train_losses"]
    assert len(reference) == iters

    target = random.randint(5, 10)  # a random step after the first checkpoint (step 4)
    _kill_at_step(launch(common(store, killed, iters) + extra + ["--log-interval", "1"], nproc=nproc), target)
    resumed_from = int((killed / "latest").read_text().removeprefix("global_step"))
    assert resumed_from == 4 * (target // 4) or resumed_from == 4 * (target // 4) - 4  # a save may have been cut
    p = run(launch(common(store, killed, iters) + extra + ["--load", str(killed), "--log-interval", "1"],
                   nproc=nproc))
    assert f"resumed from {killed / f'global_step{resumed_from}'} at step {resumed_from}" in p.stdout, p.stdout
    resumed = results(killed)
    assert resumed["step"] == iters
    tail = resumed["train_losses"]
    assert len(tail) == iters - resumed_from, p.stdout
    diff = max(abs(a - b) for a, b in zip(tail, reference[resumed_from:], strict=True))
    assert diff <= 1e-6, (tail, reference[resumed_from:])
    rows = [json.loads(x) for x in (killed / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in rows if r["group"] == "train") == list(range(1, iters + 1))


# -------------------------------------------------------------------------- ZeRO stages agree
def _weights(save: Path, tag: str) -> dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if any(save.joinpath(tag).glob("*optim_states.pt")):  # ZeRO 1-3: fp32 weights from the partitions
        return get_fp32_state_dict_from_zero_checkpoint(str(save), tag=tag)
    return torch.load(save / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]


@pytest.mark.slow
def test_zero_stages_give_the_same_training(store, tmp_path):
    steps = 5
    runs = {}
    for stage in (0, 1, 2, 3):
        save = tmp_path / f"z{stage}"
        run(launch(common(store, save, steps) + ["--save-interval", str(steps), "--deepspeed", "--deepspeed_config",
                                                 ds_json(tmp_path, stage, f"z{stage}.json")]))
        runs[stage] = (results(save)["train_losses"], _weights(save, f"global_step{steps}"))
    first0, w0 = runs[0]
    for stage in (1, 2, 3):
        losses, w = runs[stage]
        assert abs(losses[0] - first0[0]) <= 1e-6, (stage, losses[0], first0[0])
        assert set(w) == set(w0)
        worst = max(float((w[k].float() - w0[k].float()).abs().max()) for k in w0)
        assert worst <= 1e-5, (stage, worst)
    # --load-pretrained reads a ZeRO-3 checkpoint (partitions only) back into a plain model.
    from model import GLMConfig, GLMModel
    from mpu.initialize import ParallelState
    from training.checkpoint import load_pretrained

    meta = json.loads((tmp_path / "z3" / f"global_step{steps}" / "meta.json").read_text())
    model = GLMModel(GLMConfig.from_dict(meta["model_config"]))
    load_pretrained(model, tmp_path / "z3", ParallelState.single())
    got = model.state_dict()
    assert max(float((got[k] - w0[k].float()).abs().max()) for k in w0) <= 1e-5


# -------------------------------------------------------------------------------- clear errors
def _error(args) -> str:
    p = subprocess.run([PY, "pretrain_glm.py", *args], cwd=REPO, env=env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pretrain_glm.py: error: "), p.stderr
    return lines[0]


def test_error_missing_data():
    assert "--train-data /no/such/store" in _error(["--train-data", "/no/such/store"])


def test_error_flag_contradicts_deepspeed_json(store, tmp_path):
    path = ds_json(tmp_path, 1)
    msg = _error(common(store, tmp_path / "x") + ["--deepspeed", "--deepspeed_config", path, "--lr", "1e-3"])
    assert "--lr 0.001" in msg and "optimizer.params.lr = 0.002" in msg and path in msg


def test_error_model_does_not_divide_over_tp(store, tmp_path):
    msg = _error(common(store, tmp_path / "x") + ["--num-attention-heads", "3"])
    assert "num_attention_heads=3" in msg and "glm-tiny.json" in msg


def test_error_load_with_other_tp_or_architecture(store, tmp_path):
    save = tmp_path / "ck"
    run(launch(common(store, save, 2) + ["--save-interval", "2", "--batch-size", "2"]))
    msg = _error(common(store, tmp_path / "y", 3) + ["--load", str(save), "--hidden-size", "32"])
    assert "hidden_size: checkpoint 64 vs run 32" in msg
    meta = json.loads((save / "global_step2" / "meta.json").read_text())
    meta["tp_size"] = 2
    (save / "global_step2" / "meta.json").write_text(json.dumps(meta))
    msg = _error(common(store, tmp_path / "y", 3) + ["--load", str(save)])
    assert "tensor-parallel size 2" in msg and "change_mp.py" in msg


def test_error_store_from_another_tokenizer(store, tmp_path):
    from tools.train_tokenizer import train

    other = train([str(SAMPLE_CORPUS / "en.jsonl")], str(tmp_path / "tok" / "other"), vocab_size=500)
    msg = _error(common(store, tmp_path / "x") + ["--tokenizer-model", str(other)])
    assert "was tokenized with" in msg and str(other) in msg


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_continues(store, tmp_path):
    """Preemption: SIGTERM mid-run saves a checkpoint at the end of the current step and exits cleanly."""
    save = tmp_path / "ck"
    args = common(store, save, 200) + ["--batch-size", "16", "--lr", "2e-3", "--save-interval", "1000",
                                       "--log-interval", "1"]
    proc = subprocess.Popen([PY, "pretrain_glm.py", *args], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if re.search(r"\bstep 3/200 \| loss", line):
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, "".join(out[-30:])
    r = results(save)
    assert r["stopped_by_signal"] is True and 3 <= r["step"] < 200
    assert (save / "latest").read_text() == f"global_step{r['step']}"
    p = run([PY, "pretrain_glm.py", *common(store, save, r["step"] + 2), "--batch-size", "16", "--lr", "2e-3",
             "--load", str(save)])
    assert f"resumed from {save / ('global_step' + str(r['step']))}" in p.stdout
    assert results(save)["step"] == r["step"] + 2


# ------------------------------------------------------------------ block mask / short seq / single span
@pytest.mark.slow
def test_pretrain_with_block_mask_short_seq_single_span(store, tmp_path, monkeypatch):
    """A few in-process steps with all three options on: batches with more rows than --batch-size train with
    the loss a mean over loss tokens, and the checkpoint records the [dBLOCK] tokenizer."""
    import torch.nn.functional as F

    import model.glm as glm
    import pretrain_glm
    from data_utils.tokenizer import GLMTokenizer
    from training.setup import generation_sources

    rows, real_loss = [], glm.glm_lm_loss

    def checked_loss(logits, target, loss_mask, parallel_state=None):
        loss = real_loss(logits, target, loss_mask, parallel_state)
        # Independent reference (TP 1: full vocabulary): token cross entropy averaged over loss tokens; the
        # logits are those of the loss tokens only ([N, V], row-major).
        with torch.no_grad():
            scored = loss_mask != 0
            assert logits.dim() == 2 and logits.shape[0] == int(scored.sum())
            ce = F.cross_entropy(logits.float(), target[scored], reduction="none")
            m = loss_mask[scored].float()
            assert abs(float(loss.detach()) - float((ce * m).sum() / m.sum())) < 1e-4
        rows.append(target.shape[0])
        return loss

    monkeypatch.setattr(pretrain_glm, "glm_lm_loss", checked_loss)  # the name its loss_fn calls
    save = tmp_path / "ck"
    r = pretrain_glm.main(common(store, save, iters=6, lr_decay_iters=6) + [
        "--batch-size", "4", "--no-tensorboard", "--block-mask-prob", "0.5", "--short-seq-prob", "1.0",
        "--single-span-prob", "0.3"])
    assert r["step"] == 6 and all(math.isfinite(x) for x in r["train_losses"])
    assert all(n % 4 == 0 for n in rows) and max(rows) > 4, rows  # short-seq batches grew
    meta = json.loads((save / "global_step6" / "meta.json").read_text())
    assert meta["tokenizer_add_dblock"] is True
    tok = GLMTokenizer(meta["tokenizer"], add_dblock=True)
    assert meta["model_config"]["vocab_size"] == tok.padded_vocab_size(128, 1) and len(tok) == tok.num_text_tokens + 11
    # generation from this checkpoint rebuilds the same tokenizer
    assert generation_sources(str(save), None, None, None).tokenizer.add_dblock is True


def test_error_probability_out_of_range(store, tmp_path):
    from training.arguments import parse_pretrain_args

    with pytest.raises(ValueError, match=r"--short-seq-prob 1.5: expected a probability in \[0, 1\]"):
        parse_pretrain_args(common(store, tmp_path / "x") + ["--short-seq-prob", "1.5"])
    with pytest.raises(ValueError, match="--block-mask-prob -0.1"):
        parse_pretrain_args(common(store, tmp_path / "x") + ["--block-mask-prob", "-0.1"])
    with pytest.raises(ValueError, match=r"--context-mask-ratio 1.2: expected a probability in \[0, 1\]"):
        parse_pretrain_args(common(store, tmp_path / "x") + ["--context-mask-ratio", "1.2"])


@pytest.mark.slow
def test_pretrain_with_context_mask_ratio(store, tmp_path, monkeypatch, capsys):
    """--context-mask-ratio alone builds the [dBLOCK] tokenizer, reaches the collator, and trains."""
    import data_utils.samplers as samplers
    import pretrain_glm

    seen = []
    real_call = samplers.SeededCollate.__call__

    def spy(self, items):
        batch = real_call(self, items)
        dblock = self.collator.dblock_id
        sep = batch["sep"]
        in_a = [bool((batch["text"][i, : int(sep[i])] == dblock).any()) for i in range(len(sep))]
        seen.append((batch["mode"], self.collator.config.context_mask_ratio, any(in_a)))
        return batch

    monkeypatch.setattr(samplers.SeededCollate, "__call__", spy)
    save = tmp_path / "ck"
    r = pretrain_glm.main(common(store, save, iters=2, lr_decay_iters=2) + [
        "--batch-size", "2", "--no-tensorboard", "--bert-prob", "1.0", "--gap-sentence-prob", "0.0",
        "--context-mask-ratio", "0.1"])
    assert r["step"] == 2 and all(math.isfinite(x) for x in r["train_losses"])
    assert seen and all(m == "bert" and ratio == 0.1 and hit for m, ratio, hit in seen), seen
    meta = json.loads((save / "global_step2" / "meta.json").read_text())
    assert meta["tokenizer_add_dblock"] is True
    # the language sampling weights are logged at start, one row per language of the store
    out = capsys.readouterr().out
    assert "language sampling (p_i ~ n_i^0.30)" in out, out
    from data_utils.corpus import open_stores

    for lang in open_stores(store):
        assert any(line.split()[:1] == [lang] for line in out.splitlines()), lang


# ---------------------------------------------------------- accumulation, resume and logging in-process
@pytest.mark.slow
def test_gradient_accumulation_resume_and_logging(store, tmp_path, monkeypatch, capsys):
    """GAS=2 with the plain engine, in-process: resuming from the step-3 checkpoint repeats the uninterrupted
    run's losses (the loader restarts at micro-batch 3 x GAS); every interval logs one line and one JSONL row
    whose lr, tokens/s x ms/step and MFU match closed forms; validation logs loss and perplexity."""
    import model.glm as glm
    import pretrain_glm

    # Batches are padded per batch (their length varies): count the tokens each training micro-batch feeds.
    fed, real_loss = [], glm.glm_lm_loss

    def counting_loss(logits, target, loss_mask, parallel_state=None):
        if torch.is_grad_enabled():
            fed.append(target.numel())
        return real_loss(logits, target, loss_mask, parallel_state)

    monkeypatch.setattr(pretrain_glm, "glm_lm_loss", counting_loss)  # the name its loss_fn calls
    monkeypatch.setenv("MGLM_PEAK_TFLOPS", "1.0")  # MFU on: 1e12 FLOP/s per process
    base = common(store, tmp_path / "a", iters=6, lr_decay_iters=6) + [
        "--batch-size", "2", "--gradient-accumulation-steps", "2", "--lr", "1e-3", "--warmup", "0.34",
        "--save-interval", "3", "--log-interval", "3", "--eval-interval", "3", "--eval-iters", "2"]
    a = pretrain_glm.main(base)
    printed = capsys.readouterr().out
    assert a["step"] == 6 and len(a["train_losses"]) == 6 and len(fed) == 12

    # Resume from step 3 into another directory: steps 4-6 see the same micro-batches and weights.
    b = pretrain_glm.main(base[:base.index("--save")] + ["--save", str(tmp_path / "b")] + base[base.index("--save") + 2:]
                          + ["--load", str(tmp_path / "a" / "global_step3")])
    assert len(b["train_losses"]) == 3
    assert max(abs(x - y) for x, y in zip(b["train_losses"], a["train_losses"][3:], strict=True)) <= 1e-6
    meta = json.loads((tmp_path / "a" / "global_step3" / "meta.json").read_text())
    assert meta["step"] == 3 and meta["data_position"] == {"step": 3, "micro_batches": 6, "samples": 12}
    assert meta["tp_size"] == 1 and meta["dp_size"] == 1 and meta["code_version"]

    # One log line per interval, with the fields the issue lists.
    lines = [ln for ln in printed.splitlines() if re.search(r"step [36]/6 \| loss ", ln)]
    assert len(lines) == 2, printed
    for field_name in ("loss_", "lr ", "grad_norm ", "tokens_per_s ", "ms_per_step ", "mfu "):
        assert all(field_name in ln for ln in lines), (field_name, lines)
    assert sum("valid_loss " in ln and "valid_ppl " in ln for ln in printed.splitlines()) == 2

    rows = [json.loads(x) for x in (tmp_path / "a" / "logs" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["group"] == "train"]
    valid = [r for r in rows if r["group"] == "valid"]
    assert [r["step"] for r in train] == [3, 6] and [r["step"] for r in valid] == [3, 6]
    # lr of the interval's last step (0-based t = 2 and 5); warm-up W = int(0.34 * 6) = 2, linear to 0.1 lr:
    # t = 2 <= W: 1e-3 * 2/2; t = 5: r = (5-2)/(6-2) = 0.75 -> 1e-3 * (1 - 0.9 * 0.75) = 3.25e-4.
    assert train[0]["lr"] == pytest.approx(1e-3) and train[1]["lr"] == pytest.approx(3.25e-4)
    vocab = meta["model_config"]["vocab_size"]
    flops = 72 * 2 * 64 * 64 + 12 * 2 * 64 * 64 + 6 * vocab * 64  # glm-tiny: L=2, h=64; seq 64
    for i, r in enumerate(train):
        # tokens/s x s/step = tokens per step: the interval's 3 steps x GAS 2 micro-batches, over 3 steps
        assert r["tokens_per_s"] * r["ms_per_step"] / 1000 == pytest.approx(sum(fed[6 * i:6 * i + 6]) / 3, rel=1e-6)
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * flops / 1e12, rel=1e-6)
        assert r["grad_norm"] > 0 and any(k.startswith("loss_") for k in r)
    for r in valid:
        assert r["ppl"] == pytest.approx(math.exp(r["loss"]), rel=1e-6)
        for k in ("bert", "sentence", "gpt"):
            if f"loss_{k}" in r:
                assert r[f"ppl_{k}"] == pytest.approx(math.exp(r[f"loss_{k}"]), rel=1e-6)
    assert a["valid"] == {k: v for k, v in valid[-1].items() if k not in ("group", "step", "time")}
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "a" / "logs").iterdir())


def test_error_model_does_not_divide_over_tp_size(store, tmp_path):
    """At TP 4, a model whose 2 heads cannot be split over 4 ranks is refused, naming the file and the field
    (the model config is checked against --model-parallel-size, not only against itself)."""
    from model.config import build_model_config
    from training.arguments import parse_pretrain_args

    cfg = parse_pretrain_args(common(store, tmp_path / "x") + ["--model-parallel-size", "4",
                                                               "--num-attention-heads", "2"])
    with pytest.raises(ValueError) as e:
        build_model_config(cfg.model, 128 * 4 * 3, seq_length=cfg.data.seq_length, tensor_parallel_size=4)
    assert "glm-tiny.json" in str(e.value) and "num_attention_heads=2" in str(e.value)
    assert "tensor_parallel_size=4" in str(e.value)
    # The same model at TP 2 is fine, so it is the TP size that the check is about.
    cfg2 = parse_pretrain_args(common(store, tmp_path / "x") + ["--model-parallel-size", "2",
                                                                "--num-attention-heads", "2"])
    assert build_model_config(cfg2.model, 128 * 4 * 3, seq_length=cfg2.data.seq_length,
                              tensor_parallel_size=2).num_attention_heads == 2


@pytest.mark.parametrize("name, stage, precision", [("zero1_bf16", 1, "bf16"), ("zero2_fp16", 2, "fp16"),
                                                    ("zero3_offload_bf16", 3, "bf16"), ("cpu_tiny", 0, None),
                                                    ("cpu_demo", 0, None)])
def test_bundled_deepspeed_configs(name, stage, precision, monkeypatch):
    """Every config/ds JSON is accepted by the front end and says what its name promises."""
    from training.arguments import parse_pretrain_args

    monkeypatch.chdir(REPO)
    path = f"config/ds/{name}.json"
    cfg = parse_pretrain_args(["--deepspeed", "--deepspeed_config", path])
    t, ds = cfg.train, cfg.ds_config
    assert t.deepspeed and t.zero_stage == stage
    assert t.bf16 == (precision == "bf16") and t.fp16 == (precision == "fp16")
    assert ds["gradient_clipping"] == cfg.optim.clip_grad == 1.0
    if precision == "fp16":
        assert ds["fp16"]["loss_scale"] == 0  # 0 = dynamic loss scaling
    if name == "zero3_offload_bf16":
        z = ds["zero_optimization"]
        assert z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
    if name.startswith("zero"):  # the mGLM optimizer: Adam lr 1e-4, betas 0.9/0.98, eps 1e-6, wd 0.01
        assert (cfg.optim.lr, cfg.optim.adam_beta1, cfg.optim.adam_beta2) == (1e-4, 0.9, 0.98)
        assert (cfg.optim.adam_eps, cfg.optim.weight_decay) == (1e-6, 0.01)


def test_launcher_builds_the_mglm_recipe(store, tmp_path, monkeypatch):
    """scripts/ds_pretrain_multilingual.sh (default preset) with a stand-in launcher: the env vars reach the
    deepspeed command, the arguments parse into the mGLM recipe, and extra flags override it."""
    from training.arguments import parse_pretrain_args

    fake = tmp_path / "deepspeed"
    fake.write_text("#!/bin/sh\necho \"$@\"\n")
    fake.chmod(0o755)
    (tmp_path / "hostfile").write_text("node1 slots=8\nnode2 slots=8\n")
    e = env()
    e.update(DEEPSPEED=str(fake), PY=PY, NUM_GPUS="8", NUM_NODES="2", HOSTFILE=str(tmp_path / "hostfile"),
             MP_SIZE="2", DATA=str(store), SAVE=str(tmp_path / "save"), MASTER_PORT="29123")
    p = subprocess.run(["bash", "scripts/ds_pretrain_multilingual.sh", "--train-iters", "7", "--lr-decay-iters", "5"],
                       cwd=REPO, env=e, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = p.stdout.split()
    launcher, args = out[:out.index("pretrain_glm.py")], out[out.index("pretrain_glm.py") + 1:]
    opt = {launcher[i]: launcher[i + 1] for i in range(0, len(launcher) - 1) if launcher[i].startswith("--")}
    assert opt["--num_nodes"] == "2" and opt["--num_gpus"] == "8" and opt["--master_port"] == "29123"
    assert opt["--hostfile"] == str(tmp_path / "hostfile")
    monkeypatch.chdir(REPO)
    cfg = parse_pretrain_args(args)
    d, o, t = cfg.data, cfg.optim, cfg.train
    assert cfg.model.model_config == "config/model/mglm-1b.json" and t.deepspeed_config == "config/ds/zero1_bf16.json"
    assert (d.bert_prob, d.gap_sentence_prob, d.dataset_temperature) == (0.5, 0.3, 0.3)  # gpt: the other 0.2
    assert (d.avg_block_length, d.gpt_min_ratio, d.block_mask_prob, d.short_seq_prob) == (3, 0.25, 0.1, 0.02)
    assert o.lr == 1e-4 and o.lr_decay_style == "linear" and o.lr_decay_ratio == 0.1 and o.warmup == 0.02
    assert t.model_parallel_size == 2 and t.save == str(tmp_path / "save") and d.train_data == (str(store),)
    assert d.seq_length == 512 and t.bf16 and t.batch_size == 10 and t.gradient_accumulation_steps == 4
    assert t.train_iters == 7 and o.lr_decay_iters == 5  # the extra flags came last and won


@pytest.mark.slow  # compiles forward and backward on the first step (~30 s on a 2-core CPU)
def test_pretrain_compile_gives_the_eager_losses(store, tmp_path):
    """--compile reaches the model (compiled in place, said in the log) and trains to the eager run's losses
    (3 steps). Both runs are subprocesses: inductor's compile workers must not live in the pytest process,
    whose later tests fork DataLoader workers."""
    # Dropout 0: compiled dropout draws its masks from another random stream than eager dropout.
    args = ["--batch-size", "2", "--no-tensorboard", "--hidden-dropout", "0", "--attention-dropout", "0"]
    runs = {}
    for name, extra in (("eager", []), ("comp", ["--compile"])):
        p = subprocess.run([PY, "pretrain_glm.py", *common(store, tmp_path / name, iters=3, lr_decay_iters=3),
                            *args, *extra], cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        runs[name] = (json.loads((tmp_path / name / "results.json").read_text()), p.stdout + p.stderr)
    (eager, eager_log), (comp, comp_log) = runs["eager"], runs["comp"]
    assert "--compile: the model runs under torch.compile" in comp_log
    assert "torch.compile" not in eager_log
    assert len(eager["train_losses"]) == 3
    assert comp["train_losses"] == pytest.approx(eager["train_losses"], abs=1e-4)
