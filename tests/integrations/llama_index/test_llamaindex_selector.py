"""Ir3deSelector inside real LlamaIndex machinery: RouterQueryEngine and RouterRetriever over real indexes."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.base_selector import SelectorResult
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RouterQueryEngine
from llama_index.core.retrievers import RouterRetriever
from llama_index.core.tools import QueryEngineTool, RetrieverTool, ToolMetadata
from llamaindex_helpers import RouteEventCollector

from ir3de.errors import EmptyPromptError, ExpertError
from ir3de_integrations.llama_index import Ir3deSelector, dispatcher

HELD_OUT_PER_DOMAIN = 12  # 48 held-out prompts through the RouterQueryEngine


def _query_tools(vector_indexes, order=None):
    order = order or list(vector_indexes)
    return [
        QueryEngineTool.from_defaults(
            vector_indexes[d].as_query_engine(llm=MockLLM(), similarity_top_k=2),
            name=d,
            description=f"documents about {d}",
        )
        for d in order
    ]


def _held_out(small_tests, n=HELD_OUT_PER_DOMAIN):
    return [(d, q) for d, texts in small_tests.items() for q in texts[:n]]


def test_router_query_engine_matches_router_route(paper_router, vector_indexes, small_tests):
    order = ["multilingual", "code", "math", "instructions"]  # tool order differs from the router's
    engine = RouterQueryEngine(
        selector=Ir3deSelector(paper_router),
        query_engine_tools=_query_tools(vector_indexes, order),
        llm=MockLLM(),
    )
    prompts = _held_out(small_tests)
    assert len(prompts) >= 40
    correct = 0
    for label, prompt in prompts:
        decision = paper_router.route(prompt)
        response = engine.query(prompt)
        result = response.metadata["selector_result"]
        assert isinstance(result, SelectorResult)
        assert len(result.selections) == 1
        assert order[result.ind] == decision.expert
        # the engine that answered is the routed one: every source node comes from its index
        assert response.source_nodes
        assert {n.node.metadata["domain"] for n in response.source_nodes} == {decision.expert}
        assert f"expert {decision.expert!r}" in result.reason
        assert f"confidence {decision.confidence:.2f}" in result.reason
        assert repr(decision.tokens[0].text) in result.reason
        correct += decision.expert == label
    # the router itself is accurate on held-out text (measured 0.975 on 240 prompts)
    assert correct / len(prompts) >= 0.85


def test_router_query_engine_async(paper_router, vector_indexes, small_tests):
    order = list(vector_indexes)
    engine = RouterQueryEngine(
        selector=Ir3deSelector(paper_router), query_engine_tools=_query_tools(vector_indexes), llm=MockLLM()
    )
    prompts = [q for _, q in _held_out(small_tests, 3)]

    async def run():
        return await asyncio.gather(*(engine.aquery(q) for q in prompts))

    responses = asyncio.run(run())
    for prompt, response in zip(prompts, responses):
        expert = paper_router.route(prompt).expert
        assert order[response.metadata["selector_result"].ind] == expert
        assert {n.node.metadata["domain"] for n in response.source_nodes} == {expert}


def test_router_retriever(paper_router, summary_indexes, small_tests):
    order = list(summary_indexes)
    tools = [
        RetrieverTool.from_defaults(summary_indexes[d].as_retriever(), name=d, description=f"about {d}")
        for d in order
    ]
    retriever = RouterRetriever(selector=Ir3deSelector(paper_router), retriever_tools=tools, llm=MockLLM())
    prompts = [q for _, q in _held_out(small_tests, 4)]
    for prompt in prompts:
        expert = paper_router.route(prompt).expert
        nodes = retriever.retrieve(prompt)
        assert len(nodes) == 30
        assert {n.node.metadata["domain"] for n in nodes} == {expert}
    nodes = asyncio.run(retriever.aretrieve(prompts[0]))
    assert {n.node.metadata["domain"] for n in nodes} == {paper_router.route(prompts[0]).expert}


def test_mismatch_lists_both_sides(paper_router):
    selector = Ir3deSelector(paper_router)
    choices = [
        ToolMetadata(name="math", description="m"),
        ToolMetadata(name="code", description="c"),
        ToolMetadata(name="cooking", description="recipes"),
    ]
    with pytest.raises(ExpertError) as info:
        selector.select(choices, "What is 2 + 2?")
    message = str(info.value)
    assert "choices without an expert: ['cooking']" in message
    assert "experts without a choice: ['instructions', 'multilingual']" in message
    duplicate = [ToolMetadata(name=n, description="") for n in paper_router.experts]
    duplicate.append(ToolMetadata(name="math", description="again"))
    with pytest.raises(ExpertError, match="both map to expert 'math'"):
        selector.select(duplicate, "What is 2 + 2?")


def test_explicit_mapping_and_plain_string_choices(paper_router, small_tests):
    names = {"math": "calculator", "code": "python", "instructions": "writer", "multilingual": "polyglot"}
    selector = Ir3deSelector(paper_router, mapping={v: k for k, v in names.items()})
    choices = [ToolMetadata(name=names[e], description="") for e in reversed(paper_router.experts)]
    # plain strings: matched through the mapping by their text
    strings = [f"tool for {e}" for e in paper_router.experts]
    by_string = Ir3deSelector(paper_router, mapping={f"tool for {e}": e for e in paper_router.experts})
    for _, prompt in _held_out(small_tests, 2):
        expert = paper_router.route(prompt).expert
        assert choices[selector.select(choices, prompt).ind].name == names[expert]
        assert strings[by_string.select(strings, prompt).ind] == f"tool for {expert}"
    with pytest.raises(ExpertError, match="calculator"):
        Ir3deSelector(paper_router).select(choices, "2 + 2")


def test_multi_selection_follows_scores(paper_router, vector_indexes, small_tests):
    threshold = 0.2
    selector = Ir3deSelector(paper_router, multi=True, score_threshold=threshold)
    order = list(vector_indexes)
    choices = [ToolMetadata(name=d, description="") for d in order]
    several = 0
    for _, prompt in _held_out(small_tests, 15):
        decision = paper_router.route(prompt)
        result = selector.select(choices, prompt)
        picked = [order[i] for i in result.inds]
        others = [e for e, v in decision.scores.items() if e != decision.expert and v > 0 and v >= threshold]
        expected = [decision.expert, *sorted(others, key=lambda e: -decision.scores[e])]
        assert picked == expected
        several += len(picked) > 1
    assert several > 0, "no held-out prompt had a second expert above the threshold"
    # RouterQueryEngine queries every selected engine and summarises across them
    engine = RouterQueryEngine(
        selector=selector, query_engine_tools=_query_tools(vector_indexes), llm=MockLLM()
    )
    prompt = next(q for _, q in _held_out(small_tests, 15) if len(selector.select(choices, q).inds) > 1)
    response = engine.query(prompt)
    picked = {order[i] for i in response.metadata["selector_result"].inds}
    assert {n.node.metadata["domain"] for n in response.source_nodes} == picked
    assert (
        len(
            Ir3deSelector(paper_router, multi=True, score_threshold=0.0, max_selections=2)
            .select(choices, prompt)
            .inds
        )
        == 2
    )


def test_instrumentation_event_inside_select_span(paper_router):
    collect, spans = RouteEventCollector(events=[]), SimpleSpanHandler()
    dispatcher.add_event_handler(collect)
    dispatcher.add_span_handler(spans)
    try:
        selector = Ir3deSelector(paper_router)
        choices = [ToolMetadata(name=e, description="") for e in paper_router.experts]
        prompt = "def add(a, b):\n    return a + b"
        result = selector.select(choices, prompt)
        asyncio.run(selector.aselect(choices, prompt))
    finally:
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not collect]
        dispatcher.span_handlers = [h for h in dispatcher.span_handlers if h is not spans]
    decision = paper_router.route(prompt)
    assert len(collect.events) == 2
    for event in collect.events:
        assert (event.component, event.query, event.expert) == ("selector", prompt, decision.expert)
        assert event.confidence == pytest.approx(decision.confidence)
        assert event.scores == pytest.approx(decision.scores)
        assert event.selected_indices == [result.ind]
        assert event.tokens[0] == decision.tokens[0].text
    span_ids = {s.id_ for s in spans.completed_spans}
    select_spans = [
        s for s in span_ids if s.startswith(("Ir3deSelector._select-", "Ir3deSelector._aselect-"))
    ]
    assert len(select_spans) == 2
    assert {e.span_id for e in collect.events} == set(select_spans)


def test_from_pretrained_and_fallback_choice(paper_router, tmp_path, small_tests):
    paper_router.save_pretrained(tmp_path / "router")
    selector = Ir3deSelector.from_pretrained(tmp_path / "router", device="cpu")
    assert selector.router.experts == paper_router.experts
    choices = [ToolMetadata(name=e, description="") for e in paper_router.experts]
    prompts = [q for _, q in _held_out(small_tests, 3)]
    for prompt in prompts:
        assert choices[selector.select(choices, prompt).ind].name == paper_router.route(prompt).expert
    with pytest.raises(EmptyPromptError):
        selector.select(choices, "   ")
    selector.router.configure(fallback="general", threshold=0.95)  # the loaded copy, not the shared router
    with pytest.raises(ExpertError, match=r"experts without a choice: \['general'\]"):
        selector.select(choices, prompts[0])
    choices.append(ToolMetadata(name="general", description="anything"))
    assert selector.select(choices, "   ").ind == len(choices) - 1
    fell_back = []
    for prompt in prompts:
        decision = selector.router.route(prompt)
        result = selector.select(choices, prompt)
        assert choices[result.ind].name == decision.expert
        assert ("fallback 'general'" in result.reason) == decision.fallback_used  # the reason says which
        fell_back.append(decision.fallback_used)
    assert any(fell_back)  # the threshold (0.95) is above some real prompts' vote share
