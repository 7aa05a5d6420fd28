"""The gateway: an OpenAI-compatible ASGI app that routes each chat request to an expert's upstream.

Endpoints:

* ``POST /v1/chat/completions`` — ``model`` is the virtual model (``ir3de``: route on the messages)
  or an expert's name (straight there). Streaming (``"stream": true``) relays the upstream's
  server-sent events chunk by chunk. The decision is in the ``x-ir3de-expert`` /
  ``x-ir3de-confidence`` headers (every response also names the router revision that served it,
``x-ir3de-revision``, and the worker, ``x-ir3de-worker``), and in the body (an ``ir3de`` object; for streams, a first chunk
  with no choices) when the request has the header ``x-ir3de-decision: true`` or the body field
  ``"ir3de": {"decision": true}``.
* ``GET /v1/models`` — the virtual model and every expert; ``GET /health``, ``GET /ready``;
  ``GET /metrics`` (Prometheus); ``/admin/...`` (see :mod:`.admin`; off unless a token is configured).

With ``state_dir`` in the config, several workers share one routing state (:mod:`.state`).

This module assembles the app: the :class:`.gateway.Gateway` in ``app.state.gateway`` (routes get it
through ``Depends``), its lifespan, the revision/worker headers, the error handlers and the routers of
:mod:`.chat`, :mod:`.status`, :mod:`.admin` and :mod:`.adaptation`; the decision → response mapping is :mod:`.relay`.

Example:
    >>> from ir3de_integrations.serve import GatewayConfig, create_app        # doctest: +SKIP
    >>> app = create_app(GatewayConfig.from_file("gateway.yaml"))             # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, port=8000)                           # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .adaptation import adaptation_routes
from .admin import admin_routes
from .chat import chat_routes
from .config import GatewayConfig
from .errors import GatewayError, error_response
from .gateway import Gateway, load_router
from .idempotency import IdempotentAdmin
from .safety import header_value
from .status import status_routes

__all__ = ["Gateway", "create_app", "load_router"]

logger = logging.getLogger("ir3de.serve")


class _StateHeaders:
    """ASGI middleware: every response names the revision served and the worker (unless set)."""

    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.worker = header_value(gateway.state.worker).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_state(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"x-ir3de-revision" not in names:
                    headers.append((b"x-ir3de-revision", str(self.gateway.state.revision).encode()))
                if b"x-ir3de-worker" not in names:
                    headers.append((b"x-ir3de-worker", self.worker))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_state)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    gw: Gateway = app.state.gateway
    gw.start()
    try:
        yield
    finally:
        await gw.stop()


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    if exc.status_code == 404:
        message += "; endpoints are /v1/chat/completions, /v1/models, /health, /ready, /metrics, /admin/..."
    return error_response(GatewayError(exc.status_code, message, code=f"http_{exc.status_code}"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Any other exception: an OpenAI-style JSON 500 (never text/plain), logged as one line."""
    logger.error(
        json.dumps(
            {"event": "internal_error", "path": request.url.path, "error": f"{type(exc).__name__}: {exc}"},
            ensure_ascii=False,
        )
    )
    error = GatewayError(
        500, f"internal error ({type(exc).__name__}); the gateway logged it", code="internal_error"
    )
    return error_response(error)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(GatewayError(400, f"invalid request: {exc.errors()}", code="invalid_request"))


def create_app(config: GatewayConfig, router: Any | None = None) -> FastAPI:
    """The gateway's FastAPI app for ``config``; ``router`` (else loaded from ``config.router``).

    Raises:
        ConfigError: an expert of the router has no upstream, or the config is inconsistent.
    """
    gw = Gateway(config, router)
    app = FastAPI(title="ir3de gateway", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gw
    app.add_middleware(_StateHeaders, gateway=gw)
    app.add_middleware(IdempotentAdmin, gateway=gw)  # outermost: replays carry the first answer's headers
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(chat_routes())
    app.include_router(status_routes())
    app.include_router(admin_routes())
    app.include_router(adaptation_routes())
    return app
