"""LangChain faces of the ir3de router (extra ``[langchain]``; the RouterChain needs ``[langchain-classic]``).

* :class:`RouterRunnable` — an LCEL step routing each input to an expert runnable.
* :class:`RoutingChatModel` — a ``BaseChatModel`` that answers with the expert chat model the router picks.
* :class:`Ir3deRouterChain` — the ``router_chain`` of a classic ``MultiRouteChain``.
* :class:`Ir3deDecisionModel` — a ``BaseDecisionModel`` (e.g. the ``classifier`` of ``ModelRouterMiddleware``).
* :class:`Ir3deModelMiddleware` — a ``create_agent`` middleware routing each human turn to an expert model.

Example:
    >>> from ir3de import Router, TokenEmbeddings                                     # doctest: +SKIP
    >>> from ir3de_integrations.langchain import RoutingChatModel  # doctest: +SKIP
    >>> router = Router(TokenEmbeddings.default()).fit({"math": math_texts, "code": code_texts})  # doctest: +SKIP
    >>> chat = RoutingChatModel(router, {"math": math_chat, "code": code_chat})  # doctest: +SKIP
    >>> chat.invoke("Solve 2x + 3 = 7").response_metadata["ir3de"]["expert"]  # doctest: +SKIP
    'math'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ir3de.errors import require

require("langchain_core", "ir3de_integrations.langchain", "pip install 'ir3de[langchain]'")

from ._registry import ExpertRegistry, input_text, messages_text  # noqa: E402 (after the check)
from .chat_model import RoutingChatModel  # noqa: E402
from .errors import ExpertInvocationError, ExpertMismatchError  # noqa: E402
from .runnable import RouterRunnable  # noqa: E402

if TYPE_CHECKING:
    from .decision_model import Ir3deDecisionModel
    from .middleware import Ir3deModelMiddleware
    from .router_chain import Ir3deRouterChain

__all__ = [
    "ExpertInvocationError",
    "ExpertMismatchError",
    "ExpertRegistry",
    "Ir3deDecisionModel",
    "Ir3deModelMiddleware",
    "Ir3deRouterChain",
    "RouterRunnable",
    "RoutingChatModel",
    "input_text",
    "messages_text",
]


_LAZY = {
    "Ir3deRouterChain": ".router_chain",  # langchain-classic
    "Ir3deDecisionModel": ".decision_model",  # langchain-core >= 1.8 (decisions)
    "Ir3deModelMiddleware": ".middleware",  # langchain >= 1.5 (create_agent middleware)
}


def __getattr__(name: str) -> Any:
    """Import the faces that need more than langchain-core 1.0 only when they are asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
