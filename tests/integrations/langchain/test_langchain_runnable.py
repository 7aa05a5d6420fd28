"""RouterRunnable: routing real prompts to LangChain fake chat models in every calling style."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tracers.context import collect_runs
from lc_helpers import expert_of, fake_expert

from ir3de.errors import EmptyPromptError, InvalidInputError, Ir3deError
from ir3de.routing.conversation import ConversationSettings
from ir3de_integrations.langchain import ExpertInvocationError, ExpertMismatchError, RouterRunnable


@pytest.fixture
def routed(paper_router, make_experts):
    return RouterRunnable(paper_router, make_experts(paper_router.experts))


def _prompts(small_tests, n=5):
    return [(domain, text) for domain, texts in small_tests.items() for text in texts[:n]]


def test_invoke_answers_with_the_routed_expert(routed, paper_router, small_tests):
    prompts = _prompts(small_tests)
    answered = [expert_of(routed.invoke(text)) for _, text in prompts]
    assert answered == [paper_router.route(text).expert for _, text in prompts]
    correct = sum(a == domain for a, (domain, _) in zip(answered, prompts))
    assert correct / len(prompts) >= 0.75  # real held-out prompts land on their domain's expert


def test_input_forms(routed, paper_router, small_tests):
    math, code = small_tests["math"][0], small_tests["code"][0]
    assert paper_router.route(math).expert == "math" and paper_router.route(code).expert == "code"
    conversation = [SystemMessage("be brief"), HumanMessage(code), AIMessage("ok"), HumanMessage(math)]
    assert expert_of(routed.invoke(conversation)) == "math"  # the last user message is routed
    assert expert_of(routed.invoke([("human", code), ("ai", "ok"), ("human", math)])) == "math"
    prompt = ChatPromptTemplate.from_messages([("system", "You help."), ("human", "{question}")])
    assert expert_of((prompt | routed).invoke({"question": code})) == "code"
    # a dict goes to the expert unchanged: experts that take dicts are chains (prompt | model)
    chains = {
        n: ChatPromptTemplate.from_template("{question}") | fake_expert(n) for n in paper_router.experts
    }
    keyed = RouterRunnable(paper_router, chains, input_key="question")
    assert expert_of(keyed.invoke({"question": math, "other": code})) == "math"
    with pytest.raises(InvalidInputError, match="no key 'question'"):
        keyed.invoke({"input": math})
    with pytest.raises(InvalidInputError, match="cannot route"):
        routed.invoke(42)


def test_route_on_legacy_values(paper_router, make_experts, small_tests):
    code = small_tests["code"][0]
    short = "What is 12 divided by 4?"
    messages = [HumanMessage(code), AIMessage("def f(): pass"), HumanMessage(short)]
    experts = make_experts(paper_router.experts)
    last = RouterRunnable(paper_router, experts, route_on="last_user")
    assert last.route(messages).scores == paper_router.route(short).scores
    whole = RouterRunnable(paper_router, experts, route_on="conversation")
    expected = paper_router.route_conversation(
        [("user", code), ("ai", "def f(): pass"), ("user", short)], settings=ConversationSettings.whole()
    )
    assert whole.route(messages) == expected
    for gone in (0, 3, "first"):
        with pytest.raises(InvalidInputError, match="conversation=ConversationSettings"):
            RouterRunnable(paper_router, experts, route_on=gone)
    with pytest.raises(InvalidInputError, match="not both"):
        RouterRunnable(paper_router, experts, route_on="last_user", conversation=ConversationSettings())


def test_nested_run_is_tagged_with_the_decision(routed, small_tests):
    text = small_tests["code"][1]
    with collect_runs() as cb:
        routed.invoke(text)
    (root,) = cb.traced_runs
    assert root.name == "RouterRunnable"
    (child,) = root.child_runs
    decision = routed.route(text)
    assert f"route:{decision.expert}" in child.tags
    assert child.extra["metadata"]["ir3de_expert"] == decision.expert
    assert child.extra["metadata"]["ir3de_confidence"] == pytest.approx(decision.confidence)


class _Spy(Runnable):
    """Wraps an expert and records the sizes of the batches it receives."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def invoke(self, input, config=None, **kwargs):
        return self.inner.invoke(input, config, **kwargs)

    def batch(self, inputs, config=None, **kwargs):
        self.batches.append(len(inputs))
        return self.inner.batch(inputs, config, **kwargs)

    async def abatch(self, inputs, config=None, **kwargs):
        self.batches.append(len(inputs))
        return await self.inner.abatch(inputs, config, **kwargs)


