"""The one fitting pipeline: texts → counts → statistics → solve → route table.

Every fitting path calls these functions — :class:`ir3de.Router`, stat packs
(:meth:`ir3de.artifacts.stat_packs.StatPack.compute`), the λ sweeps of :mod:`ir3de.evaluation.evaluate` and the Ray adapter —
so they count, solve and compile identically. Each step takes arrays (or
:class:`~ir3de.fitting.statistics.ExpertCounts`) and returns arrays::

    count_texts        texts                       → ExpertCounts          (tokenizer-bound, CPU)
    token_gram         E, ExpertCounts             → G_d  ((h+1)², float64) (token level)
    level_matrices   counts [+ token Grams]      → A, B                  (configured level + weighting)
    solve_weights      A, B, λ                     → W* and W as applied   (Cholesky, float64;
                                                                           λ sweeps: RidgePath + applied_weights)
    compile_table      E, W, excluded ids          → RouteTable            (V × D lookup table)

and, over a router's experts (name → :class:`ExpertStatistics`: counts, traffic block, token Grams),
:func:`with_grams`, :func:`experts_matrices` (``A`` and ``B``), :func:`ridge_matrices` and :func:`experts_state` (the whole chain to a new
:class:`RoutingState`).

On the CPU everything is numpy (float64 Cholesky through scipy) and torch is never imported; with
``device="cuda…"`` the Gram products, the solve and the table compilation run in torch on that GPU.

Example:
    >>> import numpy as np
    >>> from ir3de.fitting.statistics import ExpertCounts
    >>> e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    >>> counts = [ExpertCounts(np.array([0]), np.array([3]), 1), ExpertCounts(np.array([1]), np.array([2]), 1)]
    >>> grams = [token_gram(e, c) for c in counts]
    >>> a, b = level_matrices(counts, level="token", balance=False, token_grams=grams)
    >>> solution, applied = solve_weights(a, b, lam=0.1, column_norm=True)
    >>> compile_table(e, applied, excluded_ids=[2]).votes.tolist()
    [0, 1, 0]
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ir3de.errors import ExpertError, InvalidInputError, TokenizerMismatchError, check_expert_name
from ir3de.fitting.adaptation import AdaptationBlock, add_blocks
from ir3de.fitting.counting import TextCounter, encode_for_counting
from ir3de.fitting.solve import column_normalize, gcv_curve, ridge_solve
from ir3de.fitting.statistics import (
    ExpertCounts,
    KeepTokenIds,
    TextGramSum,
    TrafficSummary,
    balance_factors,
    balance_weights,
    combine_grams,
    corpus_factors,
    expert_gram,
    merged_counts,
    text_ridge_matrices,
    weights_with_traffic,
)
from ir3de.table import RouteTable, choose_form, compile_logits

if TYPE_CHECKING:
    import torch

    from ir3de.config import RouterConfig

__all__ = [
    "ExpertStatistics",
    "RoutingState",
    "applied_weights",
    "batched_texts",
    "check_counts",
    "check_device",
    "check_embeddings",
    "check_expert_name",
    "check_experts",
    "check_loaded",
    "check_new_expert",
    "check_text_level",
    "compile_table",
    "count_expert",
    "count_texts",
    "embeddings_provenance",
    "experts_matrices",
    "experts_state",
    "fit_state",
    "gcv_lambda",
    "grown",
    "lambda_grid",
    "level_matrices",
    "resolve_device",
    "ridge_matrices",
    "select_lambda",
    "solve_weights",
    "state_provenance",
    "to_numpy",
    "token_gram",
    "traffic_summaries",
    "usable_cpus",
    "with_grams",
    "with_text_statistics",
]

logger = logging.getLogger("ir3de")

_GRAM_CHUNK_ROWS = 16384
_COMPILE_CHUNK_ROWS = 256
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True, eq=False)
class RoutingState:
    """The immutable routing state that routing reads; a router swaps it as a whole.

    Attributes:
        experts: expert names, in column order.
        table: the compiled route table.
        weights: (h+1, D) weights as applied (after column normalisation when enabled).
        ridge_solution: (h+1, D) raw solve.
        tokenizer: the ``tokenizers.Tokenizer`` routing encodes prompts with.
        fingerprint: ``TokenEmbeddings.fingerprint()`` of the tokenizer + matrix it was fitted with.
        embedding_source: ``TokenEmbeddings.source`` (to load the matrix again for growing), if known.
        excluded_ids: int64 token ids that never count (special and padding tokens).
        descriptions: expert → one line (model card).
        evaluation: figures stored by :func:`ir3de.evaluation.evaluate.record_evaluation`, or ``None``;
            a change of experts builds a state without them.

    Example:
        >>> router.state.experts, router.state.table.vocab_size   # doctest: +SKIP
        (('math', 'code'), 49152)
    """

    experts: tuple[str, ...]
    table: RouteTable
    weights: np.ndarray
    ridge_solution: np.ndarray
    tokenizer: Any = None
    fingerprint: Mapping[str, Any] | None = None
    embedding_source: Mapping[str, Any] | None = None
    excluded_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    descriptions: Mapping[str, str] = field(default_factory=dict)
    evaluation: Mapping[str, Any] | None = None


def _same_block(a: AdaptationBlock | None, b: AdaptationBlock | None) -> bool:
    """Two adaptation blocks (or ``None``) are equal: Gram, soft prompt count and weight."""
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(a.gram, b.gram)) and (a.prompts, a.weight) == (b.prompts, b.weight)


@dataclass(frozen=True, eq=False)
class ExpertStatistics:
    """One expert as a router holds it: corpus counts, description, learned traffic block, adaptation
    block (unlabelled served prompts, :mod:`ir3de.fitting.adaptation`), and the token Grams derived from
    them (``None`` until :func:`with_grams` computes them; not saved).

    Example:
        >>> e = ExpertStatistics(ExpertCounts(np.array([0]), np.array([3]), 1), "toy")
        >>> e.description, e.traffic, e.gram
        ('toy', None, None)
    """

    counts: ExpertCounts
    description: str = ""
    traffic: ExpertCounts | None = None  # learned labelled prompts (ir3de.fitting.traffic), its own block
    gram: Any = None  # token Gram of ``counts`` (numpy, or torch on a GPU): derived state
    traffic_gram: Any = None  # token Gram of ``traffic``: derived state
    adaptation: AdaptationBlock | None = None  # unlabelled served prompts, its own block

    def __eq__(self, other: object) -> bool:
        """Equal counts, description, traffic and adaptation blocks (the derived Grams are not compared)."""
        if not isinstance(other, ExpertStatistics):
            return NotImplemented
        same_traffic = (self.traffic is None) == (other.traffic is None) and (
            self.traffic is None or self.traffic == other.traffic
        )
        same_adaptation = _same_block(self.adaptation, other.adaptation)
        return (
            self.counts == other.counts
            and self.description == other.description
            and same_traffic
            and same_adaptation
        )

    __hash__ = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------- checks


def check_experts(experts: object, what: str, kind: str = "texts") -> list[str]:
    """The expert names of ``experts`` (a mapping name → ``kind``), checked: at least two valid names.

    Example:
        >>> check_experts({"math": [], "code": []}, "fit")
        ['math', 'code']
    """
    if not isinstance(experts, Mapping):
        raise InvalidInputError(f"{what} takes a mapping expert name → {kind}, got {type(experts).__name__}")
    names = [check_expert_name(n) for n in experts]
    if len(names) < 2:
        raise ExpertError(f"a router needs at least 2 experts, got {len(names)}: {names}")
    return names


def check_new_expert(name: object, experts: Iterable[str], hint: str) -> str:
    """``name`` if it is a valid name that is not yet among ``experts``; else :class:`ExpertError`
    ending with ``hint`` (what to do instead)."""
    if check_expert_name(name) in experts:
        raise ExpertError(f"expert {name!r} already exists; {hint}")
    return name  # type: ignore[return-value]


def check_embeddings(recorded: Mapping[str, Any] | None, fingerprint: Mapping[str, Any], source: Any) -> None:
    """Raise :class:`TokenizerMismatchError` unless embeddings of ``fingerprint`` match the ``recorded``
    fingerprint of a router's statistics (``None``: nothing recorded yet); ``source`` names where the
    router's embeddings come from."""
    for key in ("tokenizer_sha256", "embedding_sha256", "vocab_size", "hidden_size"):
        if recorded is not None and recorded.get(key) != fingerprint.get(key):
            raise TokenizerMismatchError(
                f"these embeddings do not match the router's: {key} is {fingerprint.get(key)!r}, "
                f"the router was fitted with {recorded.get(key)!r}; pass the embeddings the "
                f"router was built with ({source})"
            )


