"""The fast path (counts → Gram → table lookup) equals the paper's per-token formulation."""

from __future__ import annotations

import numpy as np
import pytest

from ir3de import Router, RouterConfig
from ir3de.fitting.pipeline import ridge_matrices, select_lambda
from ir3de.fitting.solve import gcv_curve
from ir3de.routing.prompts import route_indices
from paper_oracle import (
    explicit_gcv,
    paper_fit,
    paper_route,
    text_level_fit,
    text_level_route,
    text_level_rows,
)


@pytest.fixture(scope="module")
def corpus_ids(smollm2, small_corpus):
    names = list(small_corpus)
    ids = {
        n: [e.ids for e in smollm2.tokenizer.encode_batch(small_corpus[n], add_special_tokens=False)]
        for n in names
    }
    return names, ids


@pytest.fixture(scope="module")
def test_prompts(small_tests):
    return [t for texts in small_tests.values() for t in texts]


@pytest.mark.parametrize(
    ("lam", "column_norm", "balance"),
    [(1e-2, True, False), (1.0, True, False), (100.0, False, False), (1e-2, True, True), (3.0, False, True)],
)
def test_weights_equal_the_per_token_solution(smollm2, small_corpus, corpus_ids, lam, column_norm, balance):
    names, ids = corpus_ids
    excluded = set(smollm2.excluded_ids.tolist())
    router = Router(
        smollm2,
        device="cpu",
        progress=False,
        level="token",
        lam=lam,
        column_norm=column_norm,
        balance=balance,
    )
    router.fit(small_corpus)
    weights = None
    if balance:
        masses = np.array([router.statistics[n].counts.num_tokens for n in names], float)
        weights = masses.mean() / masses
    expected = paper_fit([ids[n] for n in names], smollm2.matrix, excluded, lam, column_norm, weights)
    np.testing.assert_allclose(router.state.weights, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    ("selector", "k", "lam"),
    [
        ("topk", 10, 1e-2),
        ("topk", 1, 1e-2),
        ("topk", 50, 1.0),
        ("topk", 3, 30.0),
        ("all", 10, 1e-2),
        ("avg", 10, 1e-2),
    ],
)
def test_routes_equal_the_per_token_router(smollm2, small_corpus, corpus_ids, test_prompts, selector, k, lam):
    names, ids = corpus_ids
    excluded = set(smollm2.excluded_ids.tolist())
    router = Router(
        smollm2, config=RouterConfig.paper(), device="cpu", progress=False, selector=selector, k=k, lam=lam
    ).fit(small_corpus)
    w = paper_fit([ids[n] for n in names], smollm2.matrix, excluded, lam)
    prompt_ids = [
        e.ids[:1024] for e in smollm2.tokenizer.encode_batch(test_prompts, add_special_tokens=False)
    ]
    expected = np.array([paper_route(p, smollm2.matrix, w, excluded, selector, k) for p in prompt_ids])
    got = route_indices(router.state, router.config, test_prompts)
    assert got.tolist() == expected.tolist()
    # single-prompt path agrees with the batch path, decision by decision
    singles = [names.index(router.route(p).expert) for p in test_prompts[::7]]
    assert singles == got[::7].tolist()


def test_counts_are_token_histograms(smollm2, small_corpus, corpus_ids):
    names, ids = corpus_ids
    router = Router(smollm2, device="cpu", progress=False).fit(small_corpus)
    excluded = set(smollm2.excluded_ids.tolist())
    for n in names:
        flat = [t for text in ids[n] for t in text if t not in excluded]
        dense = np.bincount(flat, minlength=smollm2.vocab_size)
        assert np.array_equal(router.statistics[n].counts.to_dense(smollm2.vocab_size), dense)
        assert router.statistics[n].counts.num_texts == len(small_corpus[n])


@pytest.mark.parametrize(
    ("lam", "balance", "column_norm"),
    [(1e-1, True, False), (1e-2, False, False), (3.0, True, True)],
)
def test_text_level_weights_equal_the_per_text_solution(
    smollm2, small_corpus, corpus_ids, lam, balance, column_norm
):
    names, ids = corpus_ids
    excluded = set(smollm2.excluded_ids.tolist())
    router = Router(
        smollm2, device="cpu", progress=False, level="text", lam=lam, balance=balance, column_norm=column_norm
    ).fit(small_corpus)
    expected = text_level_fit([ids[n] for n in names], smollm2.matrix, excluded, lam, balance, column_norm)
    np.testing.assert_allclose(router.state.weights, expected, rtol=1e-7, atol=1e-9)
    for n in names:
        assert router.statistics[n].counts.num_scored_texts == sum(
            1 for text in ids[n] if any(t not in excluded for t in text)
        )


def test_text_level_table_lookup_equals_the_mean_embedding_model(
    smollm2, small_corpus, corpus_ids, test_prompts
):
    """Routing by the mean of per-token table logits is the text-level model applied to the prompt."""
    names, ids = corpus_ids
    excluded = set(smollm2.excluded_ids.tolist())
    router = Router(smollm2, device="cpu", progress=False, level="text", selector="avg").fit(small_corpus)
    w = text_level_fit([ids[n] for n in names], smollm2.matrix, excluded, router.config.lam, True)
    prompt_ids = [
        e.ids[:1024] for e in smollm2.tokenizer.encode_batch(test_prompts, add_special_tokens=False)
    ]
    expected = [text_level_route(p, smollm2.matrix, w, excluded) for p in prompt_ids]
    got = route_indices(router.state, router.config, test_prompts)
    assert got.tolist() == expected
    # the single-prompt path (one fused lookup of precomputed per-id sums) against the same model
    decisions = [router.route(p) for p in test_prompts]
    assert [names.index(d.expert) for d in decisions] == expected
    for d, ids in zip(decisions[::5], prompt_ids[::5]):
        row = np.append(smollm2.matrix[[t for t in ids if t not in excluded]].astype(np.float64).mean(0), 1.0)
        n = sum(t not in excluded for t in ids)  # the evidence prior: temperature T · (1 + n0 / n)
        z = (row @ w) / (
            router.config.effective_temperature * (1 + router.config.effective_evidence_tokens / n)
        )
        probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert [d.scores[n] for n in names] == pytest.approx(probs, rel=1e-4, abs=1e-9)
        assert d.num_tokens == sum(t not in excluded for t in ids)


@pytest.mark.parametrize("balance", [True, False])
def test_gcv_from_statistics_equals_the_explicit_formula(smollm2, small_corpus, corpus_ids, balance):
    names, ids = corpus_ids
    excluded = set(smollm2.excluded_ids.tolist())
    router = Router(smollm2, device="cpu", progress=False, level="text", balance=balance).fit(small_corpus)
    x, targets, weights = text_level_rows([ids[n] for n in names], smollm2.matrix, excluded, balance)
    lams = [1e-3, 3e-2, 1.0, 30.0]
    scores, best = gcv_curve(
        *ridge_matrices(router.statistics, router.config, matrix=router.embeddings.matrix), lams
    )
    expected = [explicit_gcv(x, targets, weights, lam) for lam in lams]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert best == lams[int(np.argmin(expected))]
    assert select_lambda(router.statistics, router.config, lams) == best
    assert router.configure(lam=best).config.lam == best
