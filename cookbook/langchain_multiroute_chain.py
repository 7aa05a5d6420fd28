"""Recipe: ir3de as the router of a classic ``MultiRouteChain`` (langchain-classic).

Run: ``python cookbook/langchain_multiroute_chain.py``

``Ir3deRouterChain`` replaces an LLM router chain: the destination is the expert name, or the
default chain when the router's confidence is below ``threshold`` — no LLM call to route.
"""

from __future__ import annotations

import itertools

from langchain_classic.chains import TransformChain
from langchain_classic.chains.router import MultiRouteChain
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de.data.datasets import load_suite
from ir3de_integrations.langchain import Ir3deRouterChain


def llm_chain(name: str) -> TransformChain:
    """A destination chain around a (fake) chat model; any classic Chain works here."""
    llm = GenericFakeChatModel(messages=itertools.cycle([f"{name}: answered"]))
    return TransformChain(
        input_variables=["input"],
        output_variables=["text"],
        transform=lambda inputs: {"text": llm.invoke(inputs["input"]).content},
    )


def main(embeddings: TokenEmbeddings | None = None, per_domain: int = 60, threshold: float = 0.6) -> dict:
    suite = load_suite("reasoning4", seed=0)
    router = Router(embeddings or TokenEmbeddings.default(), config=RouterConfig.paper(), progress=False)
    router.fit({name: texts[:per_domain] for name, texts in suite.train.items()})

    chain = MultiRouteChain(
        router_chain=Ir3deRouterChain(router=router, threshold=threshold),
        destination_chains={name: llm_chain(name) for name in router.experts},
        default_chain=llm_chain("general"),
    )
    counts: dict[str, int] = {}
    for domain, texts in suite.test.items():
        for text in texts[:5]:
            who = chain.invoke({"input": text})["text"].split(":")[0]
            counts[who] = counts.get(who, 0) + 1
            print(f"{domain:>12} → {who:<12} {text[:50]!r}")
    print(f"answers per destination (threshold {threshold}): {counts}")
    return {"counts": counts}


if __name__ == "__main__":
    main()
