"""Which expert serves a chat request: the messages → one decision, with per-conversation memory.

The decision is the core's conversation routing (:meth:`ir3de.Router.route_conversation`: decayed
per-turn evidence, role weights, stickiness to the session's previous expert), with the session's
previous expert kept in an :class:`ir3de.serving.sessions.SessionStore` (expiry, size bound,
thread-safe). In the gateway it runs through the core :class:`ir3de.serving.registry.ExpertRegistry`
(:func:`route_request`), so the decision and its expert's upstream come from one consistent
pairing of the registry while admin calls add or remove experts. On top of the core decision the gateway applies
its own low-confidence fallback (``fallback``/``threshold`` of the gateway config). The session is
written once, after the decision is final (fallback routes are not remembered, as in
:func:`ir3de.serving.sessions.route_session`).

Example:
    >>> sessions = SessionStore(ttl=3600, max_sessions=100)
    >>> d = route_messages(router, [{"role": "user", "content": "Solve 3x + 5 = 11"}],
    ...                    session_id="s1", sessions=sessions)        # doctest: +SKIP
    >>> d.expert, d.switched                                           # doctest: +SKIP
    ('math', False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ir3de.decision import RouteDecision
from ir3de.errors import EmptyPromptError, MessageError, UnknownExpertError
from ir3de.routing.conversation import ConversationSettings
from ir3de.serving.registry import ExpertRegistry
from ir3de.serving.sessions import SessionStore

from .errors import GatewayError

__all__ = ["GatewayDecision", "SessionStore", "message_text", "route_messages", "route_request"]

H = TypeVar("H")


@dataclass(frozen=True, slots=True)
class GatewayDecision:
    """The route of one request.

    Attributes:
        expert: the expert that serves it (after the low-confidence fallback).
        confidence: the router's confidence in its top expert (0 for unroutable text).
        top_expert: the router's choice before any fallback (``None`` for unroutable text).
        abstained: True when the fallback was taken (low confidence or no routable text).
        switched: True when this session's previous request went to another expert.
        routed: False when the request named an expert directly (no routing happened).
        reason: one line saying why this expert (the conversation's stickiness, or the fallback).
        margin: the top expert's score lead over the session's previous expert (``None`` without one).
        required_margin: the lead a switch away from the previous expert needs (``None`` when no
            routing happened).
        previous_expert: the session's previous expert (``None`` for a new or unnamed session).
    """

    expert: str
    confidence: float
    top_expert: str | None
    abstained: bool = False
    switched: bool = False
    routed: bool = True
    reason: str | None = None
    margin: float | None = None
    required_margin: float | None = None
    previous_expert: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "expert": self.expert,
            "confidence": self.confidence,
            "top_expert": self.top_expert,
            "abstained": self.abstained,
            "switched": self.switched,
            "routed": self.routed,
            "reason": self.reason,
            "margin": self.margin,
            "required_margin": self.required_margin,
            "previous_expert": self.previous_expert,
        }


def message_text(message: Any) -> str:
    """The text of one chat message: a string ``content`` or the ``text`` parts of a list of parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _turns(messages: Sequence[Any]) -> list[tuple[Any, str]]:
    """(role, text) pairs: OpenAI messages may lack ``content`` (tool calls) or hold non-text parts."""
    return [(m.get("role") if isinstance(m, dict) else None, message_text(m)) for m in messages]


def _decide(
    route: Callable[[str | None], tuple[RouteDecision, H | None]],
    fallback_handler: Callable[[str], H | None],
    *,
    session_id: str | None,
    sessions: SessionStore | None,
    fallback: str | None,
    threshold: float,
) -> tuple[GatewayDecision, H | None]:
    """Read the session, route (``route(previous)`` has no side effect), apply the gateway's fallback,
    then write the session once: all under the session's lock, so one session's turns do not race."""
    if sessions is None or not session_id:
        return _final(route, fallback_handler, None, fallback, threshold)
    with sessions.locked(session_id):
        previous = sessions.get(session_id)
        decision, handler = _final(route, fallback_handler, previous, fallback, threshold)
        if not decision.abstained:
            sessions.set(session_id, decision.expert)
        return decision, handler


def _final(
    route: Callable[[str | None], tuple[RouteDecision, H | None]],
    fallback_handler: Callable[[str], H | None],
    previous: str | None,
    fallback: str | None,
    threshold: float,
) -> tuple[GatewayDecision, H | None]:
    try:
        d, handler = route(previous)
    except MessageError as e:
        raise GatewayError(400, str(e), code="invalid_messages", param="messages") from None
    except EmptyPromptError:
        if fallback is None:
            raise GatewayError(
                400,
                "no message has routable text (empty or only special tokens); send a user message with "
                "text, name an expert as the model, or configure a fallback expert",
                code="unroutable_messages",
                param="messages",
            ) from None
        return (
            GatewayDecision(
                fallback,
                0.0,
                None,
                abstained=True,
                switched=previous not in (None, fallback),
                reason=f"no message has routable text: the fallback {fallback!r}",
                previous_expert=previous,
            ),
            fallback_handler(fallback),
        )
    top = d.top_expert if d.top_expert is not None else d.expert
    abstain = d.fallback_used or (fallback is not None and d.confidence < threshold)
    expert = d.expert
    reason: str | None = getattr(d, "reason", None)
    if abstain and fallback is not None and fallback != d.expert:
        expert, handler = fallback, fallback_handler(fallback)
        reason = (
            f"confidence {d.confidence:.3f} in {top!r} is below the gateway's threshold {threshold:g}: "
            f"the fallback {fallback!r}"
        )
    margin = getattr(d, "margin", None)
    required = getattr(d, "required_margin", None)
    return (
        GatewayDecision(
            expert,
            d.confidence,
            top,
            abstained=abstain,
            switched=previous not in (None, expert),
            reason=reason,
            margin=None if margin is None else float(margin),
            required_margin=None if required is None else float(required),
            previous_expert=previous,
        ),
        handler,
    )


def route_request(
    registry: ExpertRegistry[H],
    messages: Sequence[Any],
    *,
    session_id: str | None = None,
    sessions: SessionStore | None = None,
    fallback: str | None = None,
    threshold: float = 0.0,
    settings: ConversationSettings | None = None,
) -> tuple[GatewayDecision, H | None]:
    """Route a chat request through ``registry``: the decision and its expert's handler (upstream),
    both from one registry pairing (``registry.current``) (``None`` handler: the fallback expert has none right now).

    Raises:
        GatewayError: 400 for malformed messages, or when no message has routable text and no
            fallback is configured.

    Example:
        >>> decision, upstream = route_request(registry, messages, session_id="s1", sessions=store)  # doctest: +SKIP
    """
    turns = _turns(messages)

    def route(previous: str | None) -> tuple[RouteDecision, H | None]:
        routed = registry.route_with(
            lambda router: router.route_conversation(turns, previous_expert=previous, settings=settings)
        )
        return routed.decision, routed.handler

    def fallback_handler(name: str) -> H | None:
        try:
            return registry.get(name)
        except UnknownExpertError:
            return None

    return _decide(
        route,
        fallback_handler,
        session_id=session_id,
        sessions=sessions,
        fallback=fallback,
        threshold=threshold,
    )


def route_messages(
    router: Any,
    messages: Sequence[Any],
    *,
    session_id: str | None = None,
    sessions: SessionStore | None = None,
    fallback: str | None = None,
    threshold: float = 0.0,
    settings: ConversationSettings | None = None,
) -> GatewayDecision:
    """Route a chat request's messages to one expert with ``router.route_conversation``.

    Args:
        router: a fitted :class:`ir3de.Router`.
        messages: the request's ``messages`` (OpenAI chat format).
        session_id: the conversation, when the client names one.
        sessions: where each conversation's previous expert is kept.
        fallback: expert for low-confidence decisions and for messages with no routable text.
        threshold: confidence below which ``fallback`` is taken.
        settings: the conversation options (default: the core's measured defaults).

    Raises:
        GatewayError: 400 for malformed messages, or when no message has routable text and no
            fallback is configured.
    """
    turns = _turns(messages)

    def route(previous: str | None) -> tuple[RouteDecision, None]:
        return router.route_conversation(turns, previous_expert=previous, settings=settings), None

    decision, _ = _decide(
        route,
        lambda name: None,
        session_id=session_id,
        sessions=sessions,
        fallback=fallback,
        threshold=threshold,
    )
    return decision
