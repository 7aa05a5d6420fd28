"""``Idempotency-Key`` on admin changes: a retried change applies once, the retry gets the first answer.

Every ``POST``/``PATCH``/``DELETE`` under ``/admin`` may carry an ``Idempotency-Key`` header (any
string up to 255 printable ASCII characters, e.g. a UUID the client makes once per change). The first
request with that key runs; its answer (status, JSON body, the revision it committed) is remembered —
with ``state_dir`` in the revision store (``idempotency/``, so every worker and a restarted gateway
know it), else in memory — for :data:`REMEMBER_SECONDS`. A retry with the same key, method and path
gets that answer again (header ``idempotent-replayed: true``) and changes nothing; a retry that
arrives while the first still runs waits for it. The same key with another body is a 422.
Answers with a 5xx status are not remembered (the change did not happen: retry it). The key is also
committed with the change; a retry of a change whose worker died between commit and answer is a 409
``idempotent_change_committed`` naming the revision, never a second application.

Example:
    >>> import httpx, uuid                                                          # doctest: +SKIP
    >>> key = str(uuid.uuid4())                                                     # doctest: +SKIP
    >>> for _ in range(2):  # the second call is a replay: one revision, one answer  # doctest: +SKIP
    ...     httpx.post(url + "/admin/feedback", json=body,
    ...                headers={"authorization": "Bearer t", "idempotency-key": key})
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from typing import Any

from starlette.concurrency import run_in_threadpool

from .errors import GatewayError, error_response

__all__ = ["CURRENT_KEY", "HEADER", "REMEMBER_SECONDS", "IdempotentAdmin"]

#: The idempotency record of the admin change running in this context (``None``: no key). With a
#: ``state_dir`` the commit stores it in the revision's extras, atomically with the change, so a retry
#: whose first answer died with its worker (killed between commit and answer) is still not applied twice.
CURRENT_KEY: ContextVar[str | None] = ContextVar("ir3de_idempotency_key", default=None)

HEADER = "idempotency-key"
#: How long an answer is remembered (a day: longer than any client's retry policy).
REMEMBER_SECONDS = 24 * 3600.0
_METHODS = frozenset({"POST", "PATCH", "DELETE"})
_KEPT_HEADERS = frozenset({b"content-type", b"x-ir3de-revision", b"x-ir3de-worker"})


class IdempotentAdmin:
    """ASGI middleware that makes admin changes idempotent under an ``Idempotency-Key`` header."""

    def __init__(self, app: Any, gateway: Any) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _METHODS
            or not scope["path"].startswith("/admin/")
        ):
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(HEADER.encode())
        if raw is None:
            await self.app(scope, receive, send)
            return
        key = raw.decode("latin-1").strip()
        if not key or len(key) > 255 or not key.isascii() or not key.isprintable():
            error = GatewayError(
                400,
                "Idempotency-Key must be 1 to 255 printable ASCII characters (e.g. a UUID made once per change)",
                code="invalid_idempotency_key",
                param=HEADER,
            )
            await error_response(error)(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            more = message.get("more_body", False)
        digest = hashlib.sha256(body).hexdigest()
        record = f"{scope['method']} {scope['path']} {key}"
        state = self.gateway.state
        lock = state.key_lock(record)
        await run_in_threadpool(lock.acquire)
        try:
            found = await run_in_threadpool(state.recall, record)
            if found is not None:
                await self._replay(found, digest, send)
                return
            sent: dict[str, Any] = {"body": b""}

            async def replay_body() -> Any:
                nonlocal body
                chunk, body = body, b""
                return {"type": "http.request", "body": chunk, "more_body": False}

            async def capture(message: Any) -> None:
                if message["type"] == "http.response.start":
                    sent["status"] = message["status"]
                    sent["headers"] = [
                        [k.decode("latin-1"), v.decode("latin-1")]
                        for k, v in message.get("headers", [])
                        if k.lower() in _KEPT_HEADERS
                    ]
                elif message["type"] == "http.response.body":
                    sent["body"] += message.get("body", b"")
                await send(message)

            token = CURRENT_KEY.set(record)
            try:
                await self.app(scope, replay_body, capture)
            finally:
                CURRENT_KEY.reset(token)
            status = sent.get("status", 500)
            if status < 500 and status != 401:
                answer = {
                    "status": status,
                    "headers": sent["headers"],
                    "body": sent["body"].decode("utf-8", "replace"),
                    "request_sha256": digest,
                }
                await run_in_threadpool(state.remember, record, answer, REMEMBER_SECONDS)
        finally:
            lock.release()

    @staticmethod
    async def _replay(found: dict[str, Any], digest: str, send: Any) -> None:
        if found.get("request_sha256") != digest:
            error = GatewayError(
                422,
                "this Idempotency-Key was used for another request body; make a new key per change",
                code="idempotency_key_reused",
                param=HEADER,
            )
            response = error_response(error)
            await send({"type": "http.response.start", "status": 422, "headers": response.raw_headers})
            await send({"type": "http.response.body", "body": response.body})
            return
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in found.get("headers", [])]
        headers.append((b"idempotent-replayed", b"true"))
        body = str(found.get("body", "")).encode("utf-8")
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": int(found["status"]), "headers": headers})
        await send({"type": "http.response.body", "body": body})
