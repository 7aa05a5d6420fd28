"""The ``ir3de`` command: one module per command; integration commands register through entry points.

``ir3de.cli.main`` builds the parser from the core's command modules (``fit``, ``route``,
``experts``, ``info``, ``quickstart``, ``evaluate``, ``tune``, ``hub`` (stat packs and the Hub), ``learn``) and
from the ``ir3de.commands`` entry-point group; ``ir3de.cli.options`` holds what they share.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ir3de`` command with ``argv`` and return its exit status.

    Example:
        >>> from ir3de.cli import main                               # doctest: +SKIP
        >>> main(["info", "my-router"])  # doctest: +SKIP
        0
    """
    from ir3de.cli.main import main as run

    return run(argv)
