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

Example:
    >>> from ir3de_integrations.ray import fit_router                       # doctest: +SKIP
    >>> router, report = fit_router({"math": ["shards/math-*.jsonl"], "code": ["shards/code-*.jsonl"]},
    ...                             field="text")
    >>> report.summary()
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ir3de.errors import Ir3deError, MissingDependencyError
from ir3de.fitting.statistics import ExpertCounts, TokenCounter

if TYPE_CHECKING:
    import ray.data

    from ir3de import Router, TokenEmbeddings

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

_EMPTY = np.zeros(0, np.int64)


def _require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError("distributed fitting needs Ray Data: pip install 'ir3de[ray]'") from e
    return ray


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


def _tokenizer_spec(embeddings: TokenEmbeddings, text_statistics: bool) -> dict[str, Any]:
    """What a worker needs to count exactly like the driver: tokenizer JSON, vocabulary, excluded ids,
    and (for text statistics) a reference to the embedding matrix in Ray's object store."""
    import ray

    return {
        "tokenizer_json": embeddings.tokenizer.to_str(),
        "vocab_size": int(embeddings.vocab_size),
        "excluded_ids": [int(i) for i in embeddings.excluded_ids],
        "matrix": ray.put(np.asarray(embeddings.matrix)) if text_statistics else None,
    }


def _count_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`ir3de.fitting.pipeline.count_texts` that count like the driver."""
    import ray
    import tokenizers

    tokenizer = tokenizers.Tokenizer.from_str(spec["tokenizer_json"])
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return {
        "tokenizer": tokenizer,
        "vocab_size": spec["vocab_size"],
        "excluded_ids": np.asarray(spec["excluded_ids"], np.int64),
        "embedding_matrix": ray.get(spec["matrix"]) if spec["matrix"] is not None else None,
        "progress": False,
    }


_ROW_KEYS = ("shard", "expert", "ok", "reason", "token_ids", "counts", "num_texts", "text_gram")


def _row(shard: str, expert: str, counts: ExpertCounts | None, reason: str = "") -> dict[str, Any]:
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


class _ShardCounter:
    """Ray Data actor: counts one shard file per row with the driver's tokenizer."""

    def __init__(
        self, spec: Mapping[str, Any], text_field: str | None, whole_file: bool | None, batch_size: int
    ) -> None:
        self.count_kwargs = _count_kwargs(spec)
        self.field = text_field
        self.whole_file = whole_file
        self.batch_size = batch_size

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from ir3de.data.corpus import read_texts
        from ir3de.fitting.pipeline import count_texts

        shard, expert = str(row["shard"]), str(row["expert"])
        try:
            texts = read_texts([shard], field=self.field, whole_file=self.whole_file)
            counts = count_texts(
                texts, name=expert, batch_size=self.batch_size, require_text=False, **self.count_kwargs
            )
        except Exception as e:  # any failure is this shard's problem: report it by name
            return _row(shard, expert, None, f"{type(e).__name__}: {e}")
        if counts.num_texts == 0:
            return _row(shard, expert, None, "empty shard: no text in it")
        return _row(shard, expert, counts)


