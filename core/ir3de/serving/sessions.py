"""Sessions: which expert each conversation's last turn went to, so the next turn can stick to it.

A :class:`SessionStore` maps a session id to the expert of its last routed turn (expiry, size bound,
thread-safe); :func:`route_session` reads, routes (:func:`ir3de.routing.conversation.route_conversation`)
and writes one session atomically. The gateway and the adapters share them; the evidence math stays in
:mod:`ir3de.routing.conversation`.

Example:
    >>> store = SessionStore(ttl=1800)
    >>> store.set("user-42", "math")
    >>> store.get("user-42")
    'math'
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ir3de.routing.conversation import (
    ConversationDecision,
    ConversationRouter,
    ConversationSettings,
    route_conversation,
)

__all__ = ["SessionStore", "route_session"]


class SessionStore:
    """Session id → the expert its last turn went to, with an expiry and a size bound; thread-safe.

    Entries expire ``ttl`` seconds after they were last written; beyond ``max_sessions`` the least
    recently written session is dropped. :func:`route_session` reads, routes and writes one session
    atomically (a lock per session-id stripe, so different sessions do not wait on each other).

    Args:
        ttl: seconds a session's expert is remembered (``math.inf``: forever).
        max_sessions: sessions kept at most.
        clock: a monotonic clock in seconds (tests pass a fake one).

    Example:
        >>> store = SessionStore(ttl=600, max_sessions=2)
        >>> store.set("alice", "math"); store.set("bob", "code"); store.set("carol", "code")
        >>> store.get("alice"), store.get("carol"), len(store)
        (None, 'code', 2)
    """

    _STRIPES = 64

    def __init__(
        self, ttl: float = 3600.0, max_sessions: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not (isinstance(ttl, (int, float)) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive int, got {max_sessions!r}")
        self.ttl = float(ttl)
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[str, float]] = OrderedDict()
        self._stripes = [threading.Lock() for _ in range(self._STRIPES)]

    def _purge(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (_, expires) = next(iter(entries.items()))
            if expires > now:
                break
            del entries[key]

    def get(self, session_id: Hashable) -> str | None:
        """The session's last expert, or ``None`` when unknown or expired."""
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            if entry[1] <= self._clock():
                del self._entries[session_id]
                return None
            return entry[0]

    def set(self, session_id: Hashable, expert: str) -> None:
        """Remember ``expert`` for ``session_id`` (restarts its expiry)."""
        with self._lock:
            now = self._clock()
            self._entries[session_id] = (expert, now + self.ttl)
            self._entries.move_to_end(session_id)
            self._purge(now)
            while len(self._entries) > self.max_sessions:
                self._entries.popitem(last=False)

    def pop(self, session_id: Hashable) -> str | None:
        """Forget a session; returns its expert (``None`` when unknown or expired)."""
        with self._lock:
            entry = self._entries.pop(session_id, None)
            return None if entry is None or entry[1] <= self._clock() else entry[0]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._entries)

    def __contains__(self, session_id: object) -> bool:
        return self.get(session_id) is not None

    @contextmanager
    def locked(self, session_id: Hashable) -> Iterator[None]:
        """Hold the lock of ``session_id``'s stripe (read-route-write of one session is atomic)."""
        lock = self._stripes[hash(session_id) % self._STRIPES]
        with lock:
            yield


def route_session(
    router: ConversationRouter,
    store: SessionStore,
    session_id: Hashable | None,
    messages: Any,
    *,
    settings: ConversationSettings | Mapping[str, Any] | None = None,
    previous_expert: str | None = None,
    **options: Any,
) -> ConversationDecision:
    """Route ``messages`` with the session's previous expert from ``store``, then remember the result.

    ``session_id=None`` routes statelessly (with ``previous_expert`` when given). A stored expert wins
    over ``previous_expert``. Fallback routes are not remembered (the next turn starts afresh).

    Example:
        >>> store = SessionStore(ttl=1800)                                                   # doctest: +SKIP
        >>> route_session(router, store, "user-42", [("user", "Solve 2x = 4")]).expert        # doctest: +SKIP
        'math'
    """
    if session_id is None:
        return route_conversation(
            router, messages, previous_expert=previous_expert, settings=settings, **options
        )
    with store.locked(session_id):
        stored = store.get(session_id)
        decision = route_conversation(
            router,
            messages,
            previous_expert=stored if stored is not None else previous_expert,
            settings=settings,
            **options,
        )
        if not decision.fallback_used:
            store.set(session_id, decision.expert)
        return decision
