"""Does a decision's confidence mean what it says? Expected calibration error and reliability bins.

A router abstains (routes to its ``fallback``) when confidence is below a threshold; that is only a
real abstain route when confidence tracks accuracy. :func:`calibration_report` bins decisions by
confidence and compares each bin's mean confidence with its accuracy; ECE is the support-weighted
mean gap. :func:`fit_temperature` fits the temperature that makes the gap small (what
:func:`ir3de.routing.tuning.calibrate` calls on a router's evidence for held-out prompts).

Example:
    >>> import numpy as np
    >>> r = calibration_report(np.array([0.9, 0.8, 0.6, 0.95]), np.array([True, True, False, True]), bins=5)
    >>> round(r.ece, 3)
    0.237
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from ir3de.errors import UnknownExpertError

__all__ = [
    "CalibrationReport",
    "abstain_curve",
    "calibration_report",
    "evidence_scores",
    "fit_confidence",
    "fit_temperature",
    "labelled_prompts",
    "precision_coverage",
    "threshold_for_precision",
]


def labelled_prompts(
    experts: Sequence[str], tests: Mapping[str, Sequence[str]]
) -> tuple[list[str], np.ndarray]:
    """Flatten ``{expert: prompts}`` into prompts and true expert indices (checked against ``experts``).

    Example:
        >>> labelled_prompts(["math", "code"], {"code": ["def f():"], "math": ["2+2?", "3x=6"]})
        (['def f():', '2+2?', '3x=6'], array([1, 0, 0]))
    """
    index = {name: i for i, name in enumerate(experts)}
    unknown = [name for name in tests if name not in index]
    if unknown:
        raise UnknownExpertError(
            f"test sets for unknown experts {unknown}; the router's experts are {list(experts)}"
        )
    prompts: list[str] = []
    labels: list[int] = []
    for name, texts in tests.items():
        texts = list(texts)
        prompts.extend(texts)
        labels.extend([index[name]] * len(texts))
    return prompts, np.asarray(labels, np.int64)


def fit_temperature(evidence: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` minimising the NLL of ``labels`` under ``softmax(evidence / T)``.

    Convex in ``1/T``: one bounded scalar search over ``log(1/T)`` in [-12, 8].

    Args:
        evidence: (n, D) per-prompt evidence (summed log-probabilities or mean logits).
        labels: (n,) true expert index of each row.

    Example:
        >>> z = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
        >>> round(fit_temperature(z, np.array([0, 1, 0, 1])), 2)
        1.82
    """
    import scipy.optimize

    z = np.asarray(evidence, np.float64)
    y = np.asarray(labels, np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],) or y.size == 0:
        raise ValueError("calibration needs held-out prompts with countable tokens")

    def nll(log_beta: float) -> float:
        logits = z * float(np.exp(log_beta))
        logits = logits - logits.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(y.size), y]))

    best = scipy.optimize.minimize_scalar(nll, bounds=(-12.0, 8.0), method="bounded")
    return float(np.exp(-best.x))


