"""PNG plots of evaluation results (matplotlib, Agg backend, imported only when a plot is drawn).

* :func:`plot_k_sweep` — routing accuracy against the top-k selector's ``k`` (the paper's Figure 3),
  one curve per series (e.g. per suite or per λ).
* :func:`plot_confusion` — the confusion matrix as a heat map, rows normalised to recall.
* :func:`plot_lam_sweep` — routing accuracy against λ (log axis).
* :func:`plot_precision_coverage` — precision of the routed prompts against coverage, as the
  confidence threshold rises.
* :func:`plot_reliability` — accuracy against confidence per bin (reliability diagram) of
  :class:`ir3de.routing.calibration.CalibrationReport` s.

Example:
    >>> from ir3de.evaluation.evaluate import evaluate, PAPER_KS                         # doctest: +SKIP
    >>> report = evaluate(router, suite.test, ks=PAPER_KS)                    # doctest: +SKIP
    >>> plot_k_sweep({"reasoning4": report.extra["k_sweep"]}, "k_sweep.png")  # doctest: +SKIP
    >>> plot_confusion(report, "confusion.png")                               # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ir3de.errors import InvalidInputError, require

if TYPE_CHECKING:
    from ir3de.evaluation.evaluate import EvaluationReport
    from ir3de.routing.calibration import CalibrationReport

__all__ = ["plot_confusion", "plot_k_sweep", "plot_lam_sweep", "plot_precision_coverage", "plot_reliability"]


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "plots", "pip install matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write the figure atomically (temporary file in the same folder, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".png", dir=target.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a plot is an ordinary file
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        import matplotlib.pyplot as plt

        plt.close(fig)
    return target


def plot_k_sweep(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    title: str = "IR3DE routing accuracy vs k (top-k lowest-entropy tokens)",
) -> Path:
    """Accuracy (%) against k, one line per series; ``"all"`` is drawn at the right end.

    Args:
        series: label → k-sweep points (``{"k": int | "all", "accuracy": float}``, as returned by
            :func:`ir3de.evaluation.evaluate.k_sweep`).
        path: the PNG to write.
    """
    if not series or not any(series.values()):
        raise InvalidInputError("plot_k_sweep needs at least one non-empty k sweep")
    plt = _pyplot()
    labels: list[str] = []
    for points in series.values():
        for p in points:
            if str(p["k"]) not in labels:
                labels.append(str(p["k"]))
    numeric = sorted({int(x) for x in labels if x != "all"})
    order = [str(k) for k in numeric] + (["all"] if "all" in labels else [])
    pos = {k: i for i, k in enumerate(order)}
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, points in series.items():
        pts = sorted(points, key=lambda p: pos[str(p["k"])])
        ax.plot([pos[str(p["k"])] for p in pts], [100 * p["accuracy"] for p in pts], marker="o", label=name)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel("k")
    ax.set_ylabel("routing accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_lam_sweep(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    title: str = "IR3DE routing accuracy vs λ",
) -> Path:
    """Accuracy (%) against λ on a log axis, one line per series of ``{"lam", "accuracy"}`` points."""
    if not series or not any(series.values()):
        raise InvalidInputError("plot_lam_sweep needs at least one non-empty λ sweep")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, points in series.items():
        pts = sorted(points, key=lambda p: p["lam"])
        ax.plot([p["lam"] for p in pts], [100 * p["accuracy"] for p in pts], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("λ")
    ax.set_ylabel("routing accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_confusion(report: EvaluationReport, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Heat map of the confusion matrix: cell = share of a true expert's prompts routed to each column
    (the last column: prompts with no countable token), annotated with counts."""
    plt = _pyplot()
    conf = np.asarray(report.confusion, np.float64)
    experts = list(report.experts)
    if conf.shape != (len(experts), len(experts) + 1):
        raise InvalidInputError(
            f"confusion has shape {conf.shape}; expected {(len(experts), len(experts) + 1)}"
        )
    keep_none = conf[:, -1].sum() > 0
    shown = conf if keep_none else conf[:, :-1]
    support = conf.sum(1, keepdims=True)
    share = np.divide(shown, support, out=np.zeros_like(shown), where=support > 0)
    cols = experts + (["(none)"] if keep_none else [])
    size = 1.2 + 0.9 * len(cols)
    fig, ax = plt.subplots(figsize=(size + 1.2, 0.9 * len(experts) + 1.2))
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            ax.text(
                j,
                i,
                f"{int(shown[i, j])}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(experts)), experts)
    ax.set_xlabel("routed to")
    ax.set_ylabel("true expert")
    ax.set_title(title or f"accuracy {100 * report.accuracy:.1f}%", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of row")
    return _save(fig, path)


def plot_precision_coverage(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    target: float | None = None,
    title: str = "Precision vs coverage (confidence threshold)",
) -> Path:
    """Precision of routed prompts against the share routed, one line per series of
    ``{"coverage", "precision"}`` points (:func:`ir3de.routing.calibration.precision_coverage`); an optional
    horizontal line at ``target`` precision."""
    if not series or not any(series.values()):
        raise InvalidInputError("plot_precision_coverage needs at least one non-empty curve")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for name, points in series.items():
        ax.plot([p["coverage"] for p in points], [p["precision"] for p in points], label=name)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xlabel("coverage (share of prompts routed)")
    ax.set_ylabel("precision of routed prompts")
    ax.set_xlim(0, 1.0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reliability(
    reports: Mapping[str, CalibrationReport], path: str | os.PathLike[str], *, title: str = "Reliability"
) -> Path:
    """A reliability diagram (accuracy against confidence per bin) with one line per
    :func:`ir3de.routing.calibration.calibration_report`, its ECE in the legend; saved as PNG.

    Example:
        >>> from ir3de.routing.calibration import calibration_report                   # doctest: +SKIP
        >>> plot_reliability({"avg": calibration_report(conf, correct)}, "reliability.png")  # doctest: +SKIP
    """
    if not reports:
        raise InvalidInputError("plot_reliability needs at least one calibration report")
    plt = _pyplot()
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
    return _save(fig, path)
