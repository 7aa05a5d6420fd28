"""Learning from traffic: served prompts with their correct expert, kept as each expert's traffic block.

Traffic is counted exactly like a corpus (the text Gram of the prompts and their token histogram) but
kept apart from the corpus statistics, weighted by ``config.traffic_weight`` / ``traffic_policy``
(:func:`ir3de.fitting.statistics.weights_with_traffic`), summarised by :func:`summaries` and taken out again
by :func:`forget`. Learning costs one count of the prompts, one (h+1)² solve and a table compile: no
corpus text is re-read. Blocks add exactly, so the same prompts learned in any order or split give the
same router (up to float64 rounding of the Gram sums), and forgetting all traffic gives back, bit for
bit, the router from before.

The functions here take and return the experts' statistics
(:class:`~ir3de.fitting.pipeline.ExpertStatistics`, name → record) and never change their input;
:class:`ir3de.Router` counts, calls them under its lock and swaps the result in with one solve.
A label that is not an expert becomes, with ``create_experts``, a new expert whose *corpus* is its
prompts (an expert needs a corpus to be weighed against; later prompts are traffic).

Example:
    >>> router.learn(["How do I file my taxes?", "def f(x):"], ["finance", "code"])   # doctest: +SKIP
    >>> summaries(experts, router.config)["finance"].num_prompts                       # doctest: +SKIP
    1
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ir3de.fitting.pipeline import (
    ExpertStatistics,
    check_counts,
    count_expert,
    count_texts,
    traffic_summaries,
)
from ir3de.fitting.statistics import ExpertCounts, KeepTokenIds, TrafficSummary

if TYPE_CHECKING:
    from ir3de.config import RouterConfig

__all__ = ["count_learned", "count_prompts", "forget", "learn", "summaries"]


def count_prompts(
    prompts: Iterable[str], embeddings: Any, *, name: str, batch_size: int = 512
) -> ExpertCounts:
    """One expert's learned prompts counted as a traffic block: token histogram *and* text Gram
    (traffic is small, so both levels' statistics are always kept), without a progress bar."""
    return count_texts(
        prompts,
        tokenizer=embeddings.tokenizer,
        vocab_size=embeddings.vocab_size,
        excluded_ids=embeddings.excluded_ids,
        embedding_matrix=embeddings.matrix,
        name=name,
        batch_size=batch_size,
        progress=False,
    )


def count_learned(
    items: Iterable[str] | ExpertCounts,
    embeddings: Any,
    *,
    name: str,
    corpus: bool,
    level: str,
    batch_size: int = 512,
    progress: bool | None = False,
    keep_token_ids: KeepTokenIds = False,
) -> ExpertCounts:
    """Learned prompts (or their precomputed counts) of one label, counted as the ``corpus`` of a new
    expert (for a fit at ``level``; with ``keep_token_ids`` its texts' token ids are kept, as a fit
    keeps them) or as a traffic block (:func:`count_prompts`: never with token ids), and checked
    against ``embeddings``."""
    if isinstance(items, ExpertCounts):
        counts = items
    elif corpus:
        counts = count_expert(
            embeddings,
            items,
            name=name,
            level=level,
            batch_size=batch_size,
            progress=progress,
            keep_token_ids=keep_token_ids,
        )
    else:
        counts = count_prompts(items, embeddings, name=name, batch_size=batch_size)
    # learned prompts keep token ids only as the corpus of a new expert, as a fit would keep them
    counts = counts.keeping_token_ids(keep_token_ids if corpus else False, embeddings.matrix)
    if corpus or counts.num_tokens:
        vocab_size, hidden_size = embeddings.vocab_size, embeddings.hidden_size
        check_counts(name, counts, vocab_size=vocab_size, hidden_size=hidden_size, level=level)
    return counts


def learn(
    experts: Mapping[str, ExpertStatistics], counted: Mapping[str, ExpertCounts], new: Collection[str]
) -> dict[str, ExpertStatistics]:
    """``experts`` after learning ``counted`` (expert → counts of its learned prompts): a name in
    ``new`` becomes an expert with those counts as its corpus; every other adds them to its traffic
    block (whose token Gram is then derived again)."""
    out = dict(experts)
    for name, delta in counted.items():
        if name in new:
            out[name] = ExpertStatistics(delta)
            continue
        old = out[name]
        block = delta if old.traffic is None else old.traffic + delta
        out[name] = dataclasses.replace(old, traffic=block, traffic_gram=None)
    return out


def forget(experts: Mapping[str, ExpertStatistics], names: Collection[str]) -> dict[str, ExpertStatistics]:
    """``experts`` without the traffic blocks of ``names``."""
    return {
        n: dataclasses.replace(e, traffic=None, traffic_gram=None) if n in names else e
        for n, e in experts.items()
    }


def summaries(experts: Mapping[str, ExpertStatistics], config: RouterConfig) -> dict[str, TrafficSummary]:
    """Per expert with traffic: prompts, tokens and the weight the fit gives them under ``config``."""
    records = list(experts.values())
    return traffic_summaries(
        list(experts),
        [e.counts for e in records],
        [e.traffic for e in records],
        level=config.level,
        balance=config.balance,
        traffic_weight=config.traffic_weight,
        traffic_policy=config.traffic_policy,
    )
