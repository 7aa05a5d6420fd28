"""``create_routed_graph``: a multi-agent LangGraph graph whose supervisor is the router, not an LLM."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langgraph.graph import END, START, StateGraph

from ir3de.errors import ExpertMismatchError, InvalidInputError
from ir3de.serving.registry import fitted_router, handler_names

from ._state import STATE_KEY, RoutedState
from .route_node import route_node

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from ir3de import Router
    from ir3de.routing.conversation import ConversationSettings

__all__ = ["create_routed_graph"]

#: The name of the routing node.
ROUTE_NODE = "route"


def create_routed_graph(
    router: Router,
    agents: Mapping[str, Any],
    *,
    key: str = "messages",
    fallback: str | None = None,
    conversation: ConversationSettings | Mapping[str, Any] | None = None,
    state_schema: type[Any] = RoutedState,
    checkpointer: Any = None,
    name: str = "ir3de_routed_graph",
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Build and compile ``START → route → <expert's agent> → END``.

    ``agents`` maps every expert name (and ``fallback``, if given, and the router's own fallback) to a
    node: an agent from ``create_agent``, any compiled subgraph, a runnable or a node function. The
    ``route`` node (:func:`route_node`) routes the thread's messages once per human turn, writes the
    decision to ``state["ir3de"]`` and goes to that expert's node. With a ``checkpointer`` the
    decision is kept per thread (``config={"configurable": {"thread_id": ...}}``): the next turn keeps
    the thread's expert unless another expert leads by the conversation ``margin``.

    Raises:
        ExpertMismatchError: ``agents`` does not name exactly the router's experts (plus fallbacks).

    Example:
        >>> graph = create_routed_graph(router, {"math": math_agent, "code": code_agent},   # doctest: +SKIP
        ...                             checkpointer=InMemorySaver())
        >>> graph.invoke({"messages": [("user", "def add(a, b):")]},                        # doctest: +SKIP
        ...              {"configurable": {"thread_id": "t1"}})["ir3de"]["expert"]
        'code'
    """
    router = fitted_router(router)
    if not isinstance(agents, Mapping):
        raise InvalidInputError(f"agents must be a mapping expert name → agent, got {type(agents).__name__}")
    names = handler_names(router)
    if fallback is not None and fallback not in names:
        names.append(fallback)
    missing = [n for n in names if n not in agents]
    extra = [n for n in agents if n not in names]
    if missing or extra:
        raise ExpertMismatchError(missing=missing, extra=extra, router_experts=router.experts, kind="agent")
    if ROUTE_NODE in agents:
        raise InvalidInputError(f"{ROUTE_NODE!r} is the routing node's name; rename that expert's node")
    builder = StateGraph(state_schema)
    node: Any = route_node(router, key=key, fallback=fallback, conversation=conversation, state_key=STATE_KEY)
    builder.add_node(ROUTE_NODE, node, destinations=tuple(names))
    builder.add_edge(START, ROUTE_NODE)
    for expert in names:
        builder.add_node(expert, agents[expert])
        builder.add_edge(expert, END)
    return builder.compile(checkpointer=checkpointer, name=name)
