"""ir3de's on-disk cache of converted embeddings (a tokenizer, a float32 matrix and a ``meta.json``).

The root is ``$IR3DE_CACHE`` when set, else ``ir3de/`` in huggingface_hub's assets cache
(``HF_ASSETS_CACHE``, by default ``$HF_HOME/assets``, i.e. ``$XDG_CACHE_HOME/huggingface/assets`` or
``~/.cache/huggingface/assets``). Entries are written atomically (temporary folder + rename); a
damaged entry is reported as missing and removed, so the caller rebuilds it.

Example:
    >>> cache_folder("gguf", "some key").name.startswith("gguf-")
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ir3de.artifacts.format import write_folder_atomically

from .common import tokenizer_id_count

__all__ = ["CACHE_FORMAT", "cache_folder", "cache_root", "read_entry", "write_entry"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
_TOKENIZER, _MATRIX, _META = "tokenizer.json", "embeddings.safetensors", "meta.json"


def cache_root() -> Path:
    """``$IR3DE_CACHE`` (read now), else ``<HF_ASSETS_CACHE>/ir3de``.

    Example:
        >>> cache_root().name  # doctest: +SKIP
        'ir3de'
    """
    env = os.environ.get("IR3DE_CACHE")
    if env:
        return Path(env).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_ASSETS_CACHE) / "ir3de"


def cache_folder(kind: str, key: str) -> Path:
    """The entry folder for ``key`` (any string that changes when the cached content must change)."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}\0{key}".encode()).hexdigest()
    return cache_root() / f"{kind}-{digest}"


def read_entry(
    folder: Path, expected: Mapping[str, Any]
) -> tuple[tokenizers.Tokenizer, np.ndarray, dict[str, Any]] | None:
    """The entry's tokenizer, matrix and meta, or ``None`` when absent or damaged (then it is removed).

    ``expected``: values ``meta.json`` must hold (e.g. the source path).
    """
    if not folder.exists():
        return None
    try:
        from safetensors.numpy import load_file

        meta = json.loads((folder / _META).read_text("utf-8"))
        if meta.get("format") != CACHE_FORMAT or any(meta.get(k) != v for k, v in expected.items()):
            raise ValueError(f"{_META} is of another format or source")
        tokenizer = tokenizers.Tokenizer.from_file(str(folder / _TOKENIZER))
        matrix = load_file(str(folder / _MATRIX))["embeddings"]
        shape = tuple(int(n) for n in meta["shape"])
        if matrix.dtype != np.float32 or matrix.shape != shape:
            raise ValueError(f"embeddings are {matrix.dtype} {matrix.shape}, {_META} says float32 {shape}")
        if tokenizer_id_count(tokenizer) > shape[0]:
            raise ValueError("the tokenizer has more ids than the matrix has rows")
    except Exception as exc:
        logger.warning("the ir3de cache entry %s is damaged (%s); rebuilding it", folder, exc)
        _remove(folder)
        return None
    return tokenizer, matrix, meta


def write_entry(
    folder: Path, tokenizer: tokenizers.Tokenizer, matrix: np.ndarray, meta: Mapping[str, Any]
) -> None:
    """Write an entry atomically; a failure (read-only disk, a file in the way) only logs a warning."""
    try:
        from safetensors.numpy import save

        meta = {"format": CACHE_FORMAT, **meta, "shape": list(matrix.shape)}
        write_folder_atomically(
            folder,
            {
                _TOKENIZER: tokenizer.to_str().encode("utf-8"),
                _MATRIX: save({"embeddings": np.ascontiguousarray(matrix, dtype=np.float32)}),
                _META: json.dumps(meta, indent=1).encode("utf-8"),
            },
        )
    except Exception as exc:
        logger.warning("could not write the ir3de cache entry %s: %s", folder, exc)


def _remove(folder: Path) -> None:
    """Move a folder aside (atomic) and delete it; never raises."""
    try:
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".trash", dir=folder.parent))
        os.replace(folder, trash / "entry")
        shutil.rmtree(trash, ignore_errors=True)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
