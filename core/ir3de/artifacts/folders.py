"""Router folders and stat-pack folders: what is written, and how it is read back and checked.

The model says how it is saved (in the manner of huggingface_hub's ``ModelHubMixin``):
:meth:`ir3de.Router.save_pretrained` hands a :class:`RouterData` to :func:`save_router`, and
:meth:`ir3de.Router.from_pretrained` builds itself from :func:`load_router`. The Hub layer
(:mod:`ir3de.artifacts.hub`) only moves these folders. This module never imports the router.

Layout: see :mod:`ir3de.artifacts.format` (DESIGN §4). Safetensors + JSON only; writes are atomic.

Example:
    >>> data = load_router("my-router")                 # doctest: +SKIP
    >>> data.state.experts, data.config.lam             # doctest: +SKIP
    (('math', 'code'), 0.1)
    >>> save_router("copy-of-my-router", data)          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ir3de.artifacts import format as artifact
from ir3de.config import RouterConfig
from ir3de.errors import ArtifactError, Ir3deError, TokenizerMismatchError
from ir3de.fitting.adaptation import (
    LEGACY_ADAPT_OPTIONS,
    AdaptationBlock,
    AdaptationPrompts,
    AdaptationSettings,
)
from ir3de.fitting.pipeline import ExpertStatistics, RoutingState
from ir3de.fitting.statistics import ExpertCounts
from ir3de.table import RouteTable

__all__ = [
    "FINGERPRINT_KEYS",
    "PACK_CONFIG_FILE",
    "PACK_FORMAT_VERSION",
    "PackData",
    "RouterData",
    "check_fingerprints",
    "load_pack",
    "load_router",
    "pack_config_dict",
    "read_pack_config",
    "router_config_dict",
    "save_pack",
    "save_router",
]

PACK_CONFIG_FILE = "stat_pack.json"
#: 2 added the optional traffic block (learned labelled prompts); version-1 packs still load.
#: 3 added the optional adaptation block (unlabelled served prompts); version-2 packs still load.
#: 4 stores the text statistics in their smaller exact form (rows or Gram, router format 5).
#: 5 may store them as the texts' token ids (``keep_token_ids``, router format 6).
#: 6 stores a symmetric text Gram as its lower triangle (router format 8).
PACK_FORMAT_VERSION = 6
#: Prefix of the traffic tensors in a statistics file (same layout as the corpus statistics).
TRAFFIC_PREFIX = "traffic_"
#: Prefix of the adaptation tensors in a statistics file (format 4; :func:`_adaptation_tensors`).
ADAPTATION_PREFIX = "adaptation_"
FINGERPRINT_KEYS = ("tokenizer_sha256", "embedding_sha256", "vocab_size", "hidden_size")


def _version() -> str:
    from ir3de import __version__

    return __version__


def _json_bytes(config: Mapping[str, Any]) -> bytes:
    return (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------- routers


@dataclass(frozen=True, eq=False)
class RouterData:
    """Everything a saved router holds.

    Attributes:
        config: the router's settings.
        state: the routing state (experts, route table, weights, tokenizer, fingerprint, embedding
            source, excluded ids, descriptions, evaluation figures).
        statistics: expert → its additive statistics (corpus counts, learned traffic block,
            adaptation block), in ``state.experts`` order.
        adapted: the kept rows of the adapted prompts (no text) and their settings, or ``None``.
    """

    config: RouterConfig
    state: RoutingState
    statistics: Mapping[str, ExpertStatistics]
    adapted: tuple[AdaptationPrompts, AdaptationSettings] | None = None

    @property
    def adaptation(self) -> dict[str, AdaptationBlock]:
        """Expert → adaptation block, for the experts that have one."""
        return {n: s.adaptation for n, s in self.statistics.items() if s.adaptation is not None}

    @property
    def traffic(self) -> dict[str, ExpertCounts]:
        """Expert → learned traffic block, for the experts that have one."""
        return {n: s.traffic for n, s in self.statistics.items() if s.traffic is not None}


def _traffic_entry(block: ExpertCounts | None) -> dict[str, int] | None:
    if block is None:
        return None
    return {"num_prompts": block.num_texts, "num_tokens": block.num_tokens}


def router_config_dict(data: RouterData) -> dict[str, Any]:
    """The ``config.json`` content of a router (without file checksums).

    Example:
        >>> router_config_dict(RouterData(router.config, router.state, router.statistics))  # doctest: +SKIP
    """
    state, counts, traffic = data.state, {n: s.counts for n, s in data.statistics.items()}, data.traffic
    return {
        "library": "ir3de",
        "format_version": artifact.FORMAT_VERSION,
        "library_version": _version(),
        "experts": [
            {
                "name": name,
                "description": state.descriptions.get(name, ""),
                "num_texts": counts[name].num_texts,
                "num_tokens": counts[name].num_tokens,
                "num_distinct_tokens": int(counts[name].token_ids.size),
                **({"traffic": _traffic_entry(traffic[name])} if name in traffic else {}),
            }
            for name in state.experts
        ],
        "settings": data.config.to_dict(),
        "text_statistics": artifact.text_statistics_spec(),
        # the experts saved as their texts' token ids (keep_token_ids): the artifact holds tokenized text
        "tokenized_text_experts": [n for n in state.experts if counts[n].text_tokens is not None],
        "table_form": state.table.form,
        "vocab_size": state.table.vocab_size,
        "hidden_size": int(state.weights.shape[0] - 1),
        "excluded_ids": [int(i) for i in state.excluded_ids],
        "embedding_source": None if state.embedding_source is None else dict(state.embedding_source),
        "fingerprint": None if state.fingerprint is None else dict(state.fingerprint),
        "evaluation": None if state.evaluation is None else dict(state.evaluation),
        **({"adaptation": _adaptation_entry(data)} if data.adaptation else {}),
    }


def _adaptation_entry(data: RouterData) -> dict[str, Any]:
    """The ``adaptation`` object of ``config.json``: settings, kept prompts, per-expert soft prompt counts."""
    rows, settings = data.adapted or (None, None)
    return {
        "settings": None if settings is None else settings.to_dict(),
        "num_prompts": 0 if rows is None else rows.num_prompts,
        "experts": {n: round(b.prompts, 6) for n, b in data.adaptation.items()},
    }


def _adaptation_tensors(
    names: list[str], blocks: Mapping[str, AdaptationBlock], rows: AdaptationPrompts | None, hidden: int
) -> dict[str, np.ndarray]:
    """Per expert: Gram, soft prompt count, weight and share (zeros and flag 0 without a block); the
    kept rows (means, token counts)."""
    p = ADAPTATION_PREFIX
    grams = np.zeros((len(names), hidden + 1, hidden + 1), np.float64)
    numbers = np.zeros((len(names), 3), np.float64)
    for i, n in enumerate(names):
        if n in blocks:
            grams[i], numbers[i] = blocks[n].gram, (blocks[n].prompts, blocks[n].weight, blocks[n].share)
    rows = rows if rows is not None else AdaptationPrompts.empty(hidden)
    return {
        f"{p}grams": grams,
        f"{p}numbers": numbers,
        f"has_{p}block": np.array([n in blocks for n in names], np.uint8),
        f"{p}means": rows.means,
        f"{p}tokens": rows.tokens,
    }


def _read_adaptation(
    stats: Mapping[str, np.ndarray], names: list[str], hidden: int, where: str, recorded: Any
) -> tuple[dict[str, AdaptationBlock], AdaptationPrompts | None, AdaptationSettings | None]:
    """The adaptation of a statistics file (none before format 4), checked against ``recorded`` (the
    ``adaptation`` object of ``config.json``)."""
    p = ADAPTATION_PREFIX
    if recorded is None:
        if f"has_{p}block" in stats:
            raise ArtifactError(f"{where} holds an adaptation that config.json does not record")
        return {}, None, None
    d = len(names)
    grams = artifact.expect_shape(stats, f"{p}grams", (d, hidden + 1, hidden + 1), where)
    numbers = artifact.expect_shape(stats, f"{p}numbers", (d, 3), where)
    flags = artifact.expect_shape(stats, f"has_{p}block", (d,), where)
    tokens = artifact.expect_shape(stats, f"{p}tokens", (int(recorded.get("num_prompts", -1)),), where)
    means = artifact.expect_shape(stats, f"{p}means", (tokens.size, hidden), where)
    try:
        blocks = {n: AdaptationBlock(grams[i], *numbers[i]) for i, n in enumerate(names) if flags[i]}
        settings = recorded.get("settings")
        return (
            blocks,
            AdaptationPrompts(means, tokens) if tokens.size else None,
            # settings saved before share_floor / confidence existed adapted without them: keep that
            None if settings is None else AdaptationSettings.from_dict({**LEGACY_ADAPT_OPTIONS, **settings}),
        )
    except (ValueError, TypeError, Ir3deError) as e:
        raise ArtifactError(f"{where}: the adaptation is invalid ({e})") from e


def _counts_tensors(counts: list[ExpertCounts], hidden: int, prefix: str = "") -> dict[str, np.ndarray]:
    """CSR counts (+ optional text Grams) of several experts, tensor names prefixed with ``prefix``."""
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum([c.token_ids.size for c in counts], out=offsets[1:])
    return {
        f"{prefix}token_ids": np.concatenate([c.token_ids for c in counts]),
        f"{prefix}counts": np.concatenate([c.counts for c in counts]),
        f"{prefix}offsets": offsets,
        f"{prefix}num_texts": np.array([c.num_texts for c in counts], np.int64),
        **artifact.text_gram_tensors(counts, hidden=hidden, prefix=prefix),
    }


def _statistics_bytes(
    names: list[str],
    counts: list[ExpertCounts],
    hidden: int,
    traffic: Mapping[str, ExpertCounts] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> bytes:
    """One statistics file (CSR counts + optional text Grams) for experts ``names``, plus their
    traffic blocks under :data:`TRAFFIC_PREFIX` when any expert has one (``has_traffic``: D flags)."""
    tensors = _counts_tensors(counts, hidden)
    if traffic:
        empty = ExpertCounts.empty()
        blocks = [traffic.get(n, empty) for n in names]
        tensors.update(_counts_tensors(blocks, hidden, TRAFFIC_PREFIX))
        tensors["has_traffic"] = np.array([n in traffic for n in names], np.uint8)
    tensors.update(extra or {})
    return artifact.tensors_to_bytes(
        tensors, metadata={"format": "ir3de-statistics", "experts": json.dumps(names)}
    )


def save_router(folder: str | os.PathLike[str], data: RouterData) -> Path:
    """Write a router folder atomically (a failure leaves any previous artifact intact)."""
    from ir3de.artifacts.model_card import render_model_card

    state = data.state
    names = list(state.experts)
    table = state.table
    # the table in its own form: dense logits, or (factored) the embedding matrix it multiplies by W —
    # as int8 blocks + float16 scales when they give it back bit for bit (Q8_0 embeddings), else float32
    held: dict[str, np.ndarray]
    block = None
    if table.form == "dense":
        held = {"logits": table.logits}
    else:
        assert table.matrix is not None  # a factored table holds the embedding matrix
        blocks = artifact.q8_blocks(table.matrix)
        if blocks is None:
            held = {"table_matrix": table.matrix}
        else:
            held = {"table_matrix_q8": blocks[0], "table_matrix_scales": blocks[1]}
            block = artifact.Q8_BLOCK
    router_bytes = artifact.tensors_to_bytes(
        {**held, "weights": state.weights, "ridge_solution": state.ridge_solution},
        metadata={"format": "ir3de-route-table", "experts": json.dumps(names), "table_form": table.form},
    )
    hidden = state.weights.shape[0] - 1
    rows = data.adapted[0] if data.adapted else None
    extra = _adaptation_tensors(names, data.adaptation, rows, hidden) if data.adaptation else None
    stats_bytes = _statistics_bytes(
        names, [data.statistics[n].counts for n in names], hidden, data.traffic, extra
    )
    files = {
        artifact.ROUTER_FILE: router_bytes,
        artifact.STATISTICS_FILE: stats_bytes,
        artifact.TOKENIZER_FILE: state.tokenizer.to_str().encode("utf-8"),
    }
    config = router_config_dict(data)
    if block is not None:
        config["table_matrix_block"] = block
    config["files"] = {
        name: {"sha256": artifact.file_sha256(content), "size": len(content)}
        for name, content in files.items()
    }
    files[artifact.CONFIG_FILE] = _json_bytes(config)
    files[artifact.CARD_FILE] = render_model_card(config).encode("utf-8")
    return artifact.write_folder_atomically(folder, files)


def _read_counts(
    stats: Mapping[str, np.ndarray], names: list[str], vocab: int, hidden: int, where: str, prefix: str = ""
) -> list[ExpertCounts]:
    d = len(names)
    offsets = artifact.expect_shape(stats, f"{prefix}offsets", (d + 1,), where)
    num_texts = artifact.expect_shape(stats, f"{prefix}num_texts", (d,), where)
    nnz = int(offsets[-1]) if offsets.size else 0
    token_ids = artifact.expect_shape(stats, f"{prefix}token_ids", (nnz,), where)
    counts = artifact.expect_shape(stats, f"{prefix}counts", (nnz,), where)
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ArtifactError(f"{where}: {prefix}offsets are not a valid CSR index")
    if nnz and (token_ids.min() < 0 or token_ids.max() >= vocab):
        raise ArtifactError(f"{where}: token ids outside the vocabulary of {vocab}")
    text = artifact.read_text_statistics(stats, d, hidden, where, prefix=prefix)
    for entry in text:
        tokens = entry.get("text_tokens")
        if tokens is not None and tokens.ids.size and int(tokens.ids.max()) >= vocab:
            raise ArtifactError(f"{where}: text token ids outside the vocabulary of {vocab}")
    what = "traffic" if prefix else "counts"
    out = []
    for i, name in enumerate(names):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        try:
            out.append(ExpertCounts(token_ids[lo:hi], counts[lo:hi], int(num_texts[i]), **text[i]))
        except ValueError as e:
            raise ArtifactError(f"{where}: {what} of expert {name!r} are invalid ({e})") from e
    return out


def _read_traffic(
    stats: Mapping[str, np.ndarray],
    names: list[str],
    vocab: int,
    hidden: int,
    where: str,
    recorded: Mapping[str, Any],
) -> dict[str, ExpertCounts]:
    """The traffic blocks of a statistics file (none in files before format 3), checked against the
    ``traffic`` entries ``recorded`` in the config (expert → {num_prompts, num_tokens})."""
    if "has_traffic" not in stats:
        if recorded:
            raise ArtifactError(
                f"{where} holds no traffic but the config records traffic for {sorted(recorded)}: the "
                "statistics file is not the one written with this config"
            )
        return {}
    flags = artifact.expect_shape(stats, "has_traffic", (len(names),), where)
    blocks = _read_counts(stats, names, vocab, hidden, where, prefix=TRAFFIC_PREFIX)
    traffic = {n: b for n, b, f in zip(names, blocks, flags) if f}
    for name in sorted(set(traffic) | set(recorded)):
        entry = recorded.get(name)
        block = traffic.get(name)
        if entry is None or block is None or _traffic_entry(block) != dict(entry):
            raise ArtifactError(
                f"{where}: the traffic of expert {name!r} ({_traffic_entry(block)}) does not match the "
                f"config's record ({entry}); the files were not written together"
            )
    return traffic


#: Parsed tokenizers by the sha256 of their file (parsing one takes ~0.4 s; many revisions of a
#: router, loaded one after the other by a serving worker, share one). Tokenizers are used read-only.
_TOKENIZERS: dict[str, tuple[Any, str]] = {}
_TOKENIZERS_LOCK = threading.Lock()
_TOKENIZERS_MAX = 4


def _parse_tokenizer(path: Path, data: bytes) -> tuple[Any, str]:
    """The tokenizer of ``data`` and the sha256 of its canonical text, parsed once per content."""
    import tokenizers

    key = artifact.file_sha256(data)
    with _TOKENIZERS_LOCK:
        cached = _TOKENIZERS.get(key)
    if cached is not None:
        return cached
    try:
        tokenizer = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:
        raise ArtifactError(f"{path / artifact.TOKENIZER_FILE} is not a valid tokenizer ({e})") from e
    tokenizer.no_truncation()
    tokenizer.no_padding()
    parsed = (tokenizer, artifact.file_sha256(tokenizer.to_str().encode("utf-8")))
    with _TOKENIZERS_LOCK:
        while len(_TOKENIZERS) >= _TOKENIZERS_MAX:
            _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
        _TOKENIZERS[key] = parsed
    return parsed


def _read_tokenizer(path: Path, config: Mapping[str, Any], vocab: int) -> Any:
    data = artifact.read_file_checked(path, artifact.TOKENIZER_FILE, config)
    tokenizer, tok_sha = _parse_tokenizer(path, data)
    fingerprint = config.get("fingerprint") or {}
    if fingerprint.get("tokenizer_sha256") and fingerprint["tokenizer_sha256"] != tok_sha:
        raise TokenizerMismatchError(
            f"{path / artifact.TOKENIZER_FILE} is not the tokenizer this router was fitted with "
            "(its sha256 differs from config.json's fingerprint); restore the original tokenizer.json"
        )
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab:
        raise TokenizerMismatchError(
            f"{path / artifact.TOKENIZER_FILE} has {size} ids but the route table has {vocab} rows: "
            "the tokenizer does not belong to this table"
        )
    return tokenizer


def _read_table_matrix(
    tensors: Mapping[str, np.ndarray], block: Any, vocab: int, hidden: int, where: str
) -> np.ndarray:
    """A factored table's (V, h) float32 matrix: ``table_matrix``, or (format 7, ``block`` given) the
    int8 blocks and float16 scales of :func:`~ir3de.artifacts.format.q8_blocks`, dequantised."""
    if block is None:
        return artifact.expect_shape(tensors, "table_matrix", (vocab, hidden), where)
    if not isinstance(block, int) or isinstance(block, bool) or block < 1 or hidden % block:
        raise ArtifactError(
            f"{where}: config.json's table_matrix_block {block!r} does not divide the hidden size {hidden}; "
            "re-save or re-download the router"
        )
    q = artifact.expect_shape(tensors, "table_matrix_q8", (vocab, hidden), where)
    scales = artifact.expect_shape(tensors, "table_matrix_scales", (vocab, hidden // block), where)
    if q.dtype != np.int8 or scales.dtype != np.float16:
        raise ArtifactError(
            f"{where}: table_matrix_q8 / table_matrix_scales are {q.dtype} / {scales.dtype}, expected int8 / "
            "float16; re-save or re-download the router"
        )
    return artifact.dequantize_q8_blocks(q, scales)


def load_router(folder: str | os.PathLike[str]) -> RouterData:
    """Read and check a router folder written by :func:`save_router`.

    Raises:
        ArtifactError: missing, truncated or corrupted files, or inconsistent shapes.
        ArtifactVersionError: written by a newer format version.
        TokenizerMismatchError: the tokenizer does not match the table.
    """
    path = Path(folder)
    config = artifact.read_config(path)
    try:
        experts_meta = config["experts"]
        names = [e["name"] for e in experts_meta]
        vocab, hidden = int(config["vocab_size"]), int(config["hidden_size"])
        settings = RouterConfig.from_dict(config["settings"])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ArtifactError):
            raise
        raise ArtifactError(f"{path / artifact.CONFIG_FILE} is incomplete or malformed ({e!r})") from e
    if len(set(names)) != len(names) or len(names) < 2:
        raise ArtifactError(f"{path}: config.json lists experts {names}; need at least 2 unique names")
    d = len(names)
    where = str(path / artifact.ROUTER_FILE)
    tensors = artifact.read_tensors(path, artifact.ROUTER_FILE, config)
    form = config.get("table_form", "dense")
    if form not in ("dense", "factored"):
        raise ArtifactError(f"{path / artifact.CONFIG_FILE}: unknown table_form {form!r}; upgrade ir3de")
    if form == "dense":
        table_values = artifact.expect_shape(tensors, "logits", (vocab, d), where)
    else:
        table_values = _read_table_matrix(tensors, config.get("table_matrix_block"), vocab, hidden, where)
    weights = artifact.expect_shape(tensors, "weights", (hidden + 1, d), where)
    solution = artifact.expect_shape(tensors, "ridge_solution", (hidden + 1, d), where)
    stats = artifact.read_tensors(path, artifact.STATISTICS_FILE, config)
    counts = _read_counts(stats, names, vocab, hidden, str(path / artifact.STATISTICS_FILE))
    recorded = {e["name"]: e["traffic"] for e in experts_meta if e.get("traffic") is not None}
    traffic = _read_traffic(stats, names, vocab, hidden, str(path / artifact.STATISTICS_FILE), recorded)
    blocks, rows, adapt_settings = _read_adaptation(
        stats, names, hidden, str(path / artifact.STATISTICS_FILE), config.get("adaptation")
    )
    if any(c.has_text_statistics for c in [*counts, *traffic.values()]):
        artifact.check_text_statistics_spec(config.get("text_statistics"), str(path / artifact.CONFIG_FILE))
    tokenizer = _read_tokenizer(path, config, vocab)
    excluded = np.asarray(config.get("excluded_ids", []), np.int64)
    descriptions = {m["name"]: m.get("description", "") for m in experts_meta}
    if form == "dense":
        table = RouteTable.from_logits(table_values, excluded)
    else:
        table = RouteTable.factored(table_values, weights, excluded)
    state = RoutingState(
        tuple(names),
        table,
        weights,
        solution,
        tokenizer=tokenizer,
        fingerprint=config.get("fingerprint") or None,
        embedding_source=config.get("embedding_source"),
        excluded_ids=excluded,
        descriptions=descriptions,
        evaluation=config.get("evaluation"),
    )
    statistics = {
        n: ExpertStatistics(c, descriptions.get(n, ""), traffic.get(n), adaptation=blocks.get(n))
        for n, c in zip(names, counts)
    }
    adapted = (rows, adapt_settings) if rows is not None and adapt_settings is not None else None
    return RouterData(config=settings, state=state, statistics=statistics, adapted=adapted)


# ---------------------------------------------------------------------------------------------- stat packs


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 else text


def check_fingerprints(
    expected: Mapping[str, Any] | None, actual: Mapping[str, Any] | None, what: str, against: str
) -> None:
    """Raise :class:`TokenizerMismatchError` unless two fingerprints name the same tokenizer + embeddings."""
    if not expected or not actual:
        raise TokenizerMismatchError(
            f"{what} or {against} has no tokenizer/embedding fingerprint, so the statistics cannot be "
            "checked; re-create it with this version of ir3de"
        )
    for key in FINGERPRINT_KEYS:
        if expected.get(key) != actual.get(key):
            label = {"tokenizer_sha256": "tokenizer", "embedding_sha256": "embedding matrix"}.get(key, key)
            raise TokenizerMismatchError(
                f"{what} was built on a different {label} than {against} ({key} {_short(actual.get(key))} vs "
                f"{_short(expected.get(key))}): statistics only merge into a router built on the same tokenizer "
                "and embedding matrix; recompute the pack with those embeddings (`ir3de stats --embeddings ...`)"
            )


def read_pack_config(folder: Path) -> dict[str, Any]:
    """Read and check ``stat_pack.json``: present, valid JSON, a stat pack, a format version we read."""
    path = folder / PACK_CONFIG_FILE
    config = artifact.read_versioned_json(
        folder,
        PACK_CONFIG_FILE,
        what="ir3de stat pack",
        source_hint="`ir3de stats`",
        required={"library": "ir3de", "kind": "stat_pack"},
        max_version=PACK_FORMAT_VERSION,
    )
    expert = config.get("expert")
    fingerprint = config.get("fingerprint")
    if not isinstance(expert, dict) or not isinstance(expert.get("name"), str) or not expert["name"].strip():
        raise ArtifactError(f"{path} names no expert (an 'expert' object with a 'name')")
    if not isinstance(fingerprint, dict) or any(k not in fingerprint for k in FINGERPRINT_KEYS):
        raise ArtifactError(
            f"{path} has no complete tokenizer/embedding fingerprint {list(FINGERPRINT_KEYS)}"
        )
    for key in ("num_texts", "num_tokens"):
        if not isinstance(expert.get(key), int):
            raise ArtifactError(f"{path}: expert.{key} must be an integer")
    return config


@dataclass(frozen=True, eq=False)
class PackData:
    """One expert's sufficient statistics plus what they were counted with (a stat pack's content).

    Attributes:
        name: the expert's name (the router column it becomes).
        counts: the sparse token histogram (and text Gram).
        fingerprint: ``TokenEmbeddings.fingerprint()`` of the tokenizer + embeddings used.
        description: one line about the expert (shown in model cards).
        embedding_source: the ``TokenEmbeddings.source`` dict, so a merger can load the same matrix.
        excluded_ids: token ids left out of the counts (special/padding tokens).
        traffic: the expert's learned traffic (labelled served prompts, counted like the corpus and
            kept apart from it), or ``None``.
        adaptation: the expert's adaptation block (unlabelled served prompts, soft pseudo-labels; no
            prompt rows), or ``None``.
    """

    name: str
    counts: ExpertCounts
    fingerprint: dict[str, Any]
    description: str = ""
    embedding_source: dict[str, Any] | None = None
    excluded_ids: tuple[int, ...] = field(default=())
    traffic: ExpertCounts | None = None
    adaptation: AdaptationBlock | None = None

    def check_compatible(self, fingerprint: Mapping[str, Any] | None, against: str = "the router") -> None:
        """Raise :class:`TokenizerMismatchError` unless ``fingerprint`` is this pack's tokenizer + embeddings."""
        check_fingerprints(fingerprint, self.fingerprint, f"stat pack {self.name!r}", against)


