"""Sample route selectors: from a prompt's token ids to one expert, by table lookup.

Selectors (which tokens take part):

* ``"topk"`` — the paper's: the ``k`` tokens with the lowest entropy (default k = 10).
* ``"all"`` — every countable token (IR3DE-all).
* ``"avg"`` — the mean of the token logits, argmax (IR3DE-avg; equals the paper's "average the
  embeddings, then apply W", since the router is linear).

Combiners (how the selected tokens decide, for ``topk``/``all``):

* ``"vote"`` — each token votes its argmax; the majority wins (the paper). Scores are vote shares.
* ``"logprob"`` — sum the selected tokens' log-probabilities (a naive-Bayes product of their
  softmax outputs); scores are the softmax of those sums.

Deterministic tie-breaks (documented, tested): tokens of equal entropy are taken in prompt order
(earliest first); experts tied on the decision score go to the lowest expert index, i.e. the
expert fitted first — the convention of ``torch.mode``/``argmax``.

Everything is vectorised over a batch of prompts given as one flat id array plus lengths.

Example:
    >>> import numpy as np
    >>> from ir3de.table import RouteTable
    >>> t = RouteTable.from_logits(np.array([[3, 0], [0, 3], [1, 0]], np.float32))
    >>> s = select_batch(np.array([0, 1, 1, 2]), np.array([4]), t, selector="topk", k=3, combine="vote")
    >>> s.winners.tolist(), s.scores.round(2).tolist()
    ([1], [[0.33, 0.67]])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from ir3de.routing.calibration import evidence_scores
from ir3de.table import SUM_ROWS_MAX_EXPERTS, RouteTable

__all__ = [
    "COMBINERS",
    "SELECTORS",
    "Selection",
    "explain_one",
    "mean_logits_one",
    "select_avg_one",
    "select_batch",
    "select_one",
]

SELECTORS = ("topk", "all", "avg")
COMBINERS = ("vote", "logprob")


@dataclass(frozen=True, eq=False)
class Selection:
    """The outcome of routing a batch of P prompts.

    Attributes:
        winners: (P,) expert index per prompt, ``-1`` when a prompt has no countable token.
        scores: (P, D) per-expert scores in [0, 1] summing to 1 (zeros for empty prompts).
        num_countable: (P,) countable tokens per prompt.
        selected_ids: flat ids of the tokens that decided, grouped by prompt, lowest entropy first.
        selected_offsets: (P+1,) offsets of each prompt's group in ``selected_ids``.
        selected_positions: token positions (within the prompt's countable tokens) of ``selected_ids``.
        evidence: (P, D) what the scores are computed from: vote counts (``vote``), summed
            log-probabilities (``logprob``) or mean logits (``avg``).
    """

    winners: np.ndarray
    scores: np.ndarray
    num_countable: np.ndarray
    selected_ids: np.ndarray
    selected_offsets: np.ndarray
    selected_positions: np.ndarray
    evidence: np.ndarray


def _segment_sums(values: np.ndarray, segments: np.ndarray, num_segments: int) -> np.ndarray:
    """(N, D) values summed per segment id → (P, D), each segment's rows added in order.

    Few columns: one ``bincount`` per column; many: one ``np.add.at`` over the rows (no Python loop
    over experts). Both add a segment's rows sequentially in float64.
    """
    if values.shape[1] <= SUM_ROWS_MAX_EXPERTS:
        out = np.empty((num_segments, values.shape[1]), np.float64)
        for d in range(values.shape[1]):
            out[:, d] = np.bincount(segments, weights=values[:, d], minlength=num_segments)
        return out
    out = np.zeros((num_segments, values.shape[1]), np.float64)
    np.add.at(out, segments, values.astype(np.float64))
    return out


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    out: np.ndarray = p / p.sum(axis=1, keepdims=True)
    return out


def _entropy_order(ids: np.ndarray, seg: np.ndarray, table: RouteTable) -> np.ndarray:
    """Order tokens by prompt, then entropy, then position (one stable integer argsort)."""
    return np.argsort(seg * table.num_entropy_ranks + table.entropy_rank[ids], kind="stable")


def select_batch(
    ids: np.ndarray,
    lengths: np.ndarray,
    table: RouteTable,
    *,
    selector: str = "topk",
    k: int = 10,
    combine: str = "vote",
    temperature: float = 1.0,
    explain: bool = True,
) -> Selection:
    """Route P prompts given as a flat id array ``ids`` and per-prompt ``lengths``.

    Ids that are not countable (special tokens) are dropped first; positions count only the
    remaining tokens. ``temperature`` divides the evidence of ``logprob``/``avg`` before the softmax
    that turns it into scores (a calibration knob; it never changes the winner). Vote shares are
    reported as they are. ``explain=False`` skips what only explains an ``avg`` decision (the
    deciding tokens, lowest entropy first): ``selected_*`` are then empty.
    """
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; choose one of {SELECTORS}")
    if combine not in COMBINERS:
        raise ValueError(f"unknown combine {combine!r}; choose one of {COMBINERS}")
    if selector == "topk" and (not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    lengths = np.asarray(lengths, np.int64)
    num_prompts = lengths.size
    num_experts = table.num_experts
    ids = np.asarray(ids, np.int64)
    if selector == "avg" and not explain:
        return _avg_batch(ids, lengths, table, temperature)
    seg = np.repeat(np.arange(num_prompts), lengths)
    keep = table.countable[ids]
    ids, seg = ids[keep], seg[keep]
    num_countable = np.bincount(seg, minlength=num_prompts)
    starts = np.zeros(num_prompts + 1, np.int64)
    np.cumsum(num_countable, out=starts[1:])
    positions = np.arange(ids.size) - starts[seg]

    if selector == "avg":
        if table.form == "dense" and num_experts <= SUM_ROWS_MAX_EXPERTS:
            sums = _segment_sums(table.logits[ids], seg, num_prompts)
        else:
            sums = table.segment_logit_sums(ids, np.bincount(seg, minlength=num_prompts))[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / np.maximum(num_countable, 1)[:, None]
        scores = _softmax_rows(means / temperature)
        winners = np.argmax(means, axis=1)
        evidence = means
        order = _entropy_order(ids, seg, table)  # explanation: lowest entropy first
        sel_ids, sel_seg, sel_pos = ids[order], seg[order], positions[order]
    else:
        order = _entropy_order(ids, seg, table)  # ties keep prompt order
        sel_ids, sel_seg, sel_pos = ids[order], seg[order], positions[order]
        if selector == "topk":
            rank = np.arange(sel_ids.size) - starts[sel_seg]
            top = rank < k
            sel_ids, sel_seg, sel_pos = sel_ids[top], sel_seg[top], sel_pos[top]
        if combine == "vote":
            counts = np.bincount(
                sel_seg * num_experts + table.votes[sel_ids], minlength=num_prompts * num_experts
            ).reshape(num_prompts, num_experts)
            winners = np.argmax(counts, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                scores = counts / counts.sum(axis=1, keepdims=True)
            evidence = counts.astype(np.float64)
        else:
            sums = _segment_sums(table.log_prob_rows(sel_ids), sel_seg, num_prompts)
            winners = np.argmax(sums, axis=1)
            scores = _softmax_rows(sums / temperature)
            evidence = sums

    empty = num_countable == 0
    winners = np.where(empty, -1, winners).astype(np.int64)
    scores = np.where(empty[:, None], 0.0, scores)
    sel_offsets = np.zeros(num_prompts + 1, np.int64)
    np.cumsum(np.bincount(sel_seg, minlength=num_prompts), out=sel_offsets[1:])
    evidence = np.where(empty[:, None], 0.0, evidence)
    return Selection(winners, scores, num_countable, sel_ids, sel_offsets, sel_pos, evidence)


def _avg_batch(ids: np.ndarray, lengths: np.ndarray, table: RouteTable, temperature: float) -> Selection:
    """``selector="avg"`` without the explanation: one gather of the per-id sums, segment sums.

    Excluded ids carry zero logits and no count in :attr:`RouteTable.sum_rows`, so nothing is
    filtered; each prompt's tokens are summed in order (``reduceat``), like the single-prompt path.
    """
    num_prompts = lengths.size
    if table.form == "dense" and table.num_experts <= SUM_ROWS_MAX_EXPERTS:
        rows = table.summed_rows.take(ids, axis=1)  # (D+1, N)
        sums = np.zeros((rows.shape[0], num_prompts), np.float64)
        nonempty = lengths > 0
        if ids.size:
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            sums[:, nonempty] = np.add.reduceat(rows, starts[nonempty], axis=1)
        num_countable = np.rint(sums[-1]).astype(np.int64)
        logit_sums = sums[:-1].T
    else:  # many experts: sums of the ids' rows (dense) or of their embeddings times W (factored)
        logit_sums, num_countable = table.segment_logit_sums(ids, lengths)
    empty = num_countable == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        means = logit_sums / np.maximum(num_countable, 1)[:, None]
    winners = np.where(empty, -1, np.argmax(means, axis=1)).astype(np.int64)
    scores = np.where(empty[:, None], 0.0, _softmax_rows(means / temperature))
    evidence = np.where(empty[:, None], 0.0, means)
    none = np.zeros(0, np.int64)
    return Selection(
        winners, scores, num_countable, none, np.zeros(num_prompts + 1, np.int64), none, evidence
    )


def _argmax_list(values: list[float]) -> int:
    """Index of the first maximum (``np.argmax`` semantics) of a short Python list."""
    best = 0
    for i in range(1, len(values)):
        if values[i] > values[best]:
            best = i
    return best


def _softmax_list(values: list[float], temperature: float) -> list[float]:
    """Softmax of a short Python list; for D ≈ 2–20 experts plain Python beats numpy's call overhead."""
    top = max(values)
    exps = [math.exp((v - top) / temperature) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def select_one(
    ids: np.ndarray,
    table: RouteTable,
    *,
    selector: str = "topk",
    k: int = 10,
    combine: str = "vote",
    temperature: float = 1.0,
) -> tuple[int, list[float] | np.ndarray, np.ndarray, np.ndarray, int]:
    """Route one prompt with as few array operations as possible (the latency path).

    Returns ``(winner, scores, selected_ids, selected_positions, num_countable)`` with the semantics
    of :func:`select_batch` for a batch of one (tested to agree: same winner and tokens, scores
    equal to float rounding). Per-expert arithmetic runs on Python floats: with a handful of experts
    that is several times cheaper than numpy calls. Arguments are assumed valid (the router checks
    its configuration once, not per prompt).
    """
    countable = table.countable[ids]
    if not countable.all():
        ids = ids[countable]
    n = ids.size
    num_experts = table.num_experts
    if n == 0:
        empty = np.zeros(0, np.int64)
        return -1, [0.0] * num_experts, empty, empty, 0
    order = np.argsort(table.entropy[ids], kind="stable")
    if selector == "topk" and n > k:
        order = order[:k]
    chosen = ids[order]
    if selector == "avg":
        means = mean_logits_one(ids, table)[0]
        return _argmax(means), _softmax(means, temperature), chosen, order, n
    if combine == "vote":
        counts = np.bincount(table.votes[chosen], minlength=num_experts)
        size = order.size
        if num_experts <= SUM_ROWS_MAX_EXPERTS:
            shares = counts.tolist()
            return _argmax_list(shares), [c / size for c in shares], chosen, order, n
        return int(np.argmax(counts)), counts / size, chosen, order, n
    sums = table.log_prob_rows(chosen).sum(axis=0)
    if num_experts <= SUM_ROWS_MAX_EXPERTS:
        listed = sums.tolist()
        return _argmax_list(listed), _softmax_list(listed, temperature), chosen, order, n
    return int(np.argmax(sums)), _softmax_array(sums, temperature), chosen, order, n


def _argmax(values: list[float] | np.ndarray) -> int:
    return _argmax_list(values) if isinstance(values, list) else int(np.argmax(values))


def _softmax(values: list[float] | np.ndarray, temperature: float) -> list[float] | np.ndarray:
    if isinstance(values, list):
        return _softmax_list(values, temperature)
    return _softmax_array(values, temperature)


def _softmax_array(values: np.ndarray, temperature: float, top: float | None = None) -> np.ndarray:
    """Softmax of one prompt's (D,) evidence: one numpy pass, no per-expert Python loop (``top``: the
    maximum of ``values`` when the caller has it already)."""
    z = values - (values.max() if top is None else top)
    np.divide(z, temperature, out=z)
    np.exp(z, out=z)
    np.divide(z, z.sum(), out=z)
    return z


def mean_logits_one(
    ids: Sequence[int] | np.ndarray, table: RouteTable
) -> tuple[list[float] | np.ndarray, int]:
    """Mean logits of one prompt's countable tokens, and how many there are, by one fused lookup.

    ``ids`` may be a Python list straight from the tokenizer (no array conversion needed). Up to
    :data:`~ir3de.table.SUM_ROWS_MAX_EXPERTS` experts of a dense table the per-id evidence is
    precomputed (:attr:`RouteTable.sum_rows`, excluded ids contribute zeros and no count), so this is
    one ``take`` and one contiguous row sum, returned as a list (plain Python beats numpy for a few
    experts); with more experts it is :meth:`RouteTable.logit_sums` (factored: the mean embedding
    times ``W``) as a (D,) array — no per-expert Python work.

    Example:
        >>> t = RouteTable.from_logits(np.array([[3, 0], [0, 3], [1, 0]], np.float32), excluded_ids=[2])
        >>> mean_logits_one([0, 1, 1, 2], t)
        ([1.0, 2.0], 3)
    """
    sums, n = table.logit_sums(ids)
    if table.num_experts <= SUM_ROWS_MAX_EXPERTS:
        listed = sums.tolist()
        return (listed, 0) if n == 0 else ([v / n for v in listed], n)
    return (sums, 0) if n == 0 else (sums / n, n)


@overload
def select_avg_one(
    ids: Sequence[int] | np.ndarray,
    table: RouteTable,
    temperature: float = ...,
    evidence_tokens: float = ...,
    *,
    deferred: Literal[False] = ...,
) -> tuple[int, list[float] | np.ndarray, int]: ...
@overload
def select_avg_one(
    ids: Sequence[int] | np.ndarray,
    table: RouteTable,
    temperature: float = ...,
    evidence_tokens: float = ...,
    *,
    deferred: bool,
) -> tuple[int, list[float] | np.ndarray | Callable[[], np.ndarray], int]: ...
def select_avg_one(
    ids: Sequence[int] | np.ndarray,
    table: RouteTable,
    temperature: float = 1.0,
    evidence_tokens: float = 0.0,
    *,
    deferred: bool = False,
) -> tuple[int, list[float] | np.ndarray | Callable[[], np.ndarray], int]:
    """``(winner, scores, num_countable)`` of one prompt under ``selector="avg"`` (the latency path).

    The same decision as :func:`select_one` without the explanation (which tokens, lowest entropy
    first): :func:`explain_one` computes that when a caller asks for it. ``winner`` is ``-1`` and the
    scores are zeros when no token counts. Scores are a list for a few experts, a (D,) array beyond
    :data:`~ir3de.table.SUM_ROWS_MAX_EXPERTS` (the cost then does not grow with D in Python).

    ``evidence_tokens`` (``n0``) applies the evidence prior of
    :func:`~ir3de.routing.calibration.evidence_scores` in the same pass: for the (D,) array that is
    one softmax at temperature ``T · (n + n0)`` over the summed logits (``softmax(mean / T)`` raised to
    ``n / (n + n0)`` and renormalised is exactly that), not a softmax followed by D powers.

    ``deferred=True`` (what :func:`~ir3de.routing.prompts.route_one` asks): beyond
    :data:`~ir3de.table.SUM_ROWS_MAX_EXPERTS` experts the (D,) scores come back as a function that
    computes them — the same array, on first need — so a route that only needs its expert skips the
    D exponentials (the winner is the argmax of the summed logits either way).

    Example:
        >>> t = RouteTable.from_logits(np.array([[3, 0], [0, 3]], np.float32))
        >>> w, scores, n = select_avg_one([0, 1, 1], t)
        >>> w, n, round(scores[1], 3)
        (1, 3, 0.731)
    """
    sums, n = table.logit_sums(ids)
    if table.num_experts <= SUM_ROWS_MAX_EXPERTS:
        listed = sums.tolist()
        if n == 0:
            return -1, [0.0] * len(listed), 0
        scores = _softmax_list(listed, temperature * n)  # softmax(mean / T)
        if evidence_tokens:
            scores = evidence_scores(scores, n, evidence_tokens)
        return _argmax_list(listed), scores, n
    if n == 0:
        return -1, np.zeros(sums.size), 0
    winner = int(sums.argmax())  # first maximum on ties, as np.argmax
    # softmax at T·(n + n0) with the winner's sum as the shift: its score is the largest (exp(0) = 1)
    scorer = functools.partial(_softmax_array, sums, temperature * (n + evidence_tokens), float(sums[winner]))
    return winner, (scorer if deferred else scorer()), n


def explain_one(
    ids: Sequence[int] | np.ndarray, table: RouteTable, *, selector: str = "avg", k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """The deciding tokens of one prompt: their ids, lowest entropy first, and their positions among
    the prompt's countable tokens (the ``selected_ids``/``selected_positions`` of :func:`select_one`).

    Example:
        >>> t = RouteTable.from_logits(np.array([[3, 0], [1, 1], [0, 3]], np.float32), excluded_ids=[1])
        >>> [a.tolist() for a in explain_one([1, 2, 0], t)]
        [[2, 0], [0, 1]]
    """
    arr = np.asarray(ids, np.int64)
    countable = table.countable[arr]
    if not countable.all():
        arr = arr[countable]
    order = np.argsort(table.entropy[arr], kind="stable")
    if selector == "topk" and arr.size > k:
        order = order[:k]
    return arr[order], order
