"""Adapter-side glue for conversation routing, shared by the LangChain and LlamaIndex adapters.

No routing math lives here: every decision comes from :meth:`ir3de.Router.route_conversation`, run
through the core :class:`ir3de.serving.registry.ExpertRegistry` (``route_with``) so that the decision and the
expert's handler come from one consistent registry pairing. This module only

* resolves the options both adapters take with the same names — ``conversation`` (a
  :class:`~ir3de.routing.conversation.ConversationSettings` or a dict of its fields), ``session_store`` —
  and maps each adapter's legacy ``route_on`` value onto them;
* finds the previous expert of a chat: the session store (by session id) first, else the route an
  adapter wrote into the last assistant message it answered (LangChain's ``response_metadata``), else
  the expert the same store remembers for the conversation so far, keyed by a digest of its user
  messages (so a LlamaIndex chat engine's memory, which replays the history verbatim, keeps its
  expert with no session id; a memory that drops old messages just starts afresh).

Example:
    >>> settings_for(None, "last_user", adapter="langchain").margin
    0.0
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ir3de.errors import InvalidInputError
from ir3de.routing.conversation import ConversationSettings
from ir3de.serving.registry import ExpertRegistry, Routed
from ir3de.serving.sessions import SessionStore

__all__ = [
    "LEGACY_ROUTE_ON",
    "SESSION_KEYS",
    "ConversationOptions",
    "route_chat",
    "settings_for",
]

#: ``configurable`` keys (LangChain ``RunnableConfig``) read as the session id, in this order.
SESSION_KEYS = ("session_id", "thread_id", "conversation_id")

#: Each adapter's old ``route_on`` values → the equivalent conversation settings.
LEGACY_ROUTE_ON: Mapping[str, Mapping[str, ConversationSettings]] = {
    "langchain": {
        "last_user": ConversationSettings.last_message(),
        "conversation": ConversationSettings.whole(assistant_weight=1.0),
    },
    "llama_index": {
        "last_user": ConversationSettings.last_message(),
        "user": ConversationSettings.whole(assistant_weight=0.0),
        "all": ConversationSettings.whole(assistant_weight=1.0),
    },
}

H = TypeVar("H")

_NEW_OPTION = (
    "conversation=ConversationSettings(half_life=..., user_weight=..., assistant_weight=..., "
    "include_system=..., margin=...) (from ir3de.routing.conversation)"
)


def settings_for(conversation: Any, route_on: Any, *, adapter: str) -> ConversationSettings:
    """The conversation settings an adapter routes chats with.

    ``conversation``: ``None`` (the library defaults), a :class:`ConversationSettings` or a dict of its
    fields. ``route_on``: ``None``, or one of the adapter's legacy values (see :data:`LEGACY_ROUTE_ON`),
    which maps to equivalent settings; any other value, or both options at once, raises
    :class:`~ir3de.errors.InvalidInputError` naming the ``conversation`` option.
    """
    legacy = LEGACY_ROUTE_ON[adapter]
    if route_on is not None:
        if conversation is not None:
            raise InvalidInputError(
                f"pass either route_on={route_on!r} (legacy) or conversation=..., not both; use {_NEW_OPTION}"
            )
        if isinstance(route_on, str) and route_on in legacy:
            return legacy[route_on]
        raise InvalidInputError(
            f"route_on={route_on!r} is not supported any more (accepted legacy values: {sorted(legacy)}); "
            f"conversations are routed with {_NEW_OPTION}; e.g. the last n turns ≈ "
            "conversation=ConversationSettings(half_life=n / 2, margin=0)"
        )
    if conversation is None:
        return ConversationSettings()
    if isinstance(conversation, ConversationSettings):
        return conversation
    if isinstance(conversation, Mapping):
        try:
            return ConversationSettings(**conversation)
        except TypeError as e:
            raise InvalidInputError(f"conversation={dict(conversation)!r}: {e}; use {_NEW_OPTION}") from e
    raise InvalidInputError(
        f"conversation must be a ConversationSettings or a dict of its fields, got {type(conversation).__name__}"
    )


class ConversationOptions:
    """What an adapter instance routes chats with: settings and a session store (shared by its views)."""

    __slots__ = ("settings", "store")

    def __init__(self, settings: ConversationSettings, store: SessionStore | None = None) -> None:
        if store is not None and not isinstance(store, SessionStore):
            raise InvalidInputError(
                f"session_store must be an ir3de.serving.sessions.SessionStore, got {type(store).__name__}"
            )
        self.settings = settings
        self.store = store if store is not None else SessionStore()


def last_routed_expert(metadata: Iterable[Mapping[str, Any] | None], key: str) -> str | None:
    """The expert in ``meta[key]["expert"]`` of the last assistant message that has one (metadata of the
    assistant messages, oldest first)."""
    found: str | None = None
    for meta in metadata:
        route = (meta or {}).get(key)
        if isinstance(route, Mapping) and isinstance(route.get("expert"), str):
            found = route["expert"]
    return found


def history_key(turns: Sequence[tuple[str, str]], *, before_last_user: bool) -> tuple[str, str] | None:
    """A store key for a conversation so far: a digest of its user messages (all of them, or all but the
    last user message when ``before_last_user``); ``None`` when there are none."""
    users = [text for role, text in turns if str(getattr(role, "value", role)).lower() in ("user", "human")]
    if before_last_user:
        users = users[:-1]
    if not users:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for text in users:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return ("ir3de-history", digest.hexdigest())


def route_chat(
    registry: ExpertRegistry[H],
    options: ConversationOptions,
    turns: Sequence[tuple[str, str]],
    *,
    session_id: Hashable | None = None,
    history_expert: str | None = None,
    remember: bool = True,
) -> Routed[H]:
    """Route ``turns`` ((role, text) pairs) with the options; return the decision and its expert's handler.

    The decision comes from :meth:`ir3de.Router.route_conversation` run through
    :meth:`ir3de.serving.registry.ExpertRegistry.route_with`, so decision and handler come from one registry
    pairing of the registry (an expert removed meanwhile never leaves a decision without its handler). The previous
    expert: the session's stored one (by ``session_id``), else ``history_expert``, else the one stored
    for the conversation's earlier user messages. With ``remember`` the final decision is stored for the
    session (read, route and write under the session's lock, as :func:`ir3de.serving.sessions.route_session`
    does) and for the conversation so far; ``route_with`` may run the routing more than once, so the
    store is written only here, once, after it returns. Fallback routes are not remembered.
    """
    turns = list(turns)
    store = options.store
    settings = options.settings

    def decide(previous: str | None) -> Routed[H]:
        return registry.route_with(
            lambda router: router.route_conversation(turns, previous_expert=previous, settings=settings)
        )

    if session_id is not None and remember:
        with store.locked(session_id):
            stored = store.get(session_id)
            routed = decide(stored if stored is not None else history_expert)
            if not routed.decision.fallback_used:
                store.set(session_id, routed.decision.expert)
        return routed
    previous = store.get(session_id) if session_id is not None else None
    if previous is None:
        previous = history_expert
    if previous is None:
        earlier = history_key(turns, before_last_user=True)
        previous = store.get(earlier) if earlier is not None else None
    routed = decide(previous)
    now = history_key(turns, before_last_user=False)
    if remember and now is not None and not routed.decision.fallback_used:
        store.set(now, routed.decision.expert)
    return routed
