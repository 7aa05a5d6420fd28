"""Admin endpoints: add, update and remove experts and learn from feedback while the gateway serves.

Off unless the gateway config names ``admin_token_env`` and that variable holds a token; every call
then needs ``Authorization: Bearer <token>`` (else 401). Changes are serialised by the gateway's
asyncio lock; the slow part (counting texts, re-solving) runs in a worker thread, so the event loop
keeps serving. Experts change through the core :class:`ir3de.serving.registry.ExpertRegistry`, which changes
the router and the expert → upstream map together under its lock while requests route lock-free:
in-flight requests are never dropped, and a request always gets the upstream of the expert it was
routed to.

* ``GET /admin/experts`` — experts, descriptions and upstreams (no keys).
* ``POST /admin/experts`` — ``{"name", "description", "texts": [...] | "stat_pack": folder-or-repo,
  "upstream": {"base_url", "model", "api_key_env", "timeout"}}``.
* ``PATCH /admin/experts/{name}`` — ``{"texts": [...]}`` adds text to the expert's corpus statistics
  (exact, additive); ``{"upstream": {...}}`` points it at another upstream.
* ``DELETE /admin/experts/{name}`` — the router stops choosing it; requests already routed to it
  still reach its upstream. (``{name}`` may hold a ``/``: an expert named before the name rule,
  :data:`ir3de.errors.EXPERT_NAME_RULE`, can still be updated and removed.)
* Every ``POST``/``PATCH``/``DELETE`` takes an ``Idempotency-Key`` header (:mod:`.idempotency`).
* ``POST /admin/feedback`` — ``{"feedback": [{"prompt": "...", "expert": "math"}, ...]}``: labelled
  prompts learned as each expert's *traffic* (:meth:`ir3de.Router.learn`: a block of its own,
  weighted by the router's ``traffic_weight``/``traffic_policy``, exactly removable).
* ``POST /admin/tune`` — ``{"held_out": {"math": [...], ...}, "target_precision": 0.95,
  "per_expert": false, "abstain": "general"}``: temperature, evidence prior and abstain threshold(s)
  tuned on labelled prompts (:meth:`ir3de.Router.tune`); with a ``state_dir`` committed as a new
  revision like every other change, so every worker serves the tuned thresholds.
* ``GET /admin/traffic`` — the learned traffic per expert (:attr:`ir3de.Router.traffic`).
* ``DELETE /admin/traffic`` (all experts) or ``DELETE /admin/traffic/{name}`` — forget learned
  traffic (:meth:`ir3de.Router.forget_traffic`: back to the router before any feedback, exactly).
* ``GET /admin/revisions`` — the router revision each worker serves (heartbeats) and HEAD.
* ``POST /admin/adapt``, ``POST /admin/forget-adaptation``, ``GET /admin/adaptation`` — learn the
  routed prompts without labels (:mod:`.adaptation`).

With ``state_dir`` every change is committed as a new revision that all workers switch to
(:mod:`.state`); the response's ``x-ir3de-revision`` names it.

Example:
    >>> import httpx                                                                   # doctest: +SKIP
    >>> httpx.post("http://127.0.0.1:8000/admin/feedback", headers={"authorization": "Bearer s3cret"},  # doctest: +SKIP
    ...            json={"feedback": [{"prompt": "integrate x^2", "expert": "math"}]})  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from ir3de.errors import ExpertNameError, Ir3deError, check_expert_name
from ir3de.serving.error_codes import error_code, for_surface, http_status
from ir3de.serving.registry import ExpertRegistry

from .config import ConfigError, UpstreamConfig
from .errors import GatewayError
from .safety import load_json
from .upstreams import Upstream

__all__ = ["admin_routes", "apply_feedback", "forget_traffic", "traffic_summary"]


def apply_feedback(registry: ExpertRegistry[Any], items: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Learn labelled prompts ``(prompt, expert)`` as traffic; returns how many prompts per expert.

    Learns through the core registry (:meth:`ir3de.serving.registry.ExpertRegistry.learn`), so routing
    threads see the router before or after, never a mix.

    Example:
        >>> apply_feedback(registry, [("integrate x^2", "math")])   # doctest: +SKIP
        {'math': 1}
    """
    grouped: dict[str, list[str]] = defaultdict(list)
    for prompt, expert in items:
        grouped[expert].append(prompt)
    prompts = [p for p, _ in items]
    experts = [e for _, e in items]
    registry.learn(prompts, experts)
    return {e: len(p) for e, p in grouped.items()}


