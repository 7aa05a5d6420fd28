"""LangChain faces of the ir3de router (extra ``[langchain]``; the RouterChain needs ``[langchain-classic]``).

* :class:`RouterRunnable` — an LCEL step routing each input to an expert runnable.
* :class:`RoutingChatModel` — a ``BaseChatModel`` that answers with the expert chat model the router picks.
* :class:`Ir3deRouterChain` — the ``router_chain`` of a classic ``MultiRouteChain``.

Example:
    >>> from ir3de import Router, TokenEmbeddings                                     # doctest: +SKIP
    >>> from ir3de_integrations.langchain import RoutingChatModel
    >>> router = Router(TokenEmbeddings.default()).fit({"math": math_texts, "code": code_texts})
    >>> chat = RoutingChatModel(router, {"math": math_chat, "code": code_chat})
    >>> chat.invoke("Solve 2x + 3 = 7").response_metadata["ir3de"]["expert"]
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
    from .router_chain import Ir3deRouterChain

__all__ = [
    "ExpertInvocationError",
    "ExpertMismatchError",
    "ExpertRegistry",
    "Ir3deRouterChain",
    "RouterRunnable",
    "RoutingChatModel",
    "input_text",
    "messages_text",
]


def __getattr__(name: str) -> Any:
    """Import the RouterChain (langchain-classic) only when it is asked for."""
    if name == "Ir3deRouterChain":
        from .router_chain import Ir3deRouterChain

        return Ir3deRouterChain
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
