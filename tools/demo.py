"""The README's demo on the bundled sample data: tokenizer -> tokenized store -> pretraining -> finetuning.

1. Trains a unigram sentencepiece model on the sample corpus (10 languages, 6 scripts) exactly as the
   bundled ``data/sample/tokenizer/mglm-sample.model`` was made, checks that it is byte-identical to the
   bundled one (training is reproducible), and prints the encoding of one sentence in six scripts.
2. Tokenizes the corpus into a memory-mapped store (``tools/preprocess_data.py``).
3. Pretrains ``glm-small`` (4 layers, hidden 256) with the three blank-infilling objectives for a few
   minutes on the CPU, logging the loss per objective; the loss falls from ~9 (uniform over 8k tokens).
4. Finetunes that checkpoint on XNLI-format fixtures (``data/sample/tasks/xnli/xtreme``: 15 English
   training pairs, a few labelled dev/test pairs per language; cloze with the verbalizers True / False /
   Maybe) with ``finetune_glm.py`` and prints the per-language accuracy tables (dev and test). With 3-6
   pairs per language the accuracies only show that the path runs, not what the model learned.
5. Fills blanks with the pretrained checkpoint (``generate_samples.py --min-tgt-length 1``) in sentences of
   the training corpus and in one new sentence, and says what a model this small can and cannot do.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python tools/X.py`` from any directory: the root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]

from data_utils.tokenizer import GLMTokenizer  # noqa: E402
from tools.train_tokenizer import cloze_verbalizer_pieces, train  # noqa: E402

SAMPLE_VOCAB = 8000
SENTENCES = {
    "en (Latin)": "The weather in Berlin is sunny today.",
    "ru (Cyrillic)": "Сегодня в Москве идёт снег.",
    "zh (Han)": "今天北京的天气很好。",
    "hi (Devanagari)": "आज दिल्ली में बारिश हो रही है।",
    "ar (Arabic)": "الطقس جميل في القاهرة اليوم.",
    "th (Thai)": "วันนี้อากาศที่กรุงเทพดีมาก",
}


def step_tokenizer(out: Path) -> Path:
    print("== 1. tokenizer: train a unigram sentencepiece model on data/sample/corpus", flush=True)
    # As the bundled model was made (README, "Sample data"): the cloze verbalizers are single pieces.
    model = train([str(REPO / "data/sample/corpus")], str(out / "tokenizer" / "mglm-sample"), vocab_size=SAMPLE_VOCAB,
                  user_defined_symbols=cloze_verbalizer_pieces())
    bundled = REPO / "data/sample/tokenizer/mglm-sample.model"
    same = bundled.is_file() and bundled.read_bytes() == model.read_bytes()
    print(f"   identical to the bundled {bundled.relative_to(REPO)}: {same}")
    tok = GLMTokenizer(model)
    print(f"   {tok.num_text_tokens} sentencepiece pieces + GLM command tokens = {len(tok)} ids, "
          f"embedding table padded to {tok.padded_vocab_size()}")
    print(f"   [MASK]={tok.mask_id} [sMASK]={tok.smask_id} [gMASK]={tok.gmask_id} "
          f"<|startofpiece|>={tok.sop_id} <|endofpiece|>={tok.eop_id} <|endoftext|>={tok.eos_id}")
    for lang, s in SENTENCES.items():
        ids = tok.encode(s)
        pieces = tok.convert_ids_to_tokens(ids)
        assert tok.decode(ids) == s
        print(f"   {lang:16s} {s}\n   {'':16s} {len(ids)} ids {ids}\n   {'':16s} {' '.join(pieces)}")
    return model


def step_store(out: Path, tokenizer: Path) -> Path:
    from tools.preprocess_data import main as preprocess

    print("== 2. tokenized store: tools/preprocess_data.py data/sample/corpus", flush=True)
    store = out / "store"
    preprocess([str(REPO / "data/sample/corpus"), "-o", str(store), "--tokenizer-model", str(tokenizer), "--overwrite",
                "--no-progress"])
    return store


def step_pretrain(out: Path, store: Path, iters: int) -> dict:
    import pretrain_glm

    print(f"== 3. pretraining glm-small for {iters} steps on the CPU (blank infilling: [MASK] 50%, "
          "[sMASK] 30%, [gMASK] 20%)", flush=True)
    save = out / "pretrain"
    shutil.rmtree(save, ignore_errors=True)  # the demo starts from scratch each time
    result = pretrain_glm.main([
        "--model-config", str(REPO / "config/model/glm-small.json"), "--train-data", str(store),
        "--seq-length", "128", "--batch-size", "8", "--train-iters", str(iters), "--lr", "1e-3",
        "--warmup", "0.05", "--lr-decay-style", "cosine", "--log-interval", str(max(iters // 10, 1)),
        "--eval-interval", str(max(iters // 2, 1)), "--eval-iters", "4", "--save-interval", str(iters),
        "--save", str(save), "--num-workers", "1", "--device", "cpu",
    ])
    first = sum(result["train_losses"][:10]) / min(10, len(result["train_losses"]))
    last = sum(result["train_losses"][-10:]) / min(10, len(result["train_losses"]))
    print(f"   loss {first:.3f} (first 10 steps) -> {last:.3f} (last 10 steps); validation "
          f"{result['valid'].get('loss', float('nan')):.3f}; checkpoint in {save}")
    return {"checkpoint": str(save), "loss_first10": first, "loss_last10": last, "valid": result["valid"]}


def step_finetune(out: Path, checkpoint: str, tokenizer: Path, epochs: int) -> dict:
    import finetune_glm

    data = REPO / "data/sample/tasks/xnli/xtreme"
    print(f"== 4. finetuning the pretrained checkpoint on XNLI-format fixtures ({data.relative_to(REPO)}) for "
          f"{epochs} epochs: train on English, score every language (zero-shot)", flush=True)
    save = out / "finetune-xnli"
    shutil.rmtree(save, ignore_errors=True)
    result = finetune_glm.main([
        "--task", "xnli", "--data-dir", str(data), "--load-pretrained", checkpoint, "--tokenizer-model",
        str(tokenizer), "--epochs", str(epochs), "--batch-size", "8", "--lr", "1e-4", "--seq-length", "128",
        "--warmup", "0", "--lr-decay-style", "linear", "--eval-epoch", str(max(epochs // 2, 1)),
        "--log-interval", "2", "--save", str(save), "--device", "cpu",
    ])
    # finetune_glm has just logged the per-language tables (also in results.txt).
    print(f"   train loss {result['train_loss_first']:.3f} (step 1) -> {result['train_loss_last']:.3f} "
          f"(step {result['train_iters']}); model selected on {result['select_on']} at step "
          f"{result['best_step']}; per-language accuracy in {save / 'results.json'} (tables: results.txt, "
          f"predictions: predictions/)")
    return {"save": str(save), "results": str(save / "results.json"), "dev": result["dev"], "test": result["test"],
            "train_loss_first": result["train_loss_first"], "train_loss_last": result["train_loss_last"]}


# Sentences of the training corpus (data/sample/corpus) with one word blanked, and one sentence the corpus
# does not have.
FILL_PROMPTS = [
    "Maria put the kettle on and waited for the water to [MASK].",
    "Bread is one of the oldest prepared foods in the [MASK].",
    "Why is the sky [MASK]? Sunlight contains all the colours of the rainbow mixed together.",
    "Paris is the capital of [MASK].",
]
# What the demo's model is, said where its output is shown (the README repeats it).
CAPABILITY_NOTE = """\
   What this model can and cannot do: {iters} steps of a 5.4 M-parameter model on an 83k-token corpus in 10
   languages (validation loss {valid}; 9.0 would be a uniform guess over the 8k pieces) teach it the
   blank-infilling layout and how frequent each token is. They do not teach it words in context, sentences
   of the corpus or facts: the likeliest first tokens above are nearly the same for every prompt (the bare
   word-boundary piece '\u2581', which prints as a space, the end of the blank, punctuation), so greedy blanks
   look empty, and sampling (--top-k 40) gives mixed-script noise. The pipeline is what the demo shows; for
   real fills use released mGLM weights (--load-pretrained) or pretrain on a real corpus for 100k+ steps."""


def step_fill(out: Path, checkpoint: str, iters: int, valid_loss: float) -> dict:
    import generate_samples

    print("== 5. blank filling with the pretrained checkpoint: generate_samples.py --load "
          f"{checkpoint} --min-tgt-length 1 --candidates 5 (greedy, at most 4 tokens per blank)", flush=True)
    prompts = out / "fill_prompts.txt"
    prompts.write_text("\n".join(FILL_PROMPTS) + "\n", encoding="utf-8")
    fills = out / "fills.jsonl"
    generate_samples.main(["--load", checkpoint, "--input-file", str(prompts), "--output-file", str(fills),
                           "--out-seq-length", "4", "--min-tgt-length", "1", "--candidates", "5", "--device", "cpu"])
    rows = [json.loads(line) for line in fills.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        likeliest = "  ".join(f"{piece!r} {p:.3f}" for piece, p in row["candidates"][0])
        print(f"   {row['prompt']}\n   -> {row['filled']}   (blank {row['spans'][0]!r}, log-prob "
              f"{row['scores'][0]:.2f})\n      likeliest first tokens: {likeliest}")
    print(CAPABILITY_NOTE.format(iters=iters, valid=f"{valid_loss:.2f}"), flush=True)
    return {"prompts": str(prompts), "output": str(fills), "fills": rows}


def step_plots(out: Path, runs: list[str]) -> list[str]:
    """PNGs of both runs (tools/plot.py): loss per objective and lr, validation, per-language scores."""
    from tools.plot import plot_run

    print("== 6. plots of both runs: tools/plot.py", flush=True)
    written = []
    for run in runs:
        try:
            written += [str(p) for p in plot_run(run, out / "plots" / Path(run).name)]
        except ValueError as e:  # matplotlib is optional: the demo completes without it, and says so
            print(f"   skipped: {e}")
            return written
    print("   " + "\n   ".join(written))
    return written


def main(argv: list[str] | None = None) -> dict:
    from training.arguments import DefaultsHelpFormatter

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter)
    ap.add_argument("--out", default="demo_output", help="output folder")
    ap.add_argument("--pretrain-iters", type=int, default=240, help="pretraining steps (about 0.5 s each on 2 cores)")
    ap.add_argument("--finetune-epochs", type=int, default=6, help="XNLI finetuning epochs (2 steps each)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = step_tokenizer(out)
    store = step_store(out, model)
    pretrain = step_pretrain(out, store, a.pretrain_iters)
    finetune = step_finetune(out, pretrain["checkpoint"], model, a.finetune_epochs)
    fill = step_fill(out, pretrain["checkpoint"], a.pretrain_iters, pretrain["valid"].get("loss", float("nan")))
    plots = step_plots(out, [pretrain["checkpoint"], finetune["save"]])
    results = {"tokenizer": str(model), "store": str(store), "pretrain": pretrain, "finetune_xnli": finetune,
               "blank_filling": fill, "plots": plots}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"== done; results in {out / 'results.json'}")
    return results


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main, "demo.py")
