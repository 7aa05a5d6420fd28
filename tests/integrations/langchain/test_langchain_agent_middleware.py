"""Ir3deModelMiddleware on real create_agent agents (scripted expert chat models stand in for LLMs)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langgraph.checkpoint.memory import InMemorySaver

from ir3de.errors import ExpertMismatchError, InvalidInputError, UnknownCallError
from ir3de_integrations.langchain import Ir3deModelMiddleware

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "cookbook"))
from agents_common import ScriptedExpert, calculator, expert_of

FOLLOW_UP = "Thanks! Can you explain how you got that?"


def _models(router, tool_experts=()):
    return {
        name: ScriptedExpert(expert=name, tool_name="calculator", tool_args={"expression": "6 * 7"})
        if name in tool_experts
        else ScriptedExpert(expert=name)
        for name in router.experts
    }


def _agent(middleware, models, **kwargs):
    return create_agent(next(iter(models.values())), tools=[calculator], middleware=[middleware], **kwargs)


def test_each_turn_goes_to_the_routers_expert(paper_router, small_tests):
    models = _models(paper_router)
    agent = _agent(Ir3deModelMiddleware(paper_router, models), models)
    for texts in small_tests.values():
        for text in texts[:4]:
            out = agent.invoke({"messages": [("user", text)]})
            decision = paper_router.route(text)
            assert out["ir3de"]["expert"] == decision.expert
            assert out["ir3de"]["scores"] == pytest.approx(decision.scores)
            answer = out["messages"][-1]
            assert expert_of(answer) == decision.expert  # the routed expert's model answered
            assert answer.response_metadata["ir3de"]["expert"] == decision.expert


def test_a_tool_loop_stays_on_one_expert(paper_router, small_tests):
    models = _models(paper_router, tool_experts=paper_router.experts)
    agent = _agent(Ir3deModelMiddleware(paper_router, models), models)
    for domain in ("math", "code"):
        text = small_tests[domain][0]
        out = agent.invoke({"messages": [("user", text)]})
        kinds = [m.type for m in out["messages"]]
        assert kinds == ["human", "ai", "tool", "ai"]  # model → tool → model
        assert out["messages"][2].content == "42"
        experts = {m.response_metadata["ir3de"]["expert"] for m in out["messages"] if m.type == "ai"}
        route_ids = {m.response_metadata["ir3de"]["route_id"] for m in out["messages"] if m.type == "ai"}
        assert experts == {paper_router.route(text).expert} and len(route_ids) == 1
        assert expert_of(out["messages"][-1]) == paper_router.route(text).expert


def test_a_neutral_follow_up_in_a_thread_keeps_its_expert(paper_router, small_tests):
    models = _models(paper_router)
    middleware = Ir3deModelMiddleware(paper_router, models)
    agent = _agent(middleware, models, checkpointer=InMemorySaver())
    kept, experts = 0, []
    for domain in ("math", "code"):
        thread = {"configurable": {"thread_id": f"thread-{domain}"}}
        first = agent.invoke({"messages": [("user", small_tests[domain][0])]}, thread)
        second = agent.invoke({"messages": [("user", FOLLOW_UP)]}, thread)
        assert first["ir3de"]["turn"] == 1 and second["ir3de"]["turn"] == 2
        assert second["ir3de"]["expert"] == first["ir3de"]["expert"]
        assert expert_of(second["messages"][-1]) == first["ir3de"]["expert"]
        assert second["ir3de"]["switched"] is False
        kept += second["ir3de"]["reason"].startswith("kept")
        experts.append(first["ir3de"]["expert"])
    assert kept == 2
    # routed alone, the follow-up goes elsewhere for at least one thread: the thread made the difference
    assert any(paper_router.route(FOLLOW_UP).expert != expert for expert in experts)
    # a new thread starts afresh (no previous expert)
    fresh = agent.invoke({"messages": [("user", FOLLOW_UP)]}, {"configurable": {"thread_id": "new"}})
    assert "no previous expert" in fresh["ir3de"]["reason"]


def test_stickiness_survives_a_new_middleware_through_the_checkpointer(paper_router, small_tests):
    checkpointer = InMemorySaver()
    models = _models(paper_router)
    thread = {"configurable": {"thread_id": "t"}}
    first = _agent(Ir3deModelMiddleware(paper_router, models), models, checkpointer=checkpointer)
    out = first.invoke({"messages": [("user", small_tests["math"][0])]}, thread)
    second = _agent(
        Ir3deModelMiddleware(paper_router, models), models, checkpointer=checkpointer
    )  # new store
    again = second.invoke({"messages": [("user", FOLLOW_UP)]}, thread)
    assert again["ir3de"]["expert"] == out["ir3de"]["expert"]
    assert again["ir3de"]["reason"].startswith("kept")


def test_async_agent_runs(paper_router, small_tests):
    models = _models(paper_router, tool_experts=["math"])
    agent = _agent(Ir3deModelMiddleware(paper_router, models), models)
    texts = [small_tests[d][1] for d in paper_router.experts]

    async def run_all():
        return await asyncio.gather(*(agent.ainvoke({"messages": [("user", t)]}) for t in texts))

    for text, out in zip(texts, asyncio.run(run_all())):
        assert out["ir3de"]["expert"] == paper_router.route(text).expert
        assert expert_of(out["messages"][-1]) == out["ir3de"]["expert"]


def _wait_for(results, count, threads):
    while len(results) < count and any(t.is_alive() for t in threads):
        time.sleep(0.01)


def test_add_and_remove_experts_under_concurrent_agent_runs(fresh_router, small_tests):
    from ir3de.data.datasets import load_domain

    router = fresh_router
    models = _models(router, tool_experts=router.experts)
    middleware = Ir3deModelMiddleware(router, models)
    agent = _agent(middleware, models, checkpointer=InMemorySaver())
    medical = load_domain("medical")
    texts = [t for texts in small_tests.values() for t in texts[:6]] + medical[300:306]
    errors, results, stop = [], [], threading.Event()

    def worker(index):
        n = 0
        while not stop.is_set() and n < 2000:
            text = texts[(index * 7 + n) % len(texts)]
            try:
                out = agent.invoke(
                    {"messages": [("user", text)]}, {"configurable": {"thread_id": f"{index}-{n}"}}
                )
                ai = [m for m in out["messages"] if m.type == "ai"]
                answered = {expert_of(m) for m in ai if m.text}
                routed = {m.response_metadata["ir3de"]["expert"] for m in ai}
                if answered != {out["ir3de"]["expert"]} or routed != answered:
                    errors.append(("switched model inside a tool loop", out["ir3de"]))
                results.append(out["ir3de"]["expert"])
            except Exception as e:  # every failure is collected and fails the test below
                errors.append(repr(e))
            n += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        _wait_for(results, 3, threads)  # agents are running
        medical_model = ScriptedExpert(
            expert="medical", tool_name="calculator", tool_args={"expression": "6 * 7"}
        )
        middleware.add_expert("medical", medical_model, medical[:80], "health questions")
        middleware.remove_expert("instructions")
        _wait_for(results, len(results) + 6, threads)  # and keep running after the changes
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert results
    assert router.experts == ("math", "code", "multilingual", "medical")
    assert set(middleware.models) == set(router.experts)
    out = agent.invoke({"messages": [("user", medical[310])]}, {"configurable": {"thread_id": "after"}})
    assert out["ir3de"]["expert"] == router.route(medical[310]).expert
    assert expert_of(out["messages"][-1]) == out["ir3de"]["expert"]


def test_feedback_by_thread_run_id_message_or_prompt(fresh_router, small_tests):
    router = fresh_router
    models = _models(router)
    middleware = Ir3deModelMiddleware(router, models)
    agent = _agent(middleware, models, checkpointer=InMemorySaver())
    text = small_tests["math"][2]
    run_id = uuid.uuid4()
    out = agent.invoke(
        {"messages": [("user", text)]}, {"configurable": {"thread_id": "fb"}, "run_id": run_id}
    )
    wrong = next(n for n in router.experts if n != out["ir3de"]["expert"])
    by_thread = middleware.feedback(thread_id="fb", expert=wrong)
    assert by_thread.prompt == text and by_thread.routed == out["ir3de"]["expert"]
    assert by_thread.call_id == out["ir3de"]["route_id"]
    assert middleware.feedback(run_id=run_id, expert=wrong).call_id == out["ir3de"]["route_id"]
    assert middleware.feedback(message=out["messages"][-1], expert=wrong).prompt == text
    assert router.traffic[wrong].num_prompts == 3
    assert middleware.feedback(prompt="def f(x): return x", expert="code").call_id is None
    with pytest.raises(UnknownCallError):
        middleware.feedback(thread_id="never", expert="math")
    with pytest.raises(InvalidInputError, match="exactly one"):
        middleware.feedback(thread_id="fb", prompt="x", expert="math")


def test_models_must_match_the_experts_and_be_chat_models(paper_router):
    models = _models(paper_router)
    del models["code"]
    with pytest.raises(ExpertMismatchError, match="code"):
        Ir3deModelMiddleware(paper_router, models)
    with pytest.raises(InvalidInputError, match="BaseChatModel or an init_chat_model string"):
        Ir3deModelMiddleware(paper_router, {**_models(paper_router), "code": object()})
    agent = _agent(Ir3deModelMiddleware(paper_router, _models(paper_router)), _models(paper_router))
    with pytest.raises(InvalidInputError, match="state has none"):
        agent.invoke({"messages": []})


def test_update_expert_replaces_its_model_for_the_next_turn(paper_router, small_tests):
    models = _models(paper_router)
    middleware = Ir3deModelMiddleware(paper_router, models)
    agent = _agent(middleware, models)
    text = next(t for t in small_tests["code"] if paper_router.route(t).expert == "code")
    assert expert_of(agent.invoke({"messages": [("user", text)]})["messages"][-1]) == "code"
    middleware.update_expert("code", model=ScriptedExpert(expert="code-v2"))  # the router is unchanged
    out = agent.invoke({"messages": [("user", text)]})
    assert out["ir3de"]["expert"] == "code" and expert_of(out["messages"][-1]) == "code-v2"
    assert middleware.models["code"].expert == "code-v2"
