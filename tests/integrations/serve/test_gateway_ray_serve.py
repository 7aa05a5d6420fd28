"""The gateway on Ray Serve: 2 replicas on a local Ray (2 CPUs), the real openai client in front.

One local Ray and one Serve HTTP proxy for the module (about 15 s to start on 2 cores); each test
deploys the application ``ir3de`` (about 8 s for 2 replicas) on a state folder of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

pytest.importorskip("ray.serve")

from test_gateway_admin import Load

from ir3de.data.datasets import load_domain
from ir3de_integrations.serve import GatewayConfig
from ir3de_integrations.serve.ray_serve import DEPLOYMENT_NAME, gateway_app, http_options

pytestmark = pytest.mark.slow

APP = "ir3de"
TOKEN = "s3cret-ray-serve"
AUTH = {"authorization": f"Bearer {TOKEN}"}
#: Each replica: half a CPU, and the admin token in its environment (Ray's runtime_env).
ACTOR = {"num_cpus": 0.5, "runtime_env": {"env_vars": {"IR3DE_RAY_TEST_ADMIN": TOKEN}}}
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
        # the gateway's keep-alive (the clients' 5 s expiry would race Serve's default 5 s)
        serve.start(http_options=http_options(port=port), logging_config={"log_level": "WARNING"})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(autouse=True)
def _clean_serve(serve_url) -> Iterator[None]:
    """Each test starts with no application on the module's Serve (they all use route prefix /)."""
    from ray import serve

    for name in serve.status().applications:
        serve.delete(name)
    yield


@pytest.fixture(scope="module")
def medical_texts() -> list[str]:
    return load_domain("medical")[:100]  # [:20] probes, [20:] fit


@pytest.fixture
def ray_config(gateway_router_folder, echo_upstreams, tmp_path, monkeypatch) -> GatewayConfig:
    """The 4-expert router saved on disk, every expert at its echo upstream (in this process), a fresh
    state folder, the admin API on (replicas read the token from the environment of their actor)."""
    experts = {n: {"base_url": f"{s.url}/v1", "model": f"{n}-model"} for n, s in echo_upstreams.items()}
    experts.pop("medical")  # added through the admin API
    return GatewayConfig.from_dict(
        {
            "router": str(gateway_router_folder),
            "experts": experts,
            "state_dir": str(tmp_path / "state"),
            "revision_poll_seconds": 0.2,
            "admin_token_env": "IR3DE_RAY_TEST_ADMIN",
        }
    )


def deploy(config: GatewayConfig, **options: Any) -> None:
    from ray import serve

    options.setdefault("num_replicas", 2)
    options.setdefault("ray_actor_options", ACTOR)
    serve.run(gateway_app(config, **options), name=APP, route_prefix="/")


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)


def ask(client: openai.OpenAI, prompt: str) -> tuple[str, str, int, str]:
    """(worker, expert, revision, answer) of one routed chat request through Serve's proxy."""
    raw = client.chat.completions.with_raw_response.create(
        model="ir3de", messages=[{"role": "user", "content": prompt}]
    )
    h = raw.headers
    return (
        h["x-ir3de-worker"],
        h["x-ir3de-expert"],
        int(h["x-ir3de-revision"]),
        raw.parse().choices[0].message.content,
    )


def probe_replicas(
    client: openai.OpenAI,
    prompt: str,
    expert: str,
    replicas: set[str],
    revision: int = 0,
    limit: float = 120.0,
) -> None:
    """Ask ``prompt`` until each replica of ``replicas`` answered it from ``expert`` (at ``revision`` or
    later) on its latest request (the proxy picks the replica; ``limit`` only stops a hung test)."""
    deadline = time.monotonic() + limit
    latest: dict[str, tuple[str, int]] = {}
    while True:
        worker, got, served, _ = ask(client, prompt)
        latest[worker] = (got, served)
        if all(r in latest and latest[r][0] == expert and latest[r][1] >= revision for r in replicas):
            return
        assert time.monotonic() < deadline, f"the replicas route {prompt[:30]!r} as {latest}, not {expert!r}"


def replica_workers(client: openai.OpenAI, n: int = 2, limit: float = 120.0) -> set[str]:
    """The worker ids of the ``n`` replicas (requests until ``n`` distinct ones answered)."""
    deadline = time.monotonic() + limit
    seen: set[str] = set()
    while len(seen) < n:
        seen.add(ask(client, CODE)[0])
        assert time.monotonic() < deadline, f"only {seen} answered"
    return seen


