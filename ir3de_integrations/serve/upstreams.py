"""Expert name → upstream: an immutable snapshot, swapped whole when an expert is added or removed.

A request looks its upstream up once, right after routing, and keeps that object: an admin change
that lands mid-request never changes where an in-flight request goes. (The core's expert registry,
``ir3de.experts``, will hold the same mapping for every adapter; this module is the gateway's own
until then — the one place to switch.)

Example:
    >>> reg = UpstreamRegistry({"math": UpstreamConfig("http://127.0.0.1:8001/v1", "m")})
    >>> reg.get("math").url
    'http://127.0.0.1:8001/v1/chat/completions'
    >>> reg = reg.with_upstream("code", UpstreamConfig("http://127.0.0.1:8002/v1", "c"))
    >>> sorted(reg.names())
    ['code', 'math']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .config import UpstreamConfig

__all__ = ["Upstream", "UpstreamRegistry"]


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


class UpstreamRegistry:
    """An immutable name → :class:`Upstream` mapping; changes return a new registry."""

    __slots__ = ("_items",)

    def __init__(self, configs: Mapping[str, UpstreamConfig] | None = None) -> None:
        self._items: Mapping[str, Upstream] = MappingProxyType(
            {n: Upstream.from_config(n, c) for n, c in (configs or {}).items()}
        )

    @classmethod
    def _of(cls, items: dict[str, Upstream]) -> UpstreamRegistry:
        reg = cls.__new__(cls)
        reg._items = MappingProxyType(items)
        return reg

    def get(self, name: str) -> Upstream | None:
        return self._items.get(name)

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def with_upstream(self, name: str, config: UpstreamConfig) -> UpstreamRegistry:
        return self._of({**self._items, name: Upstream.from_config(name, config)})

    def without(self, name: str) -> UpstreamRegistry:
        return self._of({n: u for n, u in self._items.items() if n != name})
