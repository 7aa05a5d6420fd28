"""The on-disk router artifact (DESIGN §4): atomic writes, validated reads. Safetensors + JSON only.

A router folder (a local directory or a Hugging Face Hub model repo) holds:

* ``config.json`` — format version, experts, settings, embedding source, fingerprints, and the
  sha256 and size of every other file;
* ``router.safetensors`` — the route table in its form (``config.json``'s ``table_form``, format 4):
  ``logits`` (V × D, float32: dense) or ``table_matrix`` (V × h, float32: the embedding matrix a
  factored table multiplies by ``weights``; format 7: ``table_matrix_q8`` (V × h int8) and
  ``table_matrix_scales`` (V × h/32 float16) instead, when ``float32(q) * float32(scale)`` per block
  of 32 values gives the float32 matrix back bit for bit — as for embeddings dequantised from a
  GGUF's Q8_0, see :func:`q8_blocks`; ``config.json`` then says ``"table_matrix_block": 32``),
  ``weights`` ((h+1) × D, the column-normalised weights the table was compiled from) and
  ``ridge_solution`` (the raw solve);
* ``statistics.safetensors`` — per-expert sparse token counts in CSR form (``token_ids``,
  ``counts``, ``offsets``, ``num_texts``) and, when counted with the embedding matrix, the per-expert
  text statistics, each in its smaller exact form (format 5, :func:`text_gram_tensors`: ``text_forms``
  says Gram or rows per expert; ``text_grams`` G × (h+1) × (h+1), ``text_rows`` R × (h+1) float64
  with ``text_row_offsets``; format 6 adds the token-ids form of routers with ``keep_token_ids``:
  ``text_token_ids`` int32 with ``text_token_offsets`` per text and ``text_token_texts`` per
  expert; format 8 stores a symmetric Gram as its lower triangle, ``text_grams_lower``; format 2–4:
  ``text_grams`` D × (h+1)², ``has_text_gram``), so a pulled
  router can grow at either level; learned traffic (labelled served prompts) in the same layout
  under the prefix ``traffic_``, when any expert has some (format 3); the adaptation to unlabelled
  served prompts (per-expert blocks and the kept prompt rows — mean token embeddings, no text) under
  the prefix ``adaptation_``, when the router has adapted (format 4);
* ``tokenizer.json`` — the tokenizer; routing needs nothing else;
* ``README.md`` — the model card.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "r"
    >>> write_folder_atomically(folder, {"config.json": b"{}"}) == folder
    True
    >>> sorted(p.name for p in folder.iterdir())
    ['config.json']
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ir3de.errors import ArtifactError, ArtifactVersionError

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "Q8_BLOCK",
    "ROUTER_FILE",
    "STATISTICS_FILE",
    "TOKENIZER_FILE",
    "dequantize_q8_blocks",
    "file_sha256",
    "q8_blocks",
    "read_config",
    "read_tensors",
    "tensors_to_bytes",
    "write_folder_atomically",
]

#: 2 added the ``level`` setting and the text Grams; version-1 folders (token level) still load.
#: 3 added learned traffic (``traffic_*`` tensors in the statistics file, a ``traffic`` entry per
#: expert in ``config.json``, the ``traffic_weight``/``traffic_policy`` settings); version-2 folders
#: load with no traffic.
#: 4 added the adaptation to unlabelled prompts (``adaptation_*`` tensors in the statistics file: per
#: expert block, kept prompt rows; an ``adaptation`` object in ``config.json``); version-3 folders load
#: with no adaptation.
#: 5 stores each expert's text statistics in its smaller exact form (``text_forms``: a Gram or the
#: rows of a factor, see ``ExpertCounts``) and the route table's form (``table_form``); older folders
#: still load.
#: 6 adds the token-ids form of text statistics (``text_forms`` code 3: the texts' token ids,
#: ``RouterConfig.keep_token_ids``); older folders still load.
#: 7 may store a factored table's matrix as int8 blocks with float16 scales (``table_matrix_q8``,
#: ``table_matrix_scales``, ``config.json``'s ``table_matrix_block``) when they give it back bit for
#: bit (:func:`q8_blocks`); otherwise, and in older folders, ``table_matrix`` is float32.
#: 8 stores a symmetric text Gram as its lower triangle (``text_forms`` code 4, ``text_grams_lower``:
#: half the bytes, the same bits); older folders still load.
FORMAT_VERSION = 8
CONFIG_FILE = "config.json"
ROUTER_FILE = "router.safetensors"
STATISTICS_FILE = "statistics.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CARD_FILE = "README.md"
CHECKED_FILES = (ROUTER_FILE, STATISTICS_FILE, TOKENIZER_FILE)


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Values per block of :func:`q8_blocks` (GGUF's Q8_0 block).
Q8_BLOCK = 32
_Q8_CHUNK_ROWS = 4096  # rows converted at a time: temporaries of a few MB, not copies of the matrix


def q8_blocks(matrix: np.ndarray, block: int = Q8_BLOCK) -> tuple[np.ndarray, np.ndarray] | None:
    """``(q, scales)``: int8 ``q`` (V, h) and float16 ``scales`` (V, h / block) with
    ``float32(q) * float32(scale)`` equal to the float32 ``matrix`` bit for bit, block by block along
    each row — or ``None`` when the matrix has no such form (then keep it in float32).

    This is the arithmetic of GGUF's Q8_0 dequantisation (``gguf.quants.Q8_0.dequantize_blocks``:
    float16 scale and int8 values, each converted to float32, then one float32 product), so embeddings
    dequantised from a Q8_0 tensor are found again exactly, in about a quarter of the bytes. The scale
    of a block is its largest magnitude / 127 (what Q8_0 quantisation makes it); every block is
    checked by reconstructing it and comparing the float32 bit patterns, so a matrix of any other
    origin comes back ``None``, never approximately.

    Example:
        >>> x = np.array([[127, -5, 3, 0]], np.float32) * np.float32(np.float16(0.01))
        >>> q, d = q8_blocks(x, block=4)
        >>> q.tolist(), bool(np.array_equal(dequantize_q8_blocks(q, d).view(np.uint32), x.view(np.uint32)))
        ([[127, -5, 3, 0]], True)
        >>> q8_blocks(np.array([[0.1, 0.2, 0.3, 0.4]], np.float32), block=4) is None
        True
    """
    if matrix.ndim != 2 or matrix.dtype != np.float32 or block < 1 or matrix.shape[1] % block:
        return None
    rows, width = matrix.shape
    q = np.empty((rows, width), np.int8)
    scales = np.empty((rows, width // block), np.float16)
    with np.errstate(all="ignore"):  # inf/nan or overflowing scales fail the bit check below
        for start in range(0, rows, _Q8_CHUNK_ROWS):
            x = matrix[start : start + _Q8_CHUNK_ROWS].reshape(-1, width // block, block)
            amax = np.abs(x).max(axis=2)
            d16 = (amax / np.float32(127)).astype(np.float16)
            d = d16.astype(np.float32)[:, :, None]
            qf = np.rint(np.divide(x, d, out=np.zeros_like(x), where=d != 0))
            if not np.all(np.abs(qf) <= 127):
                return None
            qi = qf.astype(np.int8)
            back = qi.astype(np.float32) * d
            if not np.array_equal(back.view(np.uint32), x.view(np.uint32)):
                return None
            q[start : start + _Q8_CHUNK_ROWS] = qi.reshape(-1, width)
            scales[start : start + _Q8_CHUNK_ROWS] = d16
    return q, scales


def dequantize_q8_blocks(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The float32 matrix of :func:`q8_blocks`' ``(q, scales)``: ``float32(q) * float32(scale)`` per
    block (GGUF's Q8_0 arithmetic), converted in row chunks.

    Example:
        >>> dequantize_q8_blocks(np.array([[1, -2]], np.int8), np.array([[0.5]], np.float16)).tolist()
        [[0.5, -1.0]]
    """
    rows, width = q.shape
    block = width // scales.shape[1]
    out = np.empty((rows, width), np.float32)
    for start in range(0, rows, _Q8_CHUNK_ROWS):
        part = q[start : start + _Q8_CHUNK_ROWS].reshape(-1, scales.shape[1], block).astype(np.float32)
        part *= scales[start : start + _Q8_CHUNK_ROWS].astype(np.float32)[:, :, None]
        out[start : start + _Q8_CHUNK_ROWS] = part.reshape(-1, width)
    return out


