"""Every bad request gets the right status and an OpenAI-style error body (and the openai client's error type)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from gateway_helpers import ServerThread, free_port

from ir3de_integrations.serve.echo import EchoUpstream

MSG = [{"role": "user", "content": "Solve 3x + 5 = 11"}]


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_malformed_json(start_gateway):
    gw = start_gateway()
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=b'{"model": "ir3de", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert "not valid JSON" in _error(r, 400, "invalid_json")["message"]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "ir3de"}, "missing_messages", "messages"),
        ({"model": "ir3de", "messages": []}, "invalid_messages", "messages"),
        ({"model": "ir3de", "messages": ["hi"]}, "invalid_messages", "messages"),
        ({"messages": MSG}, "missing_model", "model"),
        ([1, 2], "invalid_request", None),
    ],
)
def test_invalid_requests(start_gateway, body, code, param):
    gw = start_gateway()
    error = _error(httpx.post(f"{gw.url}/v1/chat/completions", json=body), 400, code)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_missing_messages_with_the_openai_client(start_gateway):
    client = openai.OpenAI(base_url=f"{start_gateway().url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="ir3de", messages=[])
    assert info.value.code == "invalid_messages"


def test_unknown_model(start_gateway):
    client = openai.OpenAI(base_url=f"{start_gateway().url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=MSG)
    assert info.value.code == "model_not_found" and "'gpt-9'" in info.value.message


def test_oversized_body(start_gateway):
    gw = start_gateway(max_body_bytes=4096)
    big = {"model": "ir3de", "messages": [{"role": "user", "content": "x" * 5000}]}
    _error(httpx.post(f"{gw.url}/v1/chat/completions", json=big), 413, "request_too_large")

    def chunked():  # no content-length: the limit holds while reading
        yield json.dumps(big).encode()

    _error(httpx.post(f"{gw.url}/v1/chat/completions", content=chunked()), 413, "request_too_large")


def test_unroutable_text_without_fallback(start_gateway):
    gw = start_gateway()
    body = {"model": "ir3de", "messages": [{"role": "user", "content": "   "}]}
    _error(httpx.post(f"{gw.url}/v1/chat/completions", json=body), 400, "unroutable_messages")


def test_unroutable_text_with_fallback(start_gateway):
    gw = start_gateway(fallback="instructions")
    body = {"model": "ir3de", "messages": [{"role": "user", "content": "   "}]}
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "instructions"


def test_upstream_down(start_gateway):
    gw = start_gateway(upstreams={"math": f"http://127.0.0.1:{free_port()}/v1"})
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="math", messages=MSG, stream=stream)
        assert info.value.status_code == 502 and info.value.code == "upstream_unavailable"
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'ir3de_upstream_errors_total{expert="math",kind="connect"} 2.0' in metrics


def test_upstream_down_takes_the_upstream_fallback(start_gateway):
    gw = start_gateway(
        upstreams={"math": f"http://127.0.0.1:{free_port()}/v1"}, upstream_fallback="instructions"
    )
    prompt = [
        {
            "role": "user",
            "content": "Natalia sold 48 clips in April and half as many in May. How many in all?",
        }
    ]
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "ir3de", "messages": prompt})
    assert r.status_code == 200
    assert r.headers["x-ir3de-expert"] == "math" and r.headers["x-ir3de-upstream-fallback"] == "instructions"
    assert r.json()["choices"][0]["message"]["content"].startswith("instructions: ")


@pytest.fixture
def slow_upstream():
    with ServerThread(EchoUpstream("slow", delay=3.0), timeout_graceful_shutdown=0.1) as server:
        yield server


@pytest.fixture
def failing_upstream():
    with ServerThread(EchoUpstream("broken", status=500)) as server:
        yield server


def test_upstream_timeout_is_504_and_never_hangs(start_gateway, slow_upstream):
    gw = start_gateway(upstreams={"code": f"{slow_upstream.url}/v1"}, timeout=0.3)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, timeout=20)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="code", messages=MSG, stream=stream)
        assert info.value.status_code == 504 and info.value.code == "upstream_timeout"


def test_upstream_5xx_is_502_with_its_message(start_gateway, failing_upstream):
    gw = start_gateway(upstreams={"code": f"{failing_upstream.url}/v1"})
    error = _error(
        httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "code", "messages": MSG}),
        502,
        "upstream_error",
    )
    assert "broken failed on purpose" in error["message"]


def test_unknown_path_and_method(start_gateway):
    gw = start_gateway()
    _error(httpx.get(f"{gw.url}/v2/nothing"), 404)
    _error(httpx.get(f"{gw.url}/v1/chat/completions"), 405)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "invalid_admin_token"),
        ({"authorization": "Bearer wrong"}, 401, "invalid_admin_token"),
        ({"authorization": "Basic s3cret"}, 401, "invalid_admin_token"),
    ],
)
def test_bad_admin_token(start_gateway, monkeypatch, headers, status, code):
    monkeypatch.setenv("GW_TEST_ADMIN", "s3cret")
    gw = start_gateway(admin_token_env="GW_TEST_ADMIN")
    _error(httpx.get(f"{gw.url}/admin/experts", headers=headers), status, code)
    _error(httpx.delete(f"{gw.url}/admin/experts/math", headers=headers), status, code)
    ok = httpx.get(f"{gw.url}/admin/experts", headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and [e["name"] for e in ok.json()["experts"]] == [
        "math",
        "code",
        "instructions",
        "multilingual",
    ]


def test_admin_is_off_unless_configured(start_gateway):
    gw = start_gateway()
    _error(httpx.get(f"{gw.url}/admin/experts", headers={"authorization": "Bearer x"}), 404, "admin_disabled")


def test_router_experts_without_upstream_refuse_to_start(gateway_router):
    from ir3de_integrations.serve import ConfigError, GatewayConfig, create_app

    cfg = GatewayConfig.from_dict({"router": "r", "experts": {"math": "http://127.0.0.1:1/v1"}})
    with pytest.raises(ConfigError, match="have no upstream"):
        create_app(cfg, gateway_router)
