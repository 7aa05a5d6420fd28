"""Prometheus metrics of the gateway (``GET /metrics``), one registry per app.

* ``ir3de_routing_seconds`` — histogram of the time spent choosing an expert (tokenize + lookup);
* ``ir3de_decisions_total{expert}`` — routed requests per chosen expert;
* ``ir3de_abstentions_total`` — decisions that took the fallback (low confidence / unroutable);
* ``ir3de_upstream_seconds{expert}`` — histogram of upstream latency (to the full body, or to the
  stream's end);
* ``ir3de_upstream_errors_total{expert,kind}`` — upstream failures (``connect``, ``timeout``,
  ``status_5xx``, ``status_4xx``, ``protocol``; ``stale_connection``: a pooled connection the upstream
  had closed, the request resent on another);
* ``ir3de_requests_total{endpoint,status}`` — answered requests;
* ``ir3de_router_revision`` — the router revision this worker serves (see ``state_dir``);
* ``ir3de_revision_swaps_total`` — routing-state changes this worker switched to (own or others');
* ``ir3de_revisions_skipped`` — damaged revisions this worker skipped (``GET /admin/revisions`` says
  which and why); ``ir3de_revision_head_fault`` — 1 while the store's HEAD is garbled;
* ``ir3de_ready`` — 1 while this worker serves the newest revision it can (``GET /ready``).

Example:
    >>> m = GatewayMetrics()
    >>> m.decisions.labels(expert="math").inc()
    >>> b"ir3de_decisions_total" in m.render()[0]
    True
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["GatewayMetrics"]

_ROUTING_BUCKETS = (5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2)
_UPSTREAM_BUCKETS = (1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GatewayMetrics:
    """The gateway's collectors on their own :class:`CollectorRegistry` (several apps per process are fine)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.routing_seconds = Histogram(
            "ir3de_routing_seconds", "time spent choosing an expert", buckets=_ROUTING_BUCKETS, registry=r
        )
        self.decisions = Counter(
            "ir3de_decisions", "routed requests per chosen expert", ["expert"], registry=r
        )
        self.abstentions = Counter(
            "ir3de_abstentions", "decisions that took the fallback expert (low confidence)", registry=r
        )
        self.upstream_seconds = Histogram(
            "ir3de_upstream_seconds", "upstream latency", ["expert"], buckets=_UPSTREAM_BUCKETS, registry=r
        )
        self.upstream_errors = Counter(
            "ir3de_upstream_errors", "upstream failures", ["expert", "kind"], registry=r
        )
        self.requests = Counter("ir3de_requests", "answered requests", ["endpoint", "status"], registry=r)
        self.revision = Gauge("ir3de_router_revision", "router revision served by this worker", registry=r)
        self.revision_swaps = Counter(
            "ir3de_revision_swaps", "routing-state changes this worker switched to", registry=r
        )
        self.revisions_skipped = Gauge(
            "ir3de_revisions_skipped", "damaged revisions this worker skipped", registry=r
        )
        self.head_fault = Gauge(
            "ir3de_revision_head_fault", "1 while the store's HEAD is garbled", registry=r
        )
        self.ready = Gauge("ir3de_ready", "1 while this worker serves the newest revision it can", registry=r)

    def observe_state(self, state: Any) -> None:
        """Set the fault gauges from a gateway :class:`~.state.State` (before rendering)."""
        faults = state.faults()
        self.revisions_skipped.set(len(faults["skipped"]))
        self.head_fault.set(1 if faults["head_fault"] else 0)
        self.ready.set(1 if state.ready() else 0)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
