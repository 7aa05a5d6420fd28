"""The token-ids form of text statistics (``keep_token_ids``) and the running sum behind ``add_expert``:
rows rebuilt from the ids are bit for bit the rows counting gives, every form gives the Gram of the
plain text-level design, the statistics file round-trips each form, and extending a running sum by
an expert equals, bit for bit, summing afresh."""

from __future__ import annotations

import numpy as np
import pytest

from ir3de.artifacts.format import read_text_statistics, text_gram_tensors
from ir3de.errors import ArtifactError
from ir3de.fitting.counting import TextCounter
from ir3de.fitting.statistics import (
    ExpertCounts,
    TextGramSum,
    TextTokens,
    balance_factors,
    balance_weights,
    combine_grams,
    merged_counts,
    text_ridge_matrices,
)
from paper_oracle import text_level_rows

HIDDEN = 4  # tests/unit/conftest.py: the toy matrix is (V, 4), so h + 1 = 5


def _oracle_gram(tokenizer, texts, matrix, excluded_ids):
    ids = [tokenizer.encode(t, add_special_tokens=False).ids if t.strip() else [] for t in texts]
    x, _, w = text_level_rows([ids], matrix, set(excluded_ids.tolist()), balance=False)
    return (x * w[:, None]).T @ x


def _count(tokenizer, matrix, vocab_size, excluded_ids, texts, *, keep, batch):
    counter = TextCounter(tokenizer, vocab_size, excluded_ids, matrix, keep_token_ids=keep)
    for lo in range(0, len(texts), batch):
        counter.add(texts[lo : lo + batch])
    return counter.result()


def test_rows_rebuilt_from_token_ids_are_the_counted_rows_bit_for_bit(
    toy_tokenizer, toy_matrix, vocab_size, excluded_ids
):
    texts = ["x plus x", "   ", "def f return x", "<s> x"]  # a blank text and a special token
    plain = _count(toy_tokenizer, toy_matrix, vocab_size, excluded_ids, texts, keep=False, batch=1)
    for batch in (1, 2, 4):
        kept = _count(toy_tokenizer, toy_matrix, vocab_size, excluded_ids, texts, keep=True, batch=batch)
        assert kept.text_form == plain.text_form == "rows" and kept.text_tokens is not None
        np.testing.assert_array_equal(kept.text_rows, plain.text_rows)  # batching does not matter
        rebuilt = ExpertCounts(kept.token_ids, kept.counts, kept.num_texts, text_tokens=kept.text_tokens)
        assert rebuilt.text_form == "tokens" and rebuilt.needs_rebuild
        assert rebuilt.num_scored_texts == plain.num_scored_texts and rebuilt.text_dim == HIDDEN + 1
        again = rebuilt.with_text_statistics(toy_matrix)
        np.testing.assert_array_equal(again.text_rows, plain.text_rows)
        assert again == kept and rebuilt == kept  # token ids compare exactly
        assert excluded_ids[0] not in kept.text_tokens.ids  # only countable ids are kept
    np.testing.assert_allclose(
        plain.text_gram, _oracle_gram(toy_tokenizer, texts, toy_matrix, excluded_ids), rtol=1e-5, atol=1e-6
    )


def test_a_large_expert_rebuilds_its_gram_from_ids_and_drops_ids_larger_than_the_gram(
    toy_tokenizer, toy_corpus, toy_matrix, vocab_size, excluded_ids
):
    texts = [t for ts in toy_corpus.values() for t in ts][:8]
    kept = _count(toy_tokenizer, toy_matrix, vocab_size, excluded_ids, texts[:6], keep=True, batch=2)
    assert kept.text_form == "gram" and kept.text_tokens is not None  # > h + 1 rows, ids < a Gram
    tokens_only = ExpertCounts(kept.token_ids, kept.counts, kept.num_texts, text_tokens=kept.text_tokens)
    np.testing.assert_array_equal(tokens_only.with_text_statistics(toy_matrix).stored_gram, kept.stored_gram)
    oracle = _oracle_gram(toy_tokenizer, texts[:6], toy_matrix, excluded_ids)
    np.testing.assert_allclose(kept.text_gram, oracle, rtol=1e-5, atol=1e-6)
    many = texts * 20  # the ids outgrow a (h+1)² Gram: the counter keeps the Gram only
    big = _count(toy_tokenizer, toy_matrix, vocab_size, excluded_ids, many, keep=True, batch=8)
    plain = _count(toy_tokenizer, toy_matrix, vocab_size, excluded_ids, many, keep=False, batch=8)
    assert big.text_tokens is None and big.text_form == "gram" and big == plain


