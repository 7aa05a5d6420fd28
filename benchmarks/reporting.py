"""What every benchmark writes with its figures: the machine it ran on, and the results as JSON + a table.

Example:
    >>> results = {"rps": 1200, "machine": machine()}
    >>> sorted(results["machine"])
    ['cpus', 'load_avg', 'python']
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine", "publish"]


def machine(**extra: Any) -> dict[str, Any]:
    """CPU count, Python version and load average now (the background load the figures ran under)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **extra,
        "load_avg": list(os.getloadavg()),
    }


def publish(results: dict[str, Any], table: str, out: Path | None, name: str) -> None:
    """Print ``table``; with ``out``, write ``<out>/<name>.json`` (every number) and ``<name>.md``."""
    print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / f"{name}.md").write_text(table + "\n")
