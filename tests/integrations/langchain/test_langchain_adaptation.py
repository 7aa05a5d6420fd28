"""Adaptation from the LangChain faces: ``.adapt()`` learns the prompts they routed recently (a chat's
last user turn), each once, exactly as ``Router.adapt`` on the same texts; ``forget_adaptation`` is exact."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from lc_helpers import expert_of

from ir3de import Router
from ir3de.data.datasets import load_domain
from ir3de.errors import InvalidInputError
from ir3de_integrations.langchain import RouterRunnable, RoutingChatModel


@pytest.fixture(scope="module")
def served() -> list[str]:
    return load_domain("medical")[:40]  # prompts from outside the corpora


def _decisions(router, probes):
    return [(d.expert, d.confidence) for d in (router.route(p) for p in probes)]


def _copy(saved_router, smollm2):
    return Router.from_pretrained(saved_router, embeddings=smollm2, device="cpu", progress=False)


def test_runnable_adapts_to_its_recent_calls_once_each(
    fresh_router, make_experts, served, saved_router, smollm2
):
    app = RouterRunnable(fresh_router, make_experts(fresh_router.experts))
    caller, fresh_router = fresh_router, app.registry.router  # the adapter adapts its own copy
    probes = served[30:]
    before = _decisions(fresh_router, probes)
    with pytest.raises(InvalidInputError, match="no routed call to adapt on"):
        app.adapt()
    app.batch(served[:10])
    report = app.adapt()
    assert report.prompts == 10 and fresh_router.adaptation.num_prompts == 10
    assert caller.adaptation.num_prompts == 0  # the caller's Router never changes behind its back
    with pytest.raises(InvalidInputError, match="were all adapted on already"):
        app.adapt()  # nothing new: the same calls are never learned twice
    for prompt in served[10:15]:
        app.invoke(prompt)
    assert app.adapt(rounds=1).prompts == 5  # options reach Router.adapt
    reference = _copy(saved_router, smollm2)
    reference.adapt(served[:15], rounds=1)
    assert fresh_router.adaptation.to_dict() == reference.adaptation.to_dict()
    assert _decisions(fresh_router, probes) == _decisions(reference, probes) != before
    # the next call is routed by the adapted router
    assert expert_of(app.invoke(probes[0])) == fresh_router.route(probes[0]).expert
    assert app.forget_adaptation() is app
    assert _decisions(fresh_router, probes) == before


def test_chat_model_adapts_to_the_last_user_turns(fresh_router, make_experts, served, saved_router, smollm2):
    chat = RoutingChatModel(fresh_router, make_experts(fresh_router.experts))
    caller, fresh_router = fresh_router, chat.registry.router  # the adapter adapts its own copy
    for prompt in served[:8]:
        chat.invoke(
            [SystemMessage("Be brief."), HumanMessage("hello"), AIMessage("hi"), HumanMessage(prompt)]
        )
    assert chat.adapt().prompts == 8
    reference = _copy(saved_router, smollm2)
    reference.adapt(served[:8])
    assert fresh_router.adaptation.to_dict() == reference.adaptation.to_dict()
    # explicit prompts, then forget: labelled traffic stays
    chat.feedback(prompt=served[20], expert="instructions")
    chat.adapt(served[9:12])
    assert fresh_router.adaptation.num_prompts == 11
    assert caller.adaptation.num_prompts == 0  # the caller's Router never changes behind its back
    chat.forget_adaptation()
    assert fresh_router.adaptation.num_prompts == 0 and fresh_router.traffic["instructions"].num_prompts == 1
