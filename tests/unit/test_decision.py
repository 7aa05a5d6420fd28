"""ir3de.decision: lazy fields computed right (once), equality, JSON view."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ir3de.decision import DecidingToken, RouteDecision
from ir3de.table import RouteTable

NAMES = ("math", "code", "chat")


class CountingTokenizer:
    """Wraps the toy tokenizer and counts decode calls (decoding must happen only on first access)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def decode(self, ids):
        self.calls += 1
        return self.tokenizer.decode(ids)


@pytest.fixture
def table(make_logits):
    return RouteTable.from_logits(make_logits(0, 23, 3), excluded_ids=[1, 2])


def make(table, tokenizer, ids=(3, 17, 5), positions=(1, 0, 2)):
    return RouteDecision(
        "code",
        0.5,
        top_expert="code",
        num_tokens=4,
        expert_names=NAMES,
        score_values=np.array([0.25, 0.5, 0.25]),
        token_ids=np.array(ids, np.int64),
        positions=np.array(positions, np.int64),
        votes=table.votes,
        entropy=table.entropy,
        log_probs=table.log_probs,
        tokenizer=tokenizer,
    )


def test_lazy_scores_and_tokens_are_the_table_rows(table, toy_tokenizer):
    tok = CountingTokenizer(toy_tokenizer)
    d = make(table, tok)
    assert tok.calls == 0  # nothing decoded at construction
    assert d.scores == {"math": 0.25, "code": 0.5, "chat": 0.25}
    assert list(d.scores) == list(NAMES) and all(type(v) is float for v in d.scores.values())
    assert d.token_ids == [3, 17, 5]
    tokens = d.tokens
    assert tok.calls == 3 and d.tokens is tokens and tok.calls == 3  # decoded once, then cached
    assert [t.text for t in tokens] == ["solve", "the", "x"]
    for t, pos in zip(tokens, (1, 0, 2)):
        assert isinstance(t, DecidingToken) and t.position == pos
        assert t.vote == NAMES[int(np.argmax(table.logits[t.id]))]
        assert t.entropy == pytest.approx(float(table.entropy[t.id]))
        row = table.logits[t.id].astype(np.float64)
        p = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        assert list(t.probabilities) == list(NAMES)
        np.testing.assert_allclose(list(t.probabilities.values()), p, rtol=1e-9)
        assert math.isclose(sum(t.probabilities.values()), 1.0)
        with pytest.raises(TypeError):
            t.probabilities["math"] = 1.0  # read-only mapping


def test_scores_from_a_list_or_nothing():
    d = RouteDecision("a", 0.75, expert_names=("a", "b"), score_values=[0.75, 0.25])
    assert d.scores == {"a": 0.75, "b": 0.25}
    empty = RouteDecision("fallback", 0.0, expert_names=("a", "b"), fallback_used=True)
    assert empty.scores == {"a": 0.0, "b": 0.0} and empty.tokens == () and empty.token_ids == []
    explicit = RouteDecision("a", 1.0, {"a": 1.0, "b": 0.0})
    assert explicit.scores == {"a": 1.0, "b": 0.0} and explicit.top_expert is None


def test_tokens_without_a_table_or_tokenizer(table):
    no_table = RouteDecision("a", 1.0, expert_names=NAMES, token_ids=np.array([3]), positions=np.array([0]))
    assert no_table.tokens == ()
    no_tok = make(table, None, ids=(3,), positions=(0,))
    assert no_tok.tokens[0].text == "3"  # without a tokenizer the id stands for the text


def test_equality_ignores_the_tokens_and_compares_the_route(table, toy_tokenizer):
    a, b = make(table, toy_tokenizer), make(table, toy_tokenizer, ids=(9,), positions=(0,))
    assert a == b
    assert a == RouteDecision("code", 0.5, {"math": 0.25, "code": 0.5, "chat": 0.25}, "code", num_tokens=4)
    assert a != RouteDecision("code", 0.5, {"math": 0.25, "code": 0.5, "chat": 0.25}, "code", num_tokens=3)
    assert a != RouteDecision("math", 0.5, {"math": 0.25, "code": 0.5, "chat": 0.25}, "code", num_tokens=4)
    assert (a == "code") is False
    with pytest.raises(TypeError):
        hash(a)


def test_to_dict_is_json_and_repr_says_the_route(table, toy_tokenizer):
    d = make(table, toy_tokenizer)
    data = json.loads(json.dumps(d.to_dict()))
    assert data["expert"] == "code" and data["scores"] == {"math": 0.25, "code": 0.5, "chat": 0.25}
    assert [t["text"] for t in data["tokens"]] == ["solve", "the", "x"]
    assert data["tokens"][0]["probabilities"].keys() == set(NAMES)
    assert "tokens" not in d.to_dict(with_tokens=False)
    assert repr(d) == (
        "RouteDecision(expert='code', confidence=0.500, scores={math: 0.250, code: 0.500, chat: 0.250}, num_tokens=4)"
    )
    fb = RouteDecision("general", 0.0, {"a": 0.0}, fallback_used=True)
    assert repr(fb).endswith("num_tokens=0, fallback_used=True)")


def test_a_scorer_runs_once_on_first_read():
    calls = []

    def scorer():
        calls.append(1)
        return np.array([0.2, 0.7, 0.1])

    d = RouteDecision("code", None, top_expert="code", expert_names=NAMES, scorer=scorer)
    assert calls == []  # nothing computed at construction
    assert d.confidence == 0.7 and d.top(1) == [("code", 0.7)] and d.scores["math"] == 0.2
    assert calls == [1]
    with pytest.raises(ValueError, match="confidence, or a scorer"):
        RouteDecision("code", None)
