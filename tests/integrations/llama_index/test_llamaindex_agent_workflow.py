"""RoutedAgentWorkflow and route_event on real LlamaIndex workflows (mock function-calling LLMs)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("llama_index.core.agent.workflow")

from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import ChatMessage
from llama_index.core.workflow import Context

from ir3de.errors import ExpertMismatchError
from ir3de_integrations.llama_index import Ir3deRouteEvent, RoutedAgentWorkflow, route_event

FOLLOW_UP = "Thanks! Can you explain how you got that?"


@pytest.fixture
def recipe(cookbook_path):
    import llamaindex_agent_workflow

    return llamaindex_agent_workflow


def _run(workflow, text, ctx=None):
    async def go():
        context = ctx or Context(workflow)
        output = await workflow.run(user_msg=text, ctx=context)
        return output, await context.store.get("ir3de")

    return asyncio.run(go())


def test_each_run_starts_at_the_routed_agent(recipe, paper_router, small_tests):
    workflow = recipe.build_workflow(paper_router)
    assert isinstance(workflow, AgentWorkflow)
    for domain in ("math", "code", "instructions"):
        for text in small_tests[domain][:3]:
            output, route = _run(workflow, text)
            decision = paper_router.route(text)
            assert route["expert"] == decision.expert
            assert route["scores"] == pytest.approx(decision.scores)
            final = output.current_agent_name
            assert final == ("instructions" if decision.expert == "multilingual" else decision.expert)
            assert str(output.response.content) == f"answers: {final} expert here"


def test_handoffs_still_happen_after_the_routed_start(recipe, paper_router, small_tests):
    workflow = recipe.build_workflow(paper_router)
    text = next(t for t in small_tests["multilingual"] if paper_router.route(t).expert == "multilingual")
    output, route = _run(workflow, text)
    assert route["expert"] == "multilingual"  # routed start
    assert output.current_agent_name == "instructions"  # the multilingual agent handed off


def test_a_follow_up_in_the_same_context_keeps_its_agent(recipe, paper_router, small_tests):
    workflow = recipe.build_workflow(paper_router)
    ctx = Context(workflow)
    _, first = _run(workflow, small_tests["math"][0], ctx)
    second_output, second = _run(workflow, FOLLOW_UP, ctx)
    assert first["expert"] == second["expert"] == "math"
    assert second["reason"].startswith("kept") and second_output.current_agent_name == "math"
    assert paper_router.route(FOLLOW_UP).expert != "math"  # alone it would go elsewhere


def test_routes_are_emitted_as_instrumentation_events(recipe, paper_router, small_tests):
    seen = []

    class Collect(BaseEventHandler):
        def handle(self, event, **kwargs):
            if isinstance(event, Ir3deRouteEvent):
                seen.append(event)

    handler = Collect()
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        _run(recipe.build_workflow(paper_router), small_tests["code"][0])
    finally:
        root.event_handlers.remove(handler)
    assert [(e.component, e.expert) for e in seen] == [
        ("agent_workflow", paper_router.route(small_tests["code"][0]).expert)
    ]


def test_route_event_inside_a_workflow_step(recipe, paper_router, small_tests):
    flow = recipe.AnswerFlow(
        paper_router, {n: recipe.scripted_llm(n) for n in paper_router.experts}, timeout=30
    )
    for domain in paper_router.experts:
        text = small_tests[domain][0]

        async def answer(text=text):
            return await flow.run(query=text)

        result = asyncio.run(answer())
        assert result == {
            "expert": paper_router.route(text).expert,
            "answer": f"answers: {result['expert']} expert here",
        }

    async def chat():
        ctx = Context(flow)
        first = await route_event(
            paper_router, [ChatMessage(role="user", content=small_tests["code"][0])], ctx=ctx
        )
        history = [
            ChatMessage(role="user", content=small_tests["code"][0]),
            ChatMessage(role="assistant", content="def f(): ..."),
            ChatMessage(role="user", content=FOLLOW_UP),
        ]
        return first, await route_event(paper_router, history, ctx=ctx), history

    first, second, history = asyncio.run(chat())
    turns = [(m.role, m.content) for m in history]
    assert second.expert == paper_router.route_conversation(turns, previous_expert=first.expert).expert


def test_agents_must_be_named_like_the_experts(paper_router):
    from llama_index.core.llms.mock import MockFunctionCallingLLM

    agents = [
        FunctionAgent(name=n, description=n, llm=MockFunctionCallingLLM()) for n in paper_router.experts[:3]
    ]
    with pytest.raises(ExpertMismatchError, match="multilingual"):
        RoutedAgentWorkflow(agents, router=paper_router)


def test_llamaindex_agent_workflow_recipe(recipe, smollm2):
    out = recipe.main(embeddings=smollm2)
    router, suite = out["router"], out["suite"]
    for run in out["runs"]:
        assert run["start"] == router.route(suite.test[run["domain"]][0]).expert
    assert [r["start"] for r in out["runs"]] == list(router.experts)
    assert out["runs"][-1]["final"] == "instructions"  # multilingual handed off
    assert out["follow_up"]["expert"] == "math"
    assert out["stepped"]["expert"] == router.route(suite.test["math"][1]).expert
