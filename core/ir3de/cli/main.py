"""The ``ir3de`` command: fit, route, grow, inspect, and a quickstart on real domain text.

Examples::

    ir3de quickstart
    ir3de fit --expert math=gsm8k.jsonl --expert code='src/**/*.py' --field question -o my-router
    ir3de route my-router "Solve 3x + 5 = 11" --explain
    echo "def f(x):" | ir3de route my-router --json
    ir3de add-expert my-router --expert legal=contracts.txt
    ir3de remove-expert my-router legal
    ir3de info my-router
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from ir3de.cli.options import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    IntermixedParser,
    cli_message,
)
from ir3de.errors import Ir3deError

__all__ = ["COMMAND_GROUP", "build_parser", "main"]

#: The core's commands, one module each; every module defines ``register(subparsers)``.
_CORE_COMMANDS: tuple[str, ...] = (
    "ir3de.cli.fit",
    "ir3de.cli.route",
    "ir3de.cli.experts",
    "ir3de.cli.info",
    "ir3de.cli.quickstart",
    "ir3de.cli.evaluate",
    "ir3de.cli.tune",
    "ir3de.cli.hub",
    "ir3de.cli.learn",
    "ir3de.cli.adapt",
)

#: Entry-point group of commands added by other packages (the gateway adds ``serve``):
#: ``name = "package.module:register"``, where ``register(subparsers)`` adds the command.
COMMAND_GROUP = "ir3de.commands"


def build_parser() -> argparse.ArgumentParser:
    """The ``ir3de`` argument parser: the core's commands, then every registered command."""
    from ir3de import __version__

    parser = argparse.ArgumentParser(
        prog="ir3de",
        description="IR3DE: route prompts to domain-expert LLMs.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ir3de {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=IntermixedParser)
    for module_name in _CORE_COMMANDS:
        importlib.import_module(module_name).register(sub)
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ir3de`` command; returns the exit status (see :data:`EXIT_CODES_HELP`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except Ir3deError as e:
        print(f"ir3de: error: {cli_message(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as e:  # argparse (message printed, status 2), or a command's SystemExit("message")
        if isinstance(e.code, str):  # Python would exit 1: print it and exit 2 like every other error
            message = e.code if e.code.startswith("ir3de: error:") else f"ir3de: error: {e.code}"
            print(message, file=sys.stderr)
            e.code = EXIT_ERROR
        raise
    except KeyboardInterrupt:
        print("ir3de: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `ir3de route ... | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
