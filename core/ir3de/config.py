"""Settings of a router: :class:`RouterConfig` (validated, immutable, JSON round-trip).

Example:
    >>> RouterConfig.paper().lam, RouterConfig().level
    (0.01, 'text')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ir3de.errors import ArtifactError
from ir3de.fitting.statistics import TRAFFIC_POLICIES, KeepTokenIds
from ir3de.routing.selectors import COMBINERS, SELECTORS
from ir3de.table import TABLE_FORMS

__all__ = ["LEVELS", "STATISTICS_SETTINGS", "RouterConfig"]

_AVG_TEMPERATURE = 0.1  # mean ridge logits live on a ~[0, 1] scale
_LOGPROB_TEMPERATURE = 1.0  # summed log-probabilities are already log-odds
_EVIDENCE_TOKENS = 4.7  # evidence prior n0 fitted at the default temperature (benchmarks/tuning.py)

#: What one ridge training row is: a token occurrence (the paper) or a text (its mean embedding).
LEVELS = ("token", "text")

#: Settings that change the ridge matrices or their solve: changing one re-solves from the stored
#: statistics (no text is re-read); every other setting only changes how the table is read.
#: (``table`` only changes how the solve is held, but takes the same path.)
STATISTICS_SETTINGS = ("level", "lam", "column_norm", "balance", "traffic_weight", "traffic_policy", "table")


@dataclass(frozen=True)
class RouterConfig:
    """Settings of a router. ``RouterConfig.paper()`` is the paper's exact configuration.

    The defaults were chosen by measurement (docs/routing-quality.md; the figures are in
    docs/benchmarks.md): text-level fitting (one ridge row per training text, its mean token
    embedding), balanced experts, λ = 0.1, no column normalisation, routed by the mean of the
    prompt's token logits (still a per-token table lookup). Their confidence is the softmax of that
    evidence at a default temperature measured on the in-distribution suites; under a source shift,
    calibrate on prompts like the served ones (:func:`ir3de.routing.tuning.calibrate`).

    Attributes:
        level: ``"token"`` fits one ridge row per token occurrence (the paper); ``"text"`` fits one
            row per training text, its mean token embedding, plus its 8-token windows' means with a
            total weight of 0.25 (statistics: one text Gram per expert; see
            :func:`ir3de.fitting.statistics.text_rows`). Either way routing is a lookup in the same per-token
            table.
        lam: ridge strength λ (> 0). Paper: 1e-2.
        selector: ``"topk"`` (lowest-entropy k tokens), ``"all"`` or ``"avg"`` (mean logits).
        k: tokens kept by ``topk``. Paper: 10.
        combine: ``"vote"`` (majority of token argmaxes; the paper) or ``"logprob"`` (sum of the
            selected tokens' log-probabilities).
        column_norm: divide each class column of W (and its bias) by its L2 norm (paper: on).
        balance: weight each expert's tokens so every expert carries the same token mass (paper: off).
        max_tokens: only the first ``max_tokens`` tokens of a prompt count (paper: 1024).
        fallback: name returned when no token counts or confidence < ``threshold`` (``None``: raise
            on empty prompts, never abstain). It need not be one of the experts.
        threshold: confidence below which the fallback is taken.
        temperature: divides the ``logprob``/``avg`` evidence before the softmax that gives scores and
            confidence; :func:`ir3de.routing.tuning.calibrate` fits it on held-out prompts. Never changes the winner.
            ``None`` (default) takes the measured default of the evidence: 0.1 for mean logits
            (``avg``) and 1.0 for summed log-probabilities (``logprob``). See :attr:`effective_temperature`.
        evidence_tokens: the evidence prior ``n0``: a prompt with ``n`` countable tokens gets the
            temperature ``T · (1 + n0 / n)``, so one or two near-coin-toss tokens do not give a
            confident route (:func:`ir3de.routing.calibration.evidence_scores`; never changes the winner).
            ``None`` takes the measured default; ``0`` turns it off. Fitted with the temperature by
            :func:`ir3de.routing.tuning.calibrate` / :meth:`Router.tune`. Vote shares are not affected.
        thresholds: per-expert thresholds (expert → threshold) set by ``Router.tune(per_expert=True)``;
            a decision for an expert listed here uses its threshold instead of ``threshold``.
        traffic_weight: how much learned traffic (labelled served prompts, :meth:`Router.learn`)
            weighs against the corpus, read by ``traffic_policy`` (``0`` ignores traffic; it is kept).
        traffic_policy: ``"share"`` (default, with weight 1): an expert's whole traffic weighs
            ``traffic_weight`` × its corpus mass, however many prompts it holds — chosen by the
            learning curves of ``python -m benchmarks.learning`` (best mean accuracy over the
            cross-source checks without falling below 0 prompts); ``"per_prompt"``: each prompt weighs
            ``traffic_weight`` corpus texts of its expert on top of the balanced corpus;
            ``"balanced"``: prompts weigh like ``per_prompt`` and balancing counts the traffic in
            each expert's mass. See :func:`ir3de.fitting.statistics.weights_with_traffic`. All re-solve from
            the statistics.
        table: how the route table is held (:mod:`ir3de.table`): ``"dense"`` (V × D logits),
            ``"factored"`` (the embedding matrix and W apart: size and routing cost do not grow as
            V × D; for many experts) or ``"auto"`` (default: factored when there are more experts
            than embedding dimensions + 1). Decisions are the same either way (up to float32 rounding
            of the dense logits).
        keep_token_ids: which experts keep their texts as token ids (``ExpertCounts.text_tokens``),
            saved instead of their text statistics' rows or Gram — the compact exact form (a router
            of 1,000 small experts saves ~13× smaller; docs/experts.md). ``"auto"`` (default): the
            experts with fewer than ``h + 1`` training rows, whose statistics would otherwise be saved
            as rows — and those rows give back the tokens of every 8-token window of their texts
            (``python -m benchmarks.privacy``), so the ids reveal little more; experts large enough
            for a Gram keep the Gram, which is an aggregate. ``True``: every expert whose ids are
            smaller than its Gram. ``False``: none. Kept ids are the tokenized training texts
            (decodable with the tokenizer), and the saved router's model card says which experts.
            Loading routes without rebuilding anything; the first change (``add_expert``, ``learn``,
            ``adapt``, ...) rebuilds the statistics from the ids with the embeddings, bit for bit.
            Turning it off drops the ids kept.
    """

    level: str = "text"
    lam: float = 1e-1
    selector: str = "avg"
    k: int = 50
    combine: str = "logprob"
    column_norm: bool = False
    balance: bool = True
    max_tokens: int = 1024
    fallback: str | None = None
    threshold: float = 0.0
    temperature: float | None = None
    evidence_tokens: float | None = None
    thresholds: Mapping[str, float] | None = None
    traffic_weight: float = 1.0
    traffic_policy: str = "share"
    table: str = "auto"
    keep_token_ids: KeepTokenIds = "auto"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level!r}; choose one of {LEVELS}")
        if not (isinstance(self.lam, (int, float)) and np.isfinite(self.lam) and self.lam > 0):
            raise ValueError(f"lam must be a positive number, got {self.lam!r} (the paper uses 1e-2)")
        if self.selector not in SELECTORS:
            raise ValueError(f"unknown selector {self.selector!r}; choose one of {SELECTORS}")
        if self.combine not in COMBINERS:
            raise ValueError(f"unknown combine {self.combine!r}; choose one of {COMBINERS}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.threshold > 0 and self.fallback is None:
            raise ValueError(
                "a threshold needs a fallback expert name: pass fallback='general' (or any name)"
            )
        if self.temperature is not None and not (
            isinstance(self.temperature, (int, float))
            and np.isfinite(self.temperature)
            and self.temperature > 0
        ):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        if self.evidence_tokens is not None and not (
            isinstance(self.evidence_tokens, (int, float))
            and np.isfinite(self.evidence_tokens)
            and self.evidence_tokens >= 0
        ):
            raise ValueError(f"evidence_tokens must be a number ≥ 0, got {self.evidence_tokens!r}")
        if self.thresholds is not None:
            if not isinstance(self.thresholds, Mapping) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and 0.0 <= v <= 1.0
                for k, v in self.thresholds.items()
            ):
                raise ValueError(
                    f"thresholds must map expert names to numbers in [0, 1], got {self.thresholds!r}"
                )
            if any(v > 0 for v in self.thresholds.values()) and self.fallback is None:
                raise ValueError(
                    "per-expert thresholds need a fallback expert name: pass fallback='general' (or any name)"
                )
            object.__setattr__(self, "thresholds", {k: float(v) for k, v in self.thresholds.items()})
        if not (
            isinstance(self.traffic_weight, (int, float))
            and not isinstance(self.traffic_weight, bool)
            and np.isfinite(self.traffic_weight)
            and self.traffic_weight >= 0
        ):
            raise ValueError(
                f"traffic_weight must be a finite number >= 0, got {self.traffic_weight!r} (0 ignores traffic)"
            )
        if self.traffic_policy not in TRAFFIC_POLICIES:
            raise ValueError(
                f"unknown traffic_policy {self.traffic_policy!r}; choose one of {TRAFFIC_POLICIES}"
            )
        if self.fallback is not None and (not isinstance(self.fallback, str) or not self.fallback):
            raise ValueError(f"fallback must be a non-empty string, got {self.fallback!r}")
        if not (isinstance(self.keep_token_ids, bool) or self.keep_token_ids == "auto"):
            raise ValueError(f'keep_token_ids must be "auto", True or False, got {self.keep_token_ids!r}')
        if self.table not in TABLE_FORMS:
            raise ValueError(f"unknown table {self.table!r}; choose one of {TABLE_FORMS}")

    @property
    def effective_temperature(self) -> float:
        """The temperature in use: ``temperature``, or the measured default of the selector's evidence."""
        if self.temperature is not None:
            return float(self.temperature)
        return _AVG_TEMPERATURE if self.selector == "avg" else _LOGPROB_TEMPERATURE

    @property
    def effective_evidence_tokens(self) -> float:
        """The evidence prior in use: ``evidence_tokens``, or the measured default; 0 for vote shares."""
        if self.combine == "vote" and self.selector != "avg":
            return 0.0
        return float(self.evidence_tokens) if self.evidence_tokens is not None else _EVIDENCE_TOKENS

    def threshold_for(self, expert: str) -> float:
        """The confidence threshold of decisions for ``expert`` (its own, else ``threshold``)."""
        if self.thresholds is not None:
            return self.thresholds.get(expert, self.threshold)
        return self.threshold

    @classmethod
    def paper(cls, **overrides: Any) -> RouterConfig:
        """The configuration of the paper: λ=1e-2, entropy top-10 vote, column norm, no balancing."""
        base = cls(
            level="token", lam=1e-2, selector="topk", k=10, combine="vote", column_norm=True, balance=False
        )
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouterConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ArtifactError(
                f"unknown router settings {sorted(unknown)}; upgrade ir3de to read this router"
            )
        data = dict(data)
        data.setdefault("level", "token")  # routers saved before text-level fitting existed
        data.setdefault("evidence_tokens", 0.0)  # routers saved before the evidence prior: unchanged
        return cls(**data)
