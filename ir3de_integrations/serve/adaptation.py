"""Adaptation in the gateway: learn the prompts it routed, without labels, as a new revision.

With ``adapt_capture: N`` in the gateway config each worker keeps its last ``N`` routed prompts in
memory (:mod:`.capture`: opt-in, bounded, never logged). They are learned — as the router's adaptation
block (:meth:`ir3de.Router.adapt`: apart from labelled traffic, exactly removable) — when

* ``POST /admin/adapt`` asks (body ``{}``; or ``{"prompts": [...]}`` to adapt on prompts given there
  instead of the kept ones; ``"options": {...}`` go to :meth:`ir3de.Router.adapt`), or
* ``adapt_every`` prompts are pending (in the background: requests are never held up).

Either way the change goes through the gateway's admin path (:meth:`.app.Gateway.change`): with a
``state_dir`` it is committed as a new revision that every worker and replica switches to, exactly as
learned feedback is. Each worker keeps (and adapts on) the prompts *it* routed; adaptation is additive,
so every worker's adaptation lands on top of the others'.

* ``POST /admin/forget-adaptation`` — forget every adaptation (exact; labelled traffic is kept) and
  drop this worker's pending prompts.
* ``GET /admin/adaptation`` — the router's adaptation summary and this worker's capture counts (never
  text).

Example:
    >>> import httpx                                                                  # doctest: +SKIP
    >>> httpx.post("http://127.0.0.1:8000/admin/adapt", headers={"authorization": "Bearer s3cret"},  # doctest: +SKIP
    ...            json={}).json()["adapted"]["prompts"]                              # doctest: +SKIP
    1840
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from .admin import _apply, _gateway
from .capture import request_prompt
from .errors import GatewayError

__all__ = ["adapt_gateway", "adaptation_routes", "adaptation_summary", "capture_request"]

logger = logging.getLogger("ir3de.serve")


def adaptation_summary(router: Any) -> dict[str, Any]:
    """``router.adaptation`` as JSON (``num_prompts`` 0: the router has not adapted)."""
    return dict(router.adaptation.to_dict())


def capture_request(gw: Any, messages: Sequence[Any]) -> None:
    """Keep a routed request's prompt (its last user turn) when capture is on, and start a background
    adaptation when ``adapt_every`` prompts are pending (one at a time). Call it on the event loop."""
    if not gw.capture.enabled:
        return
    pending = gw.capture.add(request_prompt(messages))
    every = gw.config.adapt_every
    if every and pending >= every and (gw.adapt_task is None or gw.adapt_task.done()):
        gw.adapt_task = asyncio.get_running_loop().create_task(_adapt_in_background(gw))


async def adapt_gateway(
    gw: Any, prompts: Sequence[str] | None = None, options: dict[str, Any] | None = None
) -> Any:
    """Adapt the gateway's router on ``prompts`` (``None``: the worker's kept prompts, taken out of
    its buffer) through the admin path — a new revision with a ``state_dir`` — and return the
    :class:`ir3de.Router.adapt` report.

    Raises:
        GatewayError: 409 when there is nothing to adapt on (capture off, or no prompt pending);
            400 when the router refuses the prompts or the options.
    """
    async with gw.admin_lock:
        if prompts is None:
            if not gw.capture.enabled:
                raise GatewayError(
                    409,
                    "this gateway keeps no routed prompts (adapt_capture is 0); set adapt_capture in its "
                    "config, or send the prompts to adapt on: {'prompts': [...]}",
                    code="capture_off",
                )
            prompts = gw.capture.take()
            if not prompts:
                raise GatewayError(
                    409,
                    f"no routed prompt is pending on worker {gw.state.worker} (they were adapted on "
                    "already, or none was routed yet); route traffic first",
                    code="nothing_to_adapt",
                )
        texts = list(prompts)
        kwargs = dict(options or {})
        try:
            return await _apply(gw.change, lambda reg: reg.adapt(texts, **kwargs))
        except TypeError as e:  # an option Router.adapt does not take
            raise GatewayError(400, f"Router.adapt refused the options: {e}", param="options") from None


async def _adapt_in_background(gw: Any) -> None:
    """``adapt_every``: adapt on the pending prompts; a failure is logged (never the text) and the
    prompts it took are dropped."""
    pending = len(gw.capture)
    try:
        report = await adapt_gateway(gw)
    except Exception as e:  # the gateway keeps serving; the log says what went wrong
        error = e.code if isinstance(e, GatewayError) else type(e).__name__  # a name: messages may quote
        logger.warning(json.dumps({"event": "adapt_failed", "prompts": pending, "error": error}))
        return
    logger.info(
        json.dumps(
            {
                "event": "adapted",
                "prompts": report.prompts,
                "routes_changed": report.routes_changed,
                "revision": gw.state.revision,
                "worker": gw.state.worker,
            }
        )
    )


async def _body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > request.app.state.gateway.config.max_body_bytes:
        raise GatewayError(413, "the admin request body exceeds max_body_bytes", code="request_too_large")
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GatewayError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "the request body must be a JSON object", code="invalid_request")
    return data


def _state(gw: Any) -> dict[str, Any]:
    return {"adaptation": adaptation_summary(gw.router), "capture": gw.capture.describe()}


def adaptation_routes() -> APIRouter:
    """``POST /admin/adapt``, ``POST /admin/forget-adaptation``, ``GET /admin/adaptation`` (the app
    checks the admin token on every call)."""
    routes = APIRouter(prefix="/admin")

    @routes.post("/adapt")
    async def adapt(request: Request) -> Response:
        gw = _gateway(request)
        data = await _body(request)
        unknown = sorted(set(data) - {"prompts", "options"})
        if unknown:
            raise GatewayError(400, f"unknown field(s) {unknown}; give 'prompts' and/or 'options'")
        prompts = data.get("prompts")
        if prompts is not None and (
            not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts)
        ):
            raise GatewayError(400, "'prompts' must be a non-empty list of strings", param="prompts")
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise GatewayError(400, "'options' must be an object of Router.adapt options", param="options")
        report = await adapt_gateway(gw, prompts, options)
        return JSONResponse({"adapted": report.to_dict(), "worker": gw.state.worker, **_state(gw)})

    @routes.post("/forget-adaptation")
    async def forget_adaptation(request: Request) -> Response:
        gw = _gateway(request)
        async with gw.admin_lock:
            await _apply(gw.change, lambda reg: reg.forget_adaptation())
            dropped = gw.capture.clear()
        return JSONResponse({"dropped_pending": dropped, "worker": gw.state.worker, **_state(gw)})

    @routes.get("/adaptation")
    async def get_adaptation(request: Request) -> Response:
        gw = _gateway(request)
        return JSONResponse({"worker": gw.state.worker, **_state(gw)})

    return routes
