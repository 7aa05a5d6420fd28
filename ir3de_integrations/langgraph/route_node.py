"""``route_node``: a LangGraph node that routes the state and goes to the expert's node (``Command``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from langgraph.types import Command

from ir3de.serving.registry import fitted_router

from .._conversation import settings_for
from ._state import STATE_KEY, decision_payload, human_turns, route_value, state_value

if TYPE_CHECKING:
    from ir3de import Router
    from ir3de.routing.conversation import ConversationSettings

__all__ = ["route_node"]


def route_node(
    router: Router,
    *,
    key: str = "messages",
    fallback: str | None = None,
    conversation: ConversationSettings | Mapping[str, Any] | None = None,
    state_key: str = STATE_KEY,
) -> Callable[[Any], Command[str]]:
    """A node function routing ``state[key]`` and returning ``Command(goto=expert, update={state_key:
    decision})``.

    The decision (expert, confidence, scores, switched, reason, turn) is written to ``state[state_key]``,
    so a checkpointer keeps it with the thread: the next human turn of the thread reads the previous
    expert from it and switches only when another expert leads by the conversation ``margin``
    (:meth:`ir3de.Router.route_conversation`). A turn is routed once: entering the node again with no
    new human message keeps the decision. Add the node with ``destinations=`` the expert node names.

    Args:
        router: a fitted :class:`ir3de.Router`; its expert names are the destination node names.
        key: the state key holding the messages (or a text, routed as one prompt).
        fallback: the node to go to when the state has no countable token.
        conversation: :class:`ir3de.routing.conversation.ConversationSettings` (or a dict of its fields).
        state_key: where the decision is written (the state schema needs that key).

    Example:
        >>> builder.add_node("route", route_node(router), destinations=tuple(router.experts))  # doctest: +SKIP
        >>> builder.add_edge(START, "route")                                                   # doctest: +SKIP
    """
    router = fitted_router(router)
    settings = settings_for(conversation, None, adapter="langchain")

    def route(state: Any) -> Command[str]:
        value = state_value(state, key)
        turn = human_turns(value)
        kept = state.get(state_key) if isinstance(state, Mapping) else getattr(state, state_key, None)
        kept = kept if isinstance(kept, Mapping) else None
        if kept is not None and kept.get("turn") == turn and kept.get("expert") is not None:
            return Command(goto=kept["expert"])  # this turn is routed already
        previous = kept.get("expert") if kept is not None else None
        decision = route_value(router, value, previous=previous, settings=settings, fallback=fallback)
        payload = decision_payload(decision, fallback=fallback, turn=turn)
        return Command(goto=payload["expert"], update={state_key: payload})

    route.__name__ = "ir3de_route"
    return route
