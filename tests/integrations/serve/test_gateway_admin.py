"""Admin API: hot add/update/remove of experts and feedback while traffic flows, with zero failed requests."""

from __future__ import annotations

import asyncio
import threading

import httpx
import openai
import pytest

from ir3de.data.datasets import load_domain

TOKEN = "s3cret-admin"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many clips in total?",
    'def fibonacci(n: int) -> list[int]:\n    """Return the first n Fibonacci numbers."""\n',
    "Write a haiku about autumn. Your entire response must be in lowercase letters and contain no commas.",
    "Wer nicht wagt, der nicht gewinnt — und wer zu spät kommt, den bestraft das Leben.",
]


@pytest.fixture(scope="module")
def medical_texts() -> list[str]:
    return load_domain("medical")[:100]  # [:20] probe, [20:] fit


@pytest.fixture
def admin_gateway(start_gateway, fresh_router, monkeypatch):
    monkeypatch.setenv("GW_TEST_ADMIN", TOKEN)
    server = start_gateway(router=fresh_router, admin_token_env="GW_TEST_ADMIN")
    # the gateway's own router (a copy: admin changes never reach fresh_router, the caller's object)
    return server, server.app.state.gateway.router


class Load:
    """Continuous chat traffic from the real async openai client (``concurrency`` at once) in a thread."""

    def __init__(self, url: str, concurrency: int = 8) -> None:
        self.url, self.concurrency = url, concurrency
        self.ok = 0
        self.failures: list[str] = []
        self.experts: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        client = openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0, timeout=30)

        async def worker(i: int) -> None:
            n = i
            while not self.stop.is_set():
                prompt = PROMPTS[n % len(PROMPTS)]
                n += 1
                try:
                    raw = await client.chat.completions.with_raw_response.create(
                        model="ir3de", messages=[{"role": "user", "content": prompt}]
                    )
                    expert = raw.headers["x-ir3de-expert"]
                    assert raw.parse().choices[0].message.content == f"{expert}: {prompt}"
                    self.experts.append(expert)
                    self.ok += 1
                except Exception as e:  # every failure is reported by the test
                    self.failures.append(repr(e))

        async with client:
            await asyncio.gather(*(worker(i) for i in range(self.concurrency)))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def _wait_for_traffic(load: Load, n: int) -> None:
    start = load.ok
    while load.ok < start + n and not load.failures:
        threading.Event().wait(0.02)


def test_hot_add_and_remove_under_load_with_zero_failures(admin_gateway, medical_texts, echo_upstreams):
    gw, router = admin_gateway
    with Load(gw.url) as load:
        _wait_for_traffic(load, 20)
        r = httpx.post(
            f"{gw.url}/admin/experts",
            headers=AUTH,
            json={
                "name": "medical",
                "description": "health questions",
                "texts": medical_texts[20:],
                "upstream": {"base_url": f"{echo_upstreams['medical'].url}/v1", "model": "medical-model"},
            },
            timeout=120,
        )
        assert r.status_code == 201, r.text
        assert [e["name"] for e in r.json()["experts"]] == [
            "math",
            "code",
            "instructions",
            "multilingual",
            "medical",
        ]
        _wait_for_traffic(load, 20)
        probes = [p for p in medical_texts[:20] if router.route(p).expert == "medical"]
        assert len(probes) >= 10  # the new expert takes most held-out medical prompts
        medical_prompt = probes[0]
        routed = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "ir3de", "messages": [{"role": "user", "content": medical_prompt}]},
        )
        assert routed.status_code == 200 and routed.headers["x-ir3de-expert"] == "medical"
        assert routed.json()["choices"][0]["message"]["content"] == f"medical: {medical_prompt}"
        r = httpx.delete(f"{gw.url}/admin/experts/instructions", headers=AUTH, timeout=120)
        assert r.status_code == 200, r.text
        _wait_for_traffic(load, 20)
        r = httpx.delete(f"{gw.url}/admin/experts/medical", headers=AUTH, timeout=120)
        assert r.status_code == 200, r.text
        _wait_for_traffic(load, 20)
    assert load.failures == []
    assert load.ok >= 80
    assert "instructions" in load.experts  # routed there before its removal
    assert router.experts == ("math", "code", "multilingual")
    gone = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "instructions", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    ids = [m["id"] for m in httpx.get(f"{gw.url}/v1/models").json()["data"]]
    assert ids == ["ir3de", "math", "code", "multilingual"]


