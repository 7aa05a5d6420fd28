"""ir3de inside LiteLLM: a custom routing strategy for ``litellm.Router`` (``pip install 'ir3de[litellm]'``).

Example:
    >>> from ir3de_integrations.litellm import use_ir3de                     # doctest: +SKIP
    >>> use_ir3de(litellm_router, Router.from_pretrained("my-router"))      # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Ir3deRoutingStrategy", "use_ir3de"]

if TYPE_CHECKING:
    from .strategy import Ir3deRoutingStrategy, use_ir3de


def __getattr__(name: str) -> Any:
    """Import LiteLLM on first use (importing it takes seconds)."""
    if name in __all__:
        from . import strategy

        value = getattr(strategy, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
