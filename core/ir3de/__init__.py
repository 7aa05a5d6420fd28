"""ir3de — route each prompt to the best domain-expert LLM with IR3DE, a linear ridge-regression router.

The router collapses to a per-token lookup table and its statistics are token histograms, so routing
costs microseconds, needs no LLM call and no labelled preference data, and experts can be added or
removed one at a time.

Example:
    >>> from ir3de import Router, TokenEmbeddings                     # doctest: +SKIP
    >>> router = Router(embeddings=TokenEmbeddings.default())  # doctest: +SKIP
    >>> router.fit({"math": math_texts, "code": code_texts})  # doctest: +SKIP
    >>> router.route("Solve 3x + 5 = 11").expert  # doctest: +SKIP
    'math'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
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
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ir3de' has no attribute {name!r}")


#: Module paths of the flat layout before the layer folders (0.1), still importable with a
#: DeprecationWarning: old name (relative to ``ir3de``) → where the module lives now.
MOVED_MODULES: dict[str, str] = {
    "artifact": "artifacts.format",
    "calibration": "routing.calibration",
    "conversation": "routing.conversation",
    "corpus": "data.corpus",
    "counting": "fitting.counting",
    "datasets": "data.datasets",
    "evaluate": "evaluation.evaluate",
    "evaluate_cli": "cli.evaluate",
    "experts": "serving.registry",
    "feedback": "serving.feedback",
    "hub": "artifacts.hub",
    "hub_cli": "cli.hub",
    "labelled": "data.labelled",
    "learn_cli": "cli.learn",
    "model_card": "artifacts.model_card",
    "persistence": "artifacts.folders",
    "plots": "evaluation.plots",
    "progress": "cli.progress",
    "revisions": "artifacts.revisions",
    "selectors": "routing.selectors",
    "solve": "fitting.solve",
    "stat_pack": "artifacts.stat_packs",
    "statistics": "fitting.statistics",
    "traffic": "fitting.traffic",
    "tuning": "routing.tuning",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``import ir3de.<old>`` with the module at its new path (the same object), warning once."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.partition(".")
        if package != __name__ or old not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"{__name__}.{MOVED_MODULES[spec.name.partition('.')[2]]}"
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (the old path goes away in a later release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module is already executed at its new path."""


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
