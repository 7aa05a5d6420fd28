"""A router of an adapter's own: what each framework adapter and the gateway wrap, so that their
``add_expert``/``remove_expert``/``learn``/``tune`` never change the caller's :class:`~ir3de.Router`
(or another adapter built on the same one) behind its back.

The copy is cheap: statistics, settings and the routing table are immutable and swapped whole by the
router, so the copy shares them (no re-solve, no extra memory for the table) and only gets its own
lock and its own expert mapping. To share expert changes between adapters on purpose, pass one
:class:`~ir3de.serving.registry.ExpertRegistry` to both.

Example:
    >>> mine = own_copy(router)                           # doctest: +SKIP
    >>> mine.add_expert("music", music_texts)             # doctest: +SKIP
    >>> "music" in router.experts                         # doctest: +SKIP
    False
"""

from __future__ import annotations

import copy
import threading

from ir3de.router import Router

__all__ = ["own_copy"]

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def own_copy(router: Router) -> Router:
    """A :class:`~ir3de.Router` that routes exactly like ``router`` now and changes independently of it.

    Mutable containers (the expert statistics mapping, the evaluation record) are copied, locks are
    new; the immutable statistics, settings and routing table are shared.
    """
    clone = copy.copy(router)
    for name, value in vars(router).items():
        if isinstance(value, _LOCK_TYPES):
            setattr(clone, name, type(value)())
        elif isinstance(value, (dict, list, set)):
            setattr(clone, name, copy.copy(value))
    return clone
