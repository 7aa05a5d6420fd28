"""What a routing call returns: the chosen expert, how sure, and which tokens decided.

A decision is built on the latency path, so everything a caller may never look at (the per-expert
score dict, the decoded deciding tokens; with many experts the scores and confidence themselves) is
computed on first access.

Example:
    >>> d = RouteDecision(expert="math", confidence=0.9, scores={"math": 0.9, "code": 0.1})
    >>> d.expert, d.to_dict()["confidence"]
    ('math', 0.9)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
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
        probabilities: the token's softmax probability for every expert (its evidence).
    """

    id: int
    text: str
    vote: str
    entropy: float
    position: int
    probabilities: Mapping[str, float] = MappingProxyType({})


_EMPTY = np.zeros(0, np.int64)


class RouteDecision:
    """The route of one prompt (treat it as read-only).

    Attributes:
        expert: the expert to send the prompt to (the ``fallback`` when ``fallback_used``).
        confidence: the winning expert's score in [0, 1] (vote share for ``vote``, probability for
            ``avg``/``logprob``); 0 when no token could be counted. Given as ``None`` with a
            ``scorer``, it is the largest of the scores, computed on first access.
        scores: per-expert scores (sum to 1; all 0 for a prompt with no countable token).
        top_expert: the best-scoring expert before any fallback (``None`` for an empty prompt).
        fallback_used: True when ``expert`` is the fallback (low confidence or no countable token).
        num_tokens: countable tokens the prompt had (after the ``max_tokens`` cap).
        tokens: the tokens that decided, lowest entropy first (decoded on first access).
    """

    __slots__ = (
        "_confidence",
        "_entropy_table",
        "_explain",
        "_log_prob_table",
        "_names",
        "_positions",
        "_score_values",
        "_scorer",
        "_scores",
        "_table",
        "_token_ids",
        "_tokenizer",
        "_tokens",
        "_vote_table",
        "expert",
        "fallback_used",
        "num_tokens",
        "top_expert",
    )

    def __init__(
        self,
        expert: str,
        confidence: float | None,
        scores: Mapping[str, float] | None = None,
        top_expert: str | None = None,
        fallback_used: bool = False,
        num_tokens: int = 0,
        *,
        expert_names: Sequence[str] = (),
        score_values: np.ndarray | list[float] | None = None,
        token_ids: np.ndarray = _EMPTY,
        positions: np.ndarray = _EMPTY,
        votes: np.ndarray | None = None,
        entropy: np.ndarray | None = None,
        log_probs: np.ndarray | None = None,
        table: Any = None,
        tokenizer: Any = None,
        explain: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
        scorer: Callable[[], np.ndarray] | None = None,
    ) -> None:
        if confidence is None and scorer is None:
            raise ValueError("a decision needs a confidence, or a scorer to compute it from")
        self.expert = expert
        self._confidence = confidence
        self.top_expert = top_expert
        self.fallback_used = fallback_used
        self.num_tokens = num_tokens
        self._scores = dict(scores) if scores is not None else None
        self._names = tuple(expert_names) if expert_names else tuple(self._scores or ())
        self._score_values = score_values
        self._token_ids = token_ids
        self._positions = positions
        self._vote_table = votes  # per-vocabulary votes/entropy of the table that decided
        self._entropy_table = entropy
        self._log_prob_table = log_probs
        # or the RouteTable that decided: its per-id arrays are read only when tokens are asked for
        self._table = table
        self._tokenizer = tokenizer
        self._tokens: tuple[DecidingToken, ...] | None = None
        # ``explain() -> (token_ids, positions)`` defers the deciding tokens to first access
        self._explain = explain
        # ``scorer() -> (D,) scores`` defers the scores (and, when ``confidence`` is None, the confidence)
        self._scorer = scorer

    @property
    def confidence(self) -> float:
        """The winning expert's score (see the class docstring)."""
        if self._confidence is None:
            values = self._values()
            self._confidence = float(np.max(values)) if len(values) else 0.0
        return self._confidence

    @confidence.setter
    def confidence(self, value: float) -> None:
        self._confidence = value

    def _values(self) -> np.ndarray | list[float]:
        """The score values in expert order (computed by the scorer on first call)."""
        scorer = self._scorer  # read once: another thread may be computing the same values
        if scorer is not None:
            self._score_values = scorer()
            self._scorer = None
        if self._score_values is not None:
            return self._score_values
        if self._scores is not None:
            return list(self._scores.values())
        return [0.0] * len(self._names)

    def _deciding(self) -> tuple[np.ndarray, np.ndarray]:
        if self._explain is not None:
            self._token_ids, self._positions = self._explain()
            self._explain = None
        return self._token_ids, self._positions

    @property
    def scores(self) -> dict[str, float]:
        """Per-expert scores, in expert order."""
        if self._scores is None:
            values = self._values()
            self._scores = dict(zip(self._names, values if isinstance(values, list) else values.tolist()))
        return self._scores

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` best experts with their scores, best first (ties: the expert fitted first).

        Reads the score array directly (one partial sort), without building the per-expert dict, so
        it costs little with thousands of experts.

        Example:
            >>> d = RouteDecision("math", 0.6, {"math": 0.6, "code": 0.3, "law": 0.1})
            >>> d.top(2)
            [('math', 0.6), ('code', 0.3)]
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        values = np.asarray(self._values(), np.float64)
        k = min(int(k), values.size)
        if k == 0:
            return []
        best = np.argpartition(-values, k - 1)[:k] if k < values.size else np.arange(values.size)
        best = best[np.lexsort((best, -values[best]))]  # score descending, then expert order
        return [(self._names[int(i)], float(values[int(i)])) for i in best]

    @property
    def token_ids(self) -> list[int]:
        """Ids of the deciding tokens, lowest entropy first (no decoding)."""
        ids: list[int] = self._deciding()[0].tolist()
        return ids

    @property
    def tokens(self) -> tuple[DecidingToken, ...]:
        """The deciding tokens as :class:`DecidingToken` (id, text, vote, entropy, position)."""
        if self._tokens is None:
            ids, positions = self._deciding()
            table = self._table
            if table is not None and ids.size:
                votes, entropy = table.votes[ids], table.entropy[ids]
                probs = np.exp(table.log_prob_rows(ids))
            elif ids.size and self._vote_table is not None and self._entropy_table is not None:
                votes, entropy = self._vote_table[ids], self._entropy_table[ids]
                log_probs = self._log_prob_table
                probs = np.exp(log_probs[ids]) if log_probs is not None else np.zeros((ids.size, 0))
            else:
                self._tokens = ()
                return self._tokens
            decode = self._tokenizer.decode if self._tokenizer is not None else (lambda x: str(x[0]))
            self._tokens = tuple(
                DecidingToken(
                    int(i),
                    decode([int(i)]),
                    self._names[int(v)],
                    float(h),
                    int(p),
                    MappingProxyType(dict(zip(self._names, row.tolist()))),
                )
                for i, v, h, p, row in zip(ids, votes, entropy, positions, probs)
            )
        return self._tokens

    def _key(self) -> tuple[Any, ...]:
        return (
            self.expert,
            self.confidence,
            self.scores,
            self.top_expert,
            self.fallback_used,
            self.num_tokens,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RouteDecision):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        scores = ", ".join(f"{k}: {v:.3f}" for k, v in self.scores.items())
        extra = ", fallback_used=True" if self.fallback_used else ""
        return (
            f"RouteDecision(expert={self.expert!r}, confidence={self.confidence:.3f}, scores={{{scores}}}, "
            f"num_tokens={self.num_tokens}{extra})"
        )

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
            out["tokens"] = [dict(t._asdict(), probabilities=dict(t.probabilities)) for t in self.tokens]
        return out
