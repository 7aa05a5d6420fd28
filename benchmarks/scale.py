"""Several gateway workers on one shared state: propagation delay of a change, throughput by workers.

Usage::

    python -m benchmarks.scale             # full run, writes benchmarks/results/scale.{json,md,png}
    python -m benchmarks.scale --quick     # fewer requests and changes (what the tests run)
    python -m benchmarks.scale --plot-only # redraw scale.png from scale.json (+ ray_serve.json if there)

All on 127.0.0.1: an instant echo upstream (``ir3de_integrations.serve.echo``), ``ir3de serve
--workers W --state-dir ...`` with the router fitted here on reasoning4 (as :mod:`benchmarks.gateway`
does), and this load generator (raw HTTP/1.1 keep-alive connections on asyncio, one process).

* **Throughput**: routed chat requests per second (model ``ir3de``, real held-out prompts) with 1, 2
  and 4 workers, at a fixed number of client connections. The three servers run side by side and
  their cells alternate round by round (the median round is reported), so that other load on the
  machine falls on each alike. Every worker follows its state folder (its watcher polls HEAD).
* **Propagation delay**: with 4 workers, a change is made through the admin API (feedback: one
  labelled prompt learned, committed as a new revision); the delay of a worker is the time from the
  commit (HEAD's timestamp) to the moment that worker swapped to the new revision (its heartbeat's
  ``since``). p50/p99 over all (change, other worker) pairs and of the slowest worker per change, for
  the default poll interval (1 s) and a short one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gateway import ROOT, _env, _fit_router, _free_port, _load, _log, _prompts, _stop, _wait_ready
from benchmarks.reporting import machine, publish

WORKERS = (1, 2, 4)
TOKEN = "bench-admin-token"


def _serve(folder: Path, state: Path, upstream: int, experts: list[str], workers: int, poll: float) -> tuple:
    port = _free_port()
    cmd = [sys.executable, "-m", "ir3de.cli", "serve", "--router", str(folder), "--port", str(port),
           "--workers", str(workers), "--state-dir", str(state), "--revision-poll-seconds", str(poll),
           "--admin-token-env", "BENCH_ADMIN", "--log-level", "warning"]  # fmt: skip
    for e in experts:
        cmd += ["--upstream", f"{e}=http://127.0.0.1:{upstream}/v1"]
    proc = subprocess.Popen(cmd, env={**_env(), "BENCH_ADMIN": TOKEN}, cwd=ROOT, start_new_session=True)
    _wait_ready(f"http://127.0.0.1:{port}/ready", proc)
    _wait_workers(port, workers)
    return proc, port


def _stop_group(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _listing(port: int) -> dict[str, Any]:
    import httpx

    auth = {"authorization": f"Bearer {TOKEN}"}
    return httpx.get(f"http://127.0.0.1:{port}/admin/revisions", headers=auth, timeout=10).json()


def _wait_workers(port: int, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len([w for w in _listing(port)["workers"] if not w["stale"]]) == n:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{n} workers did not report within {timeout} s")


def _throughput(port: int, bodies: list[bytes], n: int, concurrency: int, warmup: int) -> dict[str, Any]:
    asyncio.run(_load(port, "/v1/chat/completions", bodies, warmup, concurrency))
    return asyncio.run(_load(port, "/v1/chat/completions", bodies, n, concurrency))


def _propagation(port: int, changes: int, workers: int) -> dict[str, Any]:
    """``changes`` admin changes; per change, each other worker's delay from commit to swap (s)."""
    import httpx

    auth = {"authorization": f"Bearer {TOKEN}"}
    delays: list[float] = []
    slowest: list[float] = []
    for i in range(changes + 1):
        r = httpx.post(
            f"http://127.0.0.1:{port}/admin/feedback",
            headers=auth,
            json={"feedback": [{"prompt": f"what is {i} times {i + 17}", "expert": "math"}]},
            timeout=300,
        )
        r.raise_for_status()
        revision = int(r.headers["x-ir3de-revision"])
        committer = r.headers["x-ir3de-worker"]
        deadline = time.monotonic() + 120
        while True:
            listing = _listing(port)
            live = [w for w in listing["workers"] if not w["stale"]]
            if len(live) == workers and all(w["revision"] >= revision for w in live):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"revision {revision} did not reach every worker: {live}")
            time.sleep(0.05)
        if listing["head"]["revision"] != revision:
            raise RuntimeError("another writer changed the state during the benchmark")
        if i == 0:
            continue  # the first change loads the embeddings in the committing worker: not measured
        committed = listing["head"]["time"]
        others = [w["since"] - committed for w in live if w["worker"] != committer]
        if any(w["revision"] != revision for w in live):
            raise RuntimeError("a worker skipped a revision (changes came faster than the poll)")
        delays += others
        slowest.append(max(others))
    d, s = np.array(delays) * 1e3, np.array(slowest) * 1e3
    return {
        "changes": changes,
        "samples": int(d.size),
        "p50_ms": float(np.percentile(d, 50)),
        "p99_ms": float(np.percentile(d, 99)),
        "max_ms": float(d.max()),
        "all_workers_p50_ms": float(np.percentile(s, 50)),
        "all_workers_p99_ms": float(np.percentile(s, 99)),
    }


