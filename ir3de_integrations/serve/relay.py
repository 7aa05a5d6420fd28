"""From a decision to the client's response: forward the request to the chosen upstream and relay
its answer (whole or as server-sent events), with the decision in the headers and, on request, the body.

A retryable upstream failure goes once to the config's ``upstream_fallback`` (header
``x-ir3de-upstream-fallback``). A failure in the middle of a stream, after the status was sent,
becomes an SSE error event.

Example:
    >>> fwd = Forward(decision, upstream, payload, request_id="abc", revision=3)     # doctest: +SKIP
    >>> response = await send(gw, fwd, stream=False, include=True)                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from .gateway import Gateway, log_event
from .routing import GatewayDecision
from .safety import header_value
from .upstream_client import STREAM_ERRORS, UpstreamClient, UpstreamFailure
from .upstreams import Upstream

__all__ = ["Forward", "decision_headers", "relay_complete", "relay_stream", "send"]


class Forward:
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


def decision_headers(
    decision: GatewayDecision, request_id: str, revision: int, worker: str
) -> dict[str, str]:
    """The response headers that name the decision, the request, the revision and the worker."""
    return {
        "x-ir3de-expert": header_value(decision.expert),
        "x-ir3de-confidence": f"{decision.confidence:.4f}",
        "x-request-id": request_id,
        "x-ir3de-revision": str(revision),
        "x-ir3de-worker": header_value(worker),
    }


async def send(gw: Gateway, fwd: Forward, stream: bool, include: bool) -> Response:
    """Forward ``fwd`` upstream and relay the answer; a retryable failure retries once on the
    config's ``upstream_fallback`` (unless that is the upstream that failed)."""
    client = gw.client
    assert client is not None, "the gateway's lifespan has not started"
    headers = decision_headers(fwd.decision, fwd.request_id, fwd.revision, gw.state.worker)
    relay = relay_stream if stream else relay_complete
    try:
        return await relay(client, fwd, headers, include)
    except UpstreamFailure as failure:
        backup_name = gw.config.upstream_fallback
        backup = gw.upstreams.get(backup_name) if backup_name else None
        if not failure.retryable or backup is None or backup.name == fwd.upstream.name:
            raise
        log_event("upstream_fallback", request_id=fwd.request_id, failed=fwd.upstream.name, to=backup.name,
                  code=failure.code)  # fmt: skip
        fwd.upstream, fwd.served_by = backup, backup.name
        headers["x-ir3de-upstream-fallback"] = backup.name
        return await relay(client, fwd, headers, include)


async def relay_complete(
    client: UpstreamClient, fwd: Forward, headers: dict[str, str], include: bool
) -> Response:
    """The upstream's whole answer; with ``include`` (and a success) the decision added as ``ir3de``."""
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


async def relay_stream(
    client: UpstreamClient, fwd: Forward, headers: dict[str, str], include: bool
) -> Response:
    """The upstream's server-sent events relayed chunk by chunk; with ``include`` a first chunk with no
    choices carries the decision. An upstream 4xx passes through as a plain JSON response."""
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
