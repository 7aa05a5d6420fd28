"""Several gateway workers share one routing state through ``state_dir`` (a revision store).

In-process tests run two or three gateways on one state folder (each is a worker); the slow test
starts ``ir3de serve --workers 4`` as a real process under continuous load from the openai client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gateway_helpers import free_port
from test_gateway_admin import PROMPTS, Load

from ir3de.data.datasets import load_domain

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "s3cret-workers"
AUTH = {"authorization": f"Bearer {TOKEN}"}
POLL = 0.05


@pytest.fixture(scope="module")
def medical_texts() -> list[str]:
    return load_domain("medical")[:100]  # [:20] probes, [20:] fit


def _wait_until(check, *, limit: float, what: str):
    """Poll ``check()`` until it returns a truthy value; ``limit`` only stops a hung test."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL / 2)


def _chat(url: str, prompt: str, **kwargs) -> httpx.Response:
    r = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "ir3de", "messages": [{"role": "user", "content": prompt}]},
        timeout=30,
        **kwargs,
    )
    assert r.status_code == 200, r.text
    return r


def _medical_upstream(echo_upstreams) -> dict[str, str]:
    return {"base_url": f"{echo_upstreams['medical'].url}/v1", "model": "medical-model"}


@pytest.fixture
def workers(start_gateway, gateway_router_folder, smollm2, tmp_path, monkeypatch):
    """start() -> a gateway on the shared state folder (a worker), its own router copy loaded."""
    from ir3de import Router

    monkeypatch.setenv("GW_WORKERS_ADMIN", TOKEN)
    state = tmp_path / "state"

    def start():
        router = Router.from_pretrained(
            gateway_router_folder, embeddings=smollm2, device="cpu", progress=False
        )
        return start_gateway(
            router=router,
            state_dir=str(state),
            revision_poll_seconds=POLL,
            admin_token_env="GW_WORKERS_ADMIN",
        )

    start.state = state
    return start


def test_workers_on_one_state_dir_follow_every_change_and_a_restart_keeps_it(
    workers, medical_texts, echo_upstreams, gateway_router
):
    a, b = workers(), workers()
    first = _chat(a.url, PROMPTS[0])
    assert first.headers["x-ir3de-revision"] == "1" and first.headers["x-ir3de-worker"]
    assert _chat(b.url, PROMPTS[0]).headers["x-ir3de-worker"] != first.headers["x-ir3de-worker"]

    # an expert added on worker a: committed as revision 2, served by a at once, by b after a poll
    r = httpx.post(
        f"{a.url}/admin/experts",
        headers=AUTH,
        json={"name": "medical", "texts": medical_texts[20:], "upstream": _medical_upstream(echo_upstreams)},
        timeout=120,
    )
    assert r.status_code == 201, r.text
    assert r.headers["x-ir3de-revision"] == "2"
    probe = next(p for p in medical_texts[:20] if _chat(a.url, p).headers["x-ir3de-expert"] == "medical")
    assert gateway_router.route(probe).expert != "medical"  # the probe moved because of the new expert
    routed = _wait_until(
        lambda: (r := _chat(b.url, probe)).headers["x-ir3de-expert"] == "medical" and r,
        limit=200 * POLL + 60,
        what="worker b to serve revision 2",
    )
    assert routed.headers["x-ir3de-revision"] == "2"
    assert routed.json()["choices"][0]["message"]["content"] == f"medical: {probe}"  # b has its upstream
    decision = httpx.post(
        f"{b.url}/v1/chat/completions",
        json={
            "model": "ir3de",
            "messages": [{"role": "user", "content": probe}],
            "ir3de": {"decision": True},
        },
    ).json()["ir3de"]
    assert decision["revision"] == 2 and decision["expert"] == "medical"

    # traffic learned on b reaches a; an expert removed on b is gone on a
    r = httpx.post(
        f"{b.url}/admin/feedback",
        headers=AUTH,
        json={"feedback": [{"prompt": "what is 17 times 23", "expert": "math"}]},
        timeout=120,
    )
    assert r.status_code == 200 and r.headers["x-ir3de-revision"] == "3"
    r = httpx.delete(f"{b.url}/admin/experts/instructions", headers=AUTH, timeout=120)
    assert r.status_code == 200 and r.headers["x-ir3de-revision"] == "4"
    _wait_until(
        lambda: httpx.get(f"{a.url}/health").headers["x-ir3de-revision"] == "4",
        limit=200 * POLL + 60,
        what="worker a to serve revision 4",
    )
    listed = [e["name"] for e in httpx.get(f"{a.url}/admin/experts", headers=AUTH).json()["experts"]]
    assert listed == ["math", "code", "multilingual", "medical"]
    traffic = httpx.get(f"{a.url}/admin/traffic", headers=AUTH).json()["experts"]
    assert {n: t["num_prompts"] for n, t in traffic.items()} == {"math": 1}
    assert "ir3de_router_revision 4.0" in httpx.get(f"{a.url}/metrics").text
    assert "ir3de_revision_swaps_total 3.0" in httpx.get(f"{a.url}/metrics").text

    # every worker's heartbeat names the revision it serves
    listing = _wait_until(
        lambda: (
            (d := httpx.get(f"{a.url}/admin/revisions", headers=AUTH).json())
            and {w["revision"] for w in d["workers"]} == {4}
            and d
        ),
        limit=200 * POLL + 60,
        what="both heartbeats at revision 4",
    )
    assert listing["head"]["revision"] == 4 and listing["revision"] == 4
    assert len(listing["workers"]) == 2 and not any(w["stale"] for w in listing["workers"])
    assert {w["pid"] for w in listing["workers"]} == {os.getpid()}

    # a worker started later (a restart) loads HEAD: the new expert and the learned traffic are there
    c = workers()
    assert _chat(c.url, probe).headers["x-ir3de-expert"] == "medical"
    assert httpx.get(f"{c.url}/admin/traffic", headers=AUTH).json()["experts"]["math"]["num_prompts"] == 1
    assert _chat(c.url, probe).headers["x-ir3de-revision"] == "4"


