"""ir3de.routing.prompts, ir3de.fitting.traffic and ir3de.routing.tuning on a toy tokenizer and a random route table: the
single-prompt fast path equals the batch path, the cap is exact, the traffic functions are pure."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ir3de.config import RouterConfig
from ir3de.data.labelled import learn_groups
from ir3de.errors import EmptyPromptError, InvalidInputError
from ir3de.fitting import traffic
from ir3de.fitting.pipeline import ExpertStatistics, RoutingState
from ir3de.fitting.statistics import ExpertCounts
from ir3de.routing import prompts as routing
from ir3de.routing import tuning
from ir3de.table import RouteTable

from .conftest import PAD, VOCAB, WORDS

EXPERTS = ("math", "code", "chat")
PROMPTS = [
    "solve the equation x plus x",
    "def loop return class import",
    "the a of and is to",
    "prime integral lambda bug",
    "x",
    "   ",
    "<pad> <eos>",
    "solve " * 30 + "def",
]
CONFIGS = [
    {"selector": "avg"},
    {"selector": "avg", "temperature": 3.0, "evidence_tokens": 2.0},
    {"level": "token", "selector": "topk", "k": 2, "combine": "vote"},
    {"level": "token", "selector": "topk", "k": 3, "combine": "logprob", "evidence_tokens": 1.5},
    {"level": "token", "selector": "all", "combine": "logprob", "temperature": 0.5},
]


@pytest.fixture(scope="module")
def state(toy_tokenizer) -> RoutingState:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(VOCAB), len(EXPERTS))).astype(np.float32)
    table = RouteTable.from_logits(logits, [PAD, VOCAB["<eos>"]])
    return RoutingState(EXPERTS, table, np.zeros((5, 3)), np.zeros((5, 3)), tokenizer=toy_tokenizer)


@pytest.mark.parametrize("settings", CONFIGS)
def test_route_one_equals_the_batch_path(state, toy_tokenizer, settings) -> None:
    config = RouterConfig(fallback="general", **settings)
    batch = routing.route_batch(state, config, PROMPTS)
    indices = routing.route_indices(state, config, PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        one = routing.route_one(state, config, prompt)
        assert (one.expert, one.top_expert, one.num_tokens) == (
            batch[i].expert,
            batch[i].top_expert,
            batch[i].num_tokens,
        )
        assert one.confidence == pytest.approx(batch[i].confidence, abs=1e-9)
        assert [t.id for t in one.tokens] == [t.id for t in batch[i].tokens]
        assert indices[i] == (EXPERTS.index(one.top_expert) if one.top_expert else -1)
    assert batch[5].fallback_used and batch[6].fallback_used  # whitespace, only special tokens


def test_no_countable_token_without_fallback_raises(state, toy_tokenizer) -> None:
    config = RouterConfig()
    with pytest.raises(EmptyPromptError, match="no countable token"):
        routing.route_one(state, config, "  ")
    with pytest.raises(EmptyPromptError, match="prompt #1"):
        routing.route_batch(state, config, ["x", "<pad>"])
    with pytest.raises(InvalidInputError, match="prompt #1 is a int"):
        routing.check_prompts(["x", 3])
    with pytest.raises(InvalidInputError, match="list of prompts"):
        routing.check_prompts("x")


@pytest.mark.parametrize("max_tokens", [1, 3, 7])
def test_the_token_cap_is_exact_through_the_prefix(toy_tokenizer, max_tokens) -> None:
    long = " ".join(WORDS * 20)  # longer than the prefix the cap allows: the prefix path is taken
    assert len(routing.prompt_head(long, max_tokens)) < len(long)
    ids, lengths = routing.encode_prompts(toy_tokenizer, [long, "x plus"], max_tokens)
    full = toy_tokenizer.encode(long, add_special_tokens=False).ids
    assert lengths.tolist() == [max_tokens, min(2, max_tokens)]
    assert ids[:max_tokens].tolist() == full[:max_tokens]


def _counts(ids: list[int]) -> ExpertCounts:
    return ExpertCounts.from_token_ids([np.asarray(ids, np.int64)], len(VOCAB))


def test_traffic_learn_and_forget_are_pure_and_exact() -> None:
    experts = {"math": ExpertStatistics(_counts([3, 4, 4])), "code": ExpertStatistics(_counts([10, 11]))}
    before = dict(experts)
    learned = traffic.learn(experts, {"math": _counts([5]), "law": _counts([20, 21])}, new={"law"})
    assert experts == before and experts["math"].traffic is None  # inputs unchanged
    assert learned["math"].traffic == _counts([5]) and learned["law"].counts == _counts([20, 21])
    again = traffic.learn(learned, {"math": _counts([6])}, new=())
    assert again["math"].traffic == _counts([5]) + _counts([6]) and again["math"].traffic_gram is None
    forgotten = traffic.forget(again, ["math"])
    assert forgotten["math"].traffic is None and forgotten["math"].counts is experts["math"].counts
    with pytest.raises(InvalidInputError, match="not both"):
        learn_groups({"math": _counts([5]), "code": ["def f():"]})


def test_tune_returns_settings_without_changing_its_inputs(state, toy_tokenizer) -> None:
    config = RouterConfig(selector="avg")
    held_out = {
        "math": ["solve x plus x", "integral prime", "solve integral"],
        "code": ["def loop", "import class", "def class"],
    }
    settings, result = tuning.tune(state, config, held_out, 0.5, abstain="general")
    assert config == RouterConfig(selector="avg")
    assert set(settings) == {"temperature", "evidence_tokens", "fallback", "threshold", "thresholds"}
    assert settings["fallback"] == result.fallback == "general" and result.n == 6
    tuned = dataclasses.replace(config, **settings)
    prompts = [p for ps in held_out.values() for p in ps]
    routed = routing.route_batch(state, tuned, prompts)
    assert np.mean([not d.fallback_used for d in routed]) == pytest.approx(result.coverage)
    with pytest.raises(ValueError, match="vote shares"):
        tuning.calibrate(state, RouterConfig(level="token", selector="topk", combine="vote"), held_out)


@pytest.fixture(scope="module")
def many_state(toy_tokenizer) -> RoutingState:
    """80 experts (beyond SUM_ROWS_MAX_EXPERTS) in a factored table: the deferred-scores path."""
    rng = np.random.default_rng(5)
    names = tuple(f"e{i:02d}" for i in range(80))
    matrix = rng.normal(size=(len(VOCAB), 4)).astype(np.float32)
    table = RouteTable.factored(matrix, rng.normal(size=(5, len(names))), [PAD, VOCAB["<eos>"]])
    return RoutingState(names, table, np.zeros((5, 5)), np.zeros((5, 5)), tokenizer=toy_tokenizer)


@pytest.mark.parametrize(
    "settings",
    [{}, {"temperature": 0.7, "evidence_tokens": 2.0}, {"fallback": "general", "threshold": 0.05}],
)
def test_many_experts_route_one_defers_its_scores_and_equals_the_batch_path(many_state, settings) -> None:
    """Without a fallback, route() computes only the argmax; the scores, confidence and top(k) read
    later are those of the batch path, and of the softmax of the float64 formula."""
    config = RouterConfig(**settings)
    prompts = [p for p in PROMPTS if p.strip() and p != "<pad> <eos>"]
    batch = routing.route_batch(many_state, config, prompts)
    table = many_state.table
    for i, prompt in enumerate(prompts):
        one = routing.route_one(many_state, config, prompt)
        assert (one._scorer is None) == ("fallback" in settings)  # deferred unless a threshold needs it
        assert (one.expert, one.top_expert, one.num_tokens, one.fallback_used) == (
            batch[i].expert,
            batch[i].top_expert,
            batch[i].num_tokens,
            batch[i].fallback_used,
        )
        ids = [t for t in toy_ids_of(prompt) if table.countable[t]]
        plain = (table.matrix[ids].astype(np.float64) @ table.head + table.bias).sum(axis=0)
        temp = config.effective_temperature * (len(ids) + config.effective_evidence_tokens)
        want = np.exp((plain - plain.max()) / temp)
        want /= want.sum()
        assert one.top_expert == many_state.experts[int(np.argmax(plain))]
        assert [e for e, _ in one.top(3)] == [e for e, _ in batch[i].top(3)]
        np.testing.assert_allclose([v for _, v in one.top(3)], [v for _, v in batch[i].top(3)], rtol=1e-9)
        assert one.confidence == pytest.approx(batch[i].confidence, abs=1e-12)
        assert one.confidence == max(one.scores.values())
        np.testing.assert_allclose(list(one.scores.values()), list(batch[i].scores.values()), rtol=1e-9)
        np.testing.assert_allclose(list(one.scores.values()), want, rtol=1e-4, atol=1e-12)


def toy_ids_of(prompt: str) -> list[int]:
    from .conftest import make_tokenizer

    return make_tokenizer().encode(prompt, add_special_tokens=False).ids
