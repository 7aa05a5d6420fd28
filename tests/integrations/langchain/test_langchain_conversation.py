"""Conversation routing in the LangChain faces: the core definition, session ids, history, legacy options."""

from __future__ import annotations

import threading

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables.history import RunnableWithMessageHistory
from lc_helpers import expert_of

from ir3de import Router, RouterConfig
from ir3de.errors import InvalidInputError
from ir3de.routing.conversation import ConversationSettings
from ir3de.serving.sessions import SessionStore
from ir3de_integrations.langchain import RouterRunnable, RoutingChatModel

FOLLOW_UP = "thanks, can you explain that again?"


def test_both_faces_route_through_route_conversation(paper_router, make_experts, small_tests):
    messages = [HumanMessage(small_tests["code"][0]), AIMessage("done"), HumanMessage(FOLLOW_UP)]
    settings = ConversationSettings(half_life=1.5, assistant_weight=0.25, margin=0.3)
    pairs = [("human", small_tests["code"][0]), ("ai", "done"), ("human", FOLLOW_UP)]
    expected = paper_router.route_conversation(pairs, settings=settings)
    experts = make_experts(paper_router.experts)
    chat = RoutingChatModel(paper_router, experts, conversation=settings)
    runnable = RouterRunnable(paper_router, experts, conversation=settings.to_dict())
    assert chat.route(messages) == expected
    assert runnable.route(messages) == expected
    reply = chat.invoke(messages)
    assert reply.response_metadata["ir3de"]["expert"] == expected.expert
    assert reply.response_metadata["ir3de"]["reason"] == expected.reason
    assert expert_of(runnable.invoke(messages)) == expected.expert


def test_session_id_in_the_config_drives_stickiness(paper_router, make_experts, small_tests):
    store = SessionStore()
    experts = make_experts(paper_router.experts)
    runnable = RouterRunnable(paper_router, experts, conversation={"margin": 0.99}, session_store=store)
    first = [HumanMessage(small_tests["code"][3])]
    code_expert = paper_router.route(small_tests["code"][3]).expert
    assert expert_of(runnable.invoke(first, {"configurable": {"session_id": "s1"}})) == code_expert
    assert store.get("s1") == code_expert
    # the next turn is on another topic, but a margin of 0.99 keeps the session's expert
    other = next(d for d in ("math", "multilingual") if d != code_expert)
    nxt = [*first, AIMessage("ok"), HumanMessage(small_tests[other][0])]
    out = runnable.invoke(nxt, {"configurable": {"session_id": "s1"}})
    assert expert_of(out) == code_expert
    # a new session has no previous expert
    fresh = runnable.invoke([HumanMessage(small_tests[other][0])], {"configurable": {"session_id": "s2"}})
    assert expert_of(fresh) == paper_router.route(small_tests[other][0]).expert
    batch = runnable.batch([nxt, nxt], [{"configurable": {"session_id": "s1"}}, {}])
    assert expert_of(batch[0]) == code_expert


def test_chat_model_session_keyword_and_history(paper_router, make_experts, small_tests):
    chat = RoutingChatModel(paper_router, make_experts(paper_router.experts), conversation={"margin": 0.99})
    math_q = small_tests["math"][4]
    first = chat.invoke([HumanMessage(math_q)], session_id="u1")
    math_expert = first.response_metadata["ir3de"]["expert"]
    assert chat._conversation.store.get("u1") == math_expert
    switch = HumanMessage(small_tests["multilingual"][2])
    # without a session id the previous expert is read from the history's last routed answer
    history = [HumanMessage(math_q), first, switch]
    assert chat.invoke(history).response_metadata["ir3de"]["previous_expert"] == math_expert
    assert chat.invoke(history).response_metadata["ir3de"]["expert"] == math_expert


def test_runnable_with_message_history(paper_router, make_experts, small_tests):
    chat = RoutingChatModel(paper_router, make_experts(paper_router.experts), conversation={"margin": 0.99})
    histories: dict[str, InMemoryChatMessageHistory] = {}
    with_history = RunnableWithMessageHistory(
        chat, lambda sid: histories.setdefault(sid, InMemoryChatMessageHistory())
    )
    config = {"configurable": {"session_id": "abc"}}
    code_q = small_tests["code"][5]
    first = with_history.invoke([HumanMessage(code_q)], config)
    assert chat._conversation.store.get("abc") == first.response_metadata["ir3de"]["expert"]
    second = with_history.invoke([HumanMessage(small_tests["math"][1])], config)
    meta = second.response_metadata["ir3de"]
    assert meta["previous_expert"] == first.response_metadata["ir3de"]["expert"]
    assert meta["expert"] == meta["previous_expert"] and not meta["switched"]
    assert len(histories["abc"].messages) == 4


def test_legacy_route_on(paper_router, make_experts):
    experts = make_experts(paper_router.experts)
    chat = RoutingChatModel(paper_router, experts, route_on="last_user")
    assert chat._conversation.settings == ConversationSettings.last_message()
    with pytest.raises(InvalidInputError, match="conversation=ConversationSettings"):
        RoutingChatModel(paper_router, experts, route_on=2)
    with pytest.raises(ValueError):
        RoutingChatModel(paper_router, experts, conversation={"margin": 2})


class RecordingStore(SessionStore):
    """A session store that records every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[object, str]] = []

    def set(self, session_id, expert):
        self.writes.append((session_id, expert))
        super().set(session_id, expert)


def test_expert_removed_while_a_chat_is_routed(smollm2, small_corpus, small_tests, make_experts):
    """The race the core registry closes: the conversation decision names an expert that is removed
    before its runnable is looked up. The chat is re-routed on the new snapshot, so it is answered by the
    expert its (final) decision names, and the session remembers that decision, written once."""
    domains = ("math", "code", "instructions", "multilingual")
    router = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(
        {d: small_corpus[d][:60] for d in domains}
    )
    store = RecordingStore()
    chat = RoutingChatModel(router, make_experts(router.experts), session_store=store)
    router = chat.router  # the chat model's own copy: the one its remove_expert changes
    foreign = small_tests["multilingual"][0]
    assert router.route_conversation([("user", foreign)]).expert == "multilingual"
    route_conversation = router.route_conversation
    decisions: list[str] = []

    def decide_then_remove(*args, **kwargs):
        decision = route_conversation(*args, **kwargs)
        if not decisions:  # another thread removes the chosen expert right after the first decision
            remover = threading.Thread(target=chat.remove_expert, args=("multilingual",))
            remover.start()
            remover.join()
        decisions.append(decision.expert)
        return decision

    router.route_conversation = decide_then_remove
    try:
        reply = chat.invoke([HumanMessage(foreign)], session_id="s1")
    finally:
        del router.route_conversation
    meta = reply.response_metadata["ir3de"]
    assert decisions[0] == "multilingual" and "multilingual" not in router.experts
    assert len(decisions) == 2  # routed again on the snapshot without the removed expert
    expected = router.route_conversation([("user", foreign)]).expert
    assert expert_of(reply) == meta["expert"] == decisions[-1] == expected != "multilingual"
    assert store.writes == [("s1", expected)]  # the final decision only, once
