"""The route table: everything routing needs, precomputed per vocabulary id.

A token's logits depend only on its id, so after a fit the token router is a table (DESIGN §2):
for every id ``v``: ``logits[v] = [E[v], 1] · W``, its softmax entropy ``entropy[v]``, its vote
``argmax logits[v]`` and its log-probabilities. Routing a prompt is then gather + partial sort +
count; no embedding matrix and no matrix multiply.

The table is derived from the float32 ``logits`` alone (that is what an artifact stores), so a
saved and reloaded router routes bit-identically.

Example:
    >>> import numpy as np
    >>> t = RouteTable.from_logits(np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]], np.float32), excluded_ids=[1])
    >>> t.votes.tolist(), bool(np.isinf(t.entropy[1]))
    ([0, 0, 1], True)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ENTROPY_EPS", "RouteTable", "compile_logits", "token_entropy"]

ENTROPY_EPS = 1e-10
"""The paper's reference code computes ``-Σ p log(p + 1e-10)``; we keep the same constant."""


def token_entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy of ``softmax(logits)`` along the last axis, as in the reference code (float64)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    entropy: np.ndarray = -(p * np.log(p + ENTROPY_EPS)).sum(axis=-1)
    return entropy


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return out


def compile_logits(matrix: Any, w: Any, *, device: str = "cpu", chunk_rows: int = 2048) -> np.ndarray:
    """``[E, 1] · W`` for every vocabulary row, in float64 on ``device``; returned as float32 numpy.

    Args:
        matrix: the (V, h) embedding matrix (numpy, float32).
        w: (h+1, D) weights with the bias as the last row (numpy or torch, float64).
        device: torch device for the product (``"cuda"`` when fitting on a GPU).
        chunk_rows: rows converted to float64 at a time; small chunks stay in cache (a whole-matrix
            float64 copy made compilation twice as slow on CPU) and bound GPU memory.
    """
    import torch

    w_t = torch.as_tensor(w, dtype=torch.float64, device=device)
    weights, bias = w_t[:-1], w_t[-1]
    with warnings.catch_warnings():  # read-only matrices are fine: the product never writes to them
        warnings.simplefilter("ignore", UserWarning)
        src = torch.from_numpy(np.asarray(matrix))
    out = np.empty((src.shape[0], w_t.shape[1]), np.float32)
    for start in range(0, src.shape[0], chunk_rows):
        rows = src[start : start + chunk_rows].to(device=device, dtype=torch.float64)
        out[start : start + chunk_rows] = (rows @ weights + bias).to(torch.float32).cpu().numpy()
    return out


def _sum_rows(logits: np.ndarray, countable: np.ndarray) -> np.ndarray:
    rows = np.zeros((logits.shape[1] + 1, logits.shape[0]), np.float64)
    rows[:-1] = logits.T
    rows[-1] = 1.0
    rows[:, ~countable] = 0.0
    rows.flags.writeable = False
    return rows


@dataclass(frozen=True, eq=False)
class RouteTable:
    """Per-vocabulary-id routing arrays.

    Attributes:
        logits: (V, D) float32 token logits.
        entropy: (V,) float64 entropy of each id's softmax; ``+inf`` for ids that never count.
        votes: (V,) int64 argmax expert index of each id (the first maximum on ties).
        log_probs: (V, D) float64 log-softmax of each id's logits.
        countable: (V,) bool, False for excluded (special/padding) ids.
        entropy_rank: (V,) int64 dense rank of ``entropy`` (equal entropies share a rank), so batch
            selection sorts integers: ``argsort(prompt * num_ranks + rank)`` orders by prompt, then
            entropy, then position — the same order as a stable sort on entropy, several times faster.
        sum_rows: (D+1, V) float64, the mean-logit evidence precomputed per id for one fused lookup:
            rows ``0..D-1`` are ``logits.T`` with the columns of ids that never count set to 0, row
            ``D`` is 1.0 for countable ids. ``sum_rows.take(ids, axis=1).sum(axis=1)`` gives a prompt's
            summed logits and its number of countable tokens at once (:func:`ir3de.routing.selectors.mean_logits_one`).
    """

    logits: np.ndarray
    entropy: np.ndarray
    votes: np.ndarray
    log_probs: np.ndarray
    countable: np.ndarray
    entropy_rank: np.ndarray
    num_entropy_ranks: int
    sum_rows: np.ndarray | None = None

    @classmethod
    def from_logits(cls, logits: np.ndarray, excluded_ids: Sequence[int] | np.ndarray = ()) -> RouteTable:
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        if logits.ndim != 2 or logits.shape[1] < 1:
            raise ValueError(f"logits must be (vocab, experts), got shape {logits.shape}")
        entropy = token_entropy(logits)
        countable = np.ones(logits.shape[0], bool)
        excluded = np.asarray(excluded_ids, np.int64)
        if excluded.size:
            countable[excluded[excluded < logits.shape[0]]] = False
        entropy[~countable] = np.inf
        votes = np.argmax(logits, axis=1).astype(np.int64)
        for arr in (logits, entropy, votes, countable):
            arr.flags.writeable = False
        log_probs = log_softmax(logits)
        entropy_rank = np.unique(entropy, return_inverse=True)[1].astype(np.int64).reshape(-1)
        for arr in (log_probs, entropy_rank):
            arr.flags.writeable = False
        num_ranks = int(entropy_rank.max()) + 1 if entropy_rank.size else 1
        return cls(
            logits,
            entropy,
            votes,
            log_probs,
            countable,
            entropy_rank,
            num_ranks,
            _sum_rows(logits, countable),
        )

    @property
    def summed_rows(self) -> np.ndarray:
        """``sum_rows``, computed on first use for a table constructed without it."""
        if self.sum_rows is None:
            object.__setattr__(self, "sum_rows", _sum_rows(self.logits, self.countable))
        assert self.sum_rows is not None
        return self.sum_rows

    @property
    def vocab_size(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.logits.shape[1])
