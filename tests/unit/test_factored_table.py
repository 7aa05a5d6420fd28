"""The factored route table and the many-expert paths of the dense one against the plain formula."""

from __future__ import annotations

import numpy as np
import pytest

from ir3de.routing.selectors import select_avg_one, select_batch, select_one
from ir3de.table import RouteTable, choose_form


@pytest.fixture(scope="module")
def tables():
    rng = np.random.default_rng(0)
    vocab, hidden, experts = 300, 6, 90  # more experts than SUM_ROWS_MAX_EXPERTS: the array paths
    matrix = rng.normal(size=(vocab, hidden)).astype(np.float32)
    w = rng.normal(size=(hidden + 1, experts))
    excluded = [0, 1]
    logits = matrix.astype(np.float64) @ w[:-1] + w[-1]
    return matrix, w, logits, excluded


def _plain_sums(logits, ids, excluded):
    kept = [i for i in ids if i not in excluded]
    return logits[kept].sum(axis=0), len(kept)


def test_choose_form():
    assert choose_form("auto", 6, 7) == "dense" and choose_form("auto", 6, 8) == "factored"
    with pytest.raises(ValueError, match="unknown table form"):
        choose_form("sparse", 6, 8)


def test_factored_and_dense_sums_are_the_formula(tables):
    matrix, w, logits, excluded = tables
    factored = RouteTable.factored(matrix, w, excluded)
    dense = RouteTable.from_logits(logits, excluded)
    rng = np.random.default_rng(1)
    lengths = np.array([0, 1, 5, 3000, 0, 7, 2500, 2])  # prompts longer than a gather chunk, and empty ones
    ids = rng.integers(0, matrix.shape[0], size=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for table, rtol in ((factored, 1e-5), (dense, 1e-5)):
        sums, counts = table.segment_logit_sums(ids, lengths)
        for p, (s, n) in enumerate(zip(starts, lengths)):
            want, kept = _plain_sums(logits, ids[s : s + n].tolist(), excluded)
            assert counts[p] == kept
            np.testing.assert_allclose(sums[p], want, rtol=rtol, atol=1e-3)
            one, m = table.logit_sums(ids[s : s + n])
            assert m == kept
            np.testing.assert_allclose(one, want, rtol=rtol, atol=1e-3)
    np.testing.assert_allclose(factored.rows([5, 9]), logits[[5, 9]], rtol=1e-12)
    np.testing.assert_allclose(factored.logits, logits.astype(np.float32), rtol=1e-6)


def test_many_expert_selectors_equal_the_batch_path_and_the_formula(tables):
    matrix, w, logits, excluded = tables
    factored = RouteTable.factored(matrix, w, excluded)
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, matrix.shape[0], size=int(n)) for n in rng.integers(1, 40, size=30)]
    flat, lengths = np.concatenate(prompts), np.array([p.size for p in prompts])
    batch = select_batch(flat, lengths, factored, selector="avg", explain=False, temperature=0.5)
    for i, p in enumerate(prompts):
        want, n = _plain_sums(logits, p.tolist(), excluded)
        winner, scores, count = select_avg_one(p.tolist(), factored, 0.5)
        assert isinstance(scores, np.ndarray) and count == n
        assert winner == int(np.argmax(want)) == batch.winners[i]
        z = np.exp((want / n - (want / n).max()) / 0.5)
        np.testing.assert_allclose(scores, z / z.sum(), rtol=1e-4)
        np.testing.assert_allclose(batch.scores[i], scores, rtol=1e-9)
        for selector, combine in (("topk", "vote"), ("all", "logprob")):
            one = select_one(p, factored, selector=selector, k=5, combine=combine)
            many = select_batch(p, np.array([p.size]), factored, selector=selector, k=5, combine=combine)
            assert one[0] == many.winners[0]
            np.testing.assert_allclose(one[1], many.scores[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("experts", [5, 90])  # the list path (few experts) and the array path
def test_the_fused_evidence_prior_is_softmax_then_powers(experts):
    """select_avg_one(..., evidence_tokens=n0) is evidence_scores(softmax(mean / T), n, n0) of the formula."""
    from ir3de.routing.calibration import evidence_scores

    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(200, 6)).astype(np.float32)
    w = rng.normal(size=(7, experts))
    logits = matrix.astype(np.float64) @ w[:-1] + w[-1]
    table = RouteTable.factored(matrix, w, [0]) if experts > 64 else RouteTable.from_logits(logits, [0])
    for n_ids in (1, 2, 7, 40):
        ids = rng.integers(0, 200, size=n_ids).tolist()
        want, n = _plain_sums(logits, ids, [0])
        if n == 0:
            continue
        z = np.exp((want / n - (want / n).max()) / 0.3)
        plain = evidence_scores(z / z.sum(), n, 2.5)
        winner, scores, count = select_avg_one(ids, table, 0.3, 2.5)
        assert count == n and winner == int(np.argmax(want))
        np.testing.assert_allclose(scores, plain, rtol=1e-4, atol=1e-12)
        assert int(np.argmax(scores)) == winner
