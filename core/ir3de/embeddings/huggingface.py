"""Embeddings of a Hugging Face model (a Hub id or a local folder): ONLY the input-embedding tensor.

A Hub id is fetched into the HF cache with ``snapshot_download`` (``allow_patterns``: the small files,
then one weight file). With ``model.safetensors.index.json`` only the shard that holds the tensor is
opened (and, for a Hub id, downloaded), else ``model.safetensors``; ``safetensors.safe_open`` reads
names, shapes and the one tensor. Never pickle, never remote code. The special tokens are those ``transformers`` names
(``AutoTokenizer(...).all_special_ids``) plus the added tokens flagged special.

Example:
    >>> parts = load_pretrained("HuggingFaceTB/SmolLM2-135M")  # doctest: +SKIP
    >>> parts.source["tensor_name"]  # doctest: +SKIP
    'model.embed_tokens.weight'
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ir3de.errors import EmbeddingSourceError

from .common import Parts, auto_tokenizer, fast_backend, special_added_ids

__all__ = ["EMBEDDING_TENSOR_NAMES", "load_pretrained", "looks_like_hub_id"]

logger = logging.getLogger(__name__)

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

_INDEX_FILE = "model.safetensors.index.json"
_SINGLE_FILE = "model.safetensors"
_TOKENIZER_FILE = "tokenizer.json"
#: What a Hub model is fetched with first: its config, tokenizer files and shard index (never weights).
_SMALL_FILES = ["*.json", "vocab.txt", "merges.txt", "*.model", "*.tiktoken"]
_OFFLINE = "downloads are off (HF_HUB_OFFLINE or local_files_only)"


def looks_like_hub_id(name: str) -> bool:
    """Whether a name that is not a local path can be a Hugging Face model id (``gpt2``, ``org/name``)."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except ValueError:
        return False
    return not name.endswith((".gguf", ".json"))


def load_pretrained(
    model_id_or_folder: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    tensor_name: str | None = None,
) -> Parts:
    """Tokenizer, input embeddings and the special ids of a Hub model id or a local model folder.

    A Hub model is fetched with ``snapshot_download`` into the HF cache: first its small files, then
    only the weight file that holds the tensor, at the same commit. See
    :meth:`ir3de.embeddings.TokenEmbeddings.from_pretrained`.
    """
    folder, model_id = _locate(model_id_or_folder)
    hub = {"revision": revision, "token": token, "cache_dir": cache_dir, "local_files_only": local_files_only}
    hub = {k: v for k, v in hub.items() if v is not None}
    on_hub = folder is None
    if folder is None:
        folder = _download(model_id, hub, _SMALL_FILES)
        hub["revision"] = folder.name  # the cache layout: snapshots/<commit>; later files come from it
    path, name = _locate_tensor(folder, model_id, tensor_name, hub if on_hub else None)
    matrix = _read_tensor(path, name)
    tokenizer, excluded = _tokenizer(folder)
    source: dict[str, Any] = {
        "kind": "hf",
        "model_id": model_id,
        "revision": revision if on_hub else None,
        "tensor_name": name,
    }
    if on_hub:
        source["commit"] = folder.name
    return Parts(tokenizer, matrix, excluded, source, f"{model_id} ({name})")


def _locate(model_id_or_folder: str | os.PathLike[str]) -> tuple[Path | None, str]:
    text = os.fspath(model_id_or_folder)
    if not isinstance(text, str) or not text:
        raise EmbeddingSourceError(f"expected a model id or folder, got {model_id_or_folder!r}")
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve(), str(path.resolve())
    if path.exists():
        hint = " (for a GGUF file use TokenEmbeddings.from_gguf)" if path.suffix == ".gguf" else ""
        raise EmbeddingSourceError(f"{path} is a file, not a model folder{hint}")
    if not isinstance(model_id_or_folder, str) or not looks_like_hub_id(text):
        raise EmbeddingSourceError(
            f"the model folder {path.absolute()} does not exist (and it is not a Hugging Face model id)"
        )
    return None, text


