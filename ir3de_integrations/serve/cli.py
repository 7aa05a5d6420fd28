"""``ir3de serve``: run the OpenAI-compatible routing gateway.

Examples::

    ir3de serve --config gateway.yaml
    ir3de serve --config gateway.yaml --workers 4 --state-dir ./gateway-state
    ir3de serve --router my-router --upstream math=http://127.0.0.1:8001/v1 \\
        --upstream code=http://127.0.0.1:8002/v1 --upstream-model code=qwen2.5-coder --port 8000
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"ir3de: error: {flag} must look like NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def build_config(args: argparse.Namespace) -> Any:
    """A :class:`GatewayConfig` from ``--config`` (if any) with the flags winning over the file."""
    from .config import GatewayConfig

    data: dict[str, Any] = {}
    if args.config:
        base = GatewayConfig.from_file(args.config)
        data = {k: getattr(base, k) for k in GatewayConfig.__dataclass_fields__ if k != "experts"}
        experts: dict[str, Any] = {n: u.public() for n, u in base.experts.items()}
    else:
        experts = {}
    for name, url in _pairs(args.upstream, "--upstream").items():
        experts.setdefault(name, {})["base_url"] = url
    for name, model in _pairs(args.upstream_model, "--upstream-model").items():
        experts.setdefault(name, {})["model"] = model
    for name, env in _pairs(args.upstream_key_env, "--upstream-key-env").items():
        experts.setdefault(name, {})["api_key_env"] = env
    flags = {
        "router": args.router,
        "virtual_model": args.virtual_model,
        "fallback": args.fallback,
        "threshold": args.threshold,
        "upstream_fallback": args.upstream_fallback,
        "timeout": args.timeout,
        "max_body_bytes": args.max_body_bytes,
        "admin_token_env": args.admin_token_env,
        "host": args.host,
        "port": args.port,
        "state_dir": args.state_dir,
        "revision_poll_seconds": args.revision_poll_seconds,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.log_prompts:
        data["log_prompts"] = True
    if not data.get("router"):
        raise SystemExit("ir3de: error: give --config FILE or --router FOLDER_OR_REPO")
    data["experts"] = {n: {k: v for k, v in u.items() if v is not None} for n, u in experts.items()}
    return GatewayConfig.from_dict(data)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        from ir3de.errors import MissingDependencyError

        raise MissingDependencyError(
            f"ir3de serve needs the serve extra: pip install 'ir3de[serve]' ({e})"
        ) from e
    from .server import serve

    serve(build_config(args), log_level=args.log_level, workers=args.workers)
    return 0


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``ir3de`` command."""
    p = subparsers.add_parser("serve", help="run the OpenAI-compatible routing gateway (extra [serve])")
    p.add_argument("--config", help="gateway config file (.yaml/.yml/.json); flags below override it")
    p.add_argument("--router", help="router folder or Hub repo id")
    p.add_argument(
        "--upstream",
        action="append",
        metavar="NAME=BASE_URL",
        help="an expert's OpenAI-compatible API root; repeat",
    )
    p.add_argument(
        "--upstream-model",
        action="append",
        metavar="NAME=MODEL",
        help="model name sent upstream (default: NAME)",
    )
    p.add_argument(
        "--upstream-key-env",
        action="append",
        metavar="NAME=ENV",
        help="environment variable with the upstream's API key",
    )
    p.add_argument("--virtual-model", help="the model id that asks for routing (default: ir3de)")
    p.add_argument("--fallback", help="expert for low-confidence or unroutable requests")
    p.add_argument("--threshold", type=float, help="confidence below which the fallback is taken")
    p.add_argument(
        "--upstream-fallback", help="expert tried once when the chosen upstream is down or times out"
    )
    p.add_argument("--timeout", type=float, help="seconds to wait for an upstream (default 60)")
    p.add_argument("--max-body-bytes", type=int, help="largest accepted request body (default 1 MiB)")
    p.add_argument(
        "--admin-token-env", help="environment variable holding the admin bearer token (admin is off without)"
    )
    p.add_argument("--log-prompts", action="store_true", help="put prompt text in the logs (off by default)")
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; above 1 needs --state-dir)"
    )
    p.add_argument(
        "--state-dir",
        help="folder shared by the workers: routing changes are committed there as revisions (state_dir)",
    )
    p.add_argument(
        "--revision-poll-seconds", type=float, help="how often workers check for a newer revision (default 1)"
    )
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)
