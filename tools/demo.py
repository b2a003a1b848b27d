"""The README's demo on the bundled sample data: tokenizer -> (later issues) pretraining -> finetuning.

Step 1 trains a unigram sentencepiece model on the sample corpus (10 languages, 6 scripts) exactly as
the bundled ``data/sample/tokenizer/mglm-sample.model`` was made, checks that it is byte-identical to the
bundled one (the training is reproducible), and prints the encoding of one sentence in five scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_utils.tokenizer import GLMTokenizer  # noqa: E402
from tools.train_tokenizer import train  # noqa: E402

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
    model = train([str(REPO / "data/sample/corpus")], str(out / "tokenizer" / "mglm-sample"), vocab_size=SAMPLE_VOCAB)
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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_output", help="output folder")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = step_tokenizer(out)
    results = {"tokenizer": str(model)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"== done; results in {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
