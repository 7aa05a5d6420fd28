"""LangGraph pieces routed by ir3de (``pip install 'ir3de[langgraph]'``): a multi-agent graph with no LLM
supervisor.

* :class:`RouteEdge` — a path function for ``add_conditional_edges``: the routed expert's node name.
* :func:`route_node` — a node returning ``Command(goto=expert)`` with the decision in state.
* :func:`create_routed_graph` — ``START → route → one agent (or subgraph) per expert → END``, sticky per
  thread through the checkpointer.

Example:
    >>> from ir3de_integrations.langgraph import create_routed_graph                    # doctest: +SKIP
    >>> graph = create_routed_graph(router, {"math": math_agent, "code": code_agent},  # doctest: +SKIP
    ...                             checkpointer=InMemorySaver())
    >>> graph.invoke({"messages": [("user", "Solve 2x = 4")]},  # doctest: +SKIP
    ...              {"configurable": {"thread_id": "t1"}})["ir3de"]["expert"]
    'math'
"""

from __future__ import annotations

from ir3de.errors import require

require("langgraph.graph", "ir3de_integrations.langgraph", "pip install 'ir3de[langgraph]'")

from ._state import STATE_KEY, RoutedState  # noqa: E402 (after the check)
from .graph import create_routed_graph  # noqa: E402
from .route_edge import RouteEdge  # noqa: E402
from .route_node import route_node  # noqa: E402

__all__ = ["STATE_KEY", "RouteEdge", "RoutedState", "create_routed_graph", "route_node"]