def test_concurrent_changes_on_two_workers_lose_none(workers):
    a, b = workers(), workers()
    prompts = {
        a: [f"what is {i} times {i + 7}" for i in range(4)],
        b: [f"sort a list of {i} numbers in python" for i in range(4)],
    }
    errors: list[str] = []

    def send(server, expert):
        for prompt in prompts[server]:
            r = httpx.post(
                f"{server.url}/admin/feedback",
                headers=AUTH,
                json={"feedback": [{"prompt": prompt, "expert": expert}]},
                timeout=120,
            )
            if r.status_code != 200:
                errors.append(r.text)

    threads = [
        threading.Thread(target=send, args=(a, "math")),
        threading.Thread(target=send, args=(b, "code")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for server in (a, b):
        _wait_until(
            lambda server=server: httpx.get(f"{server.url}/health").headers["x-ir3de-revision"] == "9",
            limit=200 * POLL + 60,
            what="both workers at revision 9",
        )
        traffic = httpx.get(f"{server.url}/admin/traffic", headers=AUTH).json()["experts"]
        assert {n: t["num_prompts"] for n, t in traffic.items()} == {"math": 4, "code": 4}


def test_thresholds_tuned_on_one_worker_are_served_by_every_worker(workers, reasoning4):
    a, b = workers(), workers()
    held_out = {name: texts[:12] for name, texts in reasoning4.test.items()}
    r = httpx.post(
        f"{a.url}/admin/tune",
        headers=AUTH,
        json={"held_out": held_out, "target_precision": 0.99, "per_expert": True, "abstain": "math"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-ir3de-revision"] == "2"
    tuned = r.json()["tuned"]
    assert tuned["fallback"] == "math" and set(tuned["thresholds"]) == set(held_out)
    _wait_until(
        lambda: httpx.get(f"{b.url}/health").headers["x-ir3de-revision"] == "2",
        limit=200 * POLL + 60,
        what="worker b to serve the tuned revision",
    )
    for server in (a, b, workers()):  # the third one starts later: a restart keeps the tuning
        config = server.app.state.gateway.router.config
        assert config.thresholds == tuned["thresholds"] and config.fallback == "math"
        assert config.evidence_tokens == tuned["evidence_tokens"]
    bad = httpx.post(f"{a.url}/admin/tune", headers=AUTH, json={"held_out": {"legal": ["x"]}}, timeout=60)
    assert bad.status_code == 404 and "unknown experts ['legal']" in bad.text
    bad = httpx.post(f"{a.url}/admin/tune", headers=AUTH, json={"held_out": ["x"]}, timeout=60)
    assert bad.status_code == 400 and "held_out" in bad.text
    assert httpx.get(f"{a.url}/health").headers["x-ir3de-revision"] == "2"  # refused: nothing committed


def test_a_revision_a_worker_cannot_serve_is_skipped_whole(workers):
    """A revision whose upstream map misses an expert is not half-applied: the worker keeps serving
    the revision before, then moves on to the next good one."""
    from ir3de import Router
    from ir3de.artifacts.revisions import RevisionStore

    a = workers()
    store = RevisionStore(workers.state)
    head = store.load()

    def broken(rev):
        return Router.from_pretrained(rev.folder, device="cpu", progress=False).save_pretrained, {
            "upstreams": {}
        }

    store.commit(broken, writer="test")
    time.sleep(20 * POLL)  # many polls: each fails to swap, none changes what is served
    r = _chat(a.url, PROMPTS[0])
    assert r.headers["x-ir3de-revision"] == "1"
    assert "ir3de_router_revision 1.0" in httpx.get(f"{a.url}/metrics").text

    def good(rev):
        return Router.from_pretrained(rev.folder, device="cpu", progress=False).save_pretrained, head.extras

    store.commit(good, writer="test")
    gateway = a.app.state.gateway
    assert gateway.state.sync() == 3  # on demand (e.g. an engine's reconfigure), besides the watcher
    _wait_until(
        lambda: _chat(a.url, PROMPTS[0]).headers["x-ir3de-revision"] == "3",
        limit=200 * POLL + 60,
        what="the worker to serve revision 3",
    )


def test_one_process_without_state_dir_counts_its_own_revisions(start_gateway, fresh_router, monkeypatch):
    monkeypatch.setenv("GW_WORKERS_ADMIN", TOKEN)
    gw = start_gateway(router=fresh_router, admin_token_env="GW_WORKERS_ADMIN")
    assert _chat(gw.url, PROMPTS[1]).headers["x-ir3de-revision"] == "1"
    r = httpx.post(
        f"{gw.url}/admin/feedback", headers=AUTH, json={"feedback": [{"prompt": "2+2", "expert": "math"}]}
    )
    assert r.status_code == 200
    assert _chat(gw.url, PROMPTS[1]).headers["x-ir3de-revision"] == "2"
    listing = httpx.get(f"{gw.url}/admin/revisions", headers=AUTH).json()
    assert listing["head"] is None and listing["revision"] == 2 and len(listing["workers"]) == 1


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"state_dir": ""}, "state_dir must name a folder"),
        ({"revision_poll_seconds": 0}, "revision_poll_seconds must be"),
        ({"revision_poll_seconds": "1"}, "revision_poll_seconds must be"),
        ({"revision_keep": 0}, "revision_keep must be"),
    ],
)
def test_bad_state_settings_say_what_is_wrong(values, match):
    from ir3de_integrations.serve import ConfigError, GatewayConfig

    with pytest.raises(ConfigError, match=match):
        GatewayConfig.from_dict({"router": "r", **values})


