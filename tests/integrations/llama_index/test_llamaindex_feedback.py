"""Feedback from the LlamaIndex adapters: the correct expert of a routed call (by routing id, response,
selector result, route event or prompt) is learned and changes the next routing."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RouterQueryEngine
from llama_index.core.tools import QueryEngineTool, ToolMetadata
from llamaindex_helpers import RouteEventCollector, TagLLM, tag_of

from ir3de import Router
from ir3de.errors import ExpertError, InvalidInputError, UnknownCallError, UnknownExpertError
from ir3de_integrations.llama_index import (
    ROUTE_KEY,
    Ir3deSelector,
    Ir3deSelectorResult,
    RoutingLLM,
    dispatcher,
)


@pytest.fixture(scope="module")
def saved(paper_router, tmp_path_factory):
    return paper_router.save_pretrained(tmp_path_factory.mktemp("li-feedback") / "router")


@pytest.fixture
def router(saved, smollm2):
    """A private, mutable copy of the paper router (math, code, instructions, multilingual)."""
    return Router.from_pretrained(saved, embeddings=smollm2, device="cpu", progress=False)


def _llms(names):
    return {n: TagLLM(tag=n) for n in names}


def _misrouted(router, texts, expert):
    for text in texts:
        if router.route(text).expert != expert:
            return text
    pytest.skip(f"every probe text routes to {expert}")


def test_routing_llm_feedback_by_response_and_routing_id(router, small_tests):
    llm = RoutingLLM(router, _llms(router.experts))
    prompt = _misrouted(router, small_tests["math"], "math")
    table_before = llm.router.state.table.logits.copy()
    response = llm.complete(prompt)
    route = response.additional_kwargs[ROUTE_KEY]
    assert route["call_id"] and tag_of(response.text) == route["expert"] != "math"

    result = llm.feedback(response, expert="math")

    assert (result.call_id, result.prompt, result.routed) == (route["call_id"], prompt, route["expert"])
    assert result.corrected and result.traffic_prompts == 1
    assert (llm.router.state.table.logits != table_before).any()
    assert result.now == llm.router.route(prompt).expert
    assert tag_of(llm.complete(prompt).text) == llm.router.route(prompt).expert  # the next call sees it
    # by the routing id string, and by prompt
    other = llm.complete(small_tests["code"][0])
    assert llm.feedback(other.additional_kwargs[ROUTE_KEY]["call_id"], expert="code").expert == "code"
    assert llm.feedback(prompt="def add(a, b):", expert="code").call_id is None
    assert llm.router.traffic["code"].num_prompts == 2
    llm.forget_traffic()
    assert llm.router.traffic == {} and (llm.router.state.table.logits == table_before).all()


def test_routing_llm_chat_feedback_learns_the_last_user_message(router, small_tests):
    llm = RoutingLLM(router, _llms(router.experts))
    user = small_tests["code"][2]
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.USER, content=small_tests["math"][2]),
        ChatMessage(role=MessageRole.ASSISTANT, content="x = 2"),
        ChatMessage(role=MessageRole.USER, content=user),
    ]
    collect = RouteEventCollector(events=[])
    dispatcher.add_event_handler(collect)
    try:
        response = llm.chat(messages)
        streamed = list(llm.stream_chat(messages))
        answered = asyncio.run(llm.achat(messages))
    finally:
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not collect]
    call_id = response.additional_kwargs[ROUTE_KEY]["call_id"]
    assert collect.events[0].id_ == call_id  # the route event carries the same routing id
    call = llm.recent_calls.get(call_id)
    assert call.text == user and call.turns[-1] == ("user", user) and len(call.turns) == 4
    assert llm.feedback(response, expert="code").prompt == user
    assert (
        llm.feedback(collect.events[1].id_, expert="code").call_id
        == streamed[-1].additional_kwargs[ROUTE_KEY]["call_id"]
    )
    assert llm.feedback(answered, expert="code").prompt == user
    assert llm.router.traffic["code"].num_prompts == 3


def test_routing_llm_feedback_errors_and_new_expert(router):
    llm = RoutingLLM(router, _llms(router.experts))
    response = llm.complete("Solve 2x = 4")
    before = llm.router.state.table.logits.copy()
    with pytest.raises(UnknownCallError):
        llm.feedback("no-such-call", expert="math")
    with pytest.raises(UnknownExpertError, match="create_experts"):
        llm.feedback(response, expert="poetry")
    with pytest.raises(ExpertError, match="need"):
        llm.feedback(response, expert="poetry", create_experts=True)
    with pytest.raises(InvalidInputError, match="routing id"):
        llm.feedback(MockLLM().complete("hi"), expert="math")
    assert llm.router.traffic == {} and (llm.router.state.table.logits == before).all()

    sonnet = "Write a sonnet about the sea, with a volta after the octave and iambic pentameter"
    created = llm.feedback(prompt=sonnet, expert="poetry", create_experts=True, llm=TagLLM(tag="poetry"))
    assert created.created and "poetry" in llm.llms
    assert tag_of(llm.complete(sonnet).text) == "poetry"


def test_selector_feedback_through_a_router_query_engine(router, vector_indexes, small_tests):
    selector = Ir3deSelector(router)
    caller, router = router, selector.router  # the selector learns into its own copy
    tools = [
        QueryEngineTool.from_defaults(
            vector_indexes[d].as_query_engine(llm=MockLLM(), similarity_top_k=1), name=d, description=d
        )
        for d in router.experts
    ]
    engine = RouterQueryEngine(selector=selector, query_engine_tools=tools, llm=MockLLM())
    query = _misrouted(router, small_tests["math"], "math")
    result = engine.query(query).metadata["selector_result"]
    assert isinstance(result, Ir3deSelectorResult) and result.call_id

    learned = selector.feedback(result, expert="math")
    assert (learned.prompt, learned.call_id, learned.corrected) == (query, result.call_id, True)
    assert router.traffic["math"].num_prompts == 1
    # the next selection is made by the router that learned
    again = selector.select([ToolMetadata(name=d, description=d) for d in router.experts], query)
    assert router.experts[again.ind] == router.route(query).expert == learned.now
    assert selector.feedback(again.call_id, expert="math").traffic_prompts == 2
    assert selector.feedback(prompt=small_tests["code"][0], expert="code").call_id is None
    with pytest.raises(UnknownCallError):
        selector.feedback("unknown", expert="math")
    with pytest.raises(UnknownExpertError):
        selector.feedback(prompt="x", expert="poetry")
    selector.recent_calls.maxsize = 1
    assert len(selector.recent_calls) == 1
    assert caller.traffic == {}  # the caller's Router never changes behind its back
