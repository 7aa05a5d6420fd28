"""Adaptation in the gateway: opt-in, bounded capture of routed prompts (never logged), POST /admin/adapt
and adapt_every committed like every admin change, forget-adaptation, and every worker following."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gateway_helpers import free_port

from ir3de.data.datasets import load_domain

TOKEN = "s3cret-adapt"
AUTH = {"authorization": f"Bearer {TOKEN}"}
POLL = 0.05


@pytest.fixture(scope="module")
def served() -> list[str]:
    """Prompts from outside the router's corpora (medical questions): the traffic to adapt to."""
    return load_domain("medical")[:40]


@pytest.fixture
def adapting(start_gateway, fresh_router, monkeypatch):
    """start(**config) -> a gateway with the admin API on, over its own router copy."""
    monkeypatch.setenv("GW_ADAPT_ADMIN", TOKEN)

    def start(router=None, **config):
        return start_gateway(router=router or fresh_router, admin_token_env="GW_ADAPT_ADMIN", **config)

    return start


def _chat(url: str, prompt: str, model: str = "ir3de", history: list | None = None) -> httpx.Response:
    messages = [*(history or []), {"role": "user", "content": prompt}]
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": messages}, timeout=30)
    assert r.status_code == 200, r.text
    return r


def _decisions(router, probes: list[str]) -> list[tuple[str, float]]:
    return [(d.expert, d.confidence) for d in (router.route(p) for p in probes)]


def _same_report(got: dict, expected: dict) -> bool:
    """Two adaptation reports agree on everything but the time they took."""
    return {k: v for k, v in got.items() if k != "seconds"} == {
        k: v for k, v in expected.items() if k != "seconds"
    }


def _load(folder, smollm2):
    from ir3de import Router

    return Router.from_pretrained(folder, embeddings=smollm2, device="cpu", progress=False)


def _wait_until(check, *, limit: float, what: str):
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL / 2)


