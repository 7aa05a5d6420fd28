"""Route a multi-turn conversation: per-turn evidence, decayed history, role weights, stickiness.

The token router has no context, so a conversation is routed from the same per-token table as a
prompt, with no forward pass and nothing fitted:

1. **Per-turn evidence.** Every message that counts is routed as its own prompt by the router's
   selector, and its evidence is the selector's own: the mean of the turn's token logit rows
   (``avg``), the summed log-probabilities of its ``k`` lowest-entropy tokens (``topk``/``all`` +
   ``logprob``) or its token votes (``vote``). One batched table lookup for all turns.
2. **Weights.** A message's weight is its role weight times a geometric decay in its age, counted in
   user turns: ``weight = role_weight · 0.5 ** (age / half_life)``, where ``age`` is the number of
   user messages after it (the last user message and anything after it have age 0; the previous
   user message and the assistant reply to it have age 1). System messages are left out by default;
   with ``include_system=True`` they count with the user weight and do not decay (they frame every
   turn). Tool messages count as assistant messages.
3. **Conversation evidence.** ``avg``: the mean of the turn means weighted by weight × countable
   tokens — the decayed mean over all the conversation's tokens, so a turn counts with its length as
   it does for the additive selectors (a single turn gives exactly :meth:`Router.route`'s evidence; a
   short domain-neutral follow-up moves the route little, a new long question moves it a lot, where
   plain per-turn means would let a one-word turn weigh like a long question);
   ``logprob``: the weighted sum of the turns' summed log-probabilities (a naive-Bayes product with
   older turns tempered); ``vote``: weighted vote counts. Scores are ``softmax(evidence / T)`` with the router's temperature (vote shares for
   ``vote``), as for one prompt.
4. **Stickiness.** Given the session's previous expert, the router switches only when the top
   expert's score beats the previous expert's score by more than ``margin`` (hysteresis, in score
   units, so it means the same for every selector). The decision says whether it switched and why;
   :mod:`ir3de.serving.sessions` remembers each session's expert between turns.

``half_life=0, assistant_weight=0, margin=0`` is last-message routing exactly;
``half_life=inf, margin=0`` weighs the whole conversation evenly.

Example:
    >>> messages = [                                                              # doctest: +SKIP
    ...     {"role": "user", "content": "Solve 3x + 5 = 11"},
    ...     {"role": "assistant", "content": "x = 2"},
    ...     {"role": "user", "content": "thanks! can you explain the second step?"},
    ... ]
    >>> d = router.route_conversation(messages, previous_expert="math")            # doctest: +SKIP
    >>> d.expert, d.switched, d.reason                                               # doctest: +SKIP
    ('math', False, "kept 'math': it is the top expert")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ir3de.decision import RouteDecision
from ir3de.errors import EmptyPromptError, MessageError
from ir3de.routing.prompts import encode_prompts
from ir3de.routing.selectors import select_batch

if TYPE_CHECKING:
    from ir3de.config import RouterConfig
    from ir3de.fitting.pipeline import RoutingState


class ConversationRouter(Protocol):
    """What conversation routing reads of an :class:`ir3de.Router` (structural, so this module sits
    below ``router.py`` and never imports it): the routing state (table and tokenizer) and the
    settings."""

    @property
    def state(self) -> RoutingState: ...

    config: RouterConfig


__all__ = [
    "ROLE_ALIASES",
    "ConversationDecision",
    "ConversationSettings",
    "TurnEvidence",
    "normalize_messages",
    "route_conversation",
    "turn_weights",
]

#: Accepted role names → the canonical role (``user``, ``assistant``, ``system``, ``tool``).
ROLE_ALIASES: Mapping[str, str] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}

# Defaults chosen on the tuning half of benchmarks/conversations.py (docs/conversations.md).
DEFAULT_HALF_LIFE = 0.5
DEFAULT_USER_WEIGHT = 1.0
DEFAULT_ASSISTANT_WEIGHT = 0.5
DEFAULT_MARGIN = 0.2


@dataclass(frozen=True)
class ConversationSettings:
    """How a conversation is turned into one route.

    Attributes:
        half_life: turns after which an earlier message's evidence counts half (``0``: only the last
            user message and what follows it; ``math.inf``: no decay).
        user_weight: weight of user messages (and of included system messages).
        assistant_weight: weight of assistant (and tool) messages; ``0`` ignores them.
        include_system: count system (``developer``) messages; they do not decay.
        margin: the score lead (in ``[0, 1)``) the top expert needs over the previous expert to
            switch; ``0`` switches whenever another expert leads.

    Example:
        >>> ConversationSettings(half_life=3, margin=0.1).half_life
        3.0
        >>> ConversationSettings.last_message().margin
        0.0
    """

    half_life: float = DEFAULT_HALF_LIFE
    user_weight: float = DEFAULT_USER_WEIGHT
    assistant_weight: float = DEFAULT_ASSISTANT_WEIGHT
    include_system: bool = False
    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        for name in ("half_life", "user_weight", "assistant_weight", "margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.half_life < 0:
            raise ValueError(
                f"half_life must be >= 0 turns (0: last message only, math.inf: no decay), got {self.half_life}"
            )
        for name in ("user_weight", "assistant_weight"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.user_weight == 0 and self.assistant_weight == 0:
            raise ValueError("user_weight and assistant_weight are both 0: no message would count")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be in [0, 1) (a lead in scores), got {self.margin}")
        if not isinstance(self.include_system, bool):
            raise ValueError(f"include_system must be True or False, got {self.include_system!r}")

    @classmethod
    def last_message(cls) -> ConversationSettings:
        """Route on the last user message alone, without stickiness (what ``route(last_text)`` does)."""
        return cls(half_life=0.0, assistant_weight=0.0, margin=0.0)

    @classmethod
    def whole(cls, *, assistant_weight: float = 1.0) -> ConversationSettings:
        """Every user (and, with ``assistant_weight``, assistant) message weighs the same; no stickiness."""
        return cls(half_life=math.inf, assistant_weight=assistant_weight, margin=0.0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (``half_life`` ``inf`` stays a float)."""
        return {
            "half_life": self.half_life,
            "user_weight": self.user_weight,
            "assistant_weight": self.assistant_weight,
            "include_system": self.include_system,
            "margin": self.margin,
        }


