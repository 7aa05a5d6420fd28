"""The HTTP client that forwards chat requests to upstreams, with timeouts and typed failures.

One pooled ``httpx.AsyncClient`` serves every upstream. A failure becomes a :class:`GatewayError`
with an OpenAI-style body — connection refused → 502 ``upstream_unavailable``, no answer in time →
504 ``upstream_timeout``, an upstream 5xx → 502 ``upstream_error`` — and ``retryable`` tells whether
the configured upstream fallback may take over. An upstream 4xx is the client's own error and passes
through unchanged.

Example:
    >>> client = UpstreamClient(timeout=30, connect_timeout=5)               # doctest: +SKIP
    >>> response = await client.complete(upstream, b'{"model": "m", ...}')   # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from .errors import GatewayError
from .metrics import GatewayMetrics
from .upstreams import Upstream

__all__ = ["UpstreamClient", "UpstreamFailure"]


class UpstreamFailure(GatewayError):
    """An upstream could not answer. ``retryable``: the upstream fallback may be tried."""

    def __init__(self, status: int, message: str, *, code: str, retryable: bool, kind: str) -> None:
        super().__init__(status, message, code=code)
        self.retryable = retryable
        self.failure_kind = kind


def _failure(upstream: Upstream, exc: Exception, timeout: float) -> UpstreamFailure:
    where = f"upstream of expert {upstream.name!r} ({upstream.url})"
    if isinstance(exc, httpx.TimeoutException):
        what = "connect" if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)) else "answer"
        return UpstreamFailure(
            504,
            f"the {where} did not {what} within {timeout:g} s; raise its timeout in the gateway config or "
            "retry later",
            code="upstream_timeout",
            retryable=True,
            kind="timeout",
        )
    if isinstance(exc, httpx.ConnectError):
        return UpstreamFailure(
            502,
            f"the {where} is unreachable ({exc or type(exc).__name__}); check that it is running and its base_url",
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
    detail = ""
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
    """Forwards request bodies to upstreams (pooled connections, per-upstream timeouts).

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
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
        )

    def _timeout(self, upstream: Upstream) -> httpx.Timeout:
        read = upstream.config.timeout or self.timeout
        return httpx.Timeout(read, connect=min(self.connect_timeout, read), pool=read)

    def _count_error(self, upstream: Upstream, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_errors.labels(expert=upstream.name, kind=kind).inc()

    def _observe(self, upstream: Upstream, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.upstream_seconds.labels(expert=upstream.name).observe(seconds)

    async def complete(self, upstream: Upstream, body: bytes) -> httpx.Response:
        """POST ``body`` and read the whole answer. Raises :class:`UpstreamFailure` on 5xx/no answer."""
        timeout = self._timeout(upstream)
        start = time.perf_counter()
        try:
            response = await self._client.post(
                upstream.url, content=body, headers=upstream.headers, timeout=timeout
            )
        except httpx.HTTPError as e:
            failure = _failure(upstream, e, timeout.read or self.timeout)
            self._count_error(upstream, failure.failure_kind)
            raise failure from None
        self._observe(upstream, time.perf_counter() - start)
        if response.status_code >= 500:
            self._count_error(upstream, "status_5xx")
            raise _status_failure(upstream, response.status_code, response.content)
        if response.status_code >= 400:
            self._count_error(upstream, "status_4xx")
        return response

    async def open_stream(self, upstream: Upstream, body: bytes) -> httpx.Response:
        """POST ``body`` and return the response with its body not yet read (``aiter_raw``; close it).

        Raises :class:`UpstreamFailure` when the upstream does not answer or answers 5xx; a 4xx
        response comes back read, for the caller to pass through.
        """
        timeout = self._timeout(upstream)
        request = self._client.build_request(
            "POST", upstream.url, content=body, headers=upstream.headers, timeout=timeout
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as e:
            failure = _failure(upstream, e, timeout.read or self.timeout)
            self._count_error(upstream, failure.failure_kind)
            raise failure from None
        if response.status_code >= 400:
            try:
                await response.aread()
            except httpx.HTTPError as e:
                failure = _failure(upstream, e, timeout.read or self.timeout)
                self._count_error(upstream, failure.failure_kind)
                raise failure from None
            finally:
                await response.aclose()
            if response.status_code >= 500:
                self._count_error(upstream, "status_5xx")
                raise _status_failure(upstream, response.status_code, response.content)
            self._count_error(upstream, "status_4xx")
        return response

    def stream_failure(self, upstream: Upstream, exc: Exception) -> UpstreamFailure:
        """The error for a failure in the middle of a stream (counted)."""
        failure = _failure(upstream, exc, self._timeout(upstream).read or self.timeout)
        self._count_error(upstream, failure.failure_kind)
        return failure

    def observe(self, upstream: Upstream, seconds: float) -> None:
        """Record an upstream latency measured by the caller (a finished stream)."""
        self._observe(upstream, seconds)

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def http(self) -> Any:
        """The underlying ``httpx.AsyncClient``."""
        return self._client
