"""RoutingLLM: every LLM method (chat/complete × sync/async × streaming), metadata, runtime experts, concurrency."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llamaindex_helpers import RouteEventCollector, TagLLM, tag_of

from ir3de import Router, RouterConfig
from ir3de.errors import ExpertError, ExpertMismatchError, InvalidInputError, UnknownExpertError
from ir3de.routing.conversation import ConversationSettings
from ir3de_integrations.llama_index import ROUTE_KEY, RoutingLLM, dispatcher, route_payload


def _llms(names, **kwargs):
    return {n: TagLLM(tag=n, **kwargs) for n in names}


def _prompts(small_tests, n=2):
    return [q for texts in small_tests.values() for q in texts[:n]]


def _user(text):
    return [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.USER, content=text),
    ]


def test_every_method_reaches_the_routed_llm(paper_router, small_tests):
    llm = RoutingLLM(paper_router, _llms(paper_router.experts))
    collect = RouteEventCollector(events=[])
    dispatcher.add_event_handler(collect)
    try:
        for prompt in _prompts(small_tests):
            decision = paper_router.route(prompt)
            expected = route_payload(decision, llm.top_tokens)

            def check(response, decision=decision, expected=expected, partial=False):
                is_completion = hasattr(response, "text")
                assert (
                    partial
                    or tag_of(response.text if is_completion else response.message.content) == decision.expert
                )
                route = response.additional_kwargs[ROUTE_KEY]
                assert {k: route[k] for k in expected} == expected  # chat routes add the conversation's keys
                own = response.additional_kwargs if is_completion else response.message.additional_kwargs
                assert own["answered_by"] == decision.expert  # the expert's own kwargs are kept

            sync_text = llm.complete(prompt)
            check(sync_text)
            check(llm.chat(_user(prompt)))
            chunks = list(llm.stream_complete(prompt))
            assert len(chunks) > 1
            for c in chunks:
                check(c, partial=True)
            check(chunks[-1])
            assert "".join(c.delta for c in chunks) == sync_text.text
            chat_chunks = list(llm.stream_chat(_user(prompt)))
            for c in chat_chunks:
                check(c, partial=True)
            check(chat_chunks[-1])
            assert chat_chunks[-1].message.content == llm.chat(_user(prompt)).message.content

            async def run_async(prompt=prompt, check=check, sync_text=sync_text):
                check(await llm.acomplete(prompt))
                check(await llm.achat(_user(prompt)))
                achunks = [c async for c in await llm.astream_complete(prompt)]
                for c in achunks:
                    check(c, partial=True)
                check(achunks[-1])
                assert "".join(c.delta for c in achunks) == sync_text.text
                achat_chunks = [c async for c in await llm.astream_chat(_user(prompt))]
                for c in achat_chunks:
                    check(c, partial=True)
                check(achat_chunks[-1])

            asyncio.run(run_async())
    finally:
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not collect]
    prompts = _prompts(small_tests)
    assert len(collect.events) == 8 * len(prompts) + len(prompts)  # 8 methods + the extra chat per prompt
    assert {e.component for e in collect.events} == {"llm"}
    assert {e.query for e in collect.events} == set(prompts)


def test_llm_predict_and_completion_helpers(paper_router, small_tests):
    """LlamaIndex's higher-level helpers (predict / stream) go through the routed methods."""
    from llama_index.core.prompts import PromptTemplate

    llm = RoutingLLM(paper_router, _llms(paper_router.experts))
    prompt = small_tests["code"][0]
    expert = paper_router.route(prompt).expert
    assert tag_of(llm.predict(PromptTemplate("{q}"), q=prompt)) == expert
    assert tag_of("".join(llm.stream(PromptTemplate("{q}"), q=prompt))) == expert
    # each expert formats prompts its own way (predict passes formatted=True for the routing LLM's format)
    own_format = {
        n: TagLLM(tag=n, completion_to_prompt=lambda p, n=n: f"{p} [{n} format]")
        for n in paper_router.experts
    }
    formatting = RoutingLLM(paper_router, own_format)
    assert formatting.predict(PromptTemplate("{q}"), q=prompt).endswith(f"[{expert} format]")
    assert formatting.complete(prompt).text.endswith(f"[{expert} format]")
    assert "".join(c.delta for c in formatting.stream_complete(prompt)).endswith(f"[{expert} format]")
    # a routing LLM with its own completion_to_prompt formats once, and experts take it as formatted
    wrapped = RoutingLLM(paper_router, own_format, completion_to_prompt=lambda p: f"{p} [router format]")
    assert wrapped.predict(PromptTemplate("{q}"), q=prompt).endswith("[router format]")


