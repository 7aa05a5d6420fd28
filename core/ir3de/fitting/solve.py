"""Ridge regression in closed form, and the paper's per-class column normalisation.

``W* = (A + λI)⁻¹ B`` in float64 by Cholesky (``A + λI`` is symmetric positive definite for
λ > 0). The identity covers the bias coordinate too, exactly like the reference code.
:class:`RidgePath` serves many λ from one eigendecomposition of ``A``.

Functions accept numpy arrays or torch tensors (on any device) and return the same kind.

Example:
    >>> import numpy as np
    >>> a = np.eye(3) * 2.0; b = np.ones((3, 2))
    >>> ridge_solve(a, b, lam=2.0).tolist()
    [[0.25, 0.25], [0.25, 0.25], [0.25, 0.25]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RidgePath", "column_normalize", "gcv_curve", "ridge_solve"]

_ZERO_NORM_REPLACEMENT = 1e-6  # what the reference code substitutes for a zero column norm


def _check_lambda(lam: float) -> float:
    lam = float(lam)
    if not np.isfinite(lam) or lam <= 0:
        raise ValueError(f"λ must be a positive finite number, got {lam!r} (the paper uses 1e-2)")
    return lam


def ridge_solve(a: Any, b: Any, lam: float) -> Any:
    """Solve ``(A + λI) W = B`` in float64.

    Args:
        a: (m, m) symmetric positive semi-definite statistics (bias folded in).
        b: (m, D) cross statistics.
        lam: ridge strength λ > 0.
    """
    lam = _check_lambda(lam)
    if isinstance(a, np.ndarray):
        import scipy.linalg

        reg = a.astype(np.float64, copy=True)
        reg[np.diag_indices_from(reg)] += lam
        factor = scipy.linalg.cho_factor(reg, lower=True, check_finite=True)
        return scipy.linalg.cho_solve(factor, np.asarray(b, np.float64))
    import torch

    reg = a.to(torch.float64) + lam * torch.eye(a.shape[0], dtype=torch.float64, device=a.device)
    chol = torch.linalg.cholesky(reg)
    return torch.cholesky_solve(b.to(torch.float64), chol)


def column_normalize(w: Any) -> Any:
    """Divide each class column (weights and bias) by the L2 norm of its weights.

    ``w`` has the bias as its last row, shape (h+1, D). A zero norm is replaced by 1e-6, as in the
    paper's reference code.
    """
    norms = (w[:-1] ** 2).sum(0) ** 0.5
    if isinstance(norms, np.ndarray):
        norms = np.where(norms == 0.0, _ZERO_NORM_REPLACEMENT, norms)
    else:
        norms = norms.clone()
        norms[norms == 0.0] = _ZERO_NORM_REPLACEMENT
    return w / norms[None, :]


class RidgePath:
    """Ridge solutions for many λ from one eigendecomposition ``A = Q Λ Qᵀ``.

    ``W(λ) = Q diag(1 / (Λ + λ)) Qᵀ B``: after the one-off ``O(m³)`` decomposition each λ costs two
    ``O(m² D)`` products. Used by λ sweeps and leave-out λ selection.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0); x = rng.normal(size=(50, 4)); a = x.T @ x; b = x.T @ rng.normal(size=(50, 2))
        >>> path = RidgePath(a, b)
        >>> bool(np.allclose(path.solve(0.1), ridge_solve(a, b, 0.1)))
        True
    """

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        a = np.asarray(a, np.float64)
        self.eigenvalues, self.eigenvectors = np.linalg.eigh((a + a.T) / 2)
        self.projected_b = self.eigenvectors.T @ np.asarray(b, np.float64)

    def solve(self, lam: float) -> np.ndarray:
        lam = _check_lambda(lam)
        w: np.ndarray = self.eigenvectors @ (self.projected_b / (self.eigenvalues + lam)[:, None])
        return w

    def gcv(self, lam: float, num_rows: float, target_mass: float) -> float:
        """Generalised cross-validation score of λ from the statistics alone (lower is better).

        ``GCV(λ) = n · RSS(λ) / (n − df(λ))²`` with the weighted residual sum of squares
        ``RSS = Σ w‖y‖² − 2 tr(WᵀB) + tr(WᵀAW)`` and the effective degrees of freedom
        ``df = tr(A (A + λI)⁻¹) = Σ σ/(σ + λ)``: the rotation-invariant approximation of leave-one-row-out
        error (Golub, Heath & Wahba 1979), computed without any training row.

        Args:
            num_rows: n, the (weighted) number of training rows (``A[-1, -1]`` with a bias column).
            target_mass: ``Σ w‖y‖²`` (for one-hot targets, the weighted number of rows again).
        """
        lam = _check_lambda(lam)
        sigma = np.clip(self.eigenvalues, 0.0, None)
        energy = (self.projected_b**2).sum(axis=1)
        rss = target_mass - 2.0 * (energy / (sigma + lam)).sum() + (sigma * energy / (sigma + lam) ** 2).sum()
        df = float((sigma / (sigma + lam)).sum())
        if df >= num_rows:
            return float("inf")  # as many parameters as rows: no left-out error to estimate
        return float(num_rows * max(rss, 0.0) / (num_rows - df) ** 2)


def gcv_curve(a: np.ndarray, b: np.ndarray, lams: np.ndarray | list[float]) -> tuple[np.ndarray, float]:
    """GCV score of every λ in ``lams`` for one-hot ridge matrices ``A``, ``B`` (bias last), and the best λ.

    Example:
        >>> rng = np.random.default_rng(0); x = np.hstack([rng.normal(size=(80, 3)), np.ones((80, 1))])
        >>> y = np.eye(2)[(x[:, 0] > 0).astype(int)]
        >>> scores, best = gcv_curve(x.T @ x, x.T @ y, [1e-3, 1e-1, 1e1, 1e3])
        >>> scores.shape, best in (1e-3, 1e-1, 1e1)
        ((4,), True)
    """
    a = np.asarray(a, np.float64)
    path = RidgePath(a, b)
    n = float(a[-1, -1])
    scores = np.array([path.gcv(float(lam), n, n) for lam in lams])
    return scores, float(np.asarray(lams, np.float64)[int(np.argmin(scores))])
