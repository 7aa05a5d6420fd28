"""ir3de.fitting.solve against np.linalg.solve, explicit normalisation and the explicit-row GCV."""

from __future__ import annotations

import numpy as np
import pytest

from ir3de.fitting.solve import RidgePath, column_normalize, gcv_curve, ridge_solve
from ir3de.fitting.statistics import ExpertCounts, combine_grams, expert_gram
from paper_oracle import explicit_gcv, paper_fit


def random_problem(seed, rows=40, hidden=5, experts=3):
    rng = np.random.default_rng(seed)
    x = np.hstack([rng.normal(size=(rows, hidden)), np.ones((rows, 1))])
    y = np.eye(experts)[rng.integers(0, experts, rows)]
    return x, y, x.T @ x, x.T @ y


@pytest.mark.parametrize("lam", [1e-3, 1e-2, 1.0, 30.0])
def test_ridge_solve_equals_the_dense_solve(lam):
    _, _, a, b = random_problem(0)
    w = ridge_solve(a, b, lam)
    assert isinstance(w, np.ndarray) and w.dtype == np.float64 and w.shape == b.shape
    np.testing.assert_allclose(w, np.linalg.solve(a + lam * np.eye(a.shape[0]), b), rtol=1e-9, atol=1e-12)


def test_ridge_solve_accepts_float32_and_a_rank_deficient_a():
    x = np.ones((10, 3))  # rank 1: only λ makes A + λI invertible
    a, b = (x.T @ x).astype(np.float32), (x.T @ np.eye(2)[[0] * 10]).astype(np.float32)
    w = ridge_solve(a, b, 0.5)
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, np.linalg.solve(a.astype(np.float64) + 0.5 * np.eye(3), b), rtol=1e-9)


def test_ridge_solve_torch_returns_torch():
    torch = pytest.importorskip("torch")
    _, _, a, b = random_problem(1)
    w = ridge_solve(torch.from_numpy(a).float(), torch.from_numpy(b).float(), 0.1)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float64
    a32, b32 = (m.astype(np.float32).astype(np.float64) for m in (a, b))
    expected = np.linalg.solve(a32 + 0.1 * np.eye(a.shape[0]), b32)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("lam", [0, -1.0, float("nan"), float("inf"), "x"])
def test_bad_lambda_is_refused(lam):
    _, _, a, b = random_problem(2)
    with pytest.raises(ValueError):
        ridge_solve(a, b, lam)
    with pytest.raises(ValueError):
        RidgePath(a, b).solve(lam)


def test_ridge_solve_does_not_modify_its_input():
    _, _, a, b = random_problem(3)
    a0 = a.copy()
    ridge_solve(a, b, 1.0)
    assert np.array_equal(a, a0)


def test_column_normalize_divides_by_the_weight_norms():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 3))
    w[:-1, 1] = 0.0  # a zero column: the reference code divides by 1e-6
    w[-1, 1] = 2e-6
    got = column_normalize(w)
    for d in range(3):
        norm = np.sqrt(sum(v * v for v in w[:-1, d])) or 1e-6
        np.testing.assert_allclose(got[:, d], w[:, d] / norm, rtol=1e-12)
    assert got[-1, 1] == pytest.approx(2.0)
    np.testing.assert_allclose(np.linalg.norm(got[:-1, [0, 2]], axis=0), 1.0)
    torch = pytest.importorskip("torch")
    wt = torch.from_numpy(w.copy())
    np.testing.assert_allclose(column_normalize(wt).numpy(), got, rtol=1e-12)
    assert np.array_equal(wt.numpy(), w)  # the input is not changed


@pytest.mark.parametrize("lam", [1e-4, 0.1, 10.0])
def test_ridge_path_equals_ridge_solve(lam):
    _, _, a, b = random_problem(5)
    np.testing.assert_allclose(RidgePath(a, b).solve(lam), ridge_solve(a, b, lam), rtol=1e-7, atol=1e-10)


def test_gcv_equals_the_explicit_row_formula():
    x, y, a, b = random_problem(6, rows=30)
    lams = [1e-3, 1e-1, 1.0, 10.0, 1e3]
    scores, best = gcv_curve(a, b, lams)
    expected = [explicit_gcv(x, y, np.ones(len(x)), lam) for lam in lams]
    np.testing.assert_allclose(scores, expected, rtol=1e-7)
    assert best == lams[int(np.argmin(expected))]


def test_gcv_with_more_parameters_than_rows_is_infinite():
    x, y, a, b = random_problem(7, rows=4, hidden=6)
    assert RidgePath(a, b).gcv(1e-8, num_rows=4.0, target_mass=4.0) == float("inf")
    assert np.isinf(explicit_gcv(x, y, np.ones(4), 1e-8))


@pytest.mark.parametrize("balance", [False, True])
def test_count_pipeline_equals_the_paper_fit(balance, toy_ids, toy_matrix, vocab_size, excluded_ids):
    """counts -> Grams -> ridge statistics -> solve -> normalise equals the per-token oracle."""
    from ir3de.fitting.statistics import balance_weights

    names = list(toy_ids)
    counts = [ExpertCounts.from_token_ids(toy_ids[d], vocab_size, excluded_ids) for d in names]
    grams = [
        expert_gram(toy_matrix[c.token_ids].astype(np.float64), c.counts.astype(np.float64)) for c in counts
    ]
    weights = balance_weights([c.num_tokens for c in counts], balance)
    a, b = combine_grams(grams, weights)
    w = column_normalize(ridge_solve(a, b, 1e-2))
    oracle = paper_fit(
        [toy_ids[d] for d in names], toy_matrix, set(excluded_ids.tolist()), 1e-2, weights=weights
    )
    np.testing.assert_allclose(w, oracle, rtol=1e-7, atol=1e-9)
