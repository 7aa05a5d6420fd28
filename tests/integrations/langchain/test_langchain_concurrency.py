"""Experts come and go while many threads and coroutines invoke the RouterRunnable."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.runnables import RunnableLambda

from ir3de.data.datasets import load_domain
from ir3de.errors import ExpertError
from ir3de_integrations.langchain import RouterRunnable


def _expert(name: str, generation: int) -> RunnableLambda:
    return RunnableLambda(
        lambda _input: {"expert": name, "generation": generation}, name=f"{name}#{generation}"
    )


@pytest.fixture(scope="module")
def medical_texts():
    return load_domain("medical")[:60]


def test_add_remove_update_under_load(fresh_router, small_tests, medical_texts):
    generation = iter(range(10_000))
    lifetimes: dict[tuple[str, int], list[float]] = {}  # (name, generation) -> [registered_from, removed_at]

    def make(name: str):
        gen = next(generation)
        lifetimes[(name, gen)] = [time.monotonic(), float("inf")]
        return _expert(name, gen)

    routed = RouterRunnable(
        fresh_router, {name: make(name) for name in fresh_router.experts}, return_decision=True
    )
    live = {name: gen for (name, gen) in lifetimes}
    prompts = [t for texts in small_tests.values() for t in texts[:8]] + medical_texts[:8]
    stop = threading.Event()
    answers: list[tuple[float, float, dict, str]] = []
    errors: list[BaseException] = []

    def record(start: float, out: dict) -> None:
        answers.append((start, time.monotonic(), out["output"], out["decision"].expert))

    def reader(offset: int) -> None:
        i = offset
        while not stop.is_set():
            try:
                if i % 5 == 0:
                    start = time.monotonic()
                    for out in routed.batch(prompts[i % 20 : i % 20 + 6]):
                        record(start, out)
                else:
                    start = time.monotonic()
                    record(start, routed.invoke(prompts[i % len(prompts)]))
            except BaseException as e:
                errors.append(e)
            i += 1

    async def async_readers() -> None:
        async def one(offset: int) -> None:
            i = offset
            while not stop.is_set():
                try:
                    start = time.monotonic()
                    if i % 4 == 0:
                        for out in await routed.abatch(prompts[i % 30 : i % 30 + 5]):
                            record(start, out)
                    else:
                        record(start, await routed.ainvoke(prompts[i % len(prompts)]))
                except BaseException as e:
                    errors.append(e)
                i += 1
                await asyncio.sleep(0)

        await asyncio.gather(*(one(k) for k in range(8)))

    def writer() -> None:
        try:
            for _cycle in range(2):
                routed.add_expert("medical", make("medical"), medical_texts[:40])
                live["medical"] = max(g for (n, g) in lifetimes if n == "medical")
                routed.update_expert("medical", medical_texts[40:])
                gen = live["instructions"]
                routed.remove_expert("instructions")
                lifetimes[("instructions", gen)][1] = time.monotonic()
                routed.add_expert("instructions", make("instructions"), small_tests["instructions"][:30])
                live["instructions"] = max(g for (n, g) in lifetimes if n == "instructions")
                gen = live["medical"]
                routed.remove_expert("medical")
                lifetimes[("medical", gen)][1] = time.monotonic()
                with pytest.raises(ExpertError):  # a duplicate name is refused and changes nothing
                    routed.add_expert("code", make("code"), ["x"])
        except BaseException as e:
            errors.append(e)
        finally:
            stop.set()

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(reader, k) for k in range(4)]
        futures.append(pool.submit(asyncio.run, async_readers()))
        futures.append(pool.submit(writer))
        for f in futures:
            f.result(timeout=300)

    assert errors == []
    assert len(answers) > 100
    answered_by = {out["expert"] for _, _, out, _ in answers}
    assert {"math", "code", "multilingual", "medical"} <= answered_by  # the runtime expert got traffic
    for start, end, out, decided in answers:
        assert out["expert"] == decided  # the runnable is the one the decision named
        registered, removed = lifetimes[(out["expert"], out["generation"])]
        assert registered <= end and start <= removed  # ...and it was registered during the call
    assert routed.router.experts == ("math", "code", "multilingual", "instructions")
    assert sorted(routed.experts) == sorted(routed.router.experts)
