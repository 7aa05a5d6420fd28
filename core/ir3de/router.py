"""The public façade: fit, route, grow, save and load an IR3DE router.

:class:`Router` holds settings (:class:`~ir3de.config.RouterConfig`), the experts' statistics
(:class:`~ir3de.fitting.pipeline.ExpertStatistics`) and an immutable routing snapshot, swapped whole under a
lock; every method takes the lock, calls a function of the module of its concept and commits the
result: :mod:`ir3de.fitting.pipeline` (counts → statistics → solve → table), :mod:`ir3de.routing.prompts` (a prompt
or a batch through the snapshot), :mod:`ir3de.fitting.traffic` (learning from traffic), :mod:`ir3de.routing.tuning`
(calibration, abstain thresholds), :mod:`ir3de.routing.conversation`, :mod:`ir3de.artifacts.folders` (folders)
and :mod:`ir3de.artifacts.hub` (Hub transport). Evaluation and stat packs sit above it, on its public API.

Example:
    >>> from ir3de import Router, TokenEmbeddings                   # doctest: +SKIP
    >>> router = Router(embeddings=TokenEmbeddings.default())
    >>> router.fit({"math": math_texts, "code": code_texts})
    >>> router.route("Solve 3x + 5 = 11").expert
    'math'
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ir3de.artifacts import folders as persistence
from ir3de.config import LEVELS, STATISTICS_SETTINGS, RouterConfig
from ir3de.decision import RouteDecision
from ir3de.errors import ExpertError, InvalidInputError, NotFittedError, UnknownExpertError
from ir3de.fitting import pipeline as fitting
from ir3de.fitting import traffic as _traffic
from ir3de.fitting.pipeline import ExpertStatistics, RoutingState
from ir3de.fitting.statistics import ExpertCounts, TrafficSummary
from ir3de.routing import prompts as routing
from ir3de.routing import tuning
from ir3de.table import RouteTable

if TYPE_CHECKING:
    import tokenizers

    from ir3de.embeddings import TokenEmbeddings
    from ir3de.routing.calibration import TuningResult
    from ir3de.routing.conversation import ConversationDecision

__all__ = ["LEVELS", "Router", "RouterConfig"]

_Expert = ExpertStatistics  # one expert: corpus counts, description, traffic block, derived token Grams


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
        self._experts: dict[str, ExpertStatistics] = {}  # swapped whole with the snapshot (_commit)
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
        fitting.check_embeddings(self._fingerprint, fingerprint, self._embedding_source)
        self._embeddings, self._embedding_source = embeddings, dict(embeddings.source)
        self._fingerprint, self._tokenizer = fingerprint, embeddings.tokenizer
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
                from ir3de.embeddings import TokenEmbeddings

                source = self._embedding_source
                self._attach_embeddings(
                    TokenEmbeddings.default() if source is None else TokenEmbeddings.from_source(source)
                )
            assert self._embeddings is not None
            return self._embeddings

    @property
    def tokenizer(self) -> tokenizers.Tokenizer:
        return self.embeddings.tokenizer if self._tokenizer is None else self._tokenizer

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
        """Per-expert sparse token counts of the corpora (learned traffic: :attr:`traffic_statistics`)."""
        return {name: e.counts for name, e in self._experts.items()}

    @property
    def descriptions(self) -> dict[str, str]:
        return {name: e.description for name, e in self._experts.items()}

    @property
    def snapshot(self) -> RoutingState:
        """The immutable routing state (experts, route table, weights) that routing reads right now; a
        change swaps in a new one, so one read gives a consistent set for as long as it is held.

        Example:
            >>> router.snapshot.experts, router.snapshot.table.vocab_size   # doctest: +SKIP
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
        """The tokenizer + embedding fingerprint its statistics were counted with (stat packs check it)."""
        with self._lock:
            if self._fingerprint is None:
                self.embeddings  # noqa: B018 - loads the default embeddings and their fingerprint
            return dict(self._fingerprint or {})

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
        """Evaluation figures saved with the router (:func:`ir3de.evaluation.evaluate.record_evaluation`); cleared
        by any change of experts."""
        return self._evaluation

    @evaluation.setter
    def evaluation(self, record: Mapping[str, Any] | None) -> None:
        with self._lock:
            self._evaluation = None if record is None else dict(record)

    def __repr__(self) -> str:
        return f"Router(experts=[{', '.join(self._experts) or 'not fitted'}], {self.config})"

    # ------------------------------------------------------------------ fitting (ir3de.fitting.pipeline)
    def fit(
        self, experts: Mapping[str, Iterable[str]], descriptions: Mapping[str, str] | None = None
    ) -> Router:
        """Count every expert's texts (name → any iterable of strings), solve, compile the route table;
        replaces any previous fit. ``descriptions``: name → one line (model card). Returns ``self``.

        Example:
            >>> router = Router(emb).fit({"math": math_texts, "code": code_texts})   # doctest: +SKIP
        """
        names = fitting.check_experts(experts, "fit")
        descriptions = dict(descriptions or {})
        if unknown := set(descriptions) - set(names):
            raise UnknownExpertError(
                f"descriptions for unknown experts {sorted(unknown)}; experts are {names}"
            )
        with self._lock:
            counted = {name: self._count(name, texts) for name, texts in experts.items()}
            self._commit({n: _Expert(counted[n], descriptions.get(n, "")) for n in names})
        return self

    def fit_counts(
        self,
        counts: Mapping[str, ExpertCounts],
        descriptions: Mapping[str, str] | None = None,
        *,
        traffic: Mapping[str, ExpertCounts] | None = None,
    ) -> Router:
        """Fit from precomputed token counts (stat packs, shards; counted with this router's tokenizer,
        it equals :meth:`fit` on their texts) and learned ``traffic`` blocks of some experts.

        Example:
            >>> Router(emb).fit_counts(router.statistics, traffic=router.traffic_statistics)   # doctest: +SKIP
        """
        names = fitting.check_experts(counts, "fit_counts", "ExpertCounts")
        descriptions = dict(descriptions or {})
        with self._lock:
            for name, c in counts.items():
                self._check_counts(name, c)
            blocks = _traffic.check_traffic(traffic or {}, names, self._check_counts)
            self._commit({n: _Expert(counts[n], descriptions.get(n, ""), blocks.get(n)) for n in names})
        return self

    def add_expert(self, name: str, texts: Iterable[str], description: str = "") -> Router:
        """Add one expert: count its texts, add its statistics, re-solve. Equals a from-scratch fit.

        Example:
            >>> router.add_expert("legal", legal_texts, description="contracts and case law")  # doctest: +SKIP
        """
        hint = f"use update_expert({name!r}, more_texts) to add text to it or remove_expert first"
        with self._lock:
            fitting.check_new_expert(name, self._experts, hint)
            return self.add_expert_counts(name, self._count(name, texts), description)

    def add_expert_counts(
        self, name: str, counts: ExpertCounts, description: str = "", *, traffic: ExpertCounts | None = None
    ) -> Router:
        """Add an expert from precomputed token counts (a stat pack, a Ray job…) on the same tokenizer,
        and its learned ``traffic`` block, if any (one solve for both).

        Example:
            >>> router.add_expert_counts("legal", pack.counts, "contracts")   # doctest: +SKIP
        """
        with self._lock:
            fitting.check_new_expert(name, self._experts, "remove it first or pick another name")
            self._check_counts(name, counts)
            block = _traffic.check_traffic(
                {} if traffic is None else {name: traffic}, [name], self._check_counts
            )
            self._commit({**self._experts, name: _Expert(counts, description, block.get(name))})
        return self

    def update_expert(self, name: str, more_texts: Iterable[str]) -> Router:
        """Add more text to an existing expert (counts add exactly), then re-solve.

        Example:
            >>> router.update_expert("math", more_math_texts)   # doctest: +SKIP
        """
        with self._lock:
            old, delta = self._get_expert(name), self._count(name, more_texts)
            grown = fitting.grown(old, delta, self.embeddings.matrix, device=self.device)
            self._commit({**self._experts, name: grown})
        return self

    def remove_expert(self, name: str) -> Router:
        """Drop an expert's column and re-solve. At least two experts must remain.

        Example:
            >>> router.remove_expert("legal")   # doctest: +SKIP
        """
        with self._lock:
            self._get_expert(name)
            if len(self._experts) <= 2:
                raise ExpertError(
                    f"cannot remove {name!r}: a router needs at least 2 experts and has {self.experts}"
                )
            self._commit({n: e for n, e in self._experts.items() if n != name})
        return self

    def configure(self, **settings: Any) -> Router:
        """Change settings: routing-only ones (selector, k, combine, max_tokens, fallback, threshold,
        temperature) apply at once; ``level``, λ, ``column_norm``, ``balance``, ``traffic_weight`` and
        ``traffic_policy`` re-solve from the statistics (no text is re-read).

        Example:
            >>> router.configure(level="token", selector="topk", k=50)   # doctest: +SKIP
        """
        with self._lock:
            new = dataclasses.replace(self.config, **settings)
            if self._state is not None and any(
                getattr(new, f) != getattr(self.config, f) for f in STATISTICS_SETTINGS
            ):
                self._commit(self._experts, new)
            self.config = new
        return self

    def ridge_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The ridge statistics ``A`` ((h+1)²) and ``B`` ((h+1) × D) of the experts and weighting, as
        float64 numpy arrays (e.g. for a λ sweep with :class:`ir3de.fitting.solve.RidgePath`).

        Example:
            >>> a, b = router.ridge_statistics()   # doctest: +SKIP
        """
        with self._lock:
            self._require_state()
            self._experts = experts = self._with_grams(self._experts, self.config)
            a, b = fitting.experts_statistics(experts, self.config, device=self.device)
            return fitting.to_numpy(a), fitting.to_numpy(b)

    def select_lambda(self, lams: Sequence[float] | None = None, *, apply: bool = True) -> float:
        """Choose λ among ``lams`` (default: 25 from 1e-4 to 1e2) by generalised cross-validation on the
        statistics (:func:`ir3de.fitting.pipeline.gcv_lambda`; meaningful at ``level="text"``) and, with
        ``apply``, re-solve at it.

        Example:
            >>> router.select_lambda()   # doctest: +SKIP
            0.05623413251903491
        """
        grid = fitting.lambda_grid(lams)
        best = fitting.gcv_lambda(*self.ridge_statistics(), grid)
        if apply:
            self.configure(lam=best)
        return best

    def _commit(self, experts: Mapping[str, ExpertStatistics], config: RouterConfig | None = None) -> None:
        """Solve ``experts`` under ``config`` (default: the current one), then swap experts and snapshot
        in together (a failure changes nothing). New experts clear the evaluation; new settings keep it."""
        target = config if config is not None else self.config
        experts = self._with_grams(experts, target)
        matrix, excluded = self.embeddings.matrix, self._excluded_ids
        state = fitting.experts_state(
            experts, target, matrix=matrix, excluded_ids=excluded, device=self.device
        )
        self._experts, self._state = experts, state
        if config is None:
            self._evaluation = None

    def _with_grams(
        self, experts: Mapping[str, ExpertStatistics], config: RouterConfig
    ) -> dict[str, ExpertStatistics]:
        if config.level != "token":  # text-level fits read the text Grams stored with the counts
            return dict(experts)
        return fitting.with_grams(experts, self.embeddings.matrix, device=self.device)

    def _get_expert(self, name: str) -> ExpertStatistics:
        if name not in self._experts:
            raise UnknownExpertError(f"unknown expert {name!r}; experts are {self.experts}")
        return self._experts[name]

    def _check_counts(self, name: str, counts: ExpertCounts) -> None:
        emb, level = self.embeddings, self.config.level
        fitting.check_counts(
            name, counts, vocab_size=emb.vocab_size, hidden_size=emb.hidden_size, level=level
        )

    def _count(self, name: str, texts: Iterable[str]) -> ExpertCounts:
        emb, level = self.embeddings, self.config.level
        return fitting.count_expert(
            emb, texts, name=name, level=level, batch_size=self.batch_size, progress=self.progress
        )

    # ------------------------------------------------------------------ routing (ir3de.routing.prompts, ir3de.routing.tuning)
    def _require_state(self) -> RoutingState:
        state = self._state
        if state is None:
            raise NotFittedError(
                "the router is not fitted: call fit({...}) or Router.from_pretrained(folder)"
            )
        return state

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize prompts as routing does (first ``max_tokens`` tokens): flat ids and lengths.

        Example:
            >>> ids, lengths = router.encode(["2+2?", "def f():"])   # doctest: +SKIP
        """
        return routing.encode_prompts(self.tokenizer, texts, self.config.max_tokens)

    def route(self, text: str) -> RouteDecision:
        """Route one prompt (:func:`ir3de.routing.prompts.route_one`): ``expert``, ``confidence``, ``scores``,
        ``tokens``. Raises :class:`EmptyPromptError` for no countable token and no ``fallback``.

        Example:
            >>> router.route("Solve 3x + 5 = 11").expert   # doctest: +SKIP
            'math'
        """
        if not isinstance(text, str):
            routing.check_prompt(text)
        return routing.route_one(self._require_state(), self.config, self.tokenizer, text)

    def route_batch(self, texts: Sequence[str]) -> list[RouteDecision]:
        """Route many prompts at once (vectorised); decisions come back in the same order.

        Example:
            >>> [d.expert for d in router.route_batch(["2+2?", "def f():"])]   # doctest: +SKIP
            ['math', 'code']
        """
        texts = routing.check_prompts(texts)
        return routing.route_batch(self._require_state(), self.config, self.tokenizer, texts)

    def route_indices(self, texts: Sequence[str]) -> np.ndarray:
        """Expert index per prompt (``-1``: no countable token), no decision objects, no fallback: the
        fastest path, for evaluation and bulk routing.

        Example:
            >>> router.route_indices(["2+2?", "def f():"])   # doctest: +SKIP
            array([0, 1])
        """
        return routing.route_indices(self._require_state(), self.config, self.tokenizer, texts)

    def calibrate(self, held_out: Mapping[str, Sequence[str]]) -> float:
        """Fit ``temperature`` and the evidence prior on labelled held-out prompts so that confidence
        means probability (:func:`ir3de.routing.tuning.calibrate`; routes never change); set in ``config``.

        Example:
            >>> router.calibrate({"math": math_dev, "code": code_dev})   # doctest: +SKIP
            14.2
        """
        with self._lock:
            temperature, n0 = tuning.calibrate(self._require_state(), self.config, self.tokenizer, held_out)
            self.configure(temperature=temperature, evidence_tokens=n0)
        return temperature

    # ------------------------------------------------------------------ artifact (ModelHubMixin-style hooks)
    def _to_data(self) -> persistence.RouterData:
        """What :mod:`ir3de.artifacts.folders` writes: settings, snapshot, statistics, tokenizer, provenance."""
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
        in other Hugging Face libraries (see :mod:`ir3de.artifacts.hub`).

        Routing needs only the folder (and never imports torch). Growing (``add_expert``…) loads the
        embedding matrix from the source recorded in ``config.json``, or from ``embeddings`` when given
        (checked to match).

        Raises:
            ArtifactError: missing, truncated or corrupted files, or inconsistent shapes.
            ArtifactVersionError: written by a newer format version.
            TokenizerMismatchError: the tokenizer does not match the table.
        """
        from ir3de.artifacts.hub import resolve_router_folder

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

        Saves to a temporary folder and uploads it with :func:`ir3de.artifacts.hub.push_folder`. Returns
        huggingface_hub's ``CommitInfo``.

        Example:
            >>> router.push_to_hub("org/my-router", private=True)       # doctest: +SKIP
            >>> Router.from_pretrained("org/my-router").route("2+2?")    # doctest: +SKIP
        """
        from ir3de.artifacts.hub import push_saved

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
        """Add an expert from a stat pack (a :class:`ir3de.artifacts.stat_packs.StatPack`, a folder or a Hub repo id).

        The pack's tokenizer/embedding fingerprint must equal the router's (else
        :class:`TokenizerMismatchError`). ``hub_kwargs``: ``revision``, ``token``, ``cache_dir``,
        ``local_files_only``, ``force_download``.

        Example:
            >>> router.add_expert_from_stats("org/legal-stat-pack")   # doctest: +SKIP
        """
        if isinstance(pack, (str, os.PathLike)):
            from ir3de.artifacts.hub import resolve_folder

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
        """Learn served prompts with their correct expert, given per prompt (or one for all), as
        ``{expert: prompts}`` or as ``LabelledData``: they join that expert's traffic block
        (:mod:`ir3de.fitting.traffic`; one solve, no corpus re-read). ``create_experts``: an unknown label
        becomes an expert, its prompts its corpus (else :class:`UnknownExpertError`).

        Example:
            >>> router.learn(["How do I file my taxes?", "def f(x):"], ["finance", "code"])   # doctest: +SKIP
        """
        from ir3de.data.labelled import (
            group_prompts,  # file readers: imported when learning, not when serving
        )

        return self._learn_groups(group_prompts(prompts, experts), create_experts=create_experts)

    def feedback(self, prompt: str, expert: str, *, create_experts: bool = False) -> Router:
        """Learn one served prompt with its correct expert (:meth:`learn` of one prompt).

        Example:
            >>> router.feedback("What is a stanza?", "poetry")   # doctest: +SKIP
        """
        routing.check_prompt(prompt)
        if not isinstance(expert, str):
            raise InvalidInputError(f"the expert is a {type(expert).__name__}; expert names are str")
        return self.learn([prompt], [expert], create_experts=create_experts)

    def learn_counts(self, counts: Mapping[str, ExpertCounts], *, create_experts: bool = False) -> Router:
        """Add precomputed traffic blocks (counted like :meth:`learn` does: stat packs, Ray shards).
        Equals :meth:`learn` on the prompts the counts came from, counted with this router's tokenizer
        and embedding matrix (:func:`ir3de.fitting.traffic.count_prompts`).

        Example:
            >>> router.learn_counts({"finance": traffic.count_prompts(prompts, emb, name="finance")})  # doctest: +SKIP
        """
        return self._learn_groups(_traffic.check_blocks(counts), create_experts=create_experts)

    def _learn_groups(self, groups: Mapping[str, Any], *, create_experts: bool) -> Router:
        """``groups``: expert → prompts (lists of str) or → ExpertCounts (precomputed traffic)."""
        from ir3de.data.labelled import check_labels

        with self._lock:
            self._require_state()
            new = check_labels(groups, self.experts, create=create_experts)
            emb, options = self.embeddings, {"level": self.config.level, "batch_size": self.batch_size}
            counted = {
                n: _traffic.count_learned(x, emb, name=n, corpus=n in new, progress=self.progress, **options)
                for n, x in groups.items()
            }
            self._commit(_traffic.learn(self._experts, counted, new))
        return self

    def forget_traffic(self, expert: str | None = None) -> Router:
        """Forget the learned traffic of one expert (or of all with ``None``) and re-solve. Exact:
        forgetting all traffic gives back, bit for bit, the router from before it learned anything.

        Example:
            >>> router.forget_traffic("finance")   # doctest: +SKIP
            >>> router.forget_traffic()            # all experts
        """
        with self._lock:
            names = list(self._experts) if expert is None else [expert]
            if any(self._get_expert(n).traffic is not None for n in names):
                self._commit(_traffic.forget(self._experts, names))
        return self

    @property
    def traffic(self) -> dict[str, TrafficSummary]:
        """Per expert with learned traffic: prompts, tokens, and the weight the fit gives them.

        Example:
            >>> {n: (s.num_prompts, s.row_weight) for n, s in router.traffic.items()}   # doctest: +SKIP
            {'finance': (12, 30.0)}
        """
        with self._lock:
            return _traffic.summaries(self._experts, self.config)

    @property
    def traffic_statistics(self) -> dict[str, ExpertCounts]:
        """Per expert with learned traffic: its traffic block (token histogram and text Gram)."""
        return {n: e.traffic for n, e in self._experts.items() if e.traffic is not None}

    # ------------------------------------------------------------------ conversations and tuning
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
    ) -> ConversationDecision:
        """Route a multi-turn chat (:func:`ir3de.routing.conversation.route_conversation`): decayed per-turn
        evidence, role weights, stickiness to ``previous_expert``; ``None`` options take ``settings``.

        Example:
            >>> router.route_conversation([("user", "Solve 3x = 6"), ("ai", "x = 2"), ("user", "why?")])  # doctest: +SKIP
        """
        from ir3de.routing.conversation import route_conversation

        options = {"half_life": half_life, "user_weight": user_weight, "assistant_weight": assistant_weight}
        options.update(include_system=include_system, margin=margin)
        return route_conversation(
            self, messages, previous_expert=previous_expert, settings=settings, **options
        )

    def tune(
        self,
        held_out: Mapping[str, Sequence[str]],
        target_precision: float = 0.95,
        *,
        per_expert: bool = False,
        abstain: str | None = None,
    ) -> TuningResult:
        """Set temperature, evidence prior and abstain threshold(s) (per expert with ``per_expert``) so
        that prompts routed, not sent to the fallback ``abstain``, reach ``target_precision`` on the
        labelled ``held_out`` prompts (:func:`ir3de.routing.tuning.tune`). Returns a ``TuningResult``.

        Example:
            >>> router.tune(dev, target_precision=0.95, abstain="general").coverage   # doctest: +SKIP
            0.83
        """
        with self._lock:
            state = self._require_state()
            settings, result = tuning.tune(
                state,
                self.config,
                self.tokenizer,
                held_out,
                target_precision,
                per_expert=per_expert,
                abstain=abstain,
            )
            self.configure(**settings)
        return result
