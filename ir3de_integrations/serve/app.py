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

Example:
    >>> from ir3de_integrations.serve import GatewayConfig, create_app        # doctest: +SKIP
    >>> app = create_app(GatewayConfig.from_file("gateway.yaml"))             # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, port=8000)                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from .config import GatewayConfig
from .errors import GatewayError, error_response
from .metrics import GatewayMetrics
from .routing import GatewayDecision, SessionStore, message_text, route_request
from .state import LocalState, SharedState, State
from .upstream_client import STREAM_ERRORS, UpstreamClient, UpstreamFailure
from .upstreams import Upstream, Upstreams

__all__ = ["Gateway", "create_app", "load_router"]

logger = logging.getLogger("ir3de.serve")


def load_router(source: str) -> Any:
    """Load the router to serve from a folder or a Hub repo id (routing needs only the artifact)."""
    from ir3de import Router

    return Router.from_pretrained(source, device="cpu", progress=False)


class Gateway:
    """The gateway's live state: config, router, upstreams, sessions, metrics, HTTP client.

    ``upstreams.registry`` is the core :class:`ir3de.serving.registry.ExpertRegistry` (expert → upstream);
    change experts through :meth:`change` only (the admin endpoints do), so router and upstreams
    change together — and, with ``state_dir``, every worker follows (:class:`.state.SharedState`).

    Raises:
        ConfigError: an expert of the router has no upstream.
    """

    def __init__(self, config: GatewayConfig, router: Any | None) -> None:
        self.config = config
        self.state: State
        if config.state_dir is not None:
            self.state = SharedState.open(config, router, load_router)
        else:
            self.state = LocalState(
                router if router is not None else load_router(config.router), config.experts
            )
        self.sessions = SessionStore(ttl=config.session_ttl, max_sessions=config.max_sessions)
        self.conversation = config.conversation_settings()
        self.metrics = GatewayMetrics()
        self.client: UpstreamClient | None = None
        self.admin_lock = asyncio.Lock()
        self.started = time.time()
        self.metrics.revision.set(self.state.revision)
        self.state.on_swap = self._swapped

    def _swapped(self, revision: int) -> None:
        self.metrics.revision.set(revision)
        self.metrics.revision_swaps.inc()

    @property
    def upstreams(self) -> Upstreams:
        """Expert → upstream (the registry) plus the upstreams reachable by name only."""
        return self.state.upstreams

    @property
    def router(self) -> Any:
        """The router served now (a newer revision replaces it whole)."""
        return self.state.router

    def change(self, change: Any) -> Any:
        """Apply ``change(registry)`` (blocking: call it from a worker thread) and return its result:
        in place, or — with ``state_dir`` — as a new revision every worker switches to."""
        return self.state.change(change)

    @property
    def registry(self) -> Any:
        """The core expert registry (expert → :class:`Upstream`)."""
        return self.upstreams.registry

    def model_ids(self) -> list[str]:
        return [self.config.virtual_model, *self.upstreams.names()]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GatewayError(
            413,
            f"the request body is {int(declared)} bytes; this gateway accepts at most {limit} "
            "(max_body_bytes in its config)",
            code="request_too_large",
        )
    if declared is not None:
        body = await request.body()
        if len(body) <= limit:
            return body
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError(
                413,
                f"the request body exceeds {limit} bytes (max_body_bytes in the gateway config)",
                code="request_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_chat(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GatewayError(
            400,
            f"the request body is not valid JSON ({e}); send a JSON chat completion request",
            code="invalid_json",
        ) from None
    if not isinstance(payload, dict):
        raise GatewayError(400, "the request body must be a JSON object", code="invalid_request")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(
            400,
            "'messages' is missing or empty; send a non-empty list of {role, content} messages",
            code="missing_messages" if messages is None else "invalid_messages",
            param="messages",
        )
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise GatewayError(
            400,
            "every message must be an object with a 'role' (and 'content')",
            code="invalid_messages",
            param="messages",
        )
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise GatewayError(
            400,
            "'model' is missing; name the router ('ir3de') or an expert",
            param="model",
            code="missing_model",
        )
    return payload


def _wants_decision(request: Request, payload: dict[str, Any]) -> bool:
    options = payload.pop("ir3de", None)
    if isinstance(options, dict) and options.get("decision"):
        return True
    return request.headers.get("x-ir3de-decision", "").lower() in ("1", "true", "yes")


