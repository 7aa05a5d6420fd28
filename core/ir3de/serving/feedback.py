"""Feedback on routed calls: remember recent routes by call id, learn the correct expert later.

An app serving through an adapter (LangChain, LlamaIndex, the gateway) learns, after the fact, which
expert *should* have answered a call — a user's thumbs-down, a grader, a human reviewer. This module
is the framework-free part both adapters share:

* :class:`RecentRoutes` — a small, bounded, thread-safe record of recent routed calls: call id →
  the text feedback would learn and the expert the router chose (least recently *recorded* evicted
  first). An adapter records each call under its id (LangChain: the run id; LlamaIndex: the route
  event's id) and, optionally, under aliases (the parent run id).
* :func:`apply_feedback` — resolve a call id (or take a prompt), learn ``(text, correct expert)``
  with the given ``learn`` callable (the core :class:`~ir3de.serving.registry.ExpertRegistry`'s, or a bare
  router's :meth:`~ir3de.Router.learn`) and report what was learned as a :class:`Feedback`.

**What a conversation teaches.** A routed chat is recorded with its last *user* turn as the text to
learn: the label says which expert should answer *this* request; earlier user turns may belong to
another expert (a conversation that switched), and assistant turns are the experts' own output, so
learning them would teach the router the answering model's style rather than the user's request.

Example:
    >>> calls = RecentRoutes(maxsize=2)
    >>> _ = calls.record("run-1", "Solve 2x = 4", "code")
    >>> calls.get("run-1").expert, len(calls)
    ('code', 1)
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ir3de.errors import EmptyPromptError, InvalidInputError, UnknownCallError

if TYPE_CHECKING:
    from ir3de.router import Router

__all__ = [
    "DEFAULT_MAXSIZE",
    "Feedback",
    "RecentRoutes",
    "RoutedCall",
    "adapt_recent",
    "apply_feedback",
    "user_text",
]

R = TypeVar("R")

#: Routed calls an adapter remembers for feedback by default.
DEFAULT_MAXSIZE = 4096


def _key(call_id: object) -> str:
    """A call id as the string it is stored under (a ``UUID`` and its ``str`` are the same call)."""
    if isinstance(call_id, uuid.UUID):
        return str(call_id)
    if isinstance(call_id, str) and call_id:
        return call_id
    raise InvalidInputError(
        f"a call id is a UUID or a non-empty str (a run id, a routing id), got {type(call_id).__name__} "
        f"{call_id!r}"
    )


def user_text(turns: Iterable[tuple[Any, str]]) -> str:
    """The last user turn of ``(role, text)`` turns (what feedback on a routed chat learns); '' if none.

    Example:
        >>> user_text([("user", "2+2?"), ("assistant", "4"), ("user", "and 3+3?")])
        'and 3+3?'
    """
    last = ""
    for role, text in turns:
        if str(getattr(role, "value", role)).lower() in ("user", "human"):
            last = text
    return last


@dataclass(frozen=True)
class RoutedCall:
    """One routed call as remembered for feedback.

    Attributes:
        call_id: its id (a run id, a routing id).
        text: the text feedback learns: the prompt, or the routed chat's last user turn.
        expert: the expert the router chose (the fallback name when it fell back; a forced expert).
        confidence: the decision's confidence (``None`` for a forced expert).
        turns: the routed chat's ``(role, text)`` turns (empty for a single prompt).
        order: its place in the recording order (1, 2, ...; see :meth:`RecentRoutes.unadapted`).
    """

    call_id: str
    text: str
    expert: str
    confidence: float | None = None
    turns: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    order: int = field(default=0, repr=False, compare=False)


class RecentRoutes:
    """A bounded, thread-safe record of recent routed calls for feedback (LRU by recording order).

    Args:
        maxsize: how many calls are remembered; the oldest are dropped first. Aliases (e.g. a parent
            run id) are bounded by the same number.

    An alias names the calls recorded under it: feedback by an alias that covers exactly one
    remembered call resolves to it; one that covers several raises
    :class:`~ir3de.errors.UnknownCallError` listing their ids (pass one of them).

    Example:
        >>> calls = RecentRoutes(maxsize=100)
        >>> _ = calls.record("child", "def f(x):", "math", aliases=["parent"])
        >>> calls.get("parent").call_id
        'child'
    """

    def __init__(self, maxsize: int = DEFAULT_MAXSIZE) -> None:
        self._lock = threading.Lock()
        self._calls: OrderedDict[str, RoutedCall] = OrderedDict()
        self._aliases: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._maxsize = 0
        self._recorded = 0  # calls recorded so far: the next one's order is this + 1
        self._adapted = 0  # calls up to this order were adapted on (:meth:`mark_adapted`)
        self.maxsize = maxsize

    @property
    def maxsize(self) -> int:
        """How many calls are remembered (setting it lower drops the oldest at once)."""
        return self._maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInputError(f"maxsize must be a positive int, got {value!r}")
        with self._lock:
            self._maxsize = value
            self._trim()

    def _trim(self) -> None:
        while len(self._calls) > self._maxsize:
            self._calls.popitem(last=False)
        while len(self._aliases) > self._maxsize:
            self._aliases.popitem(last=False)

    def record(
        self,
        call_id: Hashable,
        text: str,
        expert: str,
        *,
        confidence: float | None = None,
        turns: Sequence[tuple[Any, str]] = (),
        aliases: Iterable[Hashable | None] = (),
    ) -> RoutedCall:
        """Remember a routed call under ``call_id`` (and each non-``None`` alias); returns the record."""
        key = _key(call_id)
        turns = tuple((str(getattr(r, "value", r)), str(t)) for r, t in turns)
        alias_keys = [_key(a) for a in aliases if a is not None]
        with self._lock:
            self._recorded += 1
            call = RoutedCall(
                key,
                str(text),
                str(expert),
                None if confidence is None else float(confidence),
                turns,
                self._recorded,
            )
            self._calls.pop(key, None)
            self._calls[key] = call
            for alias in alias_keys:
                if alias == key:
                    continue
                known = self._aliases.pop(alias, ())
                self._aliases[alias] = (*[k for k in known if k != key], key)
            self._trim()
        return call

    def get(self, call_id: Hashable) -> RoutedCall:
        """The remembered call ``call_id`` (or the one call its alias covers).

        Raises:
            UnknownCallError: no such call is remembered (or the alias covers several calls).
        """
        key = _key(call_id)
        with self._lock:
            call = self._calls.get(key)
            if call is not None:
                return call
            covered = [k for k in self._aliases.get(key, ()) if k in self._calls]
            size = len(self._calls)
        if len(covered) == 1:
            return self.get(covered[0])
        if covered:
            raise UnknownCallError(
                f"run {key!r} covers {len(covered)} routed calls ({covered}); give feedback on one of them "
                "by its own run id (e.g. the run id in the answer's metadata)"
            )
        raise UnknownCallError(
            f"no routed call {key!r} among the {size} most recent ones remembered for feedback (maxsize "
            f"{self._maxsize}); pass the id of a call this object routed (its run id / routing id), "
            "raise recent_calls.maxsize if it was evicted, or give feedback by prompt=..."
        )

    def __contains__(self, call_id: object) -> bool:
        try:
            self.get(call_id)
        except (UnknownCallError, InvalidInputError):
            return False
        return True

    def __len__(self) -> int:
        return len(self._calls)

    def calls(self) -> list[RoutedCall]:
        """The remembered calls, oldest first (a copy)."""
        with self._lock:
            return list(self._calls.values())

    def unadapted(self) -> tuple[list[RoutedCall], int]:
        """The remembered calls recorded since :meth:`mark_adapted` last marked, oldest first, and the
        mark that covers them: adapt on their texts, then pass the mark to :meth:`mark_adapted`, so the
        next adaptation does not learn them twice (:meth:`ir3de.Router.adapt` is additive).

        Example:
            >>> calls = RecentRoutes()
            >>> _ = calls.record("a", "2+2?", "math"); _ = calls.record("b", "def f():", "code")
            >>> pending, mark = calls.unadapted()
            >>> [c.text for c in pending], mark
            (['2+2?', 'def f():'], 2)
            >>> calls.mark_adapted(mark); calls.unadapted()
            ([], 2)
        """
        with self._lock:
            return [c for c in self._calls.values() if c.order > self._adapted], self._recorded

    def mark_adapted(self, mark: int) -> None:
        """Mark the calls up to ``mark`` (from :meth:`unadapted`) as adapted on."""
        with self._lock:
            self._adapted = max(self._adapted, int(mark))

    def clear(self) -> None:
        """Forget every remembered call."""
        with self._lock:
            self._calls.clear()
            self._aliases.clear()

    def __repr__(self) -> str:
        return f"RecentRoutes({len(self)} of maxsize {self._maxsize})"


@dataclass(frozen=True)
class Feedback:
    """What one feedback taught the router.

    Attributes:
        prompt: the text learned (a call's prompt, or its chat's last user turn).
        expert: the correct expert it was learned for.
        routed: the expert the call had been routed to (feedback by ``prompt``: the router's decision
            for it just before learning; ``None`` when it could not be routed).
        now: the router's decision for the prompt right after learning (``None``: not routable).
        call_id: the routed call's id (``None`` for feedback by prompt).
        created: ``expert`` was not an expert and was created from this prompt (``create_experts``).
        traffic_prompts: prompts ``expert`` has learned as traffic so far.

    Example:
        >>> Feedback("Solve 2x = 4", "math", "code", "math", "run-1", False, 1).corrected
        True
    """

    prompt: str
    expert: str
    routed: str | None
    now: str | None
    call_id: str | None
    created: bool
    traffic_prompts: int

    @property
    def corrected(self) -> bool:
        """The call had been routed to another expert than the correct one."""
        return self.routed != self.expert

    @property
    def fixed(self) -> bool:
        """The router now routes the prompt to the correct expert."""
        return self.now == self.expert

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        return {
            "prompt": self.prompt,
            "expert": self.expert,
            "routed": self.routed,
            "now": self.now,
            "call_id": self.call_id,
            "created": self.created,
            "traffic_prompts": self.traffic_prompts,
            "corrected": self.corrected,
            "fixed": self.fixed,
        }


def _decide(router: Router, text: str) -> str | None:
    try:
        return router.route(text).expert
    except EmptyPromptError:
        return None


def apply_feedback(
    router: Router,
    learn: Callable[[str, str], object],
    calls: RecentRoutes,
    *,
    call_id: Hashable | None = None,
    prompt: str | None = None,
    expert: str,
) -> Feedback:
    """Learn the correct ``expert`` of a routed call (by ``call_id``) or of a ``prompt``.

    ``learn(text, expert)`` does the learning (it raises :class:`~ir3de.errors.UnknownExpertError`
    for an unknown expert unless it creates experts); ``router`` is only read, before and after, to
    report the decisions.

    Raises:
        InvalidInputError: neither or both of ``call_id`` and ``prompt``; a prompt or an expert that
            is not a non-empty ``str``; a routed chat with no user turn to learn.
        UnknownCallError: ``call_id`` is not remembered in ``calls``.

    Example:
        >>> apply_feedback(router, router.learn, calls, call_id=run_id, expert="math")  # doctest: +SKIP
    """
    if (call_id is None) == (prompt is None):
        raise InvalidInputError(
            "give feedback on one routed call: pass its run id (run_id=... / call_id=...) or the "
            "prompt=... itself, not both and not neither"
        )
    if not isinstance(expert, str) or not expert.strip():
        raise InvalidInputError(f"expert must be a non-empty str (the correct expert), got {expert!r}")
    key: str | None
    routed: str | None
    if call_id is not None:
        call = calls.get(call_id)
        text, routed, key = call.text, call.expert, call.call_id
        if not text.strip():
            raise InvalidInputError(
                f"routed call {key!r} has no user text to learn (a chat without a user turn); give "
                "feedback by prompt=... instead"
            )
    else:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"the prompt is a {type(prompt).__name__}; prompts must be str")
        text, key = prompt, None
        routed = _decide(router, text)
    created = expert not in router.experts
    learn(text, expert)
    summary = router.traffic.get(expert)
    return Feedback(
        prompt=text,
        expert=expert,
        routed=routed,
        now=_decide(router, text),
        call_id=key,
        created=created,
        traffic_prompts=0 if summary is None else int(summary.num_prompts),
    )


def adapt_recent(calls: RecentRoutes, adapt: Callable[[list[str]], R]) -> R:
    """Adapt on the texts of the routed calls no earlier adaptation used (:meth:`RecentRoutes.unadapted`)
    with ``adapt(prompts)`` (a router's or a registry's ``adapt``), then mark them used. Hold the
    adapter's lock around it, so two adaptations never take the same calls.

    Raises:
        InvalidInputError: no routed call with text is left to adapt on.

    Example:
        >>> adapt_recent(calls, router.adapt).prompts_used   # doctest: +SKIP
        128
    """
    pending, mark = calls.unadapted()
    prompts = [c.text for c in pending if c.text.strip()]
    if not prompts:
        raise InvalidInputError(
            f"no routed call to adapt on: the {len(calls)} calls remembered (recent_calls, maxsize "
            f"{calls.maxsize}) were all adapted on already or hold no text; route more calls first, or "
            "pass the prompts: adapt(prompts)"
        )
    result = adapt(prompts)
    calls.mark_adapted(mark)
    return result
