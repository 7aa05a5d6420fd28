"""LlamaIndex adapters for ir3de (``pip install 'ir3de[llamaindex]'``).

* :class:`Ir3deSelector` — a ``BaseSelector`` for ``RouterQueryEngine`` / ``RouterRetriever`` that picks
  a query engine, retriever or tool from the query's tokens (no LLM call, no description embeddings).
* :class:`RoutingLLM` — an ``LLM`` that dispatches every chat/complete call (sync, async, streaming)
  to the LLM of the expert the router picks, with ``add_expert``/``remove_expert``/``update_expert``
  at runtime.
* :class:`RoutedAgentWorkflow` — an ``AgentWorkflow`` whose starting agent the router picks per run
  (handoffs unchanged); :func:`route_event` routes inside any ``Workflow`` step.
* :class:`Ir3deRouteEvent` — the instrumentation event they emit for each decision.

Example:
    >>> from ir3de_integrations.llama_index import Ir3deSelector, RoutingLLM       # doctest: +SKIP
    >>> selector = Ir3deSelector.from_pretrained("my-router")  # doctest: +SKIP
    >>> llm = RoutingLLM.from_pretrained("my-router", {"math": math_llm, "code": code_llm})  # doctest: +SKIP
"""

from __future__ import annotations

from ir3de.errors import require

require("llama_index.core", "ir3de_integrations.llama_index", "pip install 'ir3de[llamaindex]'")

from ._common import describe_route, route_payload  # noqa: E402 (after the check)
from .agent_workflow import RoutedAgentWorkflow, RoutedEvent, route_event  # noqa: E402
from .events import Ir3deRouteEvent, dispatcher  # noqa: E402
from .llm import ROUTE_KEY, RoutingLLM  # noqa: E402
from .selector import Ir3deSelector, Ir3deSelectorResult  # noqa: E402

__all__ = [
    "ROUTE_KEY",
    "Ir3deRouteEvent",
    "Ir3deSelector",
    "Ir3deSelectorResult",
    "RoutedAgentWorkflow",
    "RoutedEvent",
    "RoutingLLM",
    "describe_route",
    "dispatcher",
    "route_event",
    "route_payload",
]
