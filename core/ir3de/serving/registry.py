"""Expert name → handler registry over a :class:`~ir3de.Router`, consistent while experts change.

A *handler* is whatever answers the prompts routed to an expert: a LangChain runnable, a LlamaIndex
LLM, an upstream config of the gateway. :class:`ExpertRegistry` pairs each of the router's experts
(and its ``fallback``) with one handler and keeps the pair consistent while other threads route:

* the pairing is an immutable :class:`Snapshot` (a read-only name → handler mapping plus the
  router's expert tuple), swapped whole under a lock, as the router swaps its routing table;
* ``add``/``update``/``remove`` change the router's statistics and the handlers together — both or
  neither: when the router raises, the registry is unchanged;
* :meth:`ExpertRegistry.route` returns the decision with the handler of the expert it names, both
  taken from one router state, lock-free (see :meth:`ExpertRegistry.route_with` for how).

Nothing here imports a framework; the framework adapters and the gateway build on it.

Example:
    >>> registry = ExpertRegistry(router, {"math": "http://math:8000", "code": "http://code:8000"})  # doctest: +SKIP
    >>> decision, upstream = registry.route("def add(a, b):")                                       # doctest: +SKIP
    >>> registry.add("legal", "http://legal:8000", legal_texts)                                     # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ir3de.data.labelled import check_labels, group_prompts
from ir3de.decision import RouteDecision
from ir3de.errors import (
    EmptyPromptError,
    ExpertError,
    ExpertMismatchError,
    InvalidInputError,
    NotFittedError,
    UnknownExpertError,
    _a,
    check_expert_name,
)
from ir3de.fitting.pipeline import ExpertStatistics
from ir3de.router import Router
from ir3de.serving.feedback import DEFAULT_MAXSIZE, Feedback, RecentRoutes, adapt_recent, apply_feedback

if TYPE_CHECKING:
    from ir3de.fitting.adaptation import AdaptationReport
    from ir3de.fitting.statistics import ExpertCounts
    from ir3de.routing.tuning import TuningResult

__all__ = ["ExpertRegistry", "Routed", "Served", "fitted_router", "handler_names"]

H = TypeVar("H")
T = TypeVar("T")

#: Lock-free routing attempts before one routing is done under the write lock (writers kept changing).
OPTIMISTIC_ATTEMPTS = 64


@dataclass(frozen=True)
class Routed(Generic[H]):
    """A routing decision and the handler of the expert it names (unpacks as ``decision, handler``)."""

    decision: RouteDecision
    handler: H

    def __iter__(self) -> Iterator[Any]:
        return iter((self.decision, self.handler))


@dataclass(frozen=True, eq=False)
class Served(Generic[H]):
    """One published pairing of expert names with handlers; never mutated, replaced whole.

    Attributes:
        handlers: read-only expert name → handler. While a change is in flight it holds the handlers
            of the router states before *and* after the change, so a decision from either resolves.
        experts: the router's experts when this pairing was published.
        fallback: the router's fallback name then (``None``: no fallback).
    """

    handlers: Mapping[str, H]
    experts: tuple[str, ...]
    fallback: str | None


def fitted_router(router: object) -> Router:
    """Return ``router`` if it is a fitted :class:`ir3de.Router`, else raise a typed error with the fix.

    Example:
        >>> fitted_router(Router.from_pretrained("my-router"))   # doctest: +SKIP
    """
    if not isinstance(router, Router):
        raise InvalidInputError(
            f"expected an ir3de.Router, got {type(router).__name__}; build one with "
            "Router(...).fit({...}) or load one with Router.from_pretrained(folder_or_repo)"
        )
    if not router.experts:
        raise NotFittedError(
            "the router is not fitted: fit it (or load one with Router.from_pretrained) first"
        )
    return router


def handler_names(router: Router) -> list[str]:
    """The names a decision can carry, so the names that need a handler: the router's experts, then
    its ``fallback`` when that is not an expert.

    Example:
        >>> handler_names(router)   # doctest: +SKIP
        ['math', 'code', 'general']
    """
    names = list(router.experts)
    fallback = router.config.fallback
    if fallback is not None and fallback not in names:
        names.append(fallback)
    return names


def _check_name(name: object, *, new: bool = False) -> str:
    """A new expert's name follows the one name rule (:data:`ir3de.errors.EXPERT_NAME_RULE`); a name
    the router already holds (an older artifact) only needs to be a non-empty string, so it loads."""
    if new:
        return check_expert_name(name)
    if not isinstance(name, str) or not name.strip():
        raise ExpertError(f"expert names must be non-empty strings, got {name!r}")
    return name


class ExpertRegistry(Generic[H]):
    """A router plus one handler per expert name, consistent under concurrent change.

    Args:
        router: a fitted :class:`ir3de.Router`. Change its experts through this registry only (or the
            adapter built on it), so the handlers follow.
        handlers: expert name → handler, for exactly the router's experts plus its ``fallback`` name
            (see :func:`handler_names`); otherwise :class:`~ir3de.errors.ExpertMismatchError`.
        kind: what a handler is, for error messages (``"LLM"``, ``"Runnable"``, ``"upstream"``).
        check_handler: called as ``check_handler(name, handler)`` on every handler registered; raise a
            typed error to refuse one.

    Routing is lock-free: a reader takes the current pairing, routes, and keeps the decision only if
    the pairing is still current (else routes again). A writer first publishes a pairing valid for
    the router state both before and after its change, then changes the router, then publishes the
    final pairing. So a decision always resolves against handlers that include its expert — also one
    removed meanwhile, which still answers the calls routed to it before its removal.

    Example:
        >>> registry = ExpertRegistry(router, {"math": math_llm, "code": code_llm}, kind="LLM")  # doctest: +SKIP
        >>> decision, llm = registry.route("Solve 2x = 4")                                       # doctest: +SKIP
        >>> registry.update("math", more_math_texts, handler=bigger_math_llm)                    # doctest: +SKIP
        >>> registry.remove("code")                                                              # doctest: +SKIP
    """

    def __init__(
        self,
        router: Router,
        handlers: Mapping[str, H],
        *,
        kind: str = "handler",
        check_handler: Callable[[str, H], object] | None = None,
    ) -> None:
        self.router = fitted_router(router)
        if not isinstance(handlers, Mapping):
            raise InvalidInputError(
                f"handlers must be a mapping expert name → {kind}, got {type(handlers).__name__}"
            )
        self.kind = kind
        self._check_handler = check_handler
        for name, handler in handlers.items():
            self._check(name, handler)
        self._lock = threading.RLock()
        self._current: Served[H] = self._publish(handlers)
        self.calls = RecentRoutes(DEFAULT_MAXSIZE)
        """Recent routed calls remembered for :meth:`feedback` by call id (adapters record them)."""
        self.check()

    # ------------------------------------------------------------------ reading
    @property
    def current(self) -> Served[H]:
        """The pairing served now (immutable; a later change publishes a new one)."""
        return self._current

    @property
    def handlers(self) -> Mapping[str, H]:
        """A read-only view of the current expert name → handler mapping."""
        return self._current.handlers

    def get(self, name: str) -> H:
        """The handler of expert ``name`` (for a forced route).

        Raises:
            UnknownExpertError: no handler is registered under ``name``.
        """
        handler = self._current.handlers.get(name)
        if handler is None:
            raise UnknownExpertError(f"unknown expert {name!r}; experts are {sorted(self._current.handlers)}")
        return handler

    def check(self) -> None:
        """Raise :class:`~ir3de.errors.ExpertMismatchError` unless the handlers cover exactly the
        router's experts and fallback (e.g. after ``router.configure(fallback=...)``: see
        :meth:`set_fallback`)."""
        names = handler_names(fitted_router(self.router))
        handlers = self._current.handlers
        missing = [n for n in names if n not in handlers]
        extra = [n for n in handlers if n not in names]
        if missing or extra:
            raise ExpertMismatchError(
                missing=missing, extra=extra, router_experts=self.router.experts, kind=self.kind
            )

    def route_with(self, decide: Callable[[Router], RouteDecision]) -> Routed[H]:
        """Decide with ``decide(router)`` and return the decision with its expert's handler, both from
        one router state. ``decide`` may run more than once (when experts change meanwhile), so it must
        have no side effect; conversation routing and other policies plug in here.

        Example:
            >>> registry.route_with(lambda r: r.route(messages[-1]["content"]))   # doctest: +SKIP
        """
        decision, served = self._consistent(lambda: decide(self.router))
        return Routed(decision, self._resolve(served, decision))

    def _consistent(self, decide: Callable[[], T]) -> tuple[T, Served[H]]:
        """``decide()`` and the pairing that was current throughout (no writer published meanwhile)."""
        for _ in range(OPTIMISTIC_ATTEMPTS):
            served = self._current
            result = decide()
            if self._current is served:
                return result, served
        with self._lock:  # writers keep changing: decide once while none can
            return decide(), self._current

    def route(self, text: str) -> Routed[H]:
        """Route ``text``; return the decision and the handler of the chosen expert.

        Raises:
            EmptyPromptError: ``text`` has no countable token and the router has no fallback.

        Example:
            >>> decision, handler = registry.route("Solve 2x = 4")   # doctest: +SKIP
        """
        return self.route_with(lambda router: router.route(text))

    def route_batch(self, texts: Sequence[str]) -> list[Routed[H] | Exception]:
        """Route many texts at once (one router state); an entry is the exception where a text cannot
        be routed (:class:`~ir3de.errors.EmptyPromptError`) or its expert has no handler."""

        def route_all() -> list[RouteDecision | Exception]:
            try:
                return list(self.router.route_batch(texts))
            except EmptyPromptError:  # one empty prompt: find which, route the others
                out: list[RouteDecision | Exception] = []
                for text in texts:
                    try:
                        out.append(self.router.route(text))
                    except EmptyPromptError as e:
                        out.append(e)
                return out

        decisions, served = self._consistent(route_all)
        results: list[Routed[H] | Exception] = []
        for decision in decisions:
            if isinstance(decision, Exception):
                results.append(decision)
                continue
            try:
                results.append(Routed(decision, self._resolve(served, decision)))
            except UnknownExpertError as e:
                results.append(e)
        return results

    def resolve(self, decision: RouteDecision) -> Routed[H]:
        """Attach the current handler of ``decision.expert`` to a decision made elsewhere.

        Prefer :meth:`route`/:meth:`route_with`: a decision made outside them may name an expert
        removed since (then this raises :class:`~ir3de.errors.UnknownExpertError`).
        """
        return Routed(decision, self._resolve(self._current, decision))

    def _resolve(self, served: Served[H], decision: RouteDecision) -> H:
        handler = served.handlers.get(decision.expert)
        if handler is None:
            raise UnknownExpertError(
                f"the router chose {decision.expert!r} but no {self.kind} is registered for it (registered: "
                f"{sorted(served.handlers)}); change experts through the registry's add/remove (the "
                f"adapter's add_expert/remove_expert), not on the Router directly, and register "
                f"{_a(self.kind)} for the router's fallback"
            )
        return handler

    # ------------------------------------------------------------------ writing
    def add(self, name: str, handler: H, texts: Iterable[str], description: str = "") -> None:
        """Add expert ``name`` to the router (its statistics counted from ``texts``) with ``handler``.

        Example:
            >>> registry.add("legal", legal_llm, legal_texts, "contracts and case law")   # doctest: +SKIP
        """
        self._add(name, handler, lambda: self.router.add_expert(name, texts, description=description))

    def add_counts(
        self,
        name: str,
        handler: H,
        counts: ExpertCounts,
        description: str = "",
        traffic: ExpertCounts | None = None,
    ) -> None:
        """Like :meth:`add`, from precomputed token counts (a stat pack, with its learned ``traffic``
        when it carries some) on the router's tokenizer; one solve."""
        self._add(
            name,
            handler,
            lambda: self.router.add_expert(name, ExpertStatistics(counts, description, traffic)),
        )

    def _add(self, name: str, handler: H, change: Callable[[], object]) -> None:
        self._check(name, handler, new=True)
        with self._lock:
            before = self._current.handlers
            if name in before:
                raise ExpertError(
                    f"expert {name!r} already has {_a(self.kind)}; use update_expert({name!r}, ...) to add "
                    "text or replace it, or remove it first"
                )
            during = {**before, name: handler}
            self._change(during, during, change)

    def update(self, name: str, more_texts: Iterable[str] | None = None, *, handler: H | None = None) -> None:
        """Add ``more_texts`` to expert ``name``'s statistics and/or replace its handler.

        Example:
            >>> registry.update("math", more_math_texts, handler=bigger_math_llm)   # doctest: +SKIP
        """
        if more_texts is None and handler is None:
            raise InvalidInputError(f"update needs more_texts, a new {self.kind}, or both")
        if handler is not None:
            self._check(name, handler)
        with self._lock:
            before = self._current.handlers
            if name not in before:
                raise UnknownExpertError(f"unknown expert {name!r}; experts are {sorted(before)}")
            after = dict(before) if handler is None else {**before, name: handler}
            change = (
                None
                if more_texts is None
                else (lambda: self.router.add_expert(name, more_texts, update=True))
            )
            self._change(after, after, change)

    def remove(self, name: str) -> None:
        """Drop expert ``name`` from the router and its handler; decisions made before still resolve.

        Raises:
            ExpertError: ``name`` is the router's fallback (configure another one first).
            UnknownExpertError: the router has no expert ``name``.
        """
        with self._lock:
            if name == self.router.config.fallback:
                raise ExpertError(
                    f"{name!r} is the router's fallback expert; set another fallback (set_fallback) first"
                )
            before = self._current.handlers
            after = {n: h for n, h in before.items() if n != name}
            self._change(before, after, lambda: self.router.remove_expert(name))

    def set_fallback(self, name: str | None, handler: H | None = None) -> None:
        """Make ``name`` the router's fallback (low confidence, no countable token) with ``handler``.

        ``handler`` may be left out when ``name`` already has one; ``None`` turns the fallback off.
        A previous fallback that is not an expert loses its handler.

        Example:
            >>> registry.set_fallback("general", general_llm)   # doctest: +SKIP
        """
        if name is None and handler is not None:
            raise InvalidInputError(f"a fallback {self.kind} needs a fallback name")
        if name is not None and handler is not None:
            self._check(name, handler)
        with self._lock:
            before = self._current.handlers
            if name is not None and handler is None and name not in before:
                _check_name(name)
                raise InvalidInputError(f"the fallback {name!r} has no {self.kind}; pass one")
            during = dict(before)
            if name is not None and handler is not None:  # a handler always comes with a name (above)
                during[name] = handler
            old = self.router.config.fallback
            drop = old if old is not None and old != name and old not in self.router.experts else None
            after = {n: h for n, h in during.items() if n != drop}
            self._change(during, after, lambda: self.router.configure(fallback=name))

    def learn(
        self,
        prompts: Iterable[str] | Mapping[str, Iterable[str]] | Any,
        experts: str | Iterable[str] | None = None,
        *,
        create_experts: bool = False,
        handlers: Mapping[str, H] | None = None,
    ) -> None:
        """Learn served prompts with their correct expert (:meth:`ir3de.Router.learn`) under this
        registry's lock and publication rules: routing threads see the router before or after, never a mix.

        With ``create_experts`` a label that is not an expert becomes one; it needs a handler in
        ``handlers`` (unless it is the router's fallback, which has one). Nothing changes on an error.

        Example:
            >>> registry.learn(["How do I file my taxes?"], ["finance"])                       # doctest: +SKIP
            >>> registry.learn(["What is a stanza?"], "poetry", create_experts=True, handlers={"poetry": llm})  # doctest: +SKIP
        """
        groups = group_prompts(prompts, experts)
        extra = dict(handlers or {})
        with self._lock:
            before = self._current.handlers
            new = check_labels(groups, self.router.experts, create=create_experts)
            unused = [n for n in extra if n not in new]
            if unused:
                raise InvalidInputError(
                    f"handlers were given for {unused}, which are not new experts of this learn call; pass "
                    f"handlers only for labels that create_experts=True creates"
                )
            missing = [n for n in new if n not in extra and n not in before]
            if missing:
                raise ExpertError(
                    f"new expert(s) {missing} need {_a(self.kind)} each: pass handlers={{name: {self.kind}}} "
                    "(the adapters' feedback(..., llm=...)) together with create_experts=True"
                )
            for name, handler in extra.items():
                self._check(name, handler, new=name not in before)
            during = {**before, **extra}
            self._change(during, during, lambda: self.router.learn(groups, create_experts=create_experts))

    def feedback(
        self,
        *,
        call_id: Any = None,
        prompt: str | None = None,
        expert: str,
        create_experts: bool = False,
        handler: H | None = None,
    ) -> Feedback:
        """Learn the correct ``expert`` of a routed call remembered in :attr:`calls` (by ``call_id``)
        or of a ``prompt``; returns what was learned (:class:`ir3de.serving.feedback.Feedback`).

        Raises:
            UnknownCallError: ``call_id`` is not among the remembered calls.
            UnknownExpertError: ``expert`` is not an expert (and ``create_experts`` is false).

        Example:
            >>> registry.feedback(call_id=run_id, expert="math").fixed   # doctest: +SKIP
            True
        """

        def learn(text: str, name: str) -> None:
            self.learn(
                [text],
                [name],
                create_experts=create_experts,
                handlers=None if handler is None else {name: handler},
            )

        return apply_feedback(self.router, learn, self.calls, call_id=call_id, prompt=prompt, expert=expert)

    def forget_traffic(self, expert: str | None = None) -> None:
        """Forget learned traffic (:meth:`ir3de.Router.forget_traffic`) under this registry's lock.

        Example:
            >>> registry.forget_traffic("math")   # doctest: +SKIP
        """
        with self._lock:
            current = self._current.handlers
            self._change(current, current, lambda: self.router.forget_traffic(expert))

    def adapt(self, prompts: Iterable[str] | None = None, **options: Any) -> AdaptationReport:
        """Adapt the router to unlabelled served prompts (:meth:`ir3de.Router.adapt`) under this
        registry's lock: routing threads see the router before or after, never a mix.

        ``prompts=None`` adapts on the routed calls remembered in :attr:`calls` that no earlier
        adaptation used (the text a call's feedback would learn: its prompt, or its chat's last user
        turn), and marks them used. ``options`` go to :meth:`ir3de.Router.adapt`.

        Raises:
            InvalidInputError: ``prompts=None`` and no routed call is left to adapt on.

        Example:
            >>> registry.adapt().prompts_used        # the calls routed since the last adapt()  # doctest: +SKIP
            412
        """
        with self._lock:
            if prompts is None:
                return adapt_recent(self.calls, lambda recent: self.adapt(recent, **options))
            current = self.handlers  # the pairing stays: adapting changes no expert
            result: list[AdaptationReport] = []
            adapt = self.router.adapt
            texts = prompts
            self._change(current, current, lambda: result.append(adapt(texts, **options)))
            return result[0]

    def forget_adaptation(self) -> None:
        """Forget what adaptation taught (:meth:`ir3de.Router.forget_adaptation`) under this
        registry's lock; labelled traffic is kept.

        Example:
            >>> registry.forget_adaptation()   # doctest: +SKIP
        """
        with self._lock:
            current = self.handlers  # the pairing stays: adapting changes no expert
            self._change(current, current, self.router.forget_adaptation)

    def tune(
        self,
        held_out: Mapping[str, Sequence[str]],
        target_precision: float = 0.95,
        *,
        per_expert: bool = False,
        abstain: str | None = None,
    ) -> TuningResult:
        """Tune confidence and abstain threshold(s) on labelled ``held_out`` prompts
        (:meth:`ir3de.Router.tune`) under this registry's lock: routing threads see the settings
        before or after, never a mix. The fallback that low-confidence prompts go to (``abstain``, else
        the router's) must already have a handler (an expert, or :meth:`set_fallback`).

        Example:
            >>> registry.tune({"math": math_dev, "code": code_dev}, 0.95, abstain="math").coverage  # doctest: +SKIP
            0.91
        """
        with self._lock:
            current = self._current.handlers
            fallback = abstain if abstain is not None else self.router.config.fallback
            if fallback is not None and fallback not in current:
                raise InvalidInputError(
                    f"the fallback {fallback!r} has no {self.kind}: abstain to an expert, or "
                    "set_fallback(name, handler) first"
                )
            result: list[TuningResult] = []
            tune = self.router.tune
            self._change(
                current,
                current,
                lambda: result.append(
                    tune(held_out, target_precision, per_expert=per_expert, abstain=abstain)
                ),
            )
            return result[0]

    def replace(self, router: Router, handlers: Mapping[str, H]) -> None:
        """Swap in another router and its whole expert → handler map in one step (e.g. a newer
        revision of the same router loaded from disk, see :mod:`ir3de.artifacts.revisions`).

        Routing threads see the old router with the old handlers or the new router with the new ones:
        while the swap is published, handlers of both are served, so a request routed on the old
        router to an expert the new one dropped still resolves. Nothing changes on an error.

        Raises:
            ExpertMismatchError: ``handlers`` do not cover exactly ``router``'s experts and fallback.

        Example:
            >>> registry.replace(Router.from_pretrained("state/revisions/8"), upstreams)   # doctest: +SKIP
        """
        router = fitted_router(router)
        if not isinstance(handlers, Mapping):
            raise InvalidInputError(
                f"handlers must be a mapping expert name → {self.kind}, got {type(handlers).__name__}"
            )
        for name, handler in handlers.items():
            self._check(name, handler)
        names = handler_names(router)
        missing = [n for n in names if n not in handlers]
        extra = [n for n in handlers if n not in names]
        if missing or extra:
            raise ExpertMismatchError(
                missing=missing, extra=extra, router_experts=router.experts, kind=self.kind
            )
        with self._lock:
            before = self._current.handlers

            def swap() -> None:
                self.router = router

            self._change({**before, **handlers}, handlers, swap)

    def _change(
        self, during: Mapping[str, H], after: Mapping[str, H], change: Callable[[], object] | None
    ) -> None:
        """Publish ``during`` (valid before and after), run the router change, publish ``after``.

        Called with the lock held. Every publication is a new :class:`Served` object, so a reader that sees
        the same one before and after routing knows its decision came from its window.
        If the change raises, the previous pairing is restored (the router is unchanged then).
        """
        old = self._current
        self._current = self._publish(during)
        try:
            if change is not None:
                change()
        except BaseException:
            self._current = old
            raise
        self._current = self._publish(after)

    def _publish(self, handlers: Mapping[str, H]) -> Served[H]:
        return Served(
            MappingProxyType(dict(handlers)), tuple(self.router.experts), self.router.config.fallback
        )

    def _check(self, name: object, handler: object, *, new: bool = False) -> None:
        _check_name(name, new=new)
        if handler is None:
            raise InvalidInputError(f"expert {name!r} has no {self.kind} (got None)")
        if self._check_handler is not None:
            self._check_handler(name, handler)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        handlers = ", ".join(f"{n}: {type(h).__name__}" for n, h in self._current.handlers.items())
        return f"ExpertRegistry({{{handlers}}})"
