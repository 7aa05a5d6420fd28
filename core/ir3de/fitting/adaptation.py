"""Adapting to unlabelled served prompts: self-training as an additive block of its own per expert.

A router routes prompts it was not fitted on; the prompts themselves, unlabelled, say where the
served distribution lies. :meth:`ir3de.Router.adapt` keeps, for every adapted prompt, one row
``x_p = [mean_{i∈p} E[i], 1]`` (the mean embedding of its countable tokens, as routing reads them: the
first ``max_tokens``) and its number of countable tokens — never its text or token ids. From these
rows and the router without adaptation (corpus + labelled traffic: ``A₀``, ``B₀``) it derives, in
``rounds`` rounds::

    π_p   = softmax(x_pᵀ W / T_p)                 the router's mean-logit posterior of prompt p
                                                  (T_p = T·(1 + n₀/n_p): the routing temperature and
                                                  evidence prior); one-hot argmax when not ``soft``
    π_p  ← π_p · (q / π̄)^prior, renormalised      pull the pseudo-label shares π̄ toward the corpus
                                                  prior q (q_d ∝ B₀[-1, d], the weighted corpus mass)
    π_p  ← 0 where max π_p < floor                a confidence floor
    π_p  ← π_p · (max π_p)^confidence             confidence-weighted rows (a sure prompt counts fully,
                                                  an unsure one less)
    G_d   = Σ_p π_pd x_p x_pᵀ                      expert d's adaptation block ((h+1)², float64)
    v_d   = weight · B₀[-1, d] / max(Σ_p π_pd, s)  ("share": each block weighs ``weight`` × its
                                                  expert's corpus mass while it holds at least
                                                  s = share_floor · Σ_pd π_pd / D, an even share
                                                  times ``share_floor``; less below that) or
    v     = weight · Σ_d B₀[-1, d] / Σ_pd π_pd     ("global": all blocks together weigh ``weight`` ×
                                                  the corpus mass, split by the pseudo-labels)
    v    ← v · min(1, u / gate)                   with ``gate``: adapt less when the router is already
                                                  sure of the prompts (u: their mean 1 − max π before
                                                  adapting) — served prompts that look like the corpora
    A = A₀ + Σ_d v_d G_d,  B[:, d] = B₀[:, d] + v_d G_d[:, -1],  W = solve(A, B)

and the router is solved once more with the last round's blocks. ``W`` of round 0 is the router's
own. Soft rows are the probability-weighted rows of a ridge fit with soft targets (a prompt adds
``x xᵀ`` to ``A`` and ``π_p x`` to ``B``).

Exact by construction:

* the blocks are a function of the *set* of kept rows (summed in a canonical order: the rows sorted by
  a hash of their bytes), of ``A₀``, ``B₀`` and the settings — so any order or split of the same
  prompts over :meth:`~ir3de.Router.adapt` calls gives the same router, bit for bit;
* the blocks sit apart from the corpus and the labelled traffic: forgetting them
  (:meth:`~ir3de.Router.forget_adaptation`) gives back the router from before, bit for bit, and
  forgetting traffic never touches them (they are re-derived at the next ``adapt``).

What is kept: one float64 row per prompt (``h`` numbers: the mean of its token embeddings) and its token
count, at most ``max_prompts`` of them (the oldest go first), plus the per-expert blocks. No text
string and no token id, but a row times its count decodes into its prompt's tokens (as a bag:
``python -m benchmarks.privacy``), so kept rows are as private as the prompts. The pure functions here take and return arrays; :class:`ir3de.Router` tokenizes, calls them
under its lock and commits.

Example:
    >>> import numpy as np
    >>> rows = AdaptationPrompts(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([3, 5]))
    >>> a0, b0 = np.eye(3) * 4.0, np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    >>> blocks = derive(a0, b0, rows, AdaptationSettings(rounds=1), lam=0.1, column_norm=False,
    ...                 temperature=0.1, evidence_tokens=0.0)
    >>> [round(b.prompts, 3) for b in blocks]
    [0.985, 0.985]
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir3de.errors import InvalidInputError
from ir3de.fitting.solve import column_normalize, ridge_solve
from ir3de.fitting.statistics import text_means

__all__ = [
    "ADAPTATION_POLICIES",
    "LEGACY_ADAPT_OPTIONS",
    "AdaptationBlock",
    "AdaptationPrompts",
    "AdaptationReport",
    "AdaptationSettings",
    "AdaptationSummary",
    "ExpertAdaptation",
    "adapted_weights",
    "add_blocks",
    "derive",
    "keep",
    "prompt_rows",
    "report",
    "settings_from",
    "summary",
    "with_blocks",
    "without_blocks",
]

#: How the adaptation blocks are weighed against the corpus (see the module docstring).
ADAPTATION_POLICIES = ("share", "global")
#: Options added after the first adapting routers were saved, at the values those routers adapted with
#: (a saved settings record without them is read with these, so it re-derives the same blocks).
LEGACY_ADAPT_OPTIONS: Mapping[str, float] = {"share_floor": 0.0, "confidence": 0.0}


@dataclass(frozen=True)
class AdaptationSettings:
    """How :meth:`ir3de.Router.adapt` turns unlabelled prompts into adaptation blocks.

    The defaults were chosen by ``python -m benchmarks.adaptation`` over every check in the repository
    (cross-source and same-source, served prompts balanced per expert and at the test side's own mix;
    docs/adaptation.md): soft rows weighted by the squared confidence, three rounds, each expert's block
    half its corpus mass while it holds at least half an even share of the pseudo-labels — the best
    mean gain on the cross-source checks among the settings that never lose more than 0.3 points on
    any check (a confidence floor, prior matching, the gate, hard labels, more weight and the global
    policy all measured lower; without ``share_floor`` a rare expert's few, partly wrong
    pseudo-labels were blown up to a full block and served prompts at an uneven mix lost up to 4.6
    points).

    Attributes:
        weight: the blocks' mass relative to the corpus (read by ``policy``); ``0`` adapts nothing.
        policy: ``"share"``: each expert's block weighs ``weight`` × that expert's corpus mass;
            ``"global"``: all blocks together weigh ``weight`` × the whole corpus mass, split between
            experts as the pseudo-labels fall.
        rounds: self-training rounds (each labels the prompts with the router of the previous one).
        soft: probability-weighted rows (``True``) or hard argmax labels.
        floor: prompts whose top pseudo-label probability is below this are left out (0: none).
        prior: in [0, 1]; how far the pseudo-labels' expert shares are pulled toward the corpus prior.
        gate: in [0, 1]; adapt less when the served prompts look like the corpora, measured without
            labels: the weight is scaled by ``min(1, u / gate)`` with ``u`` the mean uncertainty
            (1 − top probability) of the router before adapting on the kept prompts (0: no gate).
        max_prompts: at most this many prompts' rows are kept (the oldest go first).
        share_floor: in [0, 1]; with ``policy="share"``, an expert's block is scaled up to ``weight`` ×
            its corpus mass only while it holds at least ``share_floor`` × an even share (1/D) of the
            pseudo-labels; below that its rows keep the weight they would have at that share, so a few
            (possibly wrong) pseudo-labels of a rarely served expert are not blown up (0: always scale).
        confidence: >= 0; each prompt's row is weighted by its top pseudo-label probability to this
            power (0: every prompt counts fully).

    Example:
        >>> AdaptationSettings(rounds=3).to_dict()["rounds"]
        3
    """

    weight: float = 0.5
    policy: str = "share"
    rounds: int = 3
    soft: bool = True
    floor: float = 0.0
    prior: float = 0.0
    gate: float = 0.0
    max_prompts: int = 10_000
    share_floor: float = 0.5
    confidence: float = 2.0

    def __post_init__(self) -> None:
        def bad(name: str, value: object, want: str) -> InvalidInputError:
            return InvalidInputError(f"adapt option {name}={value!r} is invalid: {want}")

        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)):
            raise bad("weight", self.weight, "pass a finite number >= 0 (0 adapts nothing)")
        if not np.isfinite(self.weight) or self.weight < 0:
            raise bad("weight", self.weight, "pass a finite number >= 0 (0 adapts nothing)")
        if self.policy not in ADAPTATION_POLICIES:
            raise bad("policy", self.policy, f"choose one of {ADAPTATION_POLICIES}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise bad("rounds", self.rounds, "pass an integer >= 1")
        if not isinstance(self.soft, bool):
            raise bad("soft", self.soft, "pass True (probability-weighted rows) or False (hard labels)")
        for name in ("floor", "prior", "gate", "share_floor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise bad(name, value, "pass a number in [0, 1]")
        if (
            isinstance(self.confidence, bool)
            or not isinstance(self.confidence, (int, float))
            or not np.isfinite(self.confidence)
            or self.confidence < 0
        ):
            raise bad("confidence", self.confidence, "pass a finite number >= 0 (0: no confidence weighting)")
        if (
            isinstance(self.max_prompts, bool)
            or not isinstance(self.max_prompts, int)
            or self.max_prompts < 1
        ):
            raise bad("max_prompts", self.max_prompts, "pass an integer >= 1")
        object.__setattr__(self, "weight", float(self.weight))
        object.__setattr__(self, "floor", float(self.floor))
        object.__setattr__(self, "prior", float(self.prior))
        object.__setattr__(self, "gate", float(self.gate))
        object.__setattr__(self, "share_floor", float(self.share_floor))
        object.__setattr__(self, "confidence", float(self.confidence))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdaptationSettings:
        """Settings from :meth:`to_dict` output (e.g. ``config.json``); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(data) - known:
            raise InvalidInputError(
                f"unknown adapt options {sorted(unknown)}; the options are {sorted(known)}"
            )
        return cls(**dict(data))


