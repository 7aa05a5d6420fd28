"""``ir3de fit``: fit a router on expert corpora and save it (counting locally, or on an engine
registered in the ``ir3de.fit_engines`` entry-point group, e.g. ``ray``, Ray Data)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ir3de.cli.options import (
    EXIT_CODES_HELP,
    EXIT_OK,
    add_corpus_arguments,
    add_settings_arguments,
    check_output,
    expert_texts,
    fit_with_progress_bar,
    load_embeddings_verbose,
    router_settings,
    settings_error,
)
from ir3de.errors import Ir3deError, MissingDependencyError

if TYPE_CHECKING:
    from ir3de.router import Router

__all__ = ["ENGINE_GROUP", "register"]

#: Entry-point group of fitting engines: ``name = "package.module:function"``, where the function
#: takes ``(args, router)`` and fits ``router`` from the parsed ``ir3de fit`` arguments.
ENGINE_GROUP = "ir3de.fit_engines"

#: Fewer training texts than this for an expert: `ir3de fit` warns that its statistics are thin.
FEW_TEXTS = 50


def _engines() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENGINE_GROUP)}


def _engine(name: str) -> Callable[[argparse.Namespace, Router], None]:
    found = _engines().get(name)
    if found is None:
        raise MissingDependencyError(
            f"no fitting engine {name!r} is installed (engines: local, {', '.join(sorted(_engines())) or '-'}); "
            "reinstall ir3de with its extras, e.g. pip install 'ir3de[ray]'"
        )
    engine: Callable[[argparse.Namespace, Router], None] = found.load()
    return engine


def cmd_fit(args: argparse.Namespace) -> int:
    from ir3de.router import Router, RouterConfig

    check_output(args.output, args.force)
    if args.engine == "local":
        texts = expert_texts(args)  # read (and check) the corpus before the slow embedding load
    emb = load_embeddings_verbose(args, args.embeddings)
    base = RouterConfig.paper() if args.preset == "paper" else RouterConfig()
    try:
        progress = False if args.engine == "local" else not args.quiet  # local: one bar in characters
        router = Router(emb, config=base, device=args.device, progress=progress, **router_settings(args))
    except ValueError as e:
        if isinstance(e, Ir3deError):
            raise
        raise settings_error(e) from None
    start = time.perf_counter()
    if args.engine != "local":
        _engine(args.engine)(args, router)
    else:
        fit_with_progress_bar(args, router, texts)
    elapsed = time.perf_counter() - start
    out = router.save_pretrained(args.output)
    sizes = ", ".join(
        f"{n}: {s.counts.num_texts} texts / {s.counts.num_tokens} tokens"
        for n, s in router.statistics.items()
    )
    print(f"fitted {len(router.experts)} experts in {elapsed:.2f} s ({sizes}); saved to {out}")
    tiny = [
        f"{n} ({s.counts.num_texts})" for n, s in router.statistics.items() if s.counts.num_texts < FEW_TEXTS
    ]
    if tiny:
        print(
            f"ir3de: warning: few texts for {', '.join(tiny)}: with fewer than {FEW_TEXTS} texts an expert's "
            "token statistics are thin and its routes unreliable; add text (a few hundred per expert)",
            file=sys.stderr,
        )
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``fit`` to the ``ir3de`` command's subparsers."""
    p = sub.add_parser("fit", help="fit a router on expert corpora and save it", epilog=EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_corpus_arguments(p)
    add_settings_arguments(p)
    p.add_argument(
        "--embeddings",
        default="default",
        help="'default' (SmolLM2-135M), a .gguf file, a HF model folder or id",
    )
    p.add_argument(
        "--preset",
        choices=["default", "paper"],
        default="default",
        help="starting settings: the library defaults or the paper's router exactly (λ=1e-2, top-10 "
        "entropy vote, column norm, no balancing); other options override it (default: default)",
    )
    p.add_argument(
        "--balance",
        action=argparse.BooleanOptionalAction,
        help="weight every expert to the same mass so a big corpus does not drown a small one "
        "(default: on; paper preset: off)",
    )
    p.add_argument(
        "--column-norm",
        action=argparse.BooleanOptionalAction,
        dest="column_norm",
        help="divide each class column of W by its L2 norm, as the paper's code does (default: off; "
        "paper preset: on)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where the Gram products and the solve run: auto (a GPU when there is one), cpu, cuda[:N]",
    )
    p.add_argument(
        "--engine",
        choices=["local", *sorted(_engines())],
        default="local",
        help="count locally, or on an installed engine (ray: Ray Data)",
    )
    p.add_argument("--address", help="Ray cluster address for --engine ray (default: start a local Ray)")
    p.add_argument("--skip-bad", action="store_true", help="--engine ray: skip bad shards and list them")
    p.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    p.add_argument("-o", "--output", required=True, help="folder to write the router to (new or empty)")
    p.add_argument("--force", action="store_true", help="replace a router that exists at -o")
    p.set_defaults(func=cmd_fit)