def tensors_to_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise numpy arrays with safetensors (no pickle)."""
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=dict(metadata or {}))


def write_folder_atomically(folder: str | os.PathLike[str], files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (name → bytes) as ``folder``, replacing it atomically.

    Everything is written to a sibling temporary folder first; only a complete folder is swapped in.
    A failure at any point leaves the previous artifact untouched. Entries of an existing folder that
    are not among ``files`` (a ``.git`` directory, ``.gitattributes``, a user's notes) are carried over.
    """
    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = folder.parent / f".{folder.name}.tmp-{token}"
    old = folder.parent / f".{folder.name}.old-{token}"
    if folder.exists() and not folder.is_dir():
        raise ArtifactError(f"{folder} exists and is not a folder; choose another path")
    tmp.mkdir()
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if folder.exists():
            for entry in folder.iterdir():
                if entry.name not in files:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.copytree(entry, tmp / entry.name, symlinks=True)
                    else:
                        shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)
            os.replace(folder, old)
            try:
                os.replace(tmp, folder)
            except BaseException:
                os.replace(old, folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_versioned_json(
    folder: Path,
    file_name: str,
    *,
    what: str,
    source_hint: str,
    required: Mapping[str, str],
    max_version: int,
) -> dict[str, Any]:
    """Read the JSON description of an artifact and check it: the folder exists, the file is there and
    valid JSON, it carries the ``required`` keys/values, and its integer ``format_version`` is one this
    library reads. Errors name the file and say how to fix it.

    Args:
        what: what the folder should be (e.g. "ir3de router"), for messages.
        source_hint: how such a folder is made (e.g. "save_pretrained"), for messages.
    """
    path = folder / file_name
    if not folder.is_dir():
        raise ArtifactError(
            f"{folder} is not a folder; pass a folder written by {source_hint} or a Hub repo id"
        )
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {file_name}; it is not an {what}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); re-create or re-download the {what}") from e
    if not isinstance(config, dict) or any(config.get(k) != v for k, v in required.items()):
        needs = ", ".join(f'"{k}": "{v}"' for k, v in required.items())
        raise ArtifactError(f"{path} is not an {what} (needs {needs})")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{path} has no integer format_version")
    if version > max_version:
        raise ArtifactVersionError(
            f"{path} was written in format version {version}, newer than this library reads "
            f"({max_version}); upgrade with `pip install -U ir3de`"
        )
    return config


