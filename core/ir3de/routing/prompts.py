"""Routing through a state: tokenize a prompt (capped), select its deciding tokens, decide.

Pure functions over a :class:`~ir3de.fitting.pipeline.RoutingState` (the route table and the
tokenizer) and a :class:`~ir3de.config.RouterConfig` (selector, k, temperature, evidence prior,
fallback); :class:`ir3de.Router` calls them on the state it holds right now, so a routing call never
sees half of a refit::

    encode_prompts   tokenizer, texts            → flat ids, lengths   (first ``max_tokens`` tokens)
    select           state, ids, lengths          → Selection            (selectors + evidence prior)
    route_one        state, text                  → RouteDecision        (the single-prompt fast path)
    route_batch      state, texts                 → [RouteDecision]      (vectorised)
    route_indices    state, texts                 → expert index per prompt (no decision objects)

The single-prompt path is the latency path: plain lists, one fused lookup for ``selector="avg"``
(the deciding tokens are computed only when a caller reads them; with many experts and no
``fallback``, the scores and confidence too: the route itself is the argmax), no torch, no numpy
for the defaults.

Example:
    >>> route_one(router.state, router.config, "Solve 3x + 5 = 11").expert   # doctest: +SKIP
    'math'
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ir3de.decision import RouteDecision
from ir3de.errors import EmptyPromptError, InvalidInputError
from ir3de.routing.calibration import evidence_scores
from ir3de.routing.selectors import Selection, explain_one, select_avg_one, select_batch, select_one
from ir3de.sanitize import clean_text, clean_texts

if TYPE_CHECKING:
    import tokenizers

    from ir3de.config import RouterConfig
    from ir3de.fitting.pipeline import RoutingState

__all__ = [
    "capped_ids",
    "check_prompt",
    "check_prompts",
    "decide",
    "encode_prompts",
    "prompt_head",
    "route_batch",
    "route_indices",
    "route_one",
    "select",
]

PREFIX_CHARS_PER_TOKEN = 16  # tokenize at most this many chars per allowed token before the full text
PREFIX_MARGIN_TOKENS = 16  # tokens past the cap that make a prefix's first tokens safe
_NO_IDS = np.zeros(0, np.int64)


# ---------------------------------------------------------------------------------------------- prompts


def check_prompt(text: object) -> str:
    """``text`` if it is a ``str``, else :class:`InvalidInputError`."""
    if not isinstance(text, str):
        raise InvalidInputError(f"the prompt is a {type(text).__name__}; prompts must be str")
    return text


def check_prompts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list of ``str``; :class:`InvalidInputError` names a non-string (or a lone ``str``)."""
    if isinstance(texts, str):
        raise InvalidInputError("route_batch takes a list of prompts; for one prompt call route(text)")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(f"prompt #{i} is a {type(t).__name__}; prompts must be str")
    return texts


def prompt_head(text: str, max_tokens: int) -> str:
    """The part of a prompt worth tokenizing: '' for whitespace-only prompts, else a prefix long
    enough to hold ``max_tokens`` tokens (checked by :func:`capped_ids`).

    Example:
        >>> prompt_head("  ", 4), prompt_head("x" * 100, 4) == "x" * 64
        ('', True)
    """
    if not text or text.isspace():
        return ""
    char_cap = max_tokens * PREFIX_CHARS_PER_TOKEN
    return text if len(text) <= char_cap else text[:char_cap]


def capped_ids(
    tokenizer: tokenizers.Tokenizer, text: str, head: str, ids: list[int], max_tokens: int
) -> list[int]:
    """The first ``max_tokens`` ids of ``text`` given the ids of its prefix ``head``.

    A prefix's tokens equal the full text's except near the cut, so a prefix that yields
    ``max_tokens`` plus a margin is exact; otherwise (very long tokens) the whole text is encoded.
    """
    if 0 < len(head) < len(text) and len(ids) < max_tokens + PREFIX_MARGIN_TOKENS:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
    return ids[:max_tokens] if len(ids) > max_tokens else ids


