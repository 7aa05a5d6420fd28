"""Stat packs: one expert's token statistics, published without its data or any weights.

An IR3DE router's statistics are token histograms, and histograms add exactly (DESIGN §2). A domain
owner can therefore count its own corpus locally and publish only the counts; anyone with a router
on the same tokenizer and embedding matrix merges them, and the result equals a router fitted
centrally on the same texts.

A stat pack is a folder (or a Hub model repo) with

* ``stat_pack.json`` — format version, the expert's name and description, corpus sizes (texts,
  tokens, distinct tokens), the embedding source, the fingerprint of the tokenizer and embedding
  matrix (sha256 + sizes), and the size and sha256 of the statistics file;
* ``statistics.safetensors`` — the sparse counts (``token_ids``, ``counts``, ``offsets``,
  ``num_texts``; the router's CSR layout with one expert) and the expert's text Gram (``text_grams``,
  ``has_text_gram``: the statistics of text-level routers, see :mod:`ir3de.statistics`);
* ``README.md`` — a card saying what the pack holds and how to merge it.

It never holds text: only which token ids occur and how often, and the second moments of the texts'
mean embeddings.

Example:
    >>> from ir3de import Router, TokenEmbeddings                               # doctest: +SKIP
    >>> emb = TokenEmbeddings.default()                                          # doctest: +SKIP
    >>> StatPack.compute("math", math_texts, emb).save_pretrained("math-pack")   # doctest: +SKIP
    >>> StatPack.compute("code", code_texts, emb).push_to_hub("org/code-pack")   # doctest: +SKIP
    >>> router = merge_packs(["math-pack", "org/code-pack"])                     # doctest: +SKIP
    >>> router.route("def add(a, b):").expert                                    # doctest: +SKIP
    'code'
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import artifact
from .errors import ArtifactError, ExpertError, TokenizerMismatchError
from .hub import PACK_CONFIG_FILE, resolve_folder
from .statistics import ExpertCounts

if TYPE_CHECKING:
    from .embeddings import TokenEmbeddings
    from .router import Router, RouterConfig

__all__ = [
    "PACK_CONFIG_FILE",
    "PACK_FORMAT_VERSION",
    "StatPack",
    "add_pack_to_router",
    "check_fingerprints",
    "load_pack",
    "merge_packs",
    "read_pack_config",
]

PACK_FORMAT_VERSION = 1
_FINGERPRINT_KEYS = ("tokenizer_sha256", "embedding_sha256", "vocab_size", "hidden_size")


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
    for key in _FINGERPRINT_KEYS:
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
    if not isinstance(fingerprint, dict) or any(k not in fingerprint for k in _FINGERPRINT_KEYS):
        raise ArtifactError(
            f"{path} has no complete tokenizer/embedding fingerprint {list(_FINGERPRINT_KEYS)}"
        )
    for key in ("num_texts", "num_tokens"):
        if not isinstance(expert.get(key), int):
            raise ArtifactError(f"{path}: expert.{key} must be an integer")
    return config


@dataclass(frozen=True, eq=False)
class StatPack:
    """One expert's sufficient statistics plus what they were counted with.

    Attributes:
        name: the expert's name (the router column it becomes).
        counts: the sparse token histogram.
        fingerprint: ``TokenEmbeddings.fingerprint()`` of the tokenizer + embeddings used.
        description: one line about the expert (shown in model cards).
        embedding_source: the ``TokenEmbeddings.source`` dict, so a merger can load the same matrix.
        excluded_ids: token ids left out of the counts (special/padding tokens).
    """

    name: str
    counts: ExpertCounts
    fingerprint: dict[str, Any]
    description: str = ""
    embedding_source: dict[str, Any] | None = None
    excluded_ids: tuple[int, ...] = field(default=())

    @property
    def num_texts(self) -> int:
        return self.counts.num_texts

    @property
    def num_tokens(self) -> int:
        return self.counts.num_tokens

    def __repr__(self) -> str:
        return (
            f"StatPack({self.name!r}: {self.num_texts} texts, {self.num_tokens} tokens, "
            f"{self.counts.token_ids.size} distinct)"
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def compute(
        cls,
        name: str,
        texts: Iterable[str],
        embeddings: TokenEmbeddings | None = None,
        *,
        description: str = "",
        progress: bool | None = None,
        batch_size: int = 512,
    ) -> StatPack:
        """Count one expert's texts locally, exactly as ``Router.fit`` counts them.

        Example:
            >>> pack = StatPack.compute("math", ["What is 2 + 2?"], TokenEmbeddings.default())  # doctest: +SKIP
            >>> pack.num_texts                                                                  # doctest: +SKIP
            1
        """
        from .embeddings import TokenEmbeddings
        from .router import Router, _check_name

        _check_name(name)
        emb = embeddings if embeddings is not None else TokenEmbeddings.default()
        counter = Router(emb, device="cpu", progress=progress, batch_size=batch_size)
        counts = counter._count(name, texts)
        return cls(
            name,
            counts,
            dict(emb.fingerprint()),
            description,
            dict(emb.source),
            tuple(int(i) for i in emb.excluded_ids),
        )

    @classmethod
    def from_router(cls, router: Router, name: str) -> StatPack:
        """Export one expert of a fitted router as a pack (e.g. to hand it to another router)."""
        counts = router.statistics
        if name not in counts:
            from .errors import UnknownExpertError

            raise UnknownExpertError(f"unknown expert {name!r}; experts are {router.experts}")
        fingerprint = router._fingerprint or router.embeddings.fingerprint()
        return cls(
            name,
            counts[name],
            dict(fingerprint),
            router.descriptions.get(name, ""),
            dict(router._embedding_source) if router._embedding_source else None,
            tuple(int(i) for i in router._excluded_ids),
        )

    # ------------------------------------------------------------------ files
    def config_dict(self) -> dict[str, Any]:
        """The ``stat_pack.json`` content (without file checksums)."""
        from . import __version__

        return {
            "library": "ir3de",
            "kind": "stat_pack",
            "format_version": PACK_FORMAT_VERSION,
            "library_version": __version__,
            "expert": {
                "name": self.name,
                "description": self.description,
                "num_texts": self.num_texts,
                "num_tokens": self.num_tokens,
                "num_distinct_tokens": int(self.counts.token_ids.size),
                "has_text_statistics": self.counts.text_gram is not None,
            },
            "vocab_size": self.fingerprint.get("vocab_size"),
            "hidden_size": self.fingerprint.get("hidden_size"),
            "embedding_source": self.embedding_source,
            "fingerprint": dict(self.fingerprint),
            "excluded_ids": list(self.excluded_ids),
            "text_statistics": artifact.text_statistics_spec(),
        }

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write the pack to ``folder`` atomically: ``stat_pack.json``, ``statistics.safetensors``, card.

        Example:
            >>> pack.save_pretrained("math-pack")   # doctest: +SKIP
        """
        from .model_card import render_stat_pack_card

        stats = artifact.tensors_to_bytes(
            {
                "token_ids": self.counts.token_ids,
                "counts": self.counts.counts,
                "offsets": np.array([0, self.counts.token_ids.size], np.int64),
                "num_texts": np.array([self.num_texts], np.int64),
                **artifact.text_gram_tensors([self.counts], hidden=int(self.fingerprint["hidden_size"])),
            },
            metadata={"format": "ir3de-statistics", "experts": json.dumps([self.name])},
        )
        config = self.config_dict()
        config["files"] = {
            artifact.STATISTICS_FILE: {"sha256": artifact.file_sha256(stats), "size": len(stats)}
        }
        files = {
            PACK_CONFIG_FILE: (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
            artifact.STATISTICS_FILE: stats,
            artifact.CARD_FILE: render_stat_pack_card(config).encode("utf-8"),
        }
        return artifact.write_folder_atomically(folder, files)

    @classmethod
    def from_pretrained(
        cls,
        id_or_folder: str | os.PathLike[str],
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
    ) -> StatPack:
        """Load a pack from a folder or a Hub repo id (local folder → HF cache → download), checked.

        Raises:
            ArtifactError: missing, truncated or corrupted files, or inconsistent counts.
            ArtifactVersionError: written by a newer format version.

        Example:
            >>> StatPack.from_pretrained("org/math-pack", revision="v1")   # doctest: +SKIP
        """
        resolved = resolve_folder(
            id_or_folder,
            kind="stat_pack",
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        return cls._read(resolved.folder)

    @classmethod
    def _read(cls, folder: Path) -> StatPack:
        config = read_pack_config(folder)
        where = str(folder / artifact.STATISTICS_FILE)
        if artifact.STATISTICS_FILE not in (config.get("files") or {}):
            raise ArtifactError(
                f"{folder / PACK_CONFIG_FILE} records no size/sha256 for {artifact.STATISTICS_FILE}"
            )
        tensors = artifact.read_tensors(folder, artifact.STATISTICS_FILE, config)
        offsets = artifact.expect_shape(tensors, "offsets", (2,), where)
        num_texts = artifact.expect_shape(tensors, "num_texts", (1,), where)
        nnz = int(offsets[1])
        if int(offsets[0]) != 0 or nnz < 0:
            raise ArtifactError(f"{where}: offsets {offsets.tolist()} are not a valid CSR index")
        token_ids = artifact.expect_shape(tensors, "token_ids", (nnz,), where)
        counts = artifact.expect_shape(tensors, "counts", (nnz,), where)
        expert = config["expert"]
        fingerprint = config["fingerprint"]
        vocab = fingerprint.get("vocab_size")
        if not isinstance(vocab, int) or (
            nnz and (int(token_ids.min()) < 0 or int(token_ids.max()) >= vocab)
        ):
            raise ArtifactError(f"{where}: token ids outside the vocabulary of {vocab}")
        hidden = fingerprint.get("hidden_size")
        if not isinstance(hidden, int) or hidden < 1:
            raise ArtifactError(
                f"{folder / PACK_CONFIG_FILE}: fingerprint.hidden_size must be a positive integer"
            )
        (gram,) = artifact.read_text_grams(tensors, 1, hidden, where)
        if gram is not None:
            artifact.check_text_statistics_spec(config.get("text_statistics"), str(folder / PACK_CONFIG_FILE))
        try:
            expert_counts = ExpertCounts(token_ids, counts, int(num_texts[0]), gram)
        except ValueError as e:
            raise ArtifactError(f"{where}: the counts are invalid ({e})") from e
        if expert_counts.num_texts != expert["num_texts"] or expert_counts.num_tokens != expert["num_tokens"]:
            raise ArtifactError(
                f"{where} holds {expert_counts.num_texts} texts / {expert_counts.num_tokens} tokens but "
                f"{PACK_CONFIG_FILE} records {expert['num_texts']} / {expert['num_tokens']}"
            )
        return cls(
            expert["name"],
            expert_counts,
            dict(fingerprint),
            str(expert.get("description") or ""),
            config.get("embedding_source"),
            tuple(int(i) for i in config.get("excluded_ids") or ()),
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
    ) -> Any:
        """Publish the pack as a Hub model repo (one commit). Returns huggingface_hub's ``CommitInfo``.

        Example:
            >>> pack.push_to_hub("org/math-pack", private=True)   # doctest: +SKIP
        """
        from .hub import push_saved

        return push_saved(
            self,
            repo_id,
            "pack",
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
        )

    def check_compatible(self, fingerprint: Mapping[str, Any] | None, against: str = "the router") -> None:
        """Raise :class:`TokenizerMismatchError` unless ``fingerprint`` is this pack's tokenizer + embeddings."""
        check_fingerprints(fingerprint, self.fingerprint, f"stat pack {self.name!r}", against)


def load_pack(pack: StatPack | str | os.PathLike[str], **hub_kwargs: Any) -> StatPack:
    """A :class:`StatPack` as is, or loaded from a folder / Hub repo id (``hub_kwargs`` as in from_pretrained)."""
    if isinstance(pack, StatPack):
        return pack
    if isinstance(pack, (str, os.PathLike)):
        return StatPack.from_pretrained(pack, **hub_kwargs)
    raise TypeError(f"expected a StatPack, a folder or a Hub repo id, got {type(pack).__name__}")


def add_pack_to_router(
    router: Router, pack: StatPack | str | os.PathLike[str], name: str | None = None, **hub_kwargs: Any
) -> Router:
    """Add a pack's expert to ``router`` after checking the tokenizer/embedding fingerprints match.

    This is what :meth:`Router.add_expert_from_stats` does.
    """
    loaded = load_pack(pack, **hub_kwargs)
    with router._lock:
        expected = router._fingerprint or router.embeddings.fingerprint()
        loaded.check_compatible(expected, "the router")
        return router.add_expert_counts(name or loaded.name, loaded.counts, loaded.description)


def merge_packs(
    packs: Sequence[StatPack | str | os.PathLike[str]],
    *,
    router: Router | None = None,
    embeddings: TokenEmbeddings | None = None,
    config: RouterConfig | None = None,
    device: str = "auto",
    progress: bool | None = None,
    hub_kwargs: Mapping[str, Any] | None = None,
    **settings: Any,
) -> Router:
    """Build a router from stat packs (or add them to ``router``). Equals a central fit on the same texts.

    Every pack must share one tokenizer + embedding fingerprint; the embeddings are loaded from the
    packs' recorded source unless given (and are checked against the fingerprint either way).

    Example:
        >>> router = merge_packs(["org/math-pack", "org/code-pack"], k=10)   # doctest: +SKIP
    """
    from .embeddings import TokenEmbeddings
    from .router import Router

    loaded = [load_pack(p, **dict(hub_kwargs or {})) for p in packs]
    if not loaded:
        raise ExpertError("give at least one stat pack to merge")
    names = [p.name for p in loaded] + (router.experts if router is not None else [])
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExpertError(
            f"more than one expert is named {duplicates}; rename a pack (name=...) before merging"
        )
    if router is None and len(loaded) < 2:
        raise ExpertError(f"a router needs at least 2 experts; got 1 pack ({loaded[0].name!r})")
    first = loaded[0]
    for other in loaded[1:]:
        other.check_compatible(first.fingerprint, f"stat pack {first.name!r}")
    if router is None:
        if embeddings is None:
            if not first.embedding_source:
                raise ArtifactError(
                    f"stat pack {first.name!r} records no embedding source; pass embeddings=TokenEmbeddings(...)"
                )
            embeddings = TokenEmbeddings.from_source(dict(first.embedding_source))
        first.check_compatible(embeddings.fingerprint(), f"the embeddings {embeddings.name!r}")
        router = Router(embeddings, config=config, device=device, progress=progress, **settings)
        return router.fit_counts(
            {p.name: p.counts for p in loaded}, descriptions={p.name: p.description for p in loaded}
        )
    if embeddings is not None or settings or config is not None:
        raise TypeError("pass either router= or embeddings/config/settings for a new router, not both")
    for pack in loaded:
        add_pack_to_router(router, pack)
    return router
