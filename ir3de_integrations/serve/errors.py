"""OpenAI-style error responses: every failure of the gateway answers ``{"error": {...}}``.

The body has the shape the official ``openai`` client parses (``message``, ``type``, ``param``,
``code``), so applications see ``openai.BadRequestError``, ``openai.NotFoundError``… with a message
that names the problem and the fix.

Example:
    >>> e = GatewayError(404, "model 'gpt-9' does not exist", code="model_not_found", param="model")
    >>> e.body()["error"]["code"], e.status
    ('model_not_found', 404)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import Response

from ir3de.errors import Ir3deError

__all__ = ["GatewayError", "error_body", "error_response"]

#: The OpenAI ``type`` for each status the gateway answers with.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class GatewayError(Ir3deError):
    """A request the gateway answers with an error status and an OpenAI-style body.

    Args:
        status: the HTTP status.
        message: what is wrong and how to fix it.
        code: a short machine-readable code (``model_not_found``, ``upstream_timeout``…).
        param: the request field at fault, when there is one.
        kind: the OpenAI ``type`` (derived from the status when omitted).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.code = code
        self.param = param
        self.kind = kind or _TYPES.get(self.status, "api_error")

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {"message", "type", "param", "code"}}``."""
        return error_body(self.message, kind=self.kind, code=self.code, param=self.param)


def error_body(
    message: str, *, kind: str = "api_error", code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """A Starlette ``Response`` for ``error`` (JSON body, the error's status)."""
    from starlette.responses import Response

    return Response(
        json.dumps(error.body(), ensure_ascii=False),
        status_code=error.status,
        media_type="application/json",
        headers=headers,
    )