def forget_traffic(registry: ExpertRegistry[Any], expert: str | None = None) -> None:
    """Forget the traffic learned for ``expert`` (all experts with ``None``)."""
    registry.forget_traffic(expert)


def traffic_summary(router: Any) -> dict[str, Any]:
    """``router.traffic`` as JSON: per expert with learned traffic, its prompts, tokens and weight."""
    out: dict[str, Any] = {}
    for name, summary in router.traffic.items():
        out[name] = summary.to_dict()
    return {
        "traffic_weight": router.config.traffic_weight,
        "traffic_policy": router.config.traffic_policy,
        "experts": out,
    }


def _description(data: Mapping[str, Any]) -> str:
    description = data.get("description")
    if description is None:
        return ""
    if not isinstance(description, str):
        raise GatewayError(
            400,
            f"'description' must be a string, got {type(description).__name__}",
            code="invalid_description",
            param="description",
        )
    return description


def _gateway(request: Request) -> Any:
    gw = request.app.state.gateway
    token = gw.config.admin_token()
    if token is None:
        raise GatewayError(
            404,
            "the admin API is off; set admin_token_env in the gateway config to a variable holding a token",
            code="admin_disabled",
        )
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise GatewayError(
            401,
            "missing or wrong admin token; send 'Authorization: Bearer <token>'",
            code="invalid_admin_token",
        )
    return gw


async def _json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > request.app.state.gateway.config.max_body_bytes:
        raise GatewayError(413, "the admin request body exceeds max_body_bytes", code="request_too_large")
    data = load_json(body)  # 400 for invalid JSON, deep nesting, lone surrogates
    if not isinstance(data, dict):
        raise GatewayError(400, "the request body must be a JSON object", code="invalid_request")
    return data


def _require_expert(gw: Any, name: str) -> None:
    """404 unless the router has expert ``name``."""
    if name not in gw.router.experts:
        raise GatewayError(
            404, f"unknown expert {name!r}; experts are {list(gw.router.experts)}", code="expert_not_found"
        )


def _texts(data: Mapping[str, Any], required: bool) -> list[str] | None:
    texts = data.get("texts")
    if texts is None and not required:
        return None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise GatewayError(
            400, "'texts' must be a non-empty list of strings", code="invalid_texts", param="texts"
        )
    return texts


def _upstream(name: str, data: Any) -> UpstreamConfig:
    try:
        return UpstreamConfig.from_dict(name, data)
    except ConfigError as e:
        raise GatewayError(400, str(e), code="invalid_upstream", param="upstream") from None


async def _apply(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a change off the event loop; the client's errors become 4xx (a damaged store is a 503
    raised by the state as a :class:`GatewayError`)."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except GatewayError:
        raise
    except Ir3deError as e:
        raise GatewayError(
            http_status(e) if http_status(e) != 500 else 400,
            for_surface(str(e), "http"),
            code=error_code(e),
        ) from None
    except (ValueError, TypeError) as e:  # the input cannot be learned from (e.g. prompts with no token)
        raise GatewayError(400, f"the request cannot be applied: {e}", code="invalid_input") from None


async def _synced(gw: Any) -> None:
    """Catch up with HEAD before an admin call reads or changes experts (read-your-writes)."""
    await run_in_threadpool(gw.state.sync)


