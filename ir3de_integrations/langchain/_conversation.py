"""Conversation routing for the LangChain faces: LangChain messages → turns, session id, previous expert.

Chat inputs (messages, a ``PromptValue``, a dict holding messages) are routed with
:meth:`ir3de.Router.route_conversation` through :func:`ir3de_integrations._conversation.route_chat`;
a plain string is still routed as one prompt. The session id comes from the ``RunnableConfig``
(``configurable={"session_id": ...}``, as ``RunnableWithMessageHistory`` passes it; ``thread_id`` and
``conversation_id`` work too) or from a ``session_id=`` call keyword; without one, the previous
expert is the one written into the last routed ``AIMessage`` of the history
(``response_metadata["ir3de"]["expert"]``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables.config import var_child_runnable_config

from ir3de.errors import InvalidInputError

from .._conversation import SESSION_KEYS, last_routed_expert

__all__ = ["METADATA_KEY", "chat_turns", "input_messages", "session_id_from"]

#: Where the faces put the decision in an answer's ``response_metadata``.
METADATA_KEY = "ir3de"


def input_messages(input: Any, *, input_key: str = "input") -> list[BaseMessage] | str:
    """The chat messages of a LangChain input, or its text when it is a plain string (one prompt)."""
    if isinstance(input, str):
        return input
    if isinstance(input, PromptValue):
        return input.to_messages()
    if isinstance(input, BaseMessage):
        return [input]
    if isinstance(input, Mapping):
        if input_key not in input:
            raise InvalidInputError(
                f"the input dict has no key {input_key!r} (keys: {sorted(map(str, input))}); "
                f"pass input_key='<the key that holds the text>'"
            )
        value = input[input_key]
        if isinstance(value, Mapping):
            raise InvalidInputError(f"input[{input_key!r}] is a dict; it must hold a str or messages")
        return input_messages(value, input_key=input_key)
    if isinstance(input, Sequence) and not isinstance(input, (bytes, bytearray)):
        try:
            return convert_to_messages(input)
        except (ValueError, TypeError, NotImplementedError) as e:
            raise InvalidInputError(f"cannot read the input list as chat messages ({e})") from e
    raise InvalidInputError(
        f"cannot route a {type(input).__name__}: pass a str, a PromptValue, a list of messages or a dict "
        "(with input_key naming the key that holds the text)"
    )


def chat_turns(messages: Sequence[BaseMessage]) -> tuple[list[tuple[str, str]], str | None]:
    """``(role, text)`` turns for :func:`ir3de.routing.conversation.route_conversation`, and the expert of the
    last assistant message a routing face answered (``None`` when there is none)."""
    turns = []
    for m in messages:
        role = getattr(m, "role", None) if m.type == "chat" else m.type
        turns.append((str(role), str(m.text)))
    history = last_routed_expert((m.response_metadata for m in messages if m.type == "ai"), METADATA_KEY)
    return turns, history


def session_id_from(
    config: Mapping[str, Any] | None = None, kwargs: dict[str, Any] | None = None
) -> Hashable | None:
    """The session id of a call: a ``session_id=`` keyword (popped from ``kwargs``), else the
    ``configurable`` of ``config`` or of the config LangChain is running this call under."""
    if kwargs is not None and "session_id" in kwargs:
        return kwargs.pop("session_id")  # type: ignore[no-any-return]
    for source in (config, var_child_runnable_config.get()):
        configurable = (source or {}).get("configurable") or {}
        for key in SESSION_KEYS:
            if configurable.get(key) is not None:
                return configurable[key]  # type: ignore[no-any-return]
    return None
