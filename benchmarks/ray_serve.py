"""The gateway on Ray Serve: propagation delay of a change across replicas, routed throughput.

Usage::

    python -m benchmarks.ray_serve            # full run, writes benchmarks/results/ray_serve.{json,md}
    python -m benchmarks.ray_serve --quick    # fewer changes and requests

All on this machine: a local Ray (2 CPUs, no dashboard), Ray Serve's HTTP proxy, the gateway deployed
with :func:`ir3de_integrations.serve.ray_serve.gateway_app` (replicas of 0.5 CPU) on a shared state
folder, the router fitted on reasoning4 as :mod:`benchmarks.gateway` does, an instant echo upstream
and the raw HTTP/1.1 load generator of :mod:`benchmarks.gateway`.

* **Propagation delay**: with 2 replicas, each change is one learned prompt (``POST
  /admin/feedback`` through the proxy, which hands it to either replica) committed as a new revision;
  the delay is from the commit (HEAD's time) to the other replica's swap (its heartbeat's
  ``since``) — :func:`benchmarks.scale._propagation`, the same measurement as for uvicorn workers.
  For the default poll interval (1 s) and a short one (0.2 s).
* **Throughput**: routed chat requests per second through the proxy with 1 and 2 replicas.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gateway import ROOT, _env, _fit_router, _free_port, _log, _prompts, _stop, _wait_ready
from benchmarks.reporting import machine, publish
from benchmarks.scale import TOKEN, _listing, _propagation, _throughput

APP = "ir3de-bench"
TOKEN_ENV = "BENCH_ADMIN"


def _deploy(config: dict[str, Any], replicas: int) -> None:
    """Deploy the gateway with ``replicas`` replicas of 0.5 CPU, the admin token in their environment."""
    from ray import serve

    from ir3de_integrations.serve import GatewayConfig
    from ir3de_integrations.serve.ray_serve import gateway_app

    actor = {"num_cpus": 0.5, "runtime_env": {"env_vars": {TOKEN_ENV: TOKEN}}}
    app = gateway_app(GatewayConfig.from_dict(config), num_replicas=replicas, ray_actor_options=actor)
    serve.run(app, name=APP, route_prefix="/")


def _wait_replicas(port: int, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len([w for w in _listing(port)["workers"] if not w["stale"]]) != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} replicas did not report within {timeout} s")
        time.sleep(0.2)


def measure(
    port: int,
    router: Path,
    upstream: str,
    work: Path,
    *,
    changes: int,
    polls: tuple[float, ...] = (1.0, 0.2),
    requests: int = 0,
    concurrency: int = 32,
    prompts: int = 10,
) -> dict[str, Any]:
    """Deploy on the running Serve (HTTP proxy on ``port``) and measure; deletes the app after.

    Args:
        router: the router folder; upstream: the echo upstream's API root (``http://host:port/v1``).
        work: a folder for the state folders (one per deployment).
        changes: measured changes per poll interval (one more is made first and not measured).
        requests: routed requests per replica count for the throughput (0: no throughput).
    """
    from ray import serve

    from ir3de import Router

    experts = {
        e: {"base_url": upstream, "model": e} for e in Router.from_pretrained(router, device="cpu").experts
    }
    base = {"router": str(router), "experts": experts, "admin_token_env": TOKEN_ENV}
    results: dict[str, Any] = {"propagation": {}, "throughput": {}}
    try:
        for poll in polls:
            state = work / f"state-prop-{poll}"
            _deploy({**base, "state_dir": str(state), "revision_poll_seconds": poll}, 2)
            _wait_replicas(port, 2)
            results["propagation"][poll] = _propagation(port, changes, 2)
            _log(f"poll {poll} s: {results['propagation'][poll]}")
            serve.delete(APP)
        if requests:
            bodies = [
                json.dumps({"model": "ir3de", "messages": [{"role": "user", "content": p}]}).encode()
                for p in _prompts(prompts)
            ]
            for replicas in (1, 2):
                _deploy({**base, "state_dir": str(work / f"state-rps-{replicas}")}, replicas)
                _wait_replicas(port, replicas)
                warmup = max(requests // 10, concurrency)
                results["throughput"][replicas] = _throughput(port, bodies, requests, concurrency, warmup)
                _log(f"{replicas} replica(s): {results['throughput'][replicas]}")
                serve.delete(APP)
    finally:
        if APP in serve.status().applications:
            serve.delete(APP)
    results["concurrency"] = concurrency
    return results


def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    """Start a local Ray + Serve, measure, shut both down; write ``ray_serve.{json,md}`` to ``out``."""
    import ray
    from ray import serve

    from ir3de_integrations.serve.ray_serve import http_options

    changes, requests = (5, 600) if quick else (20, 4000)
    tmp = Path(tempfile.mkdtemp(prefix="ir3de-ray-serve-bench-"))
    _log("fitting the router on reasoning4 (300 texts per domain)")
    folder = _fit_router(tmp / "router")
    up_port = _free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "ir3de_integrations.serve.echo", "--port", str(up_port)], env=_env(), cwd=ROOT
    )
    port = _free_port()
    try:
        _wait_ready(f"http://127.0.0.1:{up_port}/v1/models", upstream)
        _log("starting a local Ray (2 CPUs) and Serve's HTTP proxy")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        try:
            serve.start(
                http_options=http_options(port=port),
                logging_config={"log_level": "WARNING"},
            )
            results = measure(
                port,
                folder,
                f"http://127.0.0.1:{up_port}/v1",
                tmp,
                changes=changes,
                requests=requests,
                prompts=10 if quick else 100,
            )
        finally:
            serve.shutdown()
            ray.shutdown()
    finally:
        _stop(upstream)
    results["machine"] = machine(ray=ray.__version__)
    results["quick"] = quick
    publish(results, render(results), out, "ray_serve")
    return results


def render(r: dict[str, Any]) -> str:
    lines = [
        "| poll interval | changes | commit → the other replica serves it, p50 / p99 (ms) | max (ms) |",
        "|---:|---:|---:|---:|",
    ]
    for poll, p in r["propagation"].items():
        lines.append(
            f"| {float(poll):g} s | {p['changes']} | {p['p50_ms']:.0f} / {p['p99_ms']:.0f} | {p['max_ms']:.0f} |"
        )
    lines += [
        "",
        "Ray Serve, 2 replicas (0.5 CPU each) on a local Ray with 2 CPUs; each change is one learned prompt "
        "(POST /admin/feedback through Serve's proxy) committed as a new revision of the shared state folder; "
        "the delay runs from the commit (HEAD's time) to the other replica's swap (its heartbeat's `since`); "
        "the replica that took the admin call serves the change before answering it.",
    ]
    if r.get("throughput"):
        one = r["throughput"][1]["rps"]
        lines += [
            "",
            "| replicas | routed requests/s through Serve's proxy | vs 1 replica | p50 / p99 (ms) | failed |",
            "|---:|---:|---:|---:|---:|",
        ]
        for n, t in r["throughput"].items():
            lines.append(
                f"| {n} | {t['rps']:,.0f} | {t['rps'] / one:.2f}× | {t['p50_ms']:.2f} / {t['p99_ms']:.2f} | "
                f"{t['errors']} |"
            )
        lines += [
            "",
            f"{r['concurrency']} keep-alive client connections, instant echo upstream; client, upstream, "
            "Serve's proxy and the replicas share the machine's cores.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer changes and requests")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    run(quick=args.quick, out=args.out)