class _BatchCounter:
    """Ray Data actor: counts a dataset batch, one output row per expert present in the batch."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        text_column: str,
        expert_column: str | None,
        expert: str | None,
        path_column: str | None,
    ) -> None:
        self.count_kwargs = _count_kwargs(spec)
        self.text_column = text_column
        self.expert_column = expert_column
        self.expert = expert
        self.path_column = path_column

    def _name(self, batch: Mapping[str, Any]) -> str:
        if self.path_column and self.path_column in batch and len(batch[self.path_column]):
            return ", ".join(sorted({str(p) for p in batch[self.path_column]}))
        n = len(next(iter(batch.values()))) if batch else 0
        return f"a batch of {n} rows"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        name = self._name(batch)
        expert_label = self.expert or "?"
        missing = [c for c in (self.text_column, self.expert_column) if c and c not in batch]
        rows: list[dict[str, Any]] = []
        if missing:
            rows.append(
                _row(name, expert_label, None, f"no column(s) {missing}; columns are {sorted(batch)}")
            )
        else:
            texts = batch[self.text_column]
            bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
            labels = (
                batch[self.expert_column] if self.expert_column else np.full(len(texts), self.expert, object)
            )
            bad_labels = [i for i, e in enumerate(labels) if not isinstance(e, str) or not e]
            if bad or bad_labels:
                i = (bad or bad_labels)[0]
                what = self.text_column if bad else self.expert_column
                rows.append(
                    _row(
                        name,
                        expert_label,
                        None,
                        f"{len(bad) + len(bad_labels)} non-string value(s) in column "
                        f"{what!r}, e.g. row {i}: {(texts if bad else labels)[i]!r}",
                    )
                )
            else:
                from ir3de.fitting.pipeline import count_texts

                for expert in dict.fromkeys(labels.tolist()):
                    chosen = [t for t, e in zip(texts.tolist(), labels.tolist()) if e == expert]
                    counts = count_texts(
                        chosen, name=expert, batch_size=max(1, len(chosen)), **self.count_kwargs
                    )
                    rows.append(_row(name, expert, counts))
        return {key: [r[key] for r in rows] for key in _ROW_KEYS}


def _collect(rows: Any, vocab_size: int, skip_bad: bool, started: float, total: int | None) -> RayCountReport:
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


def quiet_ray_logging() -> dict[str, Any]:
    """Silence Ray's INFO logs (start-up, Ray Data's execution plans and per-operator bars) and
    return the ``ray.init`` keyword arguments that keep it quiet; warnings and errors still show.

    Example:
        >>> import ray                                                     # doctest: +SKIP
        >>> ray.init(include_dashboard=False, **quiet_ray_logging())
    """
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.verbose_stats_logs = False
    for name in ("ray", "ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return {"logging_level": logging.WARNING, "log_to_driver": False}


def _ensure_ray(address: str | None, num_cpus: int | None) -> Any:
    ray = _require_ray()
    quiet = quiet_ray_logging()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, **quiet}
        if address is None and num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    return ray


def _actor_plan(ray: Any, pools: int, concurrency: int | None) -> tuple[int, float]:
    """Actors per pool and CPUs per actor, leaving one CPU free for the datasets' read tasks.

    Counting actors hold their CPUs for the whole job; if they took every CPU (one pool per dataset,
    each as large as the cluster), the read tasks that feed them would never be scheduled and the
    job would hang. So all pools together reserve at most ``CPUs - 1`` (fractional CPUs per actor
    when there are more pools than that), and nothing at all on a one-CPU cluster.
    """
    cpus = float(ray.cluster_resources().get("CPU", 1))
    spare = max(cpus - 1.0, 0.0)
    size = concurrency or max(1, int(spare) // pools)
    per_actor = min(1.0, spare / (pools * size)) if spare else 0.0
    return size, per_actor


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
    """
    from ir3de import TokenEmbeddings
    from ir3de.data.corpus import expand_paths

    ray = _ensure_ray(address, None)
    embeddings = embeddings or TokenEmbeddings.default()
    items = []
    for expert, patterns in shards.items():
        patterns = [patterns] if isinstance(patterns, (str, Path)) else list(patterns)
        items += [{"shard": str(p), "expert": expert} for p in expand_paths(patterns)]
    started = time.perf_counter()
    workers = concurrency or max(1, int(ray.available_resources().get("CPU", 1)))
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items))).map(
        _ShardCounter,
        fn_constructor_kwargs={
            "spec": _tokenizer_spec(embeddings, text_statistics),
            "text_field": field,
            "whole_file": whole_file,
            "batch_size": batch_size,
        },
        compute=ray.data.ActorPoolStrategy(size=min(workers, max(1, len(items)))),
        num_cpus=1,
    )
    return _collect(ds.iter_rows(), embeddings.vocab_size, skip_bad, started, len(items))


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
) -> RayCountReport:
    """Count a Ray Dataset with a text column and an expert column, or one dataset per expert.

    Batches are named by their ``path_column`` when the dataset was read with ``include_paths=True``;
    ``text_statistics`` as in :func:`count_shards`.
    """
    from ir3de import TokenEmbeddings

    ray = _ensure_ray(None, None)
    embeddings = embeddings or TokenEmbeddings.default()
    spec = _tokenizer_spec(embeddings, text_statistics)
    parts = data.items() if isinstance(data, Mapping) else [(None, data)]
    size, actor_cpus = _actor_plan(ray, len(parts), concurrency)
    started = time.perf_counter()
    counted = []
    for expert, ds in parts:
        counted.append(
            ds.map_batches(
                _BatchCounter,
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
    return _collect(union.iter_rows(), embeddings.vocab_size, skip_bad, started, None)


def fit_statistics(
    data: Mapping[str, Any] | ray.data.Dataset, *, embeddings: TokenEmbeddings | None = None, **kwargs: Any
) -> RayCountReport:
    """Count ``data`` on Ray: shard paths per expert (:func:`count_shards`) or Ray Datasets
    (:func:`count_dataset`). Returns a :class:`RayCountReport` whose ``statistics`` equal a local count."""
    ray = _require_ray()
    is_dataset = isinstance(data, ray.data.Dataset) or (
        isinstance(data, Mapping) and data and all(isinstance(v, ray.data.Dataset) for v in data.values())
    )
    if is_dataset:
        return count_dataset(data, embeddings=embeddings, **kwargs)
    return count_shards(data, embeddings=embeddings, **kwargs)


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
    report = fit_statistics(data, embeddings=embeddings or router.embeddings, **kwargs)
    router.fit(report.statistics, descriptions=descriptions)
    return router, report
