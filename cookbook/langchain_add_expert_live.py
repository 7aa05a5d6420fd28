"""Recipe: add an expert to a LangChain app while it is serving requests.

Run: ``python cookbook/langchain_add_expert_live.py``

Worker threads keep invoking a ``RouterRunnable`` with health questions. Meanwhile a ``medical``
expert is registered with ``add_expert(name, llm, texts)``: its token statistics are counted and
added to the router (no refit), and requests start reaching it — no restart, no failed request.
"""

from __future__ import annotations

import itertools
import threading
import time

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de.data.datasets import load_domain, load_suite
from ir3de_integrations.langchain import RouterRunnable


def expert(name: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.cycle([f"{name} answering"]))


def main(embeddings: TokenEmbeddings | None = None, per_domain: int = 60, workers: int = 3) -> dict:
    suite = load_suite("reasoning4", seed=0)
    router = Router(embeddings or TokenEmbeddings.default(), config=RouterConfig.paper(), progress=False)
    router.fit({name: texts[:per_domain] for name, texts in suite.train.items()})
    app = RouterRunnable(router, {name: expert(name) for name in router.experts})

    medical = load_domain("medical")
    questions = medical[300:340]
    log: list[tuple[float, str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def serve(offset: int) -> None:
        for i in itertools.count(offset, workers):
            if stop.is_set():
                return
            try:
                log.append((time.monotonic(), app.invoke(questions[i % len(questions)]).content.split()[0]))
            except BaseException as e:
                errors.append(e)

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    added_at = time.monotonic()
    app.add_expert("medical", expert("medical"), medical[:200], description="health questions")
    ready_at = time.monotonic()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()

    before = [who for at, who in log if at < added_at]
    after = [who for at, who in log if at > ready_at]
    share = after.count("medical") / max(len(after), 1)
    print(f"before add_expert: {len(before)} requests, experts used {sorted(set(before))}")
    print(f"add_expert('medical') took {ready_at - added_at:.2f} s while serving")
    print(f"after: {len(after)} requests, {share:.0%} answered by 'medical'; errors: {len(errors)}")
    return {
        "before": before,
        "after": after,
        "errors": errors,
        "experts": list(app.registry.router.experts),
    }  # the runnable owns its copy


if __name__ == "__main__":
    main()