def test_adapt_learns_exactly_the_routed_prompts_and_forget_restores_the_router(
    adapting, fresh_router, gateway_router_folder, smollm2, served, small_tests, caplog
):
    gw = adapting(adapt_capture=100)
    probes = [t for texts in small_tests.values() for t in texts[:5]] + served[30:]
    before = _decisions(gw.app.state.gateway.router, probes)
    caplog.set_level(logging.DEBUG, logger="ir3de.serve")
    # chats are kept as their last user turn; a request naming an expert is not routed, so not kept
    for prompt in served[:20]:
        _chat(
            gw.url,
            prompt,
            history=[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
        )
    _chat(gw.url, served[20], model="math")
    state = httpx.get(f"{gw.url}/admin/adaptation", headers=AUTH).json()
    assert state["adaptation"]["num_prompts"] == 0
    assert state["capture"] == {
        "enabled": True, "maxsize": 100, "pending": 20, "captured": 20, "taken": 0, "dropped": 0
    }  # fmt: skip

    r = httpx.post(f"{gw.url}/admin/adapt", headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["x-ir3de-revision"] == "2"
    body = r.json()
    assert body["capture"]["pending"] == 0 and body["capture"]["taken"] == 20
    assert body["adaptation"] == gw.app.state.gateway.router.adaptation.to_dict()
    # the gateway's router equals a copy adapted directly on the same 20 texts
    reference = _load(gateway_router_folder, smollm2)
    expected = reference.adapt(served[:20])
    assert _same_report(body["adapted"], expected.to_dict())
    assert _decisions(gw.app.state.gateway.router, probes) == _decisions(reference, probes)
    assert _decisions(gw.app.state.gateway.router, probes) != before  # adapting changed something
    assert httpx.get(f"{gw.url}/health").headers["x-ir3de-revision"] == "2"

    # the prompts are never logged, nor written in any response
    for prompt in served[:21]:
        assert prompt not in caplog.text and prompt not in r.text

    # nothing pending now: 409, nothing committed
    again = httpx.post(f"{gw.url}/admin/adapt", headers=AUTH, timeout=60)
    assert again.status_code == 409 and again.json()["error"]["code"] == "nothing_to_adapt"

    # forget: the routes are bit-identical to the router before adapting; pending prompts are dropped
    _chat(gw.url, served[21])
    r = httpx.post(f"{gw.url}/admin/forget-adaptation", headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["dropped_pending"] == 1 and r.json()["adaptation"]["num_prompts"] == 0
    assert r.headers["x-ir3de-revision"] == "3"
    assert _decisions(gw.app.state.gateway.router, probes) == before


def test_prompts_given_in_the_body_and_the_errors(adapting, fresh_router, served):
    gw = adapting()  # capture off
    _chat(gw.url, served[0])
    r = httpx.post(f"{gw.url}/admin/adapt", headers=AUTH, json={}, timeout=60)
    assert r.status_code == 409 and "adapt_capture is 0" in r.text
    assert httpx.get(f"{gw.url}/admin/adaptation", headers=AUTH).json()["capture"]["captured"] == 0
    for body, match in [
        ({"prompts": "one"}, "'prompts' must be a non-empty list of strings"),
        ({"prompts": []}, "'prompts' must be a non-empty list of strings"),
        ({"prompts": ["ok", 3]}, "'prompts' must be a non-empty list of strings"),
        ({"options": 3}, "'options' must be an object"),
        ({"prompt": ["x"]}, r"unknown field\(s\) \['prompt'\]"),
    ]:
        r = httpx.post(f"{gw.url}/admin/adapt", headers=AUTH, json=body, timeout=60)
        assert r.status_code == 400, body
        assert re.search(match, r.json()["error"]["message"]), r.text
    r = httpx.post(
        f"{gw.url}/admin/adapt", headers=AUTH, json={"prompts": served[:5], "options": {"nonsense": 1}}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] in ("options", None)
    assert httpx.post(f"{gw.url}/admin/adapt", json={"prompts": served[:5]}).status_code == 401
    assert int(httpx.get(f"{gw.url}/health").headers["x-ir3de-revision"]) == 1  # nothing committed

    r = httpx.post(f"{gw.url}/admin/adapt", headers=AUTH, json={"prompts": served[:5]}, timeout=120)
    assert r.status_code == 200 and r.headers["x-ir3de-revision"] == "2"
    assert r.json()["adaptation"] == gw.app.state.gateway.router.adaptation.to_dict()


def test_adapt_every_adapts_in_the_background_and_the_bound_holds(adapting, fresh_router, served):
    gw = adapting(adapt_capture=8, adapt_every=6)
    for prompt in served[:6]:
        _chat(gw.url, prompt)
    _wait_until(
        lambda: httpx.get(f"{gw.url}/health").headers["x-ir3de-revision"] == "2",
        limit=120,
        what="the adapt_every adaptation to be committed",
    )
    state = httpx.get(f"{gw.url}/admin/adaptation", headers=AUTH).json()
    assert (
        state["capture"]["taken"] == 6
        and state["adaptation"] == gw.app.state.gateway.router.adaptation.to_dict()
    )
    capture = gw.app.state.gateway.capture
    assert repr(capture) == "CapturedPrompts(0 pending of maxsize 8)"
    # the bound: 8 kept at most, the oldest dropped first (here with adapt_every out of the way)
    bounded = adapting(adapt_capture=3)
    for prompt in served[10:15]:
        _chat(bounded.url, prompt)
    described = bounded.app.state.gateway.capture.describe()
    assert (described["pending"], described["dropped"], described["captured"]) == (3, 2, 5)
    assert bounded.app.state.gateway.capture.take() == served[12:15]


def test_an_adaptation_on_one_worker_is_served_by_every_worker(
    adapting, gateway_router_folder, smollm2, served, tmp_path
):
    state = str(tmp_path / "state")
    a = adapting(router=_load(gateway_router_folder, smollm2), state_dir=state, revision_poll_seconds=POLL,
                 adapt_capture=50)  # fmt: skip
    b = adapting(router=_load(gateway_router_folder, smollm2), state_dir=state, revision_poll_seconds=POLL,
                 adapt_capture=50)  # fmt: skip
    for prompt in served[:10]:
        _chat(a.url, prompt)
    for prompt in served[10:16]:
        _chat(b.url, prompt)
    r = httpx.post(f"{a.url}/admin/adapt", headers=AUTH, timeout=120)
    assert r.status_code == 200 and r.headers["x-ir3de-revision"] == "2"
    # b adapts on what *it* routed: on top of a's adaptation (revision 3)
    r = httpx.post(f"{b.url}/admin/adapt", headers=AUTH, timeout=120)
    assert r.status_code == 200 and r.headers["x-ir3de-revision"] == "3"
    _wait_until(
        lambda: httpx.get(f"{a.url}/health").headers["x-ir3de-revision"] == "3", limit=120, what="a at 3"
    )
    reference = _load(gateway_router_folder, smollm2)
    reference.adapt(served[:16])  # any split of the prompts gives the same router
    probes = served[20:]
    for server in (a, b):
        router = server.app.state.gateway.router
        assert router.adaptation.to_dict() == reference.adaptation.to_dict()
        assert _decisions(router, probes) == _decisions(reference, probes)
    r = httpx.post(f"{b.url}/admin/forget-adaptation", headers=AUTH, timeout=120)
    assert r.status_code == 200 and r.headers["x-ir3de-revision"] == "4"
    _wait_until(
        lambda: httpx.get(f"{a.url}/admin/adaptation", headers=AUTH).json()["adaptation"]["num_prompts"] == 0,
        limit=120,
        what="a to serve the forgotten adaptation",
    )


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"adapt_capture": -1}, "adapt_capture must be a non-negative integer"),
        ({"adapt_capture": True}, "adapt_capture must be a non-negative integer"),
        ({"adapt_every": 1.5}, "adapt_every must be a non-negative integer"),
        ({"adapt_every": 10, "adapt_capture": 5}, "adapt_every=10 needs adapt_capture of at least 10"),
    ],
)
def test_bad_adaptation_settings_say_what_is_wrong(values, match):
    from ir3de_integrations.serve import ConfigError, GatewayConfig

    with pytest.raises(ConfigError, match=match):
        GatewayConfig.from_dict({"router": "r", **values})
    assert GatewayConfig.from_dict({"router": "r"}).adapt_capture == 0  # capture is off by default


