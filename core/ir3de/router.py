"""The public façade: fit, route, grow, save and load an IR3DE router.

:class:`Router` holds settings (:class:`~ir3de.config.RouterConfig`), the experts' statistics, an
immutable routing snapshot swapped whole under a lock, and delegates the work: counting, statistics,
solve and table compilation to :mod:`ir3de.fitting`; folders to :mod:`ir3de.persistence`; Hub
transport to :mod:`ir3de.hub`. Evaluation and stat-pack merging sit above it and use its public API.

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
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import fitting, persistence
from .calibration import evidence_scores
from .config import LEVELS, STATISTICS_SETTINGS, RouterConfig
from .decision import RouteDecision
from .errors import (
    EmptyPromptError,
    ExpertError,
    InvalidInputError,
    NotFittedError,
    TokenizerMismatchError,
    UnknownExpertError,
)
from .fitting import RoutingState, check_expert_name
from .sanitize import clean_text, clean_texts
from .selectors import Selection, explain_one, select_avg_one, select_batch, select_one
from .statistics import ExpertCounts, TrafficSummary
from .table import RouteTable

if TYPE_CHECKING:
    import tokenizers

    from .embeddings import TokenEmbeddings

__all__ = ["LEVELS", "Router", "RouterConfig"]

_PREFIX_CHARS_PER_TOKEN = 16  # tokenize at most this many chars per allowed token before the full text
_PREFIX_MARGIN_TOKENS = 16  # tokens past the cap that make a prefix's first tokens safe
_NO_IDS = np.zeros(0, np.int64)

_RoutingState = RoutingState  # the routing snapshot (defined with the pipeline that builds it)
_check_name = check_expert_name


@dataclass(frozen=True, eq=False)
class _Expert:
    counts: ExpertCounts
    description: str = ""
    traffic: ExpertCounts | None = None  # learned labelled prompts (Router.learn), its own block


class Router:
    """IR3DE: route each prompt to one of several domain experts with a per-token lookup table.

    Args:
        embeddings: tokenizer + input-embedding matrix used to fit (``TokenEmbeddings.default()``
            when omitted). Routing a loaded router needs only its tokenizer.
        config: a :class:`RouterConfig`; keyword overrides below win over it.
        device: where Gram products, the solve and table compilation run: ``"auto"`` (the GPU when
            torch sees one, decided at the first fit), ``"cpu"`` (numpy, no torch) or ``"cuda"``.
            Routing always runs on the CPU (a table lookup) and never imports torch.
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
        self._device_request = fitting.check_device(device)
        self._device: str | None = "cpu" if device == "cpu" else None
        self.batch_size = int(batch_size)
        self.progress = progress
        self._lock = threading.RLock()
        self._experts: dict[str, _Expert] = {}
        self._grams: dict[str, Any] = {}  # token Grams (numpy, or torch on a GPU), derived state
        self._traffic_grams: dict[str, Any] = {}  # token Grams of the traffic blocks, derived state
        self._state: RoutingState | None = None
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
    def device(self) -> str:
        """Where fitting runs (``"cpu"`` or ``"cuda[:N]"``); ``"auto"`` is resolved on first use."""
        if self._device is None:
            self._device = fitting.resolve_device(self._device_request)
        return self._device

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
        """Per-expert sparse token counts of the corpora (the router's sufficient statistics; learned
        traffic is kept apart, see :attr:`traffic_statistics`)."""
        return {name: e.counts for name, e in self._experts.items()}

    @property
    def descriptions(self) -> dict[str, str]:
        return {name: e.description for name, e in self._experts.items()}

    @property
    def snapshot(self) -> RoutingState:
        """The immutable routing state (experts, route table, weights) that routing reads right now.

        A refit or a change of experts swaps in a new snapshot; one read of this property gives a
        consistent set for as long as it is held.

        Example:
            >>> state = router.snapshot                      # doctest: +SKIP
            >>> state.experts, state.table.vocab_size        # doctest: +SKIP
            (('math', 'code'), 49152)
        """
        return self._require_state()

    @property
    def table(self) -> RouteTable:
        """The compiled route table (per vocabulary id: logits, entropy, vote)."""
        return self._require_state().table

    @property
    def weights(self) -> np.ndarray:
        """(h+1) × D weights the table was compiled from (bias in the last row)."""
        return self._require_state().weights

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The tokenizer + embedding fingerprint its statistics were counted with (stat packs check it).

        Example:
            >>> sorted(router.fingerprint)[:2]   # doctest: +SKIP
            ['embedding_sha256', 'hidden_size']
        """
        with self._lock:
            if self._fingerprint is None:
                self.embeddings  # noqa: B018 - loads the default embeddings and their fingerprint
            assert self._fingerprint is not None
            return dict(self._fingerprint)

    @property
    def embedding_source(self) -> dict[str, Any] | None:
        """Where the embedding matrix comes from (``TokenEmbeddings.source``), ``None`` if unknown."""
        return dict(self._embedding_source) if self._embedding_source else None

    @property
    def excluded_ids(self) -> np.ndarray:
        """Token ids that never count (special and padding tokens), int64."""
        return self._excluded_ids.copy()

    @property
    def evaluation(self) -> dict[str, Any] | None:
        """Evaluation figures saved with the router (see :func:`ir3de.evaluate.record_evaluation`);
        cleared by any change of experts."""
        return self._evaluation

    @evaluation.setter
    def evaluation(self, record: Mapping[str, Any] | None) -> None:
        with self._lock:
            self._evaluation = None if record is None else dict(record)

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
            self._traffic_grams = {}
            self._evaluation = None
            self._refresh()
        return self

    def fit_counts(
        self,
        counts: Mapping[str, ExpertCounts],
        descriptions: Mapping[str, str] | None = None,
        *,
        traffic: Mapping[str, ExpertCounts] | None = None,
    ) -> Router:
        """Fit from precomputed per-expert token counts (stat packs, a distributed count, shards).

        Equals :meth:`fit` on the texts the counts came from, provided they were counted with this
        router's tokenizer (see :func:`ir3de.fitting.count_texts`). ``traffic``: learned traffic
        blocks of some of the experts (as :meth:`learn_counts` takes them), set in the same solve.
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
            blocks = self._checked_traffic(traffic or {}, names)
            grams = {name: self._gram(c) for name, c in counts.items()} if self._token_level else {}
            traffic_grams = self._traffic_grams_of(blocks)
            experts = {n: _Expert(counts[n], descriptions.get(n, ""), blocks.get(n)) for n in names}
            self._commit(experts, grams, traffic_grams)
        return self

    def _checked_traffic(
        self, traffic: Mapping[str, ExpertCounts], experts: Sequence[str]
    ) -> dict[str, ExpertCounts]:
        """``traffic`` checked: known experts, :class:`ExpertCounts` on this router's embeddings."""
        if not isinstance(traffic, Mapping):
            raise InvalidInputError(
                f"traffic must map expert names to ExpertCounts, got {type(traffic).__name__}"
            )
        for name, block in traffic.items():
            if name not in experts:
                raise UnknownExpertError(f"traffic for unknown expert {name!r}; experts are {list(experts)}")
            if not isinstance(block, ExpertCounts):
                raise InvalidInputError(
                    f"traffic of expert {name!r} must be ExpertCounts, got {type(block).__name__}"
                )
            if block.num_tokens:
                self._check_counts(name, block)
        return dict(traffic)

    def _traffic_grams_of(self, blocks: Mapping[str, ExpertCounts]) -> dict[str, Any]:
        if not self._token_level:
            return {}
        return {n: self._gram(b) for n, b in blocks.items() if b.num_tokens}

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

    def add_expert_counts(
        self, name: str, counts: ExpertCounts, description: str = "", *, traffic: ExpertCounts | None = None
    ) -> Router:
        """Add an expert from precomputed token counts (a stat pack, a Ray job…) on the same tokenizer;
        ``traffic``: its learned traffic block, if any (one solve for both)."""
        _check_name(name)
        with self._lock:
            if name in self._experts:
                raise ExpertError(f"expert {name!r} already exists; remove it first or pick another name")
            self._check_counts(name, counts)
            blocks = self._checked_traffic({name: traffic} if traffic is not None else {}, [name])
            self._ensure_grams()
            experts, grams = dict(self._experts), dict(self._grams)
            experts[name] = _Expert(counts, description, traffic)
            if self._token_level:
                grams[name] = self._gram(counts)
            self._commit(experts, grams, {**self._traffic_grams, **self._traffic_grams_of(blocks)})
        return self

    def update_expert(self, name: str, more_texts: Iterable[str]) -> Router:
        """Add more text to an existing expert (counts add exactly), then re-solve."""
        with self._lock:
            old = self._get_expert(name)
            delta = self._count(name, more_texts)
            self._ensure_grams()
            experts, grams = dict(self._experts), dict(self._grams)
            experts[name] = _Expert(old.counts + delta, old.description, old.traffic)
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
            traffic_grams = {n: g for n, g in self._traffic_grams.items() if n != name}
            self._commit(experts, grams, traffic_grams)
        return self

    def configure(self, **settings: Any) -> Router:
        """Change settings. Routing-only settings (selector, k, combine, max_tokens, fallback,
        threshold, temperature) apply at once; ``level``, λ, ``column_norm``, ``balance``,
        ``traffic_weight`` and ``traffic_policy`` re-solve from the statistics (no text is re-read).

        Example:
            >>> router.configure(level="token", selector="topk", k=50)   # doctest: +SKIP
        """
        with self._lock:
            new = dataclasses.replace(self.config, **settings)
            resolve = any(getattr(new, f) != getattr(self.config, f) for f in STATISTICS_SETTINGS)
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

    def _commit(
        self, experts: dict[str, _Expert], grams: dict[str, Any], traffic_grams: dict[str, Any] | None = None
    ) -> None:
        previous = (self._experts, self._grams, self._traffic_grams, self._evaluation)
        self._experts, self._grams = experts, grams
        if traffic_grams is not None:
            self._traffic_grams = traffic_grams
        try:
            self._evaluation = None
            self._refresh()
        except BaseException:
            self._experts, self._grams, self._traffic_grams, self._evaluation = previous
            raise

    def _get_expert(self, name: str) -> _Expert:
        if name not in self._experts:
            raise UnknownExpertError(f"unknown expert {name!r}; experts are {self.experts}")
        return self._experts[name]

    def _check_counts(self, name: str, counts: ExpertCounts) -> None:
        emb = self.embeddings
        fitting.check_counts(
            name, counts, vocab_size=emb.vocab_size, hidden_size=emb.hidden_size, level=self.config.level
        )

    def _count(self, name: str, texts: Iterable[str]) -> ExpertCounts:
        emb = self.embeddings
        counts = fitting.count_texts(
            texts,
            tokenizer=emb.tokenizer,
            vocab_size=emb.vocab_size,
            excluded_ids=emb.excluded_ids,
            # text Grams cost a gather per token: computed when this router fits at text level
            embedding_matrix=emb.matrix if self.config.level == "text" else None,
            name=name,
            batch_size=self.batch_size,
            progress=self.progress,
        )
        self._check_counts(name, counts)
        return counts

    def _gram(self, counts: ExpertCounts) -> Any:
        return fitting.token_gram(self.embeddings.matrix, counts, device=self.device)

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
            if expert.traffic is not None and expert.traffic.num_tokens and name not in self._traffic_grams:
                self._traffic_grams[name] = self._gram(expert.traffic)

    def _traffic_arguments(self, names: Sequence[str]) -> dict[str, Any]:
        """The traffic keyword arguments of :func:`ir3de.fitting.level_statistics` for ``names``."""
        blocks = [self._experts[n].traffic for n in names]
        if all(b is None for b in blocks):
            return {}
        return {
            "traffic": blocks,
            "traffic_grams": [self._traffic_grams.get(n) for n in names] if self._token_level else None,
            "traffic_weight": self.config.traffic_weight,
            "traffic_policy": self.config.traffic_policy,
        }

    def _level_statistics(self, names: Sequence[str]) -> tuple[Any, Any]:
        """``A`` and ``B`` of the configured level and weighting (numpy, or torch on a GPU)."""
        return fitting.level_statistics(
            [self._experts[n].counts for n in names],
            level=self.config.level,
            balance=self.config.balance,
            token_grams=[self._grams[n] for n in names] if self._token_level else None,
            names=names,
            device=self.device,
            **self._traffic_arguments(names),
        )

    def ridge_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The ridge statistics ``A`` ((h+1)²) and ``B`` ((h+1) × D) of the current experts and weighting,
        as float64 numpy arrays (e.g. for a λ sweep with :class:`ir3de.solve.RidgePath`)."""
        with self._lock:
            self._require_state()
            self._ensure_grams()
            a, b = self._level_statistics(tuple(self._experts))
            return fitting.to_numpy(a), fitting.to_numpy(b)

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
        c = self.config
        self._state = fitting.fit_state(
            names,
            [self._experts[n].counts for n in names],
            matrix=self.embeddings.matrix,
            excluded_ids=self._excluded_ids,
            level=c.level,
            lam=c.lam,
            balance=c.balance,
            column_norm=c.column_norm,
            token_grams=[self._grams[n] for n in names] if self._token_level else None,
            device=self.device,
            **self._traffic_arguments(names),
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
        texts = clean_texts(texts)  # lone surrogates -> U+FFFD (ir3de.sanitize)
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
        text = clean_text(text)  # lone surrogates -> U+FFFD (ir3de.sanitize)
        head = self._prompt_head(text)
        ids = self._capped_ids(text, head, self.tokenizer.encode(head, add_special_tokens=False).ids)
        if config.selector == "avg":  # the defaults: one fused lookup; the deciding tokens on demand
            table = state.table
            winner, scores, n = select_avg_one(ids, table, config.effective_temperature)
            scores = evidence_scores(scores, n, config.effective_evidence_tokens)
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
        scores = evidence_scores(scores, n, config.effective_evidence_tokens)
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
        sel = select_batch(
            ids,
            lengths,
            state.table,
            selector=config.selector,
            k=config.k,
            combine=config.combine,
            temperature=config.effective_temperature,
            explain=explain,
        )
        n0 = config.effective_evidence_tokens
        if n0:  # few countable tokens → scores shrink toward uniform (winners unchanged)
            sel = dataclasses.replace(sel, scores=evidence_scores(sel.scores, sel.num_countable, n0))
        return sel

    def calibrate(self, held_out: Mapping[str, Sequence[str]]) -> float:
        """Fit ``temperature`` on labelled held-out prompts so that confidence means probability.

        Minimises the negative log-likelihood of the true experts under
        ``softmax(evidence · n / (n + n0) / T)`` over the temperature ``T`` and the evidence prior
        ``n0`` of prompts with ``n`` countable tokens (:func:`ir3de.calibration.fit_confidence`; both
        are set in ``router.config``); the route of every prompt is unchanged. Needs
        ``combine="logprob"`` or ``selector="avg"`` (vote shares have no temperature).

        Returns:
            The fitted temperature, also set in ``router.config`` (and saved with the router).

        Example:
            >>> router.calibrate({"math": math_dev, "code": code_dev})   # doctest: +SKIP
            14.2
        """
        from .calibration import fit_confidence, labelled_prompts

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
        if not keep.any():
            raise ValueError("calibration needs held-out prompts with countable tokens")
        temperature, n0 = fit_confidence(sel.evidence[keep], sel.num_countable[keep], labels[keep])
        self.configure(temperature=temperature, evidence_tokens=n0)
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
        use_fallback = config.fallback is not None and confidence < config.threshold_for(top)
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

    # ------------------------------------------------------------------ artifact (ModelHubMixin-style hooks)
    def _to_data(self) -> persistence.RouterData:
        """What :mod:`ir3de.persistence` writes: settings, snapshot, statistics, tokenizer, provenance."""
        with self._lock:
            state = self._require_state()
            return persistence.RouterData(
                config=self.config,
                state=state,
                counts={n: self._experts[n].counts for n in state.experts},
                traffic={n: t for n in state.experts if (t := self._experts[n].traffic) is not None},
                descriptions={n: self._experts[n].description for n in state.experts},
                tokenizer=self.tokenizer,
                embedding_source=self._embedding_source,
                fingerprint=self._fingerprint,
                excluded_ids=self._excluded_ids,
                evaluation=self._evaluation,
            )

    def config_dict(self) -> dict[str, Any]:
        """The ``config.json`` content (without file checksums)."""
        return persistence.router_config_dict(self._to_data())

    def _save_pretrained(self, save_directory: Path) -> Path:
        return persistence.save_router(save_directory, self._to_data())

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the router to ``folder`` atomically (a failure leaves any previous artifact intact).

        Example:
            >>> router.save_pretrained("my-router")                   # doctest: +SKIP
            >>> Router.from_pretrained("my-router").route("2+2?").expert  # doctest: +SKIP
        """
        return self._save_pretrained(Path(folder))

    @classmethod
    def _from_pretrained(
        cls,
        folder: Path,
        *,
        embeddings: TokenEmbeddings | None = None,
        device: str = "auto",
        progress: bool | None = None,
    ) -> Router:
        data = persistence.load_router(folder)
        router = cls(config=data.config, device=device, progress=progress)
        router._embedding_source = data.embedding_source
        router._fingerprint = data.fingerprint
        router._tokenizer = data.tokenizer
        router._excluded_ids = data.excluded_ids
        router._evaluation = data.evaluation
        router._experts = {
            n: _Expert(data.counts[n], data.descriptions.get(n, ""), data.traffic.get(n))
            for n in data.state.experts
        }
        router._state = data.state
        if embeddings is not None:
            router._attach_embeddings(embeddings)
        return router

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

        Routing needs only the folder (and never imports torch). Growing (``add_expert``…) loads the
        embedding matrix from the source recorded in ``config.json``, or from ``embeddings`` when given
        (checked to match).

        Raises:
            ArtifactError: missing, truncated or corrupted files, or inconsistent shapes.
            ArtifactVersionError: written by a newer format version.
            TokenizerMismatchError: the tokenizer does not match the table.
        """
        from .hub import resolve_router_folder

        resolved = resolve_router_folder(
            folder,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        return cls._from_pretrained(Path(resolved), embeddings=embeddings, device=device, progress=progress)

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

        Saves to a temporary folder and uploads it with :func:`ir3de.hub.push_folder`. Returns
        huggingface_hub's ``CommitInfo``.

        Example:
            >>> router.push_to_hub("org/my-router", private=True)       # doctest: +SKIP
            >>> Router.from_pretrained("org/my-router").route("2+2?")    # doctest: +SKIP
        """
        from .hub import push_saved

        return push_saved(
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
        if isinstance(pack, (str, os.PathLike)):
            from .hub import resolve_folder

            pack = persistence.load_pack(resolve_folder(pack, kind="stat_pack", **hub_kwargs).folder)
        elif not isinstance(pack, persistence.PackData):
            raise TypeError(f"expected a StatPack, a folder or a Hub repo id, got {type(pack).__name__}")
        pack.check_compatible(self.fingerprint, "the router")
        return self.add_expert_counts(
            name or pack.name, pack.counts, pack.description, traffic=getattr(pack, "traffic", None)
        )

    # ------------------------------------------------------------------ learning from traffic
    def learn(
        self,
        prompts: Iterable[str] | Mapping[str, Iterable[str]] | Any,
        experts: str | Iterable[str] | None = None,
        *,
        create_experts: bool = False,
    ) -> Router:
        """Learn served prompts with their correct expert: they join that expert's *traffic* block.

        Traffic is counted exactly like a corpus (text Gram of the prompts and their token histogram)
        but kept apart from the corpus statistics, weighted by ``config.traffic_weight`` /
        ``traffic_policy``, listed by :attr:`traffic` and taken out again by :meth:`forget_traffic`.
        Learning costs one count of the prompts, one (h+1)² solve and a table compile: no corpus
        text is re-read. The same prompts learned in any order or split give the same router (up to
        float64 rounding of the Gram sums). Thread-safe: routing threads see the old table or the
        new one, never a mix.

        Args:
            prompts: the prompts, with ``experts`` one name per prompt (or one name for all); or a
                mapping ``{expert: prompts}``; or a :class:`ir3de.labelled.LabelledData`.
            experts: the correct expert of each prompt.
            create_experts: a label that is not an expert becomes a new expert whose corpus is its
                prompts (an expert needs a corpus to be weighed against; later prompts are traffic).
                Without it, such a label raises :class:`UnknownExpertError` listing the experts.

        Example:
            >>> router.learn(["How do I file my taxes?", "def f(x):"], ["finance", "code"])   # doctest: +SKIP
            >>> router.traffic["finance"].num_prompts                                        # doctest: +SKIP
            1
        """
        from .labelled import group_prompts

        groups = group_prompts(prompts, experts)
        return self._learn_groups(groups, create_experts=create_experts)

    def feedback(self, prompt: str, expert: str, *, create_experts: bool = False) -> Router:
        """Learn one served prompt with its correct expert (:meth:`learn` of one prompt).

        Example:
            >>> router.feedback("What is a stanza?", "poetry")   # doctest: +SKIP
        """
        if not isinstance(prompt, str):
            raise InvalidInputError(f"the prompt is a {type(prompt).__name__}; prompts must be str")
        if not isinstance(expert, str):
            raise InvalidInputError(f"the expert is a {type(expert).__name__}; expert names are str")
        return self.learn([prompt], [expert], create_experts=create_experts)

    def learn_counts(self, counts: Mapping[str, ExpertCounts], *, create_experts: bool = False) -> Router:
        """Add precomputed traffic blocks (counted like :meth:`learn` does: stat packs, Ray shards).

        Equals :meth:`learn` on the prompts the counts came from, provided they were counted with this
        router's tokenizer and embedding matrix (:func:`ir3de.fitting.count_texts` with the matrix).
        """
        if not isinstance(counts, Mapping):
            raise InvalidInputError(
                f"learn_counts takes a mapping expert name → ExpertCounts, got {type(counts).__name__}"
            )
        for name, c in counts.items():
            _check_name(name)
            if not isinstance(c, ExpertCounts):
                raise InvalidInputError(
                    f"traffic of expert {name!r} must be ExpertCounts, got {type(c).__name__}"
                )
        return self._learn_groups(dict(counts), create_experts=create_experts)

    def _count_traffic(self, name: str, prompts: Sequence[str]) -> ExpertCounts:
        emb = self.embeddings
        return fitting.count_texts(
            prompts,
            tokenizer=emb.tokenizer,
            vocab_size=emb.vocab_size,
            excluded_ids=emb.excluded_ids,
            embedding_matrix=emb.matrix,  # traffic is small: always both levels' statistics
            name=name,
            batch_size=self.batch_size,
            progress=False,
        )

    def _learn_groups(self, groups: Mapping[str, Any], *, create_experts: bool) -> Router:
        """``groups``: expert → prompts (lists of str) or → ExpertCounts (precomputed traffic)."""
        from .labelled import check_labels

        with self._lock:
            self._require_state()
            new = check_labels(groups, self.experts, create=create_experts)
            self._ensure_grams()
            experts, grams = dict(self._experts), dict(self._grams)
            traffic_grams = dict(self._traffic_grams)
            for name, items in groups.items():
                if name in new:
                    corpus = items if isinstance(items, ExpertCounts) else self._count(name, items)
                    self._check_counts(name, corpus)  # (again, for precomputed counts)
                    experts[name] = _Expert(corpus)
                    if self._token_level:
                        grams[name] = self._gram(corpus)
                    continue
                delta = items if isinstance(items, ExpertCounts) else self._count_traffic(name, items)
                if delta.num_tokens:
                    self._check_counts(name, delta)
                old = experts[name]
                block = delta if old.traffic is None else old.traffic + delta
                experts[name] = dataclasses.replace(old, traffic=block)
                if self._token_level and block.num_tokens:
                    traffic_grams[name] = self._gram(block)
            self._commit(experts, grams, traffic_grams)
        return self

    def forget_traffic(self, expert: str | None = None) -> Router:
        """Forget the learned traffic of one expert (or of all with ``None``) and re-solve.

        Exact: forgetting all traffic gives back, bit for bit, the table and weights the router had
        before it learned anything. Costs one solve and a table compile.

        Example:
            >>> router.forget_traffic("finance")   # doctest: +SKIP
            >>> router.forget_traffic()            # all experts
        """
        with self._lock:
            if expert is not None:
                self._get_expert(expert)
            names = list(self._experts) if expert is None else [expert]
            if all(self._experts[n].traffic is None for n in names):
                return self
            self._ensure_grams()  # token Grams are derived state (not loaded with the folder)
            experts = {
                n: dataclasses.replace(e, traffic=None) if n in names else e for n, e in self._experts.items()
            }
            traffic_grams = {n: g for n, g in self._traffic_grams.items() if n not in names}
            self._commit(experts, dict(self._grams), traffic_grams)
        return self

    @property
    def traffic(self) -> dict[str, TrafficSummary]:
        """Per expert with learned traffic: prompts, tokens, and the weight the fit gives them.

        Example:
            >>> {n: (s.num_prompts, s.row_weight) for n, s in router.traffic.items()}   # doctest: +SKIP
            {'finance': (12, 30.0)}
        """
        with self._lock:
            names = list(self._experts)
            return fitting.traffic_summaries(
                names,
                [self._experts[n].counts for n in names],
                [self._experts[n].traffic for n in names],
                level=self.config.level,
                balance=self.config.balance,
                traffic_weight=self.config.traffic_weight,
                traffic_policy=self.config.traffic_policy,
            )

    @property
    def traffic_statistics(self) -> dict[str, ExpertCounts]:
        """Per expert with learned traffic: its traffic block (token histogram and text Gram)."""
        return {n: e.traffic for n, e in self._experts.items() if e.traffic is not None}

    def route_conversation(
        self,
        messages: Sequence[Any],
        *,
        previous_expert: str | None = None,
        half_life: float | None = None,
        user_weight: float | None = None,
        assistant_weight: float | None = None,
        include_system: bool | None = None,
        margin: float | None = None,
        settings: Any = None,
    ) -> Any:
        """Route a multi-turn chat: decayed per-turn evidence, role weights and stickiness.

        ``messages`` are ``{"role", "content"}`` dicts or ``(role, content)`` pairs; options left
        ``None`` take ``settings`` (a :class:`ir3de.conversation.ConversationSettings`) or the measured
        defaults. Returns a :class:`ir3de.conversation.ConversationDecision` (a ``RouteDecision`` that
        also says whether it switched from ``previous_expert`` and why). See :mod:`ir3de.conversation`.

        Example:
            >>> chat = [("user", "Solve 3x + 5 = 11"), ("ai", "x = 2"), ("user", "why?")]   # doctest: +SKIP
            >>> router.route_conversation(chat, previous_expert="math").switched            # doctest: +SKIP
            False
        """
        from .conversation import route_conversation

        return route_conversation(
            self,
            messages,
            previous_expert=previous_expert,
            settings=settings,
            half_life=half_life,
            user_weight=user_weight,
            assistant_weight=assistant_weight,
            include_system=include_system,
            margin=margin,
        )

    def tune(
        self,
        held_out: Mapping[str, Sequence[str]],
        target_precision: float = 0.95,
        *,
        per_expert: bool = False,
        abstain: str | None = None,
    ) -> Any:
        """Choose temperature, evidence prior and abstain threshold(s) so that the prompts routed
        (not sent to the fallback) reach ``target_precision`` on labelled held-out prompts.

        The temperature and evidence prior are fitted by :meth:`calibrate` (skipped for vote shares);
        then the threshold that routes the most prompts at ≥ target precision is chosen
        (:func:`ir3de.calibration.choose_thresholds`; one per expert with ``per_expert``). Everything
        is set in ``router.config`` and saved with the router. Routes of confident prompts never
        change; the others go to the fallback.

        Args:
            held_out: expert name → labelled prompts not used in fitting.
            target_precision: in (0, 1].
            per_expert: one threshold per expert (each expert's routed prompts reach the target).
            abstain: the fallback name; needed when the router has no ``fallback`` yet.

        Returns:
            A :class:`ir3de.calibration.TuningResult` (temperature, threshold(s), precision,
            coverage, n) measured on ``held_out``.

        Example:
            >>> r = router.tune(dev, target_precision=0.95, abstain="general")   # doctest: +SKIP
            >>> r.precision, r.coverage                                         # doctest: +SKIP
            (0.951, 0.83)
        """
        from .calibration import TuningResult, choose_thresholds, labelled_prompts

        fallback = abstain if abstain is not None else self.config.fallback
        if fallback is None:
            raise InvalidInputError(
                "tune sends prompts below the threshold to a fallback, and this router has none: pass "
                "abstain='general' (any name) or configure(fallback=...)"
            )
        if not isinstance(target_precision, (int, float)) or not 0.0 < target_precision <= 1.0:
            raise InvalidInputError(f"target_precision must be in (0, 1], got {target_precision!r}")
        state = self._require_state()
        prompts, labels = labelled_prompts(state.experts, held_out)
        if not prompts:
            raise InvalidInputError("tune needs labelled held-out prompts; got none")
        with self._lock:
            vote = self.config.combine == "vote" and self.config.selector != "avg"
            if not vote:
                self.calibrate(held_out)
            ids, lengths = self.encode(prompts)
            sel = self._select(state, self.config, ids, lengths)
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
            self.configure(fallback=fallback, threshold=threshold, thresholds=thresholds)
            config = self.config
        return TuningResult(
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
