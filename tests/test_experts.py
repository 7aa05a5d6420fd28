"""The core expert → handler registry: consistency with the router, typed errors, concurrent change."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from ir3de import Router
from ir3de.decision import RouteDecision
from ir3de.errors import (
    EmptyPromptError,
    ExpertError,
    ExpertMismatchError,
    InvalidInputError,
    NotFittedError,
    UnknownExpertError,
)
from ir3de.serving.registry import ExpertRegistry, Routed, fitted_router, handler_names


class Upstream:
    """A handler like the gateway's: an upstream config, one object per registration."""

    def __init__(self, name: str, generation: int = 0) -> None:
        self.name, self.generation = name, generation

    def __repr__(self) -> str:
        return f"Upstream({self.name!r}, {self.generation})"


def upstreams(names):
    return {name: Upstream(name) for name in names}


@pytest.fixture(scope="module")
def saved_router(paper_router, tmp_path_factory) -> Path:
    return paper_router.save_pretrained(tmp_path_factory.mktemp("experts") / "router")


@pytest.fixture
def fresh_router(saved_router, smollm2):
    """A private, mutable copy of the paper router (math, code, instructions, multilingual)."""
    return Router.from_pretrained(saved_router, embeddings=smollm2, device="cpu", progress=False)


def test_route_pairs_the_decision_with_its_handler(paper_router, small_tests):
    handlers = upstreams(paper_router.experts)
    registry = ExpertRegistry(paper_router, handlers, kind="upstream")
    prompts = [t for texts in small_tests.values() for t in texts[:5]]
    for prompt in prompts:
        routed = registry.route(prompt)
        decision, handler = routed
        assert isinstance(routed, Routed) and decision == paper_router.route(prompt)
        assert handler is handlers[decision.expert] is routed.handler
        assert registry.resolve(decision).handler is handler
    batch = registry.route_batch([*prompts, "   "])
    assert [r.decision for r in batch[:-1]] == paper_router.route_batch(prompts)
    assert all(r.handler is handlers[r.decision.expert] for r in batch[:-1])
    assert isinstance(batch[-1], EmptyPromptError)
    with pytest.raises(EmptyPromptError):
        registry.route("   ")
    assert registry.get("code") is handlers["code"]
    with pytest.raises(UnknownExpertError, match="unknown expert 'poetry'"):
        registry.get("poetry")
    assert dict(registry.handlers) == handlers and registry.current.experts == tuple(paper_router.experts)
    with pytest.raises(TypeError):
        registry.handlers["poetry"] = Upstream("poetry")  # type: ignore[index]


def test_mismatches_and_bad_arguments_raise_typed_errors(paper_router, smollm2):
    with pytest.raises(ExpertMismatchError) as info:
        ExpertRegistry(paper_router, upstreams(["math", "code", "poetry"]), kind="upstream")
    assert info.value.missing == ["instructions", "multilingual"] and info.value.extra == ["poetry"]
    message = str(info.value)
    assert "upstreams without an expert: ['poetry']" in message
    assert "experts without an upstream: ['instructions', 'multilingual']" in message
    assert "Register one upstream per router expert" in message  # the fix
    assert isinstance(info.value, ExpertError)
    with pytest.raises(NotFittedError, match="fit it"):
        ExpertRegistry(Router(smollm2), {})
    with pytest.raises(InvalidInputError, match=r"expected an ir3de\.Router"):
        ExpertRegistry("my-router", {})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="mapping"):
        ExpertRegistry(paper_router, list(paper_router.experts))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="has no handler"):
        ExpertRegistry(paper_router, {**upstreams(paper_router.experts), "math": None})

    def only_upstreams(name: str, handler: object) -> None:
        if not isinstance(handler, Upstream):
            raise InvalidInputError(f"expert {name!r}: not an Upstream")

    with pytest.raises(InvalidInputError, match="'code': not an Upstream"):
        ExpertRegistry(
            paper_router,
            {**upstreams(paper_router.experts), "code": "http://x"},
            check_handler=only_upstreams,
        )
    assert fitted_router(paper_router) is paper_router
    assert handler_names(paper_router) == list(paper_router.experts)


