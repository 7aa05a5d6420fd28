"""RoutingChatModel: decision metadata, streaming, forced experts, tools, structured output, and
LangChain's standard chat-model unit and integration suites run offline with fake local experts."""

from __future__ import annotations

import itertools

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from lc_helpers import expert_of, fake_expert
from pydantic import BaseModel

from ir3de.errors import ExpertError
from ir3de.serving.registry import ExpertRegistry
from ir3de_integrations.langchain import ExpertInvocationError, RoutingChatModel


class ToolCallingFake(GenericFakeChatModel):
    """A fake chat model that supports bind_tools (records what was bound) and replays its messages."""

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        names = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
        return self.bind(recorded_tools=names, recorded_choice=tool_choice)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        result = super()._generate(messages, stop=stop, run_manager=run_manager)
        result.generations[0].message.response_metadata["bound_tools"] = kwargs.get("recorded_tools")
        return result


class Answer(BaseModel):
    """The numeric answer."""

    value: int


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture
def chat(paper_router, make_experts):
    return RoutingChatModel(paper_router, make_experts(paper_router.experts))


def test_decision_in_response_metadata(chat, paper_router, small_tests):
    for domain in paper_router.experts:
        text = small_tests[domain][0]
        reply = chat.invoke(text)
        decision = paper_router.route(text)
        info = reply.response_metadata["ir3de"]
        assert expert_of(reply) == info["expert"] == decision.expert
        assert info["confidence"] == pytest.approx(decision.confidence)
        assert [t["text"] for t in info["tokens"]] == [t.text for t in decision.tokens]
        assert reply.response_metadata["model_name"] == decision.expert


async def test_decision_on_first_streamed_chunk(chat, paper_router, small_tests):
    text = small_tests["code"][3]
    decision = paper_router.route(text)
    for chunks in (list(chat.stream(text)), [c async for c in chat.astream(text)]):
        assert chunks[0].response_metadata["ir3de"]["expert"] == decision.expert
        assert all("ir3de" not in c.response_metadata for c in chunks[1:])
        full = chunks[0]
        for c in chunks[1:]:
            full = full + c
        assert full.content == f"answers: {decision.expert} expert here"
        assert full.response_metadata["model_name"] == decision.expert
        assert chunks[-1].chunk_position == "last"


def test_conversation_routes_the_last_user_turn(chat, small_tests):
    messages = [HumanMessage(small_tests["code"][0]), AIMessage("done"), HumanMessage(small_tests["math"][0])]
    assert expert_of(chat.invoke(messages)) == "math"
    assert chat.route(messages).expert == "math"


def test_model_override_forces_an_expert(chat, small_tests):
    reply = chat.invoke(small_tests["math"][0], model="multilingual")
    assert expert_of(reply) == "multilingual"
    assert reply.response_metadata["ir3de"]["forced"] is True


def test_bind_tools_goes_to_experts_that_support_it(paper_router, make_experts, small_tests):
    experts = make_experts(paper_router.experts)
    call = {"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"}
    experts["math"] = ToolCallingFake(messages=itertools.cycle([AIMessage("", tool_calls=[call])]))
    chat = RoutingChatModel(paper_router, experts).bind_tools([add], tool_choice="any")
    reply = chat.invoke(small_tests["math"][0])
    assert reply.tool_calls[0]["name"] == "add" and reply.tool_calls[0]["args"] == {"a": 2, "b": 3}
    assert reply.response_metadata["bound_tools"] == ["add"]
    assert reply.response_metadata["ir3de"]["tools_bound"] is True
    other = chat.invoke(small_tests["code"][0])  # a fake without tool support answers unbound
    assert expert_of(other) == "code" and other.response_metadata["ir3de"]["tools_bound"] is False


