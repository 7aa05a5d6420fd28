"""The gateway on Ray Serve: every replica runs the gateway's FastAPI app (``pip install 'ir3de[serve-ray]'``).

Glue only. A replica is exactly one gateway worker (:func:`~ir3de_integrations.serve.create_app` with
its lifespan, so its upstream HTTP client starts and stops with the replica); Ray Serve's HTTP proxy
spreads requests over the replicas, starts, restarts and autoscales them. Every response names the
replica that served it (``x-ir3de-replica``).

What reaches every replica, and how:

* **Live gateway settings** go through Ray Serve's own mechanism: the deployment's ``user_config``
  (keys in :data:`LIVE_SETTINGS`). ``serve.run`` with a new ``user_config`` (or ``serve deploy`` of an
  edited config file) calls ``reconfigure`` on every running replica in place — no restart, no
  dropped request; a bad value fails the update with the :class:`ConfigError` that names it.
* **Routing state** (experts added, updated or removed, learned traffic) changes through the admin
  API of whichever replica the proxy picks; for the other replicas to follow, give the gateway a
  shared revision folder (``state_dir``): see the README's "On Ray Serve" part.

Use it from Python (:func:`gateway_app`, :func:`run_gateway`), from the command line
(``ir3de serve --ray``) or from a Ray Serve config file (``serve run serve.yaml``) whose
application's ``import_path`` is ``ir3de_integrations.serve.ray_serve:build_app``.

Example:
    >>> from ray import serve                                                       # doctest: +SKIP
    >>> from ir3de_integrations.serve import GatewayConfig
    >>> from ir3de_integrations.serve.ray_serve import gateway_app
    >>> config = GatewayConfig.from_file("gateway.yaml")
    >>> serve.start(http_options={"host": config.host, "port": config.port})
    >>> serve.run(gateway_app(config, num_replicas=2, ray_actor_options={"num_cpus": 0.5}), name="ir3de")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ir3de.errors import MissingDependencyError

from .config import ConfigError, GatewayConfig

try:
    from ray import serve
except ImportError as e:  # pragma: no cover - exercised only without Ray
    raise MissingDependencyError(
        f"the gateway on Ray Serve needs Ray Serve: pip install 'ir3de[serve-ray]' ({e})"
    ) from e

__all__ = [
    "DEPLOYMENT_NAME",
    "LIVE_SETTINGS",
    "REPLICA_HEADER",
    "GatewayReplica",
    "build_app",
    "config_to_dict",
    "gateway_app",
    "gateway_deployment",
    "run_gateway",
]

#: The deployment's name (the key for its options in a Ray Serve config file).
DEPLOYMENT_NAME = "Ir3deGateway"

#: The response header naming the Ray Serve replica that served a request.
REPLICA_HEADER = "x-ir3de-replica"

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


def config_to_dict(config: GatewayConfig) -> dict[str, Any]:
    """``config`` as plain JSON data that :meth:`GatewayConfig.from_dict` reads back (no API keys:
    upstreams keep only the name of their key's environment variable).

    Example:
        >>> cfg = GatewayConfig.from_dict({"router": "r", "experts": {"math": "http://h/v1"}})
        >>> GatewayConfig.from_dict(config_to_dict(cfg)) == cfg
        True
    """
    data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "experts"}
    data["experts"] = {name: upstream.public() for name, upstream in config.experts.items()}
    return data


def _check_live_keys(user_config: Any) -> None:
    if not isinstance(user_config, Mapping):
        raise ConfigError(
            f"user_config must be a mapping of live gateway settings {list(LIVE_SETTINGS)}, "
            f"got {type(user_config).__name__}"
        )
    unknown = sorted(set(user_config) - set(LIVE_SETTINGS))
    if unknown:
        raise ConfigError(
            f"user_config: {unknown} cannot change on running replicas; live settings are "
            f"{list(LIVE_SETTINGS)} (change the others in the gateway config and redeploy)"
        )


def _live_config(config: GatewayConfig, user_config: Mapping[str, Any] | None) -> GatewayConfig:
    """``config`` with the live settings of ``user_config`` applied (validated by the config itself)."""
    if user_config is None:
        return config
    _check_live_keys(user_config)
    try:
        return dataclasses.replace(config, **dict(user_config))
    except TypeError as e:
        raise ConfigError(f"user_config: {e}") from None


class _ReplicaHeader:
    """ASGI middleware: names the replica in every HTTP response's headers."""

    def __init__(self, app: Any, replica_id: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica_id.encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, named)


@serve.ingress()
class GatewayReplica:
    """One Ray Serve replica of the gateway: ``create_app(config)`` built when the replica starts.

    Args:
        config: the gateway config as plain data (:func:`config_to_dict`), so that a Ray Serve config
            file can carry it and nothing but JSON crosses to the replicas.

    ``reconfigure(user_config)`` (called by Ray Serve when the replica starts and on every change of
    the deployment's ``user_config``) applies the :data:`LIVE_SETTINGS` in it; absent keys go back to
    the config's values.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.base_config = GatewayConfig.from_dict(config)
        self.replica_id = serve.get_replica_context().replica_id.unique_id

    def __serve_build_asgi_app__(self) -> Any:
        """The replica's ASGI app (Ray Serve runs its lifespan after this returns)."""
        from .app import create_app

        app = create_app(self.base_config)
        app.add_middleware(_ReplicaHeader, replica_id=self.replica_id)
        return app  # Ray Serve keeps it as ``self.app``

    def reconfigure(self, user_config: Mapping[str, Any] | None) -> None:
        """Apply the live settings of ``user_config`` to this replica's gateway (atomically: requests
        read ``gateway.config`` once each).

        Raises:
            ConfigError: an unknown key or a bad value (the update fails; the replica keeps its settings).
        """
        gw = self.app.state.gateway
        config = _live_config(self.base_config, user_config)
        conversation = config.conversation_settings()
        gw.conversation = conversation
        gw.config = config


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
    deployment = serve.deployment(GatewayReplica, name=DEPLOYMENT_NAME)
    return deployment.options(**{k: v for k, v in given.items() if v is not None})


def gateway_app(config: GatewayConfig, **options: Any) -> Any:
    """The Ray Serve application of the gateway: ``serve.run(gateway_app(config, num_replicas=2))``.

    ``options`` are :func:`gateway_deployment`'s. A router given as a local folder is made absolute,
    so replicas find it whatever their working directory; on several machines it must be on a shared
    filesystem (or be a Hub repo id).

    Ray Serve redeploys an application given to ``serve.run`` with new replicas (a rolling update:
    new ones start before old ones stop). To change live settings on running replicas in place,
    deploy a Serve config file (:func:`build_app`) and redeploy it with only its ``user_config``
    changed.
    """
    _live_config(config, options.get("user_config"))  # bad values fail here, not on every replica
    data = config_to_dict(config)
    if Path(config.router).exists():
        data["router"] = str(Path(config.router).resolve())
    return gateway_deployment(**options).bind(data)


def build_app(args: Mapping[str, Any]) -> Any:
    """Ray Serve application builder, for ``serve run`` and Ray Serve config files.

    ``args``: ``config`` (a gateway config file, required) and any gateway config key to override.
    Replica counts, autoscaling, resources and ``user_config`` go where Ray Serve keeps them: the
    ``deployments:`` entry named :data:`DEPLOYMENT_NAME` in the Serve config file.

    Example::

        serve run ir3de_integrations.serve.ray_serve:build_app config=gateway.yaml

    Raises:
        ConfigError: no ``config`` given, or the file/overrides are invalid.
    """
    args = dict(args)
    path = args.pop("config", None)
    if not isinstance(path, str) or not path:
        raise ConfigError(
            "build_app needs args: {config: path/to/gateway.yaml} (plus gateway config keys to override)"
        )
    return gateway_app(GatewayConfig.from_file(path, **args))


def run_gateway(
    config: GatewayConfig,
    *,
    address: str | None = None,
    name: str = "ir3de",
    blocking: bool = True,
    **options: Any,
) -> Any:
    """Serve ``config`` on Ray Serve at ``config.host:config.port`` (what ``ir3de serve --ray`` calls).

    Connects to the Ray cluster at ``address`` (None: ``RAY_ADDRESS`` or a new local one) unless Ray
    is already initialised, starts Serve's HTTP proxy on the config's host and port, and deploys
    :func:`gateway_app` as the application ``name``. ``options`` are :func:`gateway_deployment`'s.
    Returns the application's handle (when ``blocking`` is False; else it serves until interrupted).

    Example:
        >>> run_gateway(GatewayConfig.from_file("gateway.yaml"), num_replicas=2)   # doctest: +SKIP
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
    serve.start(http_options={"host": config.host, "port": config.port})
    return serve.run(gateway_app(config, **options), name=name, route_prefix="/", blocking=blocking)