def test_token_ids_alone_need_the_matrix_and_say_so():
    tokens = TextTokens(np.array([1, 2, 3], np.int32), np.array([0, 2, 3]), dim=HIDDEN + 1)
    c = ExpertCounts(np.array([1, 2, 3]), np.array([1, 1, 1]), 3, text_tokens=tokens)
    assert (c.text_form, c.has_text_statistics, c.num_scored_texts, tokens.num_rows) == ("tokens", True, 2, 2)
    with pytest.raises(ValueError, match="with_text_statistics"):
        _ = c.text_gram
    with pytest.raises(ValueError, match="with_text_statistics"):
        c.text_column()
    with pytest.raises(ValueError, match="with_text_statistics"):
        c.without_text_tokens()
    with pytest.raises(ValueError, match="columns"):
        c.with_text_statistics(np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match="offsets"):
        TextTokens(np.array([1, 2], np.int32), np.array([0, 1]), dim=3)
    with pytest.raises(ValueError, match="at least one id"):
        TextTokens(np.array([1, 2], np.int32), np.array([0, 0, 2]), dim=3)
    with pytest.raises(ValueError, match="text_rows has"):
        ExpertCounts(
            np.array([1]), np.array([1]), 3, text_rows=np.ones((1, HIDDEN + 1)) * 0.1, text_tokens=tokens
        )


def test_sums_of_token_forms_keep_the_ids_of_both(toy_tokenizer, toy_matrix, vocab_size, excluded_ids):
    count = lambda texts, keep: _count(  # noqa: E731
        toy_tokenizer, toy_matrix, vocab_size, excluded_ids, texts, keep=keep, batch=1
    )
    a, b = count(["x plus x"], True), count(["return f of x"], True)
    both = a + b
    assert (
        both.text_form == "rows"
        and both.text_tokens == count(["x plus x", "return f of x"], True).text_tokens
    )
    np.testing.assert_array_equal(both.text_rows, count(["x plus x", "return f of x"], True).text_rows)
    big = a + b + b + a + b  # as many rows as h + 1: the ids alone, rebuilt on demand
    assert big.text_form == "tokens"
    whole = count(["x plus x", "return f of x", "return f of x", "x plus x", "return f of x"], True)
    np.testing.assert_array_equal(big.with_text_statistics(toy_matrix).stored_gram, whole.stored_gram)
    mixed = a + count(["return f of x"], False)  # ids only on one side: the statistics, no ids
    assert mixed.text_tokens is None and mixed == count(["x plus x", "return f of x"], False)
    with pytest.raises(ValueError, match="with_text_statistics"):
        _ = big + count(["x"], False)


def test_auto_keeps_ids_beside_the_very_rows_of_keep_false_and_drops_them_with_the_rows(
    toy_tokenizer, toy_corpus, toy_matrix, vocab_size, excluded_ids
):
    texts = [t for ts in toy_corpus.values() for t in ts][:8]
    count = lambda texts, keep, batch=1: _count(  # noqa: E731
        toy_tokenizer, toy_matrix, vocab_size, excluded_ids, texts, keep=keep, batch=batch
    )
    for batch in (1, 2):
        few, few_plain = count(texts[:1], "auto", batch), count(texts[:1], False, batch)
        assert few.text_form == "rows" and few.text_tokens is not None  # fewer rows than h + 1
        assert few.text_tokens.num_rows < HIDDEN + 1 and few.text_tokens.kept_by("auto")
        np.testing.assert_array_equal(few.text_rows, few_plain.text_rows)  # the same rows, bit for bit
        assert few.text_tokens == count(texts[:1], True, batch).text_tokens
        rebuilt = ExpertCounts(few.token_ids, few.counts, few.num_texts, text_tokens=few.text_tokens)
        np.testing.assert_array_equal(rebuilt.with_text_statistics(toy_matrix).text_rows, few.text_rows)
        # h + 1 rows or more: the Gram, exactly as without ids, and no ids
        many, many_plain = count(texts[:6], "auto", batch), count(texts[:6], False, batch)
        assert many.text_form == "gram" and many.text_tokens is None and many == many_plain
        np.testing.assert_array_equal(many.stored_gram, many_plain.stored_gram)


