"""Routing accuracy of a router on labelled held-out prompts.

Example:
    >>> report = evaluate(router, {"math": math_test, "code": code_test})   # doctest: +SKIP
    >>> report.accuracy, report.per_expert_recall["math"]                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UnknownExpertError

if TYPE_CHECKING:
    from .router import Router

__all__ = ["EvaluationReport", "confusion_matrix", "evaluate"]


@dataclass(frozen=True)
class EvaluationReport:
    """Accuracy figures of one router on one labelled test set.

    Attributes:
        experts: expert names (row/column order of ``confusion``).
        accuracy: micro accuracy (fraction of prompts routed to their own expert).
        macro_recall: mean over experts of the per-expert recall.
        per_expert_recall: expert → recall.
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "experts": list(self.experts),
            "accuracy": self.accuracy,
            "macro_recall": self.macro_recall,
            "per_expert_recall": self.per_expert_recall,
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
    return EvaluationReport(
        experts=tuple(experts),
        accuracy=float((true == predicted).mean()) if true.size else 0.0,
        macro_recall=float(recall[present].mean()) if present.any() else 0.0,
        per_expert_recall={e: float(r) for e, r, p in zip(experts, recall, present) if p},
        confusion=conf,
        num_prompts=int(true.size),
        extra=dict(extra),
    )


def labelled_prompts(
    router_experts: Sequence[str], tests: Mapping[str, Sequence[str]]
) -> tuple[list[str], np.ndarray]:
    """Flatten ``{expert: prompts}`` into prompts and true expert indices (checked against the router)."""
    index = {name: i for i, name in enumerate(router_experts)}
    unknown = [name for name in tests if name not in index]
    if unknown:
        raise UnknownExpertError(
            f"test sets for unknown experts {unknown}; the router's experts are {list(router_experts)}"
        )
    prompts: list[str] = []
    labels: list[int] = []
    for name, texts in tests.items():
        texts = list(texts)
        prompts.extend(texts)
        labels.extend([index[name]] * len(texts))
    return prompts, np.asarray(labels, np.int64)


def evaluate(router: Router, tests: Mapping[str, Sequence[str]]) -> EvaluationReport:
    """Route every held-out prompt and compare with its expert.

    Args:
        router: a fitted router.
        tests: expert name → held-out prompts of that expert.
    """
    experts = router.experts
    prompts, labels = labelled_prompts(experts, tests)
    predicted = router.route_indices(prompts)
    return report_from_predictions(experts, labels, predicted)
