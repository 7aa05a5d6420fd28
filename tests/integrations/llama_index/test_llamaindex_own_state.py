"""RoutingLLM and Ir3deSelector own their router (issue 27, point 5): their add_expert/remove_expert/
feedback/adapt never change the caller's Router or another adapter built on it."""

from __future__ import annotations

from llama_index.core.llms import MockLLM
from llama_index.core.tools import ToolMetadata

from ir3de.data.datasets import load_domain
from ir3de_integrations.llama_index import Ir3deSelector, RoutingLLM


def test_two_routing_llms_on_one_router_own_their_experts(paper_router):
    experts_before = tuple(paper_router.experts)
    table_before = paper_router.state.table.logits.copy()
    first = RoutingLLM(paper_router, {n: MockLLM() for n in paper_router.experts})
    second = RoutingLLM(paper_router, {n: MockLLM() for n in paper_router.experts})
    medical = load_domain("medical")
    first.add_expert("medical", MockLLM(), medical[:200])
    assert "medical" in first.router.experts and "medical" not in second.router.experts
    probe = next(t for t in medical[300:340] if first.router.route(t).expert == "medical")
    second.complete(probe)  # routes with its own experts, no UnknownExpertError
    assert paper_router.experts == experts_before and (paper_router.state.table.logits == table_before).all()


def test_selector_learns_into_its_own_router(paper_router):
    """Ir3deSelector learned into the caller's Router while every other adapter owned a copy."""
    experts_before = tuple(paper_router.experts)
    table_before = paper_router.state.table.logits.copy()
    selector = Ir3deSelector(paper_router)
    other = Ir3deSelector(paper_router)
    llm = RoutingLLM(paper_router, {n: MockLLM() for n in paper_router.experts})
    assert selector.router is not paper_router
    choices = [ToolMetadata(name=n, description=n) for n in paper_router.experts]
    medical = load_domain("medical")
    for query in medical[:5]:
        selector.select(choices, query)
    assert selector.adapt().prompts == 5
    result = selector.select(choices, "Integrate x dx from 0 to 1")
    assert selector.feedback(result, expert="math").traffic_prompts == 1
    selector.router.add_expert("medical", medical[:200])  # grow it through the selector
    assert "medical" in selector.router.experts
    probe = next(t for t in medical[300:340] if selector.router.route(t).expert == "medical")
    grown = [*choices, ToolMetadata(name="medical", description="medical")]
    assert selector.router.experts[selector.select(grown, probe).ind] == "medical"
    # nobody else saw any of it: the caller's router, a second selector, a RoutingLLM on the same router
    for router in (paper_router, other.router, llm.router):
        assert router.experts == experts_before
        assert router.traffic == {} and router.adaptation.num_prompts == 0
        assert (router.state.table.logits == table_before).all()
    other.select(choices, probe)  # its own four choices still match its own experts
    assert selector.forget_traffic() is selector and selector.router.traffic == {}
