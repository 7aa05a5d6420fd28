"""ir3de as the routing strategy of a real litellm.Router, with real local OpenAI-compatible upstreams."""

from __future__ import annotations

import asyncio
import importlib

import litellm
import pytest

from ir3de_integrations.litellm import Ir3deRoutingStrategy, use_ir3de

PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many clips in total?",
    'def fibonacci(n: int) -> list[int]:\n    """Return the first n Fibonacci numbers."""\n',
    "Write a haiku about autumn. Your entire response must be in lowercase letters and contain no commas.",
    "Wer nicht wagt, der nicht gewinnt — und wer zu spät kommt, den bestraft das Leben.",
]


def _deployment(name: str, url: str, group: str = "ir3de", tag: bool = True) -> dict:
    d = {
        "model_name": group,
        "litellm_params": {"model": f"openai/{name}-model", "api_base": f"{url}/v1", "api_key": "local"},
    }
    if tag:
        d["model_info"] = {"ir3de_expert": name}
    return d


@pytest.fixture
def llm(litellm_upstreams):
    return litellm.Router(
        model_list=[_deployment(n, s.url) for n, s in litellm_upstreams.items()]
        + [_deployment("math", litellm_upstreams["math"].url, group="plain", tag=False)],
        num_retries=0,
    )


def _served_by(response) -> str:
    return response.choices[0].message.content.split(":")[0]


def test_async_completion_goes_to_the_routed_experts_deployment(llm, litellm_router_ir3de):
    strategy = use_ir3de(llm, litellm_router_ir3de)
    assert isinstance(strategy, Ir3deRoutingStrategy)

    async def run() -> list[str]:
        out = []
        for p in PROMPTS:
            r = await llm.acompletion(model="ir3de", messages=[{"role": "user", "content": p}])
            assert r.choices[0].message.content.endswith(p)
            out.append(_served_by(r))
        return out

    served = asyncio.run(run())
    expected = [litellm_router_ir3de.route(p).expert for p in PROMPTS]
    assert served == expected
    assert len(set(expected)) >= 3  # the prompts really go to different deployments


def test_sync_and_streaming(llm, litellm_router_ir3de):
    use_ir3de(llm, litellm_router_ir3de)
    r = llm.completion(model="ir3de", messages=[{"role": "user", "content": PROMPTS[1]}])
    assert _served_by(r) == litellm_router_ir3de.route(PROMPTS[1]).expert

    async def stream() -> str:
        chunks = await llm.acompletion(
            model="ir3de", messages=[{"role": "user", "content": PROMPTS[3]}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in chunks])

    assert asyncio.run(stream()) == f"{litellm_router_ir3de.route(PROMPTS[3]).expert}: {PROMPTS[3]}"


def test_untagged_groups_keep_a_plain_pick(llm, litellm_router_ir3de):
    use_ir3de(llm, litellm_router_ir3de)
    r = asyncio.run(llm.acompletion(model="plain", messages=[{"role": "user", "content": PROMPTS[3]}]))
    assert _served_by(r) == "math"  # the only deployment of the untagged group


def test_expert_without_deployment_takes_the_fallback(litellm_upstreams, litellm_router_ir3de):
    llm = litellm.Router(
        model_list=[_deployment(n, litellm_upstreams[n].url) for n in ("math", "code")], num_retries=0
    )
    use_ir3de(llm, litellm_router_ir3de, fallback="code")
    assert litellm_router_ir3de.route(PROMPTS[3]).expert == "multilingual"
    r = asyncio.run(llm.acompletion(model="ir3de", messages=[{"role": "user", "content": PROMPTS[3]}]))
    assert _served_by(r) == "code"


def test_experts_mapping_by_litellm_model(litellm_upstreams, litellm_router_ir3de):
    llm = litellm.Router(
        model_list=[_deployment(n, s.url, tag=False) for n, s in litellm_upstreams.items()], num_retries=0
    )
    use_ir3de(
        llm,
        litellm_router_ir3de,
        model_groups=["ir3de"],
        experts={n: f"openai/{n}-model" for n in litellm_upstreams},
    )
    for p in PROMPTS[:2]:
        r = asyncio.run(llm.acompletion(model="ir3de", messages=[{"role": "user", "content": p}]))
        assert _served_by(r) == litellm_router_ir3de.route(p).expert


def test_unfitted_router_is_refused(llm):
    from ir3de import Router
    from ir3de.errors import Ir3deError

    with pytest.raises(Ir3deError, match="not fitted"):
        use_ir3de(llm, Router(device="cpu"))


def test_cookbook_recipe(cookbook_path, smollm2):
    records = importlib.import_module("litellm_routing_strategy").main(
        embeddings=smollm2, prompts_per_domain=3, verbose=False
    )
    assert [r["mode"] for r in records[-2:]] == ["completion", "stream"]
    assert len(records) == 11
    assert sum(r["expert"] == r["label"] for r in records) >= 9