@overload
def evidence_scores(scores: list[float], num_tokens: int, evidence_tokens: float) -> list[float]: ...
@overload
def evidence_scores(
    scores: np.ndarray, num_tokens: np.ndarray | int, evidence_tokens: float
) -> np.ndarray: ...
def evidence_scores(
    scores: np.ndarray | list[float], num_tokens: np.ndarray | int, evidence_tokens: float
) -> np.ndarray | list[float]:
    """Shrink scores toward uniform when a prompt has few countable tokens (the winner never changes).

    Scores are ``softmax(evidence / T)``; this returns ``softmax(evidence · a / T)`` with
    ``a = n / (n + evidence_tokens)`` for a prompt of ``n`` countable tokens, computed from the scores
    alone as ``p^a / Σ p^a`` — i.e. the temperature becomes ``T · (1 + evidence_tokens / n)``. A
    one-token prompt whose token is near a coin toss no longer routes at 0.97; a long prompt is
    unchanged (``a → 1``). ``evidence_tokens = 0`` returns ``scores`` as given. Rows of zeros (prompts
    with no countable token) stay zeros.

    Args:
        scores: (D,) list of one prompt's scores, or (P, D) array of a batch.
        num_tokens: the prompt's countable tokens (int), or (P,) per batch row.
        evidence_tokens: ``n0`` ≥ 0, fitted by :func:`fit_confidence`.

    Example:
        >>> [round(x, 3) for x in evidence_scores([0.97, 0.03], 1, 3.0)]
        [0.705, 0.295]
        >>> [round(x, 3) for x in evidence_scores([0.97, 0.03], 300, 3.0)]
        [0.969, 0.031]
    """
    if not evidence_tokens:
        return scores
    if isinstance(scores, list):
        n = int(num_tokens)
        if n <= 0:
            return scores
        a = n / (n + evidence_tokens)
        powered = [x**a if x > 0.0 else 0.0 for x in scores]
        total = sum(powered)
        return [x / total for x in powered]
    p = np.asarray(scores, np.float64)
    if p.ndim == 1:  # one prompt's (D,) scores as an array (many experts)
        row: np.ndarray = evidence_scores(p[None, :], np.array([num_tokens]), evidence_tokens)[0]
        return row
    counts = np.asarray(num_tokens, np.float64)
    exponent = (counts / np.maximum(counts + evidence_tokens, 1e-300))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = np.where(p > 0, np.power(p, exponent), 0.0)
        sums = rows.sum(axis=1, keepdims=True)
        out: np.ndarray = np.where(sums > 0, rows / sums, 0.0)
    return out


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(y.size), y]))


#: how many held-out prompts the prior of :func:`fit_confidence` weighs as (its log-space width is 1)
PRIOR_PROMPTS = 20.0


def fit_confidence(
    evidence: np.ndarray,
    num_tokens: np.ndarray,
    labels: np.ndarray,
    *,
    prior: tuple[float, float] | None = None,
    prior_prompts: float = PRIOR_PROMPTS,
) -> tuple[float, float]:
    """Temperature ``T`` and evidence prior ``n0`` minimising the NLL of ``labels`` under
    ``softmax(evidence · n / (n + n0) / T)`` (the confidence :func:`evidence_scores` computes).

    ``n`` is each prompt's number of countable tokens. A bounded search over ``log(1/T)`` in [-12, 8]
    and ``log(n0)`` in [-9, 7] (``n0`` ≈ 0 means length needs no correction).

    ``prior=(T0, n0_0)`` makes it a MAP estimate: a Gaussian penalty on ``log T - log T0`` and
    ``log(1 + n0) - log(1 + n0_0)`` (width 1, i.e. a factor e), weighted as ``prior_prompts`` prompts.
    Without it, perfectly separated prompts (every one routed right with a margin) drive ``T`` to 0 and
    every confidence to 1; with it a small set moves the settings a little and a large one decides.

    Example:
        >>> z = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
        >>> t, n0 = fit_confidence(z, np.array([1, 1, 1, 50, 50, 50]), np.array([0, 0, 1, 0, 1, 0]))
        >>> n0 > 1.0
        True
        >>> separable = np.array([0, 1, 0, 0, 1, 0])
        >>> fit_confidence(z, np.full(6, 10), separable)[0] < 0.05      # the MLE runs towards zero
        True
        >>> fit_confidence(z, np.full(6, 10), separable, prior=(1.0, 4.0))[0] > 0.3
        True
    """
    import scipy.optimize

    z = np.asarray(evidence, np.float64)
    n = np.asarray(num_tokens, np.float64)
    y = np.asarray(labels, np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],) or n.shape != y.shape or y.size == 0 or np.any(n <= 0):
        raise ValueError("calibration needs held-out prompts with countable tokens")
    if prior is not None and not (prior[0] > 0 and prior[1] >= 0 and prior_prompts >= 0):
        raise ValueError(
            f"prior must be (T0 > 0, n0 >= 0) and prior_prompts >= 0, got {prior}, {prior_prompts}"
        )
    weight = 0.0 if prior is None else 0.5 * prior_prompts / y.size  # the NLL is a mean over prompts
    log_beta0 = 0.0 if prior is None else -float(np.log(prior[0]))
    log1p_n00 = 0.0 if prior is None else float(np.log1p(prior[1]))

    def penalty(log_beta: float, n0: float) -> float:
        return weight * ((log_beta - log_beta0) ** 2 + (float(np.log1p(n0)) - log1p_n00) ** 2)

    def loss(params: np.ndarray) -> float:
        beta, n0 = float(np.exp(params[0])), float(np.exp(params[1]))
        return _nll(z * (beta * n / (n + n0))[:, None], y) + penalty(float(params[0]), n0)

    t0 = fit_temperature(z, y) if prior is None else prior[0]
    best = None
    starts = (1e-3, 1.0, 10.0) if prior is None else (1e-3, 1.0, 10.0, max(prior[1], 1e-3))
    for start_n0 in starts:  # the surface is smooth but not convex in n0: a few starts
        res = scipy.optimize.minimize(
            loss,
            np.array([np.log(1.0 / t0), np.log(start_n0)]),
            method="L-BFGS-B",
            bounds=[(-12.0, 8.0), (-9.0, 7.0)],
        )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    n0 = float(np.exp(best.x[1]))
    if prior is None and loss(np.array([np.log(1.0 / t0), -np.inf])) <= best.fun:  # no length correction
        return t0, 0.0
    return float(np.exp(-best.x[0])), (0.0 if n0 < 1e-3 else n0)


