"""``ir3de tune``: choose the temperature, evidence prior and abstain threshold(s) of a saved router.

It reads a labelled file (JSONL, CSV or Parquet with a text column and a label column, the label an
expert name) and re-saves the router in place (or to ``--output``) with the chosen settings.

Examples::

    ir3de tune my-router dev.jsonl --target-precision 0.95 --abstain general
    ir3de tune my-router dev.csv --text-field prompt --label-field expert --per-expert --json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ir3de.data.labelled import read_labelled
from ir3de.errors import InvalidInputError, UnknownExpertError

__all__ = ["cmd_tune", "register"]


def cmd_tune(args: argparse.Namespace) -> int:
    """Run ``ir3de tune``; returns the exit status."""
    from ir3de.router import Router

    router = Router.from_pretrained(args.router, device="cpu")
    held_out = read_labelled(args.file, text_field=args.text_field, label_field=args.label_field).by_label()
    unknown = sorted(set(held_out) - set(router.experts))
    if unknown:
        raise UnknownExpertError(
            f"{args.file} has labels {unknown} that are not experts of the router; its experts are "
            f"{list(router.experts)}"
        )
    if not 0.0 < args.target_precision <= 1.0:
        raise InvalidInputError(f"--target-precision must be in (0, 1], got {args.target_precision}")
    result = router.tune(
        held_out, target_precision=args.target_precision, per_expert=args.per_expert, abstain=args.abstain
    )
    saved = router.save_pretrained(args.output or args.router)
    out = {"router": str(saved), "file": str(args.file), **result.to_dict()}
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    temperature = "-" if result.temperature is None else f"{result.temperature:.4g}"
    print(f"tuned {args.router} on {result.n} labelled prompts of {args.file}")
    print(f"  temperature {temperature}, evidence prior {result.evidence_tokens:.3g}")
    if result.thresholds is not None:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in result.thresholds.items())
        print(f"  thresholds per expert: {shown}")
    else:
        print(f"  threshold {result.threshold:.4f}")
    print(
        f"  precision {result.precision:.4f} (target {result.target_precision}) at coverage "
        f"{result.coverage:.4f}; the rest go to {result.fallback!r}"
    )
    print(f"saved to {saved}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``ir3de tune`` to the ``ir3de`` command's subparsers."""
    p = subparsers.add_parser(
        "tune",
        help="choose temperature and abstain threshold(s) of a saved router for a target precision",
        description="Tune a saved router on a labelled file (JSONL/CSV/Parquet: text and label columns) so "
        "that the prompts it routes reach the target precision; the rest go to the fallback.",
    )
    p.add_argument("router", help="router folder (written by ir3de fit / save_pretrained)")
    p.add_argument("file", help="labelled held-out prompts: .jsonl, .csv or .parquet")
    p.add_argument("--target-precision", type=float, default=0.95, help="default 0.95")
    p.add_argument("--per-expert", action="store_true", help="one threshold per expert")
    p.add_argument("--abstain", help="fallback name for prompts below the threshold (if the router has none)")
    p.add_argument(
        "--text-field", default="text", help="column (or field path) of the prompt (default: text)"
    )
    p.add_argument(
        "--label-field", default="label", help="column (or field path) of the expert (default: label)"
    )
    p.add_argument("--output", "-o", help="save the tuned router here instead of in place")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_tune)
