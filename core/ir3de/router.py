"""The public façade: fit, route, grow, learn, save and load an IR3DE router.

A :class:`Router` is one idea: experts are columns of additive statistics (token counts and Grams
per expert, :attr:`Router.statistics`), solved into an immutable routing state (:attr:`Router.state`:
route table, weights, tokenizer, provenance) that is swapped whole under a lock. Every method takes
the lock, calls a function of the module of its concept and commits the result:
:mod:`ir3de.fitting.pipeline` (counts → statistics → solve → table), :mod:`ir3de.routing.prompts` (a
prompt or a batch through the state), :mod:`ir3de.fitting.traffic` (learning from traffic),
:mod:`ir3de.routing.tuning` (calibration, abstain thresholds), :mod:`ir3de.routing.conversation`,
:mod:`ir3de.artifacts.folders` (folders) and :mod:`ir3de.artifacts.hub` (Hub transport).

Variants are functions in their folder, not methods: the paper's settings are
``RouterConfig.paper()``; ``ir3de.routing.prompts.route_indices`` / ``encode_prompts`` route or
tokenize in bulk; ``ir3de.routing.tuning.calibrate`` calibrates only;
``ir3de.fitting.pipeline.ridge_matrices`` / ``select_lambda`` give ``A``, ``B`` and a GCV λ;
``ir3de.fitting.traffic.count_prompts`` counts traffic to ``learn``. Evaluation and stat packs sit
above this module, on its public API.

Example:
    >>> from ir3de import Router, TokenEmbeddings                   # doctest: +SKIP
    >>> router = Router(embeddings=TokenEmbeddings.default())  # doctest: +SKIP
    >>> router.fit({"math": math_texts, "code": code_texts})  # doctest: +SKIP
    >>> router.route("Solve 3x + 5 = 11").expert  # doctest: +SKIP
    'math'
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ir3de.artifacts import folders as persistence
from ir3de.config import LEVELS, STATISTICS_SETTINGS, RouterConfig
from ir3de.decision import RouteDecision
from ir3de.errors import ExpertError, NotFittedError, UnknownExpertError
from ir3de.fitting import adaptation as _adaptation
from ir3de.fitting import pipeline as fitting
from ir3de.fitting import traffic as _traffic
from ir3de.fitting.pipeline import ExpertStatistics, RoutingState
from ir3de.fitting.statistics import ExpertCounts, KeepTokenIds, TextGramSum, TrafficSummary
from ir3de.routing import prompts as routing
from ir3de.routing import tuning

logger = logging.getLogger("ir3de")

if TYPE_CHECKING:
    from ir3de.data.labelled import LabelledData
    from ir3de.embeddings import TokenEmbeddings
    from ir3de.fitting.adaptation import (
        AdaptationPrompts,
        AdaptationReport,
        AdaptationSettings,
        AdaptationSummary,
    )
    from ir3de.routing.conversation import ConversationDecision, ConversationSettings
    from ir3de.routing.tuning import TuningResult

__all__ = ["LEVELS", "ExpertSource", "Router", "RouterConfig", "record_evaluation"]

ExpertSource = Iterable[str] | ExpertCounts | ExpertStatistics | persistence.PackData
"""What an expert is built from: its texts, precomputed :class:`ExpertCounts` (a Ray job), its
:class:`ExpertStatistics` (counts, description and traffic block, e.g. another router's
``statistics[name]``) or a stat pack (:class:`ir3de.artifacts.stat_packs.StatPack`, fingerprint checked)."""


class Router:
    """IR3DE: route each prompt to one of several domain experts with a per-token lookup table.

    Args:
        embeddings: tokenizer + input-embedding matrix used to fit (``TokenEmbeddings.default()``
            when omitted). Routing a loaded router needs only its tokenizer.
        config: a :class:`RouterConfig` (``RouterConfig.paper()`` for the paper's router exactly);
            keyword overrides below win over it.
        device: where Gram products, the solve and table compilation run: ``"auto"`` (the GPU when
            torch sees one, decided at the first fit), ``"cpu"`` (numpy, no torch) or ``"cuda"``.
            Routing always runs on the CPU (a table lookup) and never imports torch.
        batch_size: texts tokenized per batch while fitting.
        progress: show tqdm progress bars while counting (``None``: only on a terminal).
        statistics: expert → :class:`ExpertStatistics` to start from; solved at once unless ``state``
            is given too.
        state: the :class:`RoutingState` solved from ``statistics`` (a loaded artifact: no solve).
        **settings: any :class:`RouterConfig` field (``lam``, ``selector``, ``k``, ``combine``,
            ``column_norm``, ``balance``, ``max_tokens``, ``fallback``, ``threshold``).

    Example:
        >>> router = Router(emb, config=RouterConfig.paper()).fit({"math": m, "code": c})  # doctest: +SKIP
        >>> d = router.route("def add(a, b):")                                              # doctest: +SKIP
        >>> d.expert, round(d.confidence, 2), [t.text for t in d.tokens][:3]                # doctest: +SKIP
    """

    #: the kept rows of the prompts it adapted to and the settings used (``None``: not adapted)
    _adaptation: tuple[AdaptationPrompts, AdaptationSettings] | None = None

    def __init__(
        self,
        embeddings: TokenEmbeddings | None = None,
        *,
        config: RouterConfig | None = None,
        device: str = "auto",
        batch_size: int = 512,
        progress: bool | None = None,
        statistics: Mapping[str, ExpertStatistics] | None = None,
        state: RoutingState | None = None,
        **settings: Any,
    ) -> None:
        base = config if config is not None else RouterConfig()
        self.config: RouterConfig = dataclasses.replace(base, **settings) if settings else base
        self._device_request = fitting.check_device(device)
        self._device: str | None = "cpu" if device == "cpu" else None
        self._batch_size, self._progress = int(batch_size), progress
        # the lock every change takes; the corpus part of A of the experts last solved (derived state:
        # add_expert then adds one expert to it, ir3de.fitting.statistics.TextGramSum)
        self._lock, self._text_sum = threading.RLock(), TextGramSum(1)
        self._experts: dict[str, ExpertStatistics] = {}  # swapped whole with the state (_commit)
        self._state: RoutingState | None = None
        self._embeddings: TokenEmbeddings | None = None
        self._provenance: dict[str, Any] = fitting.state_provenance(state)  # tokenizer, fingerprint...
        if state is not None:
            self._experts, self._state = fitting.check_loaded(statistics, state), state
        if embeddings is not None:
            self._attach_embeddings(embeddings)
        if statistics is not None and state is None:
            self.fit(statistics)

    def _attach_embeddings(self, embeddings: TokenEmbeddings) -> None:
        recorded, fingerprint = self._provenance, embeddings.fingerprint()  # hashes the matrix: once
        fitting.check_embeddings(recorded["fingerprint"], fingerprint, recorded["embedding_source"])
        self._embeddings = embeddings
        self._provenance = fitting.embeddings_provenance(embeddings, fingerprint)

    @property
    def embeddings(self) -> TokenEmbeddings:
        """The embedding source; loaded on first use from the source recorded in a saved router."""
        with self._lock:
            if self._embeddings is None:
                from ir3de.embeddings import TokenEmbeddings

                source = self._provenance["embedding_source"]
                what = "the default embeddings" if source is None else f"the embeddings {_describe(source)}"
                # a loaded router routes without them; its first change (add_expert, learn, ...) waits here
                logger.info("loading %s (needed to change a loaded router; usually a few seconds)", what)
                start = time.perf_counter()
                self._attach_embeddings(
                    TokenEmbeddings.default() if source is None else TokenEmbeddings.from_source(source)
                )
                logger.info("loaded %s in %.1f s", what, time.perf_counter() - start)
            assert self._embeddings is not None
            return self._embeddings

    # ------------------------------------------------------------------ introspection
    @property
    def experts(self) -> tuple[str, ...]:
        """Expert names in index order (the order they were added).

        Example:
            >>> router.experts   # doctest: +SKIP
            ('math', 'code')
        """
        return tuple(self._experts)

    @property
    def statistics(self) -> Mapping[str, ExpertStatistics]:
        """Per expert, its additive statistics: corpus ``counts``, ``description`` and learned
        ``traffic`` block (read-only; ``Router(emb).fit(router.statistics)`` rebuilds this router).
        A loaded router holds the text statistics of the experts saved as token ids (``keep_token_ids``)
        as those ids (``counts.text_form == "tokens"``) until its first change rebuilds them.

        Example:
            >>> router.statistics["math"].counts.num_tokens, router.statistics["math"].traffic   # doctest: +SKIP
            (120344, None)
        """
        return MappingProxyType(self._experts)

    @property
    def state(self) -> RoutingState:
        """The immutable routing state that routing reads right now: experts, route table, weights,
        tokenizer, fingerprint, embedding source, excluded ids, descriptions and evaluation figures.
        A change swaps in a new one, so one read gives a consistent set for as long as it is held.

        Raises:
            NotFittedError: nothing fitted or loaded yet.

        Example:
            >>> router.state.experts, router.state.table.vocab_size   # doctest: +SKIP
            (('math', 'code'), 49152)
        """
        state = self._state
        if state is None:
            raise NotFittedError(
                "the router is not fitted: call fit({...}) or Router.from_pretrained(folder)"
            )
        return state

    @property
    def traffic(self) -> dict[str, TrafficSummary]:
        """Per expert with learned traffic: prompts, tokens, and the weight the fit gives them.

        Example:
            >>> {n: (s.num_prompts, s.row_weight) for n, s in router.traffic.items()}   # doctest: +SKIP
            {'finance': (12, 30.0)}
        """
        with self._lock:
            return _traffic.summaries(self._experts, self.config)

    def __repr__(self) -> str:
        return f"Router(experts=[{', '.join(self._experts) or 'not fitted'}], {self.config})"

    # ------------------------------------------------------------------ experts (ir3de.fitting.pipeline)
    def fit(
        self, experts: Mapping[str, ExpertSource], descriptions: Mapping[str, str] | None = None
    ) -> Router:
        """Build every expert (name → texts, :class:`ExpertCounts`, :class:`ExpertStatistics` or a stat
        pack: :data:`ExpertSource`), solve,
        compile the route table; replaces any previous fit. ``descriptions``: name → one line (model
        card). Counts must come from this router's tokenizer (then they equal a fit on their texts).

        Example:
            >>> router = Router(emb).fit({"math": math_texts, "code": code_texts})   # doctest: +SKIP
            >>> Router(emb).fit(router.statistics)        # the same router, no text re-read  # doctest: +SKIP
        """
        names = fitting.check_experts(experts, "fit", "texts or ExpertCounts")
        descriptions = dict(descriptions or {})
        if unknown := set(descriptions) - set(names):
            raise UnknownExpertError(
                f"descriptions for unknown experts {sorted(unknown)}; experts are {names}"
            )
        with self._lock:
            built = {n: self._expert(n, experts[n], descriptions.get(n, "")) for n in names}
            self._commit(built)
            self._adaptation = None  # a new fit keeps no prompt rows (blocks from statistics have none)
        return self

    def add_expert(
        self,
        name: str,
        source: ExpertSource,
        description: str = "",
        *,
        update: bool = False,
    ) -> Router:
        """Add one expert from its texts, :class:`ExpertCounts`, :class:`ExpertStatistics` or a stat pack
        (:class:`ir3de.artifacts.stat_packs.StatPack`, its fingerprint checked), then re-solve: equals a
        from-scratch fit. ``update=True`` adds texts (or counts) to an existing expert instead.

        Example:
            >>> router.add_expert("legal", legal_texts, description="contracts and case law")  # doctest: +SKIP
            >>> router.add_expert("math", more_math_texts, update=True)                       # doctest: +SKIP
            >>> router.add_expert(pack.name, StatPack.from_pretrained("org/legal-pack"))      # doctest: +SKIP
        """
        with self._lock:
            if update:
                expert = self._grown(name, source, description)
            else:
                hint = f"use add_expert({name!r}, more, update=True) to add text to it or remove_expert first"
                fitting.check_new_expert(name, self._experts, hint)
                expert = self._expert(name, source, description)
            self._commit({**self._experts, name: expert})
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
                    f"cannot remove {name!r}: a router needs at least 2 experts and has {list(self._experts)}"
                )
            self._commit({n: e for n, e in self._experts.items() if n != name})
        return self

    def configure(self, **settings: Any) -> Router:
        """Change settings: routing-only ones (selector, k, combine, max_tokens, fallback, threshold,
        temperature) apply at once; ``level``, λ, ``column_norm``, ``balance``, ``traffic_weight`` and
        ``traffic_policy`` re-solve from the statistics (no text is re-read). ``keep_token_ids``
        drops the token ids the new value does not keep (``False``: all; their statistics stay,
        rebuilt first when needed); ids dropped are not regained.

        Example:
            >>> router.configure(level="token", selector="topk", k=50)   # doctest: +SKIP
            >>> router.configure(lam=select_lambda(router.statistics, router.config))   # doctest: +SKIP
        """
        with self._lock:
            new = dataclasses.replace(self.config, **settings)
            if self._state is not None and any(
                getattr(new, f) != getattr(self.config, f) for f in STATISTICS_SETTINGS
            ):
                self._commit(self._experts, new)
            self._experts = self._without_token_ids(self._experts, new.keep_token_ids)  # no re-solve
            self.config = new
        return self

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
        To calibrate confidence only (routes unchanged):
        ``router.configure(**ir3de.routing.tuning.calibrate(router.state, router.config, held_out))``.

        Example:
            >>> router.tune(dev, target_precision=0.95, abstain="general").coverage   # doctest: +SKIP
            0.83
        """
        with self._lock:
            settings, result = tuning.tune(
                self.state, self.config, held_out, target_precision, per_expert=per_expert, abstain=abstain
            )
            self.configure(**settings)
        return result

    # ------------------------------------------------------------------ routing (ir3de.routing.prompts)
    def route(self, text: str) -> RouteDecision:
        """Route one prompt (:func:`ir3de.routing.prompts.route_one`): ``expert``, ``confidence``, ``scores``,
        ``tokens``. Raises :class:`EmptyPromptError` for no countable token and no ``fallback``.

        Example:
            >>> router.route("Solve 3x + 5 = 11").expert   # doctest: +SKIP
            'math'
        """
        if not isinstance(text, str):
            routing.check_prompt(text)
        return routing.route_one(self.state, self.config, text)

    def route_batch(self, texts: Sequence[str]) -> list[RouteDecision]:
        """Route many prompts at once (vectorised); decisions come back in the same order. For expert
        indices only, fastest: :func:`ir3de.routing.prompts.route_indices`.

        Example:
            >>> [d.expert for d in router.route_batch(["2+2?", "def f():"])]   # doctest: +SKIP
            ['math', 'code']
        """
        texts = routing.check_prompts(texts)
        return routing.route_batch(self.state, self.config, texts)

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
        settings: ConversationSettings | Mapping[str, Any] | None = None,
    ) -> ConversationDecision:
        """Route a multi-turn chat (:func:`ir3de.routing.conversation.route_conversation`): decayed per-turn
        evidence, role weights, stickiness to ``previous_expert``; ``None`` options take ``settings``.

        Example:
            >>> router.route_conversation([("user", "Solve 3x = 6"), ("ai", "x = 2"), ("user", "why?")])  # doctest: +SKIP
        """
        from ir3de.routing.conversation import route_conversation

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

    # ------------------------------------------------------------------ learning from traffic (ir3de.fitting.traffic)
    def learn(
        self,
        prompts: Iterable[str] | Mapping[str, Iterable[str] | ExpertCounts] | LabelledData,
        experts: str | Iterable[str] | None = None,
        *,
        create_experts: bool = False,
    ) -> Router:
        """Learn served prompts with their correct expert, given per prompt (or one for all), as
        ``{expert: prompts}``, as ``{expert: ExpertCounts}`` (precomputed by
        :func:`ir3de.fitting.traffic.count_prompts`: stat packs, Ray shards) or as ``LabelledData``:
        they join that expert's traffic block (one solve, no corpus re-read). ``create_experts``: an
        unknown label becomes an expert, its prompts its corpus (else :class:`UnknownExpertError`).

        Example:
            >>> router.learn(["How do I file my taxes?", "def f(x):"], ["finance", "code"])   # doctest: +SKIP
            >>> router.learn(["What is a stanza?"], "poetry")                                  # doctest: +SKIP
        """
        from ir3de.data.labelled import check_labels, learn_groups  # readers: imported when learning only

        groups = learn_groups(prompts, experts)
        with self._lock:
            self.state  # noqa: B018 - raises NotFittedError before anything is counted
            new = check_labels(groups, list(self._experts), create=create_experts)
            emb, level = self.embeddings, self.config.level
            counted = {
                n: _traffic.count_learned(
                    x,
                    emb,
                    name=n,
                    corpus=n in new,
                    level=level,
                    batch_size=self._batch_size,
                    progress=self._progress,
                    keep_token_ids=self.config.keep_token_ids,
                )
                for n, x in groups.items()
            }
            self._commit(_traffic.learn(self._experts, counted, new))
        return self

    def forget_traffic(self, expert: str | None = None) -> Router:
        """Forget the learned traffic of one expert (or of all with ``None``) and re-solve. Exact:
        forgetting all traffic gives back, bit for bit, the router from before it learned anything.

        Example:
            >>> router.forget_traffic("finance")   # doctest: +SKIP
            >>> router.forget_traffic()            # all experts  # doctest: +SKIP
        """
        with self._lock:
            names = list(self._experts) if expert is None else [expert]
            if any(self._get_expert(n).traffic is not None for n in names):
                self._commit(_traffic.forget(self._experts, names))
        return self

    # ------------------------------------------------------------------ adapting to unlabelled traffic (ir3de.fitting.adaptation)
    def adapt(self, prompts: Iterable[str], **options: Any) -> AdaptationReport:
        """Adapt to unlabelled served prompts (:mod:`ir3de.fitting.adaptation`): their rows (mean token
        embeddings, no text) are kept and, with every prompt adapted to before, pseudo-labelled by the
        router and learned as an adaptation block per expert, apart from the corpus and the labelled
        traffic. Any order or split of the same prompts gives the same router; :meth:`forget_adaptation`
        undoes it exactly. ``options``: :class:`~ir3de.fitting.adaptation.AdaptationSettings` fields
        (kept for later calls). Returns an :class:`~ir3de.fitting.adaptation.AdaptationReport`.

        Example:
            >>> report = router.adapt(served_prompts)                  # doctest: +SKIP
            >>> report.routes_changed, report.share_after              # doctest: +SKIP
            (37, {'math': 0.26, 'code': 0.31, ...})
        """
        texts, start = routing.check_prompts(list(prompts)), time.perf_counter()
        with self._lock:
            before = self.state
            kept, settings = self._adaptation or (None, None)
            settings = _adaptation.settings_from(settings, options)
            ids, lengths = routing.encode_prompts(before.tokenizer, texts, self.config.max_tokens)
            rows, used = _adaptation.prompt_rows(self.embeddings.matrix, ids, lengths, before.excluded_ids)
            kept, dropped = _adaptation.keep(kept, rows, settings.max_prompts)
            self._commit_adaptation(kept, settings)
            return _adaptation.report(
                before.experts,
                routing.select(before, self.config, ids, lengths, explain=False),
                routing.select(self.state, self.config, ids, lengths, explain=False),
                used=used,
                kept=kept.num_prompts,
                dropped=dropped,
                settings=settings,
                seconds=time.perf_counter() - start,
            )

    def forget_adaptation(self) -> None:
        """Forget every adapted prompt (rows and blocks) and re-solve: exactly, bit for bit, the router
        from before it adapted (with whatever it learned or changed since). Labelled traffic stays.

        Example:
            >>> router.forget_adaptation()   # doctest: +SKIP
        """
        with self._lock:
            if any(e.adaptation is not None for e in self._experts.values()):
                self._commit(_adaptation.without_blocks(self._experts))
            self._adaptation = None

    @property
    def adaptation(self) -> AdaptationSummary:
        """What the router has adapted to: prompts kept, settings, per expert its soft prompt count,
        row weight and share of the corpus mass (``num_prompts == 0``: nothing), and its block
        (``blocks``, what stat packs carry).

        Example:
            >>> router.adaptation.num_prompts, router.adaptation.experts["code"].prompts   # doctest: +SKIP
            (1000, 304.2)
        """
        with self._lock:
            kept, settings = self._adaptation or (None, None)
            return _adaptation.summary(self._experts, kept, settings)

    # ------------------------------------------------------------------ artifact (ModelHubMixin-style hooks)
    def _save_pretrained(self, save_directory: Path) -> Path:
        with self._lock:
            data = persistence.RouterData(self.config, self.state, dict(self._experts), self._adaptation)
        return persistence.save_router(save_directory, data)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
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
        router = cls(
            embeddings,
            config=data.config,
            device=device,
            progress=progress,
            statistics=data.statistics,
            state=data.state,
        )
        router._adaptation = data.adapted
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

    # ------------------------------------------------------------------ internals
    def _commit(self, experts: Mapping[str, ExpertStatistics], config: RouterConfig | None = None) -> None:
        """Solve ``experts`` under ``config`` (default: the current one), then swap experts and state
        in together (a failure changes nothing). New experts drop the evaluation; new settings keep it."""
        target = config if config is not None else self.config
        experts = self._with_grams(experts, target)
        matrix, device = self.embeddings.matrix, self._fit_device()
        excluded = self._provenance["excluded_ids"]
        solved = fitting.experts_state(
            experts, target, matrix=matrix, excluded_ids=excluded, device=device, running=self._text_sum
        )
        evaluation = None if config is None or self._state is None else self._state.evaluation
        descriptions = {n: e.description for n, e in experts.items()}
        state = dataclasses.replace(
            solved, **self._provenance, descriptions=descriptions, evaluation=evaluation
        )
        self._experts, self._state = experts, state
        if all(e.adaptation is None for e in experts.values()):  # a new fit, or forget_adaptation
            self._adaptation = None

    def _commit_adaptation(self, kept: AdaptationPrompts, settings: AdaptationSettings) -> None:
        """Derive every expert's adaptation block from ``kept`` and the router without adaptation; commit."""
        base = self._with_grams(_adaptation.without_blocks(self._experts), self.config)
        a0, b0 = fitting.experts_matrices(
            base, self.config, device=self._fit_device(), adaptation=False, running=self._text_sum
        )
        c = self.config
        blocks = _adaptation.derive(
            fitting.to_numpy(a0), fitting.to_numpy(b0), kept, settings, lam=c.lam, column_norm=c.column_norm,
            temperature=c.effective_temperature, evidence_tokens=c.effective_evidence_tokens,
        )  # fmt: skip
        self._commit(_adaptation.with_blocks(base, blocks if kept.num_prompts else [None] * len(blocks)))
        self._adaptation = (kept, settings) if kept.num_prompts else None

    def _fit_device(self) -> str:
        if self._device is None:
            self._device = fitting.resolve_device(self._device_request)
        return self._device

    def _with_grams(
        self, experts: Mapping[str, ExpertStatistics], config: RouterConfig
    ) -> dict[str, ExpertStatistics]:
        if config.level != "token":  # text-level fits read the text statistics stored with the counts
            if any(e.counts.needs_rebuild for e in experts.values()):  # kept as token ids (loaded)
                return fitting.with_text_statistics(experts, self.embeddings.matrix)
            return dict(experts)
        return fitting.with_grams(experts, self.embeddings.matrix, device=self._fit_device())

    def _without_token_ids(
        self, experts: Mapping[str, ExpertStatistics], keep: KeepTokenIds
    ) -> dict[str, ExpertStatistics]:
        """``experts`` without the token ids ``keep_token_ids=keep`` does not keep (the statistics of
        those experts rebuilt first where the ids are all; the embeddings load only then)."""
        drop = {
            n: e
            for n, e in experts.items()
            if e.counts.text_tokens is not None and not e.counts.text_tokens.kept_by(keep)
        }
        if any(e.counts.needs_rebuild for e in drop.values()):
            drop = fitting.with_text_statistics(drop, self.embeddings.matrix)
        out = dict(experts)
        for n, e in drop.items():
            out[n] = dataclasses.replace(e, counts=e.counts.without_text_tokens())
        return out

    def _get_expert(self, name: str) -> ExpertStatistics:
        if name not in self._experts:
            raise UnknownExpertError(f"unknown expert {name!r}; experts are {list(self._experts)}")
        return self._experts[name]

    def _counts(self, name: str, source: Iterable[str] | ExpertCounts) -> ExpertCounts:
        """``source`` (texts or ExpertCounts) as counts checked against this router's embeddings."""
        emb, level, keep = self.embeddings, self.config.level, self.config.keep_token_ids
        if not isinstance(source, ExpertCounts):
            return fitting.count_expert(
                emb,
                source,
                name=name,
                level=level,
                batch_size=self._batch_size,
                progress=self._progress,
                keep_token_ids=keep,
            )
        fitting.check_counts(
            name, source, vocab_size=emb.vocab_size, hidden_size=emb.hidden_size, level=level
        )
        return source.keeping_token_ids(keep, emb.matrix)  # drops the ids this router does not keep

    def _grown(self, name: str, source: ExpertSource, description: str) -> ExpertStatistics:
        """Expert ``name`` with more texts (or counts) added; its token Gram grows with them."""
        if isinstance(source, (ExpertStatistics, persistence.PackData)):
            source = source.counts
        old, delta = self._get_expert(name), self._counts(name, source)
        if old.counts.needs_rebuild and self.config.level == "text":
            old = fitting.with_text_statistics({name: old}, self.embeddings.matrix)[name]
        grown = fitting.grown(
            old,
            delta,
            self.embeddings.matrix,
            device=self._fit_device(),
            keep_token_ids=self.config.keep_token_ids,
        )
        return dataclasses.replace(grown, description=description) if description else grown

    def _expert(self, name: str, source: ExpertSource, description: str) -> ExpertStatistics:
        """One expert's statistics from texts, ExpertCounts, ExpertStatistics or a stat pack."""
        fitting.check_expert_name(name)
        if isinstance(source, persistence.PackData):
            self.embeddings  # noqa: B018 - loads the embeddings (and their fingerprint) to check the pack
            source.check_compatible(self._provenance["fingerprint"], "the router")
            source = ExpertStatistics(
                source.counts, source.description, source.traffic, adaptation=source.adaptation
            )
        if not isinstance(source, ExpertStatistics):
            return ExpertStatistics(self._counts(name, source), description)
        traffic = source.traffic
        if traffic is not None and traffic.num_tokens:
            self._counts(name, traffic)
        return ExpertStatistics(
            self._counts(name, source.counts),
            description or source.description,
            traffic,
            adaptation=_adaptation.check_block(name, source.adaptation, self.embeddings.hidden_size),
        )


def record_evaluation(router: Router, evaluation: Mapping[str, Any] | None) -> None:
    """Store evaluation figures in ``router.state`` (``save_pretrained`` writes them into ``config.json``
    and the model card); the next change of experts builds a state without them. Called by
    :func:`ir3de.evaluation.evaluate.record_evaluation`, which computes the figures.

    Example:
        >>> record_evaluation(router, {"accuracy": 0.93})   # doctest: +SKIP
        >>> router.state.evaluation["accuracy"]              # doctest: +SKIP
        0.93
    """
    with router._lock:
        record = None if evaluation is None else dict(evaluation)
        router._state = dataclasses.replace(router.state, evaluation=record)


def _describe(source: Mapping[str, Any]) -> str:
    """A short name of an embedding source for log lines (its model id or file, else its kind)."""
    for key in ("model_id", "repo_id", "file", "path", "kind"):
        if source.get(key):
            return str(source[key])
    return "recorded in the router"
