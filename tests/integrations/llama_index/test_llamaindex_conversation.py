"""Conversation routing in RoutingLLM: the core definition, sessions, chat engines with memory."""

from __future__ import annotations

import asyncio
import threading

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.memory import ChatMemoryBuffer
from llamaindex_helpers import TagLLM, tag_of

from ir3de import Router, RouterConfig
from ir3de.routing.conversation import ConversationSettings
from ir3de.serving.sessions import SessionStore
from ir3de_integrations.llama_index import ROUTE_KEY, RoutingLLM

FOLLOW_UP = "thanks, can you explain that again?"


def _llms(names):
    return {n: TagLLM(tag=n) for n in names}


def _msg(role, text):
    return ChatMessage(role=role, content=text)


def test_chat_calls_route_through_route_conversation(paper_router, small_tests):
    settings = ConversationSettings(half_life=1.0, assistant_weight=0.25, margin=0.3)
    llm = RoutingLLM(paper_router, _llms(paper_router.experts), conversation=settings.to_dict())
    history = [
        _msg(MessageRole.SYSTEM, "You are helpful."),
        _msg(MessageRole.USER, small_tests["code"][0]),
        _msg(MessageRole.ASSISTANT, "done"),
        _msg(MessageRole.USER, FOLLOW_UP),
    ]
    pairs = [
        ("system", "You are helpful."),
        ("user", small_tests["code"][0]),
        ("ai", "done"),
        ("user", FOLLOW_UP),
    ]
    expected = paper_router.route_conversation(pairs, settings=settings)
    assert llm.route_chat(history) == expected
    response = llm.chat(history)
    route = response.additional_kwargs[ROUTE_KEY]
    assert tag_of(response.message.content) == expected.expert == route["expert"]
    assert route["reason"] == expected.reason and route["switched"] is False
    chunks = list(llm.stream_chat(history))
    assert chunks[-1].additional_kwargs[ROUTE_KEY]["expert"] == expected.expert
    assert asyncio.run(llm.achat(history)).additional_kwargs[ROUTE_KEY]["expert"] == expected.expert


def test_session_id_keyword_drives_stickiness(paper_router, small_tests):
    store = SessionStore()
    llm = RoutingLLM(
        paper_router, _llms(paper_router.experts), conversation={"margin": 0.99}, session_store=store
    )
    first = llm.chat([_msg(MessageRole.USER, small_tests["code"][2])], session_id="s1")
    code_expert = first.additional_kwargs[ROUTE_KEY]["expert"]
    assert store.get("s1") == code_expert
    other = small_tests["multilingual"][1]
    second = llm.chat([_msg(MessageRole.USER, FOLLOW_UP)], session_id="s1")  # a new history, same session
    route = second.additional_kwargs[ROUTE_KEY]
    assert route["previous_expert"] == code_expert
    assert route["switched"] == (route["expert"] != code_expert) == (route["margin"] > 0.99)
    fresh = llm.chat([_msg(MessageRole.USER, other)], session_id="s2")
    assert fresh.additional_kwargs[ROUTE_KEY]["expert"] == paper_router.route(other).expert


def test_chat_engine_memory_keeps_the_expert(paper_router, small_tests):
    llm = RoutingLLM(paper_router, _llms(paper_router.experts), conversation={"margin": 0.99})
    engine = SimpleChatEngine.from_defaults(
        llm=llm, memory=ChatMemoryBuffer.from_defaults(token_limit=100_000)
    )
    math_q = small_tests["math"][6]
    first = tag_of(engine.chat(math_q).response)
    assert first == paper_router.route(math_q).expert
    # the next call's previous expert comes from the memory's history (no session id)
    second = tag_of(engine.chat(FOLLOW_UP).response)
    replay = llm.route_chat(engine.chat_history[:-1])  # the messages the second call routed
    assert [m.role for m in engine.chat_history] == [MessageRole.USER, MessageRole.ASSISTANT] * 2
    assert replay.previous_expert == first and replay.expert == second
    assert replay.switched == (second != first) == (replay.margin > 0.99)
    engine.reset()
    assert (
        tag_of(engine.chat(small_tests["multilingual"][3]).response)
        == paper_router.route(small_tests["multilingual"][3]).expert
    )


class RecordingStore(SessionStore):
    """A session store that records every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[object, str]] = []

    def set(self, session_id, expert):
        self.writes.append((session_id, expert))
        super().set(session_id, expert)


def test_expert_removed_while_a_chat_is_routed(smollm2, small_corpus, small_tests):
    """The conversation decision names an expert removed before its LLM is looked up: the chat is
    re-routed on the new snapshot and answered by the LLM of the expert its final decision names; the
    session store is written once, with that decision."""
    domains = ("math", "code", "instructions", "multilingual")
    router = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(
        {d: small_corpus[d][:60] for d in domains}
    )
    store = RecordingStore()
    llm = RoutingLLM(router, _llms(router.experts), session_store=store)
    router = llm.router  # the LLM's own copy: the one its remove_expert changes
    foreign = small_tests["multilingual"][0]
    assert router.route_conversation([("user", foreign)]).expert == "multilingual"
    route_conversation = router.route_conversation
    decisions: list[str] = []

    def decide_then_remove(*args, **kwargs):
        decision = route_conversation(*args, **kwargs)
        if not decisions:
            remover = threading.Thread(target=llm.remove_expert, args=("multilingual",))
            remover.start()
            remover.join()
        decisions.append(decision.expert)
        return decision

    router.route_conversation = decide_then_remove
    try:
        response = llm.chat([_msg(MessageRole.USER, foreign)], session_id="s1")
    finally:
        del router.route_conversation
    route = response.additional_kwargs[ROUTE_KEY]
    assert decisions[0] == "multilingual" and "multilingual" not in router.experts
    assert len(decisions) == 2
    expected = router.route_conversation([("user", foreign)]).expert
    assert tag_of(response.message.content) == route["expert"] == decisions[-1] == expected != "multilingual"
    assert store.writes == [("s1", expected)]
