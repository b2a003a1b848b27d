"""ROUGE against values worked out by hand from the definition (tasks/rouge.py docstring)."""

import pytest

from tasks.rouge import lcs_length, rouge_l, rouge_n, rouge_scores, rouge_scores_from_tokens, tokenize


def test_chinese_characters_reference_vector():
    # pred 北京是首都 (5 chars), ref 北京是中国的首都 (8 chars).
    # R1: overlap 5, P = 1, R = 5/8 -> F = 2*(5/8)/(13/8) = 10/13.
    # R2: pred bigrams 北京 京是 是首 首都, ref bigrams 北京 京是 是中 中国 国的 的首 首都 -> overlap 3,
    #     P = 3/4, R = 3/7 -> F = 18/33.   RL: LCS 北京是首都 = 5 -> same as R1.
    s = rouge_scores(["北京是首都"], ["北京是中国的首都"], tokenization="char")
    assert s["rouge-1"] == pytest.approx(100 * 10 / 13)
    assert s["rouge-2"] == pytest.approx(100 * 18 / 33)
    assert s["rouge-l"] == pytest.approx(100 * 10 / 13)


def test_english_words_hand_example():
    # the cat sat on the mat / the cat is on the mat: unigrams overlap the x2, cat, on, mat = 5 of 6 each;
    # bigrams overlap (the cat) (on the) (the mat) = 3 of 5 each; LCS "the cat on the mat" = 5.
    s = rouge_scores(["the cat sat on the mat"], ["the cat is on the mat"], tokenization="word")
    assert s["rouge-1"] == pytest.approx(100 * 5 / 6)
    assert s["rouge-2"] == pytest.approx(100 * 3 / 5)
    assert s["rouge-l"] == pytest.approx(100 * 5 / 6)


def test_counts_are_clipped():
    # pred "the the the" vs ref "the cat": overlap min(3, 1) = 1, P = 1/3, R = 1/2 -> F = 2/5.
    r1 = rouge_n(["the"] * 3, ["the", "cat"], 1)
    assert (r1.precision, r1.recall, r1.fmeasure) == pytest.approx((1 / 3, 1 / 2, 2 / 5))
    assert rouge_n(["the"] * 3, ["the", "cat"], 2).fmeasure == 0.0


def test_lcs_is_a_subsequence_not_a_substring():
    assert lcs_length(list("abcde"), list("acex")) == 3
    s = rouge_l(list("abcde"), list("acex"))  # P = 3/5, R = 3/4 -> F = 2*(9/20)/(27/20) = 2/3
    assert (s.precision, s.recall, s.fmeasure) == pytest.approx((3 / 5, 3 / 4, 2 / 3))


def test_mean_of_per_example_f_not_pooled():
    # Example 1 identical (F = 1), example 2 disjoint (F = 0): the mean is 50 for every variant.
    s = rouge_scores(["a b", "c"], ["a b", "d e f"], tokenization="word")
    assert s == pytest.approx({"rouge-1": 50.0, "rouge-2": 50.0, "rouge-l": 50.0})


@pytest.mark.parametrize(
    "text,mode",
    [
        ("本文提出一种新的句法分析方法，准确率更高。", "char"),
        ("We present a new parser; it is more accurate.", "word"),
        ("Der Parser ist genauer als frühere Modelle.", "word"),
        ("GLM模型在XNLI上达到75.6分", "char"),
        ("日本語のテキストも文字単位で数える", "char"),
    ],
)
def test_self_is_100(text, mode):
    assert rouge_scores([text, text], [text, text], tokenization=mode) == pytest.approx(
        {"rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0}
    )


def test_disjoint_is_0():
    assert rouge_scores(["北京 首都"], ["上海 港口"], "char") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    assert rouge_scores(["red green"], ["blue yellow"], "word") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}


def test_chinese_is_not_scored_as_zero():
    # rouge-score's default tokenizer drops every non [a-z0-9] character and gives 0 here.
    assert rouge_scores(["模型改进了翻译"], ["注意力模型改进了长句的翻译"], "char")["rouge-1"] > 50


def test_tokenization_rules():
    assert tokenize("GLM模型，很好!", "char") == ["glm", "模", "型", "很", "好"]
    assert tokenize("GLM模型，很好!", "word") == ["glm模型", "很好"]
    assert tokenize("Hello, World! ＡＢＣ", "word") == ["hello", "world", "abc"]  # NFKC folds full-width
    assert rouge_scores(["Hello, world!"], ["hello world"], "word")["rouge-2"] == 100.0


def test_pretokenized_ids():
    # Two sentencepiece-id sequences sharing 2 of 3 ids in order: R1 = RL = 2/3, R2: (5,7) vs (5,9),(9,7) -> 0.
    s = rouge_scores_from_tokens([["5", "7", "1"]], [["5", "9", "7"]])
    assert s["rouge-1"] == pytest.approx(200 / 3) and s["rouge-l"] == pytest.approx(200 / 3)
    assert s["rouge-2"] == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="tokenization 'chars'"):
        rouge_scores(["a"], ["a"], "chars")
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        rouge_scores([], [])
