"""The gateway on Ray Serve: 2 replicas on a local Ray (2 CPUs), the real openai client in front.

One local Ray and one Serve HTTP proxy for the module (about 15 s to start on 2 cores); each test
deploys the application ``ir3de`` again (Ray Serve updates it in place).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

pytest.importorskip("ray.serve")

from ir3de_integrations.serve import GatewayConfig
from ir3de_integrations.serve.ray_serve import REPLICA_HEADER, gateway_app

pytestmark = pytest.mark.slow

APP = "ir3de"
MATH = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many clips?"
CODE = 'def fibonacci(n: int) -> list[int]:\n    """Return the first n Fibonacci numbers."""\n'


@pytest.fixture(scope="module")
def serve_url() -> Iterator[str]:
    """A local Ray (2 CPUs, no dashboard) with Serve's HTTP proxy on a free port; shut down after."""
    import logging

    import ray
    from gateway_helpers import free_port
    from ray import serve

    port = free_port()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        object_store_memory=150 * 2**20,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_config(gateway_router_folder, echo_upstreams) -> GatewayConfig:
    """The 4-expert router saved on disk, every expert at its echo upstream (in this process)."""
    experts = {n: {"base_url": f"{s.url}/v1", "model": f"{n}-model"} for n, s in echo_upstreams.items()}
    experts.pop("medical")
    return GatewayConfig.from_dict({"router": str(gateway_router_folder), "experts": experts})


def deploy(config: GatewayConfig, **options: Any) -> None:
    from ray import serve

    options.setdefault("num_replicas", 2)
    options.setdefault("ray_actor_options", {"num_cpus": 0.5})
    serve.run(gateway_app(config, **options), name=APP, route_prefix="/")


def ask(client: openai.OpenAI, prompt: str) -> tuple[str, str, str]:
    """(replica, expert, answer) of one routed chat request."""
    raw = client.chat.completions.with_raw_response.create(
        model="ir3de", messages=[{"role": "user", "content": prompt}]
    )
    return raw.headers[REPLICA_HEADER], raw.headers["x-ir3de-expert"], raw.parse().choices[0].message.content


def probe_replicas(
    client: openai.OpenAI, prompt: str, expert: str, replicas: set[str], timeout: float = 60.0
) -> float:
    """Ask ``prompt`` until every replica of ``replicas`` answered from ``expert`` on its latest
    request; returns the seconds that took."""
    start = time.monotonic()
    latest: dict[str, str] = {}
    while time.monotonic() - start < timeout:
        replica, got, _ = ask(client, prompt)
        latest[replica] = got
        if set(latest) >= replicas and all(latest[r] == expert for r in replicas):
            return time.monotonic() - start
    raise AssertionError(f"after {timeout} s the replicas route {prompt[:30]!r} to {latest}, not {expert!r}")


def running_replicas() -> int:
    from ray import serve

    deployment = serve.status().applications[APP].deployments["Ir3deGateway"]
    return deployment.replica_states.get("RUNNING", 0)


def test_two_replicas_route_and_answer(serve_url, ray_config):
    deploy(ray_config)
    assert running_replicas() == 2
    client = openai.OpenAI(base_url=f"{serve_url}/v1", api_key="x", max_retries=0, timeout=30)
    replicas: set[str] = set()
    for i in range(40):
        prompt = (MATH, CODE)[i % 2]
        replica, expert, answer = ask(client, prompt)
        replicas.add(replica)
        assert expert == ("math", "code")[i % 2]
        assert answer == f"{expert}: {prompt}"  # the echo upstream of that expert answered
    assert len(replicas) == 2  # the proxy spread 40 requests over both replicas
    stream = client.chat.completions.create(
        model="ir3de", stream=True, messages=[{"role": "user", "content": CODE}]
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == f"code: {CODE}"
    models = [m.id for m in client.models.list()]
    assert models == ["ir3de", "math", "code", "instructions", "multilingual"]
    assert httpx.get(f"{serve_url}/ready").json()["status"] == "ready"


def serve_deploy_file(tmp_path, config_file, user_config: dict[str, Any]) -> None:
    """``serve run --non-blocking serve.yaml`` (Ray Serve's declarative deploy, as an operator runs it)
    of the gateway with these live settings; waits until the application runs."""
    import json
    import subprocess
    import sys

    import ray
    from ray import serve

    serve_yaml = tmp_path / "serve.yaml"
    deployment = {"name": "Ir3deGateway", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5},
                  "user_config": user_config}  # fmt: skip
    app = {"name": APP, "route_prefix": "/", "import_path": "ir3de_integrations.serve.ray_serve:build_app",
           "args": {"config": str(config_file)}, "deployments": [deployment]}  # fmt: skip
    serve_yaml.write_text(json.dumps({"applications": [app]}))  # JSON is YAML
    address = ray.get_runtime_context().gcs_address
    cli = [sys.executable, "-m", "ray.serve.scripts", "run", "--non-blocking", "-a", address, str(serve_yaml)]
    subprocess.run(cli, check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 120
    while True:
        status = serve.status().applications.get(APP)
        assert status is None or status.status != "DEPLOY_FAILED", status.message
        if status is not None and status.status == "RUNNING" and running_replicas() == 2:
            deployment_status = status.deployments["Ir3deGateway"]
            if deployment_status.status == "HEALTHY":
                return
        assert time.monotonic() < deadline, f"the application did not come up: {status}"
        time.sleep(0.25)


def test_user_config_reaches_every_replica_in_place(serve_url, ray_config, tmp_path):
    """Ray Serve's own mechanism for live settings: a redeployed Serve config file whose only change is
    the deployment's user_config reconfigures every running replica in place (no restart)."""
    import json

    from ray import serve

    from ir3de_integrations.serve.ray_serve import config_to_dict

    serve.delete(APP)  # the tests above deployed it from Python (imperatively); this one declares it
    config_file = tmp_path / "gateway.json"
    config_file.write_text(json.dumps(config_to_dict(ray_config)))
    serve_deploy_file(tmp_path, config_file, {})
    client = openai.OpenAI(base_url=f"{serve_url}/v1", api_key="x", max_retries=0, timeout=30)
    replicas = {ask(client, MATH)[0] for _ in range(30)}
    assert len(replicas) == 2
    probe_replicas(client, MATH, "math", replicas)
    # every decision is below a threshold of 0.999 (confidence < 1 unless unanimous): the fallback answers
    serve_deploy_file(tmp_path, config_file, {"threshold": 0.999, "fallback": "instructions"})
    probe_replicas(client, MATH, "instructions", replicas)
    serve_deploy_file(tmp_path, config_file, {})  # keys left out go back to the config's values
    probe_replicas(client, MATH, "math", replicas)
    seen = {ask(client, CODE)[0] for _ in range(30)}
    assert seen == replicas  # the same two replicas all along: reconfigured, not restarted
