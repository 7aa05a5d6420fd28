"""Calibrate and tune a routing state on labelled held-out prompts: what ``Router.tune`` computes.

* :func:`calibrate` fits the temperature ``T`` and the evidence prior ``n0`` so that confidence means
  probability: it minimises the negative log-likelihood of the true experts under
  ``softmax(evidence · n / (n + n0) / T)`` for prompts of ``n`` countable tokens
  (:func:`ir3de.routing.calibration.fit_confidence`). Routes never change. Vote shares have no temperature:
  it needs ``combine="logprob"`` or ``selector="avg"``.
* :func:`tune` calibrates (skipped for vote shares), then chooses the abstain threshold(s) that
  route the most prompts at ≥ ``target_precision`` (:func:`ir3de.routing.calibration.choose_thresholds`; one
  per expert with ``per_expert``). Prompts below the threshold go to the fallback; the routes of
  confident prompts never change.

Both return the settings to apply (the router applies them with ``configure``) and never change the
state they read. :class:`TuningResult` reports what ``tune`` chose and what it costs.

Example:
    >>> settings, result = tune(router.state, router.config, dev, 0.95, abstain="general")  # doctest: +SKIP
    >>> router.configure(**settings); result.precision, result.coverage               # doctest: +SKIP
    (0.951, 0.83)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ir3de.errors import InvalidInputError
from ir3de.routing.calibration import choose_thresholds, fit_confidence, labelled_prompts
from ir3de.routing.prompts import encode_prompts, select

if TYPE_CHECKING:
    from ir3de.config import RouterConfig
    from ir3de.fitting.pipeline import RoutingState

__all__ = ["TuningResult", "calibrate", "tune"]


@dataclass(frozen=True)
class TuningResult:
    """What :meth:`ir3de.Router.tune` chose and what it costs, on the prompts it was tuned on.

    Attributes:
        temperature: the fitted temperature (``None`` for vote shares, which have none).
        evidence_tokens: the fitted evidence prior ``n0`` (see :func:`evidence_scores`).
        threshold: the confidence below which a prompt goes to ``fallback``.
        thresholds: per-expert thresholds (``per_expert=True``), else ``None``.
        target_precision: the precision asked for.
        precision: precision of the prompts routed (not sent to the fallback); NaN if none.
        coverage: share of the prompts routed.
        n: labelled prompts tuned on.
        fallback: where the rest go.
    """

    temperature: float | None
    evidence_tokens: float
    threshold: float
    thresholds: dict[str, float] | None
    target_precision: float
    precision: float
    coverage: float
    n: int
    fallback: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "evidence_tokens": self.evidence_tokens,
            "threshold": self.threshold,
            "thresholds": dict(self.thresholds) if self.thresholds is not None else None,
            "target_precision": self.target_precision,
            "precision": self.precision,
            "coverage": self.coverage,
            "n": self.n,
            "fallback": self.fallback,
        }


def _is_vote(config: RouterConfig) -> bool:
    return config.combine == "vote" and config.selector != "avg"


#: the fewest held-out prompts (with a countable token) each labelled expert needs to be calibrated on
MIN_PROMPTS_PER_EXPERT = 3


def _fit(
    state: RoutingState, config: RouterConfig, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    """The temperature and evidence prior, a MAP estimate around the router's current ones (so a small
    or perfectly separated held-out set cannot drive the temperature to 0 and every confidence to 1)."""
    sel = select(state, config, ids, lengths, explain=False)
    keep = sel.winners >= 0
    if not keep.any():
        raise ValueError("calibration needs held-out prompts with countable tokens")
    counts = np.bincount(labels[keep], minlength=len(state.experts))
    short = [
        f"{state.experts[i]} ({int(counts[i])})"
        for i in sorted(set(labels.tolist()))
        if counts[i] < MIN_PROMPTS_PER_EXPERT
    ]
    if short:
        raise InvalidInputError(
            f"calibrating needs at least {MIN_PROMPTS_PER_EXPERT} held-out prompts with a countable token "
            f"per labelled expert; too few for {', '.join(short)}: add prompts for them, or leave them out"
        )
    prior = (config.effective_temperature, config.effective_evidence_tokens)
    return fit_confidence(sel.evidence[keep], sel.num_countable[keep], labels[keep], prior=prior)


def calibrate(
    state: RoutingState, config: RouterConfig, held_out: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """The settings ``temperature`` and ``evidence_tokens`` (the evidence prior) that calibrate
    ``state`` on ``held_out`` (expert → prompts), so that confidence means probability; routes never
    change. Apply them with ``router.configure(**settings)``.

    Raises:
        ValueError: vote shares (no temperature), or no held-out prompt with a countable token.

    Example:
        >>> router.configure(**calibrate(router.state, router.config, dev))   # doctest: +SKIP
    """
    if _is_vote(config):
        raise ValueError(
            "vote shares have no temperature: calibrate with combine='logprob' or selector='avg'"
        )
    prompts, labels = labelled_prompts(state.experts, held_out)
    ids, lengths = encode_prompts(state.tokenizer, prompts, config.max_tokens)
    temperature, n0 = _fit(state, config, ids, lengths, labels)
    return {"temperature": temperature, "evidence_tokens": n0}


def tune(
    state: RoutingState,
    config: RouterConfig,
    held_out: Mapping[str, Sequence[str]],
    target_precision: float = 0.95,
    *,
    per_expert: bool = False,
    abstain: str | None = None,
) -> tuple[dict[str, Any], TuningResult]:
    """The settings (temperature, evidence prior, fallback, threshold(s)) that make the prompts routed
    reach ``target_precision`` on ``held_out``, and what they cost there (a :class:`TuningResult`).

    ``abstain``: the fallback name; needed when ``config`` has no ``fallback``.
    """
    fallback = abstain if abstain is not None else config.fallback
    if fallback is None:
        raise InvalidInputError(
            "tune sends prompts below the threshold to a fallback, and this router has none: pass "
            "abstain='general' (any name) or configure(fallback=...)"
        )
    if not isinstance(target_precision, (int, float)) or not 0.0 < target_precision <= 1.0:
        raise InvalidInputError(f"target_precision must be in (0, 1], got {target_precision!r}")
    prompts, labels = labelled_prompts(state.experts, held_out)
    if not prompts:
        raise InvalidInputError("tune needs labelled held-out prompts; got none")
    ids, lengths = encode_prompts(state.tokenizer, prompts, config.max_tokens)
    settings: dict[str, Any] = {}
    vote = _is_vote(config)
    if not vote:
        temperature, n0 = _fit(state, config, ids, lengths, labels)
        settings = {"temperature": temperature, "evidence_tokens": n0}
        config = dataclasses.replace(config, **settings)
    sel = select(state, config, ids, lengths)
    routed = sel.winners >= 0
    conf = np.where(routed, sel.scores[np.arange(len(prompts)), np.maximum(sel.winners, 0)], 0.0)
    threshold, thresholds, precision, coverage = choose_thresholds(
        conf,
        sel.winners == labels,
        sel.winners,
        state.experts,
        float(target_precision),
        per_expert=per_expert,
    )
    settings.update(fallback=fallback, threshold=threshold, thresholds=thresholds)
    config = dataclasses.replace(config, **settings)
    result = TuningResult(
        temperature=None if vote else config.effective_temperature,
        evidence_tokens=config.effective_evidence_tokens,
        threshold=threshold,
        thresholds=thresholds,
        target_precision=float(target_precision),
        precision=precision,
        coverage=coverage,
        n=len(prompts),
        fallback=fallback,
    )
    return settings, result
