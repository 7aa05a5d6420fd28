"""The HTTP client that forwards chat requests to upstreams, with timeouts and typed failures.

One pooled ``aiohttp.ClientSession`` serves every upstream: aiohttp writes a request in one send,
where httpx writes headers and body separately (the cost of each, from benchmarks/gateway.py, is in
docs/benchmarks.md). A failure becomes a :class:`UpstreamFailure` with an OpenAI-style body —
connection refused → 502 ``upstream_unavailable``, no answer in time → 504 ``upstream_timeout``, an
upstream 5xx → 502 ``upstream_error`` — and ``retryable`` tells whether the configured upstream
fallback may take over. An upstream 4xx is the client's own error and passes through unchanged.

A pooled keep-alive connection can be closed by the upstream just as a request goes out on it (uvicorn,
and so vLLM, closes connections idle for 5 s; the gateway keeps them for 30). The request then fails
before any answer with ``ServerDisconnectedError`` or a reset. Such a request is sent once more on another
connection (RFC 9112 §9.3.1; aiohttp does this itself for idempotent methods only, and a chat completion
is a POST); aiohttp's request tracing tells a reused connection from a fresh one, and a failure on a fresh
connection is never resent.

Example:
    >>> client = UpstreamClient(timeout=30, connect_timeout=5)               # doctest: +SKIP
    >>> response = await client.complete(upstream, b'{"model": "m", ...}')   # doctest: +SKIP
    >>> response.status, response.content[:20]                               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp

from .errors import GatewayError
from .metrics import GatewayMetrics
from .upstreams import Upstream

__all__ = ["UpstreamClient", "UpstreamFailure", "UpstreamResponse"]

#: Failures in the middle of a relayed stream (the caller turns them into an SSE error event).
STREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)

#: How a request fails, before any answer, on a pooled connection the upstream had closed.
STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def _mark_reused(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceConnectionReuseconnParams
) -> None:
    """Trace hook: the request went out on a pooled keep-alive connection."""
    context.trace_request_ctx["reused"] = True


class UpstreamFailure(GatewayError):
    """An upstream could not answer. ``retryable``: the upstream fallback may be tried."""

    def __init__(self, status: int, message: str, *, code: str, retryable: bool, kind: str) -> None:
        super().__init__(status, message, code=code)
        self.retryable = retryable
        self.failure_kind = kind


class UpstreamResponse:
    """An upstream's answer: ``status`` and ``content`` (read), or a body still to stream (:meth:`chunks`)."""

    __slots__ = ("_response", "content", "status")

    def __init__(self, status: int, content: bytes = b"", response: Any = None) -> None:
        self.status = status
        self.content = content
        self._response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (streaming responses only)."""
        async for piece in self._response.content.iter_any():
            yield piece

    def close(self) -> None:
        if self._response is not None:
            self._response.close()


def _failure(upstream: Upstream, exc: BaseException, timeout: float) -> UpstreamFailure:
    where = f"upstream of expert {upstream.name!r} ({upstream.url})"
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        what = "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "answer"
        return UpstreamFailure(
            504,
            f"the {where} did not {what} within {timeout:g} s; raise its timeout in the gateway config or "
            "retry later",
            code="upstream_timeout",
            retryable=True,
            kind="timeout",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure(
            502,
            f"the {where} is unreachable ({str(exc.os_error) or type(exc).__name__}); check that it is running and "
            "its base_url",
            code="upstream_unavailable",
            retryable=True,
            kind="connect",
        )
    return UpstreamFailure(
        502,
        f"the {where} broke the connection ({type(exc).__name__}: {exc})",
        code="upstream_error",
        retryable=True,
        kind="protocol",
    )


def _status_failure(upstream: Upstream, status: int, content: bytes) -> UpstreamFailure:
    try:
        detail = json.loads(content)["error"]["message"]
    except Exception:
        detail = content[:200].decode("utf-8", "replace")
    return UpstreamFailure(
        502,
        f"the upstream of expert {upstream.name!r} answered {status}: {detail}",
        code="upstream_error",
        retryable=True,
        kind="status_5xx",
    )


class UpstreamClient:
    """Forwards request bodies to upstreams (pooled keep-alive connections, per-upstream timeouts).

    Create it inside the running event loop (the app's lifespan does).

    Args:
        timeout: seconds to wait for each read from an upstream (an expert's own ``timeout`` wins).
        connect_timeout: seconds to wait for a connection.
        metrics: where upstream latency and failures are counted.
        max_connections: pooled connections across all upstreams.
    """

    def __init__(
        self,
        *,
        timeout: float,
        connect_timeout: float,
        metrics: GatewayMetrics | None = None,
        max_connections: int = 1024,
    ) -> None:
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.metrics = metrics
        reuse = aiohttp.TraceConfig()
        reuse.on_connection_reuseconn.append(_mark_reused)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.connect_timeout, sock_read=self.timeout
            ),
            skip_auto_headers=("User-Agent",),
            trace_configs=[reuse],
        )
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _read_timeout(self, upstream: Upstream) -> float:
        return upstream.config.timeout or self.timeout

    def _timeout(self, upstream: Upstream) -> aiohttp.ClientTimeout:
        read = self._read_timeout(upstream)
        t = self._timeouts.get(read)
        if t is None:
            t = self._timeouts[read] = aiohttp.ClientTimeout(
                total=None, sock_connect=min(self.connect_timeout, read), sock_read=read
            )
        return t

    def _count_error(self, upstream: Upstream, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_errors.labels(expert=upstream.name, kind=kind).inc()

    def _observe(self, upstream: Upstream, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.upstream_seconds.labels(expert=upstream.name).observe(seconds)

    def _fail(self, upstream: Upstream, exc: BaseException) -> UpstreamFailure:
        failure = _failure(upstream, exc, self._read_timeout(upstream))
        self._count_error(upstream, failure.failure_kind)
        return failure

    async def _post(self, upstream: Upstream, body: bytes) -> aiohttp.ClientResponse:
        """POST ``body`` up to the answer's headers; once more when a reused connection turns out closed."""
        reused: dict[str, bool] = {}
        try:
            return await self._session.post(
                upstream.url,
                data=body,
                headers=upstream.headers,
                timeout=self._timeout(upstream),
                trace_request_ctx=reused,
            )
        except STALE_CONNECTION_ERRORS:
            if not reused:
                raise
            self._count_error(upstream, "stale_connection")
        return await self._session.post(
            upstream.url, data=body, headers=upstream.headers, timeout=self._timeout(upstream)
        )

    async def complete(self, upstream: Upstream, body: bytes) -> UpstreamResponse:
        """POST ``body`` and read the whole answer. Raises :class:`UpstreamFailure` on 5xx/no answer."""
        start = time.perf_counter()
        try:
            async with await self._post(upstream, body) as response:
                content = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise self._fail(upstream, e) from None
        self._observe(upstream, time.perf_counter() - start)
        if status >= 500:
            self._count_error(upstream, "status_5xx")
            raise _status_failure(upstream, status, content)
        if status >= 400:
            self._count_error(upstream, "status_4xx")
        return UpstreamResponse(status, content)

    async def open_stream(self, upstream: Upstream, body: bytes) -> UpstreamResponse:
        """POST ``body``; a 2xx comes back with its body still to stream (:meth:`UpstreamResponse.chunks`,
        then ``close``). Raises :class:`UpstreamFailure` when the upstream does not answer or answers
        5xx; a 4xx comes back read, for the caller to pass through.
        """
        try:
            response = await self._post(upstream, body)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise self._fail(upstream, e) from None
        if response.status < 400:
            return UpstreamResponse(response.status, response=response)
        try:
            content = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise self._fail(upstream, e) from None
        finally:
            response.release()
        if response.status >= 500:
            self._count_error(upstream, "status_5xx")
            raise _status_failure(upstream, response.status, content)
        self._count_error(upstream, "status_4xx")
        return UpstreamResponse(response.status, content)

    def stream_failure(self, upstream: Upstream, exc: BaseException) -> UpstreamFailure:
        """The error for a failure in the middle of a stream (counted)."""
        return self._fail(upstream, exc)

    def observe(self, upstream: Upstream, seconds: float) -> None:
        """Record an upstream latency measured by the caller (a finished stream)."""
        self._observe(upstream, seconds)

    async def aclose(self) -> None:
        await self._session.close()
