"""Per-expert text statistics in their smaller exact form (rows of a factor, or the Gram): every form
gives the Gram of the plain text-level design (tests/paper_oracle.py), and sums, merges and the ridge
statistics over thousands of experts equal the plain Gram arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from ir3de.fitting.counting import TextCounter
from ir3de.fitting.statistics import (
    ExpertCounts,
    combine_grams,
    rows_gram,
    text_factor,
    text_factor_gram,
    text_factor_rows,
    text_gram,
    text_ridge_matrices,
    text_rows,
)
from paper_oracle import text_level_rows

HIDDEN = 4  # tests/unit/conftest.py: the toy matrix is (V, 4), so h + 1 = 5


def _plain_ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False).ids if text.strip() else []


def _oracle_gram(tokenizer, texts, matrix, excluded_ids):
    ids = [_plain_ids(tokenizer, t) for t in texts]
    x, _, w = text_level_rows([ids], matrix, set(excluded_ids.tolist()), balance=False)
    return (x * w[:, None]).T @ x


def test_text_factor_is_a_square_root_of_the_plain_rows_gram(toy_ids, toy_matrix, vocab_size, excluded_ids):
    countable = np.ones(vocab_size, bool)
    countable[excluded_ids] = False
    lists = toy_ids["math"]
    flat = np.concatenate([np.asarray(x, np.int64) for x in lists])
    lengths = np.array([len(x) for x in lists])
    y = text_factor(toy_matrix, flat, lengths, countable)
    plain = text_gram(*text_rows(toy_matrix, flat, lengths, countable))
    np.testing.assert_allclose(y.T @ y, plain, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rows_gram(y), plain, rtol=1e-12, atol=1e-12)
    assert text_factor(toy_matrix, np.array([excluded_ids[0]]), np.array([1]), countable).shape == (0, 5)


@pytest.mark.parametrize(("head_rows", "num_texts"), [(0, 0), (0, 3), (3, 0), (4, 40), (2, 1200)])
def test_the_gram_built_from_the_terms_is_the_gram_of_the_stacked_rows_bit_for_bit(
    toy_matrix, vocab_size, excluded_ids, head_rows, num_texts
):
    """What counting does when an expert outgrows the rows form: the Gram of the rows kept so far and a
    batch's factor rows, built block by block without writing the batch's rows out (1,200 texts: past one
    4,096-row block, so the blocks straddle the head and the batch)."""
    rng = np.random.default_rng(head_rows * 1000 + num_texts)
    countable = np.ones(vocab_size, bool)
    countable[excluded_ids] = False
    lengths = rng.integers(0, 60, size=num_texts)
    flat = rng.integers(0, vocab_size, size=int(lengths.sum()))
    head = [_rows(rng, n) for n in ([head_rows - 1, 1] if head_rows else [])]
    factor = text_factor(toy_matrix, flat, lengths, countable)
    assert text_factor_rows(flat, lengths, countable) == factor.shape[0]
    stacked = rows_gram(np.concatenate([*head, factor]))
    assert np.array_equal(text_factor_gram(head, toy_matrix, flat, lengths, countable), stacked)
    if num_texts == 1200:
        assert factor.shape[0] + head_rows > 4096


def test_a_small_expert_keeps_rows_a_large_one_its_gram(toy_tokenizer, toy_matrix, vocab_size, excluded_ids):
    one = ["x plus x"]  # one text, one window: 1 row < h + 1
    many = ["x plus x", "def f return x", "solve x plus one", "return f of x", "x times two", "f of x"]
    for texts, form in [(one, "rows"), (many, "gram")]:
        c = TextCounter(toy_tokenizer, vocab_size, excluded_ids, toy_matrix)
        c.add(texts)
        got = c.result()
        assert got.text_form == form and got.has_text_statistics and got.text_dim == HIDDEN + 1
        oracle = _oracle_gram(toy_tokenizer, texts, toy_matrix, excluded_ids)
        np.testing.assert_allclose(got.text_gram, oracle, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.text_column(), oracle[:, -1], rtol=1e-5, atol=1e-6)
        assert got.num_scored_texts == len(texts)


def test_the_form_switches_mid_count_and_the_statistics_do_not_change(
    toy_tokenizer, toy_corpus, toy_matrix, vocab_size, excluded_ids
):
    texts = [t for ts in toy_corpus.values() for t in ts]
    whole = TextCounter(toy_tokenizer, vocab_size, excluded_ids, toy_matrix)
    whole.add(texts)
    one_by_one = TextCounter(toy_tokenizer, vocab_size, excluded_ids, toy_matrix)
    forms = []
    for t in texts:
        one_by_one.add([t])
        forms.append(one_by_one.result().text_form)
    assert forms[0] == "rows" and forms[-1] == "gram"  # the counter crossed h + 1 rows
    assert one_by_one.result() == whole.result()
    np.testing.assert_allclose(
        whole.result().text_gram,
        _oracle_gram(toy_tokenizer, texts, toy_matrix, excluded_ids),
        rtol=1e-5,
        atol=1e-6,
    )


def _rows(rng, n):
    y = rng.normal(size=(n, HIDDEN + 1))
    y[:, -1] = np.abs(y[:, -1]) * 0.3  # a valid corner (the row mass of a few texts)
    return y


def test_sums_and_merges_across_forms_equal_the_gram_sums():
    rng = np.random.default_rng(0)
    small, other = _rows(rng, 2), _rows(rng, 2)
    a = ExpertCounts(np.array([1]), np.array([2]), 5, text_rows=small)
    b = ExpertCounts(np.array([2]), np.array([1]), 5, text_rows=other)
    big_rows = _rows(rng, 8)
    big = ExpertCounts(np.array([1, 3]), np.array([1, 1]), 50, text_rows=big_rows)
    assert (a.text_form, b.text_form, big.text_form) == ("rows", "rows", "gram")  # 8 rows >= h + 1: a Gram
    assert big.text_rows is None
    np.testing.assert_allclose(big.text_gram, big_rows.T @ big_rows, rtol=1e-12)
    s = a + b
    assert s.text_form == "rows" and s.text_rows.shape == (4, HIDDEN + 1)  # still smaller as rows
    np.testing.assert_allclose(s.text_gram, small.T @ small + other.T @ other, rtol=1e-12)
    assert (s + s + s).text_form == "gram"  # 12 rows fold into the Gram
    np.testing.assert_allclose((s + s + s).text_gram, 3 * s.text_gram, rtol=1e-12)
    mixed = a + big
    assert mixed.text_form == "gram"
    np.testing.assert_allclose(mixed.text_gram, small.T @ small + big.text_gram, rtol=1e-12)
    assert mixed == big + a and (a + a.without_text_gram()).has_text_statistics is False
    assert a == ExpertCounts(np.array([1]), np.array([2]), 5, small.T @ small)  # equal across forms
    with pytest.raises(ValueError, match="either as a Gram or as rows"):
        ExpertCounts(np.array([1]), np.array([2]), 5, small.T @ small, text_rows=small)
    with pytest.raises(ValueError, match="text_gram"):
        ExpertCounts(
            np.array([1]), np.array([2]), 1, text_rows=np.full((2, HIDDEN + 1), 3.0)
        )  # corner 18 > 1.25
    with pytest.raises(ValueError, match="different embedding"):
        _ = a + ExpertCounts(np.array([1]), np.array([2]), 5, text_rows=np.ones((1, 3)) * 0.1)


@pytest.mark.parametrize("num_experts", [3, 1200])
def test_text_ridge_matrices_equal_the_weighted_gram_sums(num_experts):
    rng = np.random.default_rng(num_experts)
    blocks = []
    for d in range(num_experts):
        n = int(rng.integers(1, 9))  # some fold into Grams (n >= 5), most stay rows
        blocks.append(ExpertCounts(np.array([d]), np.array([1]), 10, text_rows=_rows(rng, n)))
    weights = rng.uniform(0.1, 3.0, size=num_experts)
    weights[1] = 0.0  # a zero weight adds nothing
    assert {b.text_form for b in blocks} == {"rows", "gram"}
    a, b = text_ridge_matrices(blocks, weights)
    a_plain, b_plain = combine_grams([blk.text_gram for blk in blocks], weights)
    np.testing.assert_allclose(a, a_plain, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b, b_plain, rtol=1e-10, atol=1e-12)
    a_none, b_none = text_ridge_matrices([None, *blocks[1:]], weights)
    np.testing.assert_allclose(a_none, a_plain - weights[0] * blocks[0].text_gram, rtol=1e-9, atol=1e-9)
    assert not b_none[:, 0].any()
    with pytest.raises(ValueError, match="no expert has text statistics"):
        text_ridge_matrices([None, blocks[0].without_text_gram()], [1.0, 1.0])
