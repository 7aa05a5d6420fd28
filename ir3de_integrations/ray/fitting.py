"""Counting on Ray Data and fitting from the counts: shard files per expert (:func:`count_shards`), Ray
Datasets (:func:`count_dataset`), either (:func:`fit_statistics`), then a router fitted
(:func:`fit_router`) or taught served traffic (:func:`learn_router`) from the summed counts.

Example:
    >>> router, report = fit_router({"math": ["math-*.jsonl"]}, field="text")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .cluster import actor_plan, ensure_ray, require_ray
from .counters import BatchCounter, ShardCounter, tokenizer_spec
from .report import RayCountReport, collect

if TYPE_CHECKING:
    import ray.data

    from ir3de import Router, TokenEmbeddings
    from ir3de.fitting.statistics import KeepTokenIds

__all__ = ["count_dataset", "count_shards", "fit_router", "fit_statistics", "learn_router"]


def count_shards(
    shards: Mapping[str, Sequence[str | Path] | str | Path],
    *,
    embeddings: TokenEmbeddings | None = None,
    field: str | None = None,
    whole_file: bool | None = None,
    skip_bad: bool = False,
    concurrency: int | None = None,
    batch_size: int = 512,
    address: str | None = None,
    text_statistics: bool = True,
    keep_token_ids: KeepTokenIds = "auto",
) -> RayCountReport:
    """Count shard files per expert on Ray (one shard per Ray Data row, counted by an actor pool).

    Args:
        shards: expert → file paths or globs.
        embeddings: the tokenizer to count with (``TokenEmbeddings.default()`` when omitted).
        field: the text field of .jsonl/.json/.csv/.parquet records.
        whole_file: as in :func:`ir3de.data.corpus.read_texts` (default: per file type; ``True``: .txt
            files are one text each).
        skip_bad: skip bad shards (listed in the report) instead of raising :class:`ShardError`.
        concurrency: counting actors (default: the cluster's CPUs).
        address: a Ray cluster to join; a local Ray starts when none is running.
        text_statistics: also accumulate the text Grams that ``level="text"`` routers (the default)
            need; ``False`` counts tokens only (enough for ``level="token"``, e.g. the paper preset).
        keep_token_ids: which experts' token ids to keep, as ``RouterConfig.keep_token_ids`` (the
            default ``"auto"``: those with fewer than ``h + 1`` rows, in place of their rows); each
            expert's statistics arrive in their smaller exact form, as a local count's.
    """
    from ir3de import TokenEmbeddings
    from ir3de.data.corpus import expand_paths

    ray = ensure_ray(address, None)
    embeddings = embeddings or TokenEmbeddings.default()
    items = []
    for expert, patterns in shards.items():
        patterns = [patterns] if isinstance(patterns, (str, Path)) else list(patterns)
        items += [{"shard": str(p), "expert": expert} for p in expand_paths(patterns)]
    started = time.perf_counter()
    workers = concurrency or max(1, int(ray.available_resources().get("CPU", 1)))
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items))).map(
        ShardCounter,
        fn_constructor_kwargs={
            "spec": tokenizer_spec(embeddings, text_statistics, keep_token_ids),
            "text_field": field,
            "whole_file": whole_file,
            "batch_size": batch_size,
        },
        compute=ray.data.ActorPoolStrategy(size=min(workers, max(1, len(items)))),
        num_cpus=1,
    )
    with _in_order(ds):
        return collect(ds.iter_rows(), skip_bad, started, len(items), keep_token_ids)


def count_dataset(
    data: ray.data.Dataset | Mapping[str, ray.data.Dataset],
    *,
    embeddings: TokenEmbeddings | None = None,
    text_column: str = "text",
    expert_column: str | None = "expert",
    path_column: str | None = "path",
    skip_bad: bool = False,
    concurrency: int | None = None,
    batch_size: int = 1024,
    text_statistics: bool = True,
    keep_token_ids: KeepTokenIds = "auto",
) -> RayCountReport:
    """Count a Ray Dataset with a text column and an expert column, or one dataset per expert.

    Batches are named by their ``path_column`` when the dataset was read with ``include_paths=True``;
    ``text_statistics`` and ``keep_token_ids`` as in :func:`count_shards`.
    """
    from ir3de import TokenEmbeddings

    ray = ensure_ray(None, None)
    embeddings = embeddings or TokenEmbeddings.default()
    spec = tokenizer_spec(embeddings, text_statistics, keep_token_ids)
    parts = data.items() if isinstance(data, Mapping) else [(None, data)]
    size, actor_cpus = actor_plan(ray, len(parts), concurrency)
    started = time.perf_counter()
    counted = []
    for expert, ds in parts:
        counted.append(
            ds.map_batches(
                BatchCounter,
                fn_constructor_kwargs={
                    "spec": spec,
                    "text_column": text_column,
                    "expert_column": None if expert is not None else expert_column,
                    "expert": expert,
                    "path_column": path_column,
                },
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=size),
                num_cpus=actor_cpus,
            )
        )
    union = counted[0].union(*counted[1:]) if len(counted) > 1 else counted[0]
    with _in_order(union):
        return collect(union.iter_rows(), skip_bad, started, None, keep_token_ids)


@contextlib.contextmanager
def _in_order(ds: ray.data.Dataset) -> Iterator[None]:
    """Rows come out of ``ds`` in input order while the block runs (Ray Data's ``preserve_order``),
    however the actors finish: each expert's shards are added in one order, so a count's statistics
    and the router saved from them are the same bits on every run (small experts keep their rows and
    ids in shard order, the Grams' sums round the same way). The option is set on the dataset's own
    context, which it shares with the datasets it derives from, so it is put back afterwards."""
    options = ds.context.execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        yield
    finally:
        options.preserve_order = before


def fit_statistics(
    data: Mapping[str, Any] | ray.data.Dataset, *, embeddings: TokenEmbeddings | None = None, **kwargs: Any
) -> RayCountReport:
    """Count ``data`` on Ray: shard paths per expert (:func:`count_shards`) or Ray Datasets
    (:func:`count_dataset`). Returns a :class:`RayCountReport` whose ``statistics`` equal a local count."""
    ray = require_ray()
    is_dataset = isinstance(data, ray.data.Dataset) or (
        isinstance(data, Mapping) and data and all(isinstance(v, ray.data.Dataset) for v in data.values())
    )
    if is_dataset:
        return count_dataset(data, embeddings=embeddings, **kwargs)
    shards = cast("Mapping[str, Sequence[str | Path] | str | Path]", data)
    return count_shards(shards, embeddings=embeddings, **kwargs)


def learn_router(
    data: Mapping[str, Any] | ray.data.Dataset,
    router: Router,
    *,
    create_experts: bool = False,
    **kwargs: Any,
) -> RayCountReport:
    """Count labelled served prompts on Ray and let ``router`` learn them (:meth:`Router.learn` of the counts).

    ``data`` is what :func:`fit_statistics` takes: a Ray Dataset with a text and an expert column
    (the labels), ``{expert: dataset}``, or shard paths per expert. The counts carry text statistics
    whatever the router's level (traffic always does), so the result equals ``router.learn`` on the
    same prompts (to float64 rounding of the Gram sums).

    Example:
        >>> ds = ray.data.from_items([{"text": "2+2?", "expert": "math"}])   # doctest: +SKIP
        >>> learn_router(ds, router).num_texts                                # doctest: +SKIP
        1
    """
    kwargs["text_statistics"] = True
    kwargs.setdefault("keep_token_ids", router.config.keep_token_ids)
    report = fit_statistics(data, embeddings=router.embeddings, **kwargs)
    router.learn(report.statistics, create_experts=create_experts)
    return report


def fit_router(
    data: Mapping[str, Any] | ray.data.Dataset,
    *,
    router: Router | None = None,
    embeddings: TokenEmbeddings | None = None,
    descriptions: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> tuple[Router, RayCountReport]:
    """Count on Ray, then solve and compile the table on the driver (GPU when present).

    Args:
        router: an unfitted router carrying the settings to use (``Router(embeddings)`` when omitted).
    """
    from ir3de import Router

    if router is None:
        router = Router(embeddings)
    kwargs.setdefault("text_statistics", router.config.level == "text")
    kwargs.setdefault("keep_token_ids", router.config.keep_token_ids)
    report = fit_statistics(data, embeddings=embeddings or router.embeddings, **kwargs)
    router.fit(report.statistics, descriptions=descriptions)
    return router, report
