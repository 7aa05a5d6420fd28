"""RouteEdge, route_node and create_routed_graph on real LangGraph graphs and create_agent subgraphs."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest
from agents_common import ScriptedExpert, calculator, expert_of
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command
from typing_extensions import TypedDict

from ir3de.errors import EmptyPromptError, ExpertMismatchError, InvalidInputError
from ir3de_integrations.langgraph import RouteEdge, create_routed_graph, route_node

COOKBOOK = Path(__file__).resolve().parents[3] / "cookbook"
FOLLOW_UP = "Thanks! Can you explain how you got that?"


def _agents(router, tools_for=()):
    agents = {}
    for name in router.experts:
        if name in tools_for:
            model = ScriptedExpert(expert=name, tool_name="calculator", tool_args={"expression": "6 * 7"})
            agents[name] = create_agent(model, tools=[calculator], name=name)
        else:
            agents[name] = create_agent(ScriptedExpert(expert=name), name=name)
    return agents


def _edge_graph(router, edge):
    builder = StateGraph(MessagesState)
    for name in edge.destinations:
        builder.add_node(name, create_agent(ScriptedExpert(expert=name), name=name))
        builder.add_edge(name, END)
    builder.add_conditional_edges(START, edge, edge.path_map)
    return builder.compile()


def test_route_edge_returns_the_routers_expert(paper_router, small_tests):
    edge = RouteEdge(paper_router)
    graph = _edge_graph(paper_router, edge)
    assert edge.path_map == {n: n for n in paper_router.experts}
    for texts in small_tests.values():
        for text in texts[:4]:
            expected = paper_router.route(text).expert
            assert edge({"messages": [HumanMessage(text)]}) == expected
            assert RouteEdge(paper_router, key="question")({"question": text}) == expected
            out = graph.invoke({"messages": [("user", text)]})
            assert expert_of(out["messages"][-1]) == expected


def test_route_edge_routes_messages_as_a_conversation(paper_router, small_tests):
    text = small_tests["code"][0]
    chat = [HumanMessage(text), AIMessage("def f(): ...", response_metadata={"ir3de": {"expert": "code"}})]
    chat.append(HumanMessage(FOLLOW_UP))
    turns = [("user", text), ("assistant", "def f(): ..."), ("user", FOLLOW_UP)]
    expected = paper_router.route_conversation(turns, previous_expert="code").expert
    assert RouteEdge(paper_router)({"messages": chat}) == expected
    from_state = paper_router.route_conversation(turns, previous_expert="math").expert
    assert RouteEdge(paper_router)({"messages": chat, "ir3de": {"expert": "math"}}) == from_state


def test_route_edge_fallback_and_errors(paper_router):
    edge = RouteEdge(paper_router, fallback="general")
    assert edge.destinations[-1] == "general"
    assert edge({"messages": [HumanMessage("   ")]}) == "general"
    with pytest.raises(EmptyPromptError):
        RouteEdge(paper_router)({"messages": [HumanMessage("   ")]})
    with pytest.raises(InvalidInputError, match="no key 'messages'"):
        RouteEdge(paper_router)({"question": "2 + 2?"})


def test_route_node_returns_a_command_with_the_decision(paper_router, small_tests):
    node = route_node(paper_router)
    text = small_tests["math"][0]
    command = node({"messages": [HumanMessage(text)]})
    decision = paper_router.route(text)
    assert isinstance(command, Command) and command.goto == decision.expert
    assert command.update["ir3de"]["expert"] == decision.expert and command.update["ir3de"]["turn"] == 1
    assert command.update["ir3de"]["scores"] == pytest.approx(decision.scores)
    again = node({"messages": [HumanMessage(text)], "ir3de": {"expert": "code", "turn": 1}})
    assert again.goto == "code" and not again.update  # this turn is routed already


def test_routed_graph_answers_with_the_routed_agent_and_tool_loops_stay(paper_router, small_tests):
    graph = create_routed_graph(paper_router, _agents(paper_router, tools_for=paper_router.experts))
    for domain, texts in small_tests.items():
        text = texts[0]
        out = graph.invoke({"messages": [("user", text)]})
        expected = paper_router.route(text).expert
        assert out["ir3de"]["expert"] == expected
        assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"], domain
        assert expert_of(out["messages"][-1]) == expected


def test_routed_graph_keeps_a_threads_expert_through_the_checkpointer(paper_router, small_tests):
    graph = create_routed_graph(paper_router, _agents(paper_router), checkpointer=InMemorySaver())
    experts = []
    for domain in ("math", "code"):
        thread = {"configurable": {"thread_id": domain}}
        first = graph.invoke({"messages": [("user", small_tests[domain][0])]}, thread)
        second = graph.invoke({"messages": [("user", FOLLOW_UP)]}, thread)
        assert second["ir3de"]["turn"] == 2 and second["ir3de"]["expert"] == first["ir3de"]["expert"]
        assert second["ir3de"]["reason"].startswith("kept")
        assert expert_of(second["messages"][-1]) == first["ir3de"]["expert"]
        experts.append(first["ir3de"]["expert"])
    # routed alone, the follow-up goes elsewhere for at least one thread: the thread made the difference
    assert any(paper_router.route(FOLLOW_UP).expert != expert for expert in experts)
    # a code question switches the math thread
    switched = graph.invoke(
        {"messages": [("user", small_tests["code"][1])]}, {"configurable": {"thread_id": "math"}}
    )
    assert switched["ir3de"]["switched"] and switched["ir3de"]["expert"] == "code"


def test_routed_graph_async(paper_router, small_tests):
    graph = create_routed_graph(paper_router, _agents(paper_router))
    texts = [small_tests[d][2] for d in paper_router.experts]

    async def run_all():
        return await asyncio.gather(*(graph.ainvoke({"messages": [("user", t)]}) for t in texts))

    for text, out in zip(texts, asyncio.run(run_all())):
        assert expert_of(out["messages"][-1]) == paper_router.route(text).expert


def test_routed_graph_needs_one_agent_per_expert(paper_router):
    agents = _agents(paper_router)
    del agents["code"]
    with pytest.raises(ExpertMismatchError, match="code"):
        create_routed_graph(paper_router, agents)
    with pytest.raises(ExpertMismatchError, match="general"):
        create_routed_graph(paper_router, _agents(paper_router), fallback="general")


def test_a_plain_function_node_and_a_custom_state(paper_router, small_tests):
    class State(TypedDict, total=False):
        question: str
        answer: str
        ir3de: dict

    agents = {name: (lambda state, name=name: {"answer": name}) for name in paper_router.experts}
    graph = create_routed_graph(paper_router, agents, key="question", state_schema=State)
    text = small_tests["multilingual"][0]
    assert graph.invoke({"question": text})["answer"] == paper_router.route(text).expert


def test_langgraph_multi_agent_recipe(smollm2):
    spec = importlib.util.spec_from_file_location(
        "cookbook_langgraph_multi_agent", COOKBOOK / "langgraph_multi_agent.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = module.main(embeddings=smollm2)
    router, suite = out["router"], out["suite"]
    assert [t["expert"] for t in out["turns"]] == ["math", "math", "code"]
    assert all(t["answered_by"] == t["expert"] for t in out["turns"])
    assert out["edge_answer"] == router.route(suite.test["multilingual"][0]).expert
