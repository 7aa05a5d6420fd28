"""Gateway overhead: ``ir3de serve`` in front of an instant upstream against calling that upstream directly.

Usage::

    python -m benchmarks.gateway                 # full run (~2 min on 2 cores), writes benchmarks/results/gateway.*
    python -m benchmarks.gateway --quick         # a few hundred requests per cell (what the tests run)

Three processes, all on 127.0.0.1: an instant OpenAI-compatible echo upstream
(``ir3de_integrations.serve.echo``), the gateway (``ir3de serve``, the router fitted here on real
prompts of four domains) and this load generator (raw HTTP/1.1 keep-alive connections on asyncio, so
the client costs the same in both columns). Every request is a real held-out prompt of the
reasoning4 suite. At each concurrency (1, 32, 256 connections) the same requests go once straight to
the upstream and once through the gateway (model ``ir3de``: routed on the message): the difference of
the latencies is the gateway's overhead. The routing share is the gateway's own routing time (its
``ir3de_routing_seconds`` histogram, read from ``/metrics`` around each run) divided by that overhead.
LiteLLM: its proxy is measured the same way (requests name the model: it does not route) when
``litellm.proxy`` imports — ``litellm[proxy]`` does not install here (it pins ``litellm-proxy``, not
on the index); ``pip install 'ir3de[litellm-proxy-bench]'`` installs what the proxy imports; the
in-process ``litellm.Router`` (simple-shuffle, and with the ir3de strategy) is measured when
``litellm`` is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.reporting import machine, publish

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: LiteLLM's bundled price map

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 32, 256)


def _log(msg: str) -> None:
    print(f"[gateway-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # offline: LiteLLM's bundled model-price map
        LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true",  # a local proxy with no master key
    )
    path = [str(ROOT / "core"), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(path + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


# ---------------------------------------------------------------------------------------------- client
async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if m:
        await reader.readexactly(int(m.group(1)))
        return status
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return status


async def _load(port: int, path: str, bodies: Sequence[bytes], n: int, concurrency: int) -> dict[str, Any]:
    """Send ``n`` POSTs over ``concurrency`` keep-alive connections; latencies in seconds."""
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0
    requests = [
        b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (path.encode(), len(b), b)
        for b in bodies
    ]

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        try:
            while (i := next(counter)) < n:
                t0 = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    lat = np.array(latencies)
    return {
        "requests": int(lat.size),
        "errors": int(errors),
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "mean_ms": float(lat.mean() * 1e3),
        "rps": float(lat.size / wall),
    }


def _run_load(
    port: int, path: str, bodies: Sequence[bytes], n: int, concurrency: int, warmup: int
) -> dict[str, Any]:
    asyncio.run(_load(port, path, bodies, warmup, min(concurrency, warmup)))
    return asyncio.run(_load(port, path, bodies, n, concurrency))


# ---------------------------------------------------------------------------------------------- servers
def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready within {timeout} s")


def _routing_totals(port: int) -> tuple[float, float]:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    total = float(re.search(r"^ir3de_routing_seconds_sum ([0-9.e+-]+)$", text, re.M).group(1))
    count = float(re.search(r"^ir3de_routing_seconds_count ([0-9.e+-]+)$", text, re.M).group(1))
    return total, count


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _litellm_proxy_cmd(config: Path, port: int, env: dict[str, str]) -> list[str] | None:
    import shutil

    check = subprocess.run(
        [sys.executable, "-c", "import litellm.proxy.proxy_server"], env=env, capture_output=True, text=True
    )
    if check.returncode != 0:  # not installed, or what its proxy imports is missing
        _log(f"LiteLLM proxy not measured: {check.stderr.strip().splitlines()[-1][:200]}")
        return None
    exe = shutil.which("litellm")
    if exe is None:
        _log("LiteLLM proxy not measured: the `litellm` command is not on PATH")
        return None
    return [exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]


# ---------------------------------------------------------------------------------------------- litellm library
async def _litellm_library(
    upstream: str, prompts: Sequence[str], router_folder: str, n: int, concurrency: int, strategy: bool
) -> dict[str, Any]:
    import litellm

    from ir3de import Router
    from ir3de_integrations.litellm import use_ir3de

    experts = Router.from_pretrained(router_folder, device="cpu").experts
    llm = litellm.Router(
        model_list=[
            {
                "model_name": "ir3de",
                "litellm_params": {"model": f"openai/{e}", "api_base": f"{upstream}/v1", "api_key": "x"},
                "model_info": {"ir3de_expert": e},
            }
            for e in experts
        ],
        num_retries=0,
    )
    if strategy:
        use_ir3de(llm, Router.from_pretrained(router_folder, device="cpu"))
    counter = itertools.count()
    latencies: list[float] = []

    async def worker() -> None:
        while (i := next(counter)) < n:
            t0 = time.perf_counter()
            await llm.acompletion(
                model="ir3de", messages=[{"role": "user", "content": prompts[i % len(prompts)]}]
            )
            latencies.append(time.perf_counter() - t0)

    for _ in range(20):
        await llm.acompletion(model="ir3de", messages=[{"role": "user", "content": prompts[0]}])
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    lat = np.array(latencies)
    return {"requests": int(lat.size), "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3), "rps": float(lat.size / wall)}  # fmt: skip


# ---------------------------------------------------------------------------------------------- main
def _prompts(per_domain: int) -> list[str]:
    from ir3de.data.datasets import load_suite

    suite = load_suite("reasoning4", seed=0)
    per = [suite.test[name][:per_domain] for name in suite.test]
    return [p for group in zip(*per) for p in group]


def _fit_router(folder: Path) -> Path:
    from ir3de import Router, TokenEmbeddings
    from ir3de.data.datasets import load_suite

    suite = load_suite("reasoning4", seed=0)
    router = Router(TokenEmbeddings.default(), device="cpu", progress=False)
    router.fit({name: texts[:300] for name, texts in suite.train.items()})
    return router.save_pretrained(folder)


def _in_process_routing(folder: Path, prompts: Sequence[str]) -> dict[str, float]:
    from ir3de import Router
    from ir3de_integrations.serve.routing import SessionStore, route_messages

    router = Router.from_pretrained(folder, device="cpu")
    messages = [[{"role": "user", "content": p}] for p in prompts]
    sessions = SessionStore()
    for m in messages[:50]:
        route_messages(router, m, sessions=sessions)
    times = []
    for m in messages * 3:
        t0 = time.perf_counter()
        route_messages(router, m, sessions=sessions)
        times.append(time.perf_counter() - t0)
    t = np.array(times) * 1e6
    return {
        "p50_us": float(np.percentile(t, 50)),
        "p99_us": float(np.percentile(t, 99)),
        "mean_us": float(t.mean()),
    }


def run(quick: bool = False, out: Path | None = None, with_litellm: bool = True) -> dict[str, Any]:
    n_by_c = {1: 300, 32: 600, 256: 1024} if quick else {1: 2000, 32: 6000, 256: 8192}
    warmup = 100 if quick else 400
    prompts = _prompts(10 if quick else 100)
    tmp = Path(tempfile.mkdtemp(prefix="ir3de-gateway-bench-"))
    _log(f"fitting the router on reasoning4 (300 texts per domain); {len(prompts)} held-out prompts")
    folder = _fit_router(tmp / "router")
    from ir3de import Router

    experts = Router.from_pretrained(folder, device="cpu").experts
    routing_in_process = _in_process_routing(folder, prompts)
    _log(f"in-process route_messages: {routing_in_process}")
    env = _env()
    up_port, gw_port = _free_port(), _free_port()
    procs: list[subprocess.Popen] = []
    results: dict[str, Any] = {
        "direct": {},
        "gateway": {},
        "overhead": {},
        "litellm_proxy": None,
        "litellm_router": None,
    }
    try:
        upstream = subprocess.Popen(
            [sys.executable, "-m", "ir3de_integrations.serve.echo", "--port", str(up_port)], env=env, cwd=ROOT
        )
        procs.append(upstream)
        gateway_cmd = [sys.executable, "-m", "ir3de.cli", "serve", "--router", str(folder), "--port", str(gw_port),
                       "--log-level", "warning"]  # fmt: skip
        for e in experts:
            gateway_cmd += ["--upstream", f"{e}=http://127.0.0.1:{up_port}/v1"]
        gateway = subprocess.Popen(gateway_cmd, env=env, cwd=ROOT)
        procs.append(gateway)
        _wait_ready(f"http://127.0.0.1:{up_port}/v1/models", upstream)
        _wait_ready(f"http://127.0.0.1:{gw_port}/ready", gateway)
        direct_bodies = [
            json.dumps({"model": experts[0], "messages": [{"role": "user", "content": p}]}).encode()
            for p in prompts
        ]
        gateway_bodies = [
            json.dumps({"model": "ir3de", "messages": [{"role": "user", "content": p}]}).encode()
            for p in prompts
        ]
        for c in CONCURRENCY:
            n = n_by_c[c]
            results["direct"][c] = _run_load(up_port, "/v1/chat/completions", direct_bodies, n, c, warmup)
            before = _routing_totals(gw_port)
            results["gateway"][c] = _run_load(gw_port, "/v1/chat/completions", gateway_bodies, n, c, warmup)
            after = _routing_totals(gw_port)
            routing_mean_ms = (after[0] - before[0]) / max(after[1] - before[1], 1) * 1e3
            d, g = results["direct"][c], results["gateway"][c]
            over50 = g["p50_ms"] - d["p50_ms"]
            results["overhead"][c] = {
                "p50_ms": over50,
                "p99_ms": g["p99_ms"] - d["p99_ms"],
                "routing_mean_ms": routing_mean_ms,
                "routing_share": routing_mean_ms / over50 if over50 > 0 else float("nan"),
            }
            _log(f"c={c}: direct {d} | gateway {g} | overhead {results['overhead'][c]}")
        if with_litellm:
            lite_port = _free_port()
            lite_config = tmp / "litellm.yaml"
            lite_config.write_text(
                "model_list:\n"
                + "".join(
                    f"  - model_name: {e}\n    litellm_params: {{model: openai/{e}, api_base: 'http://127.0.0.1:{up_port}/v1', api_key: x}}\n"
                    for e in experts
                )
            )
            cmd = _litellm_proxy_cmd(lite_config, lite_port, env)
            if cmd is not None:
                lite = subprocess.Popen(
                    cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                procs.append(lite)
                _wait_ready(f"http://127.0.0.1:{lite_port}/health/liveliness", lite)
                results["litellm_proxy"] = {c: _run_load(lite_port, "/v1/chat/completions", direct_bodies, min(n_by_c[c], 1500), c, warmup)
                                            for c in CONCURRENCY}  # fmt: skip
            try:
                import litellm  # noqa: F401

                up = f"http://127.0.0.1:{up_port}"
                results["litellm_router"] = {
                    f"{'ir3de strategy' if s else 'simple-shuffle'}, concurrency {c}": asyncio.run(
                        _litellm_library(
                            up, prompts, str(folder), min(n_by_c[c] // (4 if quick else 2), 600), c, s
                        )
                    )
                    for c in (1, 32)
                    for s in (False, True)
                }
                _log(f"litellm.Router (in-process, ir3de strategy): {results['litellm_router']}")
            except ImportError:
                _log("litellm not installed: the in-process LiteLLM Router is not measured")
    finally:
        for p in procs:
            _stop(p)
    results["routing_in_process_us"] = routing_in_process
    results["machine"] = machine()
    results["quick"] = quick
    publish(results, render(results), out, "gateway")
    return results


def render(r: dict[str, Any]) -> str:
    head = "| concurrency | direct p50 / p99 (ms) | gateway p50 / p99 (ms) | added p50 / p99 (ms) | direct rps | "
    head += "gateway rps | routing (mean, ms) | routing share of added p50 |"
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in CONCURRENCY:
        d, g, o = r["direct"][c], r["gateway"][c], r["overhead"][c]
        lines.append(
            f"| {c} | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} | {g['p50_ms']:.2f} / {g['p99_ms']:.2f} | "
            f"{o['p50_ms']:.2f} / {o['p99_ms']:.2f} | {d['rps']:,.0f} | {g['rps']:,.0f} | "
            f"{o['routing_mean_ms']:.3f} | {o['routing_share'] * 100:.1f}% |"
        )
    proxy = r.get("litellm_proxy")
    if proxy:
        lines += [
            "",
            "| LiteLLM proxy (requests name the model: no routing) | p50 / p99 (ms) | added p50 / p99 vs direct (ms) | rps |",
            "|---|---:|---:|---:|",
        ]
        for c, v in proxy.items():
            d = r["direct"][c]
            lines.append(
                f"| concurrency {c} | {v['p50_ms']:.2f} / {v['p99_ms']:.2f} | "
                f"{v['p50_ms'] - d['p50_ms']:.2f} / {v['p99_ms'] - d['p99_ms']:.2f} | {v['rps']:,.0f} |"
            )
    lite = r.get("litellm_router")
    if lite:
        lines += [
            "",
            "| litellm.Router in-process (library), same upstream | p50 (ms) | p99 (ms) | rps |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {k} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['rps']:,.0f} |" for k, v in lite.items()
        ]
    errors = sum(v["errors"] for side in ("direct", "gateway") for v in r[side].values())
    errors += sum(v["errors"] for v in (proxy or {}).values())
    routing = r["routing_in_process_us"]
    lines += [
        "",
        f"Failed requests: {errors}. In-process routing of one request (route_messages, same prompts): "
        f"p50 {routing['p50_us']:.1f} µs, p99 {routing['p99_us']:.1f} µs, mean {routing['mean_us']:.1f} µs.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred requests per cell")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy and Router rows")
    args = parser.parse_args()
    run(quick=args.quick, out=args.out, with_litellm=not args.no_litellm)
