"""RecentRoutes (the record of routed calls the adapters' feedback reads) and apply_feedback's checks:
bounded LRU, aliases, thread safety, typed errors. No model needed."""

from __future__ import annotations

import threading
import uuid
from types import MappingProxyType

import pytest

from ir3de.errors import InvalidInputError, UnknownCallError
from ir3de.serving.feedback import Feedback, RecentRoutes, adapt_recent, apply_feedback, user_text


def test_lru_bound_and_order():
    calls = RecentRoutes(maxsize=3)
    for i in range(5):
        calls.record(f"c{i}", f"text {i}", "math")
    assert len(calls) == 3 and [c.call_id for c in calls.calls()] == ["c2", "c3", "c4"]
    assert "c1" not in calls and "c4" in calls
    with pytest.raises(UnknownCallError, match="maxsize 3"):
        calls.get("c0")
    calls.record("c2", "again", "code")  # re-recorded: now the newest
    calls.maxsize = 2
    assert [c.call_id for c in calls.calls()] == ["c4", "c2"] and calls.get("c2").expert == "code"
    with pytest.raises(InvalidInputError):
        calls.maxsize = 0
    calls.clear()
    assert len(calls) == 0


def test_uuid_and_str_ids_are_one_call_and_bad_ids_are_typed():
    calls = RecentRoutes()
    run = uuid.uuid4()
    calls.record(run, "Solve 2x = 4", "code", confidence=0.5)
    assert calls.get(str(run)) == calls.get(run)
    assert calls.get(run).confidence == 0.5
    for bad in ("", 3, None):
        with pytest.raises(InvalidInputError):
            calls.get(bad)


def test_aliases_resolve_one_call_and_refuse_several():
    calls = RecentRoutes()
    calls.record("child-1", "a", "math", aliases=["parent", None])
    assert calls.get("parent").call_id == "child-1"
    calls.record("child-2", "b", "code", aliases=["parent"])
    with pytest.raises(UnknownCallError, match="covers 2 routed calls"):
        calls.get("parent")
    small = RecentRoutes(maxsize=1)
    small.record("child-1", "a", "math", aliases=["parent"])
    small.record("child-2", "b", "code", aliases=["parent"])  # child-1 evicted: the alias is unambiguous
    assert small.get("parent").call_id == "child-2"


def test_chats_teach_their_last_user_turn():
    turns = [("system", "be brief"), ("human", "2+2?"), ("ai", "4"), ("user", "and def f():"), ("ai", "...")]
    assert user_text(turns) == "and def f():"
    assert user_text([("system", "x")]) == ""
    call = RecentRoutes().record("c", user_text(turns), "code", turns=turns)
    assert call.text == "and def f():" and call.turns[1] == ("human", "2+2?")


def test_record_is_thread_safe_and_bounded():
    calls = RecentRoutes(maxsize=50)
    failures: list[BaseException] = []

    def work(k: int) -> None:
        for i in range(400):
            call = calls.record(f"{k}-{i}", "t", "math", aliases=[f"p{k}"])
            try:
                assert calls.get(call.call_id) == call
            except UnknownCallError:
                pass  # evicted meanwhile by the other threads' newer calls: the bound at work
            except BaseException as e:
                failures.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(calls) == 50 and len(calls.calls()) == 50


class _Router:
    """The little of a Router that apply_feedback reads (it never learns itself)."""

    experts = ("math", "code")
    traffic = MappingProxyType({})

    class _D:
        expert = "code"

    def route(self, text):
        return self._D()


def test_apply_feedback_checks_before_learning():
    calls = RecentRoutes()
    calls.record("c", "Solve 2x = 4", "code")
    calls.record("chat", "", "code")
    learned = []

    def learn(text, expert):
        learned.append((text, expert))

    router = _Router()
    with pytest.raises(InvalidInputError, match="not both"):
        apply_feedback(router, learn, calls, call_id="c", prompt="x", expert="math")
    with pytest.raises(InvalidInputError, match="non-empty str"):
        apply_feedback(router, learn, calls, call_id="c", expert="")
    with pytest.raises(InvalidInputError, match="no user text"):
        apply_feedback(router, learn, calls, call_id="chat", expert="math")
    with pytest.raises(UnknownCallError):
        apply_feedback(router, learn, calls, call_id="nope", expert="math")
    assert learned == []
    out = apply_feedback(router, learn, calls, call_id="c", expert="math")
    assert learned == [("Solve 2x = 4", "math")]
    assert out == Feedback("Solve 2x = 4", "math", "code", "code", "c", False, 0)
    assert out.corrected and not out.fixed and out.to_dict()["corrected"] is True


def test_unadapted_calls_are_handed_out_once_in_recording_order():
    calls = RecentRoutes(maxsize=3)
    for i in range(4):
        calls.record(f"c{i}", f"text {i}", "math")
    pending, mark = calls.unadapted()
    assert [c.text for c in pending] == ["text 1", "text 2", "text 3"] and mark == 4  # c0 was evicted
    calls.mark_adapted(mark)
    assert calls.unadapted() == ([], 4)
    calls.record("c4", "text 4", "code")
    calls.record("c2", "text 2 again", "code")  # a call recorded again is new: it was routed again
    assert [c.text for c in calls.unadapted()[0]] == ["text 4", "text 2 again"]
    calls.mark_adapted(2)  # an older mark never moves the mark back
    assert len(calls.unadapted()[0]) == 2


def test_adapt_recent_adapts_each_call_once_and_refuses_when_none_is_left():
    calls = RecentRoutes()
    calls.record("a", "Solve 2x = 4", "math")
    calls.record("b", "", "code")  # a chat without a user turn: nothing to learn
    calls.record("c", "def f(): pass", "code")
    seen: list[list[str]] = []
    assert adapt_recent(calls, lambda prompts: seen.append(prompts) or len(prompts)) == 2
    assert seen == [["Solve 2x = 4", "def f(): pass"]]
    with pytest.raises(InvalidInputError, match="no routed call to adapt on: the 3 calls remembered"):
        adapt_recent(calls, seen.append)

    def failing(prompts: list[str]) -> None:
        raise RuntimeError("the router refused")

    calls.record("d", "hola", "multilingual")
    with pytest.raises(RuntimeError):
        adapt_recent(calls, failing)
    assert [c.text for c in calls.unadapted()[0]] == ["hola"]  # not marked: the next adapt() takes it