def _download(model_id: str, hub: dict[str, Any], patterns: list[str]) -> Path:
    """``snapshot_download`` of the files matching ``patterns``; the snapshot folder (named by commit)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns, **hub))
    except LocalEntryNotFoundError:
        raise EmbeddingSourceError(
            f"{' '.join(patterns)} of {model_id!r} are not in the local Hugging Face cache and {_OFFLINE}, "
            "and there is no local folder of that name; download the model once while online, or pass a "
            "local folder"
        ) from None
    except Exception as exc:
        raise EmbeddingSourceError(
            f"cannot fetch {' '.join(patterns)} of {model_id!r} from the Hugging Face Hub: "
            f"{type(exc).__name__}: {exc}. There is no local folder {model_id!r} either. Check the "
            "model id, revision and token, or pass a local folder (with HF_HUB_OFFLINE=1 only files "
            "already in the Hub cache are used)"
        ) from exc


def _locate_tensor(
    folder: Path, model_id: str, tensor_name: str | None, hub: dict[str, Any] | None
) -> tuple[Path, str]:
    """The file holding the embedding tensor (fetched into ``folder`` for a Hub model, ``hub`` its
    download options), and the tensor's name."""
    fetch = folder.joinpath if hub is None else (lambda name: _download(model_id, hub, [name]) / name)
    if not (folder / _INDEX_FILE).is_file():
        single = fetch(_SINGLE_FILE)
        if not single.is_file():
            where = f"the Hub repository {model_id!r}" if hub is not None else folder
            raise EmbeddingSourceError(
                f"no {_SINGLE_FILE} or {_INDEX_FILE} in {where}: ir3de reads safetensors checkpoints only "
                "(never pickle). Load the model with transformers yourself and use "
                "TokenEmbeddings.from_model(model, tokenizer), or convert it to safetensors"
            )
        return single, _pick(tensor_name, _shapes([single]), model_id)
    index_path = folder / _INDEX_FILE
    try:
        weight_map: dict[str, str] = json.loads(index_path.read_text("utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddingSourceError(f"{index_path} is not a valid safetensors index: {exc}") from exc
    wanted = tensor_name or next((n for n in EMBEDDING_TENSOR_NAMES if n in weight_map), None)
    if wanted is None or wanted not in weight_map:
        shards = sorted(set(weight_map.values()))  # headers are cheap locally; on the Hub list names only
        shapes = dict.fromkeys(weight_map) if hub is not None else _shapes([folder / s for s in shards])
        raise _no_tensor(tensor_name, shapes, model_id)
    shard = fetch(weight_map[wanted])
    if not shard.is_file():
        raise EmbeddingSourceError(
            f"{weight_map[wanted]} of {model_id!r}, named in {_INDEX_FILE}, is missing"
        )
    return shard, wanted


def _shapes(paths: list[Path]) -> dict[str, list[int] | None]:
    """Every tensor's shape, read from the safetensors headers (``safe_open``, no data loaded)."""
    import safetensors

    shapes: dict[str, list[int] | None] = {}
    for path in paths:
        try:
            with safetensors.safe_open(str(path), framework="numpy") as f:
                shapes.update({k: list(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
        except Exception as exc:
            raise EmbeddingSourceError(f"{path} is not a readable safetensors file: {exc}") from exc
    return shapes


def _pick(tensor_name: str | None, shapes: dict[str, list[int] | None], model_id: str) -> str:
    """``tensor_name`` or the first well-known name present."""
    name = tensor_name or next((n for n in EMBEDDING_TENSOR_NAMES if n in shapes), None)
    if name is None or name not in shapes:
        raise _no_tensor(tensor_name, shapes, model_id)
    return name


def _no_tensor(
    tensor_name: str | None, shapes: dict[str, list[int] | None], model_id: str
) -> EmbeddingSourceError:
    """The error that lists the 2-D tensors, likely embeddings first, so the user can pick one."""

    def rank(item: tuple[str, list[int] | None]) -> tuple[bool, int, str]:
        key, shape = item
        telling = any(w in key.lower() for w in ("embed", "wte", "word", "tok", "vocab", "shared"))
        return (not telling, -(shape[0] if shape else 0), key)

    candidates = sorted(((k, v) for k, v in shapes.items() if v is None or len(v) == 2), key=rank)
    lines = [f"{k} {v}" if v is not None else k for k, v in candidates]
    if len(lines) > 40:
        lines = [*lines[:40], f"... and {len(lines) - 40} more"]
    what = (
        f"no tensor named {tensor_name!r}" if tensor_name else "no input-embedding tensor with a known name"
    )
    return EmbeddingSourceError(
        f"{what} in the checkpoint of {model_id}. Tensors found: {', '.join(lines) or '(none)'}. "
        "Pass tensor_name= with the name of the input-embedding (V x h) tensor"
    )


def _read_tensor(path: Path, name: str) -> np.ndarray:
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


def _tokenizer(folder: Path) -> tuple[tokenizers.Tokenizer, list[int]]:
    """``tokenizer.json`` as is (else transformers' fast conversion), and the ids that never count."""
    error: Exception | None = None
    try:
        hf_tokenizer = auto_tokenizer(str(folder))
    except Exception as exc:
        hf_tokenizer, error = None, exc
    path = folder / _TOKENIZER_FILE
    if path.is_file():
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:
            raise EmbeddingSourceError(f"cannot read the tokenizer {path}: {exc}") from exc
        tokenizer.no_truncation()
        tokenizer.no_padding()
        if hf_tokenizer is None:
            logger.warning(
                "transformers could not load the tokenizer of %s (%s); only the added special "
                "tokens of tokenizer.json are excluded",
                folder,
                error,
            )
    elif hf_tokenizer is not None:
        tokenizer = fast_backend(hf_tokenizer)
    else:
        raise EmbeddingSourceError(
            f"{folder} has no tokenizer.json and transformers could not load its tokenizer: {error}"
        ) from error
    excluded = set(special_added_ids(tokenizer))
    excluded.update(int(i) for i in (getattr(hf_tokenizer, "all_special_ids", None) or []))
    return tokenizer, sorted(excluded)