def test_structured_output_goes_to_the_chosen_expert(paper_router, make_experts, small_tests):
    experts = make_experts(paper_router.experts)
    call = {"name": "Answer", "args": {"value": 4}, "id": "call_1", "type": "tool_call"}
    experts["math"] = ToolCallingFake(messages=itertools.cycle([AIMessage("", tool_calls=[call])]))
    structured = RoutingChatModel(paper_router, experts).with_structured_output(Answer)
    assert structured.invoke(small_tests["math"][0]) == Answer(value=4)
    with pytest.raises(ExpertError, match="does not support with_structured_output"):
        structured.invoke(small_tests["code"][0])


def test_agent_turn_after_tool_result_stays_with_the_expert(paper_router, make_experts, small_tests):
    experts = make_experts(paper_router.experts)
    question = small_tests["math"][1]
    messages = [
        HumanMessage(question),
        AIMessage(
            "", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}]
        ),
        ToolMessage("3", tool_call_id="c1"),
    ]
    chat = RoutingChatModel(paper_router, experts)
    assert expert_of(chat.invoke(messages)) == paper_router.route(question).expert


def test_failing_expert_is_named(paper_router, make_experts, small_tests):
    experts = make_experts(paper_router.experts)

    def broken(_):
        raise TimeoutError("slow provider")

    experts["code"] = RunnableLambda(broken)
    chat = RoutingChatModel(paper_router, experts)
    with pytest.raises(ExpertInvocationError) as info:
        chat.invoke(small_tests["code"][0])
    assert info.value.expert == "code" and isinstance(info.value.__cause__, TimeoutError)
    with pytest.raises(ExpertInvocationError):
        list(chat.stream(small_tests["code"][0]))
    backup = GenericFakeChatModel(messages=itertools.cycle(["backup here"]))
    assert chat.with_fallbacks([backup]).invoke(small_tests["code"][0]).content == "backup here"


def test_add_expert_on_the_chat_model(fresh_router, make_experts, small_tests):
    from ir3de.data.datasets import load_domain

    chat = RoutingChatModel(fresh_router, make_experts(fresh_router.experts))
    medical = load_domain("medical")
    chat.add_expert("medical", fake_expert("medical"), medical[:200])
    assert "medical" in chat.experts and "medical" in chat.router.experts
    assert "medical" not in fresh_router.experts  # the caller's router never changes behind its back
    answered = [expert_of(chat.invoke(t)) for t in medical[300:320]]
    assert answered.count("medical") >= 10  # held-out health questions now reach the new expert
    chat.remove_expert("medical")
    assert "medical" not in chat.experts and expert_of(chat.invoke(medical[100])) != "medical"
    # a new runnable for an expert, its statistics unchanged
    code_q = next(t for t in small_tests["code"] if chat.router.route(t).expert == "code")
    statistics = chat.router.statistics["code"]
    chat.update_expert("code", llm=fake_expert("code-v2"))
    assert expert_of(chat.invoke(code_q)) == "code-v2" and chat.router.statistics["code"] is statistics
    assert isinstance(chat.registry, ExpertRegistry) and chat.registry.router is chat.router
    assert chat.router is not fresh_router


class _Params:
    """chat_model_params for the standard suites: the shared paper router and fake local experts."""

    @pytest.fixture(autouse=True)
    def _router(self, paper_router):
        type(self).router = paper_router

    @property
    def chat_model_class(self):
        return RoutingChatModel

    @property
    def chat_model_params(self):
        experts = {name: fake_expert(name, "{name} says hello there") for name in self.router.experts}
        return {"router": self.router, "experts": experts}

    @property
    def model_override_value(self):
        return "code"  # `model=` forces an expert


class TestRoutingChatModelStandardUnit(_Params, ChatModelUnitTests):
    pass


class TestRoutingChatModelStandardIntegration(_Params, ChatModelIntegrationTests):
    # Capabilities the local fake experts do not have (the router forwards them to experts that do):
    @property
    def has_tool_calling(self):
        return False

    @property
    def has_structured_output(self):
        return False

    @property
    def returns_usage_metadata(self):
        return False
