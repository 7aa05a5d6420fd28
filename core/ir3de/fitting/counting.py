"""Counting a corpus into a token histogram: the one tokenization rule shared by every fitting path.

The local fit, stat packs and distributed (Ray) workers all count through :class:`TextCounter`, so
their statistics are identical integers for the same texts.

Rules: no special tokens are added (``add_special_tokens=False``); a whitespace-only text counts as a
text with no token (exactly as a whitespace-only prompt routes as empty); excluded ids (special
tokens) are dropped. Given the embedding matrix, the counter also accumulates the text-level
statistics (the Gram of the texts' and their 8-token windows' mean embeddings, see
:func:`ir3de.fitting.statistics.text_rows`); each text's mean
is computed on its own, so it does not depend on batching.

Example:
    >>> from ir3de import TokenEmbeddings                                   # doctest: +SKIP
    >>> emb = TokenEmbeddings.default()  # doctest: +SKIP
    >>> c = TextCounter(emb.tokenizer, emb.vocab_size, emb.excluded_ids)  # doctest: +SKIP
    >>> c.add(["Solve 3x + 5 = 11", "   "]); c.result().num_texts  # doctest: +SKIP
    2
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ir3de.fitting.statistics import (
    ExpertCounts,
    KeepTokenIds,
    TextTokens,
    TokenCounter,
    add_text_statistics,
    mirror_lower,
    rows_gram,
    text_factor,
    text_factor_gram,
    text_factor_rows,
)
from ir3de.sanitize import clean_text

__all__ = ["TextCounter", "encode_for_counting"]


def encode_for_counting(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Flat int64 ids of ``texts`` as counted, and tokens per text (whitespace-only texts have none)."""
    encode = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
    encodings = encode([clean_text(t) if t.strip() else "" for t in texts], add_special_tokens=False)
    id_lists = [e.ids for e in encodings]  # each Encoding builds its Python list once
    lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    flat = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