def test_add_expert_from_a_stat_pack(admin_gateway, medical_texts, echo_upstreams, smollm2, tmp_path):
    from ir3de.artifacts.stat_packs import StatPack

    gw, router = admin_gateway
    pack = StatPack.compute("medical", medical_texts[20:], smollm2, description="health", progress=False)
    folder = pack.save_pretrained(tmp_path / "medical-pack")
    r = httpx.post(
        f"{gw.url}/admin/experts",
        headers=AUTH,
        json={
            "name": "medical",
            "stat_pack": str(folder),
            "upstream": {"base_url": f"{echo_upstreams['medical'].url}/v1"},
        },
        timeout=120,
    )
    assert r.status_code == 201, r.text
    assert router.statistics["medical"].counts.num_texts == len(medical_texts) - 20
    probe = next(p for p in medical_texts[:20] if router.route(p).expert == "medical")
    routed = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "ir3de", "messages": [{"role": "user", "content": probe}]},
    )
    assert routed.headers["x-ir3de-expert"] == "medical"


def test_update_feedback_and_upstream_change(admin_gateway, echo_upstreams):
    gw, router = admin_gateway
    before = router.statistics["math"].counts.num_texts
    r = httpx.patch(
        f"{gw.url}/admin/experts/math",
        headers=AUTH,
        json={"texts": ["integrate x^2 from 0 to 1"]},
        timeout=120,
    )
    assert r.status_code == 200 and router.statistics["math"].counts.num_texts == before + 1
    feedback = [
        {"prompt": "what is 17 times 23", "expert": "math"},
        {"prompt": "sort a list in python", "expert": "code"},
    ]
    probes = [f["prompt"] for f in feedback] + PROMPTS
    scores_before = [router.route(p).scores for p in probes]
    r = httpx.post(f"{gw.url}/admin/feedback", headers=AUTH, json={"feedback": feedback}, timeout=120)
    assert r.status_code == 200 and r.json()["applied"] == {"math": 1, "code": 1}
    # feedback is learned as traffic (Router.learn): its own block, the corpus statistics unchanged
    assert router.statistics["math"].counts.num_texts == before + 1
    traffic = httpx.get(f"{gw.url}/admin/traffic", headers=AUTH).json()
    assert {n: t["num_prompts"] for n, t in traffic["experts"].items()} == {"math": 1, "code": 1}
    assert traffic["traffic_weight"] == router.config.traffic_weight
    assert router.route(probes[0]).scores["math"] > scores_before[0]["math"]
    # forget one expert's traffic, then all: the routing is back to before the feedback, exactly
    r = httpx.delete(f"{gw.url}/admin/traffic/code", headers=AUTH, timeout=120)
    assert r.status_code == 200 and list(r.json()["experts"]) == ["math"]
    r = httpx.delete(f"{gw.url}/admin/traffic", headers=AUTH, timeout=120)
    assert r.status_code == 200 and r.json()["experts"] == {} and router.traffic == {}
    assert [router.route(p).scores for p in probes] == scores_before
    r = httpx.delete(f"{gw.url}/admin/traffic/legal", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "expert_not_found"
    # point 'math' at another upstream: requests naming it now reach that one
    r = httpx.patch(
        f"{gw.url}/admin/experts/math",
        headers=AUTH,
        json={"upstream": {"base_url": f"{echo_upstreams['code'].url}/v1"}},
    )
    assert r.status_code == 200
    answer = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "math", "messages": [{"role": "user", "content": "2+2"}]},
    )
    assert answer.json()["choices"][0]["message"]["content"] == "code: 2+2"


def test_admin_refusals(admin_gateway, echo_upstreams):
    gw, router = admin_gateway
    up = {"base_url": f"{echo_upstreams['medical'].url}/v1"}
    cases = [
        (
            httpx.post,
            "/admin/experts",
            {"name": "math", "texts": ["x"], "upstream": up},
            409,
            "expert_exists",
        ),
        (httpx.post, "/admin/experts", {"name": "new", "texts": [], "upstream": up}, 400, "invalid_texts"),
        (
            httpx.post,
            "/admin/experts",
            {"name": "new", "texts": ["x"], "upstream": {"base_url": "ftp://x"}},
            400,
            "invalid_upstream",
        ),
        (
            httpx.post,
            "/admin/feedback",
            {"feedback": [{"prompt": "x", "expert": "legal"}]},
            404,
            "expert_not_found",
        ),
        (httpx.patch, "/admin/experts/legal", {"texts": ["x"]}, 404, "expert_not_found"),
    ]
    for method, path, body, status, code in cases:
        r = method(f"{gw.url}{path}", headers=AUTH, json=body)
        assert r.status_code == status and r.json()["error"]["code"] == code, (path, r.text)
    r = httpx.delete(f"{gw.url}/admin/experts/legal", headers=AUTH)
    assert r.status_code == 404
    assert router.experts == ("math", "code", "instructions", "multilingual")
