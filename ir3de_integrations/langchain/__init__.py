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

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    from ir3de.errors import MissingDependencyError

    raise MissingDependencyError(
        "ir3de_integrations.langchain needs langchain-core: pip install 'ir3de[langchain]'"
    ) from e

from ._registry import ExpertRegistry, input_text, messages_text
from .chat_model import RoutingChatModel
from .errors import ExpertInvocationError, ExpertMismatchError
from .runnable import RouterRunnable

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
