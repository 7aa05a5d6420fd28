"""Conversation routing (ir3de.routing.conversation): the fast path against a plain oracle, errors, and
sessions (ir3de.serving.sessions)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from ir3de import Router
from ir3de.errors import EmptyPromptError, MessageError
from ir3de.routing.conversation import (
    ConversationDecision,
    ConversationSettings,
    normalize_messages,
    route_conversation,
    turn_weights,
)
from ir3de.serving.sessions import SessionStore, route_session

FOLLOW_UPS = [
    "thanks! can you make it shorter?",
    "and the second part?",
    "why?",
    "ok, go on",
    "Could you explain that again more slowly?",
]


@pytest.fixture(scope="module")
def avg_router(smollm2, small_corpus):
    """The default configuration (text level, mean logits) on the small corpus."""
    return Router(smollm2, device="cpu", progress=False).fit(small_corpus)


@pytest.fixture(scope="module")
def logprob_router(paper_router, tmp_path_factory):
    """The paper router's table routed with top-k summed log-probabilities (a copy: no mutation)."""
    folder = tmp_path_factory.mktemp("paper") / "router"
    paper_router.save_pretrained(folder)
    return Router.from_pretrained(folder, device="cpu").configure(combine="logprob", k=10)


# ---------------------------------------------------------------------------------------------- oracle


def oracle_route(router: Router, messages, previous, s: ConversationSettings):
    """The definition written plainly: per message a Python loop over its tokens, then the formula."""
    canon = {"human": "user", "ai": "assistant", "developer": "system", "function": "tool"}
    turns = []
    for m in messages:
        role, content = (m["role"], m["content"]) if isinstance(m, dict) else m
        turns.append((canon.get(role, role), content or ""))
    weights = []
    for i, (role, _) in enumerate(turns):
        age = sum(1 for r, _ in turns[i + 1 :] if r == "user")
        if role == "system":
            weights.append(s.user_weight if s.include_system else 0.0)
            continue
        if s.half_life == math.inf:
            decay = 1.0
        elif s.half_life == 0:
            decay = 1.0 if age == 0 else 0.0
        else:
            decay = 0.5 ** (age / s.half_life)
        weights.append((s.user_weight if role == "user" else s.assistant_weight) * decay)
    table, config = router.state.table, router.config
    d = table.num_experts
    total_w, acc, tokens = 0.0, np.zeros(d), 0.0
    for (_, text), w in zip(turns, weights):
        if w == 0 or not text.strip():
            continue
        ids = router.state.tokenizer.encode(text, add_special_tokens=False).ids[: config.max_tokens]
        ids = [t for t in ids if table.countable[t]]
        if not ids:
            continue
        if config.selector == "avg":
            ev = np.mean([table.logits[t].astype(np.float64) for t in ids], axis=0)
        else:
            order = sorted(range(len(ids)), key=lambda j: (table.entropy[ids[j]], j))
            if config.selector == "topk":
                order = order[: config.k]
            chosen = [ids[j] for j in order]
            if config.combine == "vote":
                ev = np.zeros(d)
                for t in chosen:
                    ev[int(np.argmax(table.logits[t]))] += 1
            else:
                ev = np.sum([table.log_probs[t] for t in chosen], axis=0)
        mass = w * len(ids) if config.selector == "avg" else w  # mean logits count per token
        acc += mass * ev
        total_w += mass
        tokens += w * len(ids)
    if total_w == 0:
        return None
    # the evidence prior: the weighted tokens temper the evidence as one prompt of that many tokens
    temp = config.effective_temperature * (1 + config.effective_evidence_tokens / tokens)
    if config.selector == "avg":
        e = acc / total_w
        p = np.exp((e - e.max()) / temp)
        scores = p / p.sum()
    elif config.combine == "vote":
        scores = acc / acc.sum()
    else:
        p = np.exp((acc - acc.max()) / temp)
        scores = p / p.sum()
    names = router.experts
    best = int(np.argmax(scores))
    winner = best
    if previous in names:
        prev = names.index(previous)
        if best != prev and not scores[best] - scores[prev] > s.margin:
            winner = prev
    return names[winner], scores


