"""Recipe: add an expert to a running LlamaIndex app without stopping it.

The app starts with three experts (math, code, instructions) behind a ``RoutingLLM``. While worker
threads keep answering a stream of prompts, a fourth expert (multilingual) is fitted on real text
and registered with its own LLM — one call, no restart, no lost request. Prompts in German, Spanish,
Italian, Russian and Polish that went to the wrong expert before now reach the new one.

Run: ``python cookbook/llamaindex_add_expert.py``
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from llamaindex_common import TaggedLLM, fit_router, offline_settings, suite

from ir3de import TokenEmbeddings
from ir3de_integrations.llama_index import ROUTE_KEY, RoutingLLM


def main(
    embeddings: TokenEmbeddings | None = None, prompts_per_domain: int = 20, verbose: bool = True
) -> dict:
    """Serve prompts before, during and after adding the ``multilingual`` expert; return what answered."""
    data = suite()
    router = fit_router(data, domains=["math", "code", "instructions"], embeddings=embeddings)
    llm = RoutingLLM(router, {name: TaggedLLM(name=name) for name in router.experts})
    foreign = data.test["multilingual"][:prompts_per_domain]
    mixed = [q for d in data.domains for q in data.test[d][:prompts_per_domain]]

    def answer(prompt: str) -> tuple[str, str]:
        response = llm.complete(prompt)
        return response.additional_kwargs[ROUTE_KEY]["expert"], response.text

    with offline_settings(router):
        before = Counter(answer(q)[0] for q in foreign)

        stop = threading.Event()
        during: list[tuple[str, str]] = []

        def serve() -> None:  # the running app: keeps answering until told to stop
            i = 0
            while not stop.is_set():
                during.append(answer(mixed[i % len(mixed)]))
                i += 1

        with ThreadPoolExecutor(max_workers=2) as pool:
            workers = [pool.submit(serve) for _ in range(2)]
            llm.add_expert(
                "multilingual",
                TaggedLLM(name="multilingual"),
                data.train["multilingual"][:80],
                description="short texts in German, Spanish, Italian, Russian and Polish",
            )
            stop.set()
            for w in workers:
                w.result()  # re-raises any error a worker hit

        after = Counter(answer(q)[0] for q in foreign)
    result = {
        "experts": llm.experts,
        "before": dict(before),
        "after": dict(after),
        "served_during_add": len(during),
        "during": during,
    }
    if verbose:
        print(f"multilingual prompts before the add: {dict(before)}")
        print(f"answered while the expert was being added: {len(during)} prompts, no errors")
        print(f"multilingual prompts after the add:  {dict(after)}")
    return result


if __name__ == "__main__":
    main()
