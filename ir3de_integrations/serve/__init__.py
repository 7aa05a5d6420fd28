"""An OpenAI-compatible routing gateway: ``ir3de serve`` (``pip install 'ir3de[serve]'``).

Applications keep their OpenAI client and point it at the gateway; each chat request for the virtual
model (``ir3de``) is routed on its messages to an expert's upstream (any OpenAI-compatible server).

Example:
    >>> from ir3de_integrations.serve import GatewayConfig, create_app          # doctest: +SKIP
    >>> config = GatewayConfig.from_dict({"router": "my-router", "experts": {  # doctest: +SKIP
    ...     "math": {"base_url": "http://127.0.0.1:8001/v1"},
    ...     "code": {"base_url": "http://127.0.0.1:8002/v1"}}})                  # doctest: +SKIP
    >>> app = create_app(config)                                                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ConfigError", "GatewayConfig", "GatewayError", "UpstreamConfig", "create_app", "serve"]

_LAZY = {
    "ConfigError": ("config", "ConfigError"),
    "GatewayConfig": ("config", "GatewayConfig"),
    "UpstreamConfig": ("config", "UpstreamConfig"),
    "GatewayError": ("errors", "GatewayError"),
    "create_app": ("app", "create_app"),
    "serve": ("server", "serve"),
}

if TYPE_CHECKING:
    from .app import create_app
    from .config import ConfigError, GatewayConfig, UpstreamConfig
    from .errors import GatewayError
    from .server import serve


def __getattr__(name: str) -> Any:
    """Import on first use: ``ir3de --help`` must not need FastAPI."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
