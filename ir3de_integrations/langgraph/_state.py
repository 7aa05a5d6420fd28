"""What the LangGraph pieces share: reading the routed value from a graph state, and the decision as
a JSON-serialisable state value. No routing math: decisions come from :meth:`ir3de.Router.route` (a
text) and :meth:`ir3de.Router.route_conversation` (messages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from langchain_core.messages import AnyMessage, BaseMessage
from langgraph.graph.message import add_messages
from typing_extensions import NotRequired, TypedDict

from ir3de.errors import EmptyPromptError, InvalidInputError

from ..langchain._conversation import chat_turns, input_messages

if TYPE_CHECKING:
    from ir3de import Router
    from ir3de.decision import RouteDecision
    from ir3de.routing.conversation import ConversationSettings

__all__ = ["STATE_KEY", "RoutedState", "decision_payload", "human_turns", "route_value", "state_value"]

#: The state key the route node writes its decision to (and reads the thread's previous expert from).
STATE_KEY = "ir3de"


class RoutedState(TypedDict):
    """The state of :func:`~ir3de_integrations.langgraph.create_routed_graph`: LangGraph's messages
    (``add_messages`` reducer) plus the latest routing decision under ``ir3de``."""

    messages: Annotated[list[AnyMessage], add_messages]
    ir3de: NotRequired[dict[str, Any]]


def state_value(state: Any, key: str) -> Any:
    """``state[key]`` of a dict state, or ``state.key`` of a dataclass / pydantic state."""
    if isinstance(state, Mapping):
        if key not in state:
            raise InvalidInputError(
                f"the graph state has no key {key!r} (keys: {sorted(map(str, state))}); pass key='<the key "
                "that holds the messages or the text>'"
            )
        return state[key]
    if hasattr(state, key):
        return getattr(state, key)
    raise InvalidInputError(
        f"the graph state ({type(state).__name__}) has no {key!r}; pass key='<the key that holds the "
        "messages or the text>'"
    )


def human_turns(value: Any) -> int:
    """How many human messages a routed value holds (a text counts as one turn)."""
    got = input_messages(value) if not isinstance(value, str) else value
    return 1 if isinstance(got, str) else sum(1 for m in got if m.type == "human")


def route_value(
    router: Router,
    value: Any,
    *,
    previous: str | None,
    settings: ConversationSettings,
    fallback: str | None,
) -> RouteDecision | None:
    """The decision for a state value: a text routes as one prompt, messages as a conversation (with
    ``previous`` as the thread's previous expert, else the route in the last routed answer). ``None``
    when nothing is routable and ``fallback`` names where to go instead."""
    got = value if isinstance(value, str) else input_messages(value)
    try:
        if isinstance(got, str):
            return router.route(got)
        if isinstance(got, BaseMessage):
            got = [got]
        turns, history = chat_turns(got)
        return router.route_conversation(
            turns, previous_expert=previous if previous is not None else history, settings=settings
        )
    except EmptyPromptError:
        if fallback is None:
            raise
        return None


def decision_payload(decision: RouteDecision | None, *, fallback: str | None, turn: int) -> dict[str, Any]:
    """The decision as a state value (JSON: checkpointers store it with the thread)."""
    if decision is None:
        return {
            "expert": fallback,
            "confidence": 0.0,
            "scores": {},
            "top_expert": None,
            "fallback_used": True,
            "switched": False,
            "reason": "fallback: the state has no countable token",
            "turn": turn,
        }
    return {
        "expert": decision.expert,
        "confidence": float(decision.confidence),
        "scores": {k: float(v) for k, v in decision.scores.items()},
        "top_expert": decision.top_expert,
        "fallback_used": bool(decision.fallback_used),
        "switched": bool(getattr(decision, "switched", False)),
        "reason": str(getattr(decision, "reason", "")),
        "turn": turn,
    }
