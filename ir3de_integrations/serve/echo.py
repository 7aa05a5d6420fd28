"""An instant OpenAI-compatible upstream for smoke tests and overhead benchmarks (no model).

It answers ``POST /v1/chat/completions`` at once with ``"<name>: <last user message>"`` (streamed as
server-sent events word by word when ``"stream": true``) and lists itself on ``GET /v1/models``. A
plain ASGI app — no framework between the socket and the answer — so a benchmark through it measures
the gateway, not the upstream.

Run one::

    python -m ir3de_integrations.serve.echo --name math --port 8001

Example:
    >>> app = EchoUpstream("math")                         # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, port=8001)        # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

__all__ = ["EchoUpstream"]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class EchoUpstream:
    """An ASGI app that echoes the last user message, prefixed with its ``name``.

    Args:
        name: put in front of every answer (tells a test which upstream served it).
        delay: seconds to wait before answering (to exercise timeouts).
        status: answer every chat request with this error status instead (to exercise failures).
    """

    def __init__(self, name: str = "echo", *, delay: float = 0.0, status: int | None = None) -> None:
        self.name = name
        self.delay = float(delay)
        self.status = status
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        data: dict[str, Any]  # a JSON body
        if method == "GET" and path.endswith("/models"):
            data = {
                "object": "list",
                "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "echo"}],
            }
            return await self._send(send, 200, _JSON, json.dumps(data).encode())
        if method != "POST" or not path.endswith("/chat/completions"):
            return await self._send(
                send, 404, _JSON, b'{"error": {"message": "not found", "type": "not_found"}}'
            )
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status is not None:
            err = {
                "error": {"message": f"{self.name} failed on purpose", "type": "server_error", "code": None}
            }
            return await self._send(send, self.status, _JSON, json.dumps(err).encode())
        request = json.loads(body)
        text = ""
        for m in reversed(request.get("messages") or []):
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                text = m["content"]
                break
        answer = f"{self.name}: {text}"
        model = request.get("model", self.name)
        created = int(time.time())
        if not request.get("stream"):
            data = {
                "id": "chatcmpl-echo",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(answer.split()),
                          "total_tokens": len(text.split()) + len(answer.split())},
            }  # fmt: skip
            return await self._send(send, 200, _JSON, json.dumps(data).encode())
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        words = answer.split(" ")
        for i, word in enumerate(words):
            delta: dict[str, Any] = {"content": word if i == 0 else " " + word}
            if i == 0:
                delta["role"] = "assistant"
            chunk = {"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                    "more_body": True,
                }
            )
        last = {"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}  # fmt: skip
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n",
            }
        )

    @staticmethod
    async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description="an instant OpenAI-compatible echo upstream")
    p.add_argument("--name", default="echo")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--delay", type=float, default=0.0)
    args = p.parse_args()
    uvicorn.run(
        EchoUpstream(args.name, delay=args.delay), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