class TextCounter:
    """Tokenizes batches of texts and accumulates their histogram.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``.
        vocab_size: rows of the embedding matrix (ids must be below it).
        excluded_ids: ids that never count (special tokens).
        embedding_matrix: the (V, h) embedding matrix; when given, the result also carries the
            text-level statistics (``ExpertCounts.text_gram``, as rows while they are the smaller form) that ``level="text"`` routers need.
        keep_token_ids: also keep the texts' countable token ids (``ExpertCounts.text_tokens``, the
            compact exact form of the text statistics: ``RouterConfig.keep_token_ids``): ``"auto"``
            while the statistics are rows (the same rows as without ids, with the ids beside them;
            from ``h + 1`` rows on, the Gram alone), ``True`` while the ids are smaller than a Gram
            (the statistics are then computed from all the ids at the end,
            :meth:`~ir3de.fitting.statistics.TextTokens.statistics`). Either way rebuilding the
            statistics from the ids gives them bit for bit.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        excluded_ids: np.ndarray | None = None,
        embedding_matrix: np.ndarray | None = None,
        *,
        keep_token_ids: KeepTokenIds = False,
    ) -> None:
        self.tokenizer = tokenizer
        self._counter = TokenCounter(vocab_size, excluded_ids)
        self._matrix = embedding_matrix
        self._text_gram: np.ndarray | None = None
        self._rows: list[np.ndarray] | None = None
        self._num_rows = 0
        self._tokens: list[TextTokens] | None = None
        self._token_bytes = 0
        if embedding_matrix is not None:
            if embedding_matrix.shape[0] != vocab_size:
                raise ValueError(
                    f"the embedding matrix has {embedding_matrix.shape[0]} rows but vocab_size is {vocab_size}"
                )
            self._countable = np.ones(vocab_size, bool)
            self._countable[self._counter._excluded] = False
            # the statistics stay rows (one per text window) while there are fewer than h + 1 of them
            # (the smaller exact form, ExpertCounts), then become the Gram; "auto" keeps the token ids
            # beside the rows while they last; True keeps the ids alone while they are smaller than
            # the Gram
            if keep_token_ids is True:
                self._tokens = []
            else:
                self._rows = []
                if keep_token_ids == "auto":
                    self._tokens = []  # beside the rows, dropped with them

    def add(self, texts: Sequence[str]) -> None:
        """Count one batch of texts (all must be ``str``)."""
        self.add_encoded(*encode_for_counting(self.tokenizer, texts))

    def add_encoded(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Count one batch already tokenized by :func:`encode_for_counting` (``flat`` ids, ``lengths``
        per text): what :meth:`add` does after tokenizing, so that the tokenizer can run ahead on
        the next batch (:func:`ir3de.fitting.pipeline.count_texts`)."""
        self._counter.add_flat(flat, lengths.size)  # checks the id range first
        if self._matrix is None:
            return
        hidden = self._matrix.shape[1]
        if self._rows is not None:
            new_rows = text_factor_rows(flat, lengths, self._countable)
            if self._num_rows + new_rows > hidden:  # the Gram is now the smaller form
                # the Gram of the rows so far and these texts' rows, without writing out the latter
                self._text_gram = text_factor_gram(self._rows, self._matrix, flat, lengths, self._countable)
                self._rows = None
                self._tokens = None
                return
            self._rows.append(text_factor(self._matrix, flat, lengths, self._countable))
            self._num_rows += new_rows
            if self._tokens is not None:  # "auto": the ids of the texts these rows come from
                self._tokens.append(TextTokens.from_texts(flat, lengths, self._countable, hidden + 1))
        elif self._tokens is not None:
            tokens = TextTokens.from_texts(flat, lengths, self._countable, hidden + 1)
            self._tokens.append(tokens)
            self._token_bytes += tokens.nbytes
            if self._token_bytes > (hidden + 1) ** 2 * 8:  # the Gram is now the smaller form
                stats = self._joined_tokens().statistics(self._matrix)
                self._text_gram = stats.get("stored_gram")
                if self._text_gram is None:
                    self._text_gram = rows_gram(stats["text_rows"])
                self._tokens = None
        else:
            assert self._text_gram is not None
            # the lower triangle only: result() mirrors it once (the same Gram, bit for bit)
            add_text_statistics(self._text_gram, self._matrix, flat, lengths, self._countable, lower=True)

    @property
    def num_texts(self) -> int:
        return self._counter.num_texts

    def _joined_tokens(self) -> TextTokens:
        assert self._tokens is not None and self._matrix is not None
        joined = TextTokens(np.zeros(0, np.int32), np.zeros(1, np.int64), self._matrix.shape[1] + 1)
        if self._tokens:
            ids = np.concatenate([t.ids for t in self._tokens])
            lengths = np.concatenate([t.lengths for t in self._tokens])
            offsets = np.zeros(lengths.size + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            joined = TextTokens(ids, offsets, joined.dim)
        return joined

    def result(self) -> ExpertCounts:
        counts = self._counter.result()
        if self._matrix is None:
            return counts
        if self._rows is not None:
            hidden = self._matrix.shape[1]
            rows = np.concatenate(self._rows) if self._rows else np.zeros((0, hidden + 1), np.float64)
            kept = None if self._tokens is None else self._joined_tokens()
            return ExpertCounts(
                counts.token_ids, counts.counts, counts.num_texts, text_rows=rows, text_tokens=kept
            )
        if self._tokens is not None:
            tokens = self._joined_tokens()
            return ExpertCounts(
                counts.token_ids,
                counts.counts,
                counts.num_texts,
                text_tokens=tokens,
                **tokens.statistics(self._matrix),
            )
        assert self._text_gram is not None
        mirror_lower(self._text_gram)
        return ExpertCounts(counts.token_ids, counts.counts, counts.num_texts, self._text_gram)