def settings_from(current: AdaptationSettings | None, options: Mapping[str, Any]) -> AdaptationSettings:
    """``current`` settings (defaults when ``None``) with ``options`` (keyword arguments of
    ``adapt``) applied; unknown names raise :class:`InvalidInputError` listing the valid ones."""
    base = current.to_dict() if current is not None else AdaptationSettings().to_dict()
    if unknown := set(options) - set(base):
        raise InvalidInputError(f"unknown adapt options {sorted(unknown)}; the options are {sorted(base)}")
    return AdaptationSettings.from_dict({**base, **options})


@dataclass(frozen=True, eq=False)
class AdaptationPrompts:
    """The rows kept of the adapted prompts, oldest first: no text string, no token id (each row still
    decodes into its prompt's bag of tokens: treat them like the prompts).

    Attributes:
        means: (P, h) float64, the mean embedding of each prompt's countable tokens.
        tokens: (P,) int64, each prompt's number of countable tokens (> 0).
    """

    means: np.ndarray
    tokens: np.ndarray

    def __post_init__(self) -> None:
        means = np.array(self.means, np.float64)  # a private, read-only copy
        tokens = np.array(self.tokens, np.int64)
        if means.ndim != 2 or tokens.shape != (means.shape[0],):
            raise ValueError(f"means {means.shape} and tokens {tokens.shape} must be (P, h) and (P,)")
        if not np.all(np.isfinite(means)) or (tokens.size and tokens.min() <= 0):
            raise ValueError("adaptation rows must be finite and every prompt needs a countable token")
        means.flags.writeable = tokens.flags.writeable = False
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "tokens", tokens)

    @property
    def num_prompts(self) -> int:
        return int(self.tokens.size)

    @classmethod
    def empty(cls, hidden: int) -> AdaptationPrompts:
        return cls(np.zeros((0, hidden)), np.zeros(0, np.int64))

    def __add__(self, other: AdaptationPrompts) -> AdaptationPrompts:
        """``self``'s rows, then ``other``'s (newer)."""
        if self.means.shape[1] != other.means.shape[1]:
            raise ValueError("adaptation rows of different embedding sizes cannot be joined")
        return AdaptationPrompts(
            np.concatenate([self.means, other.means]), np.concatenate([self.tokens, other.tokens])
        )

    def newest(self, n: int) -> AdaptationPrompts:
        """The ``n`` newest rows (all when there are fewer)."""
        return self if self.num_prompts <= n else AdaptationPrompts(self.means[-n:], self.tokens[-n:])

    def canonical(self) -> tuple[np.ndarray, np.ndarray]:
        """``[means, 1]`` ((P, h+1)) and tokens, sorted by a hash of each row's bytes: the same set of
        rows gives the same arrays, whatever order or split they arrived in."""
        keys = [
            hashlib.blake2b(m.tobytes() + t.tobytes(), digest_size=16).digest()
            for m, t in zip(self.means, self.tokens)
        ]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        x = np.empty((len(order), self.means.shape[1] + 1), np.float64)
        x[:, :-1] = self.means[order]
        x[:, -1] = 1.0
        return x, self.tokens[order]


