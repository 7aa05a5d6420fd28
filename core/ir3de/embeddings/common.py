"""What every embedding source shares: the parts a loader returns and the tokenizer helpers.

Example:
    >>> import tokenizers
    >>> from tokenizers.models import WordLevel
    >>> tok = tokenizers.Tokenizer(WordLevel({"a": 0}, unk_token="a"))
    >>> tok.add_special_tokens(["<eos>"])
    1
    >>> special_added_ids(tok)
    [1]
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tokenizers

from ir3de.errors import EmbeddingSourceError, require

__all__ = [
    "Parts",
    "auto_tokenizer",
    "fast_backend",
    "file_sha256",
    "special_added_ids",
    "tokenizer_id_count",
]


class Parts(NamedTuple):
    """What a loader hands to :class:`~ir3de.embeddings.TokenEmbeddings`."""

    tokenizer: tokenizers.Tokenizer
    matrix: np.ndarray
    excluded_ids: list[int]
    source: dict[str, Any]
    name: str


def fast_backend(tokenizer: Any) -> tokenizers.Tokenizer:
    """A copy of the ``tokenizers.Tokenizer`` behind ``tokenizer`` with truncation and padding off."""
    backend = tokenizer if isinstance(tokenizer, tokenizers.Tokenizer) else None
    if backend is None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, tokenizers.Tokenizer):
        raise EmbeddingSourceError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; pass a fast one "
            "(AutoTokenizer.from_pretrained(..., use_fast=True)) or a tokenizers.Tokenizer"
        )
    copy = tokenizers.Tokenizer.from_str(backend.to_str())  # never change the caller's tokenizer
    copy.no_truncation()
    copy.no_padding()
    return copy


def special_added_ids(tokenizer: tokenizers.Tokenizer) -> list[int]:
    """Ids of the added tokens flagged ``special`` in the tokenizer."""
    return sorted(int(i) for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special)


def tokenizer_id_count(tokenizer: tokenizers.Tokenizer) -> int:
    """How many ids the tokenizer can emit (vocabulary and added tokens)."""
    count = int(tokenizer.get_vocab_size(with_added_tokens=True))
    added = tokenizer.get_added_tokens_decoder()
    return max(count, max(added) + 1) if added else count


def hf_tokenizer_parts(hf_tokenizer: Any) -> tuple[tokenizers.Tokenizer, list[int]]:
    """The fast backend of a ``transformers`` tokenizer and the ids that never count: its
    ``all_special_ids`` plus every added token flagged special."""
    backend = fast_backend(hf_tokenizer)
    excluded = set(special_added_ids(backend))
    excluded.update(int(i) for i in (getattr(hf_tokenizer, "all_special_ids", None) or []))
    return backend, sorted(excluded)


def auto_tokenizer(target: str, **kwargs: Any) -> Any:
    """``transformers.AutoTokenizer.from_pretrained(target, use_fast=True, trust_remote_code=False, ...)``."""
    transformers = require("transformers", "reading this tokenizer", "pip install transformers")
    return transformers.AutoTokenizer.from_pretrained(
        target, use_fast=True, trust_remote_code=False, **kwargs
    )


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
