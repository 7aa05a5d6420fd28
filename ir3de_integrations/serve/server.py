"""Run the gateway with uvicorn (what ``ir3de serve`` calls).

Example:
    >>> from ir3de_integrations.serve import GatewayConfig, serve               # doctest: +SKIP
    >>> serve(GatewayConfig.from_file("gateway.yaml"))                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from .config import GatewayConfig

__all__ = ["serve"]


def serve(config: GatewayConfig, router: Any | None = None, *, log_level: str = "info") -> None:
    """Serve ``config`` on ``config.host:config.port`` until interrupted (structured JSON logs on stderr)."""
    import uvicorn

    from .app import create_app

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("ir3de.serve")
    log.handlers[:] = [handler]
    log.setLevel(log_level.upper())
    log.propagate = False
    app = create_app(config, router)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=False,  # the gateway logs each request itself, as JSON
        timeout_graceful_shutdown=10,
    )
