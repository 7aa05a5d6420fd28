"""ir3de.fitting.statistics against the obvious definitions: histograms, Grams, ridge statistics, text rows."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ir3de.fitting.statistics import (
    TEXT_ROW_MASS,
    ExpertCounts,
    TokenCounter,
    balance_weights,
    combine_grams,
    expert_gram,
    text_gram,
    text_means,
    text_rows,
)
from paper_oracle import text_level_rows, text_mean_row, token_rows


def naive_histogram(id_lists, excluded=()):
    c = Counter(t for ids in id_lists for t in ids if t not in set(excluded))
    ids = sorted(c)
    return ids, [c[t] for t in ids]


def random_id_lists(rng, vocab, n, max_len=12):
    return [rng.integers(0, vocab, size=rng.integers(0, max_len + 1)) for _ in range(n)]


# ------------------------------------------------------------------------------------- ExpertCounts


@pytest.mark.parametrize("seed", range(5))
def test_from_token_ids_is_the_histogram_without_excluded_ids(seed, vocab_size, excluded_ids):
    lists = random_id_lists(np.random.default_rng(seed), vocab_size, 7)
    c = ExpertCounts.from_token_ids(lists, vocab_size, excluded_ids)
    ids, counts = naive_histogram([x.tolist() for x in lists], excluded_ids.tolist())
    assert c.token_ids.tolist() == ids and c.counts.tolist() == counts
    assert c.token_ids.dtype == c.counts.dtype == np.int64
    assert c.num_texts == 7 and c.num_tokens == sum(counts)
    assert c.text_gram is None and c.num_scored_texts == 0


def test_dense_round_trip_and_empty(vocab_size):
    dense = np.zeros(vocab_size, np.int64)
    dense[[0, 4, 9]] = [3, 1, 7]
    c = ExpertCounts.from_dense(dense, num_texts=2)
    assert c.token_ids.tolist() == [0, 4, 9] and c.counts.tolist() == [3, 1, 7]
    assert np.array_equal(c.to_dense(vocab_size), dense)
    e = ExpertCounts.empty()
    assert e.num_texts == 0 and e.num_tokens == 0 and e.token_ids.size == 0
    assert e + c == c and c + e == c


@pytest.mark.parametrize("seed", range(4))
def test_counts_are_additive_and_order_independent(seed, vocab_size, excluded_ids):
    rng = np.random.default_rng(seed)
    a = random_id_lists(rng, vocab_size, 5)
    b = random_id_lists(rng, vocab_size, 3)
    whole = ExpertCounts.from_token_ids(a + b, vocab_size, excluded_ids)
    parts = ExpertCounts.from_token_ids(a, vocab_size, excluded_ids) + ExpertCounts.from_token_ids(
        b, vocab_size, excluded_ids
    )
    assert parts == whole and parts.num_texts == 8
    assert ExpertCounts.from_token_ids(b + a, vocab_size, excluded_ids) == whole
    shuffled = [a[i] for i in rng.permutation(len(a))]
    assert ExpertCounts.from_token_ids(shuffled, vocab_size, excluded_ids) == ExpertCounts.from_token_ids(
        a, vocab_size, excluded_ids
    )


def test_addition_of_text_grams():
    g1, g2 = np.eye(3), 2 * np.eye(3)
    g1[-1, -1] = g2[-1, -1] = 1.0
    a = ExpertCounts(np.array([1]), np.array([2]), 1, g1)
    b = ExpertCounts(np.array([1, 5]), np.array([1, 1]), 1, g2)
    s = a + b
    assert s.token_ids.tolist() == [1, 5] and s.counts.tolist() == [3, 1] and s.num_texts == 2
    assert np.array_equal(s.text_gram, g1 + g2)
    assert (a + a.without_text_gram()).text_gram is None  # kept only when both sides have one
    with pytest.raises(ValueError, match="different embedding matrices"):
        a + ExpertCounts(np.array([1]), np.array([2]), 1, np.eye(4))


@pytest.mark.parametrize(
    ("ids", "counts", "message"),
    [
        ([2, 1], [1, 1], "sorted"),
        ([1, 1], [1, 1], "sorted"),
        ([-1, 2], [1, 1], "non-negative"),
        ([1, 2], [1, 0], "positive"),
        ([1, 2], [1], "aligned"),
        ([[1, 2]], [[1, 1]], "1-D"),
    ],
)
def test_invalid_counts_are_refused(ids, counts, message):
    with pytest.raises(ValueError, match=message):
        ExpertCounts(np.array(ids), np.array(counts), 1)


@pytest.mark.parametrize(
    "gram",
    [
        np.ones((3, 2)),
        np.ones((1, 1)),
        np.full((3, 3), np.nan),
        np.diag([1.0, 1.0, 99.0]),
        np.diag([1, 1, -1.0]),
    ],
)
def test_invalid_text_grams_are_refused(gram):
    with pytest.raises(ValueError, match="text_gram"):
        ExpertCounts(np.array([1]), np.array([1]), 2, gram)


def test_text_gram_is_a_read_only_private_copy():
    gram = np.diag([1.0, 1.0, TEXT_ROW_MASS * 2])
    c = ExpertCounts(np.array([1]), np.array([1]), 2, gram)
    gram[0, 0] = 5.0
    assert c.text_gram[0, 0] == 1.0 and not c.text_gram.flags.writeable
    assert c.num_scored_texts == 2


def test_equality_semantics():
    g = np.diag([1.0, 1.0, 1.25])
    a = ExpertCounts(np.array([1]), np.array([1]), 1, g)
    assert a == ExpertCounts(np.array([1]), np.array([1]), 1, g * (1 + 1e-12))  # float rounding
    assert a != ExpertCounts(np.array([1]), np.array([1]), 1, g * 1.01)
    assert a != ExpertCounts(np.array([1]), np.array([1]), 2, g)
    assert a != a.without_text_gram()
    assert a != "counts" and (a == object()) is False
    with pytest.raises(TypeError):
        hash(a)


# -------------------------------------------------------------------------------------- TokenCounter


def test_token_counter_paths_agree(vocab_size, excluded_ids):
    rng = np.random.default_rng(7)
    lists = random_id_lists(rng, vocab_size, 6)
    by_texts = TokenCounter(vocab_size, excluded_ids)
    by_texts.add_texts(lists[:3])
    by_texts.add_texts(lists[3:])
    by_texts.add_texts([])
    flat = TokenCounter(vocab_size, excluded_ids)
    flat.add_flat(np.concatenate(lists), num_texts=6)
    sparse = TokenCounter(vocab_size, excluded_ids)
    for x in lists:
        part = ExpertCounts.from_token_ids([x], vocab_size)  # excluded ids are dropped at result()
        sparse.add_counts(part.token_ids, part.counts, part.num_texts)
    expected = ExpertCounts.from_token_ids(lists, vocab_size, excluded_ids)
    assert by_texts.result() == flat.result() == sparse.result() == expected
    assert by_texts.num_texts == 6
    assert not set(expected.token_ids.tolist()) & set(excluded_ids.tolist())


@pytest.mark.parametrize("bad", [[-1], [23], [0, 99]])
def test_token_counter_refuses_ids_out_of_range(bad, vocab_size):
    c = TokenCounter(vocab_size)
    with pytest.raises(ValueError, match="out of range"):
        c.add_flat(np.array(bad), 1)
    with pytest.raises(ValueError, match="out of range"):
        c.add_counts(np.array(bad), np.ones(len(bad), np.int64), 1)


def test_result_is_a_snapshot(vocab_size):
    c = TokenCounter(vocab_size)
    c.add_texts([np.array([3, 3])])
    first = c.result()
    c.add_texts([np.array([3])])
    assert first.counts.tolist() == [2] and c.result().counts.tolist() == [3]


# ---------------------------------------------------------------------------- Grams and statistics


def test_a_over_token_rows_equals_the_count_form(toy_ids, toy_matrix, vocab_size, excluded_ids):
    """The paper's A = Σ x xᵀ and B = Σ x yᵀ over token rows equal Ẽᵀ diag(N) Ẽ and Ẽᵀ N."""
    names = list(toy_ids)
    excl = set(excluded_ids.tolist())
    e_tilde = np.hstack([toy_matrix.astype(np.float64), np.ones((vocab_size, 1))])
    n = np.stack(
        [
            ExpertCounts.from_token_ids(toy_ids[d], vocab_size, excluded_ids).to_dense(vocab_size)
            for d in names
        ],
        axis=1,
    )
    a_rows = np.zeros((e_tilde.shape[1],) * 2)
    b_rows = np.zeros((e_tilde.shape[1], len(names)))
    for j, d in enumerate(names):
        x = token_rows(toy_ids[d], toy_matrix, excl)
        a_rows += x.T @ x
        b_rows[:, j] = x.sum(0)
    np.testing.assert_allclose(e_tilde.T @ np.diag(n.sum(1)) @ e_tilde, a_rows, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(e_tilde.T @ n, b_rows, rtol=1e-12, atol=1e-10)
    grams = []
    for d in names:
        c = ExpertCounts.from_token_ids(toy_ids[d], vocab_size, excluded_ids)
        grams.append(expert_gram(toy_matrix[c.token_ids].astype(np.float64), c.counts.astype(np.float64)))
    a, b = combine_grams(grams, np.ones(len(names)))
    np.testing.assert_allclose(a, a_rows, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(b, b_rows, rtol=1e-12, atol=1e-10)


def test_expert_gram_numpy_and_torch(toy_matrix):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    rows = toy_matrix[[4, 9, 11]].astype(np.float64)
    counts = rng.integers(1, 5, size=3).astype(np.float64)
    x = np.hstack([np.repeat(rows, counts.astype(int), axis=0), np.ones((int(counts.sum()), 1))])
    expected = x.T @ x
    got = expert_gram(rows, counts)
    assert isinstance(got, np.ndarray) and got.shape == (5, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    got_t = expert_gram(torch.from_numpy(rows), torch.from_numpy(counts))
    assert isinstance(got_t, torch.Tensor) and got_t.dtype == torch.float64
    np.testing.assert_allclose(got_t.numpy(), expected, rtol=1e-12)


def test_combine_grams_weights(toy_matrix):
    rng = np.random.default_rng(4)
    grams = [text_gram(rng.normal(size=(5, 3))) for _ in range(3)]
    w = np.array([0.5, 2.0, 1.0])
    a, b = combine_grams(grams, w)
    np.testing.assert_allclose(a, sum(wi * g for wi, g in zip(w, grams)))
    np.testing.assert_allclose(b, np.stack([wi * g[:, -1] for wi, g in zip(w, grams)], axis=1))
    torch = pytest.importorskip("torch")
    at, bt = combine_grams([torch.from_numpy(g) for g in grams], w)
    np.testing.assert_allclose(at.numpy(), a) and np.testing.assert_allclose(bt.numpy(), b)


def test_balance_weights():
    masses = [10, 30, 60]
    np.testing.assert_allclose(balance_weights(masses, True), np.mean(masses) / np.array(masses))
    weighted = balance_weights(masses, True) * np.array(masses)
    assert np.allclose(weighted, weighted[0]) and weighted.sum() == pytest.approx(sum(masses))
    assert balance_weights(masses, False).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="at least one counted token"):
        balance_weights([5, 0], True)


def test_text_gram_is_the_weighted_sum_of_outer_products():
    rng = np.random.default_rng(5)
    means, w = rng.normal(size=(6, 3)), rng.uniform(0.1, 2, size=6)
    x = np.hstack([means, np.ones((6, 1))])
    expected = sum(wi * np.outer(xi, xi) for wi, xi in zip(w, x))
    np.testing.assert_allclose(text_gram(means, w), expected, rtol=1e-12)
    np.testing.assert_allclose(text_gram(means), x.T @ x, rtol=1e-12)


@pytest.mark.parametrize("window", [None, 1, 3, 8])
def test_text_rows_match_the_plain_oracle(window, toy_ids, toy_matrix, vocab_size, excluded_ids):
    lists = [ids for texts in toy_ids.values() for ids in texts] + [[1, 2], []]  # specials only, empty
    excl = set(excluded_ids.tolist())
    countable = np.ones(vocab_size, bool)
    countable[excluded_ids] = False
    flat = np.array([t for ids in lists for t in ids], np.int64)
    lengths = np.array([len(ids) for ids in lists])
    rows, weights = text_rows(toy_matrix, flat, lengths, countable, window, 0.25)
    # plain: each text's mean first (weight 1), then every window mean (weight 0.25 / windows)
    means = [r for r in (text_mean_row(ids, toy_matrix, excl) for ids in lists) if r is not None]
    expected_rows, expected_w = [m[:-1] for m in means], [1.0] * len(means)
    if window:
        for ids in lists:
            kept = [t for t in ids if t not in excl]
            spans = [kept[i : i + window] for i in range(0, len(kept), window)]
            if not spans:
                continue
            expected_rows += [text_mean_row(span, toy_matrix, excl)[:-1] for span in spans]
            expected_w += [0.25 / len(spans)] * len(spans)
    # 8-token window sums accumulate in the embeddings' own float32 (texts add windows in float64)
    np.testing.assert_allclose(rows, np.array(expected_rows), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights, expected_w, rtol=1e-12)
    assert rows.dtype == np.float64
    np.testing.assert_allclose(
        text_means(toy_matrix, flat, lengths, countable),
        np.array([m[:-1] for m in means]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_text_rows_of_texts_without_countable_tokens(toy_matrix, vocab_size):
    countable = np.ones(vocab_size, bool)
    countable[[1, 2]] = False
    rows, w = text_rows(toy_matrix, np.array([1, 2, 2]), np.array([0, 3, 0]), countable)
    assert rows.shape == (0, toy_matrix.shape[1]) and w.shape == (0,)


def test_text_gram_of_rows_equals_the_oracle_design(toy_ids, toy_matrix, vocab_size, excluded_ids):
    countable = np.ones(vocab_size, bool)
    countable[excluded_ids] = False
    lists = toy_ids["math"]
    flat = np.array([t for ids in lists for t in ids], np.int64)
    gram = text_gram(*text_rows(toy_matrix, flat, np.array([len(x) for x in lists]), countable))
    x, _, w = text_level_rows([lists], toy_matrix, set(excluded_ids.tolist()), balance=False)
    np.testing.assert_allclose(gram, (x * w[:, None]).T @ x, rtol=1e-5, atol=1e-6)  # float32 window sums
    scored = sum(1 for ids in lists if set(ids) - set(excluded_ids.tolist()))
    assert gram[-1, -1] == pytest.approx(TEXT_ROW_MASS * scored)


def test_excluded_ids_out_of_range_are_refused_up_front(vocab_size):
    with pytest.raises(ValueError, match=rf"excluded token id {vocab_size + 3} .*\[0, {vocab_size}\)"):
        TokenCounter(vocab_size, np.array([vocab_size + 3]))
    with pytest.raises(ValueError, match="excluded token id -1"):
        TokenCounter(vocab_size, np.array([2, -1]))
    counter = TokenCounter(vocab_size, np.array([vocab_size - 1]))  # the last id is in range
    counter.add_texts([np.array([4, vocab_size - 1])])
    assert counter.result().token_ids.tolist() == [4]


def test_text_gram_corner_beyond_the_row_mass_is_refused_with_the_true_bound():
    gram = np.zeros((3, 3))
    gram[-1, -1] = TEXT_ROW_MASS * 2  # two texts' rows: valid
    assert ExpertCounts(np.array([1]), np.array([3]), 2, gram).num_scored_texts == 2
    gram[-1, -1] = TEXT_ROW_MASS * 2 + 1.0
    with pytest.raises(ValueError, match=rf"outside \[0, {TEXT_ROW_MASS * 2:g}\] for num_texts=2"):
        ExpertCounts(np.array([1]), np.array([3]), 2, gram)
