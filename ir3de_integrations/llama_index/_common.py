"""Shared glue of the LlamaIndex adapters: loading a router and describing a route.

Nothing here does routing math: every decision comes from :meth:`ir3de.Router.route`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ir3de.decision import RouteDecision
from ir3de.router import Router

__all__ = ["describe_route", "load_router", "route_payload"]

#: How many deciding tokens a selection reason / route report names.
DEFAULT_TOP_TOKENS = 5


def load_router(folder_or_repo: str | Path, **kwargs: Any) -> Router:
    """``ir3de.Router.from_pretrained(folder_or_repo, **kwargs)``: a saved folder or a Hub repo id."""
    return Router.from_pretrained(folder_or_repo, **kwargs)


def deciding_tokens(decision: RouteDecision, top: int = DEFAULT_TOP_TOKENS) -> list[str]:
    """The distinct texts of the lowest-entropy deciding tokens (at most ``top``), lowest entropy first."""
    out: list[str] = []
    for token in decision.tokens:
        if token.text not in out:
            out.append(token.text)
            if len(out) == top:
                break
    return out


def describe_route(decision: RouteDecision, top: int = DEFAULT_TOP_TOKENS) -> str:
    """A one-line human reason: expert, confidence and deciding tokens.

    Example:
        >>> describe_route(router.route("Solve 3x + 5 = 11"))          # doctest: +SKIP
        "ir3de routed to expert 'math' (confidence 0.90; deciding tokens: ' Solve', ' x', ...)"
    """
    if decision.fallback_used:
        if decision.top_expert is None:
            return f"ir3de routed to fallback {decision.expert!r} (the prompt has no countable token)"
        return (
            f"ir3de routed to fallback {decision.expert!r} (top expert {decision.top_expert!r} "
            f"had confidence {decision.confidence:.2f}, below the threshold)"
        )
    tokens = ", ".join(repr(t) for t in deciding_tokens(decision, top))
    return (
        f"ir3de routed to expert {decision.expert!r} (confidence {decision.confidence:.2f}; "
        f"deciding tokens: {tokens or 'none'})"
    )


def route_payload(decision: RouteDecision, top: int = DEFAULT_TOP_TOKENS) -> dict[str, Any]:
    """A JSON-serialisable summary of a decision (what responses and events carry)."""
    return {
        "expert": decision.expert,
        "confidence": float(decision.confidence),
        "scores": {k: float(v) for k, v in decision.scores.items()},
        "top_expert": decision.top_expert,
        "fallback_used": bool(decision.fallback_used),
        "num_tokens": int(decision.num_tokens),
        "tokens": deciding_tokens(decision, top),
    }
