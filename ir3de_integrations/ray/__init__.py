"""Distributed fitting on Ray Data: token statistics of corpora that outgrow one machine.

Counting is embarrassingly parallel and integer counts add exactly, so workers tokenize and count
their shards (or dataset blocks) with the core's :func:`ir3de.fitting.pipeline.count_texts` and the driver
sums the histograms. The result equals a local fit of the same texts, integer for integer; the solve
and the route table then run on the driver (on its GPU when it has one). Workers also accumulate the
text-level statistics (text Grams, which need the embedding matrix: it is put in Ray's object store
once and read zero-copy by every worker); those sum in float64, equal to a local count up to rounding.

Two inputs:

* shard files per expert — ``{"math": ["s3://…/math-*.jsonl"], "code": ["code/*.parquet"]}`` (any
  format :func:`ir3de.data.corpus.read_texts` reads: .txt, .jsonl, .json, .csv, .parquet, .gz); every shard is
  one Ray Data row, so a bad shard is named exactly;
* ``ray.data.Dataset`` s — one with a text column and an expert column, or one dataset per expert.

Bad input (a missing text column, non-string values, an empty shard, an unreadable file) raises
:class:`ShardError` naming every bad shard, or with ``skip_bad=True`` is skipped and listed in the
report. Nothing is dropped silently.

Modules: :mod:`.fitting` (the counting jobs and the fits), :mod:`.counters` (the worker actors),
:mod:`.report` (the report, bad shards, the rows actors return), :mod:`.cluster` (Ray start-up, logs).

Example:
    >>> from ir3de_integrations.ray import fit_router                       # doctest: +SKIP
    >>> router, report = fit_router({"math": ["shards/math-*.jsonl"], "code": ["shards/code-*.jsonl"]},  # doctest: +SKIP
    ...                             field="text")
    >>> report.summary()  # doctest: +SKIP
"""

from __future__ import annotations

from .cluster import quiet_ray_logging
from .fitting import count_dataset, count_shards, fit_router, fit_statistics, learn_router
from .report import RayCountReport, ShardError, ShardProblem

__all__ = [
    "RayCountReport",
    "ShardError",
    "ShardProblem",
    "count_dataset",
    "count_shards",
    "fit_router",
    "fit_statistics",
    "learn_router",
    "quiet_ray_logging",
]