def test_add_update_remove_change_router_and_handlers_together(fresh_router, small_tests):
    router = fresh_router
    handlers = upstreams(router.experts)
    registry = ExpertRegistry(router, handlers, kind="upstream")
    counts = router.statistics["instructions"].counts
    registry.remove("instructions")
    assert router.experts == ("math", "code", "multilingual") and set(registry.handlers) == set(
        router.experts
    )
    assert registry.current.experts == tuple(router.experts)
    for prompt in small_tests["instructions"][:10]:
        decision, handler = registry.route(prompt)
        assert handler is handlers[decision.expert] and decision.expert != "instructions"

    new = Upstream("instructions", 1)
    registry.add_counts("instructions", new, counts, "how-to")  # e.g. from a stat pack
    assert router.experts[-1] == "instructions" and registry.get("instructions") is new
    assert router.state.descriptions["instructions"] == "how-to"
    routed = [registry.route(p) for p in small_tests["instructions"][:10]]
    assert [r.decision.expert for r in routed] == [
        router.route(p).expert for p in small_tests["instructions"][:10]
    ]
    assert any(r.handler is new for r in routed)

    # both or neither: a refused change leaves the registry exactly as it was
    served = registry.current
    with pytest.raises(ExpertError, match="already has an upstream"):
        registry.add("code", Upstream("code", 2), ["def f(): pass"])
    with pytest.raises(InvalidInputError):  # the router refuses the texts
        registry.add("legal", Upstream("legal"), "not a list of texts")
    with pytest.raises(UnknownExpertError):
        registry.remove("legal")
    with pytest.raises(UnknownExpertError):
        registry.update("legal", ["text"])
    with pytest.raises(InvalidInputError, match="update needs"):
        registry.update("math")
    with pytest.raises(ExpertError, match="invalid expert name"):
        registry.add(" ", Upstream(" "), ["x"])
    assert registry.current is served and "legal" not in router.experts

    before = router.statistics["code"].counts.num_texts
    registry.update("code", small_tests["code"][:20])
    assert (
        router.statistics["code"].counts.num_texts == before + 20 and registry.get("code") is handlers["code"]
    )
    replacement = Upstream("math", 3)
    statistics = router.statistics["math"]
    registry.update("math", handler=replacement)
    assert registry.get("math") is replacement and router.statistics["math"] is statistics

    small = ExpertRegistry(router, registry.handlers)
    small.remove("multilingual")
    served = small.current
    small.remove("instructions")
    with pytest.raises(ExpertError, match="at least 2 experts"):  # the router refuses: nothing changes
        small.remove("code")
    assert small.current is not served and set(small.handlers) == {"math", "code"} == set(router.experts)


def test_fallback_handler(fresh_router):
    router = fresh_router
    handlers = upstreams(router.experts)
    registry = ExpertRegistry(router, handlers)
    general = Upstream("general")
    with pytest.raises(InvalidInputError, match="has no handler; pass one"):
        registry.set_fallback("general")
    registry.set_fallback("general", general)
    assert router.config.fallback == "general" and registry.current.fallback == "general"
    decision, handler = registry.route("   ")
    assert decision.fallback_used and decision.expert == "general" and handler is general
    assert handler_names(router) == [*router.experts, "general"]
    with pytest.raises(ExpertError, match="fallback"):
        registry.remove("general")

    # a router changed behind the registry's back: the mismatch is named, with the fix
    router.configure(fallback="other")
    with pytest.raises(ExpertMismatchError, match=r"experts without a handler: \['other'\]"):
        registry.check()
    with pytest.raises(UnknownExpertError, match="no handler is registered for it"):
        registry.route("   ")
    router.configure(fallback="general")

    registry.set_fallback("math")  # an expert as fallback: the old fallback's handler goes
    assert "general" not in registry.handlers and registry.route("   ").handler is handlers["math"]
    with pytest.raises(ExpertError, match="fallback"):
        registry.remove("math")
    registry.set_fallback(None)
    assert router.config.fallback is None and set(registry.handlers) == set(router.experts)
    with pytest.raises(EmptyPromptError):
        registry.route("   ")
    registry.check()


