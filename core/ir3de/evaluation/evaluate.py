"""Routing accuracy of a router on labelled held-out prompts, with k and λ sweeps.

* :func:`evaluate` — micro accuracy, macro recall, per-expert precision, recall and F1 and the
  confusion matrix; with ``details=True`` the routing report: the precision-vs-coverage curve over
  confidence thresholds, what the router's own threshold(s) route, and the misrouted prompts with
  their deciding tokens; optionally the paper's Figure 3 sweep over the top-k selector's ``k`` and a
  sweep over λ.
* :func:`k_sweep` / :func:`lam_sweep` — the sweeps on their own. Prompts are tokenized once for all
  sweep points; a λ sweep uses one eigendecomposition of ``A`` (:class:`~ir3de.fitting.solve.RidgePath`)
  and never refits.
* :func:`format_report` — a readable table; :func:`record_evaluation` — store the figures in the
  router so ``save_pretrained`` writes them into ``config.json`` and the model card.

Example:
    >>> report = evaluate(router, {"math": math_test, "code": code_test})   # doctest: +SKIP
    >>> report.accuracy, report.per_expert_recall["math"]                   # doctest: +SKIP
    >>> report = evaluate(router, tests, ks=PAPER_KS, lams=[1e-3, 1e-2, 1e-1])  # doctest: +SKIP
    >>> report.extra["k_sweep"][0]                                          # doctest: +SKIP
    {'k': 1, 'accuracy': 0.97, 'macro_recall': 0.95}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ir3de.errors import InvalidInputError
from ir3de.fitting.pipeline import applied_weights, compile_table, ridge_matrices
from ir3de.fitting.solve import RidgePath
from ir3de.routing.calibration import labelled_prompts, precision_coverage
from ir3de.routing.prompts import encode_prompts
from ir3de.routing.selectors import select_batch
from ir3de.table import RouteTable

if TYPE_CHECKING:
    from ir3de.router import Router

__all__ = [
    "PAPER_KS",
    "EvaluationReport",
    "confusion_matrix",
    "evaluate",
    "format_report",
    "k_sweep",
    "labelled_prompts",
    "lam_sweep",
    "record_evaluation",
    "report_from_predictions",
    "routing_details",
]

#: The values of k in the paper's Figure 3 (``"all"`` = every token, IR3DE-all).
PAPER_KS: tuple[int | str, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, "all")


@dataclass(frozen=True)
class EvaluationReport:
    """Accuracy figures of one router on one labelled test set.

    Attributes:
        experts: expert names (row/column order of ``confusion``).
        accuracy: micro accuracy (fraction of prompts routed to their own expert).
        macro_recall: mean over experts of the per-expert recall.
        per_expert_recall: expert → recall (experts with test prompts).
        per_expert_precision: expert → precision (experts some prompt was routed to).
        per_expert_f1: expert → F1 (experts with test prompts; 0 when nothing was routed to them).
        confusion: (D, D+1) counts; row = true expert, column = routed expert, last column = prompts
            with no countable token (or routed to a fallback).
        num_prompts: prompts evaluated.
    """

    experts: tuple[str, ...]
    accuracy: float
    macro_recall: float
    per_expert_recall: dict[str, float]
    confusion: np.ndarray
    num_prompts: int
    extra: dict[str, Any] = field(default_factory=dict)
    per_expert_precision: dict[str, float] = field(default_factory=dict)
    per_expert_f1: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experts": list(self.experts),
            "accuracy": self.accuracy,
            "macro_recall": self.macro_recall,
            "per_expert_recall": self.per_expert_recall,
            "per_expert_precision": self.per_expert_precision,
            "per_expert_f1": self.per_expert_f1,
            "confusion": self.confusion.tolist(),
            "num_prompts": self.num_prompts,
            **self.extra,
        }


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_experts: int) -> np.ndarray:
    """(D, D+1) counts; predictions of ``-1`` land in the last column."""
    pred = np.where(predicted < 0, num_experts, predicted)
    flat = np.bincount(true * (num_experts + 1) + pred, minlength=num_experts * (num_experts + 1))
    return flat.reshape(num_experts, num_experts + 1)


def report_from_predictions(
    experts: Sequence[str], true: np.ndarray, predicted: np.ndarray, **extra: Any
) -> EvaluationReport:
    d = len(experts)
    conf = confusion_matrix(true, predicted, d)
    support = conf.sum(1)
    recall = np.divide(np.diag(conf[:, :d]), support, out=np.zeros(d), where=support > 0)
    present = support > 0
    routed = conf[:, :d].sum(0)
    precision = np.divide(np.diag(conf[:, :d]), routed, out=np.zeros(d), where=routed > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(d), where=denominator > 0)
    return EvaluationReport(
        experts=tuple(experts),
        accuracy=float((true == predicted).mean()) if true.size else 0.0,
        macro_recall=float(recall[present].mean()) if present.any() else 0.0,
        per_expert_recall={e: float(r) for e, r, p in zip(experts, recall, present) if p},
        confusion=conf,
        num_prompts=int(true.size),
        extra=dict(extra),
        per_expert_precision={e: float(x) for e, x, n in zip(experts, precision, routed) if n > 0},
        per_expert_f1={e: float(x) for e, x, p in zip(experts, f1, present) if p},
    )


def evaluate(
    router: Router,
    tests: Mapping[str, Sequence[str]],
    *,
    ks: Sequence[int | str] | None = None,
    lams: Sequence[float] | None = None,
    details: bool = False,
    max_misrouted: int | None = 100,
) -> EvaluationReport:
    """Route every held-out prompt and compare with its expert.

    Args:
        router: a fitted router.
        tests: expert name → held-out prompts of that expert.
        ks: also sweep the top-k selector over these ``k`` (``"all"`` for every token), e.g.
            :data:`PAPER_KS`; results in ``report.extra["k_sweep"]``.
        lams: also sweep λ over these values (one eigendecomposition, no refit); results in
            ``report.extra["lam_sweep"]``.
        details: also the routing report (see :func:`routing_details`): ``report.extra`` gains
            ``"precision_coverage"``, ``"at_threshold"`` and ``"misrouted"``.
        max_misrouted: keep at most this many misrouted prompts (``None``: all).

    Example:
        >>> r = evaluate(router, {"math": ["What is 2+2?"], "code": ["def f(): pass"]})  # doctest: +SKIP
        >>> r.accuracy, r.confusion.shape                                               # doctest: +SKIP
        (1.0, (2, 3))
    """
    experts = router.experts
    prompts, labels = labelled_prompts(experts, tests)
    ids, lengths = encode_prompts(router.state.tokenizer, prompts, router.config.max_tokens)
    c = router.config
    table = router.state.table
    predicted = select_batch(ids, lengths, table, selector=c.selector, k=c.k, combine=c.combine).winners
    extra: dict[str, Any] = {
        "settings": {"lam": c.lam, "selector": c.selector, "k": c.k, "combine": c.combine}
    }
    if ks:
        extra["k_sweep"] = _k_points(experts, labels, ids, lengths, table, ks, c.combine)
    if lams:
        extra["lam_sweep"] = _lam_points(router, labels, ids, lengths, lams, None)
    if details:
        extra.update(routing_details(router, prompts, labels, max_misrouted=max_misrouted))
    return report_from_predictions(experts, labels, predicted, **extra)


def routing_details(
    router: Router,
    prompts: Sequence[str],
    labels: np.ndarray,
    *,
    max_misrouted: int | None = 100,
    num_tokens: int = 5,
) -> dict[str, Any]:
    """The routing report's details for labelled prompts, from the router's own decisions.

    Returns a dict with:

    * ``"precision_coverage"`` — the curve of :func:`ir3de.routing.calibration.precision_coverage` over the
      decisions' confidences (prompts with no countable token count as not routed);
    * ``"at_threshold"`` — what the router's configured threshold(s) do: ``coverage`` (share routed,
      not sent to the fallback), ``precision`` of those, ``abstained`` count;
    * ``"misrouted"`` — prompts whose best expert is wrong, most confident first: the prompt, true
      and routed expert, confidence, and its ``num_tokens`` deciding tokens (text, vote, entropy).

    Example:
        >>> prompts, labels = labelled_prompts(router.experts, tests)                # doctest: +SKIP
        >>> routing_details(router, prompts, labels)["misrouted"][0]["tokens"][0]   # doctest: +SKIP
        {'text': ' poem', 'vote': 'instructions', 'entropy': 0.41}
    """
    experts = router.experts
    index = {name: i for i, name in enumerate(experts)}
    decisions = router.route_batch(list(prompts))
    confidence = np.array([d.confidence if d.top_expert is not None else 0.0 for d in decisions])
    top = np.array([index[d.top_expert] if d.top_expert is not None else -1 for d in decisions], np.int64)
    correct = top == np.asarray(labels)
    routed = np.array([not d.fallback_used for d in decisions], bool)
    wrong = np.flatnonzero(~correct)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    if max_misrouted is not None:
        wrong = wrong[:max_misrouted]
    misrouted = [
        {
            "prompt": prompts[i],
            "expert": experts[int(labels[i])],
            "routed_to": decisions[i].top_expert,
            "confidence": float(confidence[i]),
            "num_tokens": decisions[i].num_tokens,
            "tokens": [
                {"text": t.text, "vote": t.vote, "entropy": round(t.entropy, 4)}
                for t in decisions[i].tokens[:num_tokens]
            ],
        }
        for i in wrong.tolist()
    ]
    return {
        "precision_coverage": precision_coverage(confidence, correct),
        "at_threshold": {
            "fallback": router.config.fallback,
            "coverage": float(routed.mean()) if routed.size else 0.0,
            "precision": float(correct[routed].mean()) if routed.any() else float("nan"),
            "abstained": int((~routed).sum()),
        },
        "num_misrouted": int((~correct).sum()),
        "misrouted": misrouted,
    }


def _check_ks(ks: Sequence[int | str]) -> list[int | str]:
    out: list[int | str] = []
    for k in ks:
        if k == "all" or (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1):
            out.append(k if k == "all" else int(k))
        else:
            raise InvalidInputError(f"k values must be positive integers or 'all', got {k!r}")
    if not out:
        raise InvalidInputError("give at least one k value, e.g. ks=(1, 10, 'all')")
    return out


def _check_lams(lams: Sequence[float]) -> list[float]:
    out = []
    for lam in lams:
        try:
            value = float(lam)
        except (TypeError, ValueError):
            raise InvalidInputError(f"λ values must be positive numbers, got {lam!r}") from None
        if not np.isfinite(value) or value <= 0:
            raise InvalidInputError(f"λ values must be positive finite numbers, got {lam!r} (paper: 1e-2)")
        out.append(value)
    if not out:
        raise InvalidInputError("give at least one λ value, e.g. lams=(1e-3, 1e-2, 1e-1)")
    return out


def _k_points(
    experts: Sequence[str],
    labels: np.ndarray,
    ids: np.ndarray,
    lengths: np.ndarray,
    table: RouteTable,
    ks: Sequence[int | str],
    combine: str,
) -> list[dict[str, Any]]:
    points = []
    for k in _check_ks(ks):
        if k == "all":
            sel = select_batch(ids, lengths, table, selector="all", combine=combine)
        else:
            sel = select_batch(ids, lengths, table, selector="topk", k=int(k), combine=combine)
        r = report_from_predictions(experts, labels, sel.winners)
        points.append({"k": k, "accuracy": r.accuracy, "macro_recall": r.macro_recall})
    return points


def _lam_points(
    router: Router,
    labels: np.ndarray,
    ids: np.ndarray,
    lengths: np.ndarray,
    lams: Sequence[float],
    ks: Sequence[int | str] | None,
) -> list[dict[str, Any]]:
    lams = _check_lams(lams)
    experts = router.experts
    c = router.config
    a, b = ridge_matrices(router.statistics, router.config, matrix=router.embeddings.matrix)
    path = RidgePath(a, b)
    matrix = router.embeddings.matrix
    excluded = router.state.excluded_ids
    points = []
    for lam in lams:
        # the pipeline's solve → normalise → compile, with one eigendecomposition for every λ
        w = applied_weights(path.solve(lam), column_norm=c.column_norm)
        table = compile_table(matrix, w, excluded)
        sel = select_batch(ids, lengths, table, selector=c.selector, k=c.k, combine=c.combine)
        r = report_from_predictions(experts, labels, sel.winners)
        point: dict[str, Any] = {"lam": lam, "accuracy": r.accuracy, "macro_recall": r.macro_recall}
        if ks:
            point["k_sweep"] = _k_points(experts, labels, ids, lengths, table, ks, c.combine)
        points.append(point)
    return points


def k_sweep(
    router: Router, tests: Mapping[str, Sequence[str]], ks: Sequence[int | str] = PAPER_KS
) -> list[dict[str, Any]]:
    """Accuracy and macro recall of the top-k entropy selector for every ``k`` (the paper's Figure 3).

    ``"all"`` uses every token (IR3DE-all). The router's ``combine`` setting is kept. Prompts are
    tokenized once.

    Example:
        >>> [(p["k"], round(p["accuracy"], 3)) for p in k_sweep(router, tests, ks=(1, 10, "all"))]  # doctest: +SKIP
        [(1, 0.95), (10, 0.99), ('all', 0.93)]
    """
    experts = router.experts
    prompts, labels = labelled_prompts(experts, tests)
    ids, lengths = encode_prompts(router.state.tokenizer, prompts, router.config.max_tokens)
    return _k_points(experts, labels, ids, lengths, router.state.table, ks, router.config.combine)


def lam_sweep(
    router: Router,
    tests: Mapping[str, Sequence[str]],
    lams: Sequence[float],
    ks: Sequence[int | str] | None = None,
) -> list[dict[str, Any]]:
    """Accuracy for every λ without refitting: one eigendecomposition of ``A`` serves all values.

    The router itself is not changed. With ``ks``, each point also carries a k sweep at that λ.

    Example:
        >>> [(p["lam"], p["accuracy"]) for p in lam_sweep(router, tests, [1e-3, 1e-2, 1.0])]  # doctest: +SKIP
    """
    prompts, labels = labelled_prompts(router.experts, tests)
    ids, lengths = encode_prompts(router.state.tokenizer, prompts, router.config.max_tokens)
    return _lam_points(router, labels, ids, lengths, lams, ks)


def format_report(report: EvaluationReport) -> str:
    """A readable summary: overall figures, per-expert recall, confusion matrix and sweeps.

    Example:
        >>> print(format_report(evaluate(router, tests)))   # doctest: +SKIP
    """
    experts = list(report.experts)
    width = max([len(e) for e in experts] + [8])
    lines = [
        f"routing accuracy {report.accuracy:.4f}   macro recall {report.macro_recall:.4f}   "
        f"({report.num_prompts} prompts)",
        "",
        f"{'expert':>{width}}  precision  recall      F1   prompts",
    ]
    support = report.confusion.sum(1)

    def cell(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "  -   "

    for i, name in enumerate(experts):
        lines.append(
            f"{name:>{width}}     {cell(report.per_expert_precision.get(name))}  "
            f"{cell(report.per_expert_recall.get(name))}  {cell(report.per_expert_f1.get(name))}  "
            f"{int(support[i]):7d}"
        )
    cols = [e[:10] for e in experts] + ["(none)"]
    cw = max(len(c) for c in cols) + 1
    lines += ["", "confusion (row = true expert, column = routed expert):"]
    lines.append(" " * (width + 1) + "".join(f"{c:>{cw}}" for c in cols))
    for i, name in enumerate(experts):
        lines.append(f"{name:>{width}} " + "".join(f"{int(v):>{cw}d}" for v in report.confusion[i]))
    extra = report.extra
    if "at_threshold" in extra:
        at = extra["at_threshold"]
        if at["fallback"] is not None:
            lines += [
                "",
                f"at the router's threshold(s): {at['coverage']:.4f} of prompts routed, precision "
                f"{at['precision']:.4f}, {at['abstained']} sent to {at['fallback']!r}",
            ]
    if "precision_coverage" in extra:
        lines += ["", "precision vs coverage (route only prompts with confidence ≥ threshold):"]
        lines += ["  precision  coverage  threshold"]
        for goal in (0.9, 0.95, 0.98, 0.99):
            best = [p for p in extra["precision_coverage"] if p["precision"] >= goal]
            if best:
                p = best[-1]
                lines.append(f"  ≥ {goal:<7}  {p['coverage']:.4f}    {p['threshold']:.4f}")
            else:
                lines.append(f"  ≥ {goal:<7}  (not reached)")
    if "misrouted" in extra:
        shown = extra["misrouted"][:20]
        lines += [
            "",
            f"misrouted prompts: {extra['num_misrouted']} (most confident first, {len(shown)} shown)",
        ]
        for m in shown:
            prompt = " ".join(m["prompt"].split())
            prompt = prompt if len(prompt) <= 70 else prompt[:67] + "..."
            tokens = ", ".join(f"{t['text']!r}→{t['vote']}" for t in m["tokens"])
            lines.append(f"  {m['expert']} → {m['routed_to']} ({m['confidence']:.2f}): {prompt!r}")
            lines.append(f"      deciding tokens: {tokens}")
    if "k_sweep" in report.extra:
        lines += ["", "k sweep (top-k lowest-entropy tokens vote):", "        k  accuracy  macro recall"]
        lines += [
            f"{p['k']!s:>9}  {p['accuracy']:.4f}    {p['macro_recall']:.4f}" for p in report.extra["k_sweep"]
        ]
    if "lam_sweep" in report.extra:
        lines += ["", "λ sweep (no refit):", "        λ  accuracy  macro recall"]
        lines += [
            f"{p['lam']:>9.3g}  {p['accuracy']:.4f}    {p['macro_recall']:.4f}"
            for p in report.extra["lam_sweep"]
        ]
    return "\n".join(lines)


def record_evaluation(router: Router, report: EvaluationReport, *, test_set: str = "") -> dict[str, Any]:
    """Store the report's figures in the router (``router.state.evaluation``) so that ``save_pretrained``
    writes them into ``config.json`` and the model card. Returns the stored dict.

    Any later change of experts clears it (the figures would no longer describe the router).

    Example:
        >>> record_evaluation(router, evaluate(router, suite.test), test_set="reasoning4 test")  # doctest: +SKIP
        >>> router.save_pretrained("my-router")                                                 # doctest: +SKIP
    """
    if tuple(report.experts) != router.experts:
        raise InvalidInputError(
            f"the report is for experts {list(report.experts)} but the router has {list(router.experts)}; "
            "evaluate this router again"
        )
    record: dict[str, Any] = {
        "test_set": test_set or "user-provided held-out prompts",
        "accuracy": round(report.accuracy, 6),
        "macro_recall": round(report.macro_recall, 6),
        "num_prompts": report.num_prompts,
    }
    for name, recall in report.per_expert_recall.items():
        record[f"recall[{name}]"] = round(recall, 6)
    settings = report.extra.get("settings")
    if settings:
        record["evaluated_settings"] = ", ".join(f"{k}={v}" for k, v in settings.items())
    if "k_sweep" in report.extra:
        record["k_sweep"] = report.extra["k_sweep"]
    if "lam_sweep" in report.extra:
        record["lam_sweep"] = [
            {k: v for k, v in p.items() if k != "k_sweep"} for p in report.extra["lam_sweep"]
        ]
    from ir3de.router import record_evaluation as store

    store(router, record)
    return record
