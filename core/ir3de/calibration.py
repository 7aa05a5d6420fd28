"""Does a decision's confidence mean what it says? Expected calibration error and reliability bins.

A router abstains (routes to its ``fallback``) when confidence is below a threshold; that is only a
real abstain route when confidence tracks accuracy. :func:`calibration_report` bins decisions by
confidence and compares each bin's mean confidence with its accuracy; ECE is the support-weighted
mean gap. :func:`fit_temperature` fits the temperature that makes the gap small (what
:meth:`ir3de.Router.calibrate` calls on a router's evidence for held-out prompts).

Example:
    >>> import numpy as np
    >>> r = calibration_report(np.array([0.9, 0.8, 0.6, 0.95]), np.array([True, True, False, True]), bins=5)
    >>> round(r.ece, 3)
    0.237
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnknownExpertError

__all__ = [
    "CalibrationReport",
    "abstain_curve",
    "calibration_report",
    "fit_temperature",
    "labelled_prompts",
    "plot_reliability",
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


def plot_reliability(
    reports: dict[str, CalibrationReport], path: str | Path, title: str = "Reliability"
) -> Path:
    """A reliability diagram (accuracy vs confidence per bin) with one line per report; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, report in reports.items():
        conf = [b[3] for b in report.bins]
        acc = [b[4] for b in report.bins]
        ax.plot(conf, acc, marker="o", label=f"{name} (ECE {report.ece:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