@dataclass(frozen=True, eq=False)
class AdaptationBlock:
    """One expert's adaptation block.

    Attributes:
        gram: ``G_d = Σ_p π_pd x_p x_pᵀ`` ((h+1)², float64; its corner is ``prompts``).
        prompts: ``Σ_p π_pd``, the (soft, confidence-weighted) number of prompts pseudo-labelled with
            this expert.
        weight: ``v_d``, the weight the fit gives the block (``A += v_d G_d``).
        share: the block's weighted mass over the expert's weighted corpus mass (``v_d Σ π / m_d``).
    """

    gram: np.ndarray
    prompts: float
    weight: float
    share: float = 0.0

    def __post_init__(self) -> None:
        gram = np.array(self.gram, np.float64)
        if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or not np.all(np.isfinite(gram)):
            raise ValueError(f"an adaptation Gram must be a finite square matrix, got shape {gram.shape}")
        if not (
            np.isfinite(self.weight) and self.weight >= 0 and np.isfinite(self.prompts) and self.prompts >= 0
        ):
            raise ValueError("an adaptation block's weight and prompts must be finite numbers >= 0")
        gram.flags.writeable = False
        object.__setattr__(self, "gram", gram)
        object.__setattr__(self, "prompts", float(self.prompts))
        object.__setattr__(self, "weight", float(self.weight))
        object.__setattr__(self, "share", float(self.share))


