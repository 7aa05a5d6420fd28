"""RoutingLLM owns its router (issue 27, point 5): its add_expert/remove_expert/feedback never change
the caller's Router or another RoutingLLM built on it."""

from __future__ import annotations

from llama_index.core.llms import MockLLM

from ir3de.data.datasets import load_domain
from ir3de_integrations.llama_index import RoutingLLM


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