def _add_from_pack(registry: ExpertRegistry[Upstream], name: str, handler: Upstream, pack: str) -> None:
    """Add expert ``name`` from a stat pack (folder or Hub repo id) with its upstream, and the
    pack's learned traffic if it carries some, in one solve."""
    from ir3de.artifacts import folders as persistence
    from ir3de.artifacts.hub import resolve_folder

    data = persistence.load_pack(resolve_folder(pack, kind="stat_pack").folder)
    router = registry.router
    data.check_compatible(router.state.fingerprint, "the router")
    registry.add_counts(name, handler, data.counts, data.description, traffic=getattr(data, "traffic", None))


def _changed(gw: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a change: ``persisted`` says whether it outlives a restart (only with a state_dir)."""
    return {**body, "persisted": bool(gw.persisted)}


def _listing(gw: Any) -> dict[str, Any]:
    descriptions = gw.router.state.descriptions
    experts = []
    for name in gw.router.experts:
        upstream = gw.upstreams.get(name)
        experts.append(
            {
                "name": name,
                "description": descriptions.get(name, ""),
                "upstream": upstream.config.public() if upstream is not None else None,
            }
        )
    return {"experts": experts}


def admin_routes() -> APIRouter:
    """The ``/admin`` routes (the app checks the token on every call)."""
    routes = APIRouter(prefix="/admin")

    @routes.get("/experts")
    async def list_experts(request: Request) -> Response:
        gw = _gateway(request)
        await _synced(gw)
        return JSONResponse(_listing(gw))

    @routes.post("/experts")
    async def add_expert(request: Request) -> Response:
        gw = _gateway(request)
        data = await _json(request)
        try:
            name = check_expert_name(data.get("name"))
        except ExpertNameError as e:
            raise GatewayError(400, str(e), code="invalid_expert_name", param="name") from None
        if name == gw.config.virtual_model:
            raise GatewayError(400, f"{name!r} is the virtual model's name; pick another", param="name")
        upstream = _upstream(name, data.get("upstream"))
        pack, texts = data.get("stat_pack"), None
        if pack is None:
            texts = _texts(data, required=True)
        elif not isinstance(pack, str):
            raise GatewayError(400, "'stat_pack' must be a folder or Hub repo id", param="stat_pack")
        description = _description(data)
        async with gw.admin_lock:
            await _synced(gw)
            if name in gw.router.experts:
                raise GatewayError(
                    409,
                    f"expert {name!r} exists; PATCH /admin/experts/{name} to update it",
                    code="expert_exists",
                )
            handler = Upstream.from_config(name, upstream)
            if pack is not None:
                await _apply(gw.change, lambda reg: _add_from_pack(reg, name, handler, pack))
            else:
                await _apply(gw.change, lambda reg: reg.add(name, handler, texts, description))
            gw.upstreams.take_direct(name)  # it is routable now: the registry holds its upstream
        return JSONResponse(_changed(gw, _listing(gw)), status_code=201)

    @routes.patch("/experts/{name:path}")
    async def update_expert(name: str, request: Request) -> Response:
        gw = _gateway(request)
        data = await _json(request)
        texts = _texts(data, required=False)
        upstream = _upstream(name, data["upstream"]) if data.get("upstream") is not None else None
        if texts is None and upstream is None:
            raise GatewayError(
                400, "give 'texts' (more text for the expert) and/or 'upstream'", code="nothing_to_do"
            )
        async with gw.admin_lock:
            await _synced(gw)
            _require_expert(gw, name)
            handler = Upstream.from_config(name, upstream) if upstream is not None else None
            await _apply(gw.change, lambda reg: reg.update(name, texts, handler=handler))
        return JSONResponse(_changed(gw, _listing(gw)))

    @routes.delete("/experts/{name:path}")
    async def remove_expert(name: str, request: Request) -> Response:
        gw = _gateway(request)
        async with gw.admin_lock:
            await _synced(gw)
            _require_expert(gw, name)
            if name in (gw.config.fallback, gw.config.upstream_fallback):
                raise GatewayError(
                    409,
                    f"{name!r} is a configured fallback expert; it cannot be removed",
                    code="expert_in_use",
                )
            await _apply(gw.change, lambda reg: reg.remove(name))
        return JSONResponse(_changed(gw, _listing(gw)))

    @routes.post("/feedback")
    async def feedback(request: Request) -> Response:
        gw = _gateway(request)
        data = await _json(request)
        items = data.get("feedback")
        if not isinstance(items, list) or not items:
            raise GatewayError(
                400, "'feedback' must be a non-empty list of {prompt, expert}", param="feedback"
            )
        pairs = []
        for i, item in enumerate(items):
            if not (
                isinstance(item, dict)
                and isinstance(item.get("prompt"), str)
                and isinstance(item.get("expert"), str)
            ):
                raise GatewayError(
                    400, f"feedback #{i} must be {{'prompt': str, 'expert': str}}", param="feedback"
                )
            if not item["prompt"].strip():
                raise GatewayError(
                    400,
                    f"feedback #{i} has an empty prompt; send the prompt that was routed",
                    code="empty_prompt",
                    param="feedback",
                )
            pairs.append((item["prompt"], item["expert"]))
        async with gw.admin_lock:
            await _synced(gw)
            unknown = sorted({e for _, e in pairs} - set(gw.router.experts))
            if unknown:
                raise GatewayError(
                    404,
                    f"feedback names unknown experts {unknown}; experts are {list(gw.router.experts)}",
                    code="expert_not_found",
                )
            applied = await _apply(gw.change, lambda reg: apply_feedback(reg, pairs))
        return JSONResponse(
            _changed(gw, {"applied": applied, "traffic": traffic_summary(gw.router)["experts"]})
        )

    @routes.post("/tune")
    async def tune(request: Request) -> Response:
        gw = _gateway(request)
        data = await _json(request)
        held_out = data.get("held_out")
        if not (
            isinstance(held_out, dict)
            and held_out
            and all(isinstance(v, list) and all(isinstance(t, str) for t in v) for v in held_out.values())
        ):
            raise GatewayError(
                400,
                "'held_out' must map expert names to lists of labelled prompts",
                param="held_out",
            )
        target = data.get("target_precision", 0.95)
        abstain = data.get("abstain", gw.config.fallback)  # the gateway's own fallback abstains by default
        if isinstance(target, bool) or not isinstance(target, (int, float)):
            raise GatewayError(400, "'target_precision' must be a number in (0, 1]", param="target_precision")
        if abstain is not None and not isinstance(abstain, str):
            raise GatewayError(400, "'abstain' must be an expert name", param="abstain")
        options = {"per_expert": bool(data.get("per_expert", False)), "abstain": abstain}
        async with gw.admin_lock:
            await _synced(gw)
            unknown = sorted(set(held_out) - set(gw.router.experts))
            if unknown:
                raise GatewayError(
                    404,
                    f"held_out names unknown experts {unknown}; experts are {list(gw.router.experts)}",
                    code="expert_not_found",
                )
            tuned = await _apply(gw.change, lambda reg: reg.tune(held_out, float(target), **options))
        return JSONResponse(_changed(gw, {"tuned": tuned.to_dict()}))

    @routes.get("/traffic")
    async def get_traffic(request: Request) -> Response:
        gw = _gateway(request)
        return JSONResponse(traffic_summary(gw.router))

    @routes.delete("/traffic")
    async def forget_all_traffic(request: Request) -> Response:
        gw = _gateway(request)
        async with gw.admin_lock:
            await _synced(gw)
            await _apply(gw.change, lambda reg: forget_traffic(reg, None))
        return JSONResponse(_changed(gw, traffic_summary(gw.router)))

    @routes.delete("/traffic/{name:path}")
    async def forget_expert_traffic(name: str, request: Request) -> Response:
        gw = _gateway(request)
        async with gw.admin_lock:
            await _synced(gw)
            _require_expert(gw, name)
            await _apply(gw.change, lambda reg: forget_traffic(reg, name))
        return JSONResponse(_changed(gw, traffic_summary(gw.router)))

    @routes.get("/revisions")
    async def revisions(request: Request) -> Response:
        gw = _gateway(request)
        return JSONResponse(await run_in_threadpool(gw.state.describe))

    return routes
