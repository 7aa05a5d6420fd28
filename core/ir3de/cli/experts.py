"""``ir3de add-expert`` and ``ir3de remove-expert``: grow or shrink a saved router in place (or into -o)."""

from __future__ import annotations

import argparse
from typing import Any

from ir3de.cli.options import (
    EXIT_OK,
    CliUsageError,
    add_corpus_arguments,
    check_output,
    descriptions,
    expert_texts,
)

__all__ = ["register"]


def cmd_add_expert(args: argparse.Namespace) -> int:
    from ir3de.router import Router

    if args.output:
        check_output(args.output, args.force, replaces=args.router)
    texts = expert_texts(args)
    router = Router.from_pretrained(args.router, progress=not args.quiet)
    for name in texts:
        if args.update and name not in router.experts:
            raise CliUsageError(
                f"--update adds text to an existing expert, and the router has no expert {name!r} "
                f"(experts: {', '.join(router.experts)}); drop --update to add it as a new expert"
            )
        if not args.update and name in router.experts:
            raise CliUsageError(
                f"expert {name!r} already exists; pass --update to add this text to it, or "
                f"`ir3de remove-expert {args.router} {name}` first"
            )
    described = descriptions(args)
    for name, more in texts.items():
        if args.update:
            router.add_expert(name, more, update=True)
        else:
            router.add_expert(name, more, description=described.get(name, ""))
    out = router.save_pretrained(args.output or args.router)
    print(f"experts now {list(router.experts)}; saved to {out}")
    return EXIT_OK


def cmd_remove_expert(args: argparse.Namespace) -> int:
    from ir3de.router import Router

    if args.output:
        check_output(args.output, args.force, replaces=args.router)
    router = Router.from_pretrained(args.router)
    for name in args.name:
        router.remove_expert(name)
    out = router.save_pretrained(args.output or args.router)
    print(f"experts now {list(router.experts)}; saved to {out}")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``add-expert`` and ``remove-expert`` to the ``ir3de`` command's subparsers."""
    p = sub.add_parser("add-expert", help="add experts (or more text with --update) to a saved router")
    p.add_argument("router", help="router folder")
    add_corpus_arguments(p)
    p.add_argument("--update", action="store_true", help="add the text to existing experts instead")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("-o", "--output", help="write here instead of updating ROUTER in place")
    p.add_argument("--force", action="store_true", help="replace a router that exists at -o")
    p.set_defaults(func=cmd_add_expert)

    p = sub.add_parser("remove-expert", help="remove experts from a saved router")
    p.add_argument("router", help="router folder")
    p.add_argument("name", nargs="+", help="expert names to remove")
    p.add_argument("-o", "--output", help="write here instead of updating ROUTER in place")
    p.add_argument("--force", action="store_true", help="replace a router that exists at -o")
    p.set_defaults(func=cmd_remove_expert)
