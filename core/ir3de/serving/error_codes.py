"""One mapping from an ir3de error to what each surface answers: an OpenAI-style ``code`` and HTTP
status (the gateway), and the wording of a fix for someone who typed a command or an HTTP body
rather than a Python call (the CLI, the gateway's admin API).

The core's messages name Python arguments (``abstain='general'``, ``configure(fallback=...)``);
:func:`for_surface` rewrites those phrases for the surface, so every error keeps one message.

Example:
    >>> from ir3de.errors import UnknownExpertError
    >>> error_code(UnknownExpertError("no expert 'legal'")), http_status(UnknownExpertError("x"))
    ('expert_not_found', 404)
    >>> for_surface("pass abstain='general' (any name) or configure(fallback=...)", "cli")
    'pass --abstain NAME (any name), or save the router with a fallback (ir3de fit ... --fallback NAME)'
"""

from __future__ import annotations

from typing import Literal

from ir3de import errors

__all__ = ["ERROR_CODES", "HINTS", "Surface", "error_code", "for_surface", "http_status"]

Surface = Literal["cli", "http"]

#: error type -> (OpenAI-style code, HTTP status); the first entry the error is an instance of wins,
#: so subclasses come before their bases.
ERROR_CODES: tuple[tuple[type[errors.Ir3deError], str, int], ...] = (
    (errors.UnknownExpertError, "expert_not_found", 404),
    (errors.ExpertMismatchError, "expert_mismatch", 400),
    (errors.ExpertError, "invalid_expert", 400),
    (errors.UnknownCallError, "call_not_found", 404),
    (errors.EmptyPromptError, "empty_prompt", 400),
    (errors.MessageError, "invalid_messages", 400),
    (errors.InvalidInputError, "invalid_input", 400),
    (errors.NotFittedError, "router_not_fitted", 409),
    (errors.ArtifactVersionError, "artifact_version", 400),
    (errors.TokenizerMismatchError, "tokenizer_mismatch", 400),
    (errors.ArtifactError, "invalid_artifact", 400),
    (errors.CorpusError, "invalid_corpus", 400),
    (errors.EmbeddingSourceError, "invalid_embeddings", 400),
    (errors.MissingDependencyError, "missing_dependency", 500),
    (errors.Ir3deError, "ir3de_error", 400),
)

#: (what a Python caller is told, what the CLI says instead, what the HTTP API says instead)
HINTS: tuple[tuple[str, str, str], ...] = (
    (
        "pass abstain='general' (any name) or configure(fallback=...)",
        "pass --abstain NAME (any name), or save the router with a fallback (ir3de fit ... --fallback NAME)",
        'send "abstain": NAME in the body, or set fallback: NAME in the gateway config',
    ),
    (
        "pass a non-empty prompt or set Router(fallback='name') to route such prompts",
        "pass a non-empty prompt, or --fallback NAME to route such prompts",
        "send a message with text, or set fallback: NAME in the gateway config",
    ),
    ("set Router(fallback='name')", "pass --fallback NAME", "set fallback: NAME in the gateway config"),
    ("Router(fallback='name')", "--fallback NAME", "fallback: NAME in the gateway config"),
    (
        "pass fallback='general' (or any name)",
        "pass --fallback NAME",
        "set fallback: NAME in the gateway config",
    ),
    ("or use Router(level='token')", "or refit with --level token", "or refit the router with level='token'"),
    (
        "call fit({...}) or Router.from_pretrained(folder)",
        "fit one with `ir3de fit`",
        "serve a fitted router",
    ),
)


def error_code(error: BaseException) -> str:
    """The OpenAI-style ``code`` of an error (snake_case; ``internal_error`` for a non-ir3de one)."""
    for kind, code, _ in ERROR_CODES:
        if isinstance(error, kind):
            return code
    return "internal_error"


def http_status(error: BaseException) -> int:
    """The HTTP status the gateway answers an error with (500 for a non-ir3de one)."""
    for kind, _, status in ERROR_CODES:
        if isinstance(error, kind):
            return status
    return 500


def for_surface(message: str, surface: Surface) -> str:
    """``message`` with the Python phrases of :data:`HINTS` replaced by the ``surface``'s own."""
    column = 1 if surface == "cli" else 2
    for hint in HINTS:
        message = message.replace(hint[0], hint[column])
    return message
