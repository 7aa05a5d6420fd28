"""Counting a corpus into a token histogram: the one tokenization rule shared by every fitting path.

The local fit, stat packs and distributed (Ray) workers all count through :class:`TextCounter`, so
their statistics are identical integers for the same texts.

Rules: no special tokens are added (``add_special_tokens=False``); a whitespace-only text counts as a
text with no token (exactly as a whitespace-only prompt routes as empty); excluded ids (special
tokens) are dropped.

Example:
    >>> from ir3de import TokenEmbeddings                                   # doctest: +SKIP
    >>> emb = TokenEmbeddings.default()
    >>> c = TextCounter(emb.tokenizer, emb.vocab_size, emb.excluded_ids)
    >>> c.add(["Solve 3x + 5 = 11", "   "]); c.result().num_texts
    2
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .statistics import ExpertCounts, TokenCounter

__all__ = ["TextCounter", "encode_for_counting"]


def encode_for_counting(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Flat int64 ids of ``texts`` as counted (whitespace-only texts contribute nothing)."""
    encode = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
    encodings = encode([t if t.strip() else "" for t in texts], add_special_tokens=False)
    return np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int64)


class TextCounter:
    """Tokenizes batches of texts and accumulates their histogram.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``.
        vocab_size: rows of the embedding matrix (ids must be below it).
        excluded_ids: ids that never count (special tokens).
    """

    def __init__(self, tokenizer: Any, vocab_size: int, excluded_ids: np.ndarray | None = None) -> None:
        self.tokenizer = tokenizer
        self._counter = TokenCounter(vocab_size, excluded_ids)

    def add(self, texts: Sequence[str]) -> None:
        """Count one batch of texts (all must be ``str``)."""
        self._counter.add_flat(encode_for_counting(self.tokenizer, texts), len(texts))

    @property
    def num_texts(self) -> int:
        return self._counter.num_texts

    def result(self) -> ExpertCounts:
        return self._counter.result()
