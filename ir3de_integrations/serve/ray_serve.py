"""The gateway on Ray Serve: every replica runs the gateway's FastAPI app (``pip install 'ir3de[serve-ray]'``).

Glue only. A replica is exactly one gateway worker — :func:`~ir3de_integrations.serve.create_app`
with its lifespan, so its upstream HTTP client and its revision watcher start and stop with the
replica — and Ray Serve's HTTP proxy spreads requests over the replicas, which it starts, restarts
and autoscales. Responses name the revision and the worker (``x-ir3de-revision``,
``x-ir3de-worker``: host and process id of the replica) as on uvicorn.

What reaches every replica, and how:

* **Routing state** (experts added, updated or removed, learned traffic) lives in the gateway's
  shared revision folder, ``state_dir`` (:mod:`ir3de_integrations.serve.state`): an admin call,
  which the proxy hands to any one replica, commits a new revision there, and every replica swaps to
  it within ``revision_poll_seconds``; replicas started later (restarts, autoscaling) load it. Several
  replicas need it (:class:`ConfigError` otherwise); across machines it must be a shared filesystem
  (NFS, a mounted bucket with file locks) that every replica sees at the same path.
* **Live gateway settings** (:data:`LIVE_SETTINGS`: threshold, fallbacks, conversation knobs) go
  through Ray Serve's own mechanism, the deployment's ``user_config``: redeploying a Serve config file
  whose only change is ``user_config`` calls ``reconfigure`` on every running replica in place — no
  restart; a bad value fails the update with the :class:`ConfigError` that names it. ``reconfigure``
  also swaps the replica to ``HEAD`` at once, so ``user_config: {head: N}`` (:data:`HEAD_KEY`)
  announces revision ``N`` to every replica through Ray Serve, e.g. with a long poll interval that
  spares a network filesystem.

Use it from Python (:func:`gateway_app`, :func:`run_gateway`), from the command line
(``ir3de serve --ray``) or from a Ray Serve config file (``serve run serve.yaml``) whose
application's ``import_path`` is ``ir3de_integrations.serve.ray_serve:build_app``.

Example::

    from ray import serve
    from ir3de_integrations.serve import GatewayConfig
    from ir3de_integrations.serve.ray_serve import gateway_app, http_options

    config = GatewayConfig.from_file("gateway.yaml")      # with state_dir: a shared folder
    serve.start(http_options=http_options(config))   # host, port and keep-alive of Serve's proxy
    serve.run(gateway_app(config, num_replicas=2, ray_actor_options={"num_cpus": 0.5}), name="ir3de")
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ir3de.errors import require

from .config import DEFAULT_KEEP_ALIVE, ConfigError, GatewayConfig

if TYPE_CHECKING:
    from fastapi import FastAPI
    from ray import serve
else:
    serve = require("ray.serve", "the gateway on Ray Serve", "pip install 'ir3de[serve-ray]'")

__all__ = [
    "DEPLOYMENT_NAME",
    "HEAD_KEY",
    "LIVE_SETTINGS",
    "GatewayReplica",
    "build_app",
    "gateway_app",
    "gateway_deployment",
    "http_options",
    "run_gateway",
]

#: The deployment's name (the key for its options in a Ray Serve config file).
DEPLOYMENT_NAME = "Ir3deGateway"

#: Gateway settings a deployment's ``user_config`` may change on running replicas.
LIVE_SETTINGS = (
    "threshold",
    "fallback",
    "upstream_fallback",
    "log_prompts",
    "half_life",
    "user_weight",
    "assistant_weight",
    "include_system",
    "margin",
)

#: Replica concurrency: a gateway replica awaits its upstreams (LLM answers take seconds), so it
#: holds many requests at once; Ray Serve's default of 5 would queue them in the proxy.
DEFAULT_MAX_ONGOING_REQUESTS = 256


#: The ``user_config`` key that announces a new revision: every replica swaps to ``HEAD`` on
#: reconfigure (any change of ``user_config`` does so; a new value of this key is such a change).
HEAD_KEY = "head"


def http_options(
    config: GatewayConfig | None = None, *, host: str = "127.0.0.1", port: int = 8000
) -> dict[str, Any]:
    """The ``http_options`` of ``serve.start`` for ``config``: Serve's HTTP proxy listens on the config's
    host and port and keeps idle client connections open ``config.keep_alive`` seconds (Ray Serve's
    default, 5 s, races the OpenAI SDK's own 5 s expiry, as uvicorn's does). Without a config (a proxy
    started before any gateway is configured): ``host``, ``port`` and the default keep-alive.

    Example:
        >>> cfg = GatewayConfig.from_dict({"router": "r", "port": 9000})
        >>> http_options(cfg)
        {'host': '127.0.0.1', 'port': 9000, 'keep_alive_timeout_s': 75}
        >>> http_options(port=8123)
        {'host': '127.0.0.1', 'port': 8123, 'keep_alive_timeout_s': 75}
    """
    if config is None:
        return {"host": host, "port": port, "keep_alive_timeout_s": DEFAULT_KEEP_ALIVE}
    return {"host": config.host, "port": config.port, "keep_alive_timeout_s": config.keep_alive}


def _check_live_keys(user_config: Any) -> None:
    if not isinstance(user_config, Mapping):
        raise ConfigError(
            f"user_config must be a mapping of live gateway settings {list(LIVE_SETTINGS)} (and "
            f"{HEAD_KEY!r}), got {type(user_config).__name__}"
        )
    unknown = sorted(set(user_config) - {*LIVE_SETTINGS, HEAD_KEY})
    if unknown:
        raise ConfigError(
            f"user_config: {unknown} cannot change on running replicas; live settings are "
            f"{list(LIVE_SETTINGS)}, plus {HEAD_KEY!r} (a revision number: swap to HEAD now); change "
            "the others in the gateway config and redeploy"
        )
    head = user_config.get(HEAD_KEY)
    if head is not None and (isinstance(head, bool) or not isinstance(head, int) or head < 1):
        raise ConfigError(f"user_config: {HEAD_KEY!r} must be a revision number (>= 1), got {head!r}")


def _live_config(config: GatewayConfig, user_config: Mapping[str, Any] | None) -> GatewayConfig:
    """``config`` with the live settings of ``user_config`` applied (validated by the config itself)."""
    if user_config is None:
        return config
    _check_live_keys(user_config)
    settings = {k: v for k, v in user_config.items() if k != HEAD_KEY}
    try:
        return dataclasses.replace(config, **settings)
    except TypeError as e:
        raise ConfigError(f"user_config: {e}") from None


@serve.ingress()
class GatewayReplica:
    """One Ray Serve replica of the gateway: ``create_app(config)`` built when the replica starts.

    Args:
        config: the gateway config as plain data (:meth:`GatewayConfig.to_dict`), so that a Ray Serve config
            file can carry it and nothing but JSON crosses to the replicas.

    ``reconfigure(user_config)`` (called by Ray Serve when the replica starts and on every change of
    the deployment's ``user_config``) applies the :data:`LIVE_SETTINGS` in it; absent keys go back to
    the config's values (``user_config: {}`` resets them all: Ray Serve does not call ``reconfigure``
    when ``user_config`` is removed).
    """

    #: the app :meth:`__serve_build_asgi_app__` built; Ray Serve sets it on the replica
    app: FastAPI

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.base_config = GatewayConfig.from_dict(config)

    def __serve_build_asgi_app__(self) -> Any:
        """The replica's ASGI app (Ray Serve runs its lifespan after this returns)."""
        from .app import create_app

        return create_app(self.base_config)  # Ray Serve keeps it as ``self.app``

    async def reconfigure(self, user_config: Mapping[str, Any] | None) -> None:
        """Apply the live settings of ``user_config`` to this replica's gateway — the checked config
        replaces the old one whole, for the requests that start after this call; a ``fallback``
        must be an expert of the gateway config (whose upstream it names) — then swap to the state
        folder's ``HEAD`` now if it is newer (off the event loop), without waiting for the next poll.

        Raises:
            ConfigError: an unknown key or a bad value (the update fails; the replica keeps its settings).
        """
        gw = self.app.state.gateway
        config = _live_config(self.base_config, user_config)
        conversation = config.conversation_settings()
        gw.conversation = conversation
        gw.config = config
        await asyncio.to_thread(gw.state.sync)


