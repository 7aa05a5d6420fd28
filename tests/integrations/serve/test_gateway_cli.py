"""`ir3de serve` as a real process with a YAML config; one upstream generates with the real SmolLM2-135M."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from gateway_helpers import ServerThread, SmolLM2Upstream, free_port

ROOT = Path(__file__).resolve().parents[3]
HAIKU = "Write a haiku about autumn. Your entire response must be in lowercase letters and contain no commas."


def test_flags_override_the_config_file(tmp_path):
    from ir3de.cli.main import build_parser

    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        "router: ./r\nthreshold: 0.3\nfallback: b\nexperts:\n"
        "  a: {base_url: 'http://127.0.0.1:1/v1', model: m-a}\n  b: 'http://127.0.0.1:2/v1'\n"
    )
    args = build_parser().parse_args(
        [
            "serve",
            "--config",
            str(cfg),
            "--port",
            "9123",
            "--upstream",
            "a=http://127.0.0.1:3/v1",
            "--upstream-key-env",
            "b=B_KEY",
        ]
    )
    from ir3de_integrations.serve.cli import build_config

    config = build_config(args)
    assert config.port == 9123 and config.threshold == 0.3 and config.fallback == "b"
    assert config.experts["a"].base_url == "http://127.0.0.1:3/v1" and config.experts["a"].model == "m-a"
    assert config.experts["b"].model == "b" and config.experts["b"].api_key_env == "B_KEY"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("router: r\nexperts: {a: {base_url: 'localhost:1'}}\n", "base_url must be an http"),
        ("router: r\nthreshold: 0.5\nexperts: {a: 'http://h/v1'}\n", "needs a fallback"),
        ("router: r\nfallback: z\nexperts: {a: 'http://h/v1'}\n", "'z' has no upstream"),
        ("router: r\nport_number: 1\n", "unknown key"),
        ("router: r\nmargin: 1.5\n", "margin must be in"),
        ("router: r\nhalf_life: -1\n", "half_life must be"),
        ("router: r\nsession_ttl: 0\n", "session_ttl must be"),
        ("router: [r\n", "not valid YAML"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path, text, match):
    from ir3de_integrations.serve import ConfigError, GatewayConfig

    path = tmp_path / "gw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        GatewayConfig.from_file(path)


@contextlib.contextmanager
def _ir3de_serve(config: Path, *flags: str, **env: str) -> Iterator[tuple[str, list[str]]]:
    """``ir3de serve --config config *flags`` as a process on a free port, ready: its URL, and a list
    that holds its output once it has stopped (on leaving the block)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ir3de.cli", "serve", "--config", str(config), "--port", str(port), *flags],
        cwd=ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url, output = f"http://127.0.0.1:{port}", []
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ir3de serve did not become ready"
            time.sleep(0.2)
        yield url, output
    finally:
        proc.terminate()
        output.append(proc.communicate(timeout=30)[0])


@pytest.fixture(scope="module")
def smollm2_upstream():
    with ServerThread(SmolLM2Upstream(max_new_tokens=8)) as server:
        yield server


@pytest.mark.slow
def test_ir3de_serve_routes_to_a_real_smollm2_upstream(
    tmp_path, gateway_router_folder, gateway_router, echo_upstreams, smollm2_upstream
):
    assert gateway_router.route(HAIKU).expert == "instructions"
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"router: {gateway_router_folder}\n"
        "experts:\n"
        f"  math: {{base_url: '{echo_upstreams['math'].url}/v1'}}\n"
        f"  code: {{base_url: '{echo_upstreams['code'].url}/v1'}}\n"
        f"  instructions: {{base_url: '{smollm2_upstream.url}/v1', model: smollm2-135m, api_key_env: SMOL_KEY}}\n"
        f"  multilingual: {{base_url: '{echo_upstreams['multilingual'].url}/v1'}}\n"
    )
    with _ir3de_serve(config, SMOL_KEY="local") as (url, output):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": HAIKU}]
        raw = client.chat.completions.with_raw_response.create(model="ir3de", messages=messages, max_tokens=8)
        completion = raw.parse()
        assert raw.headers["x-ir3de-expert"] == "instructions"
        assert completion.model == "smollm2-135m"
        text = completion.choices[0].message.content
        assert text.strip()
        stream = client.chat.completions.create(model="ir3de", messages=messages, max_tokens=8, stream=True)
        pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        assert len(pieces) >= 2  # token by token from the model, relayed as they came
        assert "".join(pieces) == text  # greedy: the same words as the non-streamed answer
        echo = client.chat.completions.create(
            model="ir3de", messages=[{"role": "user", "content": "def f(x): return x"}]
        )
        assert echo.choices[0].message.content == "code: def f(x): return x"
    out = output[0]
    # structured logs: one JSON line per request, decisions but no prompt text (log_prompts is off)
    lines = [line for line in out.splitlines() if line.startswith('{"event": "request"')]
    assert len(lines) == 3 and all('"expert": ' in line for line in lines)
    assert "haiku" not in out


def _get_health(sock) -> bytes:
    """One keep-alive ``GET /health`` on an open socket: the raw answer (b"" when the server closed it)."""
    sock.sendall(b"GET /health HTTP/1.1\r\nhost: gateway\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:  # read the whole answer, so the next one starts clean
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_ir3de_serve_keeps_idle_client_connections_for_keep_alive_seconds(tmp_path, gateway_router_folder):
    # uvicorn's default (5 s) equals the OpenAI SDK's own expiry, so a client could reuse a connection
    # just as the gateway closes it; `keep_alive` (--keep-alive) sets how long an idle one stays open
    import socket

    config = tmp_path / "gateway.yaml"
    experts = "".join(
        f"  {name}: 'http://127.0.0.1:1/v1'\n" for name in ("math", "code", "instructions", "multilingual")
    )
    config.write_text(f"router: {gateway_router_folder}\nexperts:\n{experts}")  # never called: /health only
    with _ir3de_serve(config, "--keep-alive", "7") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with (
            socket.create_connection(("127.0.0.1", port)) as kept,
            socket.create_connection(("127.0.0.1", port)) as idle,
        ):
            kept.settimeout(30)
            idle.settimeout(30)
            assert _get_health(kept).startswith(b"HTTP/1.1 200") and _get_health(idle).startswith(
                b"HTTP/1.1 200"
            )
            time.sleep(6)  # past uvicorn's default 5 s: still open
            assert _get_health(kept).startswith(b"HTTP/1.1 200")
            time.sleep(2.5)  # `idle` has now been idle 8.5 s, past keep_alive: the gateway closed it
            assert idle.recv(1) == b""


def test_keep_alive_must_be_whole_seconds():
    from ir3de_integrations.serve import ConfigError, GatewayConfig

    assert GatewayConfig(router="r").keep_alive == 75
    for bad in (0, 2.5, True, 4000):
        with pytest.raises(ConfigError, match="keep_alive must be"):
            GatewayConfig(router="r", keep_alive=bad)
