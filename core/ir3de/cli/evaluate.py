"""The ``ir3de eval`` and ``ir3de tune`` commands: the routing report of a saved router on labelled
held-out prompts, and tuning it to a target precision.

``ir3de tune`` reads a labelled file (JSONL, CSV or Parquet with a text column and a label column,
the label an expert name) and re-saves the router in place (or to ``--output``) with the chosen
temperature, evidence prior and threshold(s).

Examples::

    ir3de eval my-router --expert math=math_test.jsonl --expert code=code_test.jsonl --field prompt
    ir3de eval my-router --suite reasoning4 --k-sweep --lam-sweep 1e-3,1e-2,1e-1 --plots plots/
    ir3de eval my-router --suite reasoning4 --json > report.json
    ir3de eval my-router --suite reasoning4 --record     # store the figures in the router's model card
    ir3de tune my-router dev.jsonl --target-precision 0.95 --abstain general
    ir3de tune my-router dev.csv --text-field prompt --label-field expert --per-expert --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ir3de.data.labelled import read_labelled
from ir3de.errors import InvalidInputError, UnknownExpertError

__all__ = ["cmd_eval", "cmd_tune", "register"]


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


def _test_sets(args: argparse.Namespace, experts: list[str]) -> tuple[dict[str, list[str]], str]:
    from ir3de.cli.main import CliUsageError, _expert_texts

    labelled = getattr(args, "labelled", None)  # --labelled FILE: added by ir3de.cli.learn
    if args.suite and (args.expert or labelled):
        raise CliUsageError("give either --suite or --expert NAME=FILE / --labelled FILE, not both")
    if args.expert or labelled:
        return _expert_texts(args), "user-provided held-out prompts"
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


def _register_tune(subparsers: Any) -> None:
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


def register(subparsers: Any) -> None:
    """Add ``ir3de eval`` (and ``ir3de tune``) to the ``ir3de`` command's subparsers."""
    from ir3de.cli.main import _add_corpus_arguments

    p = subparsers.add_parser(
        "eval",
        help="routing report of a saved router: per-expert precision/recall/F1, confusion matrix, "
        "precision-vs-coverage, misrouted prompts with their deciding tokens, k and λ sweeps",
        description="Evaluate a saved router on labelled held-out prompts (files per expert or a public suite).",
    )
    p.add_argument("router", help="router folder (written by ir3de fit / save_pretrained) or Hub repo id")
    _add_corpus_arguments(p)
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
    _register_tune(subparsers)
