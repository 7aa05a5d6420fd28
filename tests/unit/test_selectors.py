"""ir3de.routing.selectors against a naive per-prompt loop: every selector × combiner, ties, empty prompts,
excluded ids, any k, batched or one by one."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ir3de.routing.selectors import COMBINERS, SELECTORS, select_batch, select_one
from ir3de.table import RouteTable

EXCLUDED = {1, 2}


def first_max(values):
    return max(range(len(values)), key=lambda i: (values[i], -i))


def softmax(values, temperature):
    top = max(values)
    exps = [math.exp((v - top) / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def row_entropy(row):
    p = softmax(row, 1.0)
    return -sum(q * math.log(q + 1e-10) for q in p)


def naive_route(ids, logits, selector, k, combine, temperature):
    """The obvious definition, one prompt at a time, in plain Python."""
    num_experts = logits.shape[1]
    rows = logits.astype(np.float64).tolist()
    kept = [t for t in ids if t not in EXCLUDED]
    if not kept:
        return -1, [0.0] * num_experts, [], [], [0.0] * num_experts
    entropy = [row_entropy(rows[t]) for t in kept]
    order = sorted(range(len(kept)), key=lambda i: (entropy[i], i))  # ties: prompt order
    if selector == "avg":
        means = [sum(rows[t][d] for t in kept) / len(kept) for d in range(num_experts)]
        return first_max(means), softmax(means, temperature), [kept[i] for i in order], order, means
    chosen = order[:k] if selector == "topk" else order
    if combine == "vote":
        counts = [0] * num_experts
        for i in chosen:
            counts[first_max(rows[kept[i]])] += 1
        scores = [c / len(chosen) for c in counts]
        return first_max(counts), scores, [kept[i] for i in chosen], chosen, [float(c) for c in counts]
    sums = [0.0] * num_experts
    for i in chosen:
        row = rows[kept[i]]
        log_z = max(row) + math.log(sum(math.exp(v - max(row)) for v in row))
        for d in range(num_experts):
            sums[d] += row[d] - log_z
    return first_max(sums), softmax(sums, temperature), [kept[i] for i in chosen], chosen, sums


def random_prompts(rng, vocab, n):
    prompts = [list(rng.integers(0, vocab, size=rng.integers(0, 16))) for _ in range(n)]
    return [*prompts, [], [1, 2, 1], [5], [5, 5, 5, 5]]  # empty, only excluded ids, one id, repeats


CASES = [(s, c) for s in SELECTORS for c in COMBINERS if not (s == "avg" and c == "logprob")]


@pytest.mark.parametrize(("selector", "combine"), CASES)
@pytest.mark.parametrize("k", [1, 2, 3, 10])
@pytest.mark.parametrize("ties", [False, True])
def test_select_batch_and_one_equal_the_naive_loop(selector, combine, k, ties, make_logits):
    vocab, experts = 24, 3
    logits = make_logits(k + 10 * ties, vocab, experts, ties=ties)
    table = RouteTable.from_logits(logits, excluded_ids=sorted(EXCLUDED))
    prompts = random_prompts(np.random.default_rng(k), vocab, 25)
    temperature = 0.5
    flat = np.array([t for p in prompts for t in p], np.int64)
    lengths = np.array([len(p) for p in prompts])
    got = select_batch(flat, lengths, table, selector=selector, k=k, combine=combine, temperature=temperature)
    assert got.selected_offsets[0] == 0 and got.selected_offsets[-1] == got.selected_ids.size
    for i, prompt in enumerate(prompts):
        winner, scores, chosen, positions, evidence = naive_route(
            prompt, logits, selector, k, combine, temperature
        )
        lo, hi = got.selected_offsets[i], got.selected_offsets[i + 1]
        assert got.winners[i] == winner, (i, prompt)
        np.testing.assert_allclose(got.scores[i], scores, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got.evidence[i], evidence, rtol=1e-9, atol=1e-9)
        assert got.selected_ids[lo:hi].tolist() == chosen
        assert got.selected_positions[lo:hi].tolist() == positions
        assert got.num_countable[i] == len([t for t in prompt if t not in EXCLUDED])
        one = select_one(
            np.array(prompt, np.int64),
            table,
            selector=selector,
            k=k,
            combine=combine,
            temperature=temperature,
        )
        assert one[0] == winner and one[4] == got.num_countable[i]
        np.testing.assert_allclose(one[1], scores, rtol=1e-9, atol=1e-12)
        assert one[2].tolist() == chosen and one[3].tolist() == positions


def test_logprob_for_avg_is_the_mean_logits():
    logits = np.array([[2, 0], [0, 1], [1, 1]], np.float32)
    table = RouteTable.from_logits(logits)
    a = select_batch(np.array([0, 1, 2]), np.array([3]), table, selector="avg", combine="logprob")
    np.testing.assert_allclose(a.evidence[0], [1.0, 2 / 3])
    assert a.winners.tolist() == [0]


def test_ties_between_experts_go_to_the_first_expert():
    logits = np.array([[0, 3, 0], [0, 0, 3], [3, 0, 0], [0, 0, 0]], np.float32)
    table = RouteTable.from_logits(logits)
    for ids in ([1, 2], [2, 1], [0, 2, 1], [3]):
        s = select_batch(np.array(ids), np.array([len(ids)]), table, selector="all")
        assert s.winners[0] == min(table.votes[ids].tolist())
        np.testing.assert_allclose(s.scores[0].max(), 1 / len(set(table.votes[ids].tolist())))
    # equal entropies are taken in prompt order: with k=1 the first of two equally sure tokens decides
    # (two experts: mirrored rows have bit-equal entropies; with more, a permuted row may differ by 1 ulp)
    mirrored = RouteTable.from_logits(np.array([[0, 3], [3, 0], [1, 1]], np.float32))
    assert mirrored.entropy[0] == mirrored.entropy[1]
    for ids in ([0, 1], [1, 0], [2, 1, 0], [2, 0, 1]):
        s = select_batch(np.array(ids), np.array([len(ids)]), mirrored, selector="topk", k=1)
        first = 1 if ids[0] == 2 else 0
        assert s.winners[0] == mirrored.votes[ids[first]] and s.selected_positions.tolist() == [first]
        one = select_one(np.array(ids), mirrored, selector="topk", k=1)
        assert one[0] == s.winners[0] and one[3].tolist() == [first]


def test_temperature_changes_scores_not_winners(make_logits):
    table = RouteTable.from_logits(make_logits(9, 20, 4))
    ids, lengths = np.arange(3, 20), np.array([5, 0, 12])
    for selector, combine in CASES:
        hot = select_batch(ids, lengths, table, selector=selector, combine=combine, temperature=5.0)
        cold = select_batch(ids, lengths, table, selector=selector, combine=combine, temperature=0.2)
        assert np.array_equal(hot.winners, cold.winners)
        if combine == "vote" and selector != "avg":
            assert np.array_equal(hot.scores, cold.scores)  # vote shares are reported as they are
        else:
            assert hot.scores[0].max() < cold.scores[0].max()


def test_batches_are_independent_of_their_neighbours(make_logits):
    table = RouteTable.from_logits(make_logits(11, 24, 3), excluded_ids=sorted(EXCLUDED))
    prompts = random_prompts(np.random.default_rng(0), 24, 10)
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(prompts))

    def run(ps, selector, combine):
        flat = np.array(list(itertools.chain.from_iterable(ps)), np.int64)
        return select_batch(flat, np.array([len(p) for p in ps]), table, selector=selector, combine=combine)

    for selector, combine in CASES:
        whole = run(prompts, selector, combine)
        shuffled = run([prompts[i] for i in perm], selector, combine)
        assert np.array_equal(whole.winners[perm], shuffled.winners)
        np.testing.assert_allclose(whole.scores[perm], shuffled.scores)


def test_empty_batch_and_empty_prompts(make_logits):
    table = RouteTable.from_logits(make_logits(12, 10, 2), excluded_ids=[1, 2])
    s = select_batch(np.zeros(0, np.int64), np.zeros(0, np.int64), table)
    assert s.winners.shape == (0,) and s.scores.shape == (0, 2) and s.selected_offsets.tolist() == [0]
    s = select_batch(np.array([1, 2]), np.array([0, 2]), table, selector="avg")
    assert s.winners.tolist() == [-1, -1] and not s.scores.any() and not s.evidence.any()
    assert s.num_countable.tolist() == [0, 0] and s.selected_ids.size == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"selector": "best"}, "unknown selector"),
        ({"combine": "mean"}, "unknown combine"),
        ({"k": 0}, "k must be a positive integer"),
        ({"k": 2.5}, "k must be a positive integer"),
        ({"k": -3}, "k must be a positive integer"),
    ],
)
def test_bad_settings_are_refused(kwargs, message, make_logits):
    table = RouteTable.from_logits(make_logits(13, 10, 2))
    with pytest.raises(ValueError, match=message):
        select_batch(np.array([3]), np.array([1]), table, **kwargs)


def test_numpy_integer_k_is_accepted(make_logits):
    table = RouteTable.from_logits(make_logits(14, 10, 2))
    a = select_batch(np.arange(10), np.array([10]), table, k=np.int64(3))
    assert a.selected_ids.size == 3


@pytest.mark.parametrize("max_tokens", [3, 7, 1024])
@pytest.mark.parametrize("selector", ["topk", "all", "avg"])
def test_a_toy_router_routes_like_the_paper_oracle_within_max_tokens(
    max_tokens, selector, toy_tokenizer, toy_matrix, toy_corpus, toy_ids, excluded_ids
):
    """End to end on the toy tokenizer: only the first ``max_tokens`` tokens of a prompt count."""
    from ir3de import Router, RouterConfig, TokenEmbeddings
    from ir3de.routing.prompts import route_indices
    from paper_oracle import paper_fit, paper_route

    emb = TokenEmbeddings(toy_tokenizer, toy_matrix, excluded_ids=excluded_ids)
    router = Router(
        emb,
        config=RouterConfig.paper(),
        device="cpu",
        progress=False,
        max_tokens=max_tokens,
        selector=selector,
        k=2,
    )
    router.fit(toy_corpus)
    excl = set(excluded_ids.tolist())
    w = paper_fit([toy_ids[n] for n in router.experts], toy_matrix, excl, 1e-2)
    rng = np.random.default_rng(max_tokens)
    words = ["<pad>", "<eos>", "solve", "x", "def", "return", "the", "a", "prime", "bug", "unknown"]
    prompts = [" ".join(rng.choice(words, size=rng.integers(0, 12))) for _ in range(40)]
    prompts += ["<pad> <eos> " * 4 + "def return", "def " * 6 + "solve " * 6]  # specials first; a switch
    capped = [toy_tokenizer.encode(p, add_special_tokens=False).ids[:max_tokens] for p in prompts]
    expected = [paper_route(ids, toy_matrix, w, excl, selector, 2) for ids in capped]
    assert route_indices(router.state, router.config, prompts).tolist() == expected
    assert -1 in expected and len(set(expected) - {-1}) > 1  # empty prompts and several experts occur
    for p, ids, e in zip(prompts, capped, expected):
        if e >= 0:
            d = router.route(p)
            assert router.experts.index(d.expert) == e
            assert d.num_tokens == sum(t not in excl for t in ids)
