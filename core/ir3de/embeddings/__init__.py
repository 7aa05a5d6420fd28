"""Token embeddings: a tokenizer and the input-embedding matrix ``E`` (V x h) of an LLM.

:class:`TokenEmbeddings` (in :mod:`.base`) and one module per source: :mod:`.huggingface` (a Hub id or
a model folder; only the embedding tensor is read), :mod:`.gguf` (a GGUF file), :mod:`.in_memory` (a
loaded ``transformers`` model), and :mod:`.cache`, the on-disk cache of converted GGUF files.

Example:
    >>> from ir3de.embeddings import TokenEmbeddings
    >>> emb = TokenEmbeddings.default()  # doctest: +SKIP
    >>> emb.vocab_size, emb.hidden_size  # doctest: +SKIP
    (49152, 576)
"""

from __future__ import annotations

from .base import TokenEmbeddings
from .cache import cache_root
from .gguf import DEFAULT_GGUF_FILE, DEFAULT_PACKAGE, GGUF_TENSOR_NAME, gguf_cache_folder
from .huggingface import EMBEDDING_TENSOR_NAMES

__all__ = [
    "DEFAULT_GGUF_FILE",
    "DEFAULT_PACKAGE",
    "EMBEDDING_TENSOR_NAMES",
    "GGUF_TENSOR_NAME",
    "TokenEmbeddings",
    "cache_root",
    "gguf_cache_folder",
]
