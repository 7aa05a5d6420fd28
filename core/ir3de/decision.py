"""What a routing call returns: the chosen expert, how sure, and which tokens decided.

Example:
    >>> d = RouteDecision(expert="math", confidence=0.9, scores={"math": 0.9, "code": 0.1})
    >>> d.expert, d.to_dict()["confidence"]
    ('math', 0.9)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DecidingToken", "RouteDecision"]


class DecidingToken(NamedTuple):
    """One token that took part in a decision.

    Attributes:
        id: vocabulary id.
        text: the token decoded on its own (e.g. ``" equation"``).
        vote: the expert this token's logits favour.
        entropy: the entropy of the token's softmax (lower = more decisive).
        position: index among the prompt's countable tokens.
    """

    id: int
    text: str
    vote: str
    entropy: float
    position: int


@dataclass(frozen=True)
class RouteDecision:
    """The route of one prompt.

    Attributes:
        expert: the expert to send the prompt to (the ``fallback`` when ``fallback_used``).
        confidence: the winning expert's score in [0, 1] (vote share for ``vote``, probability for
            ``avg``/``logprob``); 0 when no token could be counted.
        scores: per-expert scores (sum to 1; all 0 for a prompt with no countable token).
        top_expert: the best-scoring expert before any fallback (``None`` for an empty prompt).
        fallback_used: True when ``expert`` is the fallback (low confidence or no countable token).
        num_tokens: countable tokens the prompt had (after the ``max_tokens`` cap).
        tokens: the tokens that decided, lowest entropy first (decoded lazily, on first access).
    """

    expert: str
    confidence: float
    scores: Mapping[str, float]
    top_expert: str | None = None
    fallback_used: bool = False
    num_tokens: int = 0
    _token_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)
    _positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)
    _votes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)
    _entropy: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    _expert_names: tuple[str, ...] = field(default=(), repr=False, compare=False)
    _tokenizer: Any = field(default=None, repr=False, compare=False)
    _decoded: list[tuple[DecidingToken, ...]] = field(default_factory=list, repr=False, compare=False)

    @property
    def tokens(self) -> tuple[DecidingToken, ...]:
        """The deciding tokens as :class:`DecidingToken` (id, text, vote, entropy, position)."""
        if not self._decoded:
            decode = self._tokenizer.decode if self._tokenizer is not None else (lambda ids: str(ids[0]))
            self._decoded.append(
                tuple(
                    DecidingToken(int(i), decode([int(i)]), self._expert_names[int(v)], float(h), int(p))
                    for i, v, h, p in zip(self._token_ids, self._votes, self._entropy, self._positions)
                )
            )
        return self._decoded[0]

    @property
    def token_ids(self) -> list[int]:
        """Ids of the deciding tokens, lowest entropy first (no decoding)."""
        return [int(i) for i in self._token_ids]

    def to_dict(self, *, with_tokens: bool = True) -> dict[str, Any]:
        """A JSON-serialisable view."""
        out: dict[str, Any] = {
            "expert": self.expert,
            "confidence": self.confidence,
            "scores": dict(self.scores),
            "top_expert": self.top_expert,
            "fallback_used": self.fallback_used,
            "num_tokens": self.num_tokens,
        }
        if with_tokens:
            out["tokens"] = [t._asdict() for t in self.tokens]
        return out
