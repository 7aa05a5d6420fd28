"""Adaptation from the LlamaIndex adapters: ``RoutingLLM.adapt()`` and ``Ir3deSelector.adapt()`` learn the
prompts they routed recently, each once, exactly as ``Router.adapt`` on the same texts."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.tools import ToolMetadata
from llamaindex_helpers import TagLLM

from ir3de import Router
from ir3de.data.datasets import load_domain
from ir3de.errors import InvalidInputError
from ir3de_integrations.llama_index import Ir3deSelector, RoutingLLM


@pytest.fixture(scope="module")
def saved(paper_router, tmp_path_factory):
    return paper_router.save_pretrained(tmp_path_factory.mktemp("li-adapt") / "router")


@pytest.fixture(scope="module")
def served() -> list[str]:
    return load_domain("medical")[:40]


def _router(saved, smollm2):
    return Router.from_pretrained(saved, embeddings=smollm2, device="cpu", progress=False)


def _decisions(router, probes):
    return [(d.expert, d.confidence) for d in (router.route(p) for p in probes)]


def test_routing_llm_adapts_to_its_recent_calls(saved, smollm2, served):
    router = _router(saved, smollm2)
    before = _decisions(router, served[30:])
    llm = RoutingLLM(router, {n: TagLLM(tag=n) for n in router.experts})
    caller, router = router, llm.router  # the LLM adapts its own copy
    for prompt in served[:6]:
        llm.complete(prompt)
    llm.chat([ChatMessage(role=MessageRole.USER, content="hello"),
              ChatMessage(role=MessageRole.ASSISTANT, content="hi"),
              ChatMessage(role=MessageRole.USER, content=served[6])])  # fmt: skip
    assert llm.adapt().prompts == 7
    assert caller.adaptation.num_prompts == 0  # the caller's Router never changes behind its back
    with pytest.raises(InvalidInputError, match="no routed call to adapt on"):
        llm.adapt()
    reference = _router(saved, smollm2)
    reference.adapt(served[:7])
    assert router.adaptation.to_dict() == reference.adaptation.to_dict()
    assert _decisions(router, served[30:]) == _decisions(reference, served[30:])
    assert llm.forget_adaptation() is llm
    assert _decisions(router, served[30:]) == before


def test_selector_adapts_to_its_recent_selections(saved, smollm2, served):
    router = _router(saved, smollm2)
    selector = Ir3deSelector(router)
    caller, router = router, selector.router  # the selector adapts its own copy
    choices = [ToolMetadata(name=d, description=d) for d in router.experts]
    for query in served[:5]:
        selector.select(choices, query)
    assert selector.adapt().prompts == 5
    selector.select(choices, served[5])
    assert selector.adapt(max_prompts=100).prompts == 1
    reference = _router(saved, smollm2)
    reference.adapt(served[:6], max_prompts=100)
    assert router.adaptation.to_dict() == reference.adaptation.to_dict()
    assert caller.adaptation.num_prompts == 0  # the caller's Router never changes behind its back
    assert selector.forget_adaptation() is selector and router.adaptation.num_prompts == 0