def test_serve_flags_set_the_capture():
    import argparse

    from ir3de_integrations.serve.cli import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--router", "r", "--adapt-capture", "300", "--adapt-every", "100"])
    config = build_config(args)
    assert (config.adapt_capture, config.adapt_every) == (300, 100)


def test_capture_doctests():
    import doctest

    from ir3de_integrations.serve import capture

    assert doctest.testmod(capture).failed == 0


# ------------------------------------------------------------------ ir3de serve --workers 2


def _start_server(config, port: int, log) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[3]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root / "core"), str(root)]),
        "GW_ADAPT_ADMIN": TOKEN,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ir3de.cli.main", "serve", "--config", str(config), "--workers", "2",
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


def _live_workers(url: str) -> list[dict]:
    try:
        listing = httpx.get(f"{url}/admin/revisions", headers=AUTH, timeout=5).json()
    except httpx.HTTPError:
        return []
    return [w for w in listing["workers"] if not w["stale"]]


@pytest.mark.slow
def test_ir3de_serve_with_2_workers_adapts_under_load_and_both_serve_it(
    tmp_path, gateway_router_folder, echo_upstreams
):
    import yaml
    from test_gateway_admin import Load

    experts = {n: {"base_url": f"{echo_upstreams[n].url}/v1", "model": f"{n}-model"} for n in echo_upstreams}
    del experts["medical"]
    config = tmp_path / "gateway.yaml"
    settings = {
        "router": str(gateway_router_folder),
        "experts": experts,
        "admin_token_env": "GW_ADAPT_ADMIN",
        "state_dir": str(tmp_path / "state"),
        "revision_poll_seconds": 0.2,
        "adapt_capture": 1000,
    }
    config.write_text(yaml.safe_dump(settings))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = _start_server(config, port, log)
    try:
        _wait_until(
            lambda: proc.poll() is not None or len(_live_workers(url)) == 2, limit=300, what="2 workers"
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        with Load(url, concurrency=4) as load:
            _wait_until(lambda: load.ok >= 40 or load.failures, limit=120, what="traffic")

            def adapted() -> httpx.Response | None:
                # a new connection each time: the worker that takes it adapts on the prompts *it* kept
                r = httpx.post(f"{url}/admin/adapt", headers={**AUTH, "connection": "close"}, timeout=300)
                if r.status_code == 409 and r.json()["error"]["code"] == "nothing_to_adapt":
                    return None
                assert r.status_code == 200, r.text
                return r

            r = _wait_until(adapted, limit=120, what="a worker with kept prompts to adapt")
            head, adapter = int(r.headers["x-ir3de-revision"]), r.json()["worker"]
            assert head == 2 and r.json()["adapted"]["prompts"] > 0
            start = load.ok
            _wait_until(lambda: load.ok >= start + 40 or load.failures, limit=120, what="traffic")
        assert load.failures == [] and load.ok >= 80

        # both workers serve the adapted revision: their heartbeats, and what each one reports
        seen: dict[str, int] = {}

        def both_adapted() -> bool:
            r = httpx.get(f"{url}/admin/adaptation", headers={**AUTH, "connection": "close"}, timeout=30)
            if int(r.headers["x-ir3de-revision"]) == head:
                seen[r.json()["worker"]] = r.json()["adaptation"]["num_prompts"]
            return len(seen) == 2

        _wait_until(both_adapted, limit=120, what="both workers to serve the adapted revision")
        assert adapter in seen and len(set(seen.values())) == 1 and next(iter(seen.values())) > 0
        assert {w["revision"] for w in _live_workers(url)} == {head}
        assert not any(p in log.read_text() for p in ("Natalia sold clips", "fibonacci"))  # never logged
    finally:
        _stop_server(proc)
