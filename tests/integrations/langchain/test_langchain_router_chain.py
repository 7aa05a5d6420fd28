"""Ir3deRouterChain as the router of langchain-classic's MultiRouteChain."""

from __future__ import annotations

import pytest
from lc_helpers import expert_of, fake_expert

pytest.importorskip("langchain_classic")

from langchain_classic.chains import TransformChain
from langchain_classic.chains.router import MultiRouteChain

from ir3de_integrations.langchain import Ir3deRouterChain


def _destination(name: str) -> TransformChain:
    llm = fake_expert(name)
    return TransformChain(
        input_variables=["input"],
        output_variables=["text"],
        transform=lambda inputs: {"text": llm.invoke(inputs["input"]).content},
    )


@pytest.fixture
def chain(paper_router):
    return MultiRouteChain(
        router_chain=Ir3deRouterChain(router=paper_router, threshold=0.6),
        destination_chains={name: _destination(name) for name in paper_router.experts},
        default_chain=_destination("general"),
    )


def test_confident_prompts_go_to_their_expert_others_to_default(chain, paper_router, small_tests):
    texts = [t for texts in small_tests.values() for t in texts[:6]]
    for text in texts:
        decision = paper_router.route(text)
        expected = decision.expert if decision.confidence >= 0.6 else "general"
        assert expert_of(chain.invoke({"input": text})["text"]) == expected
    routed = [paper_router.route(t).confidence >= 0.6 for t in texts]
    assert any(routed) and not all(routed)  # both paths are exercised on real prompts


async def test_route_outputs_and_async(paper_router, small_tests):
    router_chain = Ir3deRouterChain(router=paper_router, threshold=0.0)
    text = small_tests["code"][0]
    out = router_chain.invoke({"input": text})
    assert out["destination"] == paper_router.route(text).expert == "code"
    assert out["next_inputs"] == {"input": text} and out["decision"]["expert"] == "code"
    route = await router_chain.aroute({"input": text})
    assert route.destination == "code"
    assert router_chain.route({"input": "   "}).destination is None  # no countable token → default
    assert router_chain.destinations == list(paper_router.experts)


def test_router_threshold_and_fallback_are_the_default(fresh_router, small_tests):
    text = small_tests["math"][0]
    confidence = fresh_router.route(text).confidence
    assert 0 < confidence < 1
    chain = Ir3deRouterChain(router=fresh_router)
    assert chain.route({"input": text}).destination == "math"
    fresh_router.configure(fallback="general", threshold=(confidence + 1) / 2)  # the router falls back
    assert chain.route({"input": text}).destination is None
    assert Ir3deRouterChain(router=fresh_router, threshold=0.0).route({"input": text}).destination is None


def test_from_pretrained(saved_router, paper_router, small_tests):
    chain = Ir3deRouterChain.from_pretrained(str(saved_router), threshold=0.0, device="cpu")
    text = small_tests["multilingual"][0]
    assert chain.route({"input": text}).destination == paper_router.route(text).expert
