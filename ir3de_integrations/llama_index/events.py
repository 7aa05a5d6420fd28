"""LlamaIndex instrumentation for ir3de routes: one :class:`Ir3deRouteEvent` per routing decision.

Routes are dispatched on the ``ir3de_integrations.llama_index`` dispatcher, which propagates to
LlamaIndex's root dispatcher, so any event handler or observability integration attached there
(Arize Phoenix, Langfuse, a custom ``BaseEventHandler``…) sees them, inside the span of the
selector's ``_select`` or the routing LLM's call.

Example:
    >>> from llama_index.core.instrumentation import get_dispatcher
    >>> from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    >>> class Print(BaseEventHandler):
    ...     def handle(self, event, **kwargs):
    ...         if isinstance(event, Ir3deRouteEvent):
    ...             print(event.component, event.expert, event.confidence)
    >>> get_dispatcher().add_event_handler(Print())                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from pydantic import Field

__all__ = ["Ir3deRouteEvent", "dispatcher"]

#: The dispatcher every adapter in this package emits on (a child of LlamaIndex's root dispatcher).
dispatcher = get_dispatcher("ir3de_integrations.llama_index")


class Ir3deRouteEvent(BaseEvent):
    """An ir3de routing decision.

    Its ``id_`` is the routing id of the call (also ``call_id`` in a :class:`RoutingLLM` response's
    route report and in an :class:`Ir3deSelectorResult`), which ``feedback(...)`` takes.

    Attributes:
        component: ``"selector"`` (an :class:`Ir3deSelector`) or ``"llm"`` (a :class:`RoutingLLM`).
        query: the text that was routed.
        expert: the chosen expert (the fallback name when ``fallback_used``).
        confidence: the winning expert's score in [0, 1].
        scores: every expert's score.
        tokens: the deciding tokens, lowest entropy first.
        fallback_used: whether the router's fallback was taken.
        selected: the experts the component acted on (several in a multi-selection).
        selected_indices: for a selector, the indices of the chosen choices.
    """

    component: str
    query: str
    expert: str
    confidence: float
    scores: dict[str, float] = Field(default_factory=dict)
    tokens: list[str] = Field(default_factory=list)
    fallback_used: bool = False
    selected: list[str] = Field(default_factory=list)
    selected_indices: list[int] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        """Class name shown by handlers."""
        return "Ir3deRouteEvent"

    @classmethod
    def from_payload(
        cls, component: str, query: str, payload: dict[str, Any], **extra: Any
    ) -> Ir3deRouteEvent:
        """Build an event from :func:`route_payload`'s summary."""
        return cls(
            component=component,
            query=query,
            expert=payload["expert"],
            confidence=payload["confidence"],
            scores=payload["scores"],
            tokens=payload["tokens"],
            fallback_used=payload["fallback_used"],
            **extra,
        )