def test_a_decision_and_its_handler_come_from_one_router_state(fresh_router, small_corpus, small_tests):
    """Deterministic interleavings of the races a registry can lose (a writer between deciding and
    looking the handler up), driven through ``route_with``."""
    router = fresh_router
    registry = ExpertRegistry(router, upstreams(router.experts))
    foreign = small_tests["multilingual"][0]
    assert router.route(foreign).expert == "multilingual"

    # 1. the decided expert is removed before its handler is looked up: the prompt is routed again
    decisions: list[str] = []

    def decide_then_remove(r: Router) -> RouteDecision:
        decision = r.route(foreign)
        if not decisions:
            remover = threading.Thread(target=registry.remove, args=("multilingual",))
            remover.start()
            remover.join()
        decisions.append(decision.expert)
        return decision

    decision, handler = registry.route_with(decide_then_remove)
    assert decisions[0] == "multilingual" and len(decisions) == 2
    assert decision.expert == handler.name == decisions[-1] != "multilingual"

    # 2. a prompt routed while an addition is in flight (router already changed, add not returned)
    answers: list[object] = []
    add = router.add_expert

    def add_then_route(*args, **kwargs):
        result = add(*args, **kwargs)

        def call() -> None:
            try:
                answers.append(registry.route(foreign))
            except Exception as e:  # reported by the assertions below
                answers.append(e)

        caller = threading.Thread(target=call)
        caller.start()
        caller.join()
        return result

    router.add_expert = add_then_route  # type: ignore[method-assign]
    newcomer = Upstream("multilingual", 1)
    registry.add("multilingual", newcomer, small_corpus["multilingual"])
    router.add_expert = add  # type: ignore[method-assign]
    assert len(answers) == 1 and isinstance(answers[0], Routed), answers
    assert answers[0].decision.expert == "multilingual" and answers[0].handler is newcomer


def test_routing_threads_see_consistent_pairs_while_experts_change(fresh_router, small_corpus, small_tests):
    router = fresh_router
    registry = ExpertRegistry(router, upstreams(router.experts))
    prompts = [t for texts in small_tests.values() for t in texts[:10]]
    stop = threading.Event()
    seen: list[tuple[str, str, int]] = []
    errors: list[BaseException] = []

    def reader(offset: int) -> None:
        i = offset
        while not stop.is_set():
            try:
                if i % 3 == 0:
                    for r in registry.route_batch(prompts[i % 30 : i % 30 + 5]):
                        seen.append((r.decision.expert, r.handler.name, r.handler.generation))
                else:
                    decision, handler = registry.route(prompts[i % len(prompts)])
                    seen.append((decision.expert, handler.name, handler.generation))
            except BaseException as e:
                errors.append(e)
            i += 1

    def writer() -> None:
        try:
            for generation in (1, 2):
                registry.remove("instructions")
                registry.add(
                    "instructions", Upstream("instructions", generation), small_corpus["instructions"][:40]
                )
                registry.update("code", handler=Upstream("code", generation))
                registry.set_fallback("general", Upstream("general", generation))
                registry.set_fallback(None)
        except BaseException as e:
            errors.append(e)
        finally:
            stop.set()

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert len(seen) > 50
    assert all(expert == name for expert, name, _ in seen)  # every handler is the decided expert's
    assert {"math", "code", "instructions", "multilingual"} <= {e for e, _, _ in seen}
    assert {g for e, _, g in seen if e == "instructions"} - {0}  # the re-added expert answered
    assert set(registry.handlers) == set(router.experts) and registry.get("code").generation == 2


