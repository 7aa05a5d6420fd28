"""Ir3deDecisionModel: a LangChain BaseDecisionModel whose answers are the router's decisions."""

from __future__ import annotations

import asyncio
import math

import pytest

pytest.importorskip("langchain_core.decisions")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.decisions import Box, Choice, Noul, Score
from langchain_core.messages import AIMessage, HumanMessage

from ir3de.errors import EmptyPromptError, InvalidInputError, NotFittedError, UnknownExpertError
from ir3de_integrations.langchain import Ir3deDecisionModel


@pytest.fixture(scope="module")
def model(paper_router):
    return Ir3deDecisionModel(paper_router)


@pytest.fixture(scope="module")
def prompts(small_tests):
    return [text for texts in small_tests.values() for text in texts[:5]]


def _all(router):
    return Choice(
        instructions="Which expert should answer?", criteria={n: f"{n} requests" for n in router.experts}
    )


def test_choice_over_every_expert_is_the_routers_decision(model, paper_router, prompts):
    for text in prompts:
        answer = model.invoke({"state": text, "questions": {"route": _all(paper_router)}}).choices["route"]
        decision = paper_router.route(text)
        assert answer.choice == decision.expert == decision.top_expert
        assert answer.probabilities == pytest.approx(decision.scores)
        assert answer.confidence == pytest.approx(decision.confidence)


def test_a_subset_of_experts_is_renormalised_over_the_subset(model, paper_router, prompts):
    labels = ["code", "multilingual"]
    question = Choice(instructions="code or language?", criteria=dict.fromkeys(labels, ""))
    for text in prompts:
        answer = model.invoke({"state": text, "questions": {"q": question}}).choices["q"]
        scores = paper_router.route(text).scores
        mass = scores["code"] + scores["multilingual"]
        if mass == 0:
            assert answer.probabilities == {"code": 0.5, "multilingual": 0.5}
            continue
        expected = {label: scores[label] / mass for label in labels}
        assert answer.probabilities == pytest.approx(expected)
        assert math.isclose(sum(answer.probabilities.values()), 1.0)
        best = (
            "code" if expected["code"] >= expected["multilingual"] else "multilingual"
        )  # ties: router order
        assert answer.choice == best and answer.confidence == pytest.approx(expected[best])


def test_a_label_the_router_does_not_know_is_a_typed_error_naming_the_experts(model, paper_router):
    question = Choice(instructions="x", criteria={"math": "", "poetry": ""})
    with pytest.raises(
        UnknownExpertError, match=r"\['poetry'\].*\['math', 'code', 'instructions', 'multilingual'\]"
    ):
        model.invoke({"state": "2 + 2?", "questions": {"route": question}})


def test_noul_is_the_probability_of_one_expert(model, paper_router, prompts):
    for text in prompts[:8]:
        scores = paper_router.route(text).scores
        answers = model.invoke(
            {
                "state": text,
                "questions": {
                    "code": Noul(instructions="Is this a coding request?"),
                    "is_math": Noul(instructions="math"),
                },
            }
        ).nouls
        assert answers["code"].noul == pytest.approx(scores["code"])
        assert answers["is_math"].noul == pytest.approx(scores["math"])


def test_a_noul_without_an_expert_and_other_question_types_are_typed_errors(model):
    with pytest.raises(UnknownExpertError, match="question id or as its instructions"):
        model.invoke({"state": "hi", "questions": {"urgent": Noul(instructions="Is it urgent?")}})
    for question in (Score(instructions="How hard?", criteria=["easy", "hard"]), Box(instructions="a cat")):
        with pytest.raises(InvalidInputError, match="Choice questions"):
            model.invoke({"state": "hi", "questions": {"q": question}})


def test_state_as_a_message_a_conversation_or_a_dict(model, paper_router, small_tests):
    question = {"route": _all(paper_router)}
    text = small_tests["code"][0]
    as_message = model.invoke({"state": HumanMessage(text), "questions": question}).choices["route"]
    assert as_message.choice == paper_router.route(text).expert
    chat = [HumanMessage(text), AIMessage("def f(): ..."), HumanMessage("thanks, why does it work?")]
    routed = paper_router.route_conversation(
        [("user", text), ("assistant", "def f(): ..."), ("user", chat[2].text)]
    )
    for state in (chat, {"messages": chat}):
        answer = model.invoke({"state": state, "questions": question}).choices["route"]
        assert answer.choice == routed.expert
        assert answer.probabilities == pytest.approx(routed.scores)
    with pytest.raises(InvalidInputError, match="'messages' key"):
        model.invoke({"state": {"text": text}, "questions": question})


def test_the_previous_expert_of_a_conversation_comes_from_the_last_routed_answer(
    model, paper_router, small_tests
):
    chat = [
        HumanMessage(small_tests["code"][0]),
        AIMessage("done", response_metadata={"ir3de": {"expert": "code"}}),
        HumanMessage("thanks, why does it work?"),
    ]
    turns = [("user", chat[0].text), ("assistant", "done"), ("user", chat[2].text)]
    expected = paper_router.route_conversation(turns, previous_expert="code")
    answer = model.invoke({"state": chat, "questions": {"route": _all(paper_router)}}).choices["route"]
    assert answer.probabilities == pytest.approx(expected.scores)


def test_async_and_batch_equal_invoke(model, paper_router, prompts):
    requests = [{"state": text, "questions": {"route": _all(paper_router)}} for text in prompts[:12]]
    sync = [model.invoke(r).choices["route"] for r in requests]
    batched = [r.choices["route"] for r in model.batch(requests)]

    async def run_all():
        return await asyncio.gather(*(model.ainvoke(r) for r in requests))

    asynced = [r.choices["route"] for r in asyncio.run(run_all())]
    abatched = [r.choices["route"] for r in asyncio.run(model.abatch(requests))]
    assert sync == batched == asynced == abatched


def test_runs_are_traced_as_ir3de_with_no_tokens(model, paper_router):
    class Capture(BaseCallbackHandler):
        def __init__(self):
            self.metadata = []

        def on_chain_start(self, serialized, inputs, *, metadata=None, **kwargs):
            self.metadata.append(dict(metadata or {}))

    capture = Capture()
    response = model.invoke(
        {"state": "def add(a, b):", "questions": {"route": _all(paper_router)}}, {"callbacks": [capture]}
    )
    assert capture.metadata and capture.metadata[0]["ls_provider"] == "ir3de"
    assert capture.metadata[0]["ls_model_name"] == "ir3de"
    assert response.model == "ir3de" and response.usage["total_tokens"] == 0


def test_empty_state_raises_without_a_fallback_and_is_uniform_with_one(
    model, paper_router, saved_router, smollm2
):
    question = {"route": _all(paper_router)}
    with pytest.raises(EmptyPromptError):
        model.invoke({"state": "   ", "questions": question})
    from ir3de import Router

    router = Router.from_pretrained(saved_router, embeddings=smollm2, device="cpu", progress=False)
    router.configure(fallback="math")
    answer = Ir3deDecisionModel(router).invoke({"state": "   ", "questions": question}).choices["route"]
    assert answer.probabilities == dict.fromkeys(router.experts, 0.25)


def test_an_unfitted_router_is_refused(smollm2):
    from ir3de import Router

    with pytest.raises(NotFittedError):
        Ir3deDecisionModel(Router(smollm2, device="cpu"))