def running_replicas() -> int:
    from ray import serve

    deployment = serve.status().applications[APP].deployments[DEPLOYMENT_NAME]
    return deployment.replica_states.get("RUNNING", 0)


def wait_until(check: Callable[[], Any], what: str, limit: float = 120.0) -> Any:
    deadline = time.monotonic() + limit
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_two_replicas_route_and_answer(serve_url, ray_config):
    deploy(ray_config)
    assert running_replicas() == 2
    client = client_for(serve_url)
    workers: set[str] = set()
    for i in range(40):
        prompt = (MATH, CODE)[i % 2]
        worker, expert, revision, answer = ask(client, prompt)
        workers.add(worker)
        assert expert == ("math", "code")[i % 2] and revision == 1  # the seed revision
        assert answer == f"{expert}: {prompt}"  # the echo upstream of that expert answered
    assert len(workers) == 2  # the proxy spread 40 requests over both replicas
    stream = client.chat.completions.create(
        model="ir3de", stream=True, messages=[{"role": "user", "content": CODE}]
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == f"code: {CODE}"
    assert [m.id for m in client.models.list()] == ["ir3de", "math", "code", "instructions", "multilingual"]
    assert httpx.get(f"{serve_url}/ready").json()["status"] == "ready"


def test_changes_reach_both_replicas_under_load_and_a_restart_keeps_them(
    serve_url, ray_config, medical_texts, echo_upstreams
):
    from ray import serve

    deploy(ray_config)
    client = client_for(serve_url)
    replicas = replica_workers(client)
    admin = httpx.Client(base_url=serve_url, headers=AUTH, timeout=300)
    with Load(serve_url, concurrency=4) as load:
        wait_until(lambda: load.ok >= 20 or load.failures, "traffic")
        upstream = {"base_url": f"{echo_upstreams['medical'].url}/v1", "model": "medical-model"}
        r = admin.post(
            "/admin/experts", json={"name": "medical", "texts": medical_texts[20:], "upstream": upstream}
        )
        assert r.status_code == 201, r.text
        learned = [{"prompt": f"what is {i} times {i + 7}", "expert": "math"} for i in range(3)]
        r = admin.post("/admin/feedback", json={"feedback": learned})
        assert r.status_code == 200, r.text
        r = admin.delete("/admin/experts/instructions")
        assert r.status_code == 200, r.text
        head = int(r.headers["x-ir3de-revision"])
        assert head == 4  # seed, add, learn, remove: one revision each, whichever replica took each call
        start = load.ok
        wait_until(lambda: load.ok >= start + 20 or load.failures, "traffic after the changes")
    assert load.failures == [] and load.ok >= 40
    assert "instructions" in load.experts  # served before its removal

    # every replica routes a probe to the new expert at HEAD (probed through the proxy until both agree)
    probe = next(p for p in medical_texts[:20] if ask(client, p)[1] == "medical")
    probe_replicas(client, probe, "medical", replicas, revision=head)
    listing = wait_until(
        lambda: (
            (d := admin.get("/admin/revisions").json())
            and {w["worker"] for w in d["workers"] if not w["stale"] and w["revision"] == head} == replicas
            and d
        ),
        "both replicas' heartbeats at HEAD",
    )
    assert listing["head"]["revision"] == head

    # a restart (every replica replaced) loads HEAD: the new expert and the learned traffic survive
    serve.delete(APP)
    deploy(ray_config)
    fresh = replica_workers(client)
    assert fresh.isdisjoint(replicas)  # new processes
    probe_replicas(client, probe, "medical", fresh, revision=head)
    listed = [e["name"] for e in admin.get("/admin/experts").json()["experts"]]
    assert listed == ["math", "code", "multilingual", "medical"]
    traffic = admin.get("/admin/traffic").json()["experts"]
    assert {n: t["num_prompts"] for n, t in traffic.items()} == {"math": 3}


def serve_deploy_file(tmp_path: Path, config_file: Path, user_config: dict[str, Any]) -> None:
    """``serve run --non-blocking serve.yaml`` (Ray Serve's declarative deploy, as an operator runs it)
    of the gateway with these live settings; waits until the application runs."""
    import ray
    from ray import serve

    serve_yaml = tmp_path / "serve.yaml"
    deployment = {"name": DEPLOYMENT_NAME, "num_replicas": 2, "ray_actor_options": ACTOR,
                  "user_config": user_config}  # fmt: skip
    app = {"name": APP, "route_prefix": "/", "import_path": "ir3de_integrations.serve.ray_serve:build_app",
           "args": {"config": str(config_file)}, "deployments": [deployment]}  # fmt: skip
    serve_yaml.write_text(json.dumps({"applications": [app]}))  # JSON is YAML
    address = ray.get_runtime_context().gcs_address
    cli = [sys.executable, "-m", "ray.serve.scripts", "run", "--non-blocking", "-a", address, str(serve_yaml)]
    subprocess.run(cli, check=True, capture_output=True, timeout=120)

    def running() -> bool:
        status = serve.status().applications.get(APP)
        assert status is None or status.status != "DEPLOY_FAILED", status.message
        return (
            status is not None
            and status.status == "RUNNING"
            and status.deployments[DEPLOYMENT_NAME].status == "HEALTHY"
            and running_replicas() == 2
        )

    wait_until(running, "the application to run")


def test_user_config_reaches_every_replica_in_place(serve_url, ray_config, tmp_path):
    """Ray Serve's own mechanism: a redeployed Serve config file whose only change is the deployment's
    user_config reconfigures every running replica in place (no restart) — live settings, and
    ``head``: a new revision announced to every replica at once (the watchers here poll hourly)."""
    import dataclasses

    config_file = tmp_path / "gateway.json"
    hourly = dataclasses.replace(ray_config, revision_poll_seconds=3600.0)
    config_file.write_text(json.dumps(hourly.to_dict()))
    serve_deploy_file(tmp_path, config_file, {})
    client = client_for(serve_url)
    replicas = replica_workers(client)
    probe_replicas(client, MATH, "math", replicas)
    # every decision is below a threshold of 0.999 (confidence < 1 unless unanimous): the fallback answers
    serve_deploy_file(tmp_path, config_file, {"threshold": 0.999, "fallback": "instructions"})
    probe_replicas(client, MATH, "instructions", replicas)
    serve_deploy_file(tmp_path, config_file, {})  # keys left out go back to the config's values
    probe_replicas(client, MATH, "math", replicas)

    # a change lands on one replica (revision 2); the other one keeps revision 1: its watcher sleeps
    r = httpx.post(
        f"{serve_url}/admin/feedback",
        headers=AUTH,
        json={"feedback": [{"prompt": "what is 17 times 23", "expert": "math"}]},
        timeout=300,
    )
    assert r.status_code == 200 and r.headers["x-ir3de-revision"] == "2"
    committer = r.headers["x-ir3de-worker"]
    (other,) = replicas - {committer}
    served = wait_until(lambda: (a := ask(client, CODE))[0] == other and a, "the other replica to answer")
    assert served[2] == 1
    serve_deploy_file(tmp_path, config_file, {"head": 2})  # announced through Ray Serve: both swap now
    probe_replicas(client, CODE, "code", replicas, revision=2, limit=60)
    assert replica_workers(client) == replicas  # the same two processes all along: not restarted
    assert {ask(client, CODE)[0] for _ in range(20)} <= replicas


def test_propagation_benchmark_measures_on_ray_serve(
    serve_url, gateway_router_folder, echo_upstreams, tmp_path
):
    """``python -m benchmarks.ray_serve`` measures this way (here: 2 changes, no throughput)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from benchmarks.ray_serve import measure, render

    port = int(serve_url.rsplit(":", 1)[1])
    upstream = f"{echo_upstreams['math'].url}/v1"
    results = measure(port, gateway_router_folder, upstream, tmp_path, changes=2, polls=(0.2,))
    propagation = results["propagation"][0.2]
    assert propagation["samples"] == 2 and 0 < propagation["p50_ms"] <= propagation["max_ms"]
    assert "| 0.2 s | 2 |" in render(results)


def test_cookbook_recipe(serve_url, smollm2):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "cookbook"))
    import ray_serve_gateway

    seen = ray_serve_gateway.main(embeddings=smollm2, port=int(serve_url.rsplit(":", 1)[1]), verbose=False)
    assert [a["expert"] for a in seen["answers"]] == ["math", "code", "multilingual"]
    assert all(a["answer"].startswith(f"{a['expert']}: ") and a["revision"] == 1 for a in seen["answers"])
    assert seen["revision"] == 2 and len(seen["probe"]) == 2 and set(seen["probe"].values()) == {"medical"}
    assert seen["revisions"]["head"]["revision"] == 2
