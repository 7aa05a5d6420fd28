"""Feedback from the LangChain faces: a routed call's correct expert, by run id or prompt, is learned
through the registry and changes the next routing."""

from __future__ import annotations

import threading
import uuid

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers.context import collect_runs
from lc_helpers import expert_of, fake_expert

from ir3de.errors import ExpertError, InvalidInputError, UnknownCallError, UnknownExpertError
from ir3de_integrations.langchain import RouterRunnable, RoutingChatModel

#: A code question the paper router (math, code, instructions, multilingual) routes elsewhere.
PROMPT_EXPERT = "code"


def _misrouted(router, texts, wrong_for):
    """The first text of ``texts`` the router does not send to ``wrong_for``."""
    for text in texts:
        if router.route(text).expert != wrong_for:
            return text
    pytest.skip(f"every probe text routes to {wrong_for}")


def test_runnable_feedback_by_run_id_learns_and_changes_the_next_call(
    fresh_router, make_experts, small_tests
):
    app = RouterRunnable(fresh_router, make_experts(fresh_router.experts))
    prompt = _misrouted(fresh_router, small_tests["math"], "math")
    run_id = uuid.uuid4()
    first = app.invoke(prompt, config={"run_id": run_id})
    routed = expert_of(first)
    assert routed != "math"
    table_before = app.router.state.table.logits.copy()

    result = app.feedback(run_id, expert="math")

    assert (result.call_id, result.prompt, result.routed, result.expert) == (
        str(run_id),
        prompt,
        routed,
        "math",
    )
    assert result.corrected and not result.created and result.traffic_prompts == 1
    assert app.router.traffic["math"].num_prompts == 1
    assert (app.router.state.table.logits != table_before).any()  # the statistics changed
    assert result.now == app.router.route(prompt).expert
    # the next call is routed by the router that learned (whatever it decides, it equals the router now)
    assert expert_of(app.invoke(prompt)) == app.router.route(prompt).expert
    app.forget_traffic()
    assert app.router.traffic == {} and (app.router.state.table.logits == table_before).all()


def test_runnable_feedback_by_parent_run_of_a_chain(fresh_router, make_experts, small_tests):
    app = RouterRunnable(fresh_router, make_experts(fresh_router.experts))
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | app
    question = small_tests["code"][0]
    chain_run = uuid.uuid4()
    chain.invoke({"question": question}, config={"run_id": chain_run})
    result = app.feedback(chain_run, expert="code")  # the sequence's run id names the call it contains
    assert result.prompt == question and result.traffic_prompts == 1


def test_runnable_feedback_on_collected_runs_batch_and_stream(fresh_router, make_experts, small_tests):
    app = RouterRunnable(fresh_router, make_experts(fresh_router.experts))
    prompts = [small_tests["math"][1], small_tests["code"][1]]
    with collect_runs() as runs:
        app.batch(prompts)
    ids = [run.id for run in runs.traced_runs]
    assert len(ids) == 2
    learned = {app.feedback(i, expert="instructions").prompt for i in ids}
    assert learned == set(prompts)
    with collect_runs() as runs:
        list(app.stream(small_tests["math"][2]))
    assert app.feedback(runs.traced_runs[0].id, expert="math").prompt == small_tests["math"][2]
    assert app.router.traffic["instructions"].num_prompts == 2


def test_chat_model_feedback_by_reply_learns_the_last_user_turn(fresh_router, make_experts, small_tests):
    chat = RoutingChatModel(fresh_router, make_experts(fresh_router.experts))
    user_turn = small_tests["code"][3]
    messages = [
        SystemMessage("You are helpful."),
        HumanMessage(small_tests["math"][3]),
        AIMessage("x = 2"),
        HumanMessage(user_turn),
    ]
    reply = chat.invoke(messages)
    run_id = reply.response_metadata["ir3de"]["run_id"]
    call = chat.recent_calls.get(run_id)
    assert call.text == user_turn and call.turns[-1] == ("human", user_turn) and len(call.turns) == 4

    result = chat.feedback(reply, expert="code")
    assert result.prompt == user_turn and result.call_id == run_id
    assert result.routed == reply.response_metadata["ir3de"]["expert"]
    assert chat.router.traffic["code"].num_prompts == 1

    # by run id string and by prompt
    other = chat.invoke(small_tests["math"][4])
    assert chat.feedback(other.response_metadata["ir3de"]["run_id"], expert="math").expert == "math"
    by_prompt = chat.feedback(prompt="Solve 3x + 5 = 11", expert="math")
    assert by_prompt.call_id is None and by_prompt.routed is not None
    assert chat.router.traffic["math"].num_prompts == 2


