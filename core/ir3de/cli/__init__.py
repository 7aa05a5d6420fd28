"""The ``ir3de`` command: one module per command group; integration commands register through entry points."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ir3de`` command (the console script's entry point); see :func:`ir3de.cli.main.main`."""
    from ir3de.cli.main import main as _main

    return _main(argv)