def test_replace_swaps_router_and_handlers_whole_while_threads_route(
    fresh_router, saved_router, smollm2, small_tests
):
    """registry.replace (a newer revision loaded elsewhere): readers never fail and always get the
    handler of the expert they were routed to, across many swaps between two routers."""
    a = fresh_router
    b = Router.from_pretrained(saved_router, embeddings=smollm2, device="cpu", progress=False)
    b.remove_expert("instructions")
    handlers_a = {n: Upstream(n, 0) for n in a.experts}
    handlers_b = {n: Upstream(n, 1) for n in b.experts}
    registry = ExpertRegistry(a, handlers_a)
    prompts = [t for texts in small_tests.values() for t in texts[:10]]
    stop = threading.Event()
    seen: list[tuple[str, str, int]] = []
    errors: list[BaseException] = []

    def reader(offset: int) -> None:
        i = offset
        while not stop.is_set():
            try:
                decision, handler = registry.route(prompts[i % len(prompts)])
                seen.append((decision.expert, handler.name, handler.generation))
            except BaseException as e:
                errors.append(e)
            i += 1

    def writer() -> None:
        try:
            for _ in range(50):
                registry.replace(b, handlers_b)
                threading.Event().wait(0.001)
                registry.replace(a, handlers_a)
                threading.Event().wait(0.001)
            registry.replace(b, handlers_b)
        except BaseException as e:
            errors.append(e)
        finally:
            stop.set()

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert all(expert == name for expert, name, _ in seen)
    assert {g for _, _, g in seen} == {0, 1}  # both routers served
    assert {e for e, _, _ in seen if e == "instructions"}  # routed on a, resolved after swaps too
    assert registry.router is b and dict(registry.handlers) == handlers_b
    assert registry.current.experts == tuple(b.experts)
    # a mismatched map or an unfitted router changes nothing
    with pytest.raises(ExpertMismatchError):
        registry.replace(a, handlers_b)
    with pytest.raises(NotFittedError):
        registry.replace(Router(smollm2), {})
    with pytest.raises(InvalidInputError):
        registry.replace(a, [handlers_a])
    assert registry.router is b and dict(registry.handlers) == handlers_b


def test_the_registry_imports_no_framework():
    source = Path(__file__).parents[1] / "core" / "ir3de" / "serving" / "registry.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    below_router = {
        "ir3de.routing.tuning",
        "ir3de.fitting.pipeline",
        "ir3de.fitting.adaptation",
        "ir3de.decision",
        "ir3de.errors",
        "ir3de.data.labelled",
        "ir3de.router",
        "ir3de.fitting.statistics",
        "__future__",
    }
    # the record of routed calls: errors + stdlib only (test_layering)
    framework_free = {"ir3de.serving.feedback"}
    stdlib = {"threading", "collections.abc", "dataclasses", "types", "typing"}
    assert imported <= below_router | framework_free | stdlib, imported - below_router - stdlib


def test_tune_sets_the_thresholds_under_the_lock_and_needs_a_fallback_handler(
    fresh_router, saved_router, smollm2, small_tests
):
    held_out = {name: texts[:15] for name, texts in small_tests.items()}
    handlers = upstreams(fresh_router.experts)
    registry = ExpertRegistry(fresh_router, handlers, kind="upstream")
    with pytest.raises(InvalidInputError, match="the fallback 'general' has no upstream"):
        registry.tune(held_out, 0.99, abstain="general")  # no handler for it: nothing changes
    assert fresh_router.config.threshold == 0.0 and fresh_router.config.fallback is None
    before = registry.current
    result = registry.tune(held_out, 0.99, per_expert=True, abstain="math")
    assert registry.current is not before and dict(registry.current.handlers) == dict(before.handlers)
    # the same as tuning the router itself
    twin = Router.from_pretrained(saved_router, embeddings=smollm2, device="cpu", progress=False)
    assert result == twin.tune(held_out, 0.99, per_expert=True, abstain="math")
    assert fresh_router.config == twin.config and fresh_router.config.fallback == "math"
    assert result.thresholds is not None and set(result.thresholds) == set(fresh_router.experts)
    for texts in held_out.values():
        for text in texts:
            routed = registry.route(text)
            assert routed.decision == twin.route(text) and routed.handler is handlers[routed.decision.expert]
