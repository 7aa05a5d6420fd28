"""The prompts a gateway worker routed, kept (opt-in, bounded, in memory, never logged) to adapt on.

Adaptation (:meth:`ir3de.Router.adapt`) learns the served prompts themselves, without labels. The
gateway keeps them only when its config says so — ``adapt_capture: N`` keeps at most the ``N`` most
recent routed prompts (``0``, the default, keeps none) — and only until they are adapted on:
``POST /admin/adapt`` (or every ``adapt_every`` prompts) takes them out of the buffer, and what stays
in the router afterwards is counts and Gram rows, not text. The buffer lives in the worker's memory
(each worker keeps the prompts it routed); it is never written to a log, a revision or a response,
and ``POST /admin/forget-adaptation`` empties it.

What is kept of a chat request is its last user turn: what the request asks this expert to answer
(as in feedback, :mod:`ir3de.serving.feedback`); requests that name an expert directly are not routed
and not kept.

Example:
    >>> buffer = CapturedPrompts(maxsize=2)
    >>> buffer.add("Solve 2x = 4"), buffer.add("def f(): pass"), buffer.add("hola")
    (1, 2, 2)
    >>> buffer.take(), len(buffer), buffer.dropped
    (['def f(): pass', 'hola'], 0, 1)
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from ir3de.serving.feedback import user_text

from .routing import message_text

__all__ = ["CapturedPrompts", "request_prompt"]


def request_prompt(messages: Sequence[Any]) -> str:
    """The text a routed chat request contributes to adaptation: its last user turn ('' if none).

    Example:
        >>> request_prompt([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
        '2+2?'
    """
    return user_text((m.get("role") if isinstance(m, dict) else None, message_text(m)) for m in messages)


class CapturedPrompts:
    """A bounded, thread-safe buffer of routed prompts (oldest dropped first when full).

    Args:
        maxsize: how many prompts are kept; ``0`` keeps none (capture off).

    The buffer never shows its text: its ``repr`` and :meth:`describe` give counts only.

    Example:
        >>> CapturedPrompts(0).add("kept?"), CapturedPrompts(0).enabled
        (0, False)
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = int(maxsize)
        self._lock = threading.Lock()
        self._prompts: deque[str] = deque(maxlen=max(self.maxsize, 1))
        self.captured = 0
        """Prompts kept since the start (adapted on, dropped, or still pending)."""
        self.dropped = 0
        """Prompts pushed out unused because the buffer was full."""
        self.taken = 0
        """Prompts handed to adaptation."""

    @property
    def enabled(self) -> bool:
        """Whether prompts are kept at all (``adapt_capture`` > 0)."""
        return self.maxsize > 0

    def add(self, prompt: str) -> int:
        """Keep ``prompt`` (blank ones are skipped); returns how many prompts are pending now."""
        if not self.enabled:
            return 0
        with self._lock:
            if prompt.strip():
                if len(self._prompts) == self.maxsize:
                    self.dropped += 1
                self._prompts.append(prompt)
                self.captured += 1
            return len(self._prompts)

    def take(self) -> list[str]:
        """Every pending prompt, oldest first; the buffer is empty afterwards."""
        with self._lock:
            prompts = list(self._prompts)
            self._prompts.clear()
            self.taken += len(prompts)
            return prompts

    def clear(self) -> int:
        """Forget every pending prompt unused; returns how many were forgotten."""
        with self._lock:
            n = len(self._prompts)
            self._prompts.clear()
            return n

    def __len__(self) -> int:
        return len(self._prompts)

    def describe(self) -> dict[str, Any]:
        """Counts only (what ``GET /admin/adaptation`` shows): never the text."""
        with self._lock:
            return {
                "enabled": self.enabled,
                "maxsize": self.maxsize,
                "pending": len(self._prompts),
                "captured": self.captured,
                "taken": self.taken,
                "dropped": self.dropped,
            }

    def __repr__(self) -> str:
        return f"CapturedPrompts({len(self)} pending of maxsize {self.maxsize})"