def _decision_headers(
    decision: GatewayDecision, request_id: str, revision: int, worker: str
) -> dict[str, str]:
    return {
        "x-ir3de-expert": decision.expert,
        "x-ir3de-confidence": f"{decision.confidence:.4f}",
        "x-request-id": request_id,
        "x-ir3de-revision": str(revision),
        "x-ir3de-worker": worker,
    }


class _StateHeaders:
    """ASGI middleware: every response names the revision served and the worker (unless set)."""

    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.worker = gateway.state.worker.encode()

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


class _Forward:
    """One request on its way upstream (the upstream taken right after routing)."""

    __slots__ = ("decision", "payload", "request_id", "revision", "served_by", "upstream")

    def __init__(
        self,
        decision: GatewayDecision,
        upstream: Upstream,
        payload: dict[str, Any],
        request_id: str,
        revision: int,
    ) -> None:
        self.revision = revision
        self.decision = decision
        self.upstream = upstream
        self.payload = payload
        self.request_id = request_id
        self.served_by = upstream.name

    def body(self) -> bytes:
        self.payload["model"] = self.upstream.config.model
        return json.dumps(self.payload, ensure_ascii=False).encode("utf-8")

    def decision_dict(self) -> dict[str, Any]:
        return {**self.decision.to_dict(), "served_by": self.served_by, "revision": self.revision}


def _log(gw: Gateway, event: str, **fields: Any) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(json.dumps({"event": event, **fields}, ensure_ascii=False, default=str))


