"""What the gateway says about itself: ``GET /v1/models`` (the virtual model and every expert),
``GET /health`` (the process answers), ``GET /ready`` (a fitted router, an HTTP client, an upstream
for every expert; else 503) and ``GET /metrics`` (Prometheus text).

Example:
    >>> app.include_router(status_routes())                                      # doctest: +SKIP
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from .gateway import GatewayDep

__all__ = ["status_routes"]


async def models(gw: GatewayDep) -> Response:
    """The OpenAI model list: the virtual model first, then every upstream by name."""
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


async def health() -> Response:
    """Liveness: the process serves HTTP."""
    return JSONResponse({"status": "ok"})


async def ready(gw: GatewayDep) -> Response:
    """Readiness: a fitted router, a started HTTP client, an upstream for every expert and, with a
    ``state_dir``, the newest revision this worker can serve (else 503; the body says why)."""
    experts = list(gw.router.experts)
    missing = [e for e in experts if e not in gw.upstreams]
    serving = gw.state.ready()  # False: a newer revision verifies but this worker cannot load it
    ok = gw.client is not None and bool(gw.router.experts) and not missing and serving
    body = {
        "status": "ready" if ok else "not_ready",
        "experts": experts,
        "missing_upstreams": missing,
        "revision": gw.state.revision,
        **gw.state.faults(),
    }
    return JSONResponse(body, status_code=200 if ok else 503)


async def metrics(gw: GatewayDep) -> Response:
    """The gateway's Prometheus metrics."""
    gw.metrics.observe_state(gw.state)
    content, media_type = gw.metrics.render()
    return Response(content, media_type=media_type)


def status_routes() -> APIRouter:
    """The model list, health, readiness and metrics endpoints, to include in the gateway app."""
    routes = APIRouter()
    routes.add_api_route("/v1/models", models, methods=["GET"])
    routes.add_api_route("/health", health, methods=["GET"])
    routes.add_api_route("/ready", ready, methods=["GET"])
    routes.add_api_route("/metrics", metrics, methods=["GET"])
    return routes