def read_config(folder: Path) -> dict[str, Any]:
    """Read and check a router's ``config.json`` (see :func:`read_versioned_json`)."""
    return read_versioned_json(
        folder,
        CONFIG_FILE,
        what="ir3de router",
        source_hint="save_pretrained",
        required={"library": "ir3de"},
        max_version=FORMAT_VERSION,
    )


def read_file_checked(folder: Path, name: str, config: Mapping[str, Any]) -> bytes:
    """Read one artifact file and check it against the size and sha256 recorded in the config."""
    path = folder / name
    if not path.is_file():
        raise ArtifactError(f"{folder} is missing {name}; re-save or re-download the router")
    data = path.read_bytes()
    expected = (config.get("files") or {}).get(name)
    if expected:
        if len(data) != expected.get("size"):
            raise ArtifactError(
                f"{path} has {len(data)} bytes but config.json records {expected.get('size')}: the file is "
                "truncated or was replaced; re-save or re-download the router"
            )
        if file_sha256(data) != expected.get("sha256"):
            raise ArtifactError(
                f"{path} does not match the sha256 recorded in config.json: the file is corrupted or was "
                "replaced; re-save or re-download the router"
            )
    return data


def read_tensors(folder: Path, name: str, config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Load a safetensors file of the artifact as numpy arrays, with a clear error when corrupted."""
    from safetensors.numpy import load

    data = read_file_checked(folder, name, config)
    try:
        return load(data)
    except Exception as e:  # safetensors raises its own SafetensorError / ValueError types
        raise ArtifactError(
            f"{folder / name} is not a readable safetensors file ({e}); re-save or re-download"
        ) from e


def expect_shape(
    arrays: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], where: str
) -> np.ndarray:
    if key not in arrays:
        raise ArtifactError(f"{where} has no tensor {key!r}")
    arr = arrays[key]
    if tuple(arr.shape) != shape:
        raise ArtifactError(f"{where}: tensor {key!r} has shape {tuple(arr.shape)}, expected {shape}")
    return arr


def text_statistics_spec() -> dict[str, Any]:
    """How text Grams are defined in this version (recorded in ``config.json``/``stat_pack.json``)."""
    from ir3de.fitting.statistics import TEXT_WINDOW, WINDOW_WEIGHT

    return {"window": TEXT_WINDOW, "window_weight": WINDOW_WEIGHT}


def check_text_statistics_spec(recorded: Any, where: str) -> None:
    """Refuse text Grams defined otherwise than this version defines them (they would not add up)."""
    if recorded is not None and recorded != text_statistics_spec():
        raise ArtifactError(
            f"{where}: its text statistics were computed with {recorded}, this ir3de computes "
            f"{text_statistics_spec()}; re-count the texts with this version (or use the ir3de that wrote it)"
        )


def text_gram_tensors(counts: Sequence[Any], hidden: int, prefix: str = "") -> dict[str, np.ndarray]:
    """The optional text-level tensors of a statistics file for experts ``counts`` (``ExpertCounts``),
    each expert in its own form (format 5): ``text_forms`` (D, uint8: 0 none, 1 Gram, 2 rows, 3 token
    ids, 4 Gram as its lower triangle), ``text_grams`` (G × (h+1) × (h+1), the Gram-form experts in
    order), ``text_grams_lower`` (format 8: L × (h+1)(h+2)/2, the lower triangles row by row of the
    Gram-form experts whose Gram is exactly symmetric — all but a Gram made elsewhere — written only
    when there are some: half the bytes, the same bits), ``text_rows`` (R × (h+1),
    the rows-form experts' rows one after the other) and ``text_row_offsets`` (D+1, CSR index into
    ``text_rows``). Experts that keep their texts' token ids (format 6) are saved as those ids only:
    ``text_token_ids`` (int32, all their texts one after the other), ``text_token_offsets`` (int64,
    one more than their texts: CSR index of the texts into the ids) and ``text_token_texts`` (D+1, CSR
    index of the experts into the texts); written only when an expert keeps ids. Empty when no
    expert has text statistics. ``prefix`` goes before every name."""
    if not any(c.has_text_statistics for c in counts):
        return {}
    kept = [c.text_tokens is not None for c in counts]
    forms = np.array([3 if k else _FORM_CODES[c.text_form] for c, k in zip(counts, kept)], np.uint8)
    for i, c in enumerate(counts):
        if forms[i] == 1 and np.array_equal(c.stored_gram, c.stored_gram.T):  # the mirror gives it back
            forms[i] = 4
    grams = [c.stored_gram for c, f in zip(counts, forms) if f == 1]
    lower = _lower_index(hidden + 1)
    triangles = [c.stored_gram[lower] for c, f in zip(counts, forms) if f == 4]
    rows = [c.text_rows if f == 2 else np.zeros((0, hidden + 1)) for c, f in zip(counts, forms)]
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum([r.shape[0] for r in rows], out=offsets[1:])
    out = {
        f"{prefix}text_forms": forms,
        f"{prefix}text_grams": (
            np.stack(grams) if grams else np.zeros((0, hidden + 1, hidden + 1), np.float64)
        ),
        f"{prefix}text_rows": np.concatenate(rows).astype(np.float64),
        f"{prefix}text_row_offsets": offsets,
    }
    if triangles:
        out[f"{prefix}text_grams_lower"] = np.stack(triangles)
    if any(kept):
        tokens = [c.text_tokens for c, k in zip(counts, kept) if k]
        texts = np.zeros(len(counts) + 1, np.int64)
        np.cumsum([c.text_tokens.num_texts if k else 0 for c, k in zip(counts, kept)], out=texts[1:])
        lengths = np.concatenate([t.lengths for t in tokens])
        text_offsets = np.zeros(lengths.size + 1, np.int64)
        np.cumsum(lengths, out=text_offsets[1:])
        out[f"{prefix}text_token_ids"] = np.concatenate([t.ids for t in tokens]).astype(np.int32)
        out[f"{prefix}text_token_offsets"] = text_offsets
        out[f"{prefix}text_token_texts"] = texts
    return out


#: ``text_forms`` codes of a statistics file (format 5; 3, token ids: format 6; 4, a Gram as its lower
#: triangle: format 8).
_FORM_CODES = {None: 0, "gram": 1, "rows": 2, "tokens": 3}


@functools.lru_cache(maxsize=4)
def _lower_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the lower triangle of an n × n matrix, row by row (diagonal included)."""
    rows, cols = np.tril_indices(n)
    rows.flags.writeable = False
    cols.flags.writeable = False
    return rows, cols


def _mirrored(triangle: np.ndarray, n: int) -> np.ndarray:
    """The symmetric n × n float64 matrix whose lower triangle (row by row) is ``triangle``."""
    rows, cols = _lower_index(n)
    out = np.empty((n, n), np.float64)
    out[rows, cols] = triangle
    out[cols, rows] = triangle
    return out


def read_text_statistics(
    arrays: Mapping[str, np.ndarray], num_experts: int, hidden: int, where: str, prefix: str = ""
) -> list[dict[str, Any]]:
    """Per-expert text statistics of a statistics file, as ``ExpertCounts`` keyword arguments
    (``{"stored_gram": G}``, ``{"text_rows": Y}``, ``{"text_tokens": TextTokens}`` or ``{}``); the
    inverse of :func:`text_gram_tensors`. Reads formats 5–8 (per-expert forms) and the older layout
    (``text_grams`` D × (h+1)² + ``has_text_gram``), and files without text statistics."""
    if f"{prefix}text_forms" not in arrays:
        if f"{prefix}text_grams" not in arrays and f"{prefix}has_text_gram" not in arrays:
            return [{} for _ in range(num_experts)]
        grams = expect_shape(arrays, f"{prefix}text_grams", (num_experts, hidden + 1, hidden + 1), where)
        flags = expect_shape(arrays, f"{prefix}has_text_gram", (num_experts,), where)
        _expect_float64(grams, f"{prefix}text_grams", where)
        return [{"stored_gram": np.array(grams[i])} if flags[i] else {} for i in range(num_experts)]
    forms = expect_shape(arrays, f"{prefix}text_forms", (num_experts,), where)
    if np.any(forms > 4):
        raise ArtifactError(
            f"{where}: tensor '{prefix}text_forms' holds unknown codes (0 to 4 expected); "
            "upgrade ir3de to read it"
        )
    num_grams, num_lower = int(np.sum(forms == 1)), int(np.sum(forms == 4))
    grams = expect_shape(arrays, f"{prefix}text_grams", (num_grams, hidden + 1, hidden + 1), where)
    size = (hidden + 1) * (hidden + 2) // 2
    lower = (
        expect_shape(arrays, f"{prefix}text_grams_lower", (num_lower, size), where)
        if num_lower
        else np.zeros((0, size), np.float64)
    )
    _expect_float64(lower, f"{prefix}text_grams_lower", where)
    offsets = expect_shape(arrays, f"{prefix}text_row_offsets", (num_experts + 1,), where)
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or np.any((np.diff(offsets) > 0) & (forms != 2)):
        raise ArtifactError(
            f"{where}: {prefix}text_row_offsets are not a valid index of the rows-form experts"
        )
    rows = expect_shape(arrays, f"{prefix}text_rows", (int(offsets[-1]), hidden + 1), where)
    _expect_float64(grams, f"{prefix}text_grams", where)
    _expect_float64(rows, f"{prefix}text_rows", where)
    tokens = _read_text_tokens(arrays, forms, hidden, where, prefix) if np.any(forms == 3) else []
    out: list[dict[str, Any]] = []
    gram_index = lower_index = 0
    for i, form in enumerate(forms):
        if form == 1:
            out.append({"stored_gram": np.array(grams[gram_index])})
            gram_index += 1
        elif form == 4:
            out.append({"stored_gram": _mirrored(lower[lower_index], hidden + 1)})
            lower_index += 1
        elif form == 2:
            out.append({"text_rows": np.array(rows[int(offsets[i]) : int(offsets[i + 1])])})
        elif form == 3:
            out.append({"text_tokens": tokens[i]})
        else:
            out.append({})
    return out


def _read_text_tokens(
    arrays: Mapping[str, np.ndarray], forms: np.ndarray, hidden: int, where: str, prefix: str
) -> list[Any]:
    """Per expert its ``TextTokens`` (``None`` for experts of another form), checked."""
    from ir3de.fitting.statistics import TextTokens

    d = forms.size
    texts = expect_shape(arrays, f"{prefix}text_token_texts", (d + 1,), where)
    if texts[0] != 0 or np.any(np.diff(texts) < 0) or np.any((np.diff(texts) > 0) & (forms != 3)):
        raise ArtifactError(
            f"{where}: {prefix}text_token_texts are not a valid index of the token-ids experts"
        )
    text_offsets = expect_shape(arrays, f"{prefix}text_token_offsets", (int(texts[-1]) + 1,), where)
    if text_offsets[0] != 0 or np.any(np.diff(text_offsets) <= 0):
        raise ArtifactError(f"{where}: {prefix}text_token_offsets are not a valid index of non-empty texts")
    ids = expect_shape(arrays, f"{prefix}text_token_ids", (int(text_offsets[-1]),), where)
    if ids.dtype != np.int32:
        raise ArtifactError(f"{where}: tensor '{prefix}text_token_ids' is {ids.dtype}, expected int32")
    out: list[Any] = []
    for i in range(d):
        if forms[i] != 3:
            out.append(None)
            continue
        lo, hi = int(texts[i]), int(texts[i + 1])
        first, last = int(text_offsets[lo]), int(text_offsets[hi])
        out.append(TextTokens(ids[first:last], text_offsets[lo : hi + 1] - first, hidden + 1))
    return out


def _expect_float64(arr: np.ndarray, key: str, where: str) -> None:
    if arr.dtype != np.float64:
        raise ArtifactError(f"{where}: tensor {key!r} is {arr.dtype}, expected float64")
