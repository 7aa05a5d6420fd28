"""``RouteEdge``: the router as a LangGraph conditional edge (``add_conditional_edges``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ir3de.serving.registry import fitted_router, handler_names

from .._conversation import settings_for
from ._state import STATE_KEY, route_value, state_value

if TYPE_CHECKING:
    from ir3de import Router
    from ir3de.routing.conversation import ConversationSettings

__all__ = ["RouteEdge"]


class RouteEdge:
    """A path function for ``StateGraph.add_conditional_edges``: returns the name of the node of the
    expert the router picks for ``state[key]``.

    ``state[key]`` may be a text (routed as one prompt, :meth:`ir3de.Router.route`) or messages
    (routed as a conversation, :meth:`ir3de.Router.route_conversation`); the previous expert of a
    conversation is ``state["ir3de"]["expert"]`` when a :func:`route_node` wrote one, else the route
    in the last routed answer's ``response_metadata["ir3de"]``. An edge cannot write state: use
    :func:`route_node` to keep the decision (and stickiness) in the thread's state.

    Args:
        router: a fitted :class:`ir3de.Router`; its expert names are the destination node names.
        key: the state key holding the messages or the text.
        fallback: the node to go to when the state has no countable token (else
            :class:`~ir3de.errors.EmptyPromptError`, unless the router has a fallback of its own).
        conversation: :class:`ir3de.routing.conversation.ConversationSettings` (or a dict of its fields).

    Example:
        >>> builder.add_conditional_edges(START, RouteEdge(router), RouteEdge(router).path_map)  # doctest: +SKIP
    """

    def __init__(
        self,
        router: Router,
        *,
        key: str = "messages",
        fallback: str | None = None,
        conversation: ConversationSettings | Mapping[str, Any] | None = None,
    ) -> None:
        self.router = fitted_router(router)
        self.key = key
        self.fallback = fallback
        self.settings = settings_for(conversation, None, adapter="langchain")

    @property
    def destinations(self) -> list[str]:
        """Every node name this edge can return: the experts, the router's fallback, ``fallback``."""
        names = handler_names(self.router)
        if self.fallback is not None and self.fallback not in names:
            names.append(self.fallback)
        return names

    @property
    def path_map(self) -> dict[str, str]:
        """``{name: name}`` for every destination (the ``path_map`` of ``add_conditional_edges``)."""
        return {name: name for name in self.destinations}

    def __call__(self, state: Any) -> str:
        kept = state.get(STATE_KEY) if isinstance(state, Mapping) else getattr(state, STATE_KEY, None)
        previous = kept.get("expert") if isinstance(kept, Mapping) else None
        decision = route_value(
            self.router,
            state_value(state, self.key),
            previous=previous,
            settings=self.settings,
            fallback=self.fallback,
        )
        return self.fallback if decision is None else decision.expert  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"RouteEdge(experts={self.router.experts}, key={self.key!r}, fallback={self.fallback!r})"