def resolve_settings(
    settings: ConversationSettings | Mapping[str, Any] | None, **options: Any
) -> ConversationSettings:
    """``settings`` (default: :class:`ConversationSettings`) with every non-``None`` option replaced."""
    if settings is None:
        base = ConversationSettings()
    elif isinstance(settings, ConversationSettings):
        base = settings
    elif isinstance(settings, Mapping):
        base = ConversationSettings(**settings)
    else:
        raise ValueError(
            f"settings must be a ConversationSettings or a dict of its fields, got {type(settings).__name__}"
        )
    changes = {k: v for k, v in options.items() if v is not None}
    return replace(base, **changes) if changes else base


# ---------------------------------------------------------------------------------------------- messages


def _content_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts = []
        for part in content:  # OpenAI / LangChain content blocks: keep the text ones
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    raise MessageError(
        f"message #{index} has content of type {type(content).__name__}; content must be a str "
        "(or a list of text blocks)"
    )


def _role(role: Any, index: int) -> str:
    name = getattr(role, "value", role)  # str enums such as LlamaIndex's MessageRole
    if isinstance(name, str) and name.lower() in ROLE_ALIASES:
        return ROLE_ALIASES[name.lower()]
    raise MessageError(
        f"message #{index} has role {role!r}; use one of {sorted(ROLE_ALIASES)} "
        "('human'/'ai' are aliases of 'user'/'assistant')"
    )


