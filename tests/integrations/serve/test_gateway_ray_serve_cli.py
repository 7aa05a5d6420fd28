"""``ir3de serve --ray`` as a real process: its own local Ray, 2 replicas, stopped by SIGTERM (slow).

A module of its own, so that its Ray does not run beside the one of test_gateway_ray_serve.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from gateway_helpers import free_port

pytest.importorskip("ray.serve")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "s3cret-ray-cli"


def test_ir3de_serve_ray_two_replicas_then_sigterm(tmp_path, gateway_router_folder, echo_upstreams):
    experts = {n: {"base_url": f"{s.url}/v1"} for n, s in echo_upstreams.items() if n != "medical"}
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "router": str(gateway_router_folder),
                "experts": experts,
                "state_dir": "state",
                "revision_poll_seconds": 0.2,
                "admin_token_env": "IR3DE_ADMIN_TOKEN",
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), str(ROOT)]),
           "IR3DE_ADMIN_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    cmd = [sys.executable, "-m", "ir3de.cli", "serve", "--config", str(config), "--ray", "--replicas", "2",
           "--replica-cpus", "0.5", "--port", str(port)]  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the gateway on Ray Serve did not become ready"
            time.sleep(0.5)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        workers = set()
        for _ in range(60):
            raw = client.chat.completions.with_raw_response.create(
                model="ir3de", messages=[{"role": "user", "content": "def add(a: int, b: int) -> int:"}]
            )
            assert raw.headers["x-ir3de-expert"] == "code"
            workers.add(raw.headers["x-ir3de-worker"])
            if len(workers) == 2:
                break
        assert len(workers) == 2  # --replicas 2
        r = httpx.post(
            f"{url}/admin/feedback",
            headers={"authorization": f"Bearer {TOKEN}"},
            json={"feedback": [{"prompt": "integrate x^2", "expert": "math"}]},
            timeout=300,
        )
        assert r.status_code == 200 and r.headers["x-ir3de-revision"] == "2"
        assert (
            tmp_path / "state"
        ).is_dir()  # the relative state_dir is the launch folder's, for every replica
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()[-3000:]  # SIGTERM: the app deleted, Serve and its local Ray stopped
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=5)