def precision_coverage(confidence: np.ndarray, correct: np.ndarray) -> list[dict[str, float]]:
    """The precision-vs-coverage curve: for every distinct confidence ``t`` (highest first), the
    share of prompts with ``confidence ≥ t`` (coverage) and the share of those routed correctly.

    Prompts with no countable token should be passed with confidence 0 and ``correct=False``.

    Example:
        >>> precision_coverage(np.array([0.9, 0.6, 0.6, 0.3]), np.array([True, True, False, True]))
        [{'threshold': 0.9, 'coverage': 0.25, 'precision': 1.0, 'routed': 1}, {'threshold': 0.6, 'coverage': 0.75, 'precision': 0.6666666666666666, 'routed': 3}, {'threshold': 0.3, 'coverage': 1.0, 'precision': 0.75, 'routed': 4}]
    """
    conf = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, bool)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise ValueError("confidence and correct must be 1-D arrays of the same length")
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    hits = np.cumsum(ok)
    # the last index of each run of equal confidences: a threshold keeps all of a tie or none
    last = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True])
    total = max(conf.size, 1)
    return [
        {
            "threshold": float(conf[i]),
            "coverage": (i + 1) / total,
            "precision": float(hits[i]) / (i + 1),
            "routed": int(i + 1),
        }
        for i in last.tolist()
    ]