def test_route_on_legacy_values(paper_router, small_tests):
    math_q, code_q = small_tests["math"][0], small_tests["code"][0]
    history = [
        ChatMessage(role=MessageRole.USER, content=code_q),
        ChatMessage(role=MessageRole.ASSISTANT, content="Here it is."),
        ChatMessage(role=MessageRole.USER, content=math_q),
    ]
    pairs = [("user", code_q), ("assistant", "Here it is."), ("user", math_q)]
    last = RoutingLLM(paper_router, _llms(paper_router.experts), route_on="last_user")
    assert last.routing_text(history) == math_q
    assert tag_of(last.chat(history).message.content) == paper_router.route(math_q).expert
    users = RoutingLLM(paper_router, _llms(paper_router.experts), route_on="user")
    expected = paper_router.route_conversation(pairs, settings=ConversationSettings.whole(assistant_weight=0))
    assert tag_of(users.chat(history).message.content) == expected.expert
    everything = RoutingLLM(paper_router, _llms(paper_router.experts), route_on="all")
    assert everything.route_chat(history) == paper_router.route_conversation(
        pairs, settings=ConversationSettings.whole()
    )
    with pytest.raises(InvalidInputError, match="conversation=ConversationSettings"):
        RoutingLLM(paper_router, _llms(paper_router.experts), route_on="first")


def test_metadata_is_conservative(paper_router):
    llms = {
        "math": TagLLM(tag="math", context_window=8192, num_output=512, is_chat_model=True),
        "code": TagLLM(tag="code", context_window=2048, num_output=1024, is_chat_model=True),
        "instructions": TagLLM(tag="instructions", context_window=4096, num_output=256, is_chat_model=False),
        "multilingual": TagLLM(tag="multilingual", context_window=16384, num_output=300, is_chat_model=True),
    }
    meta = RoutingLLM(paper_router, llms).metadata
    assert (meta.context_window, meta.num_output, meta.is_chat_model) == (2048, 256, False)
    assert meta.is_function_calling_model is False
    assert "math" in meta.model_name and "multilingual" in meta.model_name
    llms["instructions"] = TagLLM(tag="instructions", is_chat_model=True)
    assert RoutingLLM(paper_router, llms).metadata.is_chat_model is True


def test_mismatched_llms_listed_in_one_error(paper_router):
    llms = _llms(["math", "code", "poetry"])
    with pytest.raises(ExpertError) as info:
        RoutingLLM(paper_router, llms)
    assert "LLMs without an expert: ['poetry']" in str(info.value)
    assert "experts without an LLM: ['instructions', 'multilingual']" in str(info.value)
    assert isinstance(info.value, ExpertMismatchError)  # the core registry's error, shared by every adapter
    assert (info.value.missing, info.value.extra) == (["instructions", "multilingual"], ["poetry"])
    with pytest.raises(InvalidInputError, match=r"llama_index\.core\.llms\.LLM"):
        RoutingLLM(paper_router, {**_llms(paper_router.experts), "math": "gpt-4"})


def test_from_pretrained_with_fallback_llm(paper_router, tmp_path, small_tests):
    paper_router.save_pretrained(tmp_path / "r")
    llm = RoutingLLM.from_pretrained(tmp_path / "r", _llms(paper_router.experts), device="cpu")
    prompt = small_tests["multilingual"][0]
    assert tag_of(llm.complete(prompt).text) == paper_router.route(prompt).expert
    llm.router.configure(fallback="general", threshold=0.0)
    with pytest.raises(ExpertError, match="no LLM is registered for it"):
        llm.complete("   ")
    with_fallback = RoutingLLM(llm.router, {**_llms(paper_router.experts), "general": TagLLM(tag="general")})
    response = with_fallback.complete("   ")
    assert tag_of(response.text) == "general"
    assert response.additional_kwargs[ROUTE_KEY]["fallback_used"] is True


