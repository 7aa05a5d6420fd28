"""Recipe: a LangChain app that learns from corrections while it serves.

Run: ``python cookbook/langchain_feedback_loop.py``

A ``RoutingChatModel`` is fitted on benchmark corpora (the train side of the
``user-prompts-other-benchmarks`` cross-source check: GSM8K, HumanEval, IFEval, fortunes) but serves
*user* prompts from other sources (Arena-Hard math and coding prompts, AIME, IFBench). Some land on
the wrong expert. Each served answer carries its run id (``reply.response_metadata["ir3de"]["run_id"]``);
when the app learns that a call was misrouted — here a labelled stream stands in for users' thumbs-down
— it reports the correct expert with ``chat.feedback(reply, expert=...)``. The router learns the
prompt as traffic (``Router.learn``: its own additive block, weighted by ``traffic_weight``) and the
very next call is routed with it. Accuracy is measured on held-out user prompts the app never got
feedback on, before and after; ``forget_traffic()`` gives the original router back exactly.

The experts are local fake chat models (no LLM, no network); the embeddings are the real SmolLM2 ones.
"""

from __future__ import annotations

import itertools
import time

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from ir3de import Router, TokenEmbeddings
from ir3de.data.datasets import load_cross_source
from ir3de_integrations.langchain import RoutingChatModel

CHECK = "user-prompts-other-benchmarks"


def expert(name: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.cycle([f"{name} answering"]))


def accuracy(router: Router, labelled: dict[str, list[str]]) -> float:
    """Share of ``labelled`` prompts the router sends to their own expert."""
    total = correct = 0
    for label, prompts in labelled.items():
        correct += sum(d.expert == label for d in router.route_batch(prompts))
        total += len(prompts)
    return correct / total


def main(
    embeddings: TokenEmbeddings | None = None,
    *,
    per_domain: int | None = 200,
    served_per_domain: int = 40,
    seed: int = 0,
) -> dict:
    suite = load_cross_source(CHECK, seed=seed)
    router = Router(embeddings or TokenEmbeddings.default(), progress=False)  # the library defaults
    router.fit({name: texts[:per_domain] for name, texts in suite.train.items()})
    chat = RoutingChatModel(router, {name: expert(name) for name in router.experts})
    router = chat.registry.router  # the chat model learns into its own copy; yours never changes

    # the test side: the first prompts of each expert are served (and corrected), the rest held out
    served = [(label, p) for label, texts in suite.test.items() for p in texts[:served_per_domain]]
    served = [served[i] for i in sorted(range(len(served)), key=lambda i: (i % served_per_domain, i))]
    held_out = {label: texts[served_per_domain:] for label, texts in suite.test.items()}
    before = accuracy(router, held_out)
    print(f"{CHECK}: fitted on {sum(len(t[:per_domain]) for t in suite.train.values())} corpus texts")
    print(
        f"held-out accuracy before feedback: {before:.3f} ({sum(map(len, held_out.values()))} user prompts)"
    )

    corrections = []
    seconds = 0.0
    for label, prompt in served:  # the app serves; a user flags each wrong answer with the right expert
        reply = chat.invoke(prompt)
        if reply.response_metadata["ir3de"]["expert"] != label:
            start = time.perf_counter()
            corrections.append(chat.feedback(reply, expert=label))
            seconds += time.perf_counter() - start
    after = accuracy(router, held_out)
    fixed = sum(c.fixed for c in corrections)
    print(
        f"served {len(served)} prompts, {len(corrections)} misrouted and corrected by run id "
        f"({fixed} of them now route right; {1000 * seconds / max(len(corrections), 1):.0f} ms per feedback)"
    )
    print(f"held-out accuracy after {len(corrections)} corrections: {after:.3f}")
    print("traffic learned:", {n: s.num_prompts for n, s in router.traffic.items()})

    chat.forget_traffic()
    forgotten = accuracy(router, held_out)
    print(f"after forget_traffic(): {forgotten:.3f} (the original router)")
    return {
        "before": before,
        "after": after,
        "forgotten": forgotten,
        "served": len(served),
        "corrections": corrections,
        "held_out": sum(map(len, held_out.values())),
    }


if __name__ == "__main__":
    main()