def test_several_workers_need_a_state_dir():
    from ir3de_integrations.serve import ConfigError, GatewayConfig
    from ir3de_integrations.serve.server import check_workers

    config = GatewayConfig.from_dict({"router": "r"})
    with pytest.raises(ConfigError, match="set state_dir in the gateway config"):
        check_workers(config, 4)
    check_workers(config, 1)
    check_workers(GatewayConfig.from_dict({"router": "r", "state_dir": "s"}), 4)
    with pytest.raises(ConfigError, match="positive integer"):
        check_workers(config, 0)
    done = subprocess.run(
        [sys.executable, "-m", "ir3de.cli", "serve", "--router", "r", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), str(ROOT)])},
        check=False,
    )
    assert done.returncode != 0 and "--state-dir" in done.stderr


# ------------------------------------------------------------------ ir3de serve --workers 4


def _start_server(config: Path, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), str(ROOT)]),
        "GW_WORKERS_ADMIN": TOKEN,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ir3de.cli", "serve", "--config", str(config), "--workers", "4",
             "--port", str(port), "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # uvicorn's supervisor stops its workers
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _workers_up(url: str, n: int) -> bool:
    try:
        listing = httpx.get(f"{url}/admin/revisions", headers=AUTH, timeout=5).json()
    except httpx.HTTPError:
        return False
    return len([w for w in listing["workers"] if not w["stale"]]) == n


