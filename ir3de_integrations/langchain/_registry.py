"""The shared core of the LangChain faces: which text is routed, and a thread-safe expert registry.

The registry pairs an :class:`ir3de.Router` with the LangChain runnables its expert names stand for,
and keeps the two consistent while experts come and go at run time (see :class:`ExpertRegistry`).
No routing math lives here: every decision comes from :meth:`ir3de.Router.route`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable

from ir3de.errors import EmptyPromptError, ExpertError, InvalidInputError, NotFittedError, UnknownExpertError

from .errors import ExpertMismatchError

if TYPE_CHECKING:
    from ir3de import RouteDecision, Router

RouteOn = Literal["last_user", "conversation"] | int
"""What is routed: the last user message, the whole conversation (system messages excluded), or the
last ``n`` turns (an ``int``)."""

_MAX_OPTIMISTIC_TRIES = 64


def _message_text(message: BaseMessage) -> str:
    return str(message.text)


def _check_route_on(route_on: Any) -> RouteOn:
    if route_on in ("last_user", "conversation"):
        return route_on  # type: ignore[no-any-return]
    if isinstance(route_on, int) and not isinstance(route_on, bool) and route_on >= 1:
        return route_on
    raise InvalidInputError(
        f"route_on must be 'last_user', 'conversation' or a positive int (the last n turns), got {route_on!r}"
    )


def messages_text(messages: Sequence[BaseMessage], route_on: RouteOn = "last_user") -> str:
    """The text of ``messages`` that is routed.

    ``"last_user"``: the last human message ('' when there is none); ``"conversation"``: every
    non-system message, one per line; ``n``: the last ``n`` non-system messages.

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage
        >>> messages_text([HumanMessage("2+2?"), AIMessage("4"), HumanMessage("and 3+3?")])
        'and 3+3?'
        >>> messages_text([HumanMessage("2+2?"), AIMessage("4")], route_on="conversation")
        '2+2?\\n4'
    """
    if route_on == "last_user":
        for message in reversed(messages):
            if isinstance(message, HumanMessage) or message.type == "human":
                return _message_text(message)
        return ""
    turns = [m for m in messages if not isinstance(m, SystemMessage) and m.type != "system"]
    if isinstance(route_on, int):
        turns = turns[-route_on:]
    return "\n".join(_message_text(m) for m in turns)


def input_text(input: Any, *, input_key: str = "input", route_on: RouteOn = "last_user") -> str:
    """The text routed for a LangChain input: a ``str``, a ``PromptValue``, a message, a list of
    messages (or message-like tuples/dicts), or a ``dict`` whose ``input_key`` holds one of those.

    Example:
        >>> input_text({"question": "Solve 2x = 4"}, input_key="question")
        'Solve 2x = 4'
    """
    if isinstance(input, str):
        return input
    if isinstance(input, PromptValue):
        return messages_text(input.to_messages(), route_on)
    if isinstance(input, BaseMessage):
        return messages_text([input], route_on)
    if isinstance(input, Mapping):
        if input_key not in input:
            raise InvalidInputError(
                f"the input dict has no key {input_key!r} (keys: {sorted(map(str, input))}); "
                f"pass input_key='<the key that holds the text>'"
            )
        value = input[input_key]
        if isinstance(value, Mapping):
            raise InvalidInputError(f"input[{input_key!r}] is a dict; it must hold a str or messages")
        return input_text(value, input_key=input_key, route_on=route_on)
    if isinstance(input, Sequence) and not isinstance(input, (bytes, bytearray)):
        try:
            messages = convert_to_messages(input)  # type: ignore[arg-type]
        except (ValueError, TypeError, NotImplementedError) as e:
            raise InvalidInputError(f"cannot read the input list as chat messages ({e})") from e
        return messages_text(messages, route_on)
    raise InvalidInputError(
        f"cannot route a {type(input).__name__}: pass a str, a PromptValue, a list of messages or a dict "
        "(with input_key naming the key that holds the text)"
    )


@dataclass(frozen=True)
class _Snapshot:
    """Expert runnables valid for every router state that may be live while this snapshot is current."""

    experts: Mapping[str, Runnable[Any, Any]]


def check_experts(router: Router, experts: Mapping[str, Any]) -> None:
    """Raise :class:`ExpertMismatchError` unless ``experts`` covers exactly the router's experts
    (plus the router's ``fallback`` expert when one is configured)."""
    if not router.is_fitted:
        raise NotFittedError(
            "the router is not fitted: fit it (or load one with Router.from_pretrained) first"
        )
    names = list(router.experts)
    fallback = router.config.fallback
    allowed = set(names) | ({fallback} if fallback is not None else set())
    missing = [n for n in names if n not in experts]
    if fallback is not None and fallback not in experts:
        missing.append(fallback)
    extra = sorted(str(n) for n in experts if n not in allowed)
    if missing or extra:
        raise ExpertMismatchError(missing=missing, extra=extra, router_experts=names)


class ExpertRegistry:
    """A router plus the runnable behind each expert name, consistent under concurrent change.

    Routing stays lock-free: a reader takes the current snapshot, routes, and keeps the decision
    only if the snapshot is still current (else it routes again). A writer (``add``/``remove``)
    first publishes a snapshot valid for the router state both before and after its change, then
    mutates the router, then publishes the final snapshot. So the runnable is always resolved from a
    snapshot that holds every expert the deciding router state knew — including one removed
    meanwhile, which still answers the calls routed to it before its removal.

    Example:
        >>> registry = ExpertRegistry(router, {"math": math_llm, "code": code_llm})   # doctest: +SKIP
        >>> decision, llm = registry.decide("Solve 2x = 4")                             # doctest: +SKIP
    """

    def __init__(self, router: Router, experts: Mapping[str, Runnable[Any, Any]]) -> None:
        from ir3de import Router

        if not isinstance(router, Router):
            raise InvalidInputError(f"router must be an ir3de.Router, got {type(router).__name__}")
        if not isinstance(experts, Mapping):
            raise InvalidInputError(
                f"experts must be a mapping expert name → Runnable, got {type(experts).__name__}"
            )
        for name, runnable in experts.items():
            if not isinstance(runnable, Runnable):
                raise InvalidInputError(
                    f"expert {name!r} is a {type(runnable).__name__}, not a LangChain Runnable "
                    "(chat model, LLM or chain)"
                )
        check_experts(router, experts)
        self.router = router
        self._write_lock = threading.RLock()
        self._snapshot = _Snapshot(MappingProxyType(dict(experts)))

    # ------------------------------------------------------------------ reading
    @property
    def experts(self) -> dict[str, Runnable[Any, Any]]:
        """The current expert name → runnable mapping (a copy)."""
        return dict(self._snapshot.experts)

    def _consistent(self, route: Callable[[], Any]) -> tuple[Any, _Snapshot]:
        for _ in range(_MAX_OPTIMISTIC_TRIES):
            snapshot = self._snapshot
            result = route()
            if self._snapshot is snapshot:
                return result, snapshot
        with self._write_lock:  # writers keep changing: route once while none can
            return route(), self._snapshot

    @staticmethod
    def _resolve(snapshot: _Snapshot, decision: RouteDecision) -> Runnable[Any, Any]:
        runnable = snapshot.experts.get(decision.expert)
        if runnable is None:
            raise UnknownExpertError(
                f"the router chose {decision.expert!r}, which has no registered runnable (experts: "
                f"{sorted(snapshot.experts)}); change experts through the adapter's add_expert/remove_expert "
                "(not on the Router directly), and register the router's fallback expert"
            )
        return runnable

    def decide(self, text: str) -> tuple[RouteDecision, Runnable[Any, Any]]:
        """Route ``text``; return the decision and the runnable of the chosen expert (same snapshot)."""
        decision, snapshot = self._consistent(lambda: self.router.route(text))
        return decision, self._resolve(snapshot, decision)

    def decide_batch(
        self, texts: Sequence[str]
    ) -> list[tuple[RouteDecision, Runnable[Any, Any]] | Exception]:
        """Route many texts at once; an entry is an exception where that text cannot be routed."""

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

        decisions, snapshot = self._consistent(route_all)
        results: list[tuple[RouteDecision, Runnable[Any, Any]] | Exception] = []
        for d in decisions:
            if isinstance(d, Exception):
                results.append(d)
            else:
                try:
                    results.append((d, self._resolve(snapshot, d)))
                except UnknownExpertError as e:
                    results.append(e)
        return results

    def get(self, name: str) -> Runnable[Any, Any]:
        """The runnable of expert ``name`` (for a forced route)."""
        runnable = self._snapshot.experts.get(name)
        if runnable is None:
            raise UnknownExpertError(f"unknown expert {name!r}; experts are {sorted(self._snapshot.experts)}")
        return runnable

    # ------------------------------------------------------------------ writing
    def add(
        self, name: str, runnable: Runnable[Any, Any], texts: Iterable[str], description: str = ""
    ) -> None:
        """Register ``runnable`` as expert ``name`` and add its statistics from ``texts``."""
        if not isinstance(runnable, Runnable):
            raise InvalidInputError(
                f"expert {name!r} must be a LangChain Runnable, got {type(runnable).__name__}"
            )
        with self._write_lock:
            old = self._snapshot
            if name in old.experts:
                raise ExpertError(
                    f"expert {name!r} already exists; use update_expert({name!r}, more_texts) to add text "
                    "or remove_expert first"
                )
            self._snapshot = _Snapshot(MappingProxyType({**old.experts, name: runnable}))
            try:
                self.router.add_expert(name, texts, description=description)
            except BaseException:
                self._snapshot = old
                raise
            self._snapshot = _Snapshot(self._snapshot.experts)

    def remove(self, name: str) -> None:
        """Drop expert ``name`` from the router and the registry."""
        with self._write_lock:
            old = self._snapshot
            if name == self.router.config.fallback:
                raise ExpertError(
                    f"{name!r} is the router's fallback expert; configure another fallback before removing it"
                )
            self._snapshot = _Snapshot(old.experts)  # valid before and after: still holds `name`
            try:
                self.router.remove_expert(name)
            except BaseException:
                self._snapshot = old
                raise
            self._snapshot = _Snapshot(MappingProxyType({k: v for k, v in old.experts.items() if k != name}))

    def update(self, name: str, more_texts: Iterable[str]) -> None:
        """Add more text to expert ``name``'s statistics (its runnable is unchanged)."""
        with self._write_lock:
            if name not in self._snapshot.experts:
                raise UnknownExpertError(
                    f"unknown expert {name!r}; experts are {sorted(self._snapshot.experts)}"
                )
            self.router.update_expert(name, more_texts)