def pack_config_dict(pack: PackData) -> dict[str, Any]:
    """The ``stat_pack.json`` content (without file checksums)."""
    counts = pack.counts
    return {
        "library": "ir3de",
        "kind": "stat_pack",
        "format_version": PACK_FORMAT_VERSION,
        "library_version": _version(),
        "expert": {
            "name": pack.name,
            "description": pack.description,
            "num_texts": counts.num_texts,
            "num_tokens": counts.num_tokens,
            "num_distinct_tokens": int(counts.token_ids.size),
            "has_text_statistics": counts.has_text_statistics,
            "tokenized_text": counts.text_tokens is not None,
            **({"traffic": _traffic_entry(pack.traffic)} if pack.traffic is not None else {}),
            **({"adaptation": {"prompts": pack.adaptation.prompts}} if pack.adaptation is not None else {}),
        },
        "vocab_size": pack.fingerprint.get("vocab_size"),
        "hidden_size": pack.fingerprint.get("hidden_size"),
        "embedding_source": pack.embedding_source,
        "fingerprint": dict(pack.fingerprint),
        "excluded_ids": list(pack.excluded_ids),
        "text_statistics": artifact.text_statistics_spec(),
    }


def save_pack(folder: str | os.PathLike[str], pack: PackData) -> Path:
    """Write a stat pack atomically: ``stat_pack.json``, ``statistics.safetensors`` and its card."""
    from ir3de.artifacts.model_card import render_stat_pack_card

    traffic = {pack.name: pack.traffic} if pack.traffic is not None else None
    hidden = int(pack.fingerprint["hidden_size"])
    blocks = {pack.name: pack.adaptation} if pack.adaptation is not None else {}
    extra = _adaptation_tensors([pack.name], blocks, None, hidden) if blocks else None
    stats = _statistics_bytes([pack.name], [pack.counts], hidden, traffic, extra)
    config = pack_config_dict(pack)
    config["files"] = {artifact.STATISTICS_FILE: {"sha256": artifact.file_sha256(stats), "size": len(stats)}}
    files = {
        PACK_CONFIG_FILE: _json_bytes(config),
        artifact.STATISTICS_FILE: stats,
        artifact.CARD_FILE: render_stat_pack_card(config).encode("utf-8"),
    }
    return artifact.write_folder_atomically(folder, files)