def test_merged_counts_follow_the_setting_and_auto_adds_as_false_does(
    toy_tokenizer, toy_matrix, vocab_size, excluded_ids
):
    count = lambda texts, keep: _count(  # noqa: E731
        toy_tokenizer, toy_matrix, vocab_size, excluded_ids, texts, keep=keep, batch=1
    )
    a, b = count(["x plus x"], "auto"), count(["return f of x"], "auto")
    pa, pb = count(["x plus x"], False), count(["return f of x"], False)
    both = merged_counts(a, b, "auto")
    assert (
        both.text_form == "rows"
        and both.text_tokens == count(["x plus x", "return f of x"], True).text_tokens
    )
    np.testing.assert_array_equal(both.text_rows, (pa + pb).text_rows)
    big, big_plain = a, pa
    while big.text_tokens is not None:  # grow until the rows reach h + 1: then the Gram alone
        big, big_plain = merged_counts(big, b, "auto"), big_plain + pb
    assert big.text_form == "gram" and big_plain.text_form == "gram"
    np.testing.assert_array_equal(big.stored_gram, big_plain.stored_gram)  # as False adds them
    kept = merged_counts(merged_counts(a, b, True), merged_counts(a, b, True), True)
    assert kept.text_tokens is not None  # True keeps ids smaller than a Gram
    assert merged_counts(a, b, False).text_tokens is None
    assert merged_counts(a, b, False) == pa + pb
    # ids alone (as loaded) that the setting drops are rebuilt first, which needs the matrix
    alone = ExpertCounts(both.token_ids, both.counts, both.num_texts, text_tokens=both.text_tokens)
    with pytest.raises(ValueError, match="embedding matrix"):
        alone.keeping_token_ids(False)
    np.testing.assert_array_equal(alone.keeping_token_ids(False, toy_matrix).text_rows, both.text_rows)
    assert alone.keeping_token_ids("auto") is alone