def threshold_for_precision(
    confidence: np.ndarray, correct: np.ndarray, target: float
) -> tuple[float, float, float]:
    """The threshold that routes the most prompts while their precision stays ≥ ``target``.

    Returns ``(threshold, precision, coverage)``: routing keeps prompts with ``confidence ≥
    threshold``. When every prompt may be routed the threshold is 0; when no set of prompts reaches
    the target, the threshold is just above the highest confidence, capped at 1 (precision NaN,
    coverage 0; at the cap, prompts of confidence exactly 1 are still routed).

    Example:
        >>> threshold_for_precision(np.array([0.9, 0.8, 0.6, 0.3]), np.array([True, True, False, True]), 0.9)
        (0.8, 1.0, 0.5)
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target!r}")
    curve = precision_coverage(confidence, correct)
    best = None
    for point in curve:  # coverage grows along the curve; keep the last point meeting the target
        if point["precision"] >= target:
            best = point
    if best is None:
        top = float(np.max(confidence)) if np.size(confidence) else 0.0
        return min(1.0, float(np.nextafter(top, np.inf))), float("nan"), 0.0
    threshold = 0.0 if best is curve[-1] else best["threshold"]
    return threshold, best["precision"], best["coverage"]


def choose_thresholds(
    confidence: np.ndarray,
    correct: np.ndarray,
    routed_to: np.ndarray,
    experts: Sequence[str],
    target: float,
    *,
    per_expert: bool = False,
) -> tuple[float, dict[str, float] | None, float, float]:
    """Thresholds that reach ``target`` precision on labelled prompts, and what they cost.

    One threshold (:func:`threshold_for_precision` over all prompts), or with ``per_expert`` one per
    expert over the prompts routed to it (each expert's own precision ≥ target, so the routed set's
    is too; an expert no prompt was routed to keeps the global threshold).

    Returns ``(threshold, thresholds or None, precision, coverage)`` of the routed prompts.

    Example:
        >>> choose_thresholds(np.array([0.9, 0.8, 0.6]), np.array([True, True, False]), np.array([0, 1, 1]),
        ...                   ["a", "b"], 0.9, per_expert=True)
        (0.8, {'a': 0.0, 'b': 0.8}, 1.0, 0.6666666666666666)
    """
    conf = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, bool)
    to = np.asarray(routed_to, np.int64)
    threshold, _, _ = threshold_for_precision(conf, ok, target)
    thresholds: dict[str, float] | None = None
    if per_expert:
        thresholds = {}
        for i, name in enumerate(experts):
            mine = to == i
            thresholds[name] = (
                threshold_for_precision(conf[mine], ok[mine], target)[0] if mine.any() else threshold
            )
        limit = np.array([thresholds[experts[i]] if i >= 0 else np.inf for i in to])
        kept = conf >= limit
    else:
        kept = conf >= threshold
    kept &= to >= 0
    coverage = float(kept.mean()) if conf.size else 0.0
    precision = float(ok[kept].mean()) if kept.any() else float("nan")
    return threshold, thresholds, precision, coverage


@dataclass(frozen=True)
class CalibrationReport:
    """Reliability of confidences.

    Attributes:
        ece: expected calibration error (support-weighted mean |accuracy − confidence| over bins).
        max_gap: the largest |accuracy − confidence| of a non-empty bin.
        bins: per bin ``(low, high, count, mean_confidence, accuracy)`` (empty bins omitted).
        num: decisions measured.
    """

    ece: float
    max_gap: float
    bins: tuple[tuple[float, float, int, float, float], ...]
    num: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "ece": self.ece,
            "max_gap": self.max_gap,
            "num": self.num,
            "bins": [
                {"low": lo, "high": hi, "count": n, "mean_confidence": c, "accuracy": a}
                for lo, hi, n, c, a in self.bins
            ],
        }


def calibration_report(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> CalibrationReport:
    """Bin ``confidence`` (in [0, 1]) into ``bins`` equal-width bins and compare with ``correct``."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError("confidence and correct must be 1-D arrays of the same length")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    rows = []
    ece = 0.0
    max_gap = 0.0
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        if n == 0:
            continue
        mean_conf = float(confidence[mask].mean())
        acc = float(correct[mask].mean())
        gap = abs(acc - mean_conf)
        ece += n * gap
        max_gap = max(max_gap, gap)
        rows.append((float(edges[b]), float(edges[b + 1]), n, mean_conf, acc))
    total = max(1, confidence.size)
    return CalibrationReport(ece / total, max_gap, tuple(rows), int(confidence.size))


def abstain_curve(
    in_domain_confidence: np.ndarray,
    in_domain_correct: np.ndarray,
    out_of_domain_confidence: np.ndarray,
    thresholds: Sequence[float],
) -> list[dict[str, float]]:
    """For each threshold: in-domain coverage and accuracy of what is answered, and the share of
    out-of-domain prompts (no expert covers them) sent to the fallback."""
    rows = []
    ind_c = np.asarray(in_domain_confidence, np.float64)
    ind_ok = np.asarray(in_domain_correct, bool)
    ood_c = np.asarray(out_of_domain_confidence, np.float64)
    for t in thresholds:
        answered = ind_c >= t
        rows.append(
            {
                "threshold": float(t),
                "in_domain_coverage": float(answered.mean()) if ind_c.size else 0.0,
                "in_domain_accuracy_answered": float(ind_ok[answered].mean())
                if answered.any()
                else float("nan"),
                "in_domain_accuracy_overall": float((ind_ok & answered).mean()) if ind_c.size else 0.0,
                "out_of_domain_abstained": float((ood_c < t).mean()) if ood_c.size else 0.0,
            }
        )
    return rows