@pytest.mark.parametrize("use_async", [False, True])
async def test_batch_groups_by_expert_and_keeps_order(paper_router, small_tests, use_async):
    spies = {name: _Spy(fake_expert(name)) for name in paper_router.experts}
    routed = RouterRunnable(paper_router, spies)
    texts = [text for _, text in _prompts(small_tests, n=3)][::-1]
    outs = await routed.abatch(texts) if use_async else routed.batch(texts)
    expected = [d.expert for d in paper_router.route_batch(texts)]
    assert [expert_of(o) for o in outs] == expected
    for name, spy in spies.items():
        assert spy.batches == ([expected.count(name)] if name in expected else [])


def test_batch_returns_per_item_errors(routed, small_tests):
    outs = routed.batch([small_tests["math"][0], "   ", small_tests["code"][0]], return_exceptions=True)
    assert expert_of(outs[0]) == "math" and expert_of(outs[2]) == "code"
    assert isinstance(outs[1], EmptyPromptError)
    with pytest.raises(EmptyPromptError):
        routed.batch(["   "])


async def test_ainvoke_stream_astream(routed, small_tests):
    text = small_tests["multilingual"][0]
    name = routed.route(text).expert
    assert expert_of(await routed.ainvoke(text)) == name
    chunks = list(routed.stream(text))
    assert len(chunks) > 1 and "".join(c.content for c in chunks) == f"answers: {name} expert here"
    achunks = [c async for c in routed.astream(text)]
    assert "".join(c.content for c in achunks) == f"answers: {name} expert here"


async def test_astream_events_show_the_expert_stream(routed, small_tests):
    text = small_tests["instructions"][0]
    name = routed.route(text).expert
    events = [e async for e in routed.astream_events(text, version="v2")]
    tokens = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert tokens and all(f"route:{name}" in e["tags"] for e in tokens)
    assert "".join(e["data"]["chunk"].content for e in tokens) == f"answers: {name} expert here"
    assert events[0]["event"] == "on_chain_start" and events[-1]["event"] == "on_chain_end"


def test_return_decision(paper_router, make_experts, small_tests):
    routed = RouterRunnable(paper_router, make_experts(paper_router.experts), return_decision=True)
    text = small_tests["code"][2]
    out = routed.invoke(text)
    assert out["decision"] == paper_router.route(text)
    assert expert_of(out["output"]) == out["decision"].expert
    chunks = list(routed.stream(text))
    assert chunks[0] == {"decision": out["decision"]}
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total["output"].content == out["output"].content


def test_mismatched_experts_list_missing_and_extra(paper_router, make_experts):
    experts = make_experts(["math", "code", "poetry"])
    with pytest.raises(ExpertMismatchError) as info:
        RouterRunnable(paper_router, experts)
    assert info.value.missing == ["instructions", "multilingual"]
    assert info.value.extra == ["poetry"]
    assert "instructions" in str(info.value) and "poetry" in str(info.value)


def test_failing_expert_names_itself_and_falls_back(paper_router, make_experts, small_tests):
    experts = make_experts(paper_router.experts)

    def broken(_):
        raise ConnectionError("provider down")

    experts["math"] = RunnableLambda(broken)
    routed = RouterRunnable(paper_router, experts)
    with pytest.raises(ExpertInvocationError) as info:
        routed.invoke(small_tests["math"][0])
    assert info.value.expert == "math" and isinstance(info.value.__cause__, ConnectionError)
    assert isinstance(info.value, Ir3deError) and info.value.decision["expert"] == "math"
    backup = FakeListChatModel(responses=["backup answer"])
    assert routed.with_fallbacks([backup]).invoke(small_tests["math"][0]).content == "backup answer"
    assert expert_of(routed.with_fallbacks([backup]).invoke(small_tests["code"][0])) == "code"


def test_empty_input_goes_to_fallback_or_raises(fresh_router, make_experts, routed):
    with pytest.raises(EmptyPromptError, match="fallback"):
        routed.invoke([SystemMessage("only a system prompt")])
    fresh_router.configure(fallback="general")
    with pytest.raises(ExpertMismatchError, match="general"):
        RouterRunnable(fresh_router, make_experts(fresh_router.experts))
    with_fallback = RouterRunnable(fresh_router, make_experts([*fresh_router.experts, "general"]))
    assert expert_of(with_fallback.invoke("   ")) == "general"
    assert expert_of(with_fallback.invoke([AIMessage("no user turn")])) == "general"


def test_from_pretrained_passes_the_id_through(saved_router, make_experts, paper_router):
    routed = RouterRunnable.from_pretrained(
        str(saved_router), make_experts(paper_router.experts), device="cpu"
    )
    assert routed.router.experts == paper_router.experts
    assert routed.route("def add(a, b): return a + b") == paper_router.route("def add(a, b): return a + b")