def test_the_statistics_file_round_trips_every_form(toy_tokenizer, toy_matrix, vocab_size, excluded_ids):
    count = lambda texts, keep: _count(  # noqa: E731
        toy_tokenizer, toy_matrix, vocab_size, excluded_ids, texts, keep=keep, batch=2
    )
    experts = [
        count(["x plus x"], True),
        count(["x plus x", "def f return x", "solve x plus one", "return f of x", "x", "f"], False),  # Gram
        count(["return f of x"], False),  # rows
        ExpertCounts(np.array([1]), np.array([1]), 1),  # token counts only
        count(["x times two", "f of x"], True),
    ]
    forms = [c.text_form for c in experts]
    assert forms == ["rows", "gram", "rows", None, "rows"]
    tensors = text_gram_tensors(experts, HIDDEN)
    # the Gram is exactly symmetric: saved as its lower triangle (code 4), half the bytes
    assert tensors["text_forms"].tolist() == [3, 4, 2, 0, 3] and tensors["text_token_ids"].dtype == np.int32
    assert tensors["text_grams"].shape[0] == 0 and tensors["text_grams_lower"].shape == (1, 15)
    assert tensors["text_rows"].shape[0] == experts[2].text_rows.shape[0]  # kept ids replace rows
    read = read_text_statistics(tensors, len(experts), HIDDEN, "test")
    loaded = [ExpertCounts(c.token_ids, c.counts, c.num_texts, **kw) for c, kw in zip(experts, read)]
    assert [c.text_form for c in loaded] == ["tokens", "gram", "rows", None, "tokens"]
    assert loaded == experts
    for mine, theirs in zip(loaded, experts):
        np.testing.assert_array_equal(mine.with_text_statistics(toy_matrix).text_gram, theirs.text_gram)
    np.testing.assert_array_equal(loaded[1].stored_gram, experts[1].stored_gram)  # the same bits
    full = {k: v for k, v in tensors.items() if k != "text_grams_lower"}  # as formats 5-7 wrote a Gram
    full["text_forms"] = np.array([3, 1, 2, 0, 3], np.uint8)
    full["text_grams"] = experts[1].stored_gram[None]
    assert [
        ExpertCounts(c.token_ids, c.counts, c.num_texts, **kw)
        for c, kw in zip(experts, read_text_statistics(full, 5, HIDDEN, "test"))
    ] == experts
    skewed = ExpertCounts(  # a Gram that is not exactly symmetric (made elsewhere) stays whole
        experts[1].token_ids,
        experts[1].counts,
        experts[1].num_texts,
        experts[1].stored_gram + np.triu(np.full((5, 5), 1e-12), 1),
    )
    skew = text_gram_tensors([skewed], HIDDEN)
    assert skew["text_forms"].tolist() == [1] and "text_grams_lower" not in skew
    np.testing.assert_array_equal(
        read_text_statistics(skew, 1, HIDDEN, "test")[0]["stored_gram"], skewed.stored_gram
    )
    with pytest.raises(ArtifactError, match="text_grams_lower"):
        read_text_statistics({k: v for k, v in tensors.items() if k != "text_grams_lower"}, 5, HIDDEN, "test")
    no_ids = text_gram_tensors(experts[1:4], HIDDEN)  # as format 5 wrote it: no token tensors
    assert "text_token_ids" not in no_ids
    assert [bool(kw) for kw in read_text_statistics(no_ids, 3, HIDDEN, "test")] == [True, True, False]
    broken = dict(tensors, text_token_texts=tensors["text_token_texts"][::-1].copy())
    with pytest.raises(ArtifactError, match="text_token_texts"):
        read_text_statistics(broken, len(experts), HIDDEN, "test")
    with pytest.raises(ArtifactError, match="int32"):
        read_text_statistics(
            dict(tensors, text_token_ids=tensors["text_token_ids"].astype(np.int64)), 5, HIDDEN, "test"
        )


def _rows(rng, n):
    y = rng.normal(size=(n, HIDDEN + 1))
    y[:, -1] = np.abs(y[:, -1]) * 0.3
    return y


@pytest.mark.parametrize("num_experts", [4, 3000])
def test_a_running_sum_extended_by_an_expert_equals_a_fresh_sum_bit_for_bit(num_experts):
    rng = np.random.default_rng(num_experts)
    blocks = [
        ExpertCounts(np.array([d]), np.array([1]), 10, text_rows=_rows(rng, int(rng.integers(1, 8))))
        for d in range(num_experts + 1)
    ]
    masses = [b.num_scored_texts + 1.0 for b in blocks]
    running = TextGramSum(HIDDEN + 1)
    scale, v = balance_factors(masses[:-1], True)
    a0, _ = text_ridge_matrices(blocks[:-1], v, scale=scale, running=running)
    scale, v = balance_factors(masses, True)
    a, b = text_ridge_matrices(blocks, v, scale=scale, running=running)  # one expert added
    fresh_a, fresh_b = text_ridge_matrices(blocks, v, scale=scale)
    np.testing.assert_array_equal(a, fresh_a)
    np.testing.assert_array_equal(b, fresh_b)
    w = balance_weights(masses, True)  # the factored weights are the balance weights
    np.testing.assert_allclose(scale * v, w, rtol=1e-15)
    plain_a, plain_b = combine_grams([blk.text_gram for blk in blocks], w)
    np.testing.assert_allclose(a, plain_a, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b, plain_b, rtol=1e-10, atol=1e-12)
    # removing an expert is not a prefix: the sum starts afresh (exact as a new fit)
    scale, v = balance_factors(masses[1:], True)
    a_removed, _ = text_ridge_matrices(blocks[1:], v, scale=scale, running=running)
    np.testing.assert_array_equal(a_removed, text_ridge_matrices(blocks[1:], v, scale=scale)[0])
    assert not np.array_equal(a0, a)
