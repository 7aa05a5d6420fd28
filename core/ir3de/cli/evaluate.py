"""``ir3de eval``: the routing report of a saved router on labelled held-out prompts.

Examples::

    ir3de eval my-router --expert math=math_test.jsonl --expert code=code_test.jsonl --field prompt
    ir3de eval my-router --suite reasoning4 --k-sweep --lam-sweep 1e-3,1e-2,1e-1 --plots plots/
    ir3de eval my-router --suite reasoning4 --json > report.json
    ir3de eval my-router --suite reasoning4 --record     # store the figures in the router's model card
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ir3de.cli.options import CliUsageError, add_corpus_arguments, expert_texts
from ir3de.errors import InvalidInputError, UnknownExpertError

__all__ = ["cmd_eval", "register"]


def _parse_lams(value: str) -> list[float]:
    try:
        lams = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--lam-sweep takes comma-separated numbers, got {value!r}"
        ) from None
    if not lams or any(not (lam > 0) for lam in lams):
        raise argparse.ArgumentTypeError(f"--lam-sweep values must be positive numbers, got {value!r}")
    return lams


def _test_sets(args: argparse.Namespace, experts: Sequence[str]) -> tuple[dict[str, list[str]], str]:
    labelled = getattr(args, "labelled", None)  # --labelled FILE: added by ir3de.cli.learn
    if args.suite and (args.expert or labelled):
        raise CliUsageError("give either --suite or --expert NAME=FILE / --labelled FILE, not both")
    if args.expert or labelled:
        return expert_texts(args), "user-provided held-out prompts"
    if not args.suite:
        raise CliUsageError("give test prompts with --expert NAME=FILE (repeat) or --suite NAME")
    from ir3de.data.datasets import CROSS_SOURCE, SUITES, load_cross_source, load_suite

    if args.suite in CROSS_SOURCE:
        suite = load_cross_source(args.suite, seed=args.seed)
    elif args.suite in SUITES:
        suite = load_suite(args.suite, seed=args.seed)
    else:
        raise CliUsageError(
            f"unknown suite {args.suite!r}; choose one of {', '.join((*SUITES, *CROSS_SOURCE))}"
        )
    missing = [d for d in suite.domains if d not in experts]
    if missing:
        raise UnknownExpertError(
            f"suite {suite.name!r} has domains {missing} that the router has no expert for (experts: "
            f"{experts}); fit the router on the suite's domains (e.g. ir3de quickstart --save DIR) or pass "
            "--expert NAME=FILE test sets"
        )
    return suite.test, f"{suite.name} test side (seed {args.seed})"


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``ir3de eval``; returns the exit status."""
    from ir3de.evaluation.evaluate import PAPER_KS, evaluate, format_report, record_evaluation
    from ir3de.router import Router

    router = Router.from_pretrained(args.router, device=args.device)
    tests, test_set = _test_sets(args, router.experts)
    if not any(tests.values()):
        raise InvalidInputError("the test sets are empty: give files with at least one prompt")
    report = evaluate(
        router,
        tests,
        ks=PAPER_KS if args.k_sweep else None,
        lams=args.lam_sweep,
        details=True,
        max_misrouted=args.max_misrouted,
    )
    out: dict[str, Any] = {"router": str(args.router), "test_set": test_set, **report.to_dict()}
    if args.plots:
        from ir3de.evaluation.plots import (
            plot_confusion,
            plot_k_sweep,
            plot_lam_sweep,
            plot_precision_coverage,
        )

        folder = Path(args.plots)
        files = [str(plot_confusion(report, folder / "confusion.png"))]
        curve = {test_set: report.extra["precision_coverage"]}
        files.append(str(plot_precision_coverage(curve, folder / "precision_coverage.png")))
        if "k_sweep" in report.extra:
            files.append(str(plot_k_sweep({test_set: report.extra["k_sweep"]}, folder / "k_sweep.png")))
        if "lam_sweep" in report.extra:
            files.append(str(plot_lam_sweep({test_set: report.extra["lam_sweep"]}, folder / "lam_sweep.png")))
        out["plots"] = files
    if args.record:
        record_evaluation(router, report, test_set=test_set)
        out["recorded_in"] = str(router.save_pretrained(args.router))
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(f"router {args.router} on {test_set}\n")
    print(format_report(report))
    for f in out.get("plots", []):
        print(f"wrote {f}")
    if "recorded_in" in out:
        print(f"recorded the evaluation in {out['recorded_in']} (config.json and README.md)")
    sys.stdout.flush()
    return 0


def register(subparsers: Any) -> None:
    """Add ``ir3de eval`` to the ``ir3de`` command's subparsers."""

    p = subparsers.add_parser(
        "eval",
        help="routing report of a saved router: per-expert precision/recall/F1, confusion matrix, "
        "precision-vs-coverage, misrouted prompts with their deciding tokens, k and λ sweeps",
        description="Evaluate a saved router on labelled held-out prompts (files per expert or a public suite).",
    )
    p.add_argument("router", help="router folder (written by ir3de fit / save_pretrained) or Hub repo id")
    add_corpus_arguments(p)
    p.add_argument(
        "--suite",
        help="evaluate on the test side of a public suite: reasoning4, five, or a cross-source check "
        "(code-humaneval-to-stdlib, code-stdlib-to-humaneval, multilingual-unseen-languages)",
    )
    p.add_argument("--seed", type=int, default=0, help="split seed of --suite (default 0, as quickstart)")
    p.add_argument("--k-sweep", action="store_true", help="sweep k over 1,2,5,10,20,50,100,200,500,all")
    p.add_argument(
        "--lam-sweep", type=_parse_lams, metavar="L1,L2,...", help="sweep λ (no refit), e.g. 1e-3,1e-2,1e-1"
    )
    p.add_argument(
        "--plots",
        metavar="DIR",
        help="write confusion.png, precision_coverage.png (and k_sweep.png, lam_sweep.png) here",
    )
    p.add_argument(
        "--max-misrouted", type=int, default=100, help="misrouted prompts listed in the report (default 100)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--record", action="store_true", help="store the figures in the router and re-save it")
    p.add_argument("--device", default="cpu", help="device for the λ sweep's table compilation")
    p.set_defaults(func=cmd_eval)
