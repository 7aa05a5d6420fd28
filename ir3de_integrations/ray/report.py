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
from ir3de.fitting.statistics import ExpertCounts, TokenCounter

__all__ = ["ROW_KEYS", "RayCountReport", "ShardError", "ShardProblem", "collect", "shard_row"]

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


ROW_KEYS = ("shard", "expert", "ok", "reason", "token_ids", "counts", "num_texts", "text_gram")


def shard_row(shard: str, expert: str, counts: ExpertCounts | None, reason: str = "") -> dict[str, Any]:
    """One output row of a counting actor: a shard's (or batch's) counts, or why it was not counted."""
    gram = counts.text_gram if counts is not None else None
    return {
        "shard": shard,
        "expert": expert,
        "ok": counts is not None,
        "reason": reason,
        "token_ids": (counts.token_ids if counts is not None else _EMPTY).tolist(),
        "counts": (counts.counts if counts is not None else _EMPTY).tolist(),
        "num_texts": counts.num_texts if counts is not None else 0,
        # flattened so that rows with and without a Gram share one column type
        "text_gram": (gram.ravel() if gram is not None else np.zeros(0, np.float64)),
    }


def collect(
    rows: Iterable[dict[str, Any]], vocab_size: int, skip_bad: bool, started: float, total: int | None
) -> RayCountReport:
    """Sum the actors' rows into a :class:`RayCountReport` (raises :class:`ShardError` on bad shards
    unless ``skip_bad``); ``started`` is the ``time.perf_counter()`` of the count's start."""
    from tqdm.auto import tqdm

    dense: dict[str, TokenCounter] = {}
    grams: dict[str, np.ndarray | None] = {}
    problems: list[ShardProblem] = []
    counted = 0
    for row in tqdm(rows, total=total, desc="counting shards", unit="shard", disable=None):
        if not row["ok"]:
            problems.append(ShardProblem(str(row["shard"]), str(row["expert"]), str(row["reason"])))
            continue
        expert = str(row["expert"])
        counter = dense.setdefault(expert, TokenCounter(vocab_size))
        counter.add_counts(row["token_ids"], row["counts"], int(row["num_texts"]))
        flat = np.asarray(row["text_gram"], np.float64)
        side = round(flat.size**0.5)
        gram = flat.reshape(side, side) if flat.size else None
        if expert not in grams:
            grams[expert] = gram
        else:
            previous = grams[expert]
            grams[expert] = previous + gram if previous is not None and gram is not None else None
        counted += 1
    if problems and not skip_bad:
        raise ShardError(problems)
    statistics = {}
    for name, counter in dense.items():
        c = counter.result()
        statistics[name] = ExpertCounts(c.token_ids, c.counts, c.num_texts, grams[name])
    return RayCountReport(statistics, counted, problems, time.perf_counter() - started)
