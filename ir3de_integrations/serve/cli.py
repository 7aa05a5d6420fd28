"""``ir3de serve``: run the OpenAI-compatible routing gateway.

Examples::

    ir3de serve --config gateway.yaml
    ir3de serve --config gateway.yaml --workers 4 --state-dir ./gateway-state
    ir3de serve --router my-router --upstream math=http://127.0.0.1:8001/v1 \\
        --upstream code=http://127.0.0.1:8002/v1 --upstream-model code=qwen2.5-coder --port 8000
    ir3de serve --config gateway.yaml --ray --replicas 2 --replica-cpus 0.5     # on Ray Serve
    ir3de revisions repair ./gateway-state      # HEAD back on the newest revision that verifies
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
        "keep_alive": args.keep_alive,
        "admin_token_env": args.admin_token_env,
        "host": args.host,
        "port": args.port,
        "state_dir": args.state_dir,
        "revision_poll_seconds": args.revision_poll_seconds,
        "adapt_capture": args.adapt_capture,
        "adapt_every": args.adapt_every,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.log_prompts:
        data["log_prompts"] = True
    if not data.get("router"):
        raise SystemExit("ir3de: error: give --config FILE or --router FOLDER_OR_REPO")
    data["experts"] = {n: {k: v for k, v in u.items() if v is not None} for n, u in experts.items()}
    return GatewayConfig.from_dict(data)


def ray_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Ray Serve deployment options of ``--replicas``, ``--min/--max-replicas``, ``--replica-cpus``."""
    options: dict[str, Any] = {}
    if args.min_replicas is not None or args.max_replicas is not None:
        if args.replicas is not None:
            raise SystemExit("ir3de: error: give --replicas N or --min-replicas/--max-replicas, not both")
        low = args.min_replicas if args.min_replicas is not None else 1
        high = args.max_replicas if args.max_replicas is not None else max(low, 1)
        if not 0 <= low <= high or high < 1:
            raise SystemExit(
                f"ir3de: error: need 0 <= --min-replicas <= --max-replicas and --max-replicas >= 1, got {low}, {high}"
            )
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": args.target_ongoing_requests,
        }
    elif args.replicas is not None:
        if args.replicas < 1:
            raise SystemExit(f"ir3de: error: --replicas must be at least 1, got {args.replicas}")
        options["num_replicas"] = args.replicas
    if args.replica_cpus is not None:
        options["ray_actor_options"] = {"num_cpus": args.replica_cpus}
    return options


def cmd_serve_ray(args: argparse.Namespace) -> int:
    from ir3de.errors import require

    ray_serve = require(f"{__package__}.ray_serve", "ir3de serve --ray", "pip install 'ir3de[serve-ray]'")
    run_gateway = ray_serve.run_gateway
    if args.workers != 1:
        raise SystemExit("ir3de: error: --workers is for uvicorn; on Ray Serve give --replicas N")
    options = ray_options(args)
    run_gateway(build_config(args), address=args.ray_address, blocking=True, **options)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ir3de.errors import require

    for module in ("fastapi", "uvicorn"):
        require(module, "ir3de serve", "pip install 'ir3de[serve]'")
    if args.ray:
        return cmd_serve_ray(args)
    given = [f for f in _RAY_FLAGS if getattr(args, f.lstrip("-").replace("-", "_")) is not None]
    if given:
        raise SystemExit(f"ir3de: error: {', '.join(given)} need --ray (they configure Ray Serve replicas)")
    from .server import serve

    serve(build_config(args), log_level=args.log_level, workers=args.workers)
    return 0


def cmd_revisions_repair(args: argparse.Namespace) -> int:
    """Point HEAD of a gateway state folder at the newest revision that loads and can be served."""
    from pathlib import Path

    from ir3de.artifacts.revisions import RevisionStore

    from .state import _prepare

    folder = Path(args.state_dir)
    if not folder.is_dir():
        raise SystemExit(f"ir3de: error: {folder} is not a folder (give the gateway's state_dir)")
    store = RevisionStore(folder)
    head, skipped = store.repair(lambda r: _prepare(r, None), writer="ir3de-revisions-repair")
    for s in skipped:
        if s.revision < 0:
            print(f"skipped HEAD: {s.reason.removeprefix('HEAD: ')}")
        else:
            print(f"skipped revision {s.revision}: {s.reason}")
    print(f"HEAD -> revision {head.revision} ({store.folder})")
    return 0


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``revisions`` to the ``ir3de`` command."""
    _register_revisions(subparsers)
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
    p.add_argument("--keep-alive", type=int, help="seconds an idle client connection stays open (default 75)")
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
    p.add_argument(
        "--adapt-capture",
        type=int,
        metavar="N",
        help="keep the last N routed prompts in memory (never logged) to adapt on (default 0: none)",
    )
    p.add_argument(
        "--adapt-every",
        type=int,
        metavar="N",
        help="adapt on the kept prompts every N of them (default 0: only on POST /admin/adapt)",
    )
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _register_ray(p)
    p.set_defaults(func=cmd_serve)


def _register_revisions(subparsers: Any) -> None:
    p = subparsers.add_parser("revisions", help="maintain a gateway state folder (state_dir)")
    actions = p.add_subparsers(dest="action", required=True)
    repair = actions.add_parser(
        "repair",
        help="point HEAD at the newest revision that verifies; drop damaged ones above it and leftovers",
    )
    repair.add_argument("state_dir", help="the gateway's state folder")
    repair.set_defaults(func=cmd_revisions_repair)


_RAY_FLAGS = ("--ray-address", "--replicas", "--min-replicas", "--max-replicas", "--replica-cpus")


def _register_ray(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group("on Ray Serve (extra [serve-ray])")
    ray.add_argument("--ray", action="store_true", help="serve on Ray Serve: replicas behind its HTTP proxy")
    ray.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a new local Ray)")
    ray.add_argument("--replicas", type=int, help="a fixed number of replicas (default 1)")
    ray.add_argument("--min-replicas", type=int, help="autoscale: fewest replicas (default 1)")
    ray.add_argument("--max-replicas", type=int, help="autoscale: most replicas")
    ray.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=64.0,
        help="autoscale: requests per replica Ray Serve aims for (default 64)",
    )
    ray.add_argument("--replica-cpus", type=float, help="CPUs Ray reserves per replica (Ray's default: 1)")
