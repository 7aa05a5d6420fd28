"""The ``ir3de tune`` command: tune a saved router to a target precision on a labelled file.

Examples::

    ir3de tune my-router dev.jsonl --target-precision 0.95 --abstain general
    ir3de tune my-router dev.csv --text-column prompt --label-column expert --per-expert --json

The labelled file is JSONL, CSV or Parquet with a text column and a label column (the label is an
expert name). The router is re-saved in place (or to ``--output``) with the chosen temperature,
evidence prior and threshold(s).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from .errors import CorpusError, InvalidInputError, UnknownExpertError

__all__ = ["cmd_tune", "read_labelled", "register"]


def read_labelled(
    path: str | Path, *, text_column: str = "text", label_column: str = "label"
) -> dict[str, list[str]]:
    """Read a labelled file (``.jsonl``, ``.csv`` or ``.parquet``) into ``{label: [texts]}``.

    The one place ``ir3de tune`` reads labelled prompts (to be switched to the library's labelled-file
    reader once it exists). Rows with an empty text are skipped; a row without the label column is
    an error naming the line.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "dev.jsonl")
        >>> _ = open(p, "w").write('{"text": "2+2?", "label": "math"}\\n{"text": "def f():", "label": "code"}\\n')
        >>> read_labelled(p)
        {'math': ['2+2?'], 'code': ['def f():']}
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"labelled file {path} does not exist")
    suffix = path.suffix.lower()
    rows: list[tuple[int, dict[str, Any]]] = []
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise CorpusError(f"{path}:{number} is not valid JSON ({e.msg})") from None
                    if not isinstance(record, dict):
                        raise CorpusError(f"{path}:{number} is not a JSON object")
                    rows.append((number, record))
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = [(number, dict(r)) for number, r in enumerate(csv.DictReader(f), 2)]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = [(number, r) for number, r in enumerate(pq.read_table(path).to_pylist(), 1)]
    else:
        raise CorpusError(
            f"{path}: labelled files are .jsonl, .csv or .parquet, got {suffix or 'no suffix'!r}"
        )
    out: dict[str, list[str]] = {}
    for number, record in rows:
        for column in (text_column, label_column):
            if column not in record:
                raise CorpusError(
                    f"{path} row {number} has no column {column!r} (it has {sorted(record)[:10]}); "
                    "name the columns with --text-column / --label-column"
                )
        text, label = record[text_column], record[label_column]
        if not isinstance(text, str) or not text.strip():
            continue
        out.setdefault(str(label), []).append(text)
    if not out:
        raise CorpusError(f"{path} holds no labelled text in column {text_column!r}")
    return out


def cmd_tune(args: argparse.Namespace) -> int:
    """Run ``ir3de tune``; returns the exit status."""
    from .router import Router

    router = Router.from_pretrained(args.router, device="cpu")
    held_out = read_labelled(args.file, text_column=args.text_column, label_column=args.label_column)
    unknown = sorted(set(held_out) - set(router.experts))
    if unknown:
        raise UnknownExpertError(
            f"{args.file} has labels {unknown} that are not experts of the router; its experts are "
            f"{router.experts}"
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
    p.add_argument("--text-column", default="text", help="column holding the prompt (default: text)")
    p.add_argument("--label-column", default="label", help="column holding the expert (default: label)")
    p.add_argument("--output", "-o", help="save the tuned router here instead of in place")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_tune)
