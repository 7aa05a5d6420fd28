"""What a distributed count returns: the summed statistics (:class:`RayCountReport`), the shards
that could not be counted (:class:`ShardProblem`, :class:`ShardError`), and the row format in which
worker actors hand their counts to the driver (:func:`shard_row`, summed by :func:`collect`).

Example:
    >>> report = RayCountReport({}, shards_counted=0)
    >>> report.num_tokens, report.skipped
    (0, [])
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir3de.errors import Ir3deError
from ir3de.fitting.statistics import ExpertCounts, KeepTokenIds, TextTokens, merged_counts

__all__ = ["ROW_KEYS", "RayCountReport", "ShardError", "ShardProblem", "collect", "row_counts", "shard_row"]

_EMPTY = np.zeros(0, np.int64)


class ShardError(Ir3deError, ValueError):
    """One or more shards (or dataset batches) cannot be counted; the message names each one."""

    def __init__(self, problems: Sequence[ShardProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p.shard} (expert {p.expert!r}): {p.reason}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} bad shard(s):\n{lines}\nfix them, or pass skip_bad=True (CLI: --skip-bad) "
            "to skip them and list them in the report"
        )


@dataclass(frozen=True)
class ShardProblem:
    """A shard that was not counted, and why."""

    shard: str
    expert: str
    reason: str


@dataclass
class RayCountReport:
    """Statistics of a distributed count and what happened to every shard.

    Attributes:
        statistics: expert → summed token counts (identical to a local count of the same texts).
        shards_counted: shards (or batches) counted.
        skipped: shards skipped with ``skip_bad=True``, each with its reason.
        seconds: wall time of the count (excluding Ray start-up).
    """

    statistics: dict[str, ExpertCounts]
    shards_counted: int
    skipped: list[ShardProblem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.statistics.values())

    @property
    def num_texts(self) -> int:
        return sum(c.num_texts for c in self.statistics.values())

    @property
    def tokens_per_second(self) -> float:
        return self.num_tokens / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        experts = ", ".join(
            f"{n}: {c.num_texts} texts / {c.num_tokens} tokens" for n, c in self.statistics.items()
        )
        text = (
            f"counted {self.shards_counted} shard(s) in {self.seconds:.2f} s "
            f"({self.tokens_per_second:,.0f} tokens/s): {experts}"
        )
        if self.skipped:
            text += f"; skipped {len(self.skipped)} bad shard(s): " + "; ".join(
                f"{p.shard} ({p.reason})" for p in self.skipped
            )
        return text


ROW_KEYS = (
    "shard",
    "expert",
    "ok",
    "reason",
    "token_ids",
    "counts",
    "num_texts",
    "text_form",
    "text_dim",
    "text_gram",
    "text_rows",
    "text_token_ids",
    "text_token_offsets",
)
_NO_FLOATS = np.zeros(0, np.float64)


def shard_row(shard: str, expert: str, counts: ExpertCounts | None, reason: str = "") -> dict[str, Any]:
    """One output row of a counting actor: a shard's (or batch's) counts, or why it was not counted.

    The text statistics travel in the form the counts hold them (a Gram, the rows of a factor, and the
    token ids where kept: :class:`~ir3de.fitting.statistics.ExpertCounts`), so a shard of a few texts
    sends its rows or ids, not an ``(h+1)²`` Gram (``text_form``: ``ExpertCounts.text_form``, ``""``
    for none). Arrays are flattened so that every row has the same column types.
    """
    form = (counts.text_form if counts is not None else None) or ""
    gram = counts.stored_gram if counts is not None else None
    rows = counts.text_rows if counts is not None else None
    tokens = counts.text_tokens if counts is not None else None
    return {
        "shard": shard,
        "expert": expert,
        "ok": counts is not None,
        "reason": reason,
        "token_ids": (counts.token_ids if counts is not None else _EMPTY).tolist(),
        "counts": (counts.counts if counts is not None else _EMPTY).tolist(),
        "num_texts": counts.num_texts if counts is not None else 0,
        "text_form": form,
        "text_dim": (counts.text_dim or 0) if counts is not None else 0,
        "text_gram": gram.ravel() if gram is not None else _NO_FLOATS,
        "text_rows": rows.ravel() if rows is not None else _NO_FLOATS,
        "text_token_ids": tokens.ids.astype(np.int64) if tokens is not None else _EMPTY,
        "text_token_offsets": tokens.offsets if tokens is not None else _EMPTY,
    }


def row_counts(row: dict[str, Any]) -> ExpertCounts:
    """The :class:`~ir3de.fitting.statistics.ExpertCounts` of a :func:`shard_row` row (``ok`` rows only)."""
    form, dim = str(row["text_form"]), int(row["text_dim"])
    gram = rows = tokens = None
    if form == "gram":
        gram = np.asarray(row["text_gram"], np.float64).reshape(dim, dim)
    elif form == "rows":
        rows = np.asarray(row["text_rows"], np.float64).reshape(-1, dim)
    if form:
        offsets = np.asarray(row["text_token_offsets"], np.int64)
        if offsets.size:
            tokens = TextTokens(np.asarray(row["text_token_ids"], np.int32), offsets, dim)
    return ExpertCounts(
        np.asarray(row["token_ids"], np.int64),
        np.asarray(row["counts"], np.int64),
        int(row["num_texts"]),
        stored_gram=gram,
        text_rows=rows,
        text_tokens=tokens,
    )


def collect(
    rows: Iterable[dict[str, Any]],
    skip_bad: bool,
    started: float,
    total: int | None,
    keep_token_ids: KeepTokenIds = "auto",
) -> RayCountReport:
    """Sum the actors' rows into a :class:`RayCountReport` (raises :class:`ShardError` on bad shards
    unless ``skip_bad``); ``started`` is the ``time.perf_counter()`` of the count's start. Each expert's
    shards add as a router with ``keep_token_ids`` adds them
    (:func:`~ir3de.fitting.statistics.merged_counts`): its statistics end in their smaller exact form."""
    from tqdm.auto import tqdm

    statistics: dict[str, ExpertCounts] = {}
    problems: list[ShardProblem] = []
    counted = 0
    for row in tqdm(rows, total=total, desc="counting shards", unit="shard", disable=None):
        if not row["ok"]:
            problems.append(ShardProblem(str(row["shard"]), str(row["expert"]), str(row["reason"])))
            continue
        expert = str(row["expert"])
        counts = row_counts(row)
        previous = statistics.get(expert)
        statistics[expert] = counts if previous is None else merged_counts(previous, counts, keep_token_ids)
        counted += 1
    if problems and not skip_bad:
        raise ShardError(problems)
    return RayCountReport(statistics, counted, problems, time.perf_counter() - started)
