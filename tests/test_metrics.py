"""tasks.metrics against hand-computed values of the official SQuAD v1.1 / MLQA scripts.

Every expected number below is worked out by hand from the published definitions (arithmetic in the
comments), never produced by the code under test.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from tasks import metrics as M

XQUAD_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "xquad"
XQUAD_LANGS = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]


def approx(x: float) -> pytest.approx:
    return pytest.approx(x, abs=1e-12)


# ------------------------------------------------------------------------------------------------ accuracy


def test_accuracy_percent():
    # 3 of 4 equal -> 100 * 3 / 4 = 75
    assert M.accuracy(["a", "b", "c", "a"], ["a", "b", "a", "a"]) == 75.0
    assert M.accuracy(["0"], ["1"]) == 0.0


def test_accuracy_rejects_bad_lengths():
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        M.accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        M.accuracy([], [])


# ------------------------------------------------------------------------------------------- SQuAD v1.1


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),  # lower, '!' removed, 'the' removed
        ("  A\tcat\n  ran ", "cat ran"),  # article 'a' and every kind of whitespace collapse
        ("¿Dónde está?", "¿dónde está"),  # ASCII '?' removed, Unicode '¿' kept
        ("«The» Beatles", "« » beatles"),  # « » are not ASCII punctuation; 'the' between them is a word
        ("北京是中国的首都。", "北京是中国的首都。"),  # no spaces: one token, '。' kept
        ("an-apple", "anapple"),  # punctuation goes first, so 'an' is no longer a separate word
        ("Theatre", "theatre"),  # \b: 'the' inside a word stays
        ("a Madrid", "madrid"),  # English articles are removed whatever the language
        ("", ""),
    ],
)
def test_squad_normalize(raw, expected):
    assert M.squad_normalize_answer(raw) == expected


def test_squad_f1_partial_overlap():
    # pred -> [cat, sat]; gold -> [cat, sat, down]; common 2; P = 2/2, R = 2/3; F1 = 2*(2/3)/(1+2/3) = 0.8
    assert M.squad_f1("the cat sat", "a cat sat down") == approx(0.8)
    assert M.squad_exact_match("the cat sat", "a cat sat down") == 0.0


def test_squad_f1_counts_repeated_tokens_as_multiset():
    # pred [x, y, y, y], gold [y, y, z]; common = min(3, 2) y = 2; P = 2/4, R = 2/3
    # F1 = 2 * (1/2)(2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7
    assert M.squad_f1("x y y y", "y y z") == approx(4 / 7)


def test_squad_max_over_gold_answers():
    golds = ["Broncos", "Denver Broncos team", "Carolina"]
    # vs 'broncos': P 1/2, R 1 -> 2/3; vs 'denver broncos team': P 1, R 2/3 -> 0.8; vs 'carolina': 0
    assert M.squad_f1("Denver Broncos", golds) == approx(0.8)
    assert M.squad_exact_match("Denver Broncos", golds) == 0.0
    golds.append("denver broncos.")  # normalises to the prediction -> EM 1, F1 1
    assert M.squad_exact_match("Denver Broncos", golds) == 1.0
    assert M.squad_f1("Denver Broncos", golds) == approx(1.0)


def test_squad_empty_prediction():
    assert M.squad_exact_match("", "Paris") == 0.0
    assert M.squad_f1("", "Paris") == 0.0
    # v1.1 quirk: a gold of only punctuation normalises to '' too -> EM 1 but F1 0 (no common token)
    assert M.squad_exact_match("", "...") == 1.0
    assert M.squad_f1("", "...") == 0.0


def test_squad_chinese_is_one_token():
    # '北京是首都' and '北京是中国的首都' are single, different tokens -> 0
    assert M.squad_f1("北京是首都", "北京是中国的首都") == 0.0
    # '。' is not ASCII punctuation, so the strings differ
    assert M.squad_exact_match("北京是中国的首都。", "北京是中国的首都") == 0.0


def test_squad_spanish_keeps_inverted_question_mark():
    # pred -> '¿los ángeles' = [¿los, ángeles]; gold -> 'los ángeles california' (3 tokens); common {ángeles}
    # P = 1/2, R = 1/3; F1 = 2 * (1/6) / (5/6) = 0.4
    assert M.squad_f1("¿Los Ángeles?", "los ángeles, California") == approx(0.4)


def test_squad_evaluate_missing_counts_zero_and_is_reported():
    dataset = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "c",
                        "qas": [
                            {"id": "q1", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}]},
                            {
                                "id": "q2",
                                "question": "?",
                                "answers": [{"text": "the red car"}, {"text": "red automobile"}],
                            },
                            {"id": "q3", "question": "?", "answers": [{"text": "x"}]},
                        ],
                    }
                ],
            }
        ],
    }
    preds = {"q1": "paris.", "q2": "a red car parked", "unused": "zzz"}
    err = io.StringIO()
    out = M.squad_evaluate(dataset, preds, stderr=err)
    # q1: EM 1, F1 1. q2: 'red car parked' vs 'red car': P 2/3, R 1 -> 0.8; vs 'red automobile': P 1/3,
    # R 1/2 -> 0.4; max 0.8, EM 0. q3 missing -> 0. EM = 100 * 1/3; F1 = 100 * (1 + 0.8) / 3 = 60
    assert out["exact_match"] == approx(100 / 3)
    assert out["f1"] == approx(60.0)
    assert "1 of 3" in err.getvalue() and "q3" in err.getvalue()
    # the bare data list (what evaluate() of the official script receives) gives the same
    assert M.squad_evaluate(dataset["data"], preds, stderr=io.StringIO()) == out


def test_squad_evaluate_rejects_non_string_prediction():
    dataset = {"data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": [{"text": "a"}]}]}]}]}
    with pytest.raises(ValueError, match="'q1'.*expected a string"):
        M.squad_evaluate(dataset, {"q1": ["a"]})


def test_validate_dataset_names_the_broken_path():
    bad = {"data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": "Paris"}]}]}]}
    with pytest.raises(ValueError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers.*got string"):
        M.read_squad_questions(bad, "f.json")
    with pytest.raises(ValueError, match='key "data"'):
        M.read_squad_questions({"version": "1.1"}, "f.json")
    with pytest.raises(ValueError, match=r"data\[0\]\.paragraphs.*got null"):
        M.read_squad_questions({"data": [{"title": "x"}]}, "f.json")


# ------------------------------------------------------------------------------------------------- MLQA


@pytest.mark.parametrize(
    "raw, lang, expected",
    [
        # the reference's test vectors (computed with the official script)
        ("The Eiffel Tower!", "en", "eiffel tower"),
        ("los Ángeles, la ciudad", "es", "ángeles ciudad"),
        ("北京是中国的首都。", "zh", "北 京 是 中 国 的 首 都"),
        ("Die Hauptstadt   der  BRD", "de", "hauptstadt brd"),
        ("الكتاب الجديد", "ar", "كتاب جديد"),
        ("của những người", "vi", "người"),
        ("«Hola» — mundo", "es", "hola mundo"),
        # Unicode punctuation of several categories (Po ¿ 。 、, Pi/Pf « », Pd —, Ps/Pe 「」)
        ("¿Los Ángeles?", "es", "ángeles"),
        ("«The» Beatles", "en", "beatles"),  # « » go first, then 'the' is an article
        ("北京、上海。", "zh", "北 京 上 海"),
        ("「北京」", "zh", "北 京"),
        ("भारत।", "hi", "भारत"),  # Devanagari danda U+0964 is Po
        # ASCII symbols of category S are in string.punctuation ($ +), other symbols (€ °) stay
        ("$5 + €3 at 20°", "en", "5 €3 at 20°"),
        # articles per language
        ("The Taj Mahal", "hi", "the taj mahal"),  # no Hindi article list
        ("Dieser Mann und die Frau", "de", "dieser mann und frau"),  # 'die' removed, 'dieser' not
        ("làm việc là chính", "vi", "làm việc chính"),  # 'là' removed, 'làm' not (\b is Unicode)
        ("مالك", "ar", "م ك"),  # ال is removed inside words too
        ("el niño y la niña", "es", "niño y niña"),
        ("the cat", "zh", "the cat"),  # zh has no article list
        # whitespace: Unicode spaces split like ASCII ones
        ("New\u00a0York", "en", "new york"),
        ("北京\u3000大学", "zh", "北 京 大 学"),
        # mixed scripts under zh segmentation: Latin runs are whitespace-split, CJK chars are single tokens
        ("iPhone 12手机。", "zh", "iphone 12 手 机"),
        ("GPT-4模型", "zh", "gpt4 模 型"),  # '-' removed first, so 'gpt4' is one run
        ("\u9fa6\u4e00", "zh", "\u9fa6 \u4e00"),  # U+9FA6 is outside [4E00-9FA5]: not split off...
        ("\u9fa6\u9fa6", "zh", "\u9fa6\u9fa6"),  # ...so two of them stay one token
        ("\u9fa5\u9fa5", "zh", "\u9fa5 \u9fa5"),  # U+9FA5 is the last character of the range
        ("日本のテスト", "zh", "日 本 のテスト"),  # kana are outside the range
        ("", "zh", ""),
    ],
)
def test_mlqa_normalize(raw, lang, expected):
    assert M.mlqa_normalize_answer(raw, lang) == expected


def test_mlqa_unknown_language():
    with pytest.raises(ValueError, match="'fr'.*ar, de, en, es, hi, vi, zh"):
        M.mlqa_normalize_answer("x", "fr")
    with pytest.raises(ValueError, match="unknown MLQA language"):
        M.mlqa_evaluate({"data": []}, {}, "xx")


def test_mlqa_zh_character_f1():
    # pred 北 京 是 首 都 (5 tokens), gold 北 京 是 中 国 的 首 都 (8); common 5; P = 1, R = 5/8
    # F1 = 2 * (5/8) / (1 + 5/8) = (10/8) / (13/8) = 10/13 = 0.7692...
    assert M.mlqa_f1("北京是首都", "北京是中国的首都", "zh") == approx(10 / 13)
    assert M.mlqa_exact_match("北京是首都", "北京是中国的首都", "zh") == 0.0
    # '。' is punctuation in MLQA: exact match
    assert M.mlqa_exact_match("北京是中国的首都。", "北京是中国的首都", "zh") == 1.0


def test_mlqa_es_f1():
    # pred -> 'ángeles' (1); gold -> 'ángeles california' (2); P = 1, R = 1/2; F1 = 1 / (3/2) = 2/3
    assert M.mlqa_f1("¿Los Ángeles?", "los ángeles, California", "es") == approx(2 / 3)


def test_mlqa_de_articles_change_em():
    # both normalise to 'bundestag' in German ...
    assert M.mlqa_exact_match("der Bundestag", "dem Bundestag", "de") == 1.0
    # ... but not under SQuAD: [der, bundestag] vs [dem, bundestag]: P = R = 1/2 -> F1 0.5
    assert M.squad_exact_match("der Bundestag", "dem Bundestag") == 0.0
    assert M.squad_f1("der Bundestag", "dem Bundestag") == approx(0.5)


def test_mlqa_ar_and_vi_f1():
    # ar: 'كتاب' (1) vs 'كتاب جديد' (2): P 1, R 1/2 -> 2/3
    assert M.mlqa_f1("الكتاب", "الكتاب الجديد", "ar") == approx(2 / 3)
    # vi: 'người bạn' (2) vs 'người bạn tôi' (3): P 1, R 2/3 -> 2*(2/3)/(5/3) = 0.8
    assert M.mlqa_f1("những người bạn", "người bạn của tôi", "vi") == approx(0.8)


def test_mlqa_en_unicode_quotes_vs_squad():
    assert M.mlqa_exact_match("«The» Beatles", "Beatles", "en") == 1.0
    # SQuAD keeps « » as tokens: [«, », beatles] vs [beatles]: P 1/3, R 1 -> 2*(1/3)/(4/3) = 0.5
    assert M.squad_f1("«The» Beatles", "Beatles") == approx(0.5)


def test_mlqa_multiple_golds_and_empty_prediction():
    # golds: '上 海' and '上 海 市'; pred '上 海 市 区' (4): vs first P 2/4, R 1 -> 2/3; vs second P 3/4, R 1
    # -> 2*(3/4)/(7/4) = 6/7; max 6/7
    assert M.mlqa_f1("上海市区", ["上海", "上海市"], "zh") == approx(6 / 7)
    assert M.mlqa_f1("", ["北京", "首都"], "zh") == 0.0
    assert M.mlqa_exact_match("", ["北京", "首都"], "zh") == 0.0


def test_mlqa_evaluate_zh():
    dataset = {
        "version": "1.0",
        "data": [
            {
                "paragraphs": [
                    {
                        "qas": [
                            {"id": "a", "answers": [{"text": "北京是中国的首都"}]},
                            {"id": "b", "answers": [{"text": "上海。"}]},
                        ]
                    }
                ]
            }
        ],
    }
    out = M.mlqa_evaluate(dataset, {"a": "北京是首都", "b": "上海"}, "zh")
    # a: EM 0, F1 10/13; b: EM 1, F1 1. EM = 100 * 1/2 = 50; F1 = 100 * (10/13 + 1) / 2 = 100 * 23/26
    assert out["exact_match"] == approx(50.0)
    assert out["f1"] == approx(100 * 23 / 26)


def test_is_mlqa_punctuation_matches_categories():
    for ch in "¿¡«»。、，「」—–_()[]{}'\"!?.,;:‐※":
        assert M.is_mlqa_punctuation(ch), ch
    for ch in "$+<=>^`|~":  # category S, included via string.punctuation
        assert M.is_mlqa_punctuation(ch), ch
    for ch in "a1 北€°©\u3000":
        assert not M.is_mlqa_punctuation(ch), ch


# ------------------------------------------------------------------------------------------ aggregation


def test_aggregate_by_language_unweighted_mean():
    scores = {
        "en": {"exact_match": 80.0, "f1": 90.0},
        "de": {"exact_match": 60.0, "f1": 75.0},
        "zh": {"exact_match": 40.0, "f1": 60.0},
    }
    out = M.aggregate_by_language(scores)
    # EM (80 + 60 + 40) / 3 = 60; F1 (90 + 75 + 60) / 3 = 75
    assert out["avg"] == {"exact_match": approx(60.0), "f1": approx(75.0)}
    assert out["de"] == scores["de"]


def test_aggregate_by_language_errors():
    with pytest.raises(ValueError, match="no languages"):
        M.aggregate_by_language({})
    with pytest.raises(ValueError, match="'de' has metrics"):
        M.aggregate_by_language({"en": {"f1": 1.0}, "de": {"exact_match": 1.0}})
    with pytest.raises(ValueError, match="reserved"):
        M.aggregate_by_language({"avg": {"f1": 1.0}})


# ---------------------------------------------------------------------------------- mGLM pooled metric


def _fake_translit(s: str) -> str:
    # a stand-in for unidecode with two known mappings
    return s.replace("é", "e").replace("北京", "Bei Jing ")


def test_mglm_normalize_order_with_injected_transliterator():
    # lower 'café the bar!' -> translit 'cafe the bar!' -> ASCII punct 'cafe the bar' -> articles -> 'cafe bar'
    assert M.mglm_normalize_answer("Café THE Bar!", _fake_translit) == "cafe bar"
    # lowercasing happens before transliteration: the transliterator's capitals survive
    assert M.mglm_normalize_answer("北京", _fake_translit) == "Bei Jing"


def test_mglm_select_prediction():
    assert M.mglm_select_prediction(["N / A", "n/a", "Paris", "London"]) == "Paris"
    assert M.mglm_select_prediction(["N/A", " n/ a "]) == "N/A"
    assert M.mglm_select_prediction([]) == "N/A"


def test_mglm_pooled_vs_per_language():
    ident = lambda s: s  # noqa: E731  (ASCII inputs: transliteration is the identity)
    records = [
        ("en", "q1", "n/a", ["Paris"]),
        ("en", "q1", "Paris", ["Paris"]),  # first non-N/A window of en/q1 -> EM 1
        ("de", "q1", "Berlin", ["Paris"]),  # de/q1 -> EM 0, F1 0
        ("de", "q2", "N/A", ["Rom"]),  # only N/A -> 'N/A' -> 'na' vs 'rom' -> 0
    ]
    # pooled over 3 (language, id) groups: EM = 100 * 1/3
    out = M.mglm_pooled_evaluate(records, transliterate=ident)
    assert out["exact_match"] == approx(100 / 3) and out["f1"] == approx(100 / 3) and out["questions"] == 3
    # grouping by bare id merges en/q1 and de/q1 (first non-N/A = 'Paris', golds of the first record):
    # groups q1 -> 1, q2 -> 0: EM = 50
    merged = M.mglm_pooled_evaluate(records, merge_languages=True, transliterate=ident)
    assert merged["exact_match"] == approx(50.0) and merged["questions"] == 2


def test_mglm_evaluate_pools_and_drops_missing():
    def ds(*qas):
        return {"data": [{"paragraphs": [{"qas": [{"id": i, "answers": [{"text": t}]} for i, t in qas]}]}]}

    datasets = {"en": ds(("a", "one"), ("b", "two")), "de": ds(("a", "eins"), ("c", "drei"))}
    preds = {"en": {"a": "one", "b": "two"}, "de": {"a": ["n/a", "zwei"]}}  # de/c missing: not counted
    out = M.mglm_evaluate(datasets, preds, transliterate=lambda s: s)
    # groups en/a 1, en/b 1, de/a ('zwei' vs 'eins') 0 -> pooled 100 * 2/3 (per-language mean would be 50)
    assert out["exact_match"] == approx(200 / 3) and out["questions"] == 3
    with pytest.raises(ValueError, match="no dataset"):
        M.mglm_evaluate({"en": datasets["en"]}, {"xx": {}}, transliterate=lambda s: s)


def test_mglm_with_real_unidecode():
    pytest.importorskip("unidecode", reason="unidecode not installed (optional; only the mGLM metric uses it)")
    # unidecode: '北京是首都' -> 'Bei Jing Shi Shou Du ' (5 tokens); '北京是中国的首都' ->
    # 'Bei Jing Shi Zhong Guo De Shou Du ' (8 tokens); common 5 -> P 1, R 5/8 -> F1 10/13
    assert M.mglm_f1("北京是首都", "北京是中国的首都") == approx(10 / 13)
    # diacritics vanish: EM 1 where SQuAD and MLQA say 0
    assert M.mglm_exact_match("Los Ángeles", "los angeles") == 1.0
    assert M.squad_exact_match("Los Ángeles", "los angeles") == 0.0
    # « » become '<<' '>>' (ASCII punctuation) and are removed
    assert M.mglm_normalize_answer("«Hola» mundo") == "hola mundo"


def test_mglm_without_unidecode_says_what_to_install():
    try:
        import unidecode  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install unidecode"):
            M.mglm_normalize_answer("x")
    else:
        pytest.skip("unidecode is installed; the missing-package message cannot be exercised")


# ------------------------------------------------------------------------------------ real XQuAD files


def _xquad(lang: str) -> dict:
    if not XQUAD_DIR.is_dir():
        pytest.skip(f"shared XQuAD data not found at {XQUAD_DIR} (../shared/data is absent in this checkout)")
    with open(XQUAD_DIR / f"xquad.{lang}.json", encoding="utf-8") as f:
        return json.load(f)


def _gold_predictions(dataset: dict) -> dict[str, str]:
    return {
        qa["id"]: qa["answers"][0]["text"]
        for article in dataset["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }


@pytest.mark.parametrize("lang", XQUAD_LANGS)
def test_xquad_gold_scores_100_squad(lang):
    dataset = _xquad(lang)
    gold = _gold_predictions(dataset)
    assert len(gold) == 1190
    assert M.squad_evaluate(dataset, gold) == {"exact_match": 100.0, "f1": 100.0}
    # extra whitespace and ASCII punctuation around the answer are normalised away (not case: 'ß'.upper()
    # is 'SS', which lowercases to 'ss')
    padded = {k: "\t" + v + " !?" for k, v in gold.items()}
    assert M.squad_evaluate(dataset, padded) == {"exact_match": 100.0, "f1": 100.0}
    # drop 5 predictions: EM = F1 = 100 * 1185 / 1190
    partial = dict(list(gold.items())[5:])
    err = io.StringIO()
    out = M.squad_evaluate(dataset, partial, stderr=err)
    assert out["exact_match"] == approx(100 * 1185 / 1190) and out["f1"] == approx(100 * 1185 / 1190)
    assert "5 of 1190" in err.getvalue()


@pytest.mark.parametrize("lang", [lang for lang in XQUAD_LANGS if lang in M.MLQA_LANGUAGES])
def test_xquad_gold_scores_100_mlqa(lang):
    dataset = _xquad(lang)
    out = M.mlqa_evaluate(dataset, _gold_predictions(dataset), lang)
    assert out == {"exact_match": 100.0, "f1": 100.0}


def test_xquad_gold_scores_100_mglm_pooled():
    pytest.importorskip("unidecode", reason="unidecode not installed (optional; only the mGLM metric uses it)")
    datasets = {lang: _xquad(lang) for lang in XQUAD_LANGS}
    preds = {lang: _gold_predictions(d) for lang, d in datasets.items()}
    out = M.mglm_evaluate(datasets, preds)
    assert out["questions"] == 12 * 1190
    assert math.isclose(out["exact_match"], 100.0) and math.isclose(out["f1"], 100.0)
