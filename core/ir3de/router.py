"""The public façade: fit, route, grow, save and load an IR3DE router.

Example:
    >>> from ir3de import Router, TokenEmbeddings                   # doctest: +SKIP
    >>> router = Router(embeddings=TokenEmbeddings.default())
    >>> router.fit({"math": math_texts, "code": code_texts})
    >>> router.route("Solve 3x + 5 = 11").expert
    'math'
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import artifact
from .counting import TextCounter
from .decision import RouteDecision
from .errors import (
    ArtifactError,
    EmptyPromptError,
    ExpertError,
    InvalidInputError,
    NotFittedError,
    TokenizerMismatchError,
    UnknownExpertError,
)
from .selectors import COMBINERS, SELECTORS, Selection, explain_one, select_avg_one, select_batch, select_one
from .solve import column_normalize, ridge_solve
from .statistics import ExpertCounts, balance_weights, expert_gram, ridge_statistics
from .table import RouteTable, compile_logits

if TYPE_CHECKING:
    import tokenizers
    import torch

    from .embeddings import TokenEmbeddings

__all__ = ["LEVELS", "Router", "RouterConfig"]

_AVG_TEMPERATURE = 0.1  # mean ridge logits live on a ~[0, 1] scale
_LOGPROB_TEMPERATURE = 1.0  # summed log-probabilities are already log-odds

#: What one ridge training row is: a token occurrence (the paper) or a text (its mean embedding).
LEVELS = ("token", "text")

_PREFIX_CHARS_PER_TOKEN = 16  # tokenize at most this many chars per allowed token before the full text
_PREFIX_MARGIN_TOKENS = 16  # tokens past the cap that make a prefix's first tokens safe
_GRAM_CHUNK_ROWS = 16384
_NO_IDS = np.zeros(0, np.int64)


@dataclass(frozen=True)
class RouterConfig:
    """Settings of a router. ``RouterConfig.paper()`` is the paper's exact configuration.

    The defaults were chosen by measurement (README, "Routing quality"): text-level fitting (one
    ridge row per training text, its mean token embedding), balanced experts, λ = 0.1, no column
    normalisation, routed by the mean of the prompt's token logits (still a per-token table lookup).
    They beat the paper's configuration and the best token-level settings on the in-distribution
    suites, and their confidence is calibrated there (expected calibration error below 0.01 at the
    default temperature; under a source shift, calibrate on prompts like the served ones).

    Attributes:
        level: ``"token"`` fits one ridge row per token occurrence (the paper); ``"text"`` fits one
            row per training text, its mean token embedding, plus its 8-token windows' means with a
            total weight of 0.25 (statistics: one text Gram per expert; see
            :func:`ir3de.statistics.text_rows`). Either way routing is a lookup in the same per-token
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
            confidence; :meth:`Router.calibrate` fits it on held-out prompts. Never changes the winner.
            ``None`` (default) takes the measured default of the evidence: 0.1 for mean logits
            (``avg``; fitted temperatures were 0.05–0.11 on the public suites) and 1.0 for summed
            log-probabilities (``logprob``). See :attr:`effective_temperature`.
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
        if self.fallback is not None and (not isinstance(self.fallback, str) or not self.fallback):
            raise ValueError(f"fallback must be a non-empty string, got {self.fallback!r}")

    @property
    def effective_temperature(self) -> float:
        """The temperature in use: ``temperature``, or the measured default of the selector's evidence."""
        if self.temperature is not None:
            return float(self.temperature)
        return _AVG_TEMPERATURE if self.selector == "avg" else _LOGPROB_TEMPERATURE

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
        return cls(**data)


@dataclass(frozen=True, eq=False)
class _Expert:
    counts: ExpertCounts
    description: str = ""


@dataclass(frozen=True, eq=False)
class _RoutingState:
    """An immutable snapshot that routing reads; swapped as a whole under the write lock."""

    experts: tuple[str, ...]
    table: RouteTable
    weights: np.ndarray  # (h+1, D) as applied (after column normalisation when enabled)
    ridge_solution: np.ndarray  # (h+1, D) raw solve


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ExpertError(f"expert names must be non-empty strings, got {name!r}")
    return name


def _batched_texts(texts: Iterable[str], expert: str, batch_size: int) -> Iterator[list[str]]:
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError(
            f"texts of expert {expert!r} is a single {type(texts).__name__}; pass a list of strings "
            f"(e.g. [{texts[:20]!r}])"
        )
    try:
        iterator = iter(texts)
    except TypeError:
        raise InvalidInputError(
            f"texts of expert {expert!r} must be an iterable of strings, got {type(texts).__name__}"
        ) from None
    index = 0
    while batch := list(itertools.islice(iterator, batch_size)):
        for offset, text in enumerate(batch):
            if not isinstance(text, str):
                raise InvalidInputError(
                    f"text #{index + offset} of expert {expert!r} is a {type(text).__name__}, not a str"
                )
        index += len(batch)
        yield batch