def random_conversation(rng, texts_by_domain):
    domains = sorted(texts_by_domain)
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": str(rng.choice(texts_by_domain[domains[0]]))})
    for _ in range(int(rng.integers(1, 6))):
        domain = domains[int(rng.integers(len(domains)))]
        user = str(rng.choice(FOLLOW_UPS)) if rng.random() < 0.4 else str(rng.choice(texts_by_domain[domain]))
        messages.append((str(rng.choice(["user", "human"])), user[:600]))
        if rng.random() < 0.7:
            reply = str(rng.choice(texts_by_domain[domain]))[:400]
            messages.append({"role": str(rng.choice(["assistant", "ai"])), "content": reply})
    if isinstance(messages[-1], dict):
        messages.append(("user", str(rng.choice(FOLLOW_UPS))))
    return messages


@pytest.mark.parametrize("which", ["avg", "paper_vote", "logprob"])
def test_fast_path_matches_the_plain_oracle(which, request, small_tests):
    router = {
        "avg": lambda: request.getfixturevalue("avg_router"),
        "paper_vote": lambda: request.getfixturevalue("paper_router"),
        "logprob": lambda: request.getfixturevalue("logprob_router"),
    }[which]()
    rng = np.random.default_rng(7)
    names = router.experts
    for case in range(40):
        messages = random_conversation(rng, small_tests)
        settings = ConversationSettings(
            half_life=float(rng.choice([0.0, 0.5, 1.0, 2.5, math.inf])),
            user_weight=float(rng.choice([1.0, 2.0])),
            assistant_weight=float(rng.choice([0.0, 0.3, 1.0])),
            include_system=bool(rng.random() < 0.5),
            margin=float(rng.choice([0.0, 0.1, 0.3, 0.6])),
        )
        previous = [None, *names, "not-an-expert"][int(rng.integers(len(names) + 2))]
        expected = oracle_route(router, messages, previous, settings)
        got = router.route_conversation(messages, previous_expert=previous, settings=settings)
        assert isinstance(got, ConversationDecision)
        assert expected is not None
        expert, scores = expected
        assert got.expert == expert, (case, messages, settings, previous, got.reason)
        np.testing.assert_allclose(list(got.scores.values()), scores, rtol=1e-6, atol=1e-9)
        assert got.switched == (previous is not None and got.expert != previous)
        if previous in names and got.top_expert != previous:
            assert got.margin == pytest.approx(got.scores[got.top_expert] - got.scores[previous])
            assert got.switched == (got.margin > settings.margin)


def test_one_user_turn_equals_route(avg_router, paper_router, small_tests):
    for router in (avg_router, paper_router):
        for texts in small_tests.values():
            for text in texts[:5]:
                single = router.route(text)
                conv = router.route_conversation([{"role": "user", "content": text}])
                assert conv.expert == single.expert
                assert conv.scores == pytest.approx(single.scores)
                assert conv.num_tokens == single.num_tokens
                assert not conv.switched and conv.previous_expert is None


def test_last_message_settings_are_last_message_routing(avg_router, small_tests):
    math_q, code_q = small_tests["math"][0], small_tests["code"][0]
    chat = [("user", math_q), ("assistant", code_q), ("user", FOLLOW_UPS[0])]
    d = avg_router.route_conversation(
        chat, settings=ConversationSettings.last_message(), previous_expert="math"
    )
    assert d.expert == avg_router.route(FOLLOW_UPS[0]).expert
    assert d.scores == pytest.approx(avg_router.route(FOLLOW_UPS[0]).scores)
    assert [t.index for t in d.turns] == [2]


