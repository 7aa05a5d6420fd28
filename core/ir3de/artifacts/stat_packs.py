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
  ``num_texts``; the router's CSR layout with one expert) and the expert's text statistics in their
  smaller exact form (``text_forms``: a Gram in ``text_grams`` or the rows of a factor in ``text_rows``,
  or — format 5, with ``keep_token_ids`` — the texts' token ids in ``text_token_ids``,
  see :func:`ir3de.artifacts.format.text_gram_tensors`; packs of format 1–2 hold ``text_grams`` +
  ``has_text_gram``): the statistics of text-level routers, see :mod:`ir3de.fitting.statistics`;
* ``README.md`` — a card saying what the pack holds and how to merge it.

It holds which token ids occur and how often, and the second moments of the texts' mean embeddings —
an aggregate for an expert with at least ``h + 1`` training rows; a smaller expert's rows give back
the tokens of each 8-token window of its texts (``python -m benchmarks.privacy``), so by default
(``keep_token_ids="auto"``, as a router) such a pack holds its tokenized texts, more compact, and its
``stat_pack.json`` (``tokenized_text``) and card say so. ``keep_token_ids=False`` keeps the rows instead.

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

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ir3de.artifacts import folders as persistence
from ir3de.artifacts.folders import (
    PACK_CONFIG_FILE,
    PACK_FORMAT_VERSION,
    PackData,
    check_fingerprints,
    read_pack_config,
)
from ir3de.artifacts.hub import resolve_folder
from ir3de.errors import ArtifactError, ExpertError, UnknownExpertError
from ir3de.fitting import pipeline as fitting
from ir3de.fitting.statistics import KeepTokenIds
from ir3de.router import Router

if TYPE_CHECKING:
    from ir3de.config import RouterConfig
    from ir3de.embeddings import TokenEmbeddings

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


class StatPack(PackData):
    """One expert's sufficient statistics plus what they were counted with.

    Attributes:
        name: the expert's name (the router column it becomes).
        counts: the sparse token histogram.
        fingerprint: ``TokenEmbeddings.fingerprint()`` of the tokenizer + embeddings used.
        description: one line about the expert (shown in model cards).
        embedding_source: the ``TokenEmbeddings.source`` dict, so a merger can load the same matrix.
        excluded_ids: token ids left out of the counts (special/padding tokens).
        traffic: the expert's learned traffic (labelled served prompts), or ``None``.
        adaptation: the expert's adaptation block (:meth:`Router.adapt`; soft pseudo-labels of
            unlabelled prompts, no prompt rows), or ``None``.
    """

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
        keep_token_ids: KeepTokenIds = "auto",
    ) -> StatPack:
        """Count one expert's texts locally, exactly as ``Router.fit`` counts them (token counts and
        the text Gram, :func:`ir3de.fitting.pipeline.count_texts`). ``keep_token_ids`` says when the
        texts' token ids are kept too, as ``RouterConfig.keep_token_ids`` (default ``"auto"``: when the
        statistics are rows; the pack then contains the tokenized texts and its ``stat_pack.json`` says
        so).

        Example:
            >>> pack = StatPack.compute("math", ["What is 2 + 2?"], TokenEmbeddings.default())  # doctest: +SKIP
            >>> pack.num_texts                                                                  # doctest: +SKIP
            1
        """
        from ir3de.embeddings import TokenEmbeddings

        fitting.check_expert_name(name)
        emb = embeddings if embeddings is not None else TokenEmbeddings.default()
        counts = fitting.count_texts(
            texts,
            tokenizer=emb.tokenizer,
            vocab_size=emb.vocab_size,
            excluded_ids=emb.excluded_ids,
            embedding_matrix=emb.matrix,
            name=name,
            batch_size=batch_size,
            progress=progress,
            keep_token_ids=keep_token_ids,
        )
        fitting.check_counts(
            name, counts, vocab_size=emb.vocab_size, hidden_size=emb.hidden_size, level="text"
        )
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
        """Export one expert of a fitted router as a pack (e.g. to hand it to another router), with
        its learned traffic (:meth:`Router.learn`) as the pack's traffic block and its adaptation
        block (:meth:`Router.adapt`), if any."""
        statistics, state = router.statistics, router.state
        if name not in statistics:
            raise UnknownExpertError(f"unknown expert {name!r}; experts are {list(router.experts)}")
        expert = statistics[name]
        source = None if state.embedding_source is None else dict(state.embedding_source)
        return cls(
            name,
            expert.counts,
            dict(state.fingerprint or {}),
            expert.description,
            source,
            tuple(int(i) for i in state.excluded_ids),
            expert.traffic,
            expert.adaptation,
        )

    # ------------------------------------------------------------------ files
    def config_dict(self) -> dict[str, Any]:
        """The ``stat_pack.json`` content (without file checksums)."""
        return persistence.pack_config_dict(self)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write the pack to ``folder`` atomically: ``stat_pack.json``, ``statistics.safetensors``, card.

        Example:
            >>> pack.save_pretrained("math-pack")   # doctest: +SKIP
        """
        return persistence.save_pack(folder, self)

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
        data = persistence.load_pack(folder)
        return cls(
            data.name,
            data.counts,
            data.fingerprint,
            data.description,
            data.embedding_source,
            data.excluded_ids,
            data.traffic,
            data.adaptation,
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
        from ir3de.artifacts.hub import push_saved

        return push_saved(
            self,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
        )


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
    """Add a pack's expert (a pack, a folder or a Hub repo id) to ``router`` as ``name`` (default: the
    pack's), after checking the tokenizer/embedding fingerprints match: ``router.add_expert(name, pack)``.

    Example:
        >>> add_pack_to_router(router, "org/legal-stat-pack")   # doctest: +SKIP
    """
    loaded = load_pack(pack, **hub_kwargs)
    return router.add_expert(name or loaded.name, loaded)


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
    from ir3de.embeddings import TokenEmbeddings

    loaded = [load_pack(p, **dict(hub_kwargs or {})) for p in packs]
    if not loaded:
        raise ExpertError("give at least one stat pack to merge")
    names = [p.name for p in loaded] + (list(router.experts) if router is not None else [])
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
        return router.fit({p.name: p for p in loaded})
    if embeddings is not None or settings or config is not None:
        raise TypeError("pass either router= or embeddings/config/settings for a new router, not both")
    for pack in loaded:
        add_pack_to_router(router, pack)
    return router
