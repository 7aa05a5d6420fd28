"""Routing state shared by several gateway workers through a :class:`ir3de.artifacts.revisions.RevisionStore`.

With ``state_dir`` in the gateway config, every worker (uvicorn worker, Ray Serve replica, another
machine on a shared file system) serves the newest revision of one router:

* at startup a worker seeds the store from ``router`` + ``experts`` when it is empty (one worker
  does, under the store's lock) and otherwise loads HEAD — so a restart keeps everything learned;
* an admin change (add/update/remove an expert, an upstream change, feedback, forgetting traffic,
  tuning thresholds) is applied to the newest revision, committed as the next one with the expert →
  upstream map (no keys: only ``api_key_env``) in its extras, then swapped in locally;
* a :class:`~ir3de.artifacts.revisions.RevisionWatcher` thread polls HEAD every ``revision_poll_seconds`` and
  swaps the worker to a newer revision (router + upstreams in one registry swap, loaded off the event
  loop, reusing the worker's embeddings); it writes the worker's heartbeat on each poll.

Without ``state_dir`` (:class:`LocalState`) changes apply in place, as before, and the revision is a
local counter.

Example:
    >>> state = SharedState.open(config, router=None)     # doctest: +SKIP
    >>> state.revision, state.router.experts               # doctest: +SKIP
    (3, ['math', 'code', 'legal'])
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ir3de.artifacts.revisions import Head, Revision, RevisionStore, RevisionWatcher, worker_id
from ir3de.errors import TokenizerMismatchError
from ir3de.serving.registry import ExpertRegistry

from .config import ConfigError, GatewayConfig, UpstreamConfig
from .upstreams import Upstream, Upstreams

__all__ = ["LocalState", "SharedState", "State", "extras_of", "upstreams_of"]

logger = logging.getLogger("ir3de.serve")

T = TypeVar("T")
#: The change an admin call makes, on a registry of expert → Upstream (the live one, or a copy).
Change = Callable[[ExpertRegistry[Upstream]], T]


def extras_of(configs: Mapping[str, UpstreamConfig]) -> dict[str, Any]:
    """What a revision stores beside the router: the upstream map, without secrets."""
    return {"upstreams": {n: c.public() for n, c in configs.items()}}


def upstreams_of(extras: Mapping[str, Any], where: str = "the revision") -> dict[str, UpstreamConfig]:
    """The upstream map stored by :func:`extras_of`."""
    stored = extras.get("upstreams")
    if not isinstance(stored, Mapping):
        raise ConfigError(f"{where} stores no upstream map ('upstreams' in extras.json)")
    return {str(n): UpstreamConfig.from_dict(str(n), u) for n, u in stored.items()}


class _Served:
    """What a worker serves: one immutable (revision) token, replaced on every swap."""

    __slots__ = ("revision",)

    def __init__(self, revision: int) -> None:
        self.revision = revision


_SWAPPING = _Served(-1)
_instances = itertools.count(1)


def _worker_name() -> str:
    """``<host>-<pid>``; a second gateway in the same process (tests) gets ``-2``, ``-3``..."""
    n = next(_instances)
    return worker_id() if n == 1 else f"{worker_id()}-{n}"


class State:
    """The routing state one worker serves: upstreams (router + expert → upstream registry), the
    revision, the worker id. :class:`LocalState` and :class:`SharedState` differ in how changes land."""

    upstreams: Upstreams

    def __init__(self, upstreams: Upstreams, revision: int) -> None:
        self.upstreams = upstreams
        self.worker = _worker_name()
        self._served = _Served(revision)
        self.since = time.time()
        """When the revision served now was swapped in (epoch seconds)."""
        self.swaps = 0
        self.on_swap: Callable[[int], object] | None = None  # metrics hook

    @property
    def revision(self) -> int:
        """The revision served now (during a swap: the one before)."""
        served = self._served
        return self._previous if served is _SWAPPING else served.revision

    _previous = 0

    @property
    def router(self) -> Any:
        return self.upstreams.registry.router

    def routed(self, route: Callable[[], T]) -> tuple[T, int]:
        """``route()`` and the revision it routed on (routed again when a swap lands meanwhile)."""
        while True:
            served = self._served
            if served is _SWAPPING:
                time.sleep(0)
                continue
            result = route()
            if self._served is served:
                return result, served.revision

    def _publish(self, revision: int, swap: Callable[[], object]) -> None:
        """Swap (microseconds: a registry swap) with routing threads told to wait for its end."""
        before = self._served
        self._previous = before.revision
        self._served = _SWAPPING
        try:
            swap()
        except BaseException:
            self._served = before  # nothing changed
            raise
        self._served = _Served(revision)
        self.since = time.time()
        self.swaps += 1
        if self.on_swap is not None:
            self.on_swap(revision)

    def change(self, change: Change[T]) -> T:
        raise NotImplementedError

    def sync(self) -> int:
        """Catch up with other workers' changes now; returns the revision served."""
        return self.revision

    def start(self) -> None:
        """Start following other workers' changes (nothing for one process)."""

    def stop(self) -> None:
        """Stop following."""

    def describe(self) -> dict[str, Any]:
        """What ``GET /admin/revisions`` shows."""
        return {
            "head": None,
            "state_dir": None,
            "worker": self.worker,
            "revision": self.revision,
            "workers": [
                {"worker": self.worker, "revision": self.revision, "since": self.since, "stale": False}
            ],
        }


