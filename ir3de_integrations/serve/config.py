"""The gateway's configuration: which router, and which OpenAI-compatible upstream serves each expert.

A YAML or JSON file (``ir3de serve --config gateway.yaml``), CLI flags, or Python::

    router: ./my-router              # a router folder or a Hub repo id
    virtual_model: ir3de             # the model name that means "route this request"
    fallback: instructions           # low-confidence / unroutable requests go here
    threshold: 0.4                   # ... when the decision's confidence is below this
    upstream_fallback: instructions  # an upstream that is down or times out is retried here once
    experts:
      math: {base_url: "http://127.0.0.1:8001/v1", model: qwen2.5-math, api_key_env: MATH_KEY}
      code: {base_url: "http://127.0.0.1:8002/v1", model: qwen2.5-coder, timeout: 120}
    admin_token_env: IR3DE_ADMIN_TOKEN   # admin endpoints are off unless this is set
    margin: 0.2                      # conversation routing (ir3de.routing.conversation.ConversationSettings):
    half_life: 2                     # ... half_life, user_weight, assistant_weight, include_system, margin
    session_ttl: 3600                # a session's previous expert is forgotten after this many seconds
    state_dir: ./gateway-state       # several workers/replicas: routing state shared as revisions
    revision_poll_seconds: 1.0       # ... each worker checks for a newer revision this often
    adapt_capture: 2000              # keep the last 2000 routed prompts (in memory, never logged) to adapt on
    adapt_every: 500                 # ... and adapt on them every 500 (0: only on POST /admin/adapt)

API keys are never written in the file: ``api_key_env`` names the environment variable holding one.

Example:
    >>> cfg = GatewayConfig.from_dict({"router": "r", "experts": {"math": {"base_url": "http://h/v1"}}})
    >>> cfg.experts["math"].model, cfg.virtual_model
    ('math', 'ir3de')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ir3de.errors import Ir3deError
from ir3de.routing.conversation import ConversationSettings

__all__ = ["DEFAULT_KEEP_ALIVE", "ConfigError", "GatewayConfig", "UpstreamConfig"]


class ConfigError(Ir3deError, ValueError):
    """The gateway configuration is missing something or holds a wrong value; the message says which."""


def _known_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")


@dataclass(frozen=True)
class UpstreamConfig:
    """One expert's OpenAI-compatible upstream.

    Attributes:
        base_url: the API root, e.g. ``http://127.0.0.1:8001/v1`` (``/chat/completions`` is appended).
        model: the model name sent upstream (default: the expert's name).
        api_key_env: environment variable holding the upstream's API key (sent as a bearer token).
        timeout: seconds to wait for the upstream (per read; default: the gateway's ``timeout``).
    """

    base_url: str
    model: str = ""
    api_key_env: str | None = None
    timeout: float | None = None

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any] | str) -> UpstreamConfig:
        """From a mapping (or a bare base URL string); ``model`` defaults to ``name``."""
        if isinstance(data, str):
            data = {"base_url": data}
        if not isinstance(data, Mapping):
            raise ConfigError(f"expert {name!r}: give a mapping with base_url (and model…), got {data!r}")
        _known_keys(cls, data, f"expert {name!r}")
        base_url = data.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"expert {name!r}: base_url must be an http(s) URL such as http://127.0.0.1:8001/v1, got {base_url!r}"
            )
        timeout = data.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 1e6
        ):
            raise ConfigError(
                f"expert {name!r}: timeout must be a positive number of seconds, got {timeout!r}"
            )
        model = data.get("model")
        if model is not None and (not isinstance(model, str) or not model.isprintable()):
            raise ConfigError(f"expert {name!r}: model must be a model name (a string), got {model!r}")
        key_env = data.get("api_key_env")
        if key_env is not None and (not isinstance(key_env, str) or not key_env):
            raise ConfigError(
                f"expert {name!r}: api_key_env must name an environment variable, got {key_env!r}"
            )
        return cls(
            base_url=base_url.rstrip("/"),
            model=model or name,
            api_key_env=key_env,
            timeout=float(timeout) if timeout is not None else None,
        )

    def api_key(self) -> str | None:
        """The API key from ``api_key_env`` (``None`` when unset)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def public(self) -> dict[str, Any]:
        """What the admin API shows: no key, only the variable's name."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "timeout": self.timeout,
        }


_CONVERSATION_KEYS = ("half_life", "user_weight", "assistant_weight", "include_system", "margin")


#: Seconds an idle client connection stays open (:attr:`GatewayConfig.keep_alive`): longer than the
#: idle expiry of clients (the OpenAI SDK's 5 s, aiohttp's 15 s) and of load balancers (60 s).
DEFAULT_KEEP_ALIVE = 75


@dataclass(frozen=True)
class GatewayConfig:
    """Everything ``ir3de serve`` needs. See the module docstring for the file format.

    Attributes:
        router: router folder or Hub repo id.
        experts: expert name → :class:`UpstreamConfig`; every expert the router can choose needs one.
        virtual_model: the model id that asks the gateway to route (listed by ``/v1/models``).
        fallback: expert for decisions below ``threshold`` and for requests with no routable text.
        threshold: confidence below which ``fallback`` is taken (0: never).
        upstream_fallback: expert whose upstream is tried once when the chosen one is down, times
            out or answers 5xx (before any byte was sent to the client).
        timeout: seconds to wait for an upstream (per read) unless the expert sets its own.
        connect_timeout: seconds to wait for an upstream connection.
        max_body_bytes: larger requests are refused with 413.
        keep_alive: seconds a client's idle keep-alive connection stays open (``ir3de serve``, its
            workers and the Ray Serve proxy it starts). Longer than the idle expiry of clients (the
            OpenAI SDK's httpx: 5 s; aiohttp: 15 s) and of load balancers (60 s), so a client never
            sends a request on a connection the gateway is closing at that moment; uvicorn's own
            default, 5 s, equals the OpenAI SDK's and lets the two race.
        admin_token_env: environment variable holding the admin bearer token; admin is off when unset.
        log_prompts: put prompt text in the structured logs (off: only lengths and decisions).
        session_header: request header naming the conversation (else the body's ``user`` field).
        max_sessions: conversations remembered for stickiness (least recently written are forgotten).
        session_ttl: seconds a conversation's previous expert is remembered.
        half_life, user_weight, assistant_weight, include_system, margin: the conversation routing
            options (:class:`ir3de.routing.conversation.ConversationSettings`; unset: the core's defaults).
        state_dir: a folder shared by every worker (:class:`ir3de.artifacts.revisions.RevisionStore`): each admin
            change is committed there as a new revision of the router (with the expert → upstream
            map) and every worker switches to the newest one; a restart loads it. When the folder is
            empty, ``router`` and ``experts`` seed it; afterwards the folder is the source of truth
            (change experts and upstreams through the admin API). ``None``: one process, state in
            memory only.
        revision_poll_seconds: how often a worker checks ``state_dir`` for a newer revision.
        revision_keep: how many revisions ``state_dir`` keeps (older ones are deleted).
        adapt_capture: how many routed prompts a worker keeps in memory to adapt on
            (:meth:`ir3de.Router.adapt`, ``POST /admin/adapt``); the oldest are dropped first. ``0``
            (default): none are kept. Kept prompts are never logged or written anywhere; adapting
            takes them out, leaving only counts and Gram rows in the router (:mod:`.capture`).
        adapt_every: adapt on the kept prompts each time this many are pending (``0``: only when
            ``POST /admin/adapt`` asks); the result is committed like every admin change. Needs
            ``adapt_capture`` of at least this many.
        host, port: where ``ir3de serve`` listens.
    """

    router: str
    experts: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    virtual_model: str = "ir3de"
    fallback: str | None = None
    threshold: float = 0.0
    upstream_fallback: str | None = None
    timeout: float = 60.0
    connect_timeout: float = 5.0
    max_body_bytes: int = 1 << 20
    keep_alive: int = DEFAULT_KEEP_ALIVE
    admin_token_env: str | None = None
    log_prompts: bool = False
    session_header: str = "x-ir3de-session"
    max_sessions: int = 10_000
    session_ttl: float = 3600.0
    half_life: float | None = None
    user_weight: float | None = None
    assistant_weight: float | None = None
    include_system: bool | None = None
    margin: float | None = None
    state_dir: str | None = None
    revision_poll_seconds: float = 1.0
    revision_keep: int = 10
    adapt_capture: int = 0
    adapt_every: int = 0
    host: str = "127.0.0.1"
    port: int = 8000

    def __post_init__(self) -> None:
        if not isinstance(self.router, str) or not self.router:
            raise ConfigError("router: give a router folder or Hub repo id (e.g. router: ./my-router)")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.threshold > 0 and not self.fallback:
            raise ConfigError(f"threshold={self.threshold} needs a fallback expert (fallback: NAME)")
        for key in ("timeout", "connect_timeout"):
            if float(getattr(self, key)) <= 0:
                raise ConfigError(f"{key} must be a positive number of seconds, got {getattr(self, key)!r}")
        alive = self.keep_alive
        if isinstance(alive, bool) or not isinstance(alive, int) or not 1 <= alive <= 3600:
            raise ConfigError(f"keep_alive must be a whole number of seconds in [1, 3600], got {alive!r}")
        if int(self.max_body_bytes) < 1024:
            raise ConfigError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes!r}")
        for key in ("fallback", "upstream_fallback"):
            name = getattr(self, key)
            if name is not None and name not in self.experts:
                raise ConfigError(
                    f"{key}: {name!r} has no upstream; configured experts are {sorted(self.experts)}"
                )
        if self.virtual_model in self.experts:
            raise ConfigError(f"virtual_model {self.virtual_model!r} is also an expert name; rename one")
        if (
            isinstance(self.max_sessions, bool)
            or not isinstance(self.max_sessions, int)
            or self.max_sessions < 1
        ):
            raise ConfigError(f"max_sessions must be a positive integer, got {self.max_sessions!r}")
        if (
            isinstance(self.session_ttl, bool)
            or not isinstance(self.session_ttl, (int, float))
            or self.session_ttl <= 0
        ):
            raise ConfigError(f"session_ttl must be a positive number of seconds, got {self.session_ttl!r}")
        if self.state_dir is not None and (not isinstance(self.state_dir, str) or not self.state_dir):
            raise ConfigError(
                f"state_dir must name a folder shared by the workers (e.g. ./gateway-state), got {self.state_dir!r}"
            )
        poll = self.revision_poll_seconds
        if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not 0.01 <= poll <= 3600:
            raise ConfigError(
                f"revision_poll_seconds must be a number of seconds in [0.01, 3600], got {poll!r}"
            )
        keep = self.revision_keep
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"revision_keep must be a positive integer, got {keep!r}")
        for key in ("adapt_capture", "adapt_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key} must be a non-negative integer (0: off), got {value!r}")
        if self.adapt_every > self.adapt_capture:
            raise ConfigError(
                f"adapt_every={self.adapt_every} needs adapt_capture of at least {self.adapt_every} (the "
                f"prompts kept to adapt on), got adapt_capture={self.adapt_capture}; raise adapt_capture"
            )
        self.conversation_settings()  # the conversation options are checked by the core

    def conversation_settings(self) -> ConversationSettings:
        """The conversation routing options: the core's defaults with every option set here replaced.

        Raises:
            ConfigError: an option out of range (the message names it).
        """
        changes = {k: getattr(self, k) for k in _CONVERSATION_KEYS if getattr(self, k) is not None}
        try:
            return ConversationSettings(**changes)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"conversation routing option: {e}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GatewayConfig:
        """Build from a mapping (parsed YAML/JSON); unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"the gateway config must be a mapping, got {type(data).__name__}")
        _known_keys(cls, data, "gateway config")
        experts = data.get("experts") or {}
        if not isinstance(experts, Mapping):
            raise ConfigError("experts: give a mapping of expert name → {base_url, model, api_key_env}")
        values = dict(data)
        values["experts"] = {str(n): UpstreamConfig.from_dict(str(n), u) for n, u in experts.items()}
        try:
            return cls(**values)
        except TypeError as e:
            raise ConfigError(f"gateway config: {e}") from e

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> GatewayConfig:
        """Read a ``.yaml``/``.yml`` or ``.json`` file; ``overrides`` (not None) win over its values.

        Example:
            >>> GatewayConfig.from_file("gateway.yaml", port=9000)   # doctest: +SKIP
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the gateway config {path}: {e}") from e
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path} is not valid YAML: {e}") from e
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"{path} is not valid JSON ({e}); YAML files must end in .yaml or .yml"
                ) from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the gateway config must be a mapping, got {type(data).__name__}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The config as :meth:`from_dict` reads it (upstreams without keys: only ``api_key_env``).

        Example:
            >>> cfg = GatewayConfig.from_dict({"router": "r", "experts": {"math": "http://h/v1"}})
            >>> GatewayConfig.from_dict(cfg.to_dict()) == cfg
            True
        """
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["experts"] = {n: u.public() for n, u in self.experts.items()}
        return data

    def with_expert(self, name: str, upstream: UpstreamConfig | None) -> GatewayConfig:
        """A copy with ``name``'s upstream set (or removed when ``upstream`` is None)."""
        experts = dict(self.experts)
        if upstream is None:
            experts.pop(name, None)
        else:
            experts[name] = upstream
        return dataclasses.replace(self, experts=experts)

    def admin_token(self) -> str | None:
        """The admin bearer token (``None``: admin endpoints are off)."""
        if not self.admin_token_env:
            return None
        return os.environ.get(self.admin_token_env) or None