def test_stickiness_keeps_the_previous_expert_until_the_margin_is_beaten(avg_router, small_tests):
    chats = [
        [("user", t), ("assistant", small_tests["code"][1]), ("user", f)]
        for t, f in zip(small_tests["math"], FOLLOW_UPS)
    ]
    for chat in chats:  # a conversation whose top expert leads the runner-up by less than 0.98
        top = avg_router.route_conversation(chat)
        other = sorted(top.scores, key=top.scores.__getitem__)[-2]
        lead = top.scores[top.expert] - top.scores[other]
        if lead < 0.98:
            break
    assert lead < 0.98
    kept = avg_router.route_conversation(chat, previous_expert=other, margin=lead + 0.01)
    assert kept.expert == other and not kept.switched and kept.top_expert == top.expert
    assert kept.margin == pytest.approx(lead) and "kept" in kept.reason
    switched = avg_router.route_conversation(chat, previous_expert=other, margin=max(0.0, lead - 0.01))
    assert switched.expert == top.expert and switched.switched and "switched" in switched.reason
    assert switched.to_dict(with_tokens=False)["switched"] is True


def test_system_messages_count_only_when_included(avg_router, small_tests):
    user = ("user", FOLLOW_UPS[1])
    a = avg_router.route_conversation([("system", small_tests["math"][0]), user])
    b = avg_router.route_conversation([("system", small_tests["code"][0]), user])
    assert a.scores == b.scores
    c = avg_router.route_conversation([("system", small_tests["code"][0]), user], include_system=True)
    assert c.scores != b.scores
    assert [t.role for t in c.turns] == ["system", "user"]


def test_decay_weights():
    s = ConversationSettings(half_life=2, user_weight=1, assistant_weight=0.5, include_system=True)
    w = turn_weights(["system", "user", "assistant", "user", "assistant", "user", "assistant"], s)
    np.testing.assert_allclose(w, [1.0, 0.5, 0.5 * 2**-1, 2**-0.5, 0.5 * 2**-0.5, 1.0, 0.5])
    w0 = turn_weights(["user", "assistant", "user"], ConversationSettings(half_life=0))
    np.testing.assert_allclose(w0, [0, 0, 1])


def test_no_countable_token(avg_router):
    blank = [("user", "   "), ("assistant", "")]
    kept = avg_router.route_conversation(blank, previous_expert="code")
    assert kept.expert == "code" and not kept.switched and kept.confidence == 0.0
    with pytest.raises(EmptyPromptError, match="previous_expert"):
        avg_router.route_conversation(blank)
    for no_user in ([("system", "be brief")], [("assistant", "def f(x): return x")]):
        with pytest.raises(EmptyPromptError, match="no user message"):
            avg_router.route_conversation(no_user)
        assert avg_router.route_conversation(no_user, previous_expert="math").expert == "math"


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ("hello", "router.route"),
        ([], "empty"),
        ([("robot", "hi")], "role 'robot'"),
        ([{"content": "hi"}], "lacks role"),
        ([("user", 42)], "content of type int"),
        ([("user", "a", "b")], "tuple"),
        ([3], "int"),
    ],
)
def test_bad_messages_raise_message_error(avg_router, messages, match):
    with pytest.raises(MessageError, match=match):
        avg_router.route_conversation(messages)


def test_message_forms_and_aliases(avg_router):
    assert normalize_messages(
        [("Human", "a"), {"role": "AI", "content": None}, ("tool", [{"text": "x"}, "y"])]
    ) == [
        ("user", "a"),
        ("assistant", ""),
        ("tool", "x\ny"),
    ]
    dicts = [{"role": "user", "content": "def f(x): return x"}, {"role": "assistant", "content": "ok"}]
    pairs = [("human", "def f(x): return x"), ("ai", "ok")]
    assert avg_router.route_conversation(dicts) == avg_router.route_conversation(pairs)


@pytest.mark.parametrize(
    "bad",
    [
        {"half_life": -1},
        {"margin": 1.0},
        {"margin": -0.1},
        {"user_weight": 0, "assistant_weight": 0},
        {"assistant_weight": math.inf},
        {"half_life": "2"},
        {"include_system": "yes"},
    ],
)
def test_settings_are_validated(bad):
    with pytest.raises(ValueError):
        ConversationSettings(**bad)