def gateway_deployment(
    *,
    num_replicas: int | str | None = None,
    autoscaling_config: Mapping[str, Any] | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    user_config: Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """The gateway's Ray Serve ``Deployment`` with these options (unset ones keep Ray Serve's defaults).

    Args:
        num_replicas: a fixed number of replicas (Ray Serve's default: 1), or ``"auto"``.
        autoscaling_config: Ray Serve's autoscaling settings, e.g. ``{"min_replicas": 1,
            "max_replicas": 4, "target_ongoing_requests": 64}``; excludes a fixed ``num_replicas``.
        ray_actor_options: resources of each replica, e.g. ``{"num_cpus": 0.5}``.
        max_ongoing_requests: requests one replica holds at once (default 256: replicas wait on
            their upstreams, not on the CPU).
        user_config: live settings (:data:`LIVE_SETTINGS`) for every replica.
        **options: any other ``serve.deployment`` option (``health_check_period_s``…).

    Raises:
        ConfigError: a fixed ``num_replicas`` together with ``autoscaling_config``, or a bad user_config.

    Example:
        >>> gateway_deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.5}).num_replicas
        2
    """
    if autoscaling_config is not None and num_replicas not in (None, "auto"):
        raise ConfigError(
            f"give either num_replicas={num_replicas!r} (a fixed count) or autoscaling_config (its "
            "min_replicas/max_replicas), not both"
        )
    if user_config is not None:
        _check_live_keys(user_config)  # fail here, not on every replica
    given = {
        "num_replicas": num_replicas,
        "autoscaling_config": dict(autoscaling_config) if autoscaling_config is not None else None,
        "ray_actor_options": dict(ray_actor_options) if ray_actor_options is not None else None,
        "user_config": dict(user_config) if user_config is not None else None,
        "max_ongoing_requests": max_ongoing_requests,
        **options,
    }
    deployment = serve.deployment(name=DEPLOYMENT_NAME)(GatewayReplica)
    return deployment.options(**{k: v for k, v in given.items() if v is not None})


def _many_replicas(options: Mapping[str, Any]) -> bool:
    autoscaling = options.get("autoscaling_config")
    if autoscaling is not None:
        return int(dict(autoscaling).get("max_replicas", 1)) > 1
    replicas = options.get("num_replicas")
    return replicas == "auto" or (isinstance(replicas, int) and replicas > 1)


def _absolute(path: str, base: Path, *, local: bool) -> str:
    """``path`` made absolute against ``base``; a router that is no local folder (a Hub repo id) is
    left as it is."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return str(candidate)
    resolved = base / candidate
    if local or resolved.exists() or path.startswith("."):
        return str(resolved.resolve())
    return path


def gateway_app(config: GatewayConfig, *, base: str | Path | None = None, **options: Any) -> Any:
    """The Ray Serve application of the gateway: ``serve.run(gateway_app(config, num_replicas=2))``.

    Args:
        config: the gateway config; with more than one replica it needs ``state_dir``.
        base: the folder relative ``router`` and ``state_dir`` paths are taken from (default: the
            current directory); they are made absolute, as replicas run in other directories.
        **options: :func:`gateway_deployment`'s.

    Ray Serve redeploys an application given to ``serve.run`` with new replicas (a rolling update:
    new ones start before old ones stop). To change live settings on running replicas in place,
    deploy a Serve config file (:func:`build_app`) and redeploy it with only its ``user_config``
    changed.

    Raises:
        ConfigError: several replicas (or autoscaling) without ``state_dir``, or a bad ``user_config``.
    """
    if config.state_dir is None and _many_replicas(options):
        raise ConfigError(
            "several Ray Serve replicas need a shared state folder so that every replica routes with the "
            "same experts and learned traffic: set state_dir in the gateway config (a shared filesystem "
            "path when replicas run on several machines)"
        )
    _live_config(config, options.get("user_config"))  # bad values fail here, not on every replica
    root = Path(base) if base is not None else Path.cwd()
    data = config.to_dict()
    data["router"] = _absolute(config.router, root, local=False)
    if config.state_dir is not None:
        data["state_dir"] = _absolute(config.state_dir, root, local=True)
    return gateway_deployment(**options).bind(data)


def build_app(args: Mapping[str, Any]) -> Any:
    """Ray Serve application builder, for ``serve run`` and Ray Serve config files.

    ``args``: ``config`` (a gateway config file, required) and any gateway config key to override.
    Relative paths in the gateway config (``router``, ``state_dir``) are taken from the config file's
    folder. Replica counts, autoscaling, resources and ``user_config`` go where Ray Serve keeps them:
    the ``deployments:`` entry named :data:`DEPLOYMENT_NAME` in the Serve config file (a replica count
    above 1 with no ``state_dir`` is not caught here: Ray Serve applies it after this builder ran).

    Example::

        serve run ir3de_integrations.serve.ray_serve:build_app config=/srv/ir3de/gateway.yaml

    Raises:
        ConfigError: no ``config`` given, or the file/overrides are invalid.
    """
    args = dict(args)
    path = args.pop("config", None)
    if not isinstance(path, str) or not path:
        raise ConfigError(
            "build_app needs args: {config: path/to/gateway.yaml} (plus gateway config keys to override)"
        )
    config = GatewayConfig.from_file(path, **args)
    return gateway_app(config, base=Path(path).expanduser().resolve().parent)


def run_gateway(
    config: GatewayConfig,
    *,
    address: str | None = None,
    name: str = "ir3de",
    blocking: bool = True,
    **options: Any,
) -> Any:
    """Serve ``config`` on Ray Serve at ``config.host:config.port`` (what ``ir3de serve --ray`` calls).

    Connects to the Ray cluster at ``address`` (None: ``RAY_ADDRESS``, else a new local Ray) unless
    Ray is already initialised, starts Serve's HTTP proxy on the config's host and port (a Serve that
    runs already keeps its own), and deploys :func:`gateway_app` as the application ``name``;
    ``options`` are :func:`gateway_deployment`'s. With ``blocking=False`` it returns the application's
    handle; else it serves until interrupted (Ctrl-C or SIGTERM), then deletes the application —
    and stops Serve and the local Ray when it started them.

    Example:
        >>> run_gateway(GatewayConfig.from_file("gateway.yaml"), num_replicas=2)   # doctest: +SKIP
    """
    import os
    import signal
    import time

    import ray

    app = gateway_app(config, **options)  # config errors before anything starts
    local = False
    if not ray.is_initialized():
        local = address is None and not os.environ.get("RAY_ADDRESS")
        ray.init(address=address, include_dashboard=False)
    if not blocking:
        serve.start(http_options=http_options(config))
        return serve.run(app, name=name, route_prefix="/")
    # after ray.init, which sets its own SIGTERM handler (exit at once): `kill` stops as Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve.start(http_options=http_options(config))
        serve.run(app, name=name, route_prefix="/")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            if name in serve.status().applications:
                serve.delete(name)
        finally:
            if local:
                serve.shutdown()
                ray.shutdown()
    return None