def embeddings_provenance(embeddings: Any, fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a routing state records of the ``TokenEmbeddings`` it was fitted with: tokenizer,
    fingerprint (computed unless given: it hashes the matrix), embedding source and excluded ids (the
    provenance fields of :class:`RoutingState`)."""
    return {
        "tokenizer": embeddings.tokenizer,
        "fingerprint": dict(embeddings.fingerprint() if fingerprint is None else fingerprint),
        "embedding_source": dict(embeddings.source),
        "excluded_ids": np.asarray(embeddings.excluded_ids, np.int64),
    }


def state_provenance(state: RoutingState | None) -> dict[str, Any]:
    """The provenance fields of ``state`` (as :func:`embeddings_provenance` gives them); empty ones
    for ``None`` (a router not fitted yet)."""
    if state is None:
        return {
            "tokenizer": None,
            "fingerprint": None,
            "embedding_source": None,
            "excluded_ids": np.zeros(0, np.int64),
        }
    return {
        "tokenizer": state.tokenizer,
        "fingerprint": None if state.fingerprint is None else dict(state.fingerprint),
        "embedding_source": None if state.embedding_source is None else dict(state.embedding_source),
        "excluded_ids": np.asarray(state.excluded_ids, np.int64),
    }


def check_loaded(
    statistics: Mapping[str, ExpertStatistics] | None, state: RoutingState
) -> dict[str, ExpertStatistics]:
    """``statistics`` checked to be the ones ``state`` was solved from (same experts, same order), as
    a router builds itself from a loaded artifact without solving again."""
    if statistics is None or tuple(statistics) != state.experts:
        got = None if statistics is None else list(statistics)
        raise InvalidInputError(
            f"a router built from a state needs the statistics of its experts {list(state.experts)} "
            f"(in that order), got {got}; pass statistics=... or build it with fit()"
        )
    for name, e in statistics.items():
        if not isinstance(e, ExpertStatistics):
            raise InvalidInputError(f"statistics[{name!r}] must be ExpertStatistics, got {type(e).__name__}")
    return dict(statistics)


def check_device(device: str) -> str:
    """Validate a device string without importing torch: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def resolve_device(device: str) -> str:
    """The device to fit on: ``"auto"`` is the GPU when torch sees one, else ``"cpu"``.

    ``"cpu"`` never imports torch; ``"auto"`` and ``"cuda"`` do (to ask for a GPU).
    """
    check_device(device)
    if device == "cpu":
        return device
    if importlib.util.find_spec("torch") is None:
        if device == "auto":
            return "cpu"
        raise ValueError(f"device={device!r} needs torch with CUDA; install torch or use device='cpu'")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    return device


def check_text_level(name: str, counts: ExpertCounts) -> None:
    """Raise unless ``counts`` can take part in a text-level fit (a text Gram with a scored text)."""
    if not counts.has_text_statistics:
        raise ExpertError(
            f"expert {name!r} has token counts only (counted without the embedding matrix, e.g. by an older "
            "ir3de or a token-only stat pack), but this router fits at level='text'; re-count its texts "
            "with this version, or use Router(level='token')"
        )
    if counts.num_scored_texts == 0:
        raise ExpertError(f"expert {name!r} has no text with a countable token")


def check_counts(name: str, counts: ExpertCounts, *, vocab_size: int, hidden_size: int, level: str) -> None:
    """Raise unless ``counts`` are :class:`ExpertCounts` that fit an embedding matrix of
    ``vocab_size`` × ``hidden_size`` at ``level``."""
    if not isinstance(counts, ExpertCounts):
        raise InvalidInputError(
            f"counts of expert {name!r} must be ExpertCounts, got {type(counts).__name__}"
        )
    if counts.token_ids.size and counts.token_ids[-1] >= vocab_size:
        raise TokenizerMismatchError(
            f"counts of expert {name!r} hold token id {counts.token_ids[-1]} but the vocabulary has "
            f"{vocab_size} ids: they were made with another tokenizer"
        )
    tokens = counts.text_tokens
    if tokens is not None and tokens.ids.size and int(tokens.ids.max()) >= vocab_size:
        raise TokenizerMismatchError(
            f"the text token ids of expert {name!r} hold id {int(tokens.ids.max())} but the vocabulary has "
            f"{vocab_size} ids: they were made with another tokenizer"
        )
    if counts.num_tokens == 0:
        raise ExpertError(f"expert {name!r} has no countable token")
    if counts.text_dim is not None and counts.text_dim != hidden_size + 1:
        raise TokenizerMismatchError(
            f"the text statistics of expert {name!r} are {counts.text_dim - 1}-dimensional but the "
            f"embeddings have {hidden_size} dimensions: they were made with another model"
        )
    if level == "text":
        check_text_level(name, counts)


# ---------------------------------------------------------------------------------------------- counting


def batched_texts(texts: Iterable[str], expert: str, batch_size: int) -> Iterator[list[str]]:
    """Batches of ``batch_size`` strings from ``texts``; :class:`InvalidInputError` names a non-string."""
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError(
            f"texts of expert {expert!r} is a single {type(texts).__name__}; pass a list of strings "
            f"(e.g. [{texts[:20]!r}])"
        )
    try:
        iterator = iter(texts)
    except TypeError:
        raise InvalidInputError(
            f"texts of expert {expert!r} must be an iterable of strings, got {type(texts).__name__}"
        ) from None
    index = 0
    while batch := list(itertools.islice(iterator, batch_size)):
        for offset, text in enumerate(batch):
            if not isinstance(text, str):
                raise InvalidInputError(
                    f"text #{index + offset} of expert {expert!r} is a {type(text).__name__}, not a str"
                )
        index += len(batch)
        yield batch


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one).

    Example:
        >>> usable_cpus() >= 1
        True
    """
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def count_texts(
    texts: Iterable[str],
    *,
    tokenizer: Any,
    vocab_size: int,
    excluded_ids: np.ndarray | Sequence[int] | None = None,
    embedding_matrix: np.ndarray | None = None,
    name: str = "texts",
    batch_size: int = 512,
    progress: bool | None = False,
    require_text: bool = True,
    keep_token_ids: KeepTokenIds = False,
    overlap: bool | None = None,
) -> ExpertCounts:
    """Count one expert's texts batch by batch with :class:`~ir3de.fitting.counting.TextCounter` (tqdm bar).

    Args:
        texts: any iterable of strings (list, generator, dataset column).
        tokenizer, vocab_size, excluded_ids: what to count with (``TokenEmbeddings`` fields).
        embedding_matrix: the (V, h) matrix; given, the result carries the text Gram (``level="text"``).
        name: the expert's name, for the progress bar and error messages.
        progress: ``True``/``False``, or ``None`` for a bar only on a terminal.
        require_text: raise :class:`ExpertError` when ``texts`` is empty.
        keep_token_ids: which texts' token ids to keep too (with ``embedding_matrix``;
            ``RouterConfig.keep_token_ids``, :class:`~ir3de.fitting.counting.TextCounter`).
        overlap: tokenize the next batch on a second thread while this one is counted (the
            tokenizer and the Gram products both release the GIL); ``None``: when the process may
            run on more than one CPU and there is an embedding matrix (a text-level fit, where the
            counting costs about what the tokenizing does). The batches are counted in the same
            order either way, so the result is the same, bit for bit.
    """
    from tqdm.auto import tqdm

    excluded = None if excluded_ids is None else np.asarray(excluded_ids, np.int64)
    counter = TextCounter(
        tokenizer, vocab_size, excluded, embedding_matrix=embedding_matrix, keep_token_ids=keep_token_ids
    )
    if overlap is None:
        overlap = embedding_matrix is not None and usable_cpus() > 1
    total = len(texts) if hasattr(texts, "__len__") else None  # type: ignore[arg-type]
    disable = None if progress is None else not progress
    batches = batched_texts(texts, name, batch_size)
    batch = next(batches, None)
    following = next(batches, None) if batch is not None else None  # read ahead: is this the last batch?
    ahead = overlap and following is not None  # a single batch has nothing to overlap with
    with (
        tqdm(total=total, desc=f"counting {name}", unit="text", disable=disable) as bar,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ir3de-tokenize")
        if ahead
        else nullcontext() as pool,
    ):

        def tokenized(chunk: list[str] | None) -> Future[tuple[np.ndarray, np.ndarray]] | None:
            return pool.submit(encode_for_counting, tokenizer, chunk) if pool and chunk is not None else None

        pending = tokenized(batch)
        while batch is not None:
            upcoming = tokenized(following)  # tokenized on the worker while this batch is counted
            if pending is not None:
                counter.add_encoded(*pending.result())
            else:
                counter.add(batch)
            if following is None:
                bar.n += len(batch)  # no redraw: closing the bar draws its final line, once
            else:
                bar.update(len(batch))
            batch, pending = following, upcoming
            following = next(batches, None) if batch is not None else None
    counts = counter.result()
    if require_text and counts.num_texts == 0:
        raise ExpertError(f"expert {name!r} has no text; give it at least one non-empty string")
    return counts


def count_expert(
    embeddings: Any,
    texts: Iterable[str],
    *,
    name: str,
    level: str,
    batch_size: int = 512,
    progress: bool | None = False,
    keep_token_ids: KeepTokenIds = False,
) -> ExpertCounts:
    """One expert's texts counted with a :class:`~ir3de.embeddings.TokenEmbeddings` for a fit at
    ``level`` (the text Gram, a gather per token, only at ``level="text"``; with ``keep_token_ids``
    also the texts' token ids), and checked."""
    counts = count_texts(
        texts,
        tokenizer=embeddings.tokenizer,
        vocab_size=embeddings.vocab_size,
        excluded_ids=embeddings.excluded_ids,
        embedding_matrix=embeddings.matrix if level == "text" else None,
        name=name,
        batch_size=batch_size,
        progress=progress,
        keep_token_ids=keep_token_ids if level == "text" else False,
    )
    check_counts(
        name, counts, vocab_size=embeddings.vocab_size, hidden_size=embeddings.hidden_size, level=level
    )
    return counts


# ---------------------------------------------------------------------------------------------- statistics


def _is_gpu(device: str) -> bool:
    return device.startswith("cuda")


def token_gram(matrix: np.ndarray, counts: ExpertCounts, *, device: str = "cpu") -> np.ndarray | torch.Tensor:
    """One expert's token Gram ``Ẽ_dᵀ diag(N_d) Ẽ_d`` ((h+1)², float64): numpy on the CPU, a torch
    tensor on ``device`` when it is a GPU."""
    total: np.ndarray | torch.Tensor | None = None
    part: np.ndarray | torch.Tensor
    for start in range(0, counts.token_ids.size, _GRAM_CHUNK_ROWS):
        ids = counts.token_ids[start : start + _GRAM_CHUNK_ROWS]
        c = counts.counts[start : start + _GRAM_CHUNK_ROWS].astype(np.float64)
        rows = np.asarray(matrix[ids], np.float64)
        if _is_gpu(device):
            import torch

            part = expert_gram(torch.from_numpy(rows).to(device), torch.from_numpy(c).to(device))
        else:
            part = expert_gram(rows, c)
        total = part if total is None else total + part
    if total is None:
        raise ExpertError("an expert without any counted token has no Gram matrix")
    return total


def _level_masses(counts: Sequence[ExpertCounts | None], level: str) -> np.ndarray:
    """Row mass per expert at ``level``: scored texts (text level) or tokens (token level)."""
    if level == "text":
        return np.array([0 if c is None else c.num_scored_texts for c in counts], np.float64)
    return np.array([0 if c is None else c.num_tokens for c in counts], np.float64)


def level_matrices(
    counts: Sequence[ExpertCounts],
    *,
    level: str,
    balance: bool,
    token_grams: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
    device: str = "cpu",
    traffic: Sequence[ExpertCounts | None] | None = None,
    traffic_grams: Sequence[Any | None] | None = None,
    traffic_weight: float = 0.0,
    traffic_policy: str = "balanced",
    running: TextGramSum | None = None,
) -> tuple[Any, Any]:
    """The ridge matrices ``A`` ((h+1)²) and ``B`` ((h+1) × D) of the experts at ``level``.

    ``level="token"`` combines the experts' token Grams (``token_grams``, one per expert, from
    :func:`token_gram`) weighted by token mass; ``level="text"`` their text Grams weighted by scored
    texts. Float64 numpy on the CPU, torch on a GPU ``device``.

    ``traffic`` (one block or ``None`` per expert: labelled served prompts, counted like a corpus)
    adds ``u_d T_d`` to ``A`` and its last column to ``B[:, d]``, with ``u_d`` from
    :func:`ir3de.fitting.statistics.traffic_weights` (``traffic_grams``: their token Grams at token level).
    Without any traffic block (or with weight 0) the result is bit for bit the corpus-only one.

    ``running`` (text level, no traffic): a :class:`~ir3de.fitting.statistics.TextGramSum` kept
    between calls, so that experts added after the ones of the previous call cost only themselves
    (bit for bit the same matrices, :func:`~ir3de.fitting.statistics.text_ridge_matrices`).
    """
    names = list(names) if names is not None else [f"#{i}" for i in range(len(counts))]
    if level == "text":
        for n, c in zip(names, counts):
            check_text_level(n, c)
        return _text_level_statistics(
            counts, traffic, level, balance, traffic_weight, traffic_policy, device, running
        )
    if token_grams is None or len(token_grams) != len(counts):
        raise ValueError("level='token' needs one token Gram per expert (see token_gram)")
    grams = list(token_grams)
    if traffic is None or all(t is None for t in traffic):
        return combine_grams(grams, balance_weights(_level_masses(counts, level), balance))
    corpus_weights, u = weights_with_traffic(
        _level_masses(counts, level),
        _level_masses(traffic, level),
        balance=balance,
        weight=traffic_weight,
        policy=traffic_policy,
    )
    a, b = combine_grams(grams, corpus_weights)
    for d, (block, weight) in enumerate(zip(traffic, u)):
        if block is None or weight == 0.0:
            continue
        gram = None if traffic_grams is None else traffic_grams[d]
        if gram is None:
            raise ValueError("level='token' needs the token Gram of every traffic block")
        a = a + gram * float(weight)
        b[:, d] = b[:, d] + gram[:, -1] * float(weight)
    return a, b


def _text_level_statistics(
    counts: Sequence[ExpertCounts],
    traffic: Sequence[ExpertCounts | None] | None,
    level: str,
    balance: bool,
    traffic_weight: float,
    traffic_policy: str,
    device: str,
    running: TextGramSum | None = None,
) -> tuple[Any, Any]:
    """``A``, ``B`` of text statistics in either form (rows or Gram, :func:`text_ridge_matrices`),
    computed in float64 numpy and moved to a GPU ``device`` when asked. Without traffic the balance
    weights are applied as a common factor times per-expert ones (:func:`balance_factors`), so a
    ``running`` sum stays valid when experts are added."""
    if traffic is None or all(t is None for t in traffic):
        scale, per_expert = balance_factors(_level_masses(counts, level), balance)
        a, b = text_ridge_matrices(counts, per_expert, scale=scale, running=running)
    else:
        masses, traffic_masses = _level_masses(counts, level), _level_masses(traffic, level)
        w, p = traffic_weight, traffic_policy
        _, u = weights_with_traffic(masses, traffic_masses, balance=balance, weight=w, policy=p)
        # the corpus as without traffic (the same bits with weight 0), the traffic on top
        scale, per_expert = corpus_factors(masses, traffic_masses, balance=balance, weight=w, policy=p)
        a, b = text_ridge_matrices(counts, per_expert, scale=scale, running=running)
        if any(t is not None and w != 0.0 for t, w in zip(traffic, u)):
            ta, tb = text_ridge_matrices(traffic, u)
            a, b = a + ta, b + tb
    if _is_gpu(device):
        import torch

        return torch.tensor(a, device=device), torch.tensor(b, device=device)
    return a, b


def traffic_summaries(
    names: Sequence[str],
    counts: Sequence[ExpertCounts],
    traffic: Sequence[ExpertCounts | None],
    *,
    level: str,
    balance: bool,
    traffic_weight: float,
    traffic_policy: str,
) -> dict[str, TrafficSummary]:
    """Per expert with traffic: prompts, tokens and the weight the fit gives them (same rule as
    :func:`level_matrices`)."""
    masses = _level_masses(counts, level)
    tmasses = _level_masses(traffic, level)
    corpus_weights, u = weights_with_traffic(
        masses, tmasses, balance=balance, weight=traffic_weight, policy=traffic_policy
    )
    out = {}
    for name, block, m, w, t, weight in zip(names, traffic, masses, corpus_weights, tmasses, u):
        if block is None:
            continue
        share = float(weight * t / (w * m)) if m > 0 and w > 0 else 0.0
        out[name] = TrafficSummary(block.num_texts, block.num_tokens, float(weight), float(w), share)
    return out


def with_grams(
    experts: Mapping[str, ExpertStatistics], matrix: np.ndarray, *, device: str = "cpu"
) -> dict[str, ExpertStatistics]:
    """``experts`` with every missing token Gram computed (corpus and non-empty traffic blocks).

    Token Grams are derived state: a loaded router has none, and a change clears the ones it
    invalidates; token-level statistics need them all."""
    out = {}
    for name, e in experts.items():
        if e.gram is None:
            e = dataclasses.replace(e, gram=token_gram(matrix, e.counts, device=device))
        if e.traffic is not None and e.traffic.num_tokens and e.traffic_gram is None:
            e = dataclasses.replace(e, traffic_gram=token_gram(matrix, e.traffic, device=device))
        out[name] = e
    return out


def with_text_statistics(
    experts: Mapping[str, ExpertStatistics], matrix: np.ndarray
) -> dict[str, ExpertStatistics]:
    """``experts`` with the text statistics of every expert held as token ids alone (a loaded router
    with ``keep_token_ids``) rebuilt with the embedding ``matrix``
    (:meth:`~ir3de.fitting.statistics.ExpertCounts.with_text_statistics`: bit for bit the statistics
    counting gave); the others as they are (the same objects)."""
    out = dict(experts)
    stale = [n for n, e in experts.items() if e.counts.needs_rebuild]
    if stale:
        start = time.perf_counter()
        for name in stale:
            e = experts[name]
            out[name] = dataclasses.replace(e, counts=e.counts.with_text_statistics(matrix))
        logger.info(
            "rebuilt the text statistics of %d expert(s) from their token ids in %.1f s",
            len(stale),
            time.perf_counter() - start,
        )
    return out


def grown(
    expert: ExpertStatistics,
    delta: ExpertCounts,
    matrix: np.ndarray,
    *,
    device: str = "cpu",
    keep_token_ids: KeepTokenIds = False,
) -> ExpertStatistics:
    """``expert`` with ``delta`` added to its corpus counts (keeping the token ids a router with
    ``keep_token_ids`` keeps: :func:`~ir3de.fitting.statistics.merged_counts`); a token Gram it has
    grows by ``delta``'s (Grams add like the counts), a missing one stays missing (derived when needed)."""
    gram = None if expert.gram is None else expert.gram + token_gram(matrix, delta, device=device)
    counts = merged_counts(expert.counts, delta, keep_token_ids, matrix)
    return dataclasses.replace(expert, counts=counts, gram=gram)


def _level_arguments(experts: Mapping[str, ExpertStatistics], config: RouterConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`level_matrices` for ``experts`` under ``config``."""
    records = list(experts.values())
    token = config.level == "token"
    arguments: dict[str, Any] = {
        "level": config.level,
        "balance": config.balance,
        "token_grams": [e.gram for e in records] if token else None,
    }
    if any(e.traffic is not None for e in records):
        arguments.update(
            traffic=[e.traffic for e in records],
            traffic_grams=[e.traffic_gram for e in records] if token else None,
            traffic_weight=config.traffic_weight,
            traffic_policy=config.traffic_policy,
        )
    return arguments


def experts_matrices(
    experts: Mapping[str, ExpertStatistics],
    config: RouterConfig,
    *,
    device: str = "cpu",
    adaptation: bool = True,
    running: TextGramSum | None = None,
) -> tuple[Any, Any]:
    """The ridge matrices ``A`` and ``B`` of ``experts`` at the configured level and weighting (numpy, or
    torch on a GPU); at token level every Gram must be there (:func:`with_grams`). With ``adaptation``,
    the experts' adaptation blocks are added (:func:`ir3de.fitting.adaptation.add_blocks`); without, or
    when no expert has one, the result is bit for bit the matrices of the corpus and traffic alone.
    ``running``: see :func:`level_matrices`."""
    counts = [e.counts for e in experts.values()]
    a, b = level_matrices(
        counts, names=list(experts), device=device, running=running, **_level_arguments(experts, config)
    )
    blocks = [e.adaptation for e in experts.values()]
    if not adaptation or all(blk is None for blk in blocks):
        return a, b
    return add_blocks(a, b, blocks, device=device)


def ridge_matrices(
    statistics: Mapping[str, ExpertStatistics],
    config: RouterConfig,
    *,
    matrix: np.ndarray | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The ridge matrices ``A`` ((h+1)²) and ``B`` ((h+1) × D) of a router's statistics under its
    config, as float64 numpy arrays (e.g. for a λ sweep with :class:`ir3de.fitting.solve.RidgePath`).
    At token level, missing token Grams are derived from the embedding ``matrix``.

    Example:
        >>> a, b = ridge_matrices(router.statistics, router.config, matrix=router.embeddings.matrix)  # doctest: +SKIP
    """
    if config.level == "token" and any(e.gram is None for e in statistics.values()):
        if matrix is None:
            raise InvalidInputError(
                "token-level ridge matrices need the embedding matrix: pass matrix=router.embeddings.matrix"
            )
        statistics = with_grams(statistics, matrix, device=device)
    if config.level == "text" and any(e.counts.needs_rebuild for e in statistics.values()):
        if matrix is None:
            raise InvalidInputError(
                "these statistics hold token ids (keep_token_ids): pass matrix=router.embeddings.matrix "
                "to rebuild their text statistics"
            )
        statistics = with_text_statistics(statistics, matrix)
    a, b = experts_matrices(statistics, config, device=device)
    return to_numpy(a), to_numpy(b)


def select_lambda(
    statistics: Mapping[str, ExpertStatistics],
    config: RouterConfig,
    lams: Iterable[float] | None = None,
    *,
    matrix: np.ndarray | None = None,
    device: str = "cpu",
) -> float:
    """The λ among ``lams`` (default: 25 from 1e-4 to 1e2) with the lowest generalised cross-validation
    score on the ridge matrices of ``statistics`` (:func:`gcv_lambda`; meaningful at ``level="text"``).
    Apply it with ``router.configure(lam=...)`` (a re-solve, no text re-read).

    Example:
        >>> router.configure(lam=select_lambda(router.statistics, router.config))   # doctest: +SKIP
    """
    return gcv_lambda(*ridge_matrices(statistics, config, matrix=matrix, device=device), lambda_grid(lams))


# ---------------------------------------------------------------------------------------------- solve → table


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array (a torch tensor is copied to the CPU)."""
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()


def applied_weights(solution: Any, *, column_norm: bool) -> Any:
    """The weights a table is compiled from: the solve, column-normalised when ``column_norm``
    (the paper's reference code)."""
    return column_normalize(solution) if column_norm else solution


def solve_weights(a: Any, b: Any, *, lam: float, column_norm: bool) -> tuple[Any, Any]:
    """``W* = (A + λI)⁻¹ B`` (float64 Cholesky) and the weights as applied (:func:`applied_weights`).
    Same kind as the inputs (numpy or torch)."""
    solution = ridge_solve(a, b, lam)
    return solution, applied_weights(solution, column_norm=column_norm)


def lambda_grid(lams: Iterable[float] | None = None) -> np.ndarray:
    """The λ values to score: ``lams`` checked (positive, finite), or 25 values from 1e-4 to 1e2."""
    grid = np.logspace(-4, 2, 25) if lams is None else np.asarray(list(lams), np.float64)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError(f"lams must be positive finite numbers, got {list(grid)}")
    return grid


def gcv_lambda(a: np.ndarray, b: np.ndarray, lams: Iterable[float] | None = None) -> float:
    """The λ of :func:`lambda_grid` with the lowest generalised cross-validation error of the ridge fit
    of ``A``, ``B`` (:func:`ir3de.fitting.solve.gcv_curve`: one eigendecomposition, no held-out text)."""
    _, best = gcv_curve(a, b, lambda_grid(lams))
    return best


def compile_table(
    matrix: np.ndarray,
    weights: Any,
    excluded_ids: np.ndarray | Sequence[int] = (),
    *,
    device: str = "cpu",
    form: str = "dense",
) -> RouteTable:
    """The route table of ``weights`` ((h+1) × D, bias last).

    ``form="dense"``: ``[E, 1] · W`` in float64 for every vocabulary id, stored as float32 (numpy on
    the CPU, torch on a GPU ``device``). ``"factored"``: ``E`` and ``W`` kept apart, nothing compiled
    (:meth:`ir3de.table.RouteTable.factored`); ``"auto"``: :func:`ir3de.table.choose_form`.
    """
    w_shape = tuple(weights.shape)
    form = choose_form(form, int(w_shape[0]) - 1, int(w_shape[1]))
    if form == "factored":
        return RouteTable.factored(matrix, np.asarray(to_numpy(weights), np.float64), excluded_ids)
    if _is_gpu(device):
        logits = compile_logits(matrix, weights, device=device)
    else:
        w = np.asarray(to_numpy(weights), np.float64)
        head, bias = w[:-1], w[-1]
        src = np.asarray(matrix)
        logits = np.empty((src.shape[0], w.shape[1]), np.float32)
        # small chunks through one reused float64 buffer stay in cache: ~5x faster than large
        # freshly allocated ones (this compile is most of the cost of learn/forget_traffic)
        rows = np.empty((min(_COMPILE_CHUNK_ROWS, src.shape[0]), src.shape[1]), np.float64)
        out = np.empty((rows.shape[0], w.shape[1]), np.float64)
        for start in range(0, src.shape[0], _COMPILE_CHUNK_ROWS):
            n = min(_COMPILE_CHUNK_ROWS, src.shape[0] - start)
            rows[:n] = src[start : start + n]
            np.matmul(rows[:n], head, out=out[:n])
            out[:n] += bias
            logits[start : start + n] = out[:n]
    return RouteTable.from_logits(logits, excluded_ids)


def fit_state(
    names: Sequence[str],
    counts: Sequence[ExpertCounts],
    *,
    matrix: np.ndarray,
    excluded_ids: np.ndarray | Sequence[int],
    level: str,
    lam: float,
    balance: bool,
    column_norm: bool,
    token_grams: Sequence[Any] | None = None,
    device: str = "cpu",
    traffic: Sequence[ExpertCounts | None] | None = None,
    traffic_grams: Sequence[Any | None] | None = None,
    traffic_weight: float = 0.0,
    traffic_policy: str = "balanced",
    table_form: str = "dense",
    running: TextGramSum | None = None,
) -> RoutingState:
    """The whole chain from statistics to a routing state: statistics → solve → normalise → table
    (``table_form``: see :func:`compile_table`)."""
    a, b = level_matrices(
        counts,
        level=level,
        balance=balance,
        token_grams=token_grams,
        names=names,
        device=device,
        traffic=traffic,
        traffic_grams=traffic_grams,
        traffic_weight=traffic_weight,
        traffic_policy=traffic_policy,
        running=running,
    )
    solution, applied = solve_weights(a, b, lam=lam, column_norm=column_norm)
    table = compile_table(matrix, applied, excluded_ids, device=device, form=table_form)
    return RoutingState(tuple(names), table, to_numpy(applied), to_numpy(solution))


def experts_state(
    experts: Mapping[str, ExpertStatistics],
    config: RouterConfig,
    *,
    matrix: np.ndarray,
    excluded_ids: np.ndarray | Sequence[int],
    device: str = "cpu",
    running: TextGramSum | None = None,
) -> RoutingState:
    """:func:`fit_state` of ``experts`` under ``config`` (its level, weighting, λ and column norm); at
    token level every Gram must be there (:func:`with_grams`). Adaptation blocks, when an expert has
    one, are added to the ridge matrices before the solve (:func:`experts_matrices`). ``running``:
    a sum kept between calls (:func:`level_matrices`)."""
    if any(e.adaptation is not None for e in experts.values()):
        a, b = experts_matrices(experts, config, device=device, running=running)
        solution, applied = solve_weights(a, b, lam=config.lam, column_norm=config.column_norm)
        table = compile_table(matrix, applied, excluded_ids, device=device)
        return RoutingState(tuple(experts), table, to_numpy(applied), to_numpy(solution))
    return fit_state(
        list(experts),
        [e.counts for e in experts.values()],
        matrix=matrix,
        excluded_ids=excluded_ids,
        lam=config.lam,
        column_norm=config.column_norm,
        device=device,
        table_form=config.table,
        running=running,
        **_level_arguments(experts, config),
    )