def test_add_update_remove_expert(smollm2, small_corpus, small_tests):
    router = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(
        {d: small_corpus[d] for d in ("math", "code", "instructions")}
    )
    llm = RoutingLLM(router, _llms(router.experts))
    router = llm.router  # the LLM's own copy: the one its add/update/remove change
    foreign = small_tests["multilingual"][:10]
    assert all(tag_of(llm.complete(q).text) != "multilingual" for q in foreign)
    llm.add_expert("multilingual", TagLLM(tag="multilingual"), small_corpus["multilingual"], "fortunes")
    assert router.experts[-1] == "multilingual" and set(llm.llms) == set(router.experts)
    routed = [tag_of(llm.complete(q).text) for q in foreign]
    assert routed == [router.route(q).expert for q in foreign]
    assert routed.count("multilingual") >= 8
    with pytest.raises(ExpertError, match="already has an LLM"):
        llm.add_expert("multilingual", TagLLM(tag="x"), small_corpus["multilingual"])
    llm.update_expert("math", llm=TagLLM(tag="math-v2"))
    math_q = small_tests["math"][0]
    assert tag_of(llm.complete(math_q).text) == "math-v2"
    before = router.statistics["code"].counts.num_texts
    llm.update_expert("code", small_tests["code"][40:60])
    assert router.statistics["code"].counts.num_texts == before + 20
    llm.remove_expert("multilingual")
    assert "multilingual" not in llm.llms and "multilingual" not in router.experts
    with pytest.raises(UnknownExpertError):
        llm.remove_expert("multilingual")
    with pytest.raises(InvalidInputError):
        llm.update_expert("math")
    # a failing router mutation leaves the mapping as it was
    with pytest.raises(InvalidInputError):
        llm.add_expert("bad", TagLLM(tag="bad"), "not a list of texts")
    assert "bad" not in llm.llms and set(llm.llms) == set(router.experts)


def test_decision_and_llm_come_from_one_snapshot(smollm2, small_corpus, small_tests):
    """Deterministic interleavings of the two races a routing LLM can lose."""
    router = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(
        {d: small_corpus[d][:60] for d in ("math", "code", "instructions", "multilingual")}
    )
    llm = RoutingLLM(router, _llms(router.experts))
    router = llm.router  # the LLM's own copy: the one its add/remove change
    foreign = small_tests["multilingual"][0]
    assert router.route(foreign).expert == "multilingual"
    route, add = router.route, router.add_expert

    # 1. the decision names an expert that is removed before its LLM is looked up: the call is re-routed
    decisions = []

    def route_then_remove(text):
        decision = route(text)
        if not decisions:
            remover = threading.Thread(target=llm.remove_expert, args=("multilingual",))
            remover.start()
            remover.join()
        decisions.append(decision.expert)
        return decision

    router.route = route_then_remove
    response = llm.complete(foreign)
    assert decisions[0] == "multilingual" and "multilingual" not in router.experts
    assert tag_of(response.text) == decisions[-1] == route(foreign).expert
    router.route = route

    # 2. a call made while an addition is in flight (router already swapped, add_expert not returned)
    answers = []

    def add_then_call(*args, **kwargs):
        result = add(*args, **kwargs)

        def call():
            try:
                answers.append(llm.complete(foreign))
            except Exception as e:  # reported by the assertions below
                answers.append(e)

        caller = threading.Thread(target=call)
        caller.start()
        caller.join()
        return result

    router.add_expert = add_then_call
    llm.add_expert("multilingual", TagLLM(tag="multilingual"), small_corpus["multilingual"][:60])
    assert len(answers) == 1 and not isinstance(answers[0], Exception), answers
    assert tag_of(answers[0].text) == answers[0].additional_kwargs[ROUTE_KEY]["expert"] == "multilingual"


def _widen_race_windows(router):
    """Make the races a wrong implementation would lose likely instead of rare.

    Routing sleeps a random 0-10 ms after deciding (a preemption between the decision and the LLM
    lookup), and each mutation sleeps 5 ms after the router swapped its state (before control returns).
    """
    rng = random.Random(0)
    route, add, remove = router.route, router.add_expert, router.remove_expert

    def slow_route(text):
        decision = route(text)
        time.sleep(rng.uniform(0.0, 0.01))
        return decision

    def slow(mutation):
        def run(*args, **kwargs):
            result = mutation(*args, **kwargs)
            time.sleep(0.005)
            return result

        return run

    router.route, router.add_expert, router.remove_expert = slow_route, slow(add), slow(remove)