@dataclass(frozen=True)
class ExpertAdaptation:
    """What one expert holds of the adaptation (see :attr:`ir3de.Router.adaptation`).

    Attributes:
        prompts: the soft, confidence-weighted number of kept prompts pseudo-labelled with this
            expert (Σ π).
        row_weight: the weight ``v_d`` one full prompt row gets in the fit.
        share: the block's weighted mass over the expert's weighted corpus mass.
    """

    prompts: float
    row_weight: float
    share: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AdaptationSummary:
    """What a router has adapted to: prompts kept, settings, and per expert its block.

    Example:
        >>> router.adaptation.num_prompts, router.adaptation.experts["math"].prompts   # doctest: +SKIP
        (1000, 262.4)
    """

    num_prompts: int
    settings: AdaptationSettings | None
    experts: Mapping[str, ExpertAdaptation] = field(default_factory=dict)
    #: expert → its :class:`AdaptationBlock` (what stat packs carry); not part of :meth:`to_dict`
    blocks: Mapping[str, AdaptationBlock] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_prompts": self.num_prompts,
            "settings": None if self.settings is None else self.settings.to_dict(),
            "experts": {n: e.to_dict() for n, e in self.experts.items()},
        }


@dataclass(frozen=True)
class AdaptationReport:
    """What one :meth:`ir3de.Router.adapt` call did, in label-free terms (no accuracy: no labels).

    Attributes:
        prompts: prompts given to this call.
        used: of them, prompts with a countable token (their rows were kept).
        kept: prompts whose rows the router holds now (all calls, at most ``max_prompts``).
        dropped: rows dropped by this call to stay within ``max_prompts`` (oldest first).
        share_before / share_after: expert → share of this call's used prompts routed to it, before
            and after adapting (the expert each one scores highest, before any fallback).
        routes_changed: this call's used prompts whose expert changed.
        confidence_before / confidence_after: mean confidence (top score) of those prompts.
        entropy_before / entropy_after: mean entropy (nats) of their expert scores.
        settings: the settings used.
        seconds: how long the call took.

    Example:
        >>> r = router.adapt(served_prompts)                 # doctest: +SKIP
        >>> r.routes_changed, r.share_after["code"]          # doctest: +SKIP
        (41, 0.31)
    """

    prompts: int
    used: int
    kept: int
    dropped: int
    share_before: Mapping[str, float]
    share_after: Mapping[str, float]
    routes_changed: int
    confidence_before: float
    confidence_after: float
    entropy_before: float
    entropy_after: float
    settings: AdaptationSettings
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["share_before"], out["share_after"] = dict(self.share_before), dict(self.share_after)
        out["settings"] = self.settings.to_dict()
        return out


# ---------------------------------------------------------------------------------------------- rows


