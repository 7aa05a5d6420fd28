"""The one fitting pipeline: texts → counts → statistics → solve → route table.

Every fitting path calls these functions — :class:`ir3de.Router`, stat packs
(:meth:`ir3de.stat_pack.StatPack.compute`), the λ sweeps of :mod:`ir3de.evaluate` and the Ray adapter —
so they count, solve and compile identically. Each step takes arrays (or
:class:`~ir3de.statistics.ExpertCounts`) and returns arrays::

    count_texts        texts                       → ExpertCounts          (tokenizer-bound, CPU)
    token_gram         E, ExpertCounts             → G_d  ((h+1)², float64) (token level)
    level_statistics   counts [+ token Grams]      → A, B                  (configured level + weighting)
    solve_weights      A, B, λ                     → W* and W as applied   (Cholesky, float64;
                                                                           λ sweeps: RidgePath + applied_weights)
    compile_table      E, W, excluded ids          → RouteTable            (V × D lookup table)

On the CPU everything is numpy (float64 Cholesky through scipy) and torch is never imported; with
``device="cuda…"`` the Gram products, the solve and the table compilation run in torch on that GPU.

Example:
    >>> import numpy as np
    >>> from ir3de.statistics import ExpertCounts
    >>> e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    >>> counts = [ExpertCounts(np.array([0]), np.array([3]), 1), ExpertCounts(np.array([1]), np.array([2]), 1)]
    >>> grams = [token_gram(e, c) for c in counts]
    >>> a, b = level_statistics(counts, level="token", balance=False, token_grams=grams)
    >>> solution, applied = solve_weights(a, b, lam=0.1, column_norm=True)
    >>> compile_table(e, applied, excluded_ids=[2]).votes.tolist()
    [0, 1, 0]
"""

from __future__ import annotations

import importlib.util
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .counting import TextCounter
from .errors import ExpertError, InvalidInputError, TokenizerMismatchError
from .solve import column_normalize, ridge_solve
from .statistics import (
    ExpertCounts,
    TrafficSummary,
    balance_weights,
    expert_gram,
    ridge_statistics,
    traffic_weights,
)
from .table import RouteTable, compile_logits

__all__ = [
    "RoutingState",
    "applied_weights",
    "batched_texts",
    "check_counts",
    "check_device",
    "check_expert_name",
    "check_text_level",
    "compile_table",
    "count_texts",
    "fit_state",
    "level_statistics",
    "resolve_device",
    "solve_weights",
    "to_numpy",
    "token_gram",
    "traffic_summaries",
]

_GRAM_CHUNK_ROWS = 16384
_COMPILE_CHUNK_ROWS = 256
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True, eq=False)
class RoutingState:
    """An immutable snapshot that routing reads; a router swaps it as a whole.

    Attributes:
        experts: expert names, in column order.
        table: the compiled route table.
        weights: (h+1, D) weights as applied (after column normalisation when enabled).
        ridge_solution: (h+1, D) raw solve.
    """

    experts: tuple[str, ...]
    table: RouteTable
    weights: np.ndarray
    ridge_solution: np.ndarray


# ---------------------------------------------------------------------------------------------- checks


def check_expert_name(name: object) -> str:
    """``name`` if it is a non-empty string, else :class:`ExpertError`."""
    if not isinstance(name, str) or not name.strip():
        raise ExpertError(f"expert names must be non-empty strings, got {name!r}")
    return name


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
    if counts.text_gram is None:
        raise ExpertError(
            f"expert {name!r} has token counts only (counted without the embedding matrix, e.g. by an older "
            "ir3de or a token-only stat pack), but this router fits at level='text'; re-count its texts "
            "with this version, or use Router(level='token')"
        )
    if counts.num_scored_texts == 0:
        raise ExpertError(f"expert {name!r} has no text with a countable token")


def check_counts(name: str, counts: ExpertCounts, *, vocab_size: int, hidden_size: int, level: str) -> None:
    """Raise unless ``counts`` fit an embedding matrix of ``vocab_size`` × ``hidden_size`` at ``level``."""
    if counts.token_ids.size and counts.token_ids[-1] >= vocab_size:
        raise TokenizerMismatchError(
            f"counts of expert {name!r} hold token id {counts.token_ids[-1]} but the vocabulary has "
            f"{vocab_size} ids: they were made with another tokenizer"
        )
    if counts.num_tokens == 0:
        raise ExpertError(f"expert {name!r} has no countable token")
    if counts.text_gram is not None and counts.text_gram.shape[0] != hidden_size + 1:
        raise TokenizerMismatchError(
            f"the text statistics of expert {name!r} are {counts.text_gram.shape[0] - 1}-dimensional but the "
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
) -> ExpertCounts:
    """Count one expert's texts batch by batch with :class:`~ir3de.counting.TextCounter` (tqdm bar).

    Args:
        texts: any iterable of strings (list, generator, dataset column).
        tokenizer, vocab_size, excluded_ids: what to count with (``TokenEmbeddings`` fields).
        embedding_matrix: the (V, h) matrix; given, the result carries the text Gram (``level="text"``).
        name: the expert's name, for the progress bar and error messages.
        progress: ``True``/``False``, or ``None`` for a bar only on a terminal.
        require_text: raise :class:`ExpertError` when ``texts`` is empty.
    """
    from tqdm.auto import tqdm

    excluded = None if excluded_ids is None else np.asarray(excluded_ids, np.int64)
    counter = TextCounter(tokenizer, vocab_size, excluded, embedding_matrix=embedding_matrix)
    total = len(texts) if hasattr(texts, "__len__") else None  # type: ignore[arg-type]
    disable = None if progress is None else not progress
    with tqdm(total=total, desc=f"counting {name}", unit="text", disable=disable) as bar:
        for batch in batched_texts(texts, name, batch_size):
            counter.add(batch)
            bar.update(len(batch))
    counts = counter.result()
    if require_text and counts.num_texts == 0:
        raise ExpertError(f"expert {name!r} has no text; give it at least one non-empty string")
    return counts


