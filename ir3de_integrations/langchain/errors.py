"""Errors raised by the LangChain adapter (all :class:`ir3de.errors.Ir3deError` subclasses).

Example:
    >>> from ir3de.errors import Ir3deError
    >>> issubclass(ExpertInvocationError, Ir3deError)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ir3de.errors import ExpertError, Ir3deError


class ExpertMismatchError(ExpertError):
    """The router's expert names and the registered LLMs differ.

    Attributes:
        missing: router experts (or the router's fallback) with no registered LLM.
        extra: registered LLMs the router does not know.
    """

    def __init__(
        self, *, missing: Sequence[str], extra: Sequence[str], router_experts: Sequence[str]
    ) -> None:
        self.missing = list(missing)
        self.extra = list(extra)
        parts = []
        if self.missing:
            parts.append(f"missing LLMs for {self.missing}")
        if self.extra:
            parts.append(f"extra LLMs {self.extra} that the router does not know")
        super().__init__(
            f"the router's experts {list(router_experts)} do not match the registered LLMs: "
            + "; ".join(parts)
            + ". Pass one Runnable per router expert (keys = expert names), or add/remove experts on the "
            "router so the names match"
        )


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
