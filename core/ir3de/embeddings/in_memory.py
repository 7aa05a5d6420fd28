"""Embeddings of an in-memory ``transformers`` model and its fast tokenizer (both copied).

Example:
    >>> from transformers import AutoModel, AutoTokenizer  # doctest: +SKIP
    >>> parts = parts_from_model(AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ir3de.errors import EmbeddingSourceError

from .common import Parts, hf_tokenizer_parts

__all__ = ["parts_from_model"]


def parts_from_model(model: Any, tokenizer: Any) -> Parts:
    """The input-embedding weight of ``model`` (float32 copy) and ``tokenizer``'s fast backend."""
    backend, excluded = hf_tokenizer_parts(tokenizer)
    get_embeddings = getattr(model, "get_input_embeddings", None)
    if get_embeddings is None:
        raise EmbeddingSourceError(
            f"{type(model).__name__} has no get_input_embeddings(); pass a transformers model"
        )
    try:
        module = get_embeddings()
    except NotImplementedError as exc:
        raise EmbeddingSourceError(f"{type(model).__name__} does not expose its input embeddings") from exc
    weight = getattr(module, "weight", None)
    if weight is None:
        raise EmbeddingSourceError(f"the input embeddings of {type(model).__name__} have no weight")
    if getattr(weight, "is_meta", False):
        raise EmbeddingSourceError(
            "the model's input embeddings are on the 'meta' device (not loaded); load the model with real weights"
        )
    import torch

    with torch.no_grad():
        array = weight.detach().to(device="cpu", dtype=torch.float32).numpy()
    matrix = np.array(array, dtype=np.float32, order="C", copy=True)  # never alias the model
    config = getattr(model, "config", None)
    name_or_path = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    name_or_path = str(name_or_path) if name_or_path else None
    return Parts(
        backend,
        matrix,
        excluded,
        {"kind": "model", "name_or_path": name_or_path},
        f"{name_or_path or type(model).__name__} (in-memory input embeddings)",
    )
