"""The README's demo command (tools/demo.py, run by scripts/demo.sh), shortened: every step runs, the
tokenizer is the bundled one, and the XNLI finetune starts from the checkpoint the pretraining step wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLE_TOKENIZER


@pytest.mark.slow
def test_demo_end_to_end_short(tmp_path, capfd):
    import torch

    from tools.demo import main

    out = tmp_path / "demo"
    r = main(["--out", str(out), "--pretrain-iters", "4", "--finetune-epochs", "1"])
    printed = capfd.readouterr()
    text = printed.out + printed.err

    # 1. the demo retrains the bundled tokenizer byte for byte
    assert (out / "tokenizer" / "mglm-sample.model").read_bytes() == SAMPLE_TOKENIZER.read_bytes()
    assert "identical to the bundled data/sample/tokenizer/mglm-sample.model: True" in text
    # 3. pretraining wrote a checkpoint; 4. the finetune initialised its weights from it
    pre = out / "pretrain"
    assert (pre / "latest").read_text().strip() == "global_step4"
    assert f"initialised weights from {pre / 'global_step4'}" in text
    # ... independently: 2 Adam steps at lr <= 1e-4 move each weight by < 1e-3 from the pretrained value
    # (a fresh initialisation, std 0.02, would differ by ~0.05)
    ft_dir = out / "finetune-xnli" / (out / "finetune-xnli" / "latest").read_text().strip()
    a = torch.load(pre / "global_step4" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    b = torch.load(ft_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    a, b = a["module"], b["module"]
    assert set(a) == set(b)
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-3
    ft = r["finetune_xnli"]
    results = json.loads((out / "finetune-xnli" / "results.json").read_text())
    assert ft["results"] == str(out / "finetune-xnli" / "results.json")
    langs = ["ar", "de", "en", "es", "fr", "hi", "ru", "zh"]  # the dev files of data/sample/tasks/xnli/xtreme
    assert [k for k in results["dev"] if k not in ("avg", "pooled")] == langs
    assert results["train_iters"] == 2  # 15 training pairs, batch 8, 1 epoch
    mean = sum(results["dev"][k]["accuracy"] for k in langs) / len(langs)
    assert results["dev"]["avg"]["accuracy"] == pytest.approx(mean)
    # the per-language accuracy table is printed and the run points at results.json
    # (XNLI languages without a dev file in the fixtures are listed in a warning and shown as absent columns)
    absent = ["bg", "el", "sw", "th", "tr", "ur", "vi"]
    header = next(line for line in text.splitlines() if line.startswith("xnli dev"))
    assert header.split()[2:] == ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur",
                                  "vi", "zh", "avg", "pooled"]  # XNLI's order, the absent ones included
    assert results["absent"]["dev"] == absent and f"no file for {', '.join(absent)}" in text
    assert str(out / "finetune-xnli" / "results.json") in text
    # the sample test files are labelled: the test table scores the three test languages, the others absent
    test_header = next(line for line in text.splitlines() if line.startswith("xnli test"))
    assert test_header.split()[2:] == header.split()[2:]
    assert [k for k in results["test"] if k not in ("avg", "pooled")] == ["de", "en", "zh"]
    assert results["absent"]["test"] == [x for x in header.split()[2:-2] if x not in ("de", "en", "zh")]
    # 5. blank filling from the pretrained checkpoint, every prompt once, and the plain statement of what
    # such a model can do
    from tools.demo import FILL_PROMPTS

    rows = [json.loads(line) for line in (out / "fills.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["prompt"] for row in rows] == FILL_PROMPTS and all(len(row["spans"]) == 1 for row in rows)
    assert all(len(row["candidates"][0]) == 5 for row in rows) and "likeliest first tokens: " in text
    assert r["blank_filling"]["fills"] == rows
    assert "What this model can and cannot do" in text
    assert json.loads((out / "results.json").read_text())["finetune_xnli"]["dev"] == results["dev"]
    # 6. plots of both runs: PNG files (signature checked), training curves of the pretraining run and the
    # per-language score bars of the finetuning run
    names = {(Path(p).parent.name, Path(p).name) for p in r["plots"]}
    assert {("pretrain", "training.png"), ("finetune-xnli", "scores.png")} <= names
    for p in r["plots"]:
        data = Path(p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