class LocalState(State):
    """One process: admin changes apply in place through the registry; the revision counts them."""

    def __init__(self, router: Any, configs: Mapping[str, UpstreamConfig]) -> None:
        super().__init__(Upstreams(router, configs), 1)
        self._lock = threading.Lock()

    def change(self, change: Change[T]) -> T:
        with self._lock:
            result = change(self.upstreams.registry)
            self._served = _Served(self._served.revision + 1)
            self.since = time.time()
            self.swaps += 1
            if self.on_swap is not None:
                self.on_swap(self._served.revision)
            return result


class SharedState(State):
    """Routing state that follows a :class:`~ir3de.artifacts.revisions.RevisionStore` (see the module doc)."""

    def __init__(
        self,
        store: RevisionStore,
        revision: Revision,
        router: Any,
        poll_seconds: float,
        embeddings: Any,
    ) -> None:
        super().__init__(Upstreams(router, upstreams_of(revision.extras)), revision.number)
        self.store = store
        self.poll_seconds = poll_seconds
        self.embeddings = embeddings
        self._swap_lock = threading.Lock()
        self._watcher = RevisionWatcher(
            store,
            self._follow,
            lambda: self.revision,
            details=lambda: {"since": self.since, "swaps": self.swaps},
            worker=self.worker,
            poll_seconds=poll_seconds,
        )

    @classmethod
    def open(cls, config: GatewayConfig, router: Any | None, load: Callable[[str], Any]) -> SharedState:
        """Seed ``config.state_dir`` from ``router`` (else ``load(config.router)``) and
        ``config.experts`` when it is empty, else load its HEAD (the folder wins over the config)."""
        assert config.state_dir is not None
        store = RevisionStore(Path(config.state_dir), keep=config.revision_keep)
        if store.head() is None:
            seed = router if router is not None else load(config.router)
            store.initialize(seed.save_pretrained, extras_of(config.experts), writer=worker_id())
        embeddings = _loaded_embeddings(router)
        revision, loaded = store.read(lambda r: _load_revision(r, embeddings))
        return cls(store, revision, loaded, config.revision_poll_seconds, embeddings)

    # ------------------------------------------------------------------ following HEAD
    def _follow(self, head: Head) -> None:
        if head.revision <= self.revision:
            return
        revision, router = self.store.read(lambda r: _load_revision(r, self.embeddings))
        self._swap(revision.number, router, upstreams_of(revision.extras))

    def _swap(self, number: int, router: Any, configs: Mapping[str, UpstreamConfig]) -> None:
        with self._swap_lock:
            if number <= self.revision:
                return  # a newer one is served already (this worker's own commit, or a faster poll)
            self._publish(number, lambda: self.upstreams.replace(router, configs))
        logger.info('{"event": "revision", "revision": %d, "worker": "%s"}', number, self.worker)

    def sync(self) -> int:
        """Swap to HEAD now if it is newer (blocking: call it off the event loop); returns the
        revision served. For engines that announce changes themselves (e.g. Ray Serve's
        ``reconfigure``) instead of, or besides, the watcher.

        Example:
            >>> app.state.gateway.state.sync()   # doctest: +SKIP
            7
        """
        head = self.store.head()
        if head is not None:
            self._follow(head)
        return self.revision

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._watcher.stop()

    # ------------------------------------------------------------------ changing
    def change(self, change: Change[T]) -> T:
        """Apply ``change`` to the newest revision (on a private copy of its router and upstreams),
        commit it as the next revision, then serve it here. Other workers follow within the poll
        interval. When ``change`` raises, nothing is committed and nothing changes."""
        out: dict[str, Any] = {}

        def update(head: Revision) -> tuple[Callable[[Path], object], dict[str, Any]]:
            router = _load_revision(head, self.embeddings)
            if self.embeddings is None:  # the first change of this worker: keep them for the next
                self.embeddings = router.embeddings
            copy = Upstreams(router, upstreams_of(head.extras))
            out["result"] = change(copy.registry)
            out["router"], out["configs"] = router, copy.configs()
            return router.save_pretrained, extras_of(out["configs"])

        revision = self.store.commit(update, writer=self.worker)
        self._swap(revision.number, out["router"], out["configs"])
        result: T = out["result"]
        return result

    def describe(self) -> dict[str, Any]:
        head = self.store.head()
        stale_after = max(3 * self.poll_seconds, 2.0)
        return {
            "head": None
            if head is None
            else {"revision": head.revision, "time": head.time, "writer": head.writer},
            "state_dir": str(self.store.folder),
            "worker": self.worker,
            "revision": self.revision,
            "workers": [w.to_dict() for w in self.store.workers(stale_after)],
        }


def _loaded_embeddings(router: Any) -> Any:
    """The embeddings a given in-memory router already holds (``None``: none given)."""
    if router is None:
        return None
    try:
        return router.embeddings  # an in-memory router fitted here holds them; a loaded one loads once
    except Exception:  # no reachable embedding source: revisions load without (routing needs none)
        return None


def _load_revision(revision: Revision, embeddings: Any) -> Any:
    """The router of ``revision``, reusing ``embeddings`` (tokenizer + matrix) when they match."""
    from ir3de import Router

    if embeddings is not None:
        try:
            return Router.from_pretrained(
                revision.folder, embeddings=embeddings, device="cpu", progress=False
            )
        except TokenizerMismatchError:
            pass  # another embedding source: the router loads its own when it grows
    return Router.from_pretrained(revision.folder, device="cpu", progress=False)
