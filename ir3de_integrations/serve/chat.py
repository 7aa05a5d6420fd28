"""``POST /v1/chat/completions``: read and check the request, choose the expert and its upstream from
one registry pairing (``registry.current``), forward (:mod:`.relay`), count and log.

``model`` is the virtual model (route on the messages, the session named by the config's session
header or the ``user`` field) or an expert's name (straight there).

Example:
    >>> app.include_router(chat_routes())                                        # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .adaptation import capture_request
from .errors import GatewayError, error_response
from .gateway import Gateway, GatewayDep, log_event, logger
from .relay import Forward, send
from .routing import GatewayDecision, message_text, route_request
from .safety import load_json
from .upstreams import Upstream

__all__ = ["chat_routes", "parse_chat", "read_body", "wants_decision"]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it is known to exceed ``limit`` bytes."""
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


def parse_chat(body: bytes) -> dict[str, Any]:
    """The chat completion request as a dict, or a 400 :class:`GatewayError` that names what is wrong."""
    payload = load_json(body)  # 400 for invalid JSON, 50k nested brackets, lone surrogates
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


def wants_decision(request: Request, payload: dict[str, Any]) -> bool:
    """Whether the body should carry the decision (``"ir3de": {"decision": true}``, removed from the
    payload, or the header ``x-ir3de-decision: true``)."""
    options = payload.pop("ir3de", None)
    if isinstance(options, dict) and options.get("decision"):
        return True
    return request.headers.get("x-ir3de-decision", "").lower() in ("1", "true", "yes")


def choose(
    gw: Gateway, request: Request, payload: dict[str, Any]
) -> tuple[GatewayDecision, Upstream, int, float]:
    """The decision, its upstream and the revision they come from (one registry pairing, ``registry.current``), and the
    seconds spent routing (0 for a request that names an expert)."""
    model = payload["model"]
    cfg = gw.config
    routing_seconds = 0.0
    upstream: Upstream | None
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
        capture_request(gw, payload["messages"])  # kept only when adapt_capture is set; never logged
        gw.metrics.routing_seconds.observe(routing_seconds)
        gw.metrics.decisions.labels(expert=decision.expert).inc()
        if decision.abstained:
            gw.metrics.abstentions.inc()
    elif model in gw.upstreams:
        decision = GatewayDecision(
            model, 1.0, model, routed=False, reason=f"the request named {model!r} as its model"
        )
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
    return decision, upstream, revision, routing_seconds


async def chat_completions(request: Request, gw: GatewayDep) -> Response:
    """Route (or look up) the expert, forward the request to its upstream, count and log it."""
    request_id = uuid.uuid4().hex
    try:
        payload = parse_chat(await read_body(request, gw.config.max_body_bytes))
        include = wants_decision(request, payload)
        model = payload["model"]
        if model != gw.config.virtual_model and model not in gw.upstreams:
            # an expert this worker does not know yet (added on another one): sync to HEAD first
            await run_in_threadpool(gw.state.sync)
        decision, upstream, revision, routing_seconds = choose(gw, request, payload)
        fwd = Forward(decision, upstream, payload, request_id, revision)
        stream = bool(payload.get("stream"))
        response = await send(gw, fwd, stream, include)
    except GatewayError as e:
        gw.metrics.requests.labels(endpoint="chat", status=str(e.status)).inc()
        log_event("request", request_id=request_id, status=e.status, error=e.code)
        return error_response(e, {"x-request-id": request_id})
    gw.metrics.requests.labels(endpoint="chat", status=str(response.status_code)).inc()
    if logger.isEnabledFor(logging.INFO):
        fields: dict[str, Any] = {
            "request_id": request_id,
            "status": response.status_code,
            "model": payload["model"],
            "expert": fwd.decision.expert,
            "served_by": fwd.served_by,
            "confidence": round(fwd.decision.confidence, 4),
            "abstained": fwd.decision.abstained,
            "switched": fwd.decision.switched,
            "stream": stream,
            "routing_us": round(routing_seconds * 1e6, 1),
            "messages": len(payload["messages"]),
        }
        if gw.config.log_prompts:
            fields["prompt"] = message_text(payload["messages"][-1])
        log_event("request", **fields)
    return response


def chat_routes() -> APIRouter:
    """The chat completions endpoint, to include in the gateway app."""
    routes = APIRouter()
    routes.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    return routes