def _worker_experts(url: str, prompt: str) -> tuple[str, str, str]:
    """(worker, expert, revision) of one request on a new connection (so any worker may take it)."""
    r = _chat(url, prompt, headers={"connection": "close"})
    return r.headers["x-ir3de-worker"], r.headers["x-ir3de-expert"], r.headers["x-ir3de-revision"]


@pytest.mark.slow
def test_ir3de_serve_with_4_workers_under_load(
    tmp_path, gateway_router_folder, echo_upstreams, medical_texts
):
    import yaml

    poll = 0.2
    experts = {n: {"base_url": f"{echo_upstreams[n].url}/v1", "model": f"{n}-model"} for n in echo_upstreams}
    del experts["medical"]  # added through the admin API
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "router": str(gateway_router_folder),
                "experts": experts,
                "admin_token_env": "GW_WORKERS_ADMIN",
                "state_dir": str(tmp_path / "state"),
                "revision_poll_seconds": poll,
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = _start_server(config, port, log)
    try:
        _wait_until(lambda: proc.poll() is not None or _workers_up(url, 4), limit=300, what="4 workers")
        assert proc.poll() is None, log.read_text()[-3000:]
        with Load(url, concurrency=4) as load:
            _wait_until(lambda: load.ok >= 40 or load.failures, limit=120, what="traffic")
            r = httpx.post(
                f"{url}/admin/experts",
                headers=AUTH,
                json={
                    "name": "medical",
                    "texts": medical_texts[20:],
                    "upstream": _medical_upstream(echo_upstreams),
                },
                timeout=300,
            )
            assert r.status_code == 201, r.text
            learned = [{"prompt": f"what is {i} times {i + 7}", "expert": "math"} for i in range(3)]
            r = httpx.post(f"{url}/admin/feedback", headers=AUTH, json={"feedback": learned}, timeout=300)
            assert r.status_code == 200, r.text
            r = httpx.delete(f"{url}/admin/experts/instructions", headers=AUTH, timeout=300)
            assert r.status_code == 200, r.text
            head = int(r.headers["x-ir3de-revision"])
            assert head == 4  # seed, add, learn, remove: one revision each
            start = load.ok
            _wait_until(lambda: load.ok >= start + 40 or load.failures, limit=120, what="traffic")
        assert load.failures == [] and load.ok >= 80
        assert "instructions" in load.experts  # served before its removal

        # probe until every worker serves HEAD and routes the probe to the new expert
        probe = next(p for p in medical_texts[:20] if _worker_experts(url, p)[1] == "medical")
        agreed: dict[str, str] = {}

        def all_agree() -> bool:
            worker, expert, revision = _worker_experts(url, probe)
            if expert == "medical" and int(revision) == head:
                agreed[worker] = expert
            return len(agreed) == 4

        _wait_until(all_agree, limit=50 * poll + 120, what="every worker to route the probe to 'medical'")
        listing = httpx.get(f"{url}/admin/revisions", headers=AUTH).json()
        assert listing["head"]["revision"] == head
        live = [w for w in listing["workers"] if not w["stale"]]
        assert {w["worker"] for w in live} == set(agreed) and {w["revision"] for w in live} == {head}
        assert len({w["pid"] for w in live}) == 4
    finally:
        _stop_server(proc)

    # a restart loads HEAD: the new expert and the learned traffic survive
    proc = _start_server(config, port, log)
    try:
        _wait_until(lambda: proc.poll() is not None or _workers_up(url, 4), limit=300, what="4 workers")
        assert proc.poll() is None, log.read_text()[-3000:]
        listed = [e["name"] for e in httpx.get(f"{url}/admin/experts", headers=AUTH).json()["experts"]]
        assert listed == ["math", "code", "multilingual", "medical"]
        traffic = httpx.get(f"{url}/admin/traffic", headers=AUTH).json()["experts"]
        assert {n: t["num_prompts"] for n, t in traffic.items()} == {"math": 3}
        _, expert, revision = _worker_experts(url, probe)
        assert (expert, int(revision)) == ("medical", head)
    finally:
        _stop_server(proc)