def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    n, warmup, concurrency, rounds = (400, 100, 16, 1) if quick else (2000, 300, 64, 5)
    changes = 3 if quick else 20
    polls = (0.2,) if quick else (1.0, 0.2)
    prompts = _prompts(10 if quick else 100)
    tmp = Path(tempfile.mkdtemp(prefix="ir3de-scale-bench-"))
    _log(f"fitting the router on reasoning4 (300 texts per domain); {len(prompts)} held-out prompts")
    folder = _fit_router(tmp / "router")
    from ir3de import Router

    experts = Router.from_pretrained(folder, device="cpu").experts
    bodies = [
        json.dumps({"model": "ir3de", "messages": [{"role": "user", "content": p}]}).encode() for p in prompts
    ]
    env = _env()
    up_port = _free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "ir3de_integrations.serve.echo", "--port", str(up_port)], env=env, cwd=ROOT
    )
    results: dict[str, Any] = {"throughput": {}, "throughput_rounds": {}, "propagation": {}}
    servers: dict[int, tuple[subprocess.Popen, int]] = {}
    try:
        _wait_ready(f"http://127.0.0.1:{up_port}/v1/models", upstream)
        # all three servers run throughout; their cells are interleaved round by round, so that other
        # load on the machine falls on each worker count alike (the median round is reported)
        for workers in WORKERS:
            servers[workers] = _serve(folder, tmp / f"state-{workers}", up_port, experts, workers, 1.0)
        cells: dict[int, list[dict[str, Any]]] = {w: [] for w in WORKERS}
        for r in range(rounds):
            for workers in WORKERS:
                cells[workers].append(_throughput(servers[workers][1], bodies, n, concurrency, warmup))
            _log(
                f"round {r + 1}/{rounds}: "
                + ", ".join(f"{w}: {cells[w][-1]['rps']:.0f} rps" for w in WORKERS)
            )
        for workers in WORKERS:
            ordered = sorted(cells[workers], key=lambda c: c["rps"])
            results["throughput"][workers] = ordered[len(ordered) // 2]
            results["throughput_rounds"][workers] = [c["rps"] for c in cells[workers]]
        for proc, _ in servers.values():
            _stop_group(proc)
        servers.clear()
        for poll in polls:
            proc, port = _serve(folder, tmp / f"state-prop-{poll}", up_port, experts, 4, poll)
            try:
                results["propagation"][poll] = _propagation(port, changes, 4)
                _log(f"poll {poll} s: {results['propagation'][poll]}")
            finally:
                _stop_group(proc)
    finally:
        for proc, _ in servers.values():
            _stop_group(proc)
        _stop(upstream)
    results["concurrency"] = concurrency
    results["machine"] = machine()
    results["quick"] = quick
    publish(results, render(results), out, "scale")
    if out is not None:
        plot(results, out / "scale.png", ray_serve=_ray_serve_results(out))
    return results


def _ray_serve_results(out: Path) -> dict[str, Any] | None:
    path = out / "ray_serve.json"
    return json.loads(path.read_text()) if path.is_file() else None


def plot(r: dict[str, Any], path: Path, ray_serve: dict[str, Any] | None = None) -> Path:
    """Throughput by workers (median and every round) and propagation delay p50/p99 by poll interval
    (uvicorn workers, and Ray Serve replicas when ``ray_serve`` results are given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    workers = sorted(r["throughput"], key=int)
    for i, w in enumerate(workers):
        rounds = r.get("throughput_rounds", {}).get(w, [])
        left.bar(i, r["throughput"][w]["rps"], color="tab:blue", alpha=0.7)
        left.plot([i] * len(rounds), rounds, "k.", markersize=4)
    left.set_xticks(range(len(workers)), [f"{w} worker{'s' * (w != '1')}" for w in workers], fontsize=8)
    left.set_ylabel("routed requests/s (bar: median round)", fontsize=8)
    left.set_title(f"throughput, {r['machine']['cpus']} CPU cores, instant upstream", fontsize=8)
    rows = [("uvicorn ×4", poll, cell) for poll, cell in r["propagation"].items()]
    if ray_serve is not None:
        rows += [("Ray Serve ×2", poll, cell) for poll, cell in ray_serve["propagation"].items()]
    for i, (_, _, cell) in enumerate(rows):
        right.bar(i, cell["p99_ms"], color="tab:orange", alpha=0.5, label="p99" if i == 0 else None)
        right.bar(i, cell["p50_ms"], color="tab:orange", label="p50" if i == 0 else None)
    right.set_xticks(range(len(rows)), [f"{who}\npoll {poll} s" for who, poll, _ in rows], fontsize=7)
    right.set_ylabel("commit → another worker serves it (ms)", fontsize=8)
    right.set_title("propagation of a change", fontsize=8)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(r: dict[str, Any]) -> str:
    cpus = r["machine"]["cpus"]
    one = r["throughput"][1]["rps"]
    lines = [
        "| workers | routed requests/s (median round) | vs 1 worker | p50 / p99 (ms) | failed | every round (rps) |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for w, t in r["throughput"].items():
        each = ", ".join(f"{x:,.0f}" for x in r["throughput_rounds"][w])
        lines.append(
            f"| {w} | {t['rps']:,.0f} | {t['rps'] / one:.2f}× | {t['p50_ms']:.2f} / {t['p99_ms']:.2f} | "
            f"{t['errors']} | {each} |"
        )
    lines += [
        "",
        f"{r['concurrency']} keep-alive client connections, instant echo upstream; the three servers run side "
        "by side and their cells alternate, round by round. All processes (client, "
        f"upstream, workers) on one machine with {cpus} CPU cores: with more workers than cores the workers "
        "share the same cores with the client and the upstream.",
        "",
        "| poll interval | changes | commit → a worker serves it, p50 / p99 (ms) | max (ms) | "
        "commit → every worker serves it, p50 / p99 (ms) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for poll, p in r["propagation"].items():
        lines.append(
            f"| {float(poll):g} s | {p['changes']} | {p['p50_ms']:.0f} / {p['p99_ms']:.0f} | {p['max_ms']:.0f} | "
            f"{p['all_workers_p50_ms']:.0f} / {p['all_workers_p99_ms']:.0f} |"
        )
    lines += [
        "",
        "4 workers; each change is one learned prompt (POST /admin/feedback) committed as a new revision; "
        "the delay is from the commit (HEAD's time) to the other workers' swap (their heartbeat's `since`); "
        "the worker that took the admin call serves the change before answering it.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and changes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--plot-only", action="store_true", help="redraw scale.png from the saved results")
    args = parser.parse_args()
    if args.plot_only:
        saved = json.loads((args.out / "scale.json").read_text())
        print(plot(saved, args.out / "scale.png", ray_serve=_ray_serve_results(args.out)))
    else:
        run(quick=args.quick, out=args.out)
