"""Two LangChain adapters on one Router each own their state (issue 27, point 5): an expert added
through one never breaks the other, and the caller's Router does not change behind its back; an
explicitly shared ExpertRegistry shares the changes."""

from __future__ import annotations

from lc_helpers import expert_of, fake_expert

from ir3de.data.datasets import load_domain
from ir3de_integrations.langchain import RouterRunnable, RoutingChatModel
from ir3de_integrations.langchain._registry import ExpertRegistry


def test_two_adapters_on_one_router_do_not_break_each_other(fresh_router, make_experts, small_tests):
    experts_before = tuple(fresh_router.experts)
    chat = RoutingChatModel(fresh_router, make_experts(fresh_router.experts))
    routed = RouterRunnable(fresh_router, make_experts(fresh_router.experts))
    medical = load_domain("medical")
    chat.add_expert("medical", fake_expert("medical"), medical[:200])
    probes = [t for t in medical[300:340] if chat.router.route(t).expert == "medical"]
    assert len(probes) >= 10
    # the runnable still routes with its own experts: no UnknownExpertError for 'medical'
    answered = [expert_of(routed.invoke(t)) for t in probes[:10]]
    assert "medical" not in answered and set(answered) <= set(experts_before)
    assert expert_of(chat.invoke(probes[0])) == "medical"
    assert fresh_router.experts == experts_before and "medical" not in routed.router.experts
    # the caller's router still routes as before (its table is untouched)
    assert fresh_router.route(probes[0]).expert in experts_before


def test_an_explicitly_shared_registry_shares_expert_changes(fresh_router, make_experts):
    registry = ExpertRegistry(fresh_router, make_experts(fresh_router.experts))
    chat = RoutingChatModel(fresh_router, registry)
    routed = RouterRunnable(fresh_router, registry)
    medical = load_domain("medical")
    chat.add_expert("medical", fake_expert("medical"), medical[:200])
    probe = next(t for t in medical[300:340] if registry.router.route(t).expert == "medical")
    assert expert_of(routed.invoke(probe)) == "medical"  # shared on purpose: both see it