def prompt_rows(
    matrix: np.ndarray, ids: np.ndarray, lengths: np.ndarray, excluded_ids: np.ndarray
) -> tuple[AdaptationPrompts, np.ndarray]:
    """The adaptation rows of tokenized prompts (flat ``ids``, per-prompt ``lengths``, as routing
    encodes them) and a (P,) mask of the prompts that had a countable token (the others add no row).

    Example:
        >>> m = np.array([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], np.float32)
        >>> rows, used = prompt_rows(m, np.array([0, 1, 2, 2]), np.array([3, 1]), np.array([2]))
        >>> rows.means.tolist(), rows.tokens.tolist(), used.tolist()
        ([[0.5, 0.5]], [2], [True, False])
    """
    ids = np.asarray(ids, np.int64)
    lengths = np.asarray(lengths, np.int64)
    countable = np.ones(matrix.shape[0], bool)
    countable[np.asarray(excluded_ids, np.int64)] = False
    seg = np.repeat(np.arange(lengths.size), lengths)
    tokens = (
        np.bincount(seg[countable[ids]], minlength=lengths.size)
        if ids.size
        else np.zeros(lengths.size, np.int64)
    )
    used = tokens > 0
    if not used.any():
        return AdaptationPrompts.empty(matrix.shape[1]), used
    return AdaptationPrompts(text_means(matrix, ids, lengths, countable), tokens[used]), used


# ---------------------------------------------------------------------------------------------- derivation


def _applied(a: np.ndarray, b: np.ndarray, lam: float, column_norm: bool) -> np.ndarray:
    w = ridge_solve(a, b, lam)
    return np.asarray(column_normalize(w) if column_norm else w, np.float64)


def posteriors(
    logits: np.ndarray, tokens: np.ndarray, temperature: float, evidence_tokens: float
) -> np.ndarray:
    """``softmax(logits / T_p)`` per row with ``T_p = temperature · (1 + evidence_tokens / n_p)``: the
    router's scores of a prompt routed by mean logits (``selector="avg"``), in float64."""
    t = temperature * (1.0 + evidence_tokens / tokens.astype(np.float64))
    z = logits / t[:, None]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), np.float64)


def pseudo_labels(probs: np.ndarray, settings: AdaptationSettings, prior: np.ndarray) -> np.ndarray:
    """Per-prompt label weights (P, D) from posteriors: prior matching, hard/soft, confidence floor,
    confidence weighting."""
    p = probs
    if settings.prior > 0 and p.shape[0]:
        shares = np.maximum(p.mean(axis=0), 1e-12)
        p = p * (prior / shares) ** settings.prior
        p = p / p.sum(axis=1, keepdims=True)
    top = p.max(axis=1) if p.shape[0] else np.zeros(0)
    row = (top >= settings.floor).astype(np.float64)
    if settings.confidence > 0:
        row = row * top**settings.confidence
    if not settings.soft:
        hard = np.zeros_like(p)
        hard[np.arange(p.shape[0]), p.argmax(axis=1)] = 1.0
        return np.asarray(hard * row[:, None], np.float64)
    return np.asarray(p * row[:, None], np.float64)


def block_weights(masses: np.ndarray, prompts: np.ndarray, settings: AdaptationSettings) -> np.ndarray:
    """``v_d`` of every expert's block: masses are the experts' weighted corpus masses (``B₀[-1]``),
    ``prompts`` their soft pseudo-label counts (module docstring)."""
    out = np.zeros_like(prompts)
    has = prompts > 0
    if settings.policy == "share":
        floor = settings.share_floor * prompts.sum() / max(prompts.size, 1)
        out[has] = settings.weight * masses[has] / np.maximum(prompts[has], floor)
    elif prompts.sum() > 0:
        out[has] = settings.weight * masses.sum() / prompts.sum()
    return out


