"""The shared core of the LangChain faces: which text is routed, and the expert registry.

The registry is the core :class:`ir3de.serving.registry.ExpertRegistry` with LangChain runnables as handlers:
it pairs an :class:`ir3de.Router` with the runnables its expert names stand for and keeps the two
consistent while experts come and go at run time. No routing math lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable

from ir3de.errors import InvalidInputError
from ir3de.serving.registry import ExpertRegistry as CoreExpertRegistry

from ._conversation import input_messages

if TYPE_CHECKING:
    from ir3de import Router

RouteOn = Literal["last_user", "conversation"] | int
"""What is routed: the last user message, the whole conversation (system messages excluded), or the
last ``n`` turns (an ``int``)."""


def _message_text(message: BaseMessage) -> str:
    return str(message.text)


def _check_route_on(route_on: Any) -> RouteOn:
    if route_on in ("last_user", "conversation"):
        return route_on  # type: ignore[no-any-return]
    if isinstance(route_on, int) and not isinstance(route_on, bool) and route_on >= 1:
        return route_on
    raise InvalidInputError(
        f"route_on must be 'last_user', 'conversation' or a positive int (the last n turns), got {route_on!r}"
    )


def messages_text(messages: Sequence[BaseMessage], route_on: RouteOn = "last_user") -> str:
    """The text of ``messages`` that is routed.

    ``"last_user"``: the last human message ('' when there is none); ``"conversation"``: every
    non-system message, one per line; ``n``: the last ``n`` non-system messages.

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage
        >>> messages_text([HumanMessage("2+2?"), AIMessage("4"), HumanMessage("and 3+3?")])
        'and 3+3?'
        >>> messages_text([HumanMessage("2+2?"), AIMessage("4")], route_on="conversation")
        '2+2?\\n4'
    """
    if route_on == "last_user":
        for message in reversed(messages):
            if isinstance(message, HumanMessage) or message.type == "human":
                return _message_text(message)
        return ""
    turns = [m for m in messages if not isinstance(m, SystemMessage) and m.type != "system"]
    if isinstance(route_on, int):
        turns = turns[-route_on:]
    return "\n".join(_message_text(m) for m in turns)


def input_text(input: Any, *, input_key: str = "input", route_on: RouteOn = "last_user") -> str:
    """The text routed for a LangChain input: a ``str``, a ``PromptValue``, a message, a list of
    messages (or message-like tuples/dicts), or a ``dict`` whose ``input_key`` holds one of those.

    Example:
        >>> input_text({"question": "Solve 2x = 4"}, input_key="question")
        'Solve 2x = 4'
    """
    got = input_messages(input, input_key=input_key)
    return got if isinstance(got, str) else messages_text(got, route_on)


def _check_runnable(name: str, runnable: object) -> None:
    if not isinstance(runnable, Runnable):
        raise InvalidInputError(
            f"expert {name!r} is a {type(runnable).__name__}, not a LangChain Runnable (chat model, LLM or chain)"
        )


class ExpertRegistry(CoreExpertRegistry[Runnable[Any, Any]]):
    """:class:`ir3de.serving.registry.ExpertRegistry` with LangChain runnables as handlers: a router plus the
    runnable behind each expert name, consistent under concurrent change (shared by the faces and
    their ``bind_tools``/``with_structured_output`` views).

    Example:
        >>> registry = ExpertRegistry(router, {"math": math_llm, "code": code_llm})   # doctest: +SKIP
        >>> decision, llm = registry.route("Solve 2x = 4")                              # doctest: +SKIP
    """

    def __init__(self, router: Router, experts: Mapping[str, Runnable[Any, Any]]) -> None:
        super().__init__(router, experts, kind="Runnable", check_handler=_check_runnable)

    @property
    def experts(self) -> dict[str, Runnable[Any, Any]]:
        """The current expert name → runnable mapping (a copy)."""
        return dict(self.handlers)

    decide = CoreExpertRegistry.route
    decide_batch = CoreExpertRegistry.route_batch