def test_concurrent_calls_while_experts_come_and_go(smollm2, small_corpus, small_tests):
    """Threads and coroutines call every method while experts are added, updated and removed.

    Every call must be answered by the LLM of the expert its own route named, and that LLM must have
    been registered at some moment during the call. No call may fail.
    """
    router = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(
        {d: small_corpus[d][:60] for d in ("math", "code", "instructions")}
    )
    clock = itertools.count()  # a global order of events (next() is atomic under the GIL)
    lifetimes: dict[str, list] = {}  # tag -> [registered at, unregistered at or None]

    def new_llm(name, version):
        tag = f"{name}#{version}"
        lifetimes[tag] = [next(clock), None]
        return TagLLM(tag=tag)

    llm = RoutingLLM(router, {n: new_llm(n, 0) for n in router.experts})
    _widen_race_windows(router)
    prompts = [q for texts in small_tests.values() for q in texts[:15]]
    records, errors = [], []
    done = threading.Event()

    def call(method, prompt, rng):
        start = next(clock)
        if method == "complete":
            r = llm.complete(prompt)
            text = r.text
        elif method == "chat":
            r = llm.chat(_user(prompt))
            text = r.message.content
        elif method == "stream_complete":
            chunks = list(llm.stream_complete(prompt))
            r, text = chunks[-1], "".join(c.delta for c in chunks)
        else:
            chunks = list(llm.stream_chat(_user(prompt)))
            r, text = chunks[-1], chunks[-1].message.content
        records.append((tag_of(text), r.additional_kwargs[ROUTE_KEY], start, next(clock)))

    def worker(seed):
        rng = random.Random(seed)
        try:
            while not done.is_set():
                call(
                    rng.choice(["complete", "chat", "stream_complete", "stream_chat"]),
                    rng.choice(prompts),
                    rng,
                )
        except BaseException as e:
            errors.append(e)

    async def acall(method, prompt):
        start = next(clock)
        if method == "acomplete":
            r = await llm.acomplete(prompt)
            text = r.text
        elif method == "achat":
            r = await llm.achat(_user(prompt))
            text = r.message.content
        elif method == "astream_complete":
            chunks = [c async for c in await llm.astream_complete(prompt)]
            r, text = chunks[-1], "".join(c.delta for c in chunks)
        else:
            chunks = [c async for c in await llm.astream_chat(_user(prompt))]
            r, text = chunks[-1], chunks[-1].message.content
        records.append((tag_of(text), r.additional_kwargs[ROUTE_KEY], start, next(clock)))

    def async_worker(seed):
        rng = random.Random(seed)
        methods = ["acomplete", "achat", "astream_complete", "astream_chat"]

        async def main():
            while not done.is_set():
                await asyncio.gather(*(acall(rng.choice(methods), rng.choice(prompts)) for _ in range(8)))

        try:
            asyncio.run(main())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=async_worker, args=(100,))]
    for t in threads:
        t.start()
    try:
        foreign = small_corpus["multilingual"][:60]
        for version in range(1, 3):
            llm.add_expert("multilingual", new_llm("multilingual", version), foreign)
            old = f"math#{version - 1}"
            llm.update_expert("math", llm=new_llm("math", version))
            lifetimes[old][1] = next(clock)
            llm.remove_expert("multilingual")
            lifetimes[f"multilingual#{version}"][1] = next(clock)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert len(records) >= 50
    answered = {tag for tag, *_ in records}
    assert any(tag.startswith("multilingual#") for tag in answered), "no call reached an added expert"
    assert len({tag for tag in answered if tag.startswith("math#")}) >= 2, "the math LLM swap was never seen"
    for tag, route, start, end in records:
        name = tag.split("#")[0]
        assert name == route["expert"]  # answered by the LLM of the expert its route named
        assert name in route["scores"]  # ... which existed in the router state that routed it
        registered, unregistered = lifetimes[tag]
        assert registered < end and (unregistered is None or unregistered > start), (tag, start, end)
