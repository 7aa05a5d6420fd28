"""Hostile input, refused with a 400 before it reaches the router or an upstream.

* :func:`load_json` parses a request body: invalid JSON, nesting deeper than :data:`MAX_DEPTH` (50k
  nested brackets would otherwise raise ``RecursionError``) and strings with lone surrogates
  (``"\\ud800"``: valid JSON, but no UTF-8 text, so they cannot be forwarded upstream or tokenized)
  each answer an OpenAI-style 400 that names the problem.
* :func:`header_value` puts an expert name into an HTTP header: ASCII names as they are, others
  percent-encoded (UTF-8), since headers carry latin-1 only. Names created through ir3de are ASCII
  (:data:`ir3de.errors.EXPERT_NAME_RULE`); older artifacts may hold others.

Example:
    >>> load_json(b'{"a": [1, 2]}')
    {'a': [1, 2]}
    >>> header_value("数学")
    '%E6%95%B0%E5%AD%A6'
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from .errors import GatewayError

__all__ = ["MAX_DEPTH", "header_value", "load_json"]

#: The deepest nesting of objects and arrays a request body may have (OpenAI tool schemas need ~10).
MAX_DEPTH = 64


def load_json(body: bytes, *, what: str = "the request body") -> Any:
    """``body`` parsed as JSON, or a 400 :class:`GatewayError` (invalid JSON, too deep, lone surrogates).

    Example:
        >>> load_json(b'[' * 100 + b']' * 100)
        Traceback (most recent call last):
        ...
        ir3de_integrations.serve.errors.GatewayError: the request body nests objects/arrays deeper than 64 levels; flatten it
    """
    if _depth_exceeds(body, MAX_DEPTH):
        raise GatewayError(
            400, f"{what} nests objects/arrays deeper than {MAX_DEPTH} levels; flatten it", code="too_deep"
        )
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise GatewayError(
            400, f"{what} is not valid JSON ({e}); send a JSON object", code="invalid_json"
        ) from None
    _check_text(data, what)
    return data


def _depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (a linear scan, no recursion)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def _check_text(data: Any, what: str) -> None:
    """400 when a string (key or value) anywhere in ``data`` is not encodable as UTF-8."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: list[str] = [item]
        elif isinstance(item, dict):
            strings = [k for k in item if isinstance(k, str)]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise GatewayError(
                    400,
                    f"{what} holds a string with a lone surrogate ({text[e.start : e.end]!r} at {e.start}), "
                    "which is not text; send valid UTF-8 (pair surrogates in \\u escapes)",
                    code="invalid_text",
                ) from None


def header_value(name: str) -> str:
    """``name`` as an HTTP header value: as it is when ASCII, else percent-encoded UTF-8."""
    return name if name.isascii() and name.isprintable() else quote(name, safe="")
