"""Expert name → upstream: the core :class:`ir3de.serving.registry.ExpertRegistry` with upstreams as handlers.

The registry pairs each expert the router can choose (and the router's own ``fallback``) with its
:class:`Upstream` and changes both together under its lock; routing through it is lock-free and
returns the decision with the upstream of the expert it names, both from one registry pairing (see
:func:`ir3de_integrations.serve.routing.route_request`). A request keeps that upstream object: an
admin change that lands mid-request never changes where an in-flight request goes, and an expert
removed meanwhile still answers the requests routed to it before.

Upstreams configured for names the router cannot choose are served only when a request names them
as its model; they live beside the registry (:class:`Upstreams`).

Example:
    >>> ups = Upstreams(router, {"math": UpstreamConfig("http://127.0.0.1:8001/v1", "m")})  # doctest: +SKIP
    >>> ups.get("math").url                                                                  # doctest: +SKIP
    'http://127.0.0.1:8001/v1/chat/completions'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ir3de.errors import InvalidInputError
from ir3de.serving.registry import ExpertRegistry, handler_names

from .config import ConfigError, UpstreamConfig

__all__ = ["Upstream", "Upstreams"]


@dataclass(frozen=True)
class Upstream:
    """A resolved upstream: where to POST and with which headers."""

    name: str
    config: UpstreamConfig
    url: str
    headers: Mapping[str, str]

    @classmethod
    def from_config(cls, name: str, config: UpstreamConfig) -> Upstream:
        headers = {"content-type": "application/json"}
        key = config.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return cls(name, config, f"{config.base_url}/chat/completions", MappingProxyType(headers))


def _check_upstream(name: str, handler: object) -> None:
    if not isinstance(handler, Upstream):
        raise InvalidInputError(
            f"expert {name!r}: the gateway's handlers are Upstream, got {type(handler).__name__}"
        )


class Upstreams:
    """The routable experts' upstreams (:attr:`registry`, an :class:`ExpertRegistry`) plus upstreams
    that are only reachable by name (:attr:`direct`, an immutable mapping swapped whole).

    Raises:
        ConfigError: an expert of the router (or its fallback) has no upstream.
    """

    def __init__(self, router: Any, configs: Mapping[str, UpstreamConfig]) -> None:
        routable, direct = self._split(router, configs)
        self.registry: ExpertRegistry[Upstream] = ExpertRegistry(
            router, routable, kind="upstream", check_handler=_check_upstream
        )
        self.direct: Mapping[str, Upstream] = direct

    @staticmethod
    def _split(
        router: Any, configs: Mapping[str, UpstreamConfig]
    ) -> tuple[dict[str, Upstream], Mapping[str, Upstream]]:
        names = handler_names(router)
        missing = [e for e in names if e not in configs]
        if missing:
            raise ConfigError(
                f"experts {missing} of the router have no upstream; add them under experts: in the gateway "
                f"config (configured: {list(configs)})"
            )
        routable = {n: Upstream.from_config(n, c) for n, c in configs.items() if n in names}
        direct = MappingProxyType(
            {n: Upstream.from_config(n, c) for n, c in configs.items() if n not in names}
        )
        return routable, direct

    def configs(self) -> dict[str, UpstreamConfig]:
        """Every upstream's config now (routable experts first, then the name-only ones)."""
        out = {n: u.config for n, u in self.registry.handlers.items()}
        out.update({n: u.config for n, u in self.direct.items() if n not in out})
        return out

    def replace(self, router: Any, configs: Mapping[str, UpstreamConfig]) -> None:
        """Serve ``router`` with ``configs`` from now on, swapped whole (:meth:`ExpertRegistry.replace`):
        requests in flight keep the upstream they were routed to.

        Raises:
            ConfigError: an expert of ``router`` has no upstream in ``configs`` (nothing changes then).
        """
        routable, direct = self._split(router, configs)
        self.direct = MappingProxyType({**self.direct, **direct})  # both while the registry swaps
        self.registry.replace(router, routable)
        self.direct = direct

    def get(self, name: str) -> Upstream | None:
        """The upstream of ``name`` now (``None``: none)."""
        found = self.registry.handlers.get(name)
        return found if found is not None else self.direct.get(name)

    def names(self) -> list[str]:
        return [*self.registry.handlers, *(n for n in self.direct if n not in self.registry.handlers)]

    def __contains__(self, name: object) -> bool:
        return name in self.registry.handlers or name in self.direct

    def take_direct(self, name: str) -> Upstream | None:
        """Drop ``name`` from the name-only upstreams (it becomes routable); returns what was there."""
        found = self.direct.get(name)
        if found is not None:
            self.direct = MappingProxyType({n: u for n, u in self.direct.items() if n != name})
        return found

    def set_direct(self, name: str, upstream: Upstream) -> None:
        self.direct = MappingProxyType({**self.direct, name: upstream})