def test_chat_model_streamed_and_structured_views_share_the_record(fresh_router, make_experts, small_tests):
    chat = RoutingChatModel(fresh_router, make_experts(fresh_router.experts))
    chunks = list(chat.stream(small_tests["math"][5]))
    run_id = chunks[0].response_metadata["ir3de"]["run_id"]
    assert chat.feedback(run_id, expert="math").prompt == small_tests["math"][5]
    view = RouterRunnable._view(chat.registry, None)
    assert view.recent_calls is chat.recent_calls


def test_feedback_errors_are_typed_and_change_nothing(fresh_router, make_experts):
    chat = RoutingChatModel(fresh_router, make_experts(fresh_router.experts))
    reply = chat.invoke("Solve 2x = 4")
    before = chat.router.state.table.logits.copy()
    with pytest.raises(UnknownCallError, match="no routed call"):
        chat.feedback(uuid.uuid4(), expert="math")
    with pytest.raises(UnknownExpertError, match="create_experts"):
        chat.feedback(reply, expert="poetry")
    with pytest.raises(InvalidInputError, match="not both"):
        chat.feedback(reply, prompt="x", expert="math")
    with pytest.raises(InvalidInputError, match="not both and not neither"):
        chat.feedback(expert="math")
    with pytest.raises(InvalidInputError, match="run id"):
        chat.feedback(AIMessage("not routed here"), expert="math")
    with pytest.raises(ExpertError, match="need"):
        chat.feedback(reply, expert="poetry", create_experts=True)  # a new expert needs its llm
    assert chat.router.traffic == {} and (chat.router.state.table.logits == before).all()
    assert "poetry" not in chat.router.experts


def test_feedback_creates_an_expert_with_its_llm(fresh_router, make_experts):
    chat = RoutingChatModel(fresh_router, make_experts(fresh_router.experts))
    prompt = "Write a sonnet about the sea, with a volta after the octave and iambic pentameter"
    reply = chat.invoke(prompt)
    result = chat.feedback(reply, expert="poetry", create_experts=True, llm=fake_expert("poetry"))
    assert result.created and result.now == "poetry"
    assert "poetry" in chat.router.experts and "poetry" in chat.experts
    assert expert_of(chat.invoke(prompt)) == "poetry"


def test_recent_calls_are_bounded(fresh_router, make_experts, small_tests):
    app = RouterRunnable(fresh_router, make_experts(fresh_router.experts))
    app.recent_calls.maxsize = 3
    ids = [uuid.uuid4() for _ in range(5)]
    for i, run_id in enumerate(ids):
        app.invoke(small_tests["math"][i], config={"run_id": run_id})
    assert len(app.recent_calls) == 3
    assert ids[0] not in app.recent_calls and ids[-1] in app.recent_calls
    with pytest.raises(UnknownCallError, match="maxsize 3"):
        app.feedback(ids[0], expert="math")


def test_feedback_while_other_threads_route(fresh_router, make_experts, small_tests):
    chat = RoutingChatModel(fresh_router, make_experts(fresh_router.experts))
    errors: list[BaseException] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                chat.invoke(small_tests["code"][0])
            except BaseException as e:
                errors.append(e)

    threads = [threading.Thread(target=serve) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for text in small_tests["math"][:4]:
            chat.feedback(prompt=text, expert="math")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and chat.router.traffic["math"].num_prompts == 4