def normalize_messages(messages: Any) -> list[tuple[str, str]]:
    """``messages`` as ``[(canonical role, text), ...]``.

    Accepts dicts ``{"role": ..., "content": ...}`` and ``(role, content)`` pairs; roles may be
    ``user``/``human``, ``assistant``/``ai``, ``system``/``developer`` or ``tool``/``function``;
    content may be a str, ``None`` or a list of text blocks.

    Raises:
        MessageError: not a list, an empty list, or a malformed message (the message says which).

    Example:
        >>> normalize_messages([("human", "hi"), {"role": "ai", "content": "hello"}])
        [('user', 'hi'), ('assistant', 'hello')]
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise MessageError(
            f"messages must be a list of {{'role', 'content'}} dicts or (role, content) pairs, got "
            f"{type(messages).__name__}; to route one prompt use router.route(text), or pass "
            "[{'role': 'user', 'content': text}]"
        )
    if not messages:
        raise MessageError("the conversation is empty: pass at least one user message")
    out: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if isinstance(message, Mapping):
            if "role" not in message or "content" not in message:
                raise MessageError(
                    f"message #{i} lacks {'role' if 'role' not in message else 'content'}: dicts need "
                    "'role' and 'content' keys"
                )
            role, content = message["role"], message["content"]
        elif isinstance(message, Sequence) and not isinstance(message, (str, bytes)) and len(message) == 2:
            role, content = message
        else:
            raise MessageError(
                f"message #{i} is a {type(message).__name__}; each message must be a "
                "{'role', 'content'} dict or a (role, content) pair"
            )
        out.append((_role(role, i), _content_text(content, i)))
    return out


def turn_weights(roles: Sequence[str], settings: ConversationSettings) -> np.ndarray:
    """Weight of every message (by canonical role): role weight × 0.5 ** (age / half_life).

    ``age`` = user messages after the message. System messages weigh ``user_weight`` with no decay
    when included, else 0.

    Example:
        >>> turn_weights(["user", "assistant", "user"], ConversationSettings(half_life=1, assistant_weight=0.5))
        array([0.5 , 0.25, 1.  ])
    """
    n = len(roles)
    weights = np.zeros(n, np.float64)
    age = 0
    for i in range(n - 1, -1, -1):
        role = roles[i]
        if role == "system":
            weights[i] = settings.user_weight if settings.include_system else 0.0
            continue
        if settings.half_life == math.inf:
            decay = 1.0
        elif settings.half_life == 0:
            decay = 1.0 if age == 0 else 0.0
        else:
            decay = 0.5 ** (age / settings.half_life)
        base = settings.user_weight if role == "user" else settings.assistant_weight
        weights[i] = base * decay
        if role == "user":
            age += 1
    return weights


# ---------------------------------------------------------------------------------------------- decision


@dataclass(frozen=True, slots=True)
class TurnEvidence:
    """How one message counted.

    Attributes:
        index: the message's position in the conversation.
        role: canonical role.
        weight: its weight (role weight × decay).
        num_tokens: its countable tokens.
        top_expert: the expert its evidence alone favours (``None`` without countable tokens).
    """

    index: int
    role: str
    weight: float
    num_tokens: int
    top_expert: str | None


class ConversationDecision(RouteDecision):
    """A :class:`~ir3de.decision.RouteDecision` for a conversation, plus how stickiness decided.

    Attributes:
        previous_expert: the expert the caller passed as the session's previous one (or ``None``).
        switched: True when ``expert`` differs from a given ``previous_expert``.
        margin: ``scores[top_expert] - scores[previous_expert]`` (``None`` when the previous expert is
            not one of the router's experts or there is none).
        required_margin: the lead needed to switch (the settings' ``margin``).
        reason: one line saying why this expert.
        turns: per message that counted, a :class:`TurnEvidence` (computed on first access).
        settings: the :class:`ConversationSettings` used.
    """

    __slots__ = (
        "_turn_data",
        "_turns",
        "margin",
        "previous_expert",
        "reason",
        "required_margin",
        "settings",
        "switched",
    )

    def __init__(
        self,
        *args: Any,
        previous_expert: str | None,
        switched: bool,
        margin: float | None,
        required_margin: float,
        reason: str,
        settings: ConversationSettings,
        turn_data: tuple[Any, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.previous_expert = previous_expert
        self.switched = switched
        self.margin = margin
        self.required_margin = required_margin
        self.reason = reason
        self.settings = settings
        self._turn_data = turn_data
        self._turns: tuple[TurnEvidence, ...] | None = None

    @property
    def turns(self) -> tuple[TurnEvidence, ...]:
        if self._turns is None:
            if not self._turn_data:
                self._turns = ()
            else:
                indices, roles, weights, counts, evidence, names = self._turn_data
                tops = np.argmax(evidence, axis=1) if evidence.size else np.zeros(0, np.int64)
                self._turns = tuple(
                    TurnEvidence(int(i), r, float(w), int(n), names[int(t)] if n > 0 else None)
                    for i, r, w, n, t in zip(indices, roles, weights, counts, tops)
                )
        return self._turns

    def _key(self) -> tuple[Any, ...]:
        return (*super()._key(), self.previous_expert, self.switched, self.margin, self.reason)

    def __repr__(self) -> str:
        base = super().__repr__()[len("RouteDecision(") : -1]
        return f"ConversationDecision({base}, switched={self.switched}, reason={self.reason!r})"

    def to_dict(self, *, with_tokens: bool = True) -> dict[str, Any]:
        out = super().to_dict(with_tokens=with_tokens)
        out.update(
            previous_expert=self.previous_expert,
            switched=self.switched,
            margin=self.margin,
            required_margin=self.required_margin,
            reason=self.reason,
            settings=self.settings.to_dict(),
        )
        return out


def _softmax(z: np.ndarray, temperature: float) -> np.ndarray:
    z = z / temperature
    z = z - z.max()
    p = np.exp(z)
    out: np.ndarray = p / p.sum()
    return out


def _combine(
    evidence: np.ndarray,
    weights: np.ndarray,
    selector: str,
    combine: str,
    temperature: float,
    tokens: float = 0.0,
    evidence_tokens: float = 0.0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Conversation evidence and scores from per-turn evidence; ``None`` when nothing counts.

    ``tokens`` is the weighted count of countable tokens behind the evidence: the evidence prior of
    :func:`ir3de.routing.calibration.evidence_scores` tempers it as it tempers one prompt of that many tokens
    (temperature ``T · (1 + evidence_tokens / tokens)``), so a one-message chat scores as ``route``.
    """
    total = float(weights.sum())
    if total <= 0:
        return None
    if evidence_tokens and tokens > 0:
        temperature = temperature * (1.0 + evidence_tokens / tokens)
    if selector == "avg":
        combined = weights @ evidence / total
        return combined, _softmax(combined, temperature)
    combined = weights @ evidence
    if combine == "vote":
        mass = float(combined.sum())
        if mass <= 0:
            return None
        return combined, combined / mass
    return combined, _softmax(combined, temperature)


def route_conversation(
    router: ConversationRouter,
    messages: Any,
    *,
    previous_expert: str | None = None,
    settings: ConversationSettings | Mapping[str, Any] | None = None,
    half_life: float | None = None,
    user_weight: float | None = None,
    assistant_weight: float | None = None,
    include_system: bool | None = None,
    margin: float | None = None,
) -> ConversationDecision:
    """Route a conversation with ``router`` (see the module docstring for the definition).

    Keyword options override the matching fields of ``settings``.

    Raises:
        MessageError: malformed messages.
        EmptyPromptError: no user message, or no countable token in any weighted message, and no
            previous expert to keep and no fallback configured.

    Example:
        >>> d = route_conversation(router, [("user", "def f(x):"), ("ai", "..."), ("user", "shorter?")],
        ...                        previous_expert="code")                                # doctest: +SKIP
    """
    chosen = resolve_settings(
        settings,
        half_life=half_life,
        user_weight=user_weight,
        assistant_weight=assistant_weight,
        include_system=include_system,
        margin=margin,
    )
    if previous_expert is not None and not isinstance(previous_expert, str):
        raise MessageError(f"previous_expert must be an expert name (str) or None, got {previous_expert!r}")
    turns = normalize_messages(messages)
    weights = turn_weights([role for role, _ in turns], chosen)
    if not any(role == "user" for role, _ in turns):
        weights[:] = 0.0  # nothing to route without a user message: like an empty prompt
    counted = np.flatnonzero(weights > 0)
    state = router.state
    config = router.config
    names = state.experts
    table = state.table
    temperature = config.effective_temperature
    ids, lengths = (
        encode_prompts(state.tokenizer, [turns[i][1] for i in counted], config.max_tokens)
        if counted.size
        else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    )
    sel = select_batch(
        ids,
        lengths,
        table,
        selector=config.selector,
        k=config.k,
        combine=config.combine,
        temperature=temperature,
    )
    has_tokens = sel.num_countable > 0
    w = weights[counted] * has_tokens
    # mean logits are per token: a turn counts with its tokens, as summed log-probabilities and votes do
    mass = w * sel.num_countable if config.selector == "avg" else w
    combined = _combine(
        sel.evidence,
        mass,
        config.selector,
        config.combine,
        temperature,
        tokens=float(w @ sel.num_countable),
        evidence_tokens=config.effective_evidence_tokens,
    )
    turn_data = (
        counted,
        [turns[i][0] for i in counted],
        weights[counted],
        sel.num_countable,
        sel.evidence,
        names,
    )
    prev_index = names.index(previous_expert) if previous_expert in names else None
    num_tokens = int(sel.num_countable[w > 0].sum())
    common: dict[str, Any] = {
        "previous_expert": previous_expert,
        "required_margin": chosen.margin,
        "settings": chosen,
        "turn_data": turn_data,
    }

    if combined is None:  # nothing countable in any weighted message
        if previous_expert is not None:
            return ConversationDecision(
                previous_expert,
                0.0,
                None,
                None,
                False,
                0,
                expert_names=names,
                switched=False,
                margin=None,
                reason=f"kept {previous_expert!r}: no message has a countable token",
                **common,
            )
        if config.fallback is None:
            raise EmptyPromptError(
                "no message of the conversation that counts has a countable token (no user message, or only "
                "empty/whitespace/special-token text); pass a non-empty user message, a previous_expert to "
                "keep, or set Router(fallback='name')"
            )
        return ConversationDecision(
            config.fallback,
            0.0,
            None,
            None,
            True,
            0,
            expert_names=names,
            switched=False,
            margin=None,
            reason="fallback: no message has a countable token",
            **common,
        )

    _, scores = combined
    best = int(np.argmax(scores))
    top = names[best]
    fallback_used = False
    lead: float | None = None
    if prev_index is None:
        winner = best
        if previous_expert is None:
            reason = f"{top!r} is the top expert (no previous expert)"
        else:
            reason = (
                f"{top!r} is the top expert (previous {previous_expert!r} is not an expert of this router)"
            )
    elif best == prev_index:
        winner, lead = best, 0.0
        reason = f"kept {top!r}: it is the top expert"
    else:
        lead = float(scores[best] - scores[prev_index])
        if lead > chosen.margin:
            winner = best
            reason = (
                f"switched to {top!r}: leads {previous_expert!r} by {lead:.3f} > margin {chosen.margin:.3f}"
            )
        else:
            winner = prev_index
            reason = (
                f"kept {previous_expert!r}: {top!r} leads by only {lead:.3f} <= margin {chosen.margin:.3f}"
            )
    confidence = float(scores[winner])
    expert = names[winner]
    if winner == best and config.fallback is not None and confidence < config.threshold:
        expert, fallback_used = config.fallback, True
        reason += (
            f"; fallback {config.fallback!r}: confidence {confidence:.3f} < threshold {config.threshold}"
        )
    switched = previous_expert is not None and expert != previous_expert
    offsets = sel.selected_offsets
    keep = [j for j in range(counted.size) if w[j] > 0][::-1]  # latest message first
    token_ids = np.concatenate([sel.selected_ids[offsets[j] : offsets[j + 1]] for j in keep])
    positions = np.concatenate([sel.selected_positions[offsets[j] : offsets[j + 1]] for j in keep])
    return ConversationDecision(
        expert,
        confidence,
        None,
        top,
        fallback_used,
        num_tokens,
        expert_names=names,
        score_values=scores,
        token_ids=token_ids,
        positions=positions,
        table=table,
        tokenizer=state.tokenizer,
        switched=switched,
        margin=lead,
        reason=reason,
        **common,
    )
