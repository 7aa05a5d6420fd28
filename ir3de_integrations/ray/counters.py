"""The Ray Data actors that count on the workers, with exactly the driver's tokenizer, vocabulary,
excluded ids and (for text statistics) embedding matrix, which travel once through Ray's object store.

:class:`ShardCounter` counts one shard file per row; :class:`BatchCounter` counts a dataset batch. Both
return :func:`~.report.shard_row` rows: a failure is reported by shard name, never raised on a worker.

Example:
    >>> spec = tokenizer_spec(embeddings, text_statistics=True)                    # doctest: +SKIP
    >>> ds.map(ShardCounter, fn_constructor_kwargs={"spec": spec, ...})             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .report import ROW_KEYS, shard_row

if TYPE_CHECKING:
    from ir3de import TokenEmbeddings
    from ir3de.fitting.statistics import KeepTokenIds

__all__ = ["BatchCounter", "ShardCounter", "count_kwargs", "tokenizer_spec"]


def tokenizer_spec(
    embeddings: TokenEmbeddings, text_statistics: bool, keep_token_ids: KeepTokenIds = "auto"
) -> dict[str, Any]:
    """What a worker needs to count exactly like the driver: tokenizer JSON, vocabulary, excluded ids,
    and (for text statistics) a reference to the embedding matrix in Ray's object store and which
    texts' token ids to keep (``RouterConfig.keep_token_ids``)."""
    import ray

    return {
        "tokenizer_json": embeddings.tokenizer.to_str(),
        "vocab_size": int(embeddings.vocab_size),
        "excluded_ids": [int(i) for i in embeddings.excluded_ids],
        "matrix": ray.put(np.asarray(embeddings.matrix)) if text_statistics else None,
        "keep_token_ids": keep_token_ids if text_statistics else False,
    }


def count_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
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
        "keep_token_ids": spec.get("keep_token_ids", False),
        "progress": False,
    }


class ShardCounter:
    """Ray Data actor: counts one shard file per row with the driver's tokenizer."""

    def __init__(
        self, spec: Mapping[str, Any], text_field: str | None, whole_file: bool | None, batch_size: int
    ) -> None:
        self.count_kwargs = count_kwargs(spec)
        self.field = text_field
        self.whole_file = whole_file
        self.batch_size = batch_size

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from ir3de.data.corpus import read_texts
        from ir3de.fitting.pipeline import count_texts

        shard, expert = str(row["shard"]), str(row["expert"])
        try:
            texts = read_texts([shard], field=self.field, whole_file=self.whole_file)
            counts = count_texts(  # one CPU per actor: Ray runs the actors side by side, not the tokenizer
                texts,
                name=expert,
                batch_size=self.batch_size,
                require_text=False,
                overlap=False,
                **self.count_kwargs,
            )
        except Exception as e:  # any failure is this shard's problem: report it by name
            return shard_row(shard, expert, None, f"{type(e).__name__}: {e}")
        if counts.num_texts == 0:
            return shard_row(shard, expert, None, "empty shard: no text in it")
        return shard_row(shard, expert, counts)


class BatchCounter:
    """Ray Data actor: counts a dataset batch, one output row per expert present in the batch."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        text_column: str,
        expert_column: str | None,
        expert: str | None,
        path_column: str | None,
    ) -> None:
        self.count_kwargs = count_kwargs(spec)
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
                shard_row(name, expert_label, None, f"no column(s) {missing}; columns are {sorted(batch)}")
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
                    shard_row(
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
                        chosen,
                        name=expert,
                        batch_size=max(1, len(chosen)),
                        overlap=False,
                        **self.count_kwargs,
                    )
                    rows.append(shard_row(name, expert, counts))
        return {key: [r[key] for r in rows] for key in ROW_KEYS}
