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


class Ir3deError(Exception):
    """Base class of every error raised by ir3de."""


class MissingDependencyError(Ir3deError, ImportError):
    """An optional package (or a data package) is needed and not installed; the message says the command."""


class EmbeddingSourceError(Ir3deError, ValueError):
    """An embedding source (model id, folder, GGUF file, in-memory model) cannot be read."""


class EmptyPromptError(Ir3deError, ValueError):
    """A prompt has no countable token (empty, whitespace only, or only special tokens) and no fallback."""


class InvalidInputError(Ir3deError, TypeError):
    """An argument has the wrong type (e.g. a prompt that is not a ``str``)."""


class ExpertError(Ir3deError, ValueError):
    """An expert name is unknown, duplicated, or an expert has no text."""


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


class MessageError(Ir3deError, ValueError):
    """A chat message is malformed: not a ``{"role", "content"}`` dict or a ``(role, content)`` pair, an
    unknown role, content that is not text, or a conversation with no message that counts."""
