"""ir3de.table against per-row Python: entropy, votes, log-probabilities, ranks, compiled logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ir3de.table import ENTROPY_EPS, RouteTable, compile_logits, token_entropy


def plain_softmax(row):
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def plain_entropy(row):
    return -sum(p * math.log(p + ENTROPY_EPS) for p in plain_softmax(row))


def test_entropy_constant_is_the_reference_one():
    assert ENTROPY_EPS == 1e-10


@pytest.mark.parametrize("experts", [1, 2, 5])
def test_token_entropy_is_the_reference_formula(experts, make_logits):
    logits = make_logits(0, 30, experts, ties=True)
    got = token_entropy(logits)
    assert got.dtype == np.float64 and got.shape == (30,)
    np.testing.assert_allclose(
        got, [plain_entropy(r) for r in logits.astype(np.float64)], rtol=1e-12, atol=1e-12
    )
    assert token_entropy(np.zeros((1, experts)))[0] == pytest.approx(math.log(experts), abs=1e-9)
    assert token_entropy(np.array([[1000.0] + [0.0] * (experts - 1)]))[0] == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_route_table_rows_are_the_per_id_definitions(seed, make_logits):
    logits = make_logits(seed, 25, 4, ties=True)
    excluded = [1, 7, 99]  # 99 is beyond the vocabulary: ignored
    t = RouteTable.from_logits(logits, excluded_ids=excluded)
    assert t.vocab_size == 25 and t.num_experts == 4
    assert t.logits.dtype == np.float32 and np.array_equal(t.logits, logits)
    for v, row in enumerate(logits.astype(np.float64).tolist()):
        assert t.votes[v] == row.index(max(row))  # the first maximum on ties
        np.testing.assert_allclose(np.exp(t.log_probs[v]), plain_softmax(row), rtol=1e-12)
        if v in excluded:
            assert not t.countable[v] and t.entropy[v] == np.inf
        else:
            assert t.countable[v] and t.entropy[v] == pytest.approx(plain_entropy(row), abs=1e-12)
    for arr in (t.logits, t.entropy, t.votes, t.log_probs, t.countable, t.entropy_rank):
        assert not arr.flags.writeable


def test_entropy_rank_is_a_dense_rank(make_logits):
    t = RouteTable.from_logits(make_logits(3, 40, 3, ties=True), excluded_ids=[0, 5])
    h, r = t.entropy, t.entropy_rank
    assert t.num_entropy_ranks == len(set(h.tolist())) == int(r.max()) + 1
    for i in range(40):
        for j in range(40):
            assert (h[i] < h[j]) == (r[i] < r[j]) and (h[i] == h[j]) == (r[i] == r[j])


def test_ties_go_to_the_lowest_expert():
    t = RouteTable.from_logits(np.array([[0, 0, 0], [1, 2, 2], [3, 3, 1]], np.float32))
    assert t.votes.tolist() == [0, 1, 0]


@pytest.mark.parametrize("shape", [(5,), (5, 0), (2, 3, 4)])
def test_bad_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="logits must be"):
        RouteTable.from_logits(np.zeros(shape, np.float32))


def test_a_reloaded_table_is_bit_identical(make_logits):
    logits = make_logits(4, 20, 3)
    a = RouteTable.from_logits(logits, [2])
    b = RouteTable.from_logits(np.frombuffer(logits.tobytes(), np.float32).reshape(20, 3), [2])
    for name in ("logits", "entropy", "votes", "log_probs", "countable", "entropy_rank"):
        assert np.array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("chunk_rows", [1, 7, 2048])
def test_compile_logits_is_the_bias_augmented_product(chunk_rows, toy_matrix):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(toy_matrix.shape[1] + 1, 3))
    got = compile_logits(toy_matrix, w, chunk_rows=chunk_rows)
    e_tilde = np.hstack([toy_matrix.astype(np.float64), np.ones((toy_matrix.shape[0], 1))])
    assert got.dtype == np.float32 and got.shape == (toy_matrix.shape[0], 3)
    np.testing.assert_allclose(got, (e_tilde @ w).astype(np.float32), rtol=1e-6, atol=1e-7)
    assert np.array_equal(got, compile_logits(toy_matrix, w))  # chunking never changes a bit


def test_compile_logits_accepts_torch_weights(toy_matrix):
    torch = pytest.importorskip("torch")
    w = np.random.default_rng(6).normal(size=(toy_matrix.shape[1] + 1, 2))
    assert np.array_equal(compile_logits(toy_matrix, torch.from_numpy(w)), compile_logits(toy_matrix, w))
