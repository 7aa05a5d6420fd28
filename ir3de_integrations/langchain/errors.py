"""Errors raised by the LangChain adapter (all :class:`ir3de.errors.Ir3deError` subclasses).

``ExpertMismatchError`` is :class:`ir3de.errors.ExpertMismatchError`, shared by every adapter.

Example:
    >>> from ir3de.errors import Ir3deError
    >>> issubclass(ExpertInvocationError, Ir3deError)
    True
"""

from __future__ import annotations

from typing import Any

from ir3de.errors import ExpertMismatchError, Ir3deError

__all__ = [
    "ExpertInvocationError",
    "ExpertMismatchError",
]  # ExpertMismatchError: the core's, for every adapter


class ExpertInvocationError(Ir3deError, RuntimeError):
    """The chosen expert raised; ``__cause__`` is its exception.

    Attributes:
        expert: the name of the expert that was chosen.
        decision: the routing decision as a dict (``None`` for a forced route).
    """

    def __init__(self, expert: str, cause: BaseException, decision: dict[str, Any] | None = None) -> None:
        self.expert = expert
        self.decision = decision
        super().__init__(f"expert {expert!r} raised {type(cause).__name__}: {cause}")
