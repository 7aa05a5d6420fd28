"""The gateway under faults: ``ir3de serve --workers 2 --state-dir S`` killed and corrupted on purpose.

Usage::

    python -m benchmarks.faults                  # ~3 min on 2 cores, writes benchmarks/results/faults.*
    python -m benchmarks.faults --changes 10     # fewer admin changes per kill scenario

Everything runs on 127.0.0.1: instant echo upstreams (in this process), the gateway as a real
``ir3de serve --workers 2`` process group, the router fitted here on reasoning4. Scenarios:

* **kill -9 of a worker** while admin changes and chat traffic run: each change is a feedback prompt
  sent with an ``Idempotency-Key`` and retried (same key) until acknowledged; every few changes the
  worker that answered the last one is killed with SIGKILL, once right after a change was sent (mid
  save). Figures: changes acknowledged / present in the learned traffic after a restart / applied
  twice, chat requests that failed during the kills (8 clients, new connection per request).
* **kill -9 of the supervisor**: seconds until both workers exited, then until a new ``ir3de serve``
  on the same port serves.
* **a corrupted file in the newest revision** and **a garbled HEAD**: seconds until a restarted
  gateway serves, the revision it serves, the acknowledged changes that revision holds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.reporting import machine, publish

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-faults"
AUTH = {"authorization": f"Bearer {TOKEN}"}
EXPERTS = ("math", "code", "instructions", "multilingual")


def _log(msg: str) -> None:
    print(f"[faults-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """``ir3de serve --workers 2`` on a state folder (a process group of its own)."""

    def __init__(self, folder: Path, router: Path, upstreams: dict[str, str]) -> None:
        self.state = folder / "state"
        self.log = folder / "serve.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = folder / "gateway.json"
        self.config.write_text(
            json.dumps(
                {
                    "router": str(router),
                    "experts": {n: {"base_url": u, "model": n} for n, u in upstreams.items()},
                    "admin_token_env": "BENCH_FAULTS_ADMIN",
                    "state_dir": str(self.state),
                    "revision_poll_seconds": 0.2,
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until both workers serve; returns the seconds that took."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), str(ROOT)]),
            "BENCH_FAULTS_ADMIN": TOKEN,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        t0 = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ir3de.cli.main", "serve", "--config", str(self.config), "--workers", "2",
                 "--port", str(self.port), "--log-level", "warning"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.wait_serving(2)
        return time.monotonic() - t0

    def workers(self) -> dict[str, int]:
        import httpx

        listing = httpx.get(f"{self.url}/admin/revisions", headers=AUTH, timeout=5).json()
        return {w["worker"]: w["pid"] for w in listing["workers"] if not w["stale"]}

    def wait_serving(self, n: int, limit: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"ir3de serve exited: {self.log.read_text()[-2000:]}")
            try:
                if len(self.workers()) == n and httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{n} workers did not serve within {limit} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class ChatLoad:
    """``clients`` threads sending routed chat requests, a new connection each; counts failures."""

    def __init__(self, url: str, prompts: list[str], clients: int = 8) -> None:
        self.url, self.prompts, self.clients = url, prompts, clients
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        import httpx

        n = i
        while not self._stop.is_set():
            prompt = self.prompts[n % len(self.prompts)]
            n += self.clients
            body = {"model": "ir3de", "messages": [{"role": "user", "content": prompt}]}
            try:
                r = httpx.post(
                    f"{self.url}/v1/chat/completions", json=body, timeout=30, headers={"connection": "close"}
                )
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"{r.status_code} {r.text[:100]}")
            except httpx.HTTPError as e:
                self.failed.append(f"{type(e).__name__}: {e}")

    def __enter__(self) -> ChatLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def _change(url: str, prompt: str, key: str) -> tuple[dict[str, Any], int, str]:
    """Send one feedback change, retried with the same key until acknowledged: (body, retries, worker)."""
    import httpx

    retries = 0
    while True:
        try:
            r = httpx.post(
                f"{url}/admin/feedback",
                headers={**AUTH, "idempotency-key": key, "connection": "close"},
                json={"feedback": [{"prompt": prompt, "expert": "math"}]},
                timeout=60,
            )
            if r.status_code == 200:
                return r.json(), retries, r.headers.get("x-ir3de-worker", "")
        except httpx.HTTPError:
            pass
        retries += 1
        time.sleep(0.2)


def _learned(url: str) -> int:
    import httpx

    traffic = httpx.get(f"{url}/admin/traffic", headers=AUTH, timeout=30).json()["experts"]
    return int(traffic.get("math", {}).get("num_prompts", 0))


def kill_workers(gw: Gateway, prompts: list[str], changes: int) -> dict[str, Any]:
    """Admin changes under chat load, a worker killed with SIGKILL every few changes."""
    rng = random.Random(0)
    acknowledged, retries, kills = 0, 0, 0
    with ChatLoad(gw.url, prompts) as load:
        time.sleep(1.0)
        for i in range(changes):
            key = str(uuid.uuid4())
            prompt = f"fault probe {i}: what is {i} times {i + 3}"
            if i % 4 == 3:  # mid-save: kill a worker while the change is in flight
                pids = list(gw.workers().values())
                done: dict[str, Any] = {}
                sender = threading.Thread(
                    target=lambda d=done, p=prompt, k=key: d.update(r=_change(gw.url, p, k))
                )
                sender.start()
                time.sleep(rng.uniform(0.0, 0.3))
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
                sender.join()
                _, tries, _ = done["r"]
            else:
                _, tries, worker = _change(gw.url, prompt, key)
                if i % 4 == 1:  # kill the worker that committed this change, after its answer
                    pid = gw.workers().get(worker)
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                        kills += 1
            acknowledged += 1
            retries += tries
            # the same key once more: a retry after a lost response must not apply it again
            _change(gw.url, prompt, key)
        gw.wait_serving(2)
        time.sleep(1.0)
    requests = load.ok + len(load.failed)
    gw.stop()
    restart = gw.start()
    present = _learned(gw.url)
    return {
        "changes_acknowledged": acknowledged,
        "changes_present_after_restart": min(present, acknowledged),
        "changes_duplicated": max(0, present - acknowledged),
        "retries_needed": retries,
        "worker_kills": kills,
        "chat_requests": requests,
        "chat_failed": len(load.failed),
        "chat_failures_sample": load.failed[:5],
        "restart_seconds": round(restart, 2),
    }


def kill_supervisor(gw: Gateway) -> dict[str, Any]:
    pids = list(gw.workers().values())
    assert gw.proc is not None
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait()
    t0 = time.monotonic()
    while any(_alive(p) for p in pids) and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    exited = time.monotonic() - t0
    orphans = sum(_alive(p) for p in pids)
    restart = gw.start()  # same port
    return {
        "workers_exit_seconds": round(exited, 2),
        "orphans_left": orphans,
        "restart_seconds": round(restart, 2),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, OSError):
        return False


def corruption(gw: Gateway, prompts_before: int) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    gw.stop()
    head = json.loads((gw.state / "HEAD").read_text())["revision"]
    target = gw.state / "revisions" / str(head) / "router.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    seconds = gw.start()
    listing = httpx.get(f"{gw.url}/admin/revisions", headers=AUTH, timeout=30).json()
    out["corrupted_file"] = {
        "head": head,
        "serving_revision": listing["revision"],
        "skipped": [s["revision"] for s in listing["skipped"]],
        "seconds_to_serve": round(seconds, 2),
        "changes_present": _learned(gw.url),
        "changes_acknowledged": prompts_before,
    }
    gw.stop()
    (gw.state / "HEAD").write_text("garbled{")
    seconds = gw.start()
    listing = httpx.get(f"{gw.url}/admin/revisions", headers=AUTH, timeout=30).json()
    out["garbled_head"] = {
        "serving_revision": listing["revision"],
        "head_fault": bool(listing["head_fault"]),
        "seconds_to_serve": round(seconds, 2),
        "changes_present": _learned(gw.url),
    }
    return out


def render(results: dict[str, Any]) -> str:
    k, s, c = results["kill_workers"], results["kill_supervisor"], results["corruption"]
    f, g = c["corrupted_file"], c["garbled_head"]
    rows = [
        "| scenario | figure |",
        "|---|---|",
        f"| kill -9 of a worker ({k['worker_kills']} kills, {k['changes_acknowledged']} changes, each retried once more) | "
        f"acknowledged {k['changes_acknowledged']} / present {k['changes_present_after_restart']} / duplicated "
        f"{k['changes_duplicated']}; chat failed {k['chat_failed']} of {k['chat_requests']} |",
        f"| restart after the kills | serves in {k['restart_seconds']} s |",
        f"| kill -9 of the supervisor | workers gone in {s['workers_exit_seconds']} s ({s['orphans_left']} orphans); "
        f"a new `ir3de serve` on the same port serves in {s['restart_seconds']} s |",
        f"| corrupted file in revision {f['head']} | serves revision {f['serving_revision']} in {f['seconds_to_serve']} s "
        f"(skipped {f['skipped']}); {f['changes_present']} of {f['changes_acknowledged']} changes held |",
        f"| garbled HEAD | serves revision {g['serving_revision']} in {g['seconds_to_serve']} s; "
        f"{g['changes_present']} changes held |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=16, help="admin changes in the worker-kill scenario")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    from benchmarks.gateway import _fit_router, _prompts
    from ir3de_integrations.serve.echo import EchoUpstream
    from ir3de_integrations.serve.server import ServerThread

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        _log("fitting the router on reasoning4")
        router = _fit_router(folder / "router")
        upstreams = {n: f"{stack.enter_context(ServerThread(EchoUpstream(n))).url}/v1" for n in EXPERTS}
        gw = Gateway(folder, router, upstreams)
        stack.callback(gw.stop)
        _log(f"ir3de serve --workers 2 up in {gw.start():.1f} s")
        results: dict[str, Any] = {"machine": machine()}
        _log(f"{args.changes} admin changes under chat load, workers killed with SIGKILL")
        results["kill_workers"] = kill_workers(gw, _prompts(20), args.changes)
        _log("kill -9 of the supervisor")
        results["kill_supervisor"] = kill_supervisor(gw)
        _log("a corrupted file in the newest revision, then a garbled HEAD")
        results["corruption"] = corruption(gw, results["kill_workers"]["changes_acknowledged"])
        log = gw.log.read_text()
        results["tracebacks_in_log"] = log.count("Traceback")
    publish(results, render(results), None if args.no_write else args.out, "faults")
    return 0


if __name__ == "__main__":
    sys.exit(main())