def load_pack(folder: str | os.PathLike[str]) -> PackData:
    """Read and check a stat pack folder written by :func:`save_pack`.

    Raises:
        ArtifactError: missing, truncated or corrupted files, or inconsistent counts.
        ArtifactVersionError: written by a newer format version.
    """
    folder = Path(folder)
    config = read_pack_config(folder)
    where = str(folder / artifact.STATISTICS_FILE)
    if artifact.STATISTICS_FILE not in (config.get("files") or {}):
        raise ArtifactError(
            f"{folder / PACK_CONFIG_FILE} records no size/sha256 for {artifact.STATISTICS_FILE}"
        )
    tensors = artifact.read_tensors(folder, artifact.STATISTICS_FILE, config)
    offsets = artifact.expect_shape(tensors, "offsets", (2,), where)
    if int(offsets[0]) != 0 or int(offsets[1]) < 0:
        raise ArtifactError(f"{where}: offsets {offsets.tolist()} are not a valid CSR index")
    expert = config["expert"]
    fingerprint = config["fingerprint"]
    vocab = fingerprint.get("vocab_size")
    hidden = fingerprint.get("hidden_size")
    if not isinstance(vocab, int):
        raise ArtifactError(f"{where}: token ids outside the vocabulary of {vocab}")
    if not isinstance(hidden, int) or hidden < 1:
        raise ArtifactError(
            f"{folder / PACK_CONFIG_FILE}: fingerprint.hidden_size must be a positive integer"
        )
    (counts,) = _read_counts(tensors, [expert["name"]], vocab, hidden, where)
    recorded = {expert["name"]: expert["traffic"]} if expert.get("traffic") is not None else {}
    traffic = _read_traffic(tensors, [expert["name"]], vocab, hidden, where, recorded).get(expert["name"])
    recorded_adaptation = None if expert.get("adaptation") is None else {"num_prompts": 0}
    adaptation = _read_adaptation(tensors, [expert["name"]], hidden, where, recorded_adaptation)[0]
    if counts.has_text_statistics or (traffic is not None and traffic.has_text_statistics):
        artifact.check_text_statistics_spec(config.get("text_statistics"), str(folder / PACK_CONFIG_FILE))
    if counts.num_texts != expert["num_texts"] or counts.num_tokens != expert["num_tokens"]:
        raise ArtifactError(
            f"{where} holds {counts.num_texts} texts / {counts.num_tokens} tokens but "
            f"{PACK_CONFIG_FILE} records {expert['num_texts']} / {expert['num_tokens']}"
        )
    return PackData(
        expert["name"],
        counts,
        dict(fingerprint),
        str(expert.get("description") or ""),
        config.get("embedding_source"),
        tuple(int(i) for i in config.get("excluded_ids") or ()),
        traffic,
        adaptation.get(expert["name"]),
    )
