"""An ir3de ``BaseSelector``: route a query to a query engine / retriever / tool by its tokens.

Drop-in for LlamaIndex's LLM and embedding selectors in ``RouterQueryEngine`` and ``RouterRetriever``:
no LLM call, no JSON to parse, no description embeddings — the router reads the query's tokens.

Example:
    >>> from llama_index.core.query_engine import RouterQueryEngine
    >>> from llama_index.core.tools import QueryEngineTool
    >>> selector = Ir3deSelector.from_pretrained("my-router")                    # doctest: +SKIP
    >>> engine = RouterQueryEngine(selector=selector, llm=llm, query_engine_tools=[  # doctest: +SKIP
    ...     QueryEngineTool.from_defaults(math_engine, name="math", description="grade-school math"),
    ...     QueryEngineTool.from_defaults(code_engine, name="code", description="Python functions"),
    ... ])                                                                       # doctest: +SKIP
    >>> response = engine.query("Write a function that reverses a list")        # doctest: +SKIP
    >>> response.metadata["selector_result"].reason                             # doctest: +SKIP
    "ir3de routed to expert 'code' (confidence 1.00; deciding tokens: ' function', ...)"
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_selector import BaseSelector, SelectorResult, SingleSelection
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.schema import QueryBundle
from llama_index.core.tools.types import ToolMetadata

from ir3de.decision import RouteDecision
from ir3de.errors import ExpertError, ExpertMismatchError, InvalidInputError
from ir3de.router import Router
from ir3de.serving.feedback import DEFAULT_MAXSIZE, Feedback, RecentRoutes, adapt_recent, apply_feedback
from ir3de.serving.ownership import own_copy
from ir3de.serving.registry import fitted_router, handler_names

from ._common import DEFAULT_TOP_TOKENS, describe_route, load_router, route_payload
from .events import Ir3deRouteEvent, dispatcher

if TYPE_CHECKING:
    from ir3de.fitting.adaptation import AdaptationReport

__all__ = ["Ir3deSelector", "Ir3deSelectorResult"]


class Ir3deSelectorResult(SelectorResult):
    """A ``SelectorResult`` that also carries the selection's routing id (``call_id``), which
    :meth:`Ir3deSelector.feedback` takes; ``RouterQueryEngine`` returns it as
    ``response.metadata["selector_result"]``."""

    call_id: str = ""


def _choice_key(choice: ToolMetadata) -> str:
    """How a choice is named: its ``ToolMetadata.name``, or its description for plain-string choices."""
    return choice.name if choice.name else choice.description


class Ir3deSelector(BaseSelector):
    """Select among LlamaIndex choices (query engine tools, retriever tools…) with an ir3de router.

    Each choice is matched to one of the router's experts by its ``ToolMetadata.name`` (or, for a
    choice given as a plain string, by its description), or through ``mapping`` (choice name →
    expert). Every expert — and the router's ``fallback`` when it is not an expert — must have exactly
    one choice; a mismatch raises one :class:`~ir3de.errors.ExpertMismatchError` listing both sides.

    Args:
        router: a fitted :class:`ir3de.Router`. The selector works on a copy of its own
            (:attr:`router`), so :meth:`feedback`, :meth:`adapt` and experts added through
            ``selector.router.add_expert(...)`` never change the caller's router (or another adapter
            built on it). The choices are matched on every call, so the router may grow at runtime.
        mapping: optional ``{choice name: expert}``; choices it does not name are matched by name.
        multi: return every expert whose score is at least ``score_threshold`` (best first) instead
            of only the winner. ``RouterQueryEngine`` then queries all of them and summarises.
        score_threshold: the multi-selection cut-off on the router's per-expert scores (in [0, 1]).
            The winner is always selected, even when its score is below the cut-off.
        max_selections: at most this many selections in multi mode (``None``: no limit).
        top_tokens: how many deciding tokens the reason names.

    Example:
        >>> selector = Ir3deSelector(router, multi=True, score_threshold=0.3)    # doctest: +SKIP
        >>> result = selector.select(tools_metadata, "Translate 'Guten Morgen'")  # doctest: +SKIP
        >>> result.inds, result.reasons[0]                                      # doctest: +SKIP
    """

    def __init__(
        self,
        router: Router,
        *,
        mapping: Mapping[str, str] | None = None,
        multi: bool = False,
        score_threshold: float = 0.5,
        max_selections: int | None = None,
        top_tokens: int = DEFAULT_TOP_TOKENS,
    ) -> None:
        # a router of its own, like every adapter: learning here never changes the caller's router
        self._router = own_copy(fitted_router(router))
        self._mapping = dict(mapping or {})
        for key, expert in self._mapping.items():
            if not isinstance(key, str) or not isinstance(expert, str):
                raise InvalidInputError(
                    f"mapping must be {{choice name: expert name}} with str keys and values, got {key!r}: {expert!r}"
                )
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise InvalidInputError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
        if max_selections is not None and int(max_selections) < 1:
            raise InvalidInputError(f"max_selections must be >= 1 or None, got {max_selections!r}")
        self.multi = bool(multi)
        self.score_threshold = float(score_threshold)
        self.max_selections = None if max_selections is None else int(max_selections)
        self.top_tokens = int(top_tokens)
        self._calls = RecentRoutes(DEFAULT_MAXSIZE)
        self._adapt_lock = threading.Lock()  # two adapt() calls never take the same recent selections

    @classmethod
    def from_pretrained(
        cls,
        folder_or_repo: str | Path,
        *,
        mapping: Mapping[str, str] | None = None,
        multi: bool = False,
        score_threshold: float = 0.5,
        max_selections: int | None = None,
        top_tokens: int = DEFAULT_TOP_TOKENS,
        **kwargs: Any,
    ) -> Ir3deSelector:
        """Load the router with ``ir3de.Router.from_pretrained(folder_or_repo, **kwargs)`` (a saved folder
        or a Hub repo id) and wrap it.

        Example:
            >>> selector = Ir3deSelector.from_pretrained("my-router", device="cpu")   # doctest: +SKIP
        """
        return cls(
            load_router(folder_or_repo, **kwargs),
            mapping=mapping,
            multi=multi,
            score_threshold=score_threshold,
            max_selections=max_selections,
            top_tokens=top_tokens,
        )

    @property
    def router(self) -> Router:
        """The selector's own router (a copy of the one given): what it selects with and learns into.
        Grow or shrink it here (``selector.router.add_expert(...)``), then give the new expert a choice.

        Example:
            >>> selector.router.add_expert("music", music_texts)   # doctest: +SKIP
        """
        return self._router

    @property
    def mapping(self) -> dict[str, str]:
        """The explicit ``{choice name: expert}`` mapping (a copy)."""
        return dict(self._mapping)

    # ------------------------------------------------------------------ PromptMixin
    def _get_prompts(self) -> PromptDictType:
        """The selector has no prompts (it never calls an LLM)."""
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        """Nothing to update: the selector has no prompts."""

    # ------------------------------------------------------------------ matching
    def match_choices(self, choices: Sequence[ToolMetadata]) -> dict[str, int]:
        """``{expert: choice index}`` for these choices.

        Raises:
            ExpertMismatchError: choices that match no expert and/or experts (or the fallback) with no
                choice, both listed in one message.
            ExpertError: two choices for one expert.

        Example:
            >>> selector.match_choices([ToolMetadata(name="math", description="..."), ...])  # doctest: +SKIP
            {'math': 0, 'code': 1}
        """
        targets = handler_names(self._router)
        target_set = set(targets)
        index: dict[str, int] = {}
        unmatched: list[str] = []
        for i, choice in enumerate(choices):
            key = _choice_key(choice)
            expert = self._mapping.get(key, key)
            if expert not in target_set:
                unmatched.append(key if expert == key else f"{key} -> {expert}")
                continue
            if expert in index:
                first = _choice_key(choices[index[expert]])
                raise ExpertError(
                    f"choices {first!r} (#{index[expert]}) and {key!r} (#{i}) both map to expert {expert!r}; "
                    "give each expert exactly one choice"
                )
            index[expert] = i
        missing = [t for t in targets if t not in index]
        if unmatched or missing:
            raise ExpertMismatchError(
                missing=missing,
                extra=unmatched,
                router_experts=self._router.experts,
                kind="choice",
                fix="Name each tool after an expert (ToolMetadata(name=expert)) or pass "
                f"Ir3deSelector(router, mapping={{choice name: expert}}); the names needed are {targets}",
            )
        return index

    # ------------------------------------------------------------------ selection
    def _selection(
        self, choices: Sequence[ToolMetadata], query: QueryBundle
    ) -> tuple[SelectorResult, Ir3deRouteEvent]:
        index = self.match_choices(choices)
        decision: RouteDecision = self._router.route(query.query_str)
        payload = route_payload(decision, self.top_tokens)
        reason = describe_route(decision, self.top_tokens)
        experts = [decision.expert]
        if self.multi and not decision.fallback_used:
            ranked = sorted(decision.scores.items(), key=lambda kv: -kv[1])
            experts += [
                name
                for name, score in ranked
                if name != decision.expert and score > 0.0 and score >= self.score_threshold
            ]
            if self.max_selections is not None:
                experts = experts[: self.max_selections]
        selections = [SingleSelection(index=index[experts[0]], reason=reason)]
        selections += [
            SingleSelection(
                index=index[name],
                reason=(
                    f"ir3de also selected expert {name!r} (score {decision.scores[name]:.2f} >= "
                    f"{self.score_threshold:.2f}; winner {decision.expert!r})"
                ),
            )
            for name in experts[1:]
        ]
        call = self._calls.record(
            uuid.uuid4(), query.query_str, decision.expert, confidence=decision.confidence
        )
        event = Ir3deRouteEvent.from_payload(
            "selector",
            query.query_str,
            payload,
            selected=experts,
            selected_indices=[s.index for s in selections],
            id_=call.call_id,
        )
        return Ir3deSelectorResult(selections=selections, call_id=call.call_id), event

    @dispatcher.span
    def _select(self, choices: Sequence[ToolMetadata], query: QueryBundle) -> SelectorResult:
        result, event = self._selection(choices, query)
        dispatcher.event(event)
        return result

    @dispatcher.span
    async def _aselect(self, choices: Sequence[ToolMetadata], query: QueryBundle) -> SelectorResult:
        result, event = self._selection(choices, query)  # a table lookup: microseconds, no I/O to await
        await dispatcher.aevent(event)
        return result

    # ------------------------------------------------------------------ feedback
    @property
    def recent_calls(self) -> RecentRoutes:
        """The selections remembered for :meth:`feedback` (bounded: ``recent_calls.maxsize``)."""
        return self._calls

    def feedback(
        self,
        call_id: str | SelectorResult | None = None,
        *,
        prompt: str | None = None,
        expert: str,
        create_experts: bool = False,
    ) -> Feedback:
        """Report the correct ``expert`` of a selection and learn it (:meth:`ir3de.Router.learn`; the
        next selection sees it).

        Name the selection by its routing id — the :class:`Ir3deSelectorResult` itself
        (``response.metadata["selector_result"]`` of a ``RouterQueryEngine``), its ``call_id``, or the
        ``id_`` of its :class:`~.events.Ir3deRouteEvent` — or pass the query as ``prompt``. With
        ``create_experts`` an unknown ``expert`` becomes a new expert (give it a choice named after it).

        Raises:
            UnknownCallError: the id is not among the recent selections (``recent_calls``).
            UnknownExpertError: ``expert`` is not an expert and ``create_experts`` is false.

        Example:
            >>> response = engine.query("Write a function that reverses a list")               # doctest: +SKIP
            >>> selector.feedback(response.metadata["selector_result"], expert="code").fixed    # doctest: +SKIP
            True
        """
        key: Any = call_id
        if isinstance(call_id, SelectorResult):
            key = getattr(call_id, "call_id", None) or None
            if key is None:
                raise InvalidInputError(
                    "this SelectorResult carries no routing id (call_id); pass a result of this "
                    "Ir3deSelector, its call_id, or prompt=..."
                )
        router = self._router
        return apply_feedback(
            router,
            lambda text, name: router.learn([text], [name], create_experts=create_experts),
            self._calls,
            call_id=key,
            prompt=prompt,
            expert=expert,
        )

    def adapt(self, prompts: Iterable[str] | None = None, **options: Any) -> AdaptationReport:
        """Adapt the router to unlabelled prompts (:meth:`ir3de.Router.adapt`; the next selection sees
        it) — by default to the queries this selector routed recently (:attr:`recent_calls`) that no
        earlier ``adapt()`` used. ``options`` go to :meth:`ir3de.Router.adapt`; undo with
        :meth:`forget_adaptation`.

        Raises:
            InvalidInputError: no selection is left to adapt on (and no ``prompts`` given).

        Example:
            >>> selector.adapt().to_dict()["prompts"]   # doctest: +SKIP
            200
        """
        router = self._router
        if prompts is not None:
            return router.adapt(prompts, **options)
        with self._adapt_lock:
            return adapt_recent(self._calls, lambda recent: router.adapt(recent, **options))

    def forget_traffic(self, expert: str | None = None) -> Ir3deSelector:
        """Forget what :meth:`feedback` taught expert ``expert`` (all experts with ``None``): exact.

        Example:
            >>> selector.forget_traffic("math")   # doctest: +SKIP
        """
        self._router.forget_traffic(expert)
        return self

    def forget_adaptation(self) -> Ir3deSelector:
        """Forget what :meth:`adapt` taught (exact; feedback learned as traffic is kept).

        Example:
            >>> selector.forget_adaptation()   # doctest: +SKIP
        """
        self._router.forget_adaptation()
        return self

    def __repr__(self) -> str:
        mode = f"multi, score_threshold={self.score_threshold}" if self.multi else "single"
        return f"Ir3deSelector(experts={list(self._router.experts)}, {mode})"
