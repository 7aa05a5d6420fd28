"""The gateway answers the real openai client (sync, async, streaming) with routed completions."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

MATH = (
    "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many clips in total?"
)
CODE = 'def fibonacci(n: int) -> list[int]:\n    """Return the first n Fibonacci numbers."""\n'
GERMAN = "Wer nicht wagt, der nicht gewinnt — und wer zu spät kommt, den bestraft das Leben."


def _client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_sync_client_routes_each_prompt_to_its_expert(start_gateway, gateway_router):
    gw = start_gateway()
    client = _client(gw)
    for prompt in (MATH, CODE, GERMAN):
        expected = gateway_router.route(prompt).expert
        raw = client.chat.completions.with_raw_response.create(
            model="ir3de", messages=[{"role": "user", "content": prompt}]
        )
        completion = raw.parse()
        assert raw.headers["x-ir3de-expert"] == expected
        assert 0.0 < float(raw.headers["x-ir3de-confidence"]) <= 1.0
        # the echo upstream of that expert answered, and got the expert's upstream model name
        assert completion.choices[0].message.content == f"{expected}: {prompt}"
        assert completion.model == f"{expected}-model"
    assert {gateway_router.route(p).expert for p in (MATH, CODE, GERMAN)} == {"math", "code", "multilingual"}


def test_naming_an_expert_goes_straight_there(start_gateway):
    client = _client(start_gateway())
    raw = client.chat.completions.with_raw_response.create(
        model="code", messages=[{"role": "user", "content": MATH}]
    )
    assert raw.headers["x-ir3de-expert"] == "code"
    assert raw.parse().choices[0].message.content == f"code: {MATH}"


def test_decision_in_body_on_request(start_gateway, gateway_router):
    client = _client(start_gateway())
    completion = client.chat.completions.create(
        model="ir3de", messages=[{"role": "user", "content": MATH}], extra_body={"ir3de": {"decision": True}}
    )
    decision = completion.model_extra["ir3de"]
    expected = gateway_router.route_conversation([{"role": "user", "content": MATH}])  # the core's decision
    assert decision["expert"] == expected.expert == gateway_router.route(MATH).expert == decision["served_by"]
    assert decision["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    plain = client.chat.completions.create(model="ir3de", messages=[{"role": "user", "content": MATH}])
    assert "ir3de" not in (plain.model_extra or {})


def test_streaming_passes_chunks_through(start_gateway, gateway_router):
    client = _client(start_gateway())
    expected = gateway_router.route(CODE).expert
    with client.chat.completions.with_streaming_response.create(
        model="ir3de", messages=[{"role": "user", "content": CODE}], stream=True
    ) as response:
        assert response.headers["x-ir3de-expert"] == expected
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"{expected}: {CODE}"
    # one chunk per word from the echo upstream, plus the closing chunk: relayed, not merged
    assert len(chunks) == len(f"{expected}: {CODE}".split(" ")) + 1


def test_streaming_decision_chunk_first(start_gateway, gateway_router):
    client = _client(start_gateway())
    stream = client.chat.completions.create(
        model="ir3de",
        messages=[{"role": "user", "content": GERMAN}],
        stream=True,
        extra_headers={"x-ir3de-decision": "true"},
    )
    chunks = list(stream)
    assert (
        chunks[0].choices == []
        and chunks[0].model_extra["ir3de"]["expert"] == gateway_router.route(GERMAN).expert
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks[1:]).startswith("multilingual: ")


def test_async_client_concurrent_requests(start_gateway, gateway_router):
    gw = start_gateway()
    prompts = [MATH, CODE, GERMAN] * 10

    async def run() -> list[tuple[str, str]]:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        async with client:

            async def one(p: str) -> tuple[str, str]:
                raw = await client.chat.completions.with_raw_response.create(
                    model="ir3de", messages=[{"role": "user", "content": p}]
                )
                return raw.headers["x-ir3de-expert"], raw.parse().choices[0].message.content

            return await asyncio.gather(*(one(p) for p in prompts))

    results = asyncio.run(run())
    for prompt, (expert, content) in zip(prompts, results):
        assert expert == gateway_router.route(prompt).expert
        assert content == f"{expert}: {prompt}"


def test_async_streaming(start_gateway):
    gw = start_gateway()

    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        async with client:
            stream = await client.chat.completions.create(
                model="math", messages=[{"role": "user", "content": "2 + 2"}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()) == "math: 2 + 2"


def test_models_health_ready(start_gateway):
    gw = start_gateway()
    ids = [m.id for m in _client(gw).models.list()]
    assert ids == ["ir3de", "math", "code", "instructions", "multilingual"]
    assert httpx.get(f"{gw.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.url}/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_a_session_keeps_its_expert_and_reports_switches(start_gateway, gateway_router):
    """A session keeps a previous expert; a new topic moves the conversation (x-ir3de-expert follows)."""
    client = _client(start_gateway())
    history = [{"role": "user", "content": MATH}, {"role": "assistant", "content": "72"}]
    first = client.chat.completions.create(
        model="ir3de", messages=history[:1], user="s-1", extra_body={"ir3de": {"decision": True}}
    )
    assert first.model_extra["ir3de"]["switched"] is False
    second = client.chat.completions.create(
        model="ir3de",
        messages=[*history, {"role": "user", "content": CODE}],
        user="s-1",
        extra_body={"ir3de": {"decision": True}},
    )
    decision = second.model_extra["ir3de"]
    assert decision["expert"] == gateway_router.route(CODE).expert == "code"
    assert decision["switched"] is True


def test_low_confidence_goes_to_the_fallback(start_gateway, gateway_router):
    prompt = "hello there"
    d = gateway_router.route_conversation([{"role": "user", "content": prompt}])  # what the gateway routes
    client = _client(start_gateway(fallback="instructions", threshold=min(1.0, d.confidence + 1e-3)))
    raw = client.chat.completions.with_raw_response.create(
        model="ir3de", messages=[{"role": "user", "content": prompt}]
    )
    assert raw.headers["x-ir3de-expert"] == "instructions"
    assert raw.parse().choices[0].message.content == f"instructions: {prompt}"


def test_metrics_count_decisions_and_routing_time(start_gateway, gateway_router):
    gw = start_gateway()
    client = _client(gw)
    for _ in range(3):
        client.chat.completions.create(model="ir3de", messages=[{"role": "user", "content": CODE}])
    text = httpx.get(f"{gw.url}/metrics").text
    assert 'ir3de_decisions_total{expert="code"} 3.0' in text
    assert "ir3de_routing_seconds_count 3.0" in text
    assert 'ir3de_upstream_seconds_count{expert="code"} 3.0' in text
    assert 'ir3de_requests_total{endpoint="chat",status="200"} 3.0' in text


@pytest.mark.parametrize("margin", [0.0, 0.9])
def test_conversation_options_of_the_config_reach_the_core(start_gateway, gateway_router, margin):
    """The gateway's decision is the core's route_conversation with the config's options and the
    session's stored expert; a high margin keeps an ambiguous follow-up with the session's expert."""
    from ir3de.routing.conversation import ConversationSettings

    client = _client(start_gateway(margin=margin, half_life=1.0, session_ttl=600))
    first = client.chat.completions.create(
        model="ir3de",
        messages=[{"role": "user", "content": MATH}],
        user="s-m",
        extra_body={"ir3de": {"decision": True}},
    )
    previous = first.model_extra["ir3de"]["expert"]
    chat = [
        {"role": "user", "content": MATH},
        {"role": "assistant", "content": "72"},
        {"role": "user", "content": "hello there"},
    ]
    second = client.chat.completions.create(
        model="ir3de", messages=chat, user="s-m", extra_body={"ir3de": {"decision": True}}
    ).model_extra["ir3de"]
    settings = ConversationSettings(margin=margin, half_life=1.0)
    expected = gateway_router.route_conversation(chat, previous_expert=previous, settings=settings)
    assert second["expert"] == expected.expert and second["switched"] == (expected.expert != previous)
    assert second["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    if margin == 0.9:
        assert second["expert"] == previous == "math" and second["switched"] is False


def test_an_upstream_the_router_cannot_choose_is_served_by_name(start_gateway, echo_upstreams):
    gw = start_gateway(upstreams={"medical": f"{echo_upstreams['medical'].url}/v1"})
    client = _client(gw)
    assert [m.id for m in client.models.list()][-1] == "medical"
    answer = client.chat.completions.create(model="medical", messages=[{"role": "user", "content": "2+2"}])
    assert answer.choices[0].message.content == "medical: 2+2"
