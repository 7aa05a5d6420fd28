"""Every bad request gets the right status and an OpenAI-style error body (and the openai client's error type)."""

from __future__ import annotations

import asyncio
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


class ClosingUpstream:
    """A raw HTTP/1.1 upstream on loopback that closes connections without answering, the way a server
    closing an idle keep-alive connection looks to a client whose request crossed the close.

    ``answer_first``: each connection's first request is answered (a chat completion, or an SSE stream when
    it asked for one), every later one on the same connection is read and the connection closed; ``False``:
    every request is read and its connection closed. ``requests`` counts the requests read.
    """

    def __init__(self, *, answer_first: bool) -> None:
        import threading

        self.answer_first = answer_first
        self.requests = 0
        self.connections: set[asyncio.Task] = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _serve(self, ready) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        ready.set()
        self.loop.run_forever()

    async def _connection(self, reader, writer) -> None:
        self.connections.add(asyncio.current_task())
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = json.loads(await reader.readexactly(length))
                self.requests += 1
                if served or not self.answer_first:
                    return
                served += 1
                writer.write(self._answer(request))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    @staticmethod
    def _answer(request: dict) -> bytes:
        message = {"role": "assistant", "content": "answered"}
        if request.get("stream"):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": request["model"]}
            events = [
                {**chunk, "choices": [{"index": 0, "delta": message, "finish_reason": None}]},
                {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            ]
            body = (
                b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
            )
            kind = b"text/event-stream"
        else:
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            body = json.dumps(
                {
                    "id": "c",
                    "object": "chat.completion",
                    "created": 0,
                    "model": request["model"],
                    "choices": [choice],
                }
            ).encode()
            kind = b"application/json"
        return b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
            kind,
            len(body),
            body,
        )

    def close(self) -> None:
        import asyncio

        async def shutdown() -> None:
            self.server.close()
            for connection in self.connections:
                connection.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def closing_upstream(request):
    upstream = ClosingUpstream(answer_first=request.param)
    yield upstream
    upstream.close()


@pytest.mark.parametrize("closing_upstream", [True], indirect=True)
@pytest.mark.parametrize("stream", [False, True])
def test_a_pooled_connection_the_upstream_closed_is_resent_once(start_gateway, closing_upstream, stream):
    """The upstream closes the gateway's pooled keep-alive connection as the next request goes out on it
    (uvicorn and vLLM close connections idle for 5 s): the request is sent again on a fresh connection,
    and the caller never sees the race."""
    gw = start_gateway(upstreams={"math": closing_upstream.url})
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, timeout=20)
    for _ in range(3):  # the first on a fresh connection; each later one crosses the close once
        if stream:
            pieces = client.chat.completions.create(model="math", messages=MSG, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == "answered"
        else:
            answer = client.chat.completions.create(model="math", messages=MSG)
            assert answer.choices[0].message.content == "answered"
    assert closing_upstream.requests == 5  # 3 answered, 2 resent
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'ir3de_upstream_errors_total{expert="math",kind="stale_connection"} 2.0' in metrics
    assert 'kind="protocol"' not in metrics


@pytest.mark.parametrize("closing_upstream", [False], indirect=True)
def test_a_fresh_connection_closed_without_an_answer_is_a_502_and_never_resent(
    start_gateway, closing_upstream
):
    gw = start_gateway(upstreams={"math": closing_upstream.url})
    for stream in (False, True):
        r = httpx.post(
            f"{gw.url}/v1/chat/completions", json={"model": "math", "messages": MSG, "stream": stream}
        )
        assert "broke the connection" in _error(r, 502, "upstream_error")["message"]
    assert closing_upstream.requests == 2
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'ir3de_upstream_errors_total{expert="math",kind="protocol"} 2.0' in metrics
    assert "stale_connection" not in metrics
