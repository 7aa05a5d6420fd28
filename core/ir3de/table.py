"""The route table: everything routing needs, per vocabulary id.

A token's logits depend only on its id, so after a fit the token router is a table (DESIGN §2):
for every id ``v``: ``logits[v] = [E[v], 1] · W``, its softmax entropy ``entropy[v]``, its vote
``argmax logits[v]`` and its log-probabilities. Routing a prompt is then gather + partial sort +
count.

Two forms hold the same logits:

* ``"dense"``: the (V, D) float32 logits themselves (a gather per token; the table of a few experts).
* ``"factored"``: ``E`` (V, h) and ``W`` ((h+1), D) kept apart, ``logits[v] = [E[v], 1] · W`` computed
  for the ids a prompt has. Its size does not grow as V × D, and the mean-logit route of a prompt is
  its mean embedding times ``W`` (one (h+1) × D product): the form of many experts.

``choose_form("auto", ...)`` takes the factored form when D > h + 1 (then ``E`` and ``W`` hold fewer
numbers than the logits), dense otherwise; ``RouterConfig(table=...)`` overrides it.

Per-id arrays every selector but ``avg`` reads (entropy, votes, entropy ranks) are V-sized and
computed in row chunks on first use, with no (V × D) float64 temporary; the V × D log-probabilities are
only materialised when asked for (:attr:`RouteTable.log_probs`; selectors use :meth:`RouteTable.log_prob_rows`).

The dense table is derived from the float32 ``logits`` alone (that is what an artifact stores), so a
saved and reloaded router routes bit-identically; the factored one from ``E`` and ``W`` (stored too).

Example:
    >>> import numpy as np
    >>> t = RouteTable.from_logits(np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]], np.float32), excluded_ids=[1])
    >>> t.votes.tolist(), bool(np.isinf(t.entropy[1]))
    ([0, 0, 1], True)
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ENTROPY_EPS", "TABLE_FORMS", "RouteTable", "choose_form", "compile_logits", "token_entropy"]

ENTROPY_EPS = 1e-10
"""The paper's reference code computes ``-Σ p log(p + 1e-10)``; we keep the same constant."""

#: ``RouterConfig.table``: how the route table is held (see the module docstring).
TABLE_FORMS = ("auto", "dense", "factored")

#: Up to this many experts the mean-logit path reads the precomputed per-id sums (:attr:`RouteTable.sum_rows`).
SUM_ROWS_MAX_EXPERTS = 64
_CHUNK_ROWS = 2048


def choose_form(form: str, hidden: int, experts: int) -> str:
    """``"dense"`` or ``"factored"``: ``form`` itself, or for ``"auto"`` the smaller one (factored
    when ``experts > hidden + 1``).

    Example:
        >>> choose_form("auto", 576, 5), choose_form("auto", 576, 1000), choose_form("dense", 576, 1000)
        ('dense', 'factored', 'dense')
    """
    if form not in TABLE_FORMS:
        raise ValueError(f"unknown table form {form!r}; choose one of {TABLE_FORMS}")
    if form != "auto":
        return form
    return "factored" if experts > hidden + 1 else "dense"


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


def _read_only(*arrays: np.ndarray) -> None:
    for arr in arrays:
        arr.flags.writeable = False