def _round(
    a0: np.ndarray, b0: np.ndarray, x: np.ndarray, labels: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``A``, ``B`` with the blocks of ``labels`` weighted by ``v`` (one Gram product for ``A``)."""
    row = labels @ v
    a = a0 + (x * row[:, None]).T @ x
    b = b0 + x.T @ (labels * v[None, :])
    return a, b


def _labels(
    a0: np.ndarray,
    b0: np.ndarray,
    x: np.ndarray,
    tokens: np.ndarray,
    settings: AdaptationSettings,
    *,
    lam: float,
    column_norm: bool,
    temperature: float,
    evidence_tokens: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last round's pseudo-labels (P, D), block weights ``v`` (D,) and corpus masses (D,)."""
    masses = b0[-1].copy()
    prior = masses / masses.sum()
    w = _applied(a0, b0, lam, column_norm)
    labels, v = np.zeros((x.shape[0], b0.shape[1])), np.zeros(b0.shape[1])
    scale = 1.0
    for r in range(settings.rounds):
        probs = posteriors(x @ w, tokens, temperature, evidence_tokens)
        if r == 0 and settings.gate > 0 and probs.shape[0]:
            scale = min(1.0, float(np.mean(1.0 - probs.max(axis=1))) / settings.gate)
        labels = pseudo_labels(probs, settings, prior)
        v = scale * block_weights(masses, labels.sum(axis=0), settings)
        if r + 1 < settings.rounds:
            w = _applied(*_round(a0, b0, x, labels, v), lam, column_norm)
    return labels, v, masses


def derive(
    a0: np.ndarray,
    b0: np.ndarray,
    rows: AdaptationPrompts,
    settings: AdaptationSettings,
    *,
    lam: float,
    column_norm: bool,
    temperature: float,
    evidence_tokens: float,
) -> list[AdaptationBlock]:
    """One :class:`AdaptationBlock` per expert (columns of ``b0``) from the kept ``rows``, starting from
    the router without adaptation (``a0``, ``b0``: float64 ridge statistics) — the module docstring's
    rounds. ``lam``, ``column_norm``, ``temperature``, ``evidence_tokens``: the router's settings."""
    a0, b0 = np.asarray(a0, np.float64), np.asarray(b0, np.float64)
    x, tokens = rows.canonical()
    labels, v, masses = _labels(
        a0, b0, x, tokens, settings, lam=lam, column_norm=column_norm, temperature=temperature,
        evidence_tokens=evidence_tokens,
    )  # fmt: skip
    prompts = labels.sum(axis=0)
    return [
        AdaptationBlock(
            (x * labels[:, j, None]).T @ x,
            float(prompts[j]),
            float(v[j]),
            float(v[j] * prompts[j] / masses[j]) if masses[j] > 0 else 0.0,
        )
        for j in range(b0.shape[1])
    ]


def adapted_weights(
    a0: np.ndarray,
    b0: np.ndarray,
    rows: AdaptationPrompts,
    settings: AdaptationSettings,
    *,
    lam: float,
    column_norm: bool,
    temperature: float,
    evidence_tokens: float,
) -> np.ndarray:
    """The weights (as applied) of the router adapted to ``rows``, without building the per-expert
    blocks: the same solve as :func:`derive` + :func:`add_blocks` up to float64 rounding (one Gram
    product instead of D). For sweeps over settings (``benchmarks.adaptation``).

    Example:
        >>> rows = AdaptationPrompts(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([3, 5]))
        >>> a0, b0 = np.eye(3) * 4.0, np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
        >>> adapted_weights(a0, b0, rows, AdaptationSettings(), lam=0.1, column_norm=False,
        ...                 temperature=0.1, evidence_tokens=0.0).shape
        (3, 2)
    """
    a0, b0 = np.asarray(a0, np.float64), np.asarray(b0, np.float64)
    x, tokens = rows.canonical()
    labels, v, _ = _labels(
        a0, b0, x, tokens, settings, lam=lam, column_norm=column_norm, temperature=temperature,
        evidence_tokens=evidence_tokens,
    )  # fmt: skip
    return _applied(*_round(a0, b0, x, labels, v), lam, column_norm)


def keep(
    kept: AdaptationPrompts | None, rows: AdaptationPrompts, max_prompts: int
) -> tuple[AdaptationPrompts, int]:
    """The rows kept after adding ``rows`` (newest) to ``kept``, at most ``max_prompts`` (the oldest go
    first), and how many were dropped."""
    joined = rows if kept is None else kept + rows
    return joined.newest(max_prompts), max(0, joined.num_prompts - max_prompts)


def with_blocks(experts: Mapping[str, Any], blocks: Sequence[AdaptationBlock | None]) -> dict[str, Any]:
    """``experts`` (name → :class:`~ir3de.fitting.pipeline.ExpertStatistics`) with these adaptation
    blocks, in order (``None``: none)."""
    return {n: dataclasses.replace(e, adaptation=b) for (n, e), b in zip(experts.items(), blocks)}


def without_blocks(experts: Mapping[str, Any]) -> dict[str, Any]:
    """``experts`` without adaptation blocks (the router before it adapted)."""
    return with_blocks(experts, [None] * len(experts))


def add_blocks(
    a: Any, b: Any, blocks: Sequence[AdaptationBlock | None], *, device: str = "cpu"
) -> tuple[Any, Any]:
    """``A + Σ_d v_d G_d`` and ``B`` with ``v_d G_d[:, -1]`` added to column ``d`` (numpy, or torch on a
    GPU ``device``); ``a`` and ``b`` are not changed."""
    for j, block in enumerate(blocks):
        if block is None or block.weight == 0.0:
            continue
        gram: Any = block.gram
        if device.startswith("cuda"):
            import torch

            gram = torch.tensor(gram, device=device)
        a = a + gram * block.weight
        b = b.clone() if not isinstance(b, np.ndarray) else b.copy()
        b[:, j] = b[:, j] + gram[:, -1] * block.weight
    return a, b


# ---------------------------------------------------------------------------------------------- summaries


def summary(
    experts: Mapping[str, Any], rows: AdaptationPrompts | None, settings: AdaptationSettings | None
) -> AdaptationSummary:
    """:class:`AdaptationSummary` of the experts' blocks (name → record with an ``adaptation``)."""
    blocks = {n: e.adaptation for n, e in experts.items() if e.adaptation is not None}
    return AdaptationSummary(
        0 if rows is None else rows.num_prompts,
        settings,
        {n: ExpertAdaptation(b.prompts, b.weight, b.share) for n, b in blocks.items()},
        blocks,
    )


def check_block(name: str, block: object, hidden: int) -> AdaptationBlock | None:
    """An imported adaptation block (a stat pack's, another router's statistics) checked: ``None``, or
    an :class:`AdaptationBlock` whose Gram has the router's dimension ``hidden + 1``."""
    from ir3de.errors import TokenizerMismatchError

    if block is None:
        return None
    if not isinstance(block, AdaptationBlock):
        raise InvalidInputError(
            f"the adaptation of expert {name!r} must be an AdaptationBlock, got {type(block).__name__}"
        )
    if block.gram.shape[0] != hidden + 1:
        raise TokenizerMismatchError(
            f"the adaptation block of expert {name!r} is {block.gram.shape[0] - 1}-dimensional but the "
            f"embeddings have {hidden} dimensions: it was made with another model"
        )
    return block


def _shares(names: Sequence[str], winners: np.ndarray) -> dict[str, float]:
    """Expert → share of ``winners`` (expert indices) routed to it."""
    counts = np.bincount(winners, minlength=len(names)) if winners.size else np.zeros(len(names))
    return {n: float(c) / max(winners.size, 1) for n, c in zip(names, counts)}


def _mean_top(scores: np.ndarray) -> float:
    return float(scores.max(axis=1).mean()) if scores.size else 0.0


def _entropy(scores: np.ndarray) -> float:
    if scores.size == 0:
        return 0.0
    p = np.clip(scores, 1e-300, 1.0)
    return float(np.mean(-(scores * np.log(p)).sum(axis=1)))


def report(
    names: Sequence[str],
    before: Any,
    after: Any,
    *,
    used: np.ndarray,
    kept: int,
    dropped: int,
    settings: AdaptationSettings,
    seconds: float,
) -> AdaptationReport:
    """The :class:`AdaptationReport` of the routes ``before`` and ``after`` adapting (selections of the
    call's prompts: ``winners`` (P,), ``scores`` (P, D)), over the ``used`` prompts (P,) mask."""
    w0, w1 = np.asarray(before.winners)[used], np.asarray(after.winners)[used]
    # (P, D) even for P = 0: ``adapt([])`` re-derives the blocks and reports on no prompts
    s0 = np.asarray(before.scores, np.float64).reshape(used.size, len(names))[used]
    s1 = np.asarray(after.scores, np.float64).reshape(used.size, len(names))[used]
    return AdaptationReport(
        prompts=int(used.size),
        used=int(used.sum()),
        kept=kept,
        dropped=dropped,
        share_before=_shares(names, w0),
        share_after=_shares(names, w1),
        routes_changed=int(np.sum(w0 != w1)),
        confidence_before=_mean_top(s0),
        confidence_after=_mean_top(s1),
        entropy_before=_entropy(s0),
        entropy_after=_entropy(s1),
        settings=settings,
        seconds=float(seconds),
    )
