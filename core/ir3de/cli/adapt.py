"""``ir3de adapt`` / ``ir3de forget-adaptation``: learn served prompts without labels, or forget them.

``ir3de adapt ROUTER FILE...`` reads the prompts of the files — every format ``ir3de learn`` reads
(JSONL/JSON/CSV/Parquet, ``.gz``) and ``.txt`` — for their text column only (``--text-field``,
default ``text``; a label column is ignored and named on stderr: ``ir3de learn`` learns labels),
adapts the router to them (:meth:`ir3de.Router.adapt`) and writes it back atomically. What the
router keeps is counts and Gram rows, not text; ``ir3de forget-adaptation ROUTER`` removes them
exactly (labelled traffic stays).

Examples::

    ir3de adapt my-router served.jsonl                          # adapt, save in place
    ir3de adapt my-router logs/*.csv --text-field prompt -o adapted
    ir3de adapt my-router served.parquet --json                 # the report as one JSON object
    ir3de forget-adaptation my-router
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ir3de.fitting.adaptation import AdaptationReport

__all__ = ["cmd_adapt", "cmd_forget_adaptation", "register"]


def _report_lines(report: AdaptationReport) -> list[str]:
    """What an adaptation did, in label-free terms (there is no accuracy without labels)."""
    lines = [
        f"  the router holds {report.kept} adapted prompts ({report.dropped} dropped to stay within "
        f"max_prompts={report.settings.max_prompts})",
        f"  routes changed: {report.routes_changed} of {report.used}",
        "  share of these prompts per expert, before -> after:",
    ]
    width = max((len(n) for n in report.share_after), default=0)
    for name, after in report.share_after.items():
        lines.append(f"    {name:<{width}}  {report.share_before.get(name, 0.0):.3f} -> {after:.3f}")
    lines.append(
        f"  mean confidence {report.confidence_before:.3f} -> {report.confidence_after:.3f}; "
        f"mean entropy {report.entropy_before:.3f} -> {report.entropy_after:.3f} nats"
    )
    lines.append("  (no accuracy: the prompts have no labels; measure it with ir3de eval on a labelled file)")
    return lines


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The adapt options given on the command line (the router's kept settings fill in the rest)."""
    options = {k: v for k in _OPTIONS if (v := getattr(args, k, None)) is not None}
    if args.hard:
        options["soft"] = False
    return options


_OPTIONS = ("weight", "policy", "rounds", "floor", "prior", "share_floor", "confidence", "max_prompts")


def cmd_adapt(args: argparse.Namespace) -> int:
    """Run ``ir3de adapt``: adapt a router to a file's unlabelled prompts and write it back atomically."""
    from ir3de.data.unlabelled import read_prompts
    from ir3de.router import Router

    text_field = args.text_field or None
    served = read_prompts(args.file, text_field=text_field, label_field=args.label_field)
    for path in served.labelled_files:
        print(
            f"note: {path} has a label column {args.label_field!r}; adapt learns the text only and ignores "
            "it (to learn the labels, run ir3de learn)",
            file=sys.stderr,
        )
    router = Router.from_pretrained(args.router, device=args.device, progress=False)
    router.embeddings  # noqa: B018 - load the embedding matrix now, so the time below is adapting alone
    start = time.perf_counter()
    report = router.adapt(list(served.prompts), **_options(args))
    elapsed = time.perf_counter() - start
    out = router.save_pretrained(args.output or args.router)
    if args.json:
        print(json.dumps({"router": str(out), "report": report.to_dict()}))
        return 0
    print(
        f"adapted to {report.prompts} unlabelled prompts ({report.used} with routable tokens) in "
        f"{elapsed * 1000:.0f} ms; saved to {out}"
    )
    print("\n".join(_report_lines(report)))
    return 0


def cmd_forget_adaptation(args: argparse.Namespace) -> int:
    """Run ``ir3de forget-adaptation``: drop every adaptation (exactly) and write the router back."""
    from ir3de.router import Router

    router = Router.from_pretrained(args.router, device=args.device, progress=False)
    router.forget_adaptation()
    out = router.save_pretrained(args.output or args.router)
    print(f"forgot the adaptation; saved to {out} (labelled traffic, if any, is kept)")
    return 0


def register(subparsers: Any) -> None:
    """Add ``ir3de adapt`` and ``ir3de forget-adaptation``."""
    p = subparsers.add_parser(
        "adapt",
        help="adapt a saved router to unlabelled served prompts (no labels needed)",
        description="Learn served prompts without labels as the router's adaptation block (kept apart from "
        "its corpus and labelled traffic, exactly removable with ir3de forget-adaptation) and write it back "
        "atomically. The router keeps counts and Gram rows, not the text.",
    )
    p.add_argument("router", help="router folder (written by ir3de fit / save_pretrained)")
    p.add_argument(
        "file",
        nargs="+",
        help="files of served prompts (.jsonl/.json/.csv/.parquet, .gz, or .txt: one per line) or globs",
    )
    p.add_argument(
        "--text-field",
        default="text",
        help="column (or field path) of the prompt (default: text; '' for JSON files of bare strings)",
    )
    p.add_argument(
        "--label-field",
        default="label",
        help="a label column to ignore (named on stderr when present; default: label)",
    )
    options = p.add_argument_group(
        "adapt options (default: the router's kept settings, else the library's measured defaults)"
    )
    options.add_argument(
        "--weight", type=float, help="the adaptation's mass relative to the corpus (0: none)"
    )
    options.add_argument("--policy", choices=["share", "global"], help="how that mass is split per expert")
    options.add_argument("--rounds", type=int, help="self-training rounds")
    options.add_argument("--hard", action="store_true", help="hard argmax pseudo-labels instead of soft rows")
    options.add_argument("--floor", type=float, help="leave out prompts whose top probability is below this")
    options.add_argument(
        "--prior", type=float, help="pull the pseudo-label shares toward the corpus prior (0-1)"
    )
    options.add_argument(
        "--share-floor",
        type=float,
        help="scale an expert's block to its full mass only while it holds this × an even share (0-1)",
    )
    options.add_argument(
        "--confidence", type=float, help="weigh each prompt by its top probability to this power (>= 0)"
    )
    options.add_argument("--max-prompts", type=int, help="keep at most this many adapted prompts' rows")
    p.add_argument("--device", default="cpu", help="where the re-solve runs (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object (the report)")
    p.add_argument("-o", "--output", help="write here instead of updating ROUTER in place")
    p.set_defaults(func=cmd_adapt)

    p = subparsers.add_parser(
        "forget-adaptation", help="forget what ir3de adapt taught a router (exactly; labelled traffic stays)"
    )
    p.add_argument("router", help="router folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", help="write here instead of updating ROUTER in place")
    p.set_defaults(func=cmd_forget_adaptation)