# ---------------------------------------------------------------------------------------------- sessions


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_session_store_expiry_and_bound():
    clock = FakeClock()
    store = SessionStore(ttl=10, max_sessions=3, clock=clock)
    store.set("a", "math")
    clock.now = 5
    store.set("b", "code")
    assert store.get("a") == "math" and len(store) == 2
    clock.now = 10  # a expires exactly at its ttl
    assert store.get("a") is None and "b" in store and len(store) == 1
    for i, sid in enumerate(["c", "d", "e"]):
        store.set(sid, f"x{i}")
    assert len(store) == 3 and store.get("b") is None  # least recently written dropped
    assert store.pop("c") == "x0" and store.get("c") is None
    clock.now = 100
    assert len(store) == 0
    with pytest.raises(ValueError):
        SessionStore(ttl=0)
    with pytest.raises(ValueError):
        SessionStore(max_sessions=0)


def test_route_session_remembers_and_sticks(avg_router, small_tests):
    store = SessionStore()
    code_q = small_tests["code"][2]
    first = route_session(avg_router, store, "s1", [("user", code_q)])
    assert store.get("s1") == first.expert
    chat = [("user", code_q), ("assistant", "done"), ("user", FOLLOW_UPS[2])]
    second = route_session(avg_router, store, "s1", chat, margin=0.99)
    assert second.previous_expert == first.expert and second.expert == first.expert
    stateless = route_session(avg_router, store, None, chat)
    assert stateless.previous_expert is None


def test_session_store_under_concurrency(avg_router, small_tests):
    store = SessionStore(ttl=60, max_sessions=1000)
    domains = avg_router.experts
    errors: list[BaseException] = []
    per_session: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(tid: int) -> None:
        try:
            for i in range(15):
                sid = f"s{(tid + i) % 8}"
                text = small_tests[domains[(tid + i) % len(domains)]][i % 10]
                d = route_session(avg_router, store, sid, [("user", text)], margin=0.0)
                with lock:
                    per_session.setdefault(sid, []).append(d.expert)
                store.set(f"t{tid}-{i}", d.expert)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store) == 8 + 8 * 15
    for sid in per_session:
        assert store.get(sid) in domains
    assert store.get("t3-14") is not None


def test_module_function_equals_method(avg_router, small_tests):
    chat = [("user", small_tests["math"][3]), ("ai", "12"), ("user", "and in dollars?")]
    assert route_conversation(avg_router, chat, previous_expert="math", half_life=1.0) == (
        avg_router.route_conversation(chat, previous_expert="math", half_life=1.0)
    )


@pytest.mark.slow
def test_conversation_benchmark_quick(tmp_path):
    """``python -m benchmarks.conversations --quick`` runs end to end (no number is asserted)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(root / "core"), str(root)]))
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.conversations",
        "--quick",
        "--out",
        str(tmp_path),
        "--img",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "conversations.json").read_text())
    assert set(result["methods"]) == {
        "last message",
        "whole conversation",
        "decayed turns, no stickiness",
        "route_conversation",
    }
    assert result["sizes"]["follow_ups"] >= 50 and result["sizes"]["healthbench_conversations"] > 0
    assert (tmp_path / "conversations.png").stat().st_size > 0
    assert "| route_conversation |" in (tmp_path / "conversations.md").read_text()


def test_one_message_scores_as_route_with_the_evidence_prior(paper_router, smollm2, small_corpus):
    """A one-message chat is that prompt: same expert and the same scores as ``route`` (the evidence
    prior included), for short and long prompts."""
    from ir3de import Router

    router = Router(smollm2, device="cpu", progress=False).fit(small_corpus)
    assert router.config.effective_evidence_tokens > 0
    for prompt in ("IRS", "What is a stanza?", small_corpus["math"][0]):
        single = router.route(prompt)
        chat = router.route_conversation([{"role": "user", "content": prompt}])
        assert chat.expert == single.expert
        assert chat.scores == pytest.approx(single.scores, rel=1e-9, abs=1e-12)