def create_app(config: GatewayConfig, router: Any | None = None) -> FastAPI:
    """The gateway's FastAPI app for ``config``; ``router`` (else loaded from ``config.router``).

    Raises:
        ConfigError: an expert of the router has no upstream, or the config is inconsistent.
    """
    gw = Gateway(config, router)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.client = UpstreamClient(
            timeout=config.timeout, connect_timeout=config.connect_timeout, metrics=gw.metrics
        )
        gw.state.start()
        try:
            yield
        finally:
            gw.state.stop()
            await gw.client.aclose()

    app = FastAPI(title="ir3de gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gw
    app.add_middleware(_StateHeaders, gateway=gw)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code == 404:
            message += (
                "; endpoints are /v1/chat/completions, /v1/models, /health, /ready, /metrics, /admin/..."
            )
        return error_response(GatewayError(exc.status_code, message, code=f"http_{exc.status_code}"))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(GatewayError(400, f"invalid request: {exc.errors()}", code="invalid_request"))

    async def _send(fwd: _Forward, stream: bool, include: bool) -> Response:
        client = gw.client
        assert client is not None, "the gateway's lifespan has not started"
        headers = _decision_headers(fwd.decision, fwd.request_id, fwd.revision, gw.state.worker)
        try:
            return await (_relay_stream if stream else _relay_complete)(client, fwd, headers, include)
        except UpstreamFailure as failure:
            backup_name = gw.config.upstream_fallback
            backup = gw.upstreams.get(backup_name) if backup_name else None
            if not failure.retryable or backup is None or backup.name == fwd.upstream.name:
                raise
            _log(gw, "upstream_fallback", request_id=fwd.request_id, failed=fwd.upstream.name, to=backup.name,
                 code=failure.code)  # fmt: skip
            fwd.upstream, fwd.served_by = backup, backup.name
            headers["x-ir3de-upstream-fallback"] = backup.name
            return await (_relay_stream if stream else _relay_complete)(client, fwd, headers, include)

    async def _relay_complete(
        client: UpstreamClient, fwd: _Forward, headers: dict[str, str], include: bool
    ) -> Response:
        response = await client.complete(fwd.upstream, fwd.body())
        content = response.content
        if include and response.status < 400:
            try:
                data = json.loads(content)
                data["ir3de"] = fwd.decision_dict()
                content = json.dumps(data, ensure_ascii=False).encode("utf-8")
            except (json.JSONDecodeError, TypeError):
                pass
        return Response(content, status_code=response.status, media_type="application/json", headers=headers)

    async def _relay_stream(
        client: UpstreamClient, fwd: _Forward, headers: dict[str, str], include: bool
    ) -> Response:
        start = time.perf_counter()
        upstream = fwd.upstream
        response = await client.open_stream(upstream, fwd.body())
        if response.status >= 400:  # an upstream 4xx: the client's error, passed through
            return Response(
                response.content,
                status_code=response.status,
                media_type="application/json",
                headers=headers,
            )
        prefix = b""
        if include:
            chunk = {
                "id": f"ir3de-{fwd.request_id}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": upstream.config.model,
                "choices": [],
                "ir3de": fwd.decision_dict(),
            }
            prefix = b"data: " + json.dumps(chunk).encode() + b"\n\n"

        async def relay() -> AsyncIterator[bytes]:
            try:
                if prefix:
                    yield prefix
                async for piece in response.chunks():
                    yield piece
            except STREAM_ERRORS as e:  # mid-stream: the status is sent; say it in an SSE error event
                failure = client.stream_failure(upstream, e)
                yield b"data: " + json.dumps(failure.body()).encode() + b"\n\n"
            finally:
                response.close()
                client.observe(upstream, time.perf_counter() - start)

        headers["cache-control"] = "no-cache"
        return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        request_id = uuid.uuid4().hex
        try:
            payload = _parse_chat(await _read_body(request, gw.config.max_body_bytes))
            include = _wants_decision(request, payload)
            model = payload["model"]
            cfg = gw.config
            routing_seconds = 0.0
            # decision and upstream come from one registry pairing (``registry.current``) (route_request)
            if model == cfg.virtual_model:
                session = request.headers.get(cfg.session_header) or payload.get("user")
                t0 = time.perf_counter()
                (decision, upstream), revision = gw.state.routed(
                    lambda: route_request(
                        gw.registry,
                        payload["messages"],
                        session_id=session if isinstance(session, str) else None,
                        sessions=gw.sessions,
                        fallback=cfg.fallback,
                        threshold=cfg.threshold,
                        settings=gw.conversation,
                    )
                )
                routing_seconds = time.perf_counter() - t0
                gw.metrics.routing_seconds.observe(routing_seconds)
                gw.metrics.decisions.labels(expert=decision.expert).inc()
                if decision.abstained:
                    gw.metrics.abstentions.inc()
            elif model in gw.upstreams:
                decision = GatewayDecision(model, 1.0, model, routed=False)
                upstream, revision = gw.state.routed(lambda: gw.upstreams.get(model))
            else:
                raise GatewayError(
                    404,
                    f"the model {model!r} does not exist here; use {cfg.virtual_model!r} to route or one of the "
                    f"experts {gw.upstreams.names()} (GET /v1/models lists them)",
                    code="model_not_found",
                    param="model",
                )
            if upstream is None:
                raise GatewayError(
                    503,
                    f"expert {decision.expert!r} has no upstream right now; retry",
                    code="expert_unavailable",
                )
            fwd = _Forward(decision, upstream, payload, request_id, revision)
            stream = bool(payload.get("stream"))
            response = await _send(fwd, stream, include)
        except GatewayError as e:
            gw.metrics.requests.labels(endpoint="chat", status=str(e.status)).inc()
            _log(gw, "request", request_id=request_id, status=e.status, error=e.code)
            return error_response(e, {"x-request-id": request_id})
        gw.metrics.requests.labels(endpoint="chat", status=str(response.status_code)).inc()
        if logger.isEnabledFor(logging.INFO):
            fields: dict[str, Any] = {
                "request_id": request_id,
                "status": response.status_code,
                "model": model,
                "expert": fwd.decision.expert,
                "served_by": fwd.served_by,
                "confidence": round(fwd.decision.confidence, 4),
                "abstained": fwd.decision.abstained,
                "switched": fwd.decision.switched,
                "stream": stream,
                "routing_us": round(routing_seconds * 1e6, 1),
                "messages": len(payload["messages"]),
            }
            if cfg.log_prompts:
                fields["prompt"] = message_text(payload["messages"][-1])
            _log(gw, "request", **fields)
        return response

    @app.get("/v1/models")
    async def models() -> Response:
        created = int(gw.started)
        data = [
            {
                "id": m,
                "object": "model",
                "created": created,
                "owned_by": "ir3de" if i == 0 else "ir3de-expert",
            }
            for i, m in enumerate(gw.model_ids())
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        experts = list(gw.router.experts)
        missing = [e for e in experts if e not in gw.upstreams]
        ok = gw.client is not None and bool(gw.router.experts) and not missing
        body = {"status": "ready" if ok else "not_ready", "experts": experts, "missing_upstreams": missing}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        content, media_type = gw.metrics.render()
        return Response(content, media_type=media_type)

    from .admin import admin_routes

    app.include_router(admin_routes())
    return app
