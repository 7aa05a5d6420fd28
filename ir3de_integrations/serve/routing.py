"""Which expert serves a chat request: the messages → one decision, with per-conversation memory.

:func:`route_messages` is the single place where the gateway asks the core for a route. Until the
core's conversation routing (``Router.route_conversation`` and ``ir3de.conversation.SessionStore``)
lands, it routes on the last user message with ``router.route(text)`` and remembers each session's
previous expert itself (:class:`SessionMemory`), so ``switched`` says when a conversation changed
expert.

Example:
    >>> sessions = SessionMemory(max_sessions=100)
    >>> d = route_messages(router, [{"role": "user", "content": "Solve 3x + 5 = 11"}],
    ...                    session_id="s1", sessions=sessions)        # doctest: +SKIP
    >>> d.expert, d.switched                                           # doctest: +SKIP
    ('math', False)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ir3de.errors import EmptyPromptError

from .errors import GatewayError

__all__ = ["GatewayDecision", "SessionMemory", "message_text", "route_messages"]


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
    """

    expert: str
    confidence: float
    top_expert: str | None
    abstained: bool = False
    switched: bool = False
    routed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "expert": self.expert,
            "confidence": self.confidence,
            "top_expert": self.top_expert,
            "abstained": self.abstained,
            "switched": self.switched,
            "routed": self.routed,
        }


class SessionMemory:
    """Each conversation's last expert, least recently used forgotten past ``max_sessions``.

    Thread-safe; O(1) per request.
    """

    def __init__(self, max_sessions: int = 10_000) -> None:
        self.max_sessions = int(max_sessions)
        self._last: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> str | None:
        with self._lock:
            expert = self._last.get(session_id)
            if expert is not None:
                self._last.move_to_end(session_id)
            return expert

    def set(self, session_id: str, expert: str) -> None:
        with self._lock:
            self._last[session_id] = expert
            self._last.move_to_end(session_id)
            while len(self._last) > self.max_sessions:
                self._last.popitem(last=False)

    def __len__(self) -> int:
        return len(self._last)


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


def _routing_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = message_text(message)
            if text.strip():
                return text
    return "\n".join(message_text(m) for m in messages)


def route_messages(
    router: Any,
    messages: Sequence[Any],
    *,
    session_id: str | None = None,
    sessions: SessionMemory | None = None,
    fallback: str | None = None,
    threshold: float = 0.0,
) -> GatewayDecision:
    """Route a chat request's messages to one expert.

    Args:
        router: a fitted :class:`ir3de.Router`.
        messages: the request's ``messages`` (OpenAI chat format).
        session_id: the conversation, when the client names one.
        sessions: where each conversation's previous expert is kept.
        fallback: expert for low-confidence decisions and for messages with no routable text.
        threshold: confidence below which ``fallback`` is taken.

    Raises:
        GatewayError: 400 when no message has routable text and no fallback is configured.
    """
    previous = sessions.get(session_id) if sessions is not None and session_id else None
    try:
        d = router.route(_routing_text(messages))
    except EmptyPromptError:
        if fallback is None:
            raise GatewayError(
                400,
                "no message has routable text (empty or only special tokens); send a user message with "
                "text, name an expert as the model, or configure a fallback expert",
                code="unroutable_messages",
                param="messages",
            ) from None
        decision = GatewayDecision(
            fallback, 0.0, None, abstained=True, switched=previous not in (None, fallback)
        )
    else:
        top = d.top_expert if d.top_expert is not None else d.expert
        abstain = d.fallback_used or (fallback is not None and d.confidence < threshold)
        expert = fallback if (abstain and fallback is not None) else d.expert
        decision = GatewayDecision(
            expert, d.confidence, top, abstained=abstain, switched=previous not in (None, expert)
        )
    if sessions is not None and session_id:
        sessions.set(session_id, decision.expert)
    return decision