@dataclass(frozen=True, eq=False)
class RouteTable:
    """Per-vocabulary-id routing arrays, dense or factored (see the module docstring).

    Build one with :meth:`from_logits` (dense) or :meth:`factored`.

    Attributes:
        countable: (V,) bool, False for excluded (special/padding) ids.
        dense_logits: (V, D) float32 logits (dense form), else ``None``.
        matrix: (V, h) float32 embedding matrix (factored form, not copied), else ``None``.
        head: (h, D) float64 weights without the bias (factored form).
        bias: (D,) float64 bias row (factored form).

    Derived on first use (V-sized, cached): ``entropy`` ((V,) float64 entropy of each id's softmax,
    ``+inf`` for ids that never count), ``votes`` ((V,) int64 argmax expert, first maximum on ties),
    ``entropy_rank`` ((V,) int64 dense rank of ``entropy``: batch selection sorts integers,
    ``argsort(prompt * num_ranks + rank)`` = prompt, then entropy, then position) and
    ``num_entropy_ranks``; for dense tables of up to :data:`SUM_ROWS_MAX_EXPERTS` experts ``sum_rows``
    ((D+1, V) float64: ``logits.T`` with zero columns for ids that never count, and a row of 1.0 for
    countable ids; one ``take`` gives a prompt's summed logits and its number of countable tokens).
    """

    countable: np.ndarray
    dense_logits: np.ndarray | None = None
    matrix: np.ndarray | None = None
    head: np.ndarray | None = None
    bias: np.ndarray | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ------------------------------------------------------------------------------------------ build

    @classmethod
    def from_logits(cls, logits: np.ndarray, excluded_ids: Sequence[int] | np.ndarray = ()) -> RouteTable:
        """The dense table of (V, D) logits (stored as float32)."""
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        if logits.ndim != 2 or logits.shape[1] < 1:
            raise ValueError(f"logits must be (vocab, experts), got shape {logits.shape}")
        _read_only(logits)
        table = cls(_countable(logits.shape[0], excluded_ids), dense_logits=logits)
        if logits.shape[1] <= SUM_ROWS_MAX_EXPERTS:  # few experts: everything now, as routing reads it
            table._per_token()
            _ = table.summed_rows
        return table

    @classmethod
    def factored(
        cls, matrix: np.ndarray, weights: np.ndarray, excluded_ids: Sequence[int] | np.ndarray = ()
    ) -> RouteTable:
        """The factored table of the (V, h) embedding ``matrix`` and (h+1, D) ``weights`` (bias last).

        Example:
            >>> e = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
            >>> t = RouteTable.factored(e, np.array([[2.0, 0.0], [0.0, 3.0], [0.5, 0.0]]))
            >>> t.form, t.rows([1]).tolist(), t.votes.tolist()
            ('factored', [[0.5, 3.0]], [0, 1])
        """
        matrix = np.asarray(matrix)
        if matrix.dtype not in (np.float32, np.float64):
            matrix = matrix.astype(np.float32)
        w = np.asarray(weights, np.float64)
        if matrix.ndim != 2 or w.ndim != 2 or w.shape[0] != matrix.shape[1] + 1 or w.shape[1] < 1:
            raise ValueError(
                f"a factored table needs a (V, h) matrix and (h+1, D) weights, got {matrix.shape} and {w.shape}"
            )
        head, bias = np.ascontiguousarray(w[:-1]), np.ascontiguousarray(w[-1])
        _read_only(head, bias)
        return cls(_countable(matrix.shape[0], excluded_ids), matrix=matrix, head=head, bias=bias)

    # ------------------------------------------------------------------------------------------ shape

    @property
    def form(self) -> str:
        """``"dense"`` or ``"factored"``."""
        return "dense" if self.dense_logits is not None else "factored"

    @property
    def vocab_size(self) -> int:
        return int(self.countable.shape[0])

    @property
    def num_experts(self) -> int:
        if self.dense_logits is not None:
            return int(self.dense_logits.shape[1])
        assert self.head is not None
        return int(self.head.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes this table holds beyond a shared embedding matrix (logits or ``W``, and what is cached)."""
        own = self.dense_logits.nbytes if self.dense_logits is not None else 0
        own += sum(a.nbytes for a in (self.head, self.bias) if a is not None)
        return own + sum(v.nbytes for v in self._cache.values() if isinstance(v, np.ndarray))

    # ------------------------------------------------------------------------------------------ rows

    def rows(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The (n, D) float64 logits of ``ids`` (a gather, or ``[E[ids], 1] · W`` when factored)."""
        idx = np.asarray(ids, np.int64)
        if self.dense_logits is not None:
            return self.dense_logits[idx].astype(np.float64)
        assert self.matrix is not None and self.head is not None and self.bias is not None
        out: np.ndarray = np.asarray(self.matrix[idx], np.float64) @ self.head
        out += self.bias
        return out

    def log_prob_rows(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The (n, D) float64 log-softmax of the logits of ``ids``."""
        if "log_probs" in self._cache:
            cached: np.ndarray = self._cache["log_probs"][np.asarray(ids, np.int64)]
            return cached
        return log_softmax(self.rows(ids) if self.dense_logits is None else self._dense_rows32(ids))

    def _dense_rows32(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        assert self.dense_logits is not None
        return self.dense_logits[np.asarray(ids, np.int64)]

    def logit_sums(self, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, int]:
        """The summed (D,) float64 logits of the countable ones of ``ids``, and how many there are.

        Factored: ``(Σ E[ids]) · W_head + n · bias`` — the sum of the ids' embeddings times ``W``, one
        (h+1) × D product whatever the prompt's length. The embedding sum and the product run in
        float32 (the precision of ``E`` and of :attr:`head32`), token after token, as
        :meth:`segment_logit_sums` sums each prompt.
        """
        if self.dense_logits is not None and self.num_experts <= SUM_ROWS_MAX_EXPERTS:
            sums = self.summed_rows.take(ids, axis=1).sum(axis=1)
            return sums[:-1], int(sums[-1])
        idx: Sequence[int] | np.ndarray
        if isinstance(ids, list) and self.excluded_set.isdisjoint(ids):
            idx = ids  # the tokenizer's list, usually free of special tokens: no array round trip
        else:
            idx = np.asarray(ids, np.int64)
            keep = self.countable[idx]
            if not keep.all():
                idx = idx[keep]
        n = len(idx)
        if self.dense_logits is not None:
            return self.dense_logits.take(idx, axis=0).sum(axis=0, dtype=np.float64), n
        assert self.matrix is not None and self.bias is not None
        embedded = np.add.reduce(self.matrix.take(idx, axis=0), axis=0)  # float32, as segment_logit_sums
        out: np.ndarray = self.bias * n
        out += embedded @ self.head32  # one h × D product, float32 (see head32)
        return out, n

    @property
    def excluded_set(self) -> frozenset[int]:
        """The ids that never count, as a set (the single-prompt path checks a token list against it)."""
        if "excluded_set" not in self._cache:
            self._cache["excluded_set"] = frozenset(np.flatnonzero(~self.countable).tolist())
        out: frozenset[int] = self._cache["excluded_set"]
        return out

    @property
    def head32(self) -> np.ndarray:
        """``head`` in float32 (factored form): what the mean-logit paths multiply by. A route reads
        all of ``W`` once, so half the bytes is half the memory traffic; the rounding is that of a
        dense float32 table."""
        if "head32" not in self._cache:
            assert self.head is not None
            head32 = self.head.astype(np.float32)
            _read_only(head32)
            self._cache["head32"] = head32
        out: np.ndarray = self._cache["head32"]
        return out

    def segment_logit_sums(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Summed logits ((P, D) float64) and countable tokens ((P,) int64) of P prompts given as flat
        ``ids`` and ``lengths``; each prompt's ids are summed in order (factored: its embeddings, in
        float32, one ``np.add.reduce`` per prompt — 3-4× faster than ``reduceat`` over a float64 copy of
        (tokens × h) rows — then one (P × h) · (h × D) product)."""
        num_prompts = lengths.size
        seg = np.repeat(np.arange(num_prompts), lengths)
        keep = self.countable[ids]
        ids, seg = ids[keep], seg[keep]
        counts = np.bincount(seg, minlength=num_prompts).astype(np.int64)
        source = self.dense_logits if self.dense_logits is not None else self.matrix
        assert source is not None
        factored = self.dense_logits is None
        sums = np.zeros((num_prompts, source.shape[1]), np.float32 if factored else np.float64)
        ends = np.cumsum(counts)
        starts = ends - counts
        # prompts in groups of about _CHUNK_ROWS tokens: the gathered rows stay a few MB
        first = 0
        while first < num_prompts:
            last = int(np.searchsorted(ends, starts[first] + _CHUNK_ROWS, side="right"))
            last = max(last, first + 1)
            group = np.arange(first, last)
            nonempty = group[counts[group] > 0]
            if nonempty.size:
                lo, hi = int(starts[first]), int(ends[last - 1])
                values = source.take(ids[lo:hi], axis=0)
                if not factored:
                    sums[nonempty] = np.add.reduceat(values.astype(np.float64), starts[nonempty] - lo, axis=0)
                else:  # embeddings: summed per prompt in float32, token after token, as logit_sums does
                    bounds = zip(
                        nonempty.tolist(), (starts[nonempty] - lo).tolist(), (ends[nonempty] - lo).tolist()
                    )
                    for p, a, b in bounds:
                        np.add.reduce(values[a:b], axis=0, out=sums[p])
            first = last
        if factored:
            assert self.bias is not None
            logit_sums: np.ndarray = counts[:, None] * self.bias
            logit_sums += sums @ self.head32
            return logit_sums, counts
        return sums, counts

    # ------------------------------------------------------------------------------------------ per id

    def _chunks(self) -> Any:
        """(start, float32-or-float64 logits) of row chunks of the whole vocabulary."""
        for start in range(0, self.vocab_size, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, self.vocab_size)
            if self.dense_logits is not None:
                yield start, self.dense_logits[start:stop]
            else:
                yield start, self.rows(np.arange(start, stop))

    def _per_token(self) -> dict[str, Any]:
        cache = self._cache
        if "votes" in cache:
            return cache
        with self._lock:
            if "votes" in cache:
                return cache
            entropy = np.empty(self.vocab_size, np.float64)
            votes = np.empty(self.vocab_size, np.int64)
            for start, chunk in self._chunks():
                entropy[start : start + chunk.shape[0]] = token_entropy(chunk)
                votes[start : start + chunk.shape[0]] = np.argmax(chunk, axis=1)
            entropy[~self.countable] = np.inf
            entropy_rank = np.unique(entropy, return_inverse=True)[1].astype(np.int64).reshape(-1)
            _read_only(entropy, votes, entropy_rank)
            cache["entropy"], cache["entropy_rank"] = entropy, entropy_rank
            cache["num_entropy_ranks"] = int(entropy_rank.max()) + 1 if entropy_rank.size else 1
            cache["votes"] = votes
        return cache

    @property
    def entropy(self) -> np.ndarray:
        out: np.ndarray = self._per_token()["entropy"]
        return out

    @property
    def votes(self) -> np.ndarray:
        out: np.ndarray = self._per_token()["votes"]
        return out

    @property
    def entropy_rank(self) -> np.ndarray:
        out: np.ndarray = self._per_token()["entropy_rank"]
        return out

    @property
    def num_entropy_ranks(self) -> int:
        return int(self._per_token()["num_entropy_ranks"])

    @property
    def logits(self) -> np.ndarray:
        """(V, D) float32 logits: the stored array (dense), or computed in full on each access (factored:
        V × D numbers; routing never needs them, use :meth:`rows`)."""
        if self.dense_logits is not None:
            return self.dense_logits
        out = np.empty((self.vocab_size, self.num_experts), np.float32)
        for start, chunk in self._chunks():
            out[start : start + chunk.shape[0]] = chunk
        return out

    @property
    def log_probs(self) -> np.ndarray:
        """(V, D) float64 log-softmax of every id's logits, computed on first access and cached (V × D
        numbers: selectors read :meth:`log_prob_rows` instead)."""
        if "log_probs" not in self._cache:
            out = np.empty((self.vocab_size, self.num_experts), np.float64)
            for start, chunk in self._chunks():
                out[start : start + chunk.shape[0]] = log_softmax(chunk)
            _read_only(out)
            self._cache["log_probs"] = out
        cached: np.ndarray = self._cache["log_probs"]
        return cached

    @property
    def sum_rows(self) -> np.ndarray | None:
        """The precomputed per-id sums of a dense table (``None`` until first used, see the class docstring)."""
        cached: np.ndarray | None = self._cache.get("sum_rows")
        return cached

    @property
    def summed_rows(self) -> np.ndarray:
        """``sum_rows``, computed on first use ((D+1) × V: meant for dense tables of few experts)."""
        if "sum_rows" not in self._cache:
            self._cache["sum_rows"] = _sum_rows(self.logits, self.countable)
        out: np.ndarray = self._cache["sum_rows"]
        return out


def _countable(vocab: int, excluded_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    countable = np.ones(vocab, bool)
    excluded = np.asarray(excluded_ids, np.int64)
    if excluded.size:
        countable[excluded[excluded < vocab]] = False
    _read_only(countable)
    return countable
