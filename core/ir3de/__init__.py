"""ir3de — route each prompt to the best domain-expert LLM with IR3DE, a linear ridge-regression router.

The router collapses to a per-token lookup table and its statistics are token histograms, so routing
costs microseconds, needs no LLM call and no labelled preference data, and experts can be added or
removed one at a time.

Example:
    >>> from ir3de import Router, TokenEmbeddings                     # doctest: +SKIP
    >>> router = Router(embeddings=TokenEmbeddings.default())
    >>> router.fit({"math": math_texts, "code": code_texts})
    >>> router.route("Solve 3x + 5 = 11").expert
    'math'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "DecidingToken",
    "ExpertCounts",
    "RouteDecision",
    "Router",
    "RouterConfig",
    "TokenEmbeddings",
    "__version__",
    "evaluate",
]

_LAZY = {
    "Router": ("router", "Router"),
    "RouterConfig": ("config", "RouterConfig"),
    "RouteDecision": ("decision", "RouteDecision"),
    "DecidingToken": ("decision", "DecidingToken"),
    "TokenEmbeddings": ("embeddings", "TokenEmbeddings"),
    "ExpertCounts": ("fitting.statistics", "ExpertCounts"),
    "evaluate": ("evaluation.evaluate", "evaluate"),
}

if TYPE_CHECKING:
    from ir3de.config import RouterConfig
    from ir3de.decision import DecidingToken, RouteDecision
    from ir3de.embeddings import TokenEmbeddings
    from ir3de.evaluation.evaluate import evaluate
    from ir3de.fitting.statistics import ExpertCounts
    from ir3de.router import Router


def __getattr__(name: str) -> Any:
    """Import submodules on first use so ``import ir3de`` stays light (torch loads only when fitting)."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ir3de' has no attribute {name!r}")