def encode_prompts(
    tokenizer: tokenizers.Tokenizer, texts: Sequence[str], max_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize prompts as routing does (first ``max_tokens`` tokens): flat int64 ids and lengths.

    A whitespace-only prompt has no countable token (it routes to the fallback, or raises).
    """
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    texts = clean_texts(texts)  # lone surrogates -> U+FFFD (ir3de.sanitize)
    heads = [prompt_head(t, max_tokens) for t in texts]
    encodings = encode(heads, add_special_tokens=False)
    id_lists = [capped_ids(tokenizer, t, h, e.ids, max_tokens) for t, h, e in zip(texts, heads, encodings)]
    lengths = np.fromiter((len(x) for x in id_lists), np.int64, count=len(id_lists))
    flat = np.fromiter(itertools.chain.from_iterable(id_lists), np.int64, count=int(lengths.sum()))
    return flat, lengths


# ---------------------------------------------------------------------------------------------- decisions


def select(
    state: RoutingState, config: RouterConfig, ids: np.ndarray, lengths: np.ndarray, *, explain: bool = True
) -> Selection:
    """:func:`ir3de.routing.selectors.select_batch` with the configured selector, then the evidence prior
    (few countable tokens → scores shrink toward uniform; winners unchanged)."""
    sel = select_batch(
        ids,
        lengths,
        state.table,
        selector=config.selector,
        k=config.k,
        combine=config.combine,
        temperature=config.effective_temperature,
        explain=explain,
    )
    n0 = config.effective_evidence_tokens
    if n0:
        sel = dataclasses.replace(sel, scores=evidence_scores(sel.scores, sel.num_countable, n0))
    return sel


def decide(
    state: RoutingState,
    config: RouterConfig,
    tokenizer: Any,
    winner: int,
    scores: np.ndarray | list[float] | Callable[[], np.ndarray],
    token_ids: np.ndarray,
    positions: np.ndarray,
    num_countable: int,
    index: int,
    explain: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
) -> RouteDecision:
    """The :class:`RouteDecision` of one selected prompt (``winner < 0``: no countable token), with
    the fallback applied: below ``config.threshold_for(expert)``, or for an empty prompt.

    ``scores`` may be a function that computes them (``select_avg_one(..., deferred=True)``): without
    a ``fallback`` the decision then computes its scores and confidence when first read; with one
    they are computed now, as the threshold needs the confidence.

    Raises:
        EmptyPromptError: no countable token and no ``fallback`` configured.
    """
    if winner < 0:
        if config.fallback is None:
            raise EmptyPromptError(
                f"prompt #{index} has no countable token (empty, whitespace, or only special tokens); "
                "pass a non-empty prompt or set Router(fallback='name') to route such prompts"
            )
        return RouteDecision(
            config.fallback, 0.0, None, None, True, 0, expert_names=state.experts, tokenizer=tokenizer
        )
    top = state.experts[winner]
    if callable(scores) and config.fallback is not None:  # the threshold needs the confidence now
        scores = scores()  # (without a fallback a callable stays: scores on first read)
    confidence: float | None = None
    use_fallback = False
    if not callable(scores):
        confidence = float(scores[winner])
        use_fallback = config.fallback is not None and confidence < config.threshold_for(top)
    return RouteDecision(
        config.fallback if use_fallback else top,  # type: ignore[arg-type]
        confidence,
        None,
        top,
        use_fallback,
        num_countable,
        expert_names=state.experts,
        score_values=None if callable(scores) else scores,
        scorer=scores if callable(scores) else None,
        token_ids=token_ids,
        positions=positions,
        table=state.table,
        tokenizer=tokenizer,
        explain=explain,
    )


# ---------------------------------------------------------------------------------------------- routing


def route_one(state: RoutingState, config: RouterConfig, text: str) -> RouteDecision:
    """Route one prompt (the latency path: lists and one table lookup per token, no batch machinery).

    Raises:
        EmptyPromptError: no countable token and no ``fallback`` configured.
    """
    tokenizer = state.tokenizer
    text = clean_text(text)  # lone surrogates -> U+FFFD (ir3de.sanitize)
    cap = config.max_tokens
    head = "" if not text or text.isspace() else text[: cap * PREFIX_CHARS_PER_TOKEN]  # prompt_head, inlined
    ids = capped_ids(tokenizer, text, head, tokenizer.encode(head, add_special_tokens=False).ids, cap)
    if config.selector == "avg":  # the defaults: one fused lookup; the deciding tokens on demand
        table = state.table
        winner, scores, n = select_avg_one(
            ids, table, config.effective_temperature, config.effective_evidence_tokens, deferred=True
        )
        lazy = lambda: explain_one(ids, table)  # noqa: E731
        return decide(state, config, tokenizer, winner, scores, _NO_IDS, _NO_IDS, n, 0, explain=lazy)
    winner, scores, chosen, positions, n = select_one(
        np.array(ids, np.int64),
        state.table,
        selector=config.selector,
        k=config.k,
        combine=config.combine,
        temperature=config.effective_temperature,
    )
    scores = evidence_scores(scores, n, config.effective_evidence_tokens)
    return decide(state, config, tokenizer, winner, scores, chosen, positions, n, 0)


def route_batch(state: RoutingState, config: RouterConfig, texts: Sequence[str]) -> list[RouteDecision]:
    """Route many prompts at once (vectorised); decisions come back in the same order."""
    tokenizer = state.tokenizer
    ids, lengths = encode_prompts(tokenizer, texts, config.max_tokens)
    sel = select(state, config, ids, lengths)
    offsets = sel.selected_offsets
    return [
        decide(
            state,
            config,
            tokenizer,
            int(sel.winners[i]),
            sel.scores[i],
            sel.selected_ids[offsets[i] : offsets[i + 1]],
            sel.selected_positions[offsets[i] : offsets[i + 1]],
            int(sel.num_countable[i]),
            i,
        )
        for i in range(len(texts))
    ]


def route_indices(state: RoutingState, config: RouterConfig, texts: Sequence[str]) -> np.ndarray:
    """Expert index per prompt (``-1``: no countable token), no decision objects, no fallback: the
    fastest path, for evaluation and bulk routing.

    Example:
        >>> route_indices(router.state, router.config, ["2+2?", "def f():"])   # doctest: +SKIP
        array([0, 1])
    """
    ids, lengths = encode_prompts(state.tokenizer, list(texts), config.max_tokens)
    return select(state, config, ids, lengths, explain=False).winners
