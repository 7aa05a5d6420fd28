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

__all__ = ["RidgePath", "column_normalize", "ridge_solve"]

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
        return self.eigenvectors @ (self.projected_b / (self.eigenvalues + lam)[:, None])