# ---------------------------------------------------------------------------------------------- statistics


def _is_gpu(device: str) -> bool:
    return device.startswith("cuda")


def token_gram(matrix: np.ndarray, counts: ExpertCounts, *, device: str = "cpu") -> Any:
    """One expert's token Gram ``Ẽ_dᵀ diag(N_d) Ẽ_d`` ((h+1)², float64): numpy on the CPU, a torch
    tensor on ``device`` when it is a GPU."""
    total: Any = None
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


def level_statistics(
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
    traffic_policy: str = "per_prompt",
) -> tuple[Any, Any]:
    """The ridge statistics ``A`` ((h+1)²) and ``B`` ((h+1) × D) of the experts at ``level``.

    ``level="token"`` combines the experts' token Grams (``token_grams``, one per expert, from
    :func:`token_gram`) weighted by token mass; ``level="text"`` their text Grams weighted by scored
    texts. Float64 numpy on the CPU, torch on a GPU ``device``.

    ``traffic`` (one block or ``None`` per expert: labelled served prompts, counted like a corpus)
    adds ``u_d T_d`` to ``A`` and its last column to ``B[:, d]``, with ``u_d`` from
    :func:`ir3de.statistics.traffic_weights` (``traffic_grams``: their token Grams at token level).
    Without any traffic block (or with weight 0) the result is bit for bit the corpus-only one.
    """
    names = list(names) if names is not None else [f"#{i}" for i in range(len(counts))]
    if level == "text":
        for n, c in zip(names, counts):
            check_text_level(n, c)
        grams: list[Any] = [c.text_gram for c in counts]
        if _is_gpu(device):
            import torch

            grams = [torch.tensor(g, device=device) for g in grams]
    else:
        if token_grams is None or len(token_grams) != len(counts):
            raise ValueError("level='token' needs one token Gram per expert (see token_gram)")
        grams = list(token_grams)
    corpus_weights = balance_weights(_level_masses(counts, level), balance)
    a, b = ridge_statistics(grams, corpus_weights)
    if traffic is None or all(t is None for t in traffic):
        return a, b
    u = traffic_weights(
        _level_masses(counts, level),
        corpus_weights,
        _level_masses(traffic, level),
        weight=traffic_weight,
        policy=traffic_policy,
    )
    for d, (block, weight) in enumerate(zip(traffic, u)):
        if block is None or weight == 0.0:
            continue
        if level == "text":
            if block.text_gram is None:
                raise ExpertError(
                    f"the traffic of expert {names[d]!r} has token counts only; learn it again with this "
                    "version, or use level='token'"
                )
            gram: Any = block.text_gram
            if _is_gpu(device):
                import torch

                gram = torch.tensor(gram, device=device)
        else:
            if traffic_grams is None or traffic_grams[d] is None:
                raise ValueError("level='token' needs the token Gram of every traffic block")
            gram = traffic_grams[d]
        a = a + gram * float(weight)
        b[:, d] = b[:, d] + gram[:, -1] * float(weight)
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
    :func:`level_statistics`)."""
    masses = _level_masses(counts, level)
    corpus_weights = balance_weights(masses, balance)
    tmasses = _level_masses(traffic, level)
    u = traffic_weights(masses, corpus_weights, tmasses, weight=traffic_weight, policy=traffic_policy)
    out = {}
    for name, block, m, w, t, weight in zip(names, traffic, masses, corpus_weights, tmasses, u):
        if block is None:
            continue
        share = float(weight * t / (w * m)) if m > 0 and w > 0 else 0.0
        out[name] = TrafficSummary(block.num_texts, block.num_tokens, float(weight), float(w), share)
    return out


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


def compile_table(
    matrix: np.ndarray,
    weights: Any,
    excluded_ids: np.ndarray | Sequence[int] = (),
    *,
    device: str = "cpu",
) -> RouteTable:
    """The route table of ``weights`` ((h+1) × D, bias last): ``[E, 1] · W`` in float64 for every
    vocabulary id, stored as float32 (numpy on the CPU, torch on a GPU ``device``)."""
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
    traffic_policy: str = "per_prompt",
) -> RoutingState:
    """The whole chain from statistics to a routing snapshot: statistics → solve → normalise → table."""
    a, b = level_statistics(
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
    )
    solution, applied = solve_weights(a, b, lam=lam, column_norm=column_norm)
    table = compile_table(matrix, applied, excluded_ids, device=device)
    return RoutingState(tuple(names), table, to_numpy(applied), to_numpy(solution))
