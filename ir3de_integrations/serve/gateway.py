"""The gateway's live state (:class:`Gateway`) and how a route reaches it (:func:`get_gateway`).

:func:`~ir3de_integrations.serve.app.create_app` keeps one :class:`Gateway` in ``app.state.gateway``;
route functions receive it through FastAPI's dependency injection (``gw: GatewayDep``), so the
endpoint modules (:mod:`.chat`, :mod:`.status`, :mod:`.admin`) are plain functions, not closures.

Example:
    >>> from fastapi import APIRouter                                             # doctest: +SKIP
    >>> routes = APIRouter()  # doctest: +SKIP
    >>> @routes.get("/experts")  # doctest: +SKIP
    ... async def experts(gw: GatewayDep) -> list[str]:
    ...     return list(gw.router.experts)
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Annotated, Any

from fastapi import Depends, Request

from ir3de.serving.ownership import own_copy
from ir3de.serving.registry import fitted_router
from ir3de.serving.sessions import SessionStore

from .capture import CapturedPrompts
from .config import GatewayConfig
from .metrics import GatewayMetrics
from .state import LocalState, SharedState, State
from .upstream_client import UpstreamClient
from .upstreams import Upstreams

__all__ = ["Gateway", "GatewayDep", "get_gateway", "load_router", "log_event"]

logger = logging.getLogger("ir3de.serve")


def load_router(source: str) -> Any:
    """Load the router to serve from a folder or a Hub repo id (routing needs only the artifact)."""
    from ir3de import Router

    return Router.from_pretrained(source, device="cpu", progress=False)


def log_event(event: str, **fields: Any) -> None:
    """One JSON line on the ``ir3de.serve`` logger (at INFO; nothing is formatted when it is off)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(json.dumps({"event": event, **fields}, ensure_ascii=False, default=str))


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
            # a router of its own: admin changes never reach the caller's router object
            self.state = LocalState(
                own_copy(fitted_router(router)) if router is not None else load_router(config.router),
                config.experts,
            )
        self.sessions = SessionStore(ttl=config.session_ttl, max_sessions=config.max_sessions)
        self.conversation = config.conversation_settings()
        self.metrics = GatewayMetrics()
        self.client: UpstreamClient | None = None
        self.admin_lock = asyncio.Lock()
        self.capture = CapturedPrompts(config.adapt_capture)  # routed prompts kept to adapt on (opt-in)
        self.adapt_task: asyncio.Task[None] | None = None  # the adapt_every adaptation running now
        self.started = time.time()
        self.preload: threading.Thread | None = None
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

    @property
    def persisted(self) -> bool:
        """Whether admin changes outlive this process (only with a ``state_dir``)."""
        return self.config.state_dir is not None

    def _load_embeddings(self) -> None:
        try:
            self.router.embeddings  # noqa: B018 - loads them (the router logs it)
        except Exception as e:  # a change would meet the same error and answer it; say it now too
            logger.warning("could not load the router's embeddings in the background: %s", e)

    def start(self) -> None:
        """Open the upstream HTTP client and start following the shared state (the app's lifespan)."""
        if self.config.admin_token() is not None:
            # the first admin change of a loaded router would wait for its embeddings (seconds): load
            # them now, off the request path (routing never needs them)
            self.preload = threading.Thread(
                target=self._load_embeddings, name="ir3de-load-embeddings", daemon=True
            )
            self.preload.start()
        if not self.persisted and self.config.admin_token() is not None:
            logger.warning(
                "admin is on without a state folder: expert, traffic and tuning changes live in memory and "
                "are lost on restart; pass --state-dir DIR (state_dir: in the config) to keep them"
            )
        self.client = UpstreamClient(
            timeout=self.config.timeout, connect_timeout=self.config.connect_timeout, metrics=self.metrics
        )
        self.state.start()

    async def stop(self) -> None:
        """Let a running ``adapt_every`` adaptation finish, stop following the shared state and close
        the HTTP client (the end of the app's lifespan)."""
        if self.adapt_task is not None:
            await asyncio.wait([self.adapt_task], timeout=self.config.timeout)
        self.state.stop()
        if self.client is not None:
            await self.client.aclose()


def get_gateway(request: Request) -> Gateway:
    """The app's :class:`Gateway` (a FastAPI dependency: ``gw: GatewayDep`` in a route's signature)."""
    gateway: Gateway = request.app.state.gateway
    return gateway


#: A route parameter that receives the app's :class:`Gateway`.
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
