"""Run the gateway with uvicorn (what ``ir3de serve`` calls), in one process or several workers.

Several workers (``workers > 1``) are uvicorn worker processes, each building the app with
:func:`app_from_env` from the config passed in the ``IR3DE_SERVE_CONFIG`` environment variable; they
share routing state through ``state_dir`` (required then, see :mod:`.state`).

Before uvicorn starts its workers, :func:`preflight` checks in the supervisor that the state folder
holds a revision that can be served (seeding it when empty): a store with nothing servable stops
``ir3de serve`` with the reason instead of workers that crash-loop. Each worker watches its parent
(:func:`watch_parent`): when the supervisor dies (even by ``kill -9``) the workers exit within
seconds, so the port is free for a new ``ir3de serve``.

Example:
    >>> from ir3de_integrations.serve import GatewayConfig, serve               # doctest: +SKIP
    >>> serve(GatewayConfig.from_file("gateway.yaml"))                          # doctest: +SKIP
    >>> serve(GatewayConfig.from_file("gateway.yaml"), workers=4)               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from .config import DEFAULT_KEEP_ALIVE, ConfigError, GatewayConfig

__all__ = ["CONFIG_ENV", "ServerThread", "app_from_env", "preflight", "serve", "watch_parent"]

#: Environment variable carrying the gateway config (JSON) to uvicorn's worker processes.
CONFIG_ENV = "IR3DE_SERVE_CONFIG"
LOG_LEVEL_ENV = "IR3DE_SERVE_LOG_LEVEL"


def _setup_logging(log_level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("ir3de.serve", "ir3de.artifacts.revisions"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(log_level.upper())
        log.propagate = False


def check_workers(config: GatewayConfig, workers: int) -> None:
    """Raise :class:`ConfigError` unless ``workers`` is a positive integer and, above 1, the config
    has a ``state_dir`` (without one each worker would route with its own experts)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if workers > 1 and config.state_dir is None:
        raise ConfigError(
            f"{workers} workers need a shared state folder so that every worker routes with the same experts "
            "and learned traffic: set state_dir in the gateway config (or pass --state-dir DIR)"
        )


def app_from_env() -> Any:
    """The app factory of each uvicorn worker: the config from ``IR3DE_SERVE_CONFIG`` (JSON)."""
    from .app import create_app

    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise ConfigError(f"{CONFIG_ENV} is not set; start workers with `ir3de serve --workers N`")
    _setup_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
    watch_parent()
    return create_app(GatewayConfig.from_dict(json.loads(text)))


#: Seconds between a worker's checks that its supervisor is alive; and how long a worker whose
#: supervisor died may take to shut down gracefully before it exits hard.
PARENT_POLL_SECONDS = 0.5
ORPHAN_GRACE_SECONDS = 5.0


def watch_parent(poll: float = PARENT_POLL_SECONDS, grace: float = ORPHAN_GRACE_SECONDS) -> threading.Thread:
    """Exit this worker process when its parent (uvicorn's supervisor) dies.

    On Linux the kernel sends SIGTERM at the parent's death (``prctl(PR_SET_PDEATHSIG)``); a daemon
    thread also polls ``os.getppid()`` (portable, and covers a parent thread that exits). Either way the
    worker gets SIGTERM (uvicorn's graceful shutdown), then exits hard after ``grace`` seconds.

    Example:
        >>> watch_parent()   # doctest: +SKIP
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the thread below still watches
        if os.getppid() != parent:  # the parent died before prctl took effect
            parent = -1

    def watch() -> None:
        import signal

        while os.getppid() == parent:
            time.sleep(poll)
        logging.getLogger("ir3de.serve").warning(
            json.dumps({"event": "orphaned", "pid": os.getpid(), "parent": parent})
        )
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    thread = threading.Thread(target=watch, name="ir3de-parent-watch", daemon=True)
    thread.start()
    return thread


def preflight(config: GatewayConfig) -> None:
    """Check (in the supervisor, before any worker starts) that ``config.state_dir`` can be served:
    seed it when empty, remove leftovers, load the newest revision that loads.

    Raises:
        ConfigError: no revision of the store can be served (each reason in the message, and the repair).
    """
    from ir3de.artifacts.revisions import RevisionError

    from .app import load_router
    from .state import SharedState

    try:
        state = SharedState.open(config, None, load_router)
    except RevisionError as e:
        raise ConfigError(
            f"the state folder {config.state_dir} cannot be served: {e}. Repair: `ir3de revisions repair "
            f"{config.state_dir}`, or start from the configured router with an empty state_dir"
        ) from None
    state.store.drop_heartbeat(state.worker)


def serve(
    config: GatewayConfig, router: Any | None = None, *, log_level: str = "info", workers: int = 1
) -> None:
    """Serve ``config`` on ``config.host:config.port`` until interrupted (structured JSON logs on stderr).

    Raises:
        ConfigError: ``workers > 1`` without ``state_dir``, or ``router`` given with ``workers > 1``
            (worker processes load the router themselves).
    """
    import uvicorn

    check_workers(config, workers)
    common: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": log_level,
        "access_log": False,  # the gateway logs each request itself, as JSON
        "timeout_graceful_shutdown": 10,
        "timeout_keep_alive": config.keep_alive,
    }
    if workers > 1:
        if router is not None:
            raise ConfigError(
                "an in-memory router cannot be shared with worker processes; save it and set router"
            )
        _setup_logging(log_level)
        preflight(config)
        os.environ[CONFIG_ENV] = json.dumps(config.to_dict())
        os.environ[LOG_LEVEL_ENV] = log_level
        uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **common)
        return
    from .app import create_app

    _setup_logging(log_level)
    uvicorn.run(create_app(config, router), **common)


class ServerThread:
    """Serve an ASGI app (the gateway, an :class:`~.echo.EchoUpstream`…) with uvicorn on 127.0.0.1,
    a free port, in a background thread: for recipes, tests and notebooks, not for production.

    A context manager; ``url`` is ``http://127.0.0.1:<port>``; it stops on exit. Idle client
    connections stay open ``keep_alive`` seconds, as under ``ir3de serve``.

    Example:
        >>> from ir3de_integrations.serve.echo import EchoUpstream
        >>> with ServerThread(EchoUpstream("math")) as upstream:   # doctest: +SKIP
        ...     print(upstream.url)
        http://127.0.0.1:41234

    Raises:
        RuntimeError: the server did not start within ``start_timeout`` seconds.
    """

    def __init__(
        self,
        app: Any,
        *,
        timeout_graceful_shutdown: float = 2.0,
        start_timeout: float = 30.0,
        keep_alive: int = DEFAULT_KEEP_ALIVE,
    ) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            access_log=False,
            # uvicorn annotates int but waits with asyncio.wait_for, which takes any float
            timeout_graceful_shutdown=timeout_graceful_shutdown,  # type: ignore[arg-type]
            timeout_keep_alive=keep_alive,  # as `ir3de serve`: clients' own 5 s expiry never races it
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.sock.close()
                raise RuntimeError(f"the server for {self.app!r} did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
