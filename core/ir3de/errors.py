"""Typed errors raised by ir3de.

Every error names what is wrong and how to fix it. They all derive from :class:`Ir3deError`,
and each also derives from the closest built-in exception so that generic ``except ValueError``
handlers keep working.

Example:
    >>> from ir3de.errors import EmptyPromptError
    >>> try:
    ...     raise EmptyPromptError("prompt has no countable token")
    ... except ValueError as e:
    ...     print(type(e).__name__)
    EmptyPromptError
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType


class Ir3deError(Exception):
    """Base class of every error raised by ir3de."""


class MissingDependencyError(Ir3deError, ImportError):
    """An optional package (or a data package) is needed and not installed; the message says the command."""


def require(module: str, purpose: str, install: str) -> ModuleType:
    """Import the optional ``module``, or raise :class:`MissingDependencyError` saying what needs it and
    the command that installs it (the one lazy import of an optional dependency, core and adapters).

    Args:
        module: the dotted module to import (``"pyarrow.parquet"``, ``"ray.data"``).
        purpose: what needs it, the subject of the message (``"reading .parquet files"``).
        install: the command that installs it (``"pip install 'ir3de[ray]'"``).

    Example:
        >>> require("json", "reading JSON", "nothing: it ships with Python").__name__
        'json'
        >>> try:
        ...     require("no_such_module", "the demo", "pip install no-such-module")
        ... except MissingDependencyError as e:
        ...     print(e)
        the demo needs no_such_module, which is not installed (No module named 'no_such_module'); install it with: pip install no-such-module
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if isinstance(e, MissingDependencyError):
            raise
        raise MissingDependencyError(
            f"{purpose} needs {module}, which is not installed ({e}); install it with: {install}"
        ) from e


class EmbeddingSourceError(Ir3deError, ValueError):
    """An embedding source (model id, folder, GGUF file, in-memory model) cannot be read."""


class EmptyPromptError(Ir3deError, ValueError):
    """A prompt has no countable token (empty, whitespace only, or only special tokens) and no fallback."""


class InvalidInputError(Ir3deError, TypeError):
    """An argument has the wrong type (e.g. a prompt that is not a ``str``)."""


class ExpertError(Ir3deError, ValueError):
    """An expert name is unknown, duplicated, or an expert has no text."""


class ExpertNameError(ExpertError):
    """An expert name breaks :data:`EXPERT_NAME_RULE` (the message states the rule)."""


#: What an expert name may be: what a router, its artifact (JSON, folder names), HTTP headers (ASCII
#: only), URL path segments (RFC 3986 unreserved characters, so no escaping), Prometheus labels and
#: log lines all carry verbatim.
EXPERT_NAME_RULE = (
    "an expert name is 1 to 64 ASCII characters: letters, digits, '.', '_' and '-', starting with a "
    "letter or digit (no spaces, slashes, control or non-ASCII characters)"
)
_EXPERT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_expert_name(name: object) -> str:
    """``name`` if it follows :data:`EXPERT_NAME_RULE`, else :class:`ExpertNameError` stating the rule.

    The one name rule of ir3de: ``Router`` (fit, add_expert), the expert registry, the CLI and the
    gateway's admin API all check names here.

    Example:
        >>> check_expert_name("code-review_2")
        'code-review_2'
        >>> try:
        ...     check_expert_name("a/b")
        ... except ExpertNameError as e:
        ...     print(str(e)[:29])
        invalid expert name 'a/b': an
    """
    if isinstance(name, str) and _EXPERT_NAME.fullmatch(name):
        return name
    shown = (
        repr(name)
        if not isinstance(name, str) or len(name) <= 80
        else f"{name[:40]!r}... ({len(name)} chars)"
    )
    raise ExpertNameError(f"invalid expert name {shown}: {EXPERT_NAME_RULE}; pick a name like 'legal-2'")


class UnknownExpertError(ExpertError, KeyError):
    """An expert name that the router does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class NotFittedError(Ir3deError, RuntimeError):
    """The router has no route table yet: call ``fit`` (or load an artifact) first."""


class ArtifactError(Ir3deError, ValueError):
    """A saved router (or stat pack) is missing, corrupted, truncated or inconsistent."""


class ArtifactVersionError(ArtifactError):
    """A saved router was written by a newer format version than this library reads."""


class TokenizerMismatchError(ArtifactError):
    """A tokenizer does not match the route table or statistics it is used with."""


class CorpusError(Ir3deError, ValueError):
    """Domain text cannot be read: a file, pattern, format, field or record is wrong, or a dataset is unknown."""


class ExpertMismatchError(ExpertError):
    """The router's experts (and fallback) and the registered handlers (LLMs, runnables, choices,
    upstreams) differ; the message lists both sides and the fix.

    Attributes:
        missing: router experts (or the router's fallback) with no handler.
        extra: handlers whose name the router does not know.

    Example:
        >>> e = ExpertMismatchError(missing=["code"], extra=["poetry"], router_experts=["math", "code"], kind="LLM")
        >>> str(e).split(": ", 1)[1].split(".")[0]
        "LLMs without an expert: ['poetry']; experts without an LLM: ['code']"
    """

    def __init__(
        self,
        *,
        missing: list[str] | tuple[str, ...],
        extra: list[str] | tuple[str, ...],
        router_experts: list[str] | tuple[str, ...],
        kind: str = "handler",
        fix: str | None = None,
    ) -> None:
        self.missing = list(missing)
        self.extra = list(extra)
        parts = []
        if self.extra:
            parts.append(f"{kind}s without an expert: {self.extra}")
        if self.missing:
            parts.append(f"experts without {_a(kind)}: {self.missing}")
        fix = fix or (
            f"Register one {kind} per router expert (and one for its fallback) under the expert's name, "
            "or add/remove experts so the names match"
        )
        super().__init__(
            f"the router's experts {list(router_experts)} do not match the registered {kind}s: "
            + "; ".join(parts)
            + f". {fix}"
        )


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: 'an LLM', 'a handler', 'an upstream'."""
    vowel_sound = noun[:1].lower() in "aeiou" or (noun[:2].isupper() and noun[:1] in "AEFHILMNORSX")
    return f"{'an' if vowel_sound else 'a'} {noun}"


class MessageError(Ir3deError, ValueError):
    """A chat message is malformed: not a ``{"role", "content"}`` dict or a ``(role, content)`` pair, an
    unknown role, content that is not text, or a conversation with no message that counts."""


class UnknownCallError(Ir3deError, KeyError):
    """Feedback names a routed call (a run id / routing id) that is not among the recent routed calls
    remembered (never routed here, or evicted by newer ones), or an id that covers several routed calls."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""