class Router:
    """IR3DE: route each prompt to one of several domain experts with a per-token lookup table.

    Args:
        embeddings: tokenizer + input-embedding matrix used to fit (``TokenEmbeddings.default()``
            when omitted). Routing a loaded router needs only its tokenizer.
        config: a :class:`RouterConfig`; keyword overrides below win over it.
        device: where Gram products, the solve and table compilation run: ``"auto"`` (the GPU when
            there is one), ``"cpu"`` or ``"cuda"``. Routing always runs on the CPU (a table lookup).
        batch_size: texts tokenized per batch while fitting.
        progress: show tqdm progress bars while counting (``None``: only on a terminal).
        **settings: any :class:`RouterConfig` field (``lam``, ``selector``, ``k``, ``combine``,
            ``column_norm``, ``balance``, ``max_tokens``, ``fallback``, ``threshold``).

    Example:
        >>> router = Router(embeddings=emb, k=20).fit({"math": m, "code": c})   # doctest: +SKIP
        >>> d = router.route("def add(a, b):")                                   # doctest: +SKIP
        >>> d.expert, round(d.confidence, 2), [t.text for t in d.tokens][:3]     # doctest: +SKIP
    """

    def __init__(
        self,
        embeddings: TokenEmbeddings | None = None,
        *,
        config: RouterConfig | None = None,
        device: str = "auto",
        batch_size: int = 512,
        progress: bool | None = None,
        **settings: Any,
    ) -> None:
        base = config if config is not None else RouterConfig()
        self.config: RouterConfig = dataclasses.replace(base, **settings) if settings else base
        self.device = _resolve_device(device)
        self.batch_size = int(batch_size)
        self.progress = progress
        self._lock = threading.RLock()
        self._experts: dict[str, _Expert] = {}
        self._grams: dict[str, torch.Tensor] = {}
        self._state: _RoutingState | None = None
        self._embeddings: TokenEmbeddings | None = None
        self._embedding_source: dict[str, Any] | None = None
        self._fingerprint: dict[str, Any] | None = None
        self._tokenizer: tokenizers.Tokenizer | None = None
        self._excluded_ids = np.zeros(0, np.int64)
        self._evaluation: dict[str, Any] | None = None
        if embeddings is not None:
            self._attach_embeddings(embeddings)

    # ------------------------------------------------------------------ construction
    @classmethod
    def paper(cls, embeddings: TokenEmbeddings | None = None, **kwargs: Any) -> Router:
        """The paper's router exactly: λ=1e-2, entropy top-10 majority vote, column normalisation,
        no balancing, 1024-token cap. Extra keyword arguments (``device``, ``fallback``…) pass through.

        Example:
            >>> router = Router.paper(embeddings=TokenEmbeddings.default())   # doctest: +SKIP
        """
        config_keys = {f.name for f in dataclasses.fields(RouterConfig)}
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in config_keys}
        return cls(embeddings, config=RouterConfig.paper(**settings), **kwargs)

    def _attach_embeddings(self, embeddings: TokenEmbeddings) -> None:
        fingerprint = embeddings.fingerprint()
        if self._fingerprint is not None:
            for key in ("tokenizer_sha256", "embedding_sha256", "vocab_size", "hidden_size"):
                if self._fingerprint.get(key) != fingerprint.get(key):
                    raise TokenizerMismatchError(
                        f"these embeddings do not match the router's: {key} is {fingerprint.get(key)!r}, "
                        f"the router was fitted with {self._fingerprint.get(key)!r}; pass the embeddings the "
                        f"router was built with ({self._embedding_source})"
                    )
        self._embeddings = embeddings
        self._embedding_source = dict(embeddings.source)
        self._fingerprint = fingerprint
        self._tokenizer = embeddings.tokenizer
        self._excluded_ids = np.asarray(embeddings.excluded_ids, np.int64)

    @property
    def embeddings(self) -> TokenEmbeddings:
        """The embedding source; loaded on first use from the source recorded in a saved router."""
        with self._lock:
            if self._embeddings is None:
                from .embeddings import TokenEmbeddings

                if self._embedding_source is None:
                    self._attach_embeddings(TokenEmbeddings.default())
                else:
                    self._attach_embeddings(TokenEmbeddings.from_source(self._embedding_source))
            assert self._embeddings is not None
            return self._embeddings

    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        if self._tokenizer is None:
            return self.embeddings.tokenizer
        return self._tokenizer

    # ------------------------------------------------------------------ introspection
    @property
    def experts(self) -> list[str]:
        """Expert names in index order (the order they were added)."""
        return list(self._experts)

    @property
    def is_fitted(self) -> bool:
        return self._state is not None

    @property
    def statistics(self) -> dict[str, ExpertCounts]:
        """Per-expert sparse token counts (the router's sufficient statistics)."""
        return {name: e.counts for name, e in self._experts.items()}

    @property
    def descriptions(self) -> dict[str, str]:
        return {name: e.description for name, e in self._experts.items()}

    @property
    def table(self) -> RouteTable:
        """The compiled route table (per vocabulary id: logits, entropy, vote)."""
        return self._require_state().table

    @property
    def weights(self) -> np.ndarray:
        """(h+1) × D weights the table was compiled from (bias in the last row)."""
        return self._require_state().weights

    def __repr__(self) -> str:
        experts = ", ".join(self._experts) or "not fitted"
        return f"Router(experts=[{experts}], {self.config})"

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        experts: Mapping[str, Iterable[str]],
        descriptions: Mapping[str, str] | None = None,
    ) -> Router:
        """Count every expert's texts, solve, and compile the route table (replaces any previous fit).

        Args:
            experts: expert name → texts (any iterable of strings: list, generator, dataset column).
            descriptions: optional expert name → one-line description (shown in the model card).

        Returns:
            ``self``, so ``Router(...).fit(...)`` chains.
        """
        if not isinstance(experts, Mapping):
            raise InvalidInputError(f"fit takes a mapping expert name → texts, got {type(experts).__name__}")
        names = [_check_name(n) for n in experts]
        if len(names) < 2:
            raise ExpertError(f"a router needs at least 2 experts, got {len(names)}: {names}")
        descriptions = dict(descriptions or {})
        unknown = set(descriptions) - set(names)
        if unknown:
            raise UnknownExpertError(
                f"descriptions for unknown experts {sorted(unknown)}; experts are {names}"
            )
        with self._lock:
            counted = {name: self._count(name, texts) for name, texts in experts.items()}
            grams = {name: self._gram(c) for name, c in counted.items()} if self._token_level else {}
            self._experts = {n: _Expert(counted[n], descriptions.get(n, "")) for n in names}
            self._grams = grams
            self._evaluation = None
            self._refresh()
        return self

    def fit_counts(
        self,
        counts: Mapping[str, ExpertCounts],
        descriptions: Mapping[str, str] | None = None,
    ) -> Router:
        """Fit from precomputed per-expert token counts (stat packs, a distributed count, shards).

        Equals :meth:`fit` on the texts the counts came from, provided they were counted with this
        router's tokenizer (see :class:`ir3de.counting.TextCounter`).
        """
        if not isinstance(counts, Mapping):
            raise InvalidInputError(
                f"fit_counts takes a mapping expert name → ExpertCounts, got {type(counts).__name__}"
            )
        names = [_check_name(n) for n in counts]
        if len(names) < 2:
            raise ExpertError(f"a router needs at least 2 experts, got {len(names)}: {names}")
        descriptions = dict(descriptions or {})
        with self._lock:
            for name, c in counts.items():
                if not isinstance(c, ExpertCounts):
                    raise InvalidInputError(
                        f"counts of expert {name!r} must be ExpertCounts, got {type(c).__name__}"
                    )
                self._check_counts(name, c)
            grams = {name: self._gram(c) for name, c in counts.items()} if self._token_level else {}
            self._commit({n: _Expert(counts[n], descriptions.get(n, "")) for n in names}, grams)
        return self

    def add_expert(self, name: str, texts: Iterable[str], description: str = "") -> Router:
        """Add one expert: count its texts, add its statistics, re-solve. Equals a from-scratch fit.

        Example:
            >>> router.add_expert("legal", legal_texts, description="contracts and case law")  # doctest: +SKIP
        """
        _check_name(name)
        with self._lock:
            if name in self._experts:
                raise ExpertError(
                    f"expert {name!r} already exists; use update_expert({name!r}, more_texts) to add text to it "
                    "or remove_expert first"
                )
            counts = self._count(name, texts)
            return self.add_expert_counts(name, counts, description)

    def add_expert_counts(self, name: str, counts: ExpertCounts, description: str = "") -> Router:
        """Add an expert from precomputed token counts (a stat pack, a Ray job…) on the same tokenizer."""
        _check_name(name)
        with self._lock:
            if name in self._experts:
                raise ExpertError(f"expert {name!r} already exists; remove it first or pick another name")
            self._check_counts(name, counts)
            self._ensure_grams()
            experts, grams = dict(self._experts), dict(self._grams)
            experts[name] = _Expert(counts, description)
            if self._token_level:
                grams[name] = self._gram(counts)
            self._commit(experts, grams)
        return self

    def update_expert(self, name: str, more_texts: Iterable[str]) -> Router:
        """Add more text to an existing expert (counts add exactly), then re-solve."""
        with self._lock:
            old = self._get_expert(name)
            delta = self._count(name, more_texts)
            self._ensure_grams()
            experts, grams = dict(self._experts), dict(self._grams)
            experts[name] = _Expert(old.counts + delta, old.description)
            if name in grams:  # token Grams add like the counts; a missing one is derived when needed
                grams[name] = grams[name] + self._gram(delta)
            self._commit(experts, grams)
        return self

    def remove_expert(self, name: str) -> Router:
        """Drop an expert's column and re-solve. At least two experts must remain."""
        with self._lock:
            self._get_expert(name)
            if len(self._experts) <= 2:
                raise ExpertError(
                    f"cannot remove {name!r}: a router needs at least 2 experts and has {self.experts}"
                )
            self._ensure_grams()
            experts = {n: e for n, e in self._experts.items() if n != name}
            grams = {n: g for n, g in self._grams.items() if n != name}
            self._commit(experts, grams)
        return self

    def configure(self, **settings: Any) -> Router:
        """Change settings. Routing-only settings (selector, k, combine, max_tokens, fallback,
        threshold, temperature) apply at once; ``level``, λ, ``column_norm`` and ``balance`` re-solve
        from the statistics (no text is re-read).

        Example:
            >>> router.configure(level="token", selector="topk", k=50)   # doctest: +SKIP
        """
        with self._lock:
            new = dataclasses.replace(self.config, **settings)
            resolve = any(
                getattr(new, f) != getattr(self.config, f) for f in ("level", "lam", "column_norm", "balance")
            )
            old = self.config
            self.config = new
            if resolve and self._state is not None:
                try:
                    self._ensure_grams()
                    self._refresh()
                except BaseException:
                    self.config = old
                    raise
        return self

    def _commit(self, experts: dict[str, _Expert], grams: dict[str, Any]) -> None:
        previous = (self._experts, self._grams)
        self._experts, self._grams = experts, grams
        try:
            self._evaluation = None
            self._refresh()
        except BaseException:
            self._experts, self._grams = previous
            raise

    def _get_expert(self, name: str) -> _Expert:
        if name not in self._experts:
            raise UnknownExpertError(f"unknown expert {name!r}; experts are {self.experts}")
        return self._experts[name]

    def _check_counts(self, name: str, counts: ExpertCounts) -> None:
        vocab = self.embeddings.vocab_size
        if counts.token_ids.size and counts.token_ids[-1] >= vocab:
            raise TokenizerMismatchError(
                f"counts of expert {name!r} hold token id {counts.token_ids[-1]} but the vocabulary has {vocab} "
                "ids: they were made with another tokenizer"
            )
        if counts.num_tokens == 0:
            raise ExpertError(f"expert {name!r} has no countable token")
        if counts.text_gram is not None and counts.text_gram.shape[0] != self.embeddings.hidden_size + 1:
            raise TokenizerMismatchError(
                f"the text statistics of expert {name!r} are {counts.text_gram.shape[0] - 1}-dimensional but the "
                f"embeddings have {self.embeddings.hidden_size} dimensions: they were made with another model"
            )
        if self.config.level == "text":
            self._check_text_level(name, counts)

    def _check_text_level(self, name: str, counts: ExpertCounts) -> None:
        if counts.text_gram is None:
            raise ExpertError(
                f"expert {name!r} has token counts only (counted without the embedding matrix, e.g. by an older "
                "ir3de or a token-only stat pack), but this router fits at level='text'; re-count its texts "
                "with this version, or use Router(level='token')"
            )
        if counts.num_scored_texts == 0:
            raise ExpertError(f"expert {name!r} has no text with a countable token")

    def _count(self, name: str, texts: Iterable[str]) -> ExpertCounts:
        from tqdm.auto import tqdm

        emb = self.embeddings
        # text Grams cost a gather per token: computed when this router fits at text level
        matrix = emb.matrix if self.config.level == "text" else None
        counter = TextCounter(emb.tokenizer, emb.vocab_size, emb.excluded_ids, embedding_matrix=matrix)
        total = len(texts) if hasattr(texts, "__len__") else None  # type: ignore[arg-type]
        with tqdm(
            total=total, desc=f"counting {name}", unit="text", disable=self._progress_disabled()
        ) as bar:
            for batch in _batched_texts(texts, name, self.batch_size):
                counter.add(batch)
                bar.update(len(batch))
        counts = counter.result()
        if counts.num_texts == 0:
            raise ExpertError(f"expert {name!r} has no text; give it at least one non-empty string")
        self._check_counts(name, counts)
        return counts

    def _progress_disabled(self) -> bool | None:
        return None if self.progress is None else not self.progress

    def _gram(self, counts: ExpertCounts) -> torch.Tensor:
        import torch

        matrix = self.embeddings.matrix
        total: torch.Tensor | None = None
        for start in range(0, counts.token_ids.size, _GRAM_CHUNK_ROWS):
            ids = counts.token_ids[start : start + _GRAM_CHUNK_ROWS]
            rows = torch.from_numpy(matrix[ids]).to(device=self.device, dtype=torch.float64)
            c = torch.from_numpy(counts.counts[start : start + _GRAM_CHUNK_ROWS]).to(
                device=self.device, dtype=torch.float64
            )
            part = expert_gram(rows, c)
            total = part if total is None else total + part
        assert total is not None
        return total

    @property
    def _token_level(self) -> bool:
        return self.config.level == "token"

    def _ensure_grams(self) -> None:
        """Token Gram matrices are derived state: recompute them (e.g. after loading) when missing.
        Text-level routers do not need them (their text Grams are stored with the counts)."""
        if not self._token_level:
            return
        for name, expert in self._experts.items():
            if name not in self._grams:
                self._grams[name] = self._gram(expert.counts)

    def _level_statistics(self, names: Sequence[str]) -> tuple[Any, Any]:
        """``A`` and ``B`` (torch float64 on ``self.device``) of the configured level and weighting."""
        import torch

        if self.config.level == "text":
            counts = [self._experts[n].counts for n in names]
            for n, c in zip(names, counts):
                self._check_text_level(n, c)
            grams = [torch.tensor(c.text_gram, device=self.device) for c in counts]
            masses = [c.num_scored_texts for c in counts]
        else:
            grams = [self._grams[n] for n in names]
            masses = [self._experts[n].counts.num_tokens for n in names]
        return ridge_statistics(grams, balance_weights(masses, self.config.balance))

    def ridge_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The ridge statistics ``A`` ((h+1)²) and ``B`` ((h+1) × D) of the current experts and weighting,
        as float64 numpy arrays (e.g. for a λ sweep with :class:`ir3de.solve.RidgePath`)."""
        with self._lock:
            self._require_state()
            self._ensure_grams()
            a, b = self._level_statistics(tuple(self._experts))
            return a.detach().cpu().numpy(), b.detach().cpu().numpy()

    def select_lambda(self, lams: Sequence[float] | None = None, *, apply: bool = True) -> float:
        """Choose λ by generalised cross-validation on the statistics themselves (no held-out text).

        Scores every λ in ``lams`` (default: 25 values from 1e-4 to 1e2) with
        :func:`ir3de.solve.gcv_curve` — the leave-one-row-out error estimate of the ridge fit, computed
        from ``A`` and ``B`` by one eigendecomposition — and, with ``apply``, re-solves at the best one.
        Meaningful at ``level="text"`` (rows are texts); at token level the rows are repeated token
        occurrences and GCV tends to the smallest λ. On the public suites it picks λ ≈ 0.056 at text
        level, next to the default 0.1 (README, "Routing quality").

        Returns:
            The chosen λ (also in ``router.config.lam`` when ``apply``).

        Example:
            >>> router.select_lambda()   # doctest: +SKIP
            0.05623413251903491
        """
        from .solve import gcv_curve

        grid = np.logspace(-4, 2, 25) if lams is None else np.asarray(list(lams), np.float64)
        if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
            raise ValueError(f"lams must be positive finite numbers, got {list(grid)}")
        a, b = self.ridge_statistics()
        _, best = gcv_curve(a, b, grid)
        if apply:
            self.configure(lam=best)
        return best

    def _refresh(self) -> None:
        """Solve from the current statistics and swap in a new routing state atomically."""
        names = tuple(self._experts)
        a, b = self._level_statistics(names)
        solution = ridge_solve(a, b, self.config.lam)
        applied = column_normalize(solution) if self.config.column_norm else solution
        logits = compile_logits(self.embeddings.matrix, applied, device=self.device)
        table = RouteTable.from_logits(logits, self._excluded_ids)
        self._state = _RoutingState(
            names, table, applied.detach().cpu().numpy(), solution.detach().cpu().numpy()
        )

    # ------------------------------------------------------------------ routing
    def _require_state(self) -> _RoutingState:
        state = self._state
        if state is None:
            raise NotFittedError(
                "the router is not fitted: call fit({...}) or Router.from_pretrained(folder)"
            )
        return state

    def _prompt_head(self, text: str) -> str:
        """The part of a prompt worth tokenizing: '' for whitespace-only prompts, else a prefix long
        enough to hold ``max_tokens`` tokens (checked by :meth:`_capped_ids`)."""
        if not text or text.isspace():
            return ""
        char_cap = self.config.max_tokens * _PREFIX_CHARS_PER_TOKEN
        return text if len(text) <= char_cap else text[:char_cap]

    def _capped_ids(self, text: str, head: str, ids: list[int]) -> list[int]:
        """The first ``max_tokens`` ids of ``text`` given the ids of its prefix ``head``.

        A prefix's tokens equal the full text's except near the cut, so a prefix that yields
        ``max_tokens`` plus a margin is exact; otherwise (very long tokens) the whole text is encoded.
        """
        cap = self.config.max_tokens
        if 0 < len(head) < len(text) and len(ids) < cap + _PREFIX_MARGIN_TOKENS:
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ids[:cap] if len(ids) > cap else ids

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize prompts as routing does (first ``max_tokens`` tokens): flat ids and lengths.

        A whitespace-only prompt has no countable token (it routes to the fallback, or raises).
        """
        tokenizer = self.tokenizer
        encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        heads = [self._prompt_head(t) for t in texts]
        encodings = encode(heads, add_special_tokens=False)
        id_lists = [self._capped_ids(t, h, e.ids) for t, h, e in zip(texts, heads, encodings)]
        lengths = np.fromiter((len(x) for x in id_lists), np.int64, count=len(id_lists))
        flat = np.fromiter(itertools.chain.from_iterable(id_lists), np.int64, count=int(lengths.sum()))
        return flat, lengths

    def route(self, text: str) -> RouteDecision:
        """Route one prompt.

        Returns:
            A :class:`RouteDecision` with ``expert``, ``confidence``, ``scores`` and ``tokens``.

        Raises:
            EmptyPromptError: no countable token and no ``fallback`` configured.

        Example:
            >>> d = router.route("Solve 3x + 5 = 11")       # doctest: +SKIP
            >>> d.expert, d.confidence                       # doctest: +SKIP
            ('math', 1.0)
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"the prompt is a {type(text).__name__}; prompts must be str")
        state = self._require_state()
        config = self.config
        head = self._prompt_head(text)
        ids = self._capped_ids(text, head, self.tokenizer.encode(head, add_special_tokens=False).ids)
        if config.selector == "avg":  # the defaults: one fused lookup; the deciding tokens on demand
            table = state.table
            winner, scores, n = select_avg_one(ids, table, config.effective_temperature)
            lazy = lambda: explain_one(ids, table)  # noqa: E731
            return self._decision(state, config, winner, scores, _NO_IDS, _NO_IDS, n, 0, explain=lazy)
        winner, scores, chosen, positions, n = select_one(
            np.array(ids, np.int64),
            state.table,
            selector=config.selector,
            k=config.k,
            combine=config.combine,
            temperature=config.effective_temperature,
        )
        return self._decision(state, config, winner, scores, chosen, positions, n, 0)

    def route_batch(self, texts: Sequence[str]) -> list[RouteDecision]:
        """Route many prompts at once (vectorised); decisions come back in the same order."""
        if isinstance(texts, str):
            raise InvalidInputError("route_batch takes a list of prompts; for one prompt call route(text)")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInputError(f"prompt #{i} is a {type(t).__name__}; prompts must be str")
        state = self._require_state()
        config = self.config
        ids, lengths = self.encode(texts)
        sel = self._select(state, config, ids, lengths)
        offsets = sel.selected_offsets
        return [
            self._decision(
                state,
                config,
                int(sel.winners[i]),
                sel.scores[i],
                sel.selected_ids[offsets[i] : offsets[i + 1]],
                sel.selected_positions[offsets[i] : offsets[i + 1]],
                int(sel.num_countable[i]),
                i,
            )
            for i in range(len(texts))
        ]

    def route_indices(self, texts: Sequence[str]) -> np.ndarray:
        """Expert index per prompt (``-1`` for prompts with no countable token); no decision objects.

        The fastest path, for evaluation and bulk routing. Ignores the fallback.
        """
        state = self._require_state()
        ids, lengths = self.encode(list(texts))
        return self._select(state, self.config, ids, lengths, explain=False).winners

    @staticmethod
    def _select(
        state: _RoutingState, config: RouterConfig, ids: np.ndarray, lengths: np.ndarray, explain: bool = True
    ) -> Selection:
        return select_batch(
            ids,
            lengths,
            state.table,
            selector=config.selector,
            k=config.k,
            combine=config.combine,
            temperature=config.effective_temperature,
            explain=explain,
        )

    def calibrate(self, held_out: Mapping[str, Sequence[str]]) -> float:
        """Fit ``temperature`` on labelled held-out prompts so that confidence means probability.

        Minimises the negative log-likelihood of the true experts under ``softmax(evidence / T)``
        (convex in ``1/T``; one bounded scalar search); the route of every prompt is unchanged. Needs
        ``combine="logprob"`` or ``selector="avg"`` (vote shares have no temperature).

        Returns:
            The fitted temperature, also set in ``router.config`` (and saved with the router).

        Example:
            >>> router.calibrate({"math": math_dev, "code": code_dev})   # doctest: +SKIP
            14.2
        """
        import scipy.optimize

        from .evaluate import labelled_prompts

        config = self.config
        if config.combine == "vote" and config.selector != "avg":
            raise ValueError(
                "vote shares have no temperature: calibrate with combine='logprob' or selector='avg'"
            )
        state = self._require_state()
        prompts, labels = labelled_prompts(state.experts, held_out)
        ids, lengths = self.encode(prompts)
        sel = self._select(state, config, ids, lengths, explain=False)
        keep = sel.winners >= 0
        z, y = sel.evidence[keep], labels[keep]
        if y.size == 0:
            raise ValueError("calibration needs held-out prompts with countable tokens")

        def nll(log_beta: float) -> float:
            logits = z * float(np.exp(log_beta))
            logits = logits - logits.max(axis=1, keepdims=True)
            return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(y.size), y]))

        best = scipy.optimize.minimize_scalar(nll, bounds=(-12.0, 8.0), method="bounded")
        temperature = float(np.exp(-best.x))
        self.configure(temperature=temperature)
        return temperature

    def _decision(
        self,
        state: _RoutingState,
        config: RouterConfig,
        winner: int,
        scores: np.ndarray | list[float],
        token_ids: np.ndarray,
        positions: np.ndarray,
        num_countable: int,
        index: int,
        explain: Any = None,
    ) -> RouteDecision:
        if winner < 0:
            if config.fallback is None:
                raise EmptyPromptError(
                    f"prompt #{index} has no countable token (empty, whitespace, or only special tokens); "
                    "pass a non-empty prompt or set Router(fallback='name') to route such prompts"
                )
            return RouteDecision(
                config.fallback,
                0.0,
                None,
                None,
                True,
                0,
                expert_names=state.experts,
                tokenizer=self._tokenizer,
            )
        confidence = float(scores[winner])
        top = state.experts[winner]
        use_fallback = config.fallback is not None and confidence < config.threshold
        return RouteDecision(
            config.fallback if use_fallback else top,  # type: ignore[arg-type]
            confidence,
            None,
            top,
            use_fallback,
            num_countable,
            expert_names=state.experts,
            score_values=scores,
            token_ids=token_ids,
            positions=positions,
            votes=state.table.votes,
            entropy=state.table.entropy,
            log_probs=state.table.log_probs,
            tokenizer=self._tokenizer,
            explain=explain,
        )

    # ------------------------------------------------------------------ artifact
    def config_dict(self) -> dict[str, Any]:
        """The ``config.json`` content (without file checksums)."""
        from . import __version__

        state = self._require_state()
        return {
            "library": "ir3de",
            "format_version": artifact.FORMAT_VERSION,
            "library_version": __version__,
            "experts": [
                {
                    "name": name,
                    "description": self._experts[name].description,
                    "num_texts": self._experts[name].counts.num_texts,
                    "num_tokens": self._experts[name].counts.num_tokens,
                    "num_distinct_tokens": int(self._experts[name].counts.token_ids.size),
                }
                for name in state.experts
            ],
            "settings": self.config.to_dict(),
            "text_statistics": artifact.text_statistics_spec(),
            "vocab_size": state.table.vocab_size,
            "hidden_size": int(state.weights.shape[0] - 1),
            "excluded_ids": [int(i) for i in self._excluded_ids],
            "embedding_source": self._embedding_source,
            "fingerprint": self._fingerprint,
            "evaluation": self._evaluation,
        }

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the router to ``folder`` atomically (a failure leaves any previous artifact intact).

        Example:
            >>> router.save_pretrained("my-router")                   # doctest: +SKIP
            >>> Router.from_pretrained("my-router").route("2+2?").expert  # doctest: +SKIP
        """
        from .model_card import render_model_card

        with self._lock:
            state = self._require_state()
            router_bytes = artifact.tensors_to_bytes(
                {
                    "logits": state.table.logits,
                    "weights": state.weights,
                    "ridge_solution": state.ridge_solution,
                },
                metadata={"format": "ir3de-route-table", "experts": json.dumps(list(state.experts))},
            )
            counts = [self._experts[n].counts for n in state.experts]
            offsets = np.zeros(len(counts) + 1, np.int64)
            np.cumsum([c.token_ids.size for c in counts], out=offsets[1:])
            stats_bytes = artifact.tensors_to_bytes(
                {
                    "token_ids": np.concatenate([c.token_ids for c in counts]),
                    "counts": np.concatenate([c.counts for c in counts]),
                    "offsets": offsets,
                    "num_texts": np.array([c.num_texts for c in counts], np.int64),
                    **artifact.text_gram_tensors(counts, hidden=state.weights.shape[0] - 1),
                },
                metadata={"format": "ir3de-statistics", "experts": json.dumps(list(state.experts))},
            )
            tokenizer_bytes = self.tokenizer.to_str().encode("utf-8")
            config = self.config_dict()
            files = {
                artifact.ROUTER_FILE: router_bytes,
                artifact.STATISTICS_FILE: stats_bytes,
                artifact.TOKENIZER_FILE: tokenizer_bytes,
            }
            config["files"] = {
                name: {"sha256": artifact.file_sha256(data), "size": len(data)}
                for name, data in files.items()
            }
            files[artifact.CONFIG_FILE] = (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode()
            files[artifact.CARD_FILE] = render_model_card(config).encode("utf-8")
            return artifact.write_folder_atomically(folder, files)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        embeddings: TokenEmbeddings | None = None,
        device: str = "auto",
        progress: bool | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
    ) -> Router:
        """Load a router saved with :meth:`save_pretrained`, from a folder or a Hub repo id.

        ``folder`` is a local folder, else a Hub repo id (``"org/name"``) resolved through the HF cache
        (downloaded from ``HF_ENDPOINT`` when missing; cache only with ``HF_HUB_OFFLINE=1`` or
        ``local_files_only=True``); ``revision``, ``token``, ``cache_dir`` and ``force_download`` work as
        in other Hugging Face libraries (see :mod:`ir3de.hub`).

        Routing needs only the folder. Growing (``add_expert``…) loads the embedding matrix from the
        source recorded in ``config.json``, or from ``embeddings`` when given (checked to match).

        Raises:
            ArtifactError: missing, truncated or corrupted files, or inconsistent shapes.
            ArtifactVersionError: written by a newer format version.
            TokenizerMismatchError: the tokenizer does not match the table.
        """
        import tokenizers

        from .hub import resolve_router_folder

        folder = resolve_router_folder(
            folder,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        path = Path(folder)
        config = artifact.read_config(path)
        try:
            experts_meta = config["experts"]
            names = [e["name"] for e in experts_meta]
            vocab, hidden = int(config["vocab_size"]), int(config["hidden_size"])
            settings = RouterConfig.from_dict(config["settings"])
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ArtifactError):
                raise
            raise ArtifactError(f"{path / artifact.CONFIG_FILE} is incomplete or malformed ({e!r})") from e
        if len(set(names)) != len(names) or len(names) < 2:
            raise ArtifactError(f"{path}: config.json lists experts {names}; need at least 2 unique names")
        d = len(names)
        where = str(path / artifact.ROUTER_FILE)
        tensors = artifact.read_tensors(path, artifact.ROUTER_FILE, config)
        logits = artifact.expect_shape(tensors, "logits", (vocab, d), where)
        weights = artifact.expect_shape(tensors, "weights", (hidden + 1, d), where)
        solution = artifact.expect_shape(tensors, "ridge_solution", (hidden + 1, d), where)
        stats = artifact.read_tensors(path, artifact.STATISTICS_FILE, config)
        where = str(path / artifact.STATISTICS_FILE)
        offsets = artifact.expect_shape(stats, "offsets", (d + 1,), where)
        num_texts = artifact.expect_shape(stats, "num_texts", (d,), where)
        nnz = int(offsets[-1]) if offsets.size else 0
        token_ids = artifact.expect_shape(stats, "token_ids", (nnz,), where)
        counts = artifact.expect_shape(stats, "counts", (nnz,), where)
        if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise ArtifactError(f"{where}: offsets are not a valid CSR index")
        if nnz and (token_ids.min() < 0 or token_ids.max() >= vocab):
            raise ArtifactError(f"{where}: token ids outside the vocabulary of {vocab}")
        text_grams = artifact.read_text_grams(stats, d, hidden, where)
        if any(g is not None for g in text_grams):
            artifact.check_text_statistics_spec(
                config.get("text_statistics"), str(path / artifact.CONFIG_FILE)
            )
        tokenizer_data = artifact.read_file_checked(path, artifact.TOKENIZER_FILE, config)
        try:
            tokenizer = tokenizers.Tokenizer.from_str(tokenizer_data.decode("utf-8"))
        except Exception as e:
            raise ArtifactError(f"{path / artifact.TOKENIZER_FILE} is not a valid tokenizer ({e})") from e
        tokenizer.no_truncation()
        tokenizer.no_padding()
        fingerprint = config.get("fingerprint") or {}
        tok_sha = artifact.file_sha256(tokenizer.to_str().encode("utf-8"))
        if fingerprint.get("tokenizer_sha256") and fingerprint["tokenizer_sha256"] != tok_sha:
            raise TokenizerMismatchError(
                f"{path / artifact.TOKENIZER_FILE} is not the tokenizer this router was fitted with "
                "(its sha256 differs from config.json's fingerprint); restore the original tokenizer.json"
            )
        if tokenizer.get_vocab_size(with_added_tokens=True) > vocab:
            raise TokenizerMismatchError(
                f"{path / artifact.TOKENIZER_FILE} has {tokenizer.get_vocab_size(with_added_tokens=True)} ids "
                f"but the route table has {vocab} rows: the tokenizer does not belong to this table"
            )

        router = cls(config=settings, device=device, progress=progress)
        router._embedding_source = config.get("embedding_source")
        router._fingerprint = fingerprint or None
        router._tokenizer = tokenizer
        router._excluded_ids = np.asarray(config.get("excluded_ids", []), np.int64)
        router._evaluation = config.get("evaluation")
        for i, meta in enumerate(experts_meta):
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            try:
                expert_counts = ExpertCounts(
                    token_ids[lo:hi], counts[lo:hi], int(num_texts[i]), text_grams[i]
                )
            except ValueError as e:
                raise ArtifactError(f"{where}: counts of expert {meta['name']!r} are invalid ({e})") from e
            router._experts[meta["name"]] = _Expert(expert_counts, meta.get("description", ""))
        table = RouteTable.from_logits(logits, router._excluded_ids)
        router._state = _RoutingState(tuple(names), table, weights, solution)
        if embeddings is not None:
            router._attach_embeddings(embeddings)
        return router

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
    ) -> Any:
        """Publish the router (artifact + model card) to a Hub model repo as one commit.

        Returns huggingface_hub's ``CommitInfo``. See :func:`ir3de.hub.push_router`.

        Example:
            >>> router.push_to_hub("org/my-router", private=True)       # doctest: +SKIP
            >>> Router.from_pretrained("org/my-router").route("2+2?")    # doctest: +SKIP
        """
        from .hub import push_router

        return push_router(
            self,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
        )

    def add_expert_from_stats(self, pack: Any, name: str | None = None, **hub_kwargs: Any) -> Router:
        """Add an expert from a stat pack (a :class:`ir3de.stat_pack.StatPack`, a folder or a Hub repo id).

        The pack's tokenizer/embedding fingerprint must equal the router's (else
        :class:`TokenizerMismatchError`). ``hub_kwargs``: ``revision``, ``token``, ``cache_dir``,
        ``local_files_only``, ``force_download``.

        Example:
            >>> router.add_expert_from_stats("org/legal-stat-pack")   # doctest: +SKIP
        """
        from .stat_pack import add_pack_to_router

        return add_pack_to_router(self, pack, name=name, **hub_kwargs)
