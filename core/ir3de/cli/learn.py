"""``ir3de learn`` / ``ir3de forget-traffic``, and labelled files for ``ir3de fit`` and ``ir3de eval``.

One labelled format everywhere (:mod:`ir3de.data.labelled`): JSONL/JSON/CSV/Parquet records with a text
column and a label column (``--text-field``, ``--label-field``; defaults ``text`` and ``label``).

Examples::

    ir3de fit --labelled train.jsonl -o my-router                     # experts from the labels
    ir3de eval my-router --labelled held_out.csv --text-field prompt --label-field domain
    ir3de learn my-router served.jsonl                                # learn served prompts, save in place
    ir3de learn my-router served.parquet --create-experts -o grown    # unknown labels become experts
    ir3de forget-traffic my-router --expert math
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

__all__ = ["add_labelled_arguments", "cmd_forget_traffic", "cmd_learn", "register"]

_LABELLED_HELP = (
    "a labelled file (.jsonl/.json/.csv/.parquet, or a glob) with a text and a label column; "
    "the labels name the experts; repeat"
)


def add_labelled_arguments(p: argparse.ArgumentParser, *, files: bool = True) -> None:
    """``--labelled FILE`` (when ``files``), ``--text-field`` and ``--label-field``."""
    if files:
        p.add_argument("--labelled", action="append", metavar="FILE", help=_LABELLED_HELP)
    p.add_argument(
        "--text-field",
        default="text",
        help="column (or field path) of a labelled file's text (default: text)",
    )
    p.add_argument(
        "--label-field",
        default="label",
        help="column (or field path) of a labelled file's label (default: label)",
    )


def _summary_lines(router: Any) -> list[str]:
    traffic = router.traffic
    if not traffic:
        return ["  no learned traffic"]
    config = router.config
    lines = [f"  traffic (weight {config.traffic_weight}, policy {config.traffic_policy}):"]
    for name, s in traffic.items():
        lines.append(
            f"    {name}: {s.num_prompts} prompts, {s.num_tokens} tokens, row weight {s.row_weight:.4g} "
            f"(a corpus row: {s.corpus_row_weight:.4g}), {s.share:.3g}× the corpus mass"
        )
    return lines


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k in ("traffic_weight", "traffic_policy") if (v := getattr(args, k, None)) is not None}


def cmd_learn(args: argparse.Namespace) -> int:
    """Run ``ir3de learn``: learn a labelled file's prompts and write the router back atomically."""
    from ir3de.data.labelled import read_labelled
    from ir3de.router import Router

    data = read_labelled(args.file, text_field=args.text_field, label_field=args.label_field)
    router = Router.from_pretrained(args.router, device=args.device, progress=False)
    if _settings(args):
        router.configure(**_settings(args))
    router.embeddings  # noqa: B018 - load the embedding matrix now, so the time below is learning alone
    start = time.perf_counter()
    experts_before = list(router.experts)
    router.learn(data, create_experts=args.create_experts)
    elapsed = time.perf_counter() - start
    out = router.save_pretrained(args.output or args.router)
    created = [e for e in router.experts if e not in experts_before]
    if args.json:
        summary = {n: s.to_dict() for n, s in router.traffic.items()}
        print(json.dumps({"router": str(out), "learned": len(data), "created": created, "traffic": summary}))
        return 0
    noun = "labelled prompt" if len(data) == 1 else "labelled prompts"
    print(f"learned {len(data)} {noun} in {elapsed * 1000:.0f} ms; saved to {out}")
    if created:
        print(f"  new experts (their prompts are their corpus): {created}")
    print("\n".join(_summary_lines(router)))
    return 0


def cmd_forget_traffic(args: argparse.Namespace) -> int:
    """Run ``ir3de forget-traffic``: drop learned traffic (one expert or all) and write the router back."""
    from ir3de.router import Router

    router = Router.from_pretrained(args.router, device=args.device, progress=False)
    names = args.expert or [None]
    for name in names:
        router.forget_traffic(name)
    out = router.save_pretrained(args.output or args.router)
    which = "all experts" if args.expert is None else ", ".join(args.expert)
    print(f"forgot the learned traffic of {which}; saved to {out}")
    print("\n".join(_summary_lines(router)))
    return 0


def register(subparsers: Any) -> None:
    """Add ``ir3de learn`` and ``ir3de forget-traffic``, and ``--labelled`` to ``fit``, ``add-expert``
    and ``eval`` (which read the labelled files through ``ir3de.cli.options.expert_texts``)."""
    for command in ("fit", "add-expert", "eval"):
        parser = subparsers.choices.get(command)
        if parser is not None:
            add_labelled_arguments(parser)

    p = subparsers.add_parser(
        "learn",
        help="learn labelled served prompts (their correct expert) into a saved router",
        description="Add labelled prompts to a router's traffic statistics (kept apart from its corpus, "
        "weighted by traffic_weight, exactly removable with ir3de forget-traffic) and write it back atomically.",
    )
    p.add_argument("router", help="router folder (written by ir3de fit / save_pretrained)")
    p.add_argument("file", nargs="+", help="labelled files (.jsonl/.json/.csv/.parquet) or globs")
    add_labelled_arguments(p, files=False)
    p.add_argument(
        "--create-experts",
        action="store_true",
        help="a label that is not an expert becomes a new expert (its prompts are its corpus); "
        "without it such a label is an error",
    )
    p.add_argument("--traffic-weight", type=float, help="set the router's traffic_weight before learning")
    p.add_argument(
        "--traffic-policy",
        choices=["per_prompt", "share", "balanced"],
        help="set the router's traffic_policy",
    )
    p.add_argument("--device", default="cpu", help="where the re-solve runs (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-o", "--output", help="write here instead of updating ROUTER in place")
    p.set_defaults(func=cmd_learn)

    p = subparsers.add_parser("forget-traffic", help="forget a router's learned traffic (exactly)")
    p.add_argument("router", help="router folder")
    p.add_argument("--expert", action="append", help="only this expert's traffic (repeat); default: all")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", help="write here instead of updating ROUTER in place")
    p.set_defaults(func=cmd_forget_traffic)
