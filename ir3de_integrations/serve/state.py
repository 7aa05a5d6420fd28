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

import hashlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ir3de.artifacts.revisions import (
    Head,
    Revision,
    RevisionError,
    RevisionStore,
    RevisionWatcher,
    Skipped,
    worker_id,
)
from ir3de.errors import Ir3deError, TokenizerMismatchError
from ir3de.serving.registry import ExpertRegistry

from .config import ConfigError, GatewayConfig, UpstreamConfig
from .errors import GatewayError
from .idempotency import CURRENT_KEY
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
        self._answers: dict[str, tuple[float, dict[str, Any]]] = {}
        self._key_lock = threading.Lock()

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

    def ready(self) -> bool:
        """Whether this worker serves what it should (see :meth:`SharedState.ready`)."""
        return True

    def faults(self) -> dict[str, Any]:
        """Revisions skipped and store faults (``GET /admin/revisions``, ``/metrics``)."""
        return {"skipped": [], "head_fault": None, "stuck": None}

    # idempotency records (admin changes): in memory for one process, in the store for several
    def recall(self, key: str) -> dict[str, Any] | None:
        """The answer remembered for idempotency ``key``, or ``None``."""
        found = self._answers.get(key)
        return found[1] if found is not None and found[0] >= time.time() else None

    def remember(self, key: str, answer: dict[str, Any], seconds: float) -> None:
        """Remember ``answer`` for idempotency ``key`` for ``seconds``."""
        now = time.time()
        for k in [k for k, (expires, _) in self._answers.items() if expires < now]:
            del self._answers[k]
        self._answers[key] = (now + seconds, answer)

    def key_lock(self, key: str) -> Any:
        """A lock held while a change with idempotency ``key`` runs (so a concurrent retry waits);
        in one process one lock serves every key (admin changes are serialised there anyway)."""
        return self._key_lock

    def describe(self) -> dict[str, Any]:
        """What ``GET /admin/revisions`` shows."""
        return {
            "head": None,
            "state_dir": None,
            "worker": self.worker,
            "revision": self.revision,
            "ready": self.ready(),
            **self.faults(),
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


#: Loads of a revision that verifies but fails here (not a damaged artifact) before the worker
#: reports itself not ready; it keeps retrying every ``RETRY_SECONDS`` after that.
LOAD_ATTEMPTS = 3
RETRY_SECONDS = 5.0
STORE_FAULT = "state_store_fault"
#: The extras key of the idempotency record committed with a change (see :mod:`.idempotency`).
IDEMPOTENCY_EXTRA = "idempotency_key"


def store_fault(what: str, folder: Path, error: BaseException | str) -> GatewayError:
    """The 503 of a damaged revision store (the server's fault, not the client's), with the repair."""
    return GatewayError(
        503,
        f"{what}: the gateway's revision store {folder} is damaged ({error}); it serves the newest good "
        f"revision meanwhile. Repair: `ir3de revisions repair {folder}` (points HEAD at the newest revision "
        "that verifies), or restore the folder from a backup; retry the request then",
        code=STORE_FAULT,
    )


def _permanent(error: BaseException | None) -> bool:
    """A revision that fails this way fails for every worker (a damaged or inconsistent artifact)."""
    return isinstance(error, (Ir3deError, ValueError, KeyError))


class SharedState(State):
    """Routing state that follows a :class:`~ir3de.artifacts.revisions.RevisionStore` (see the module doc).

    Faults: a revision that does not verify (a corrupted file, garbled extras) or cannot be served (an
    expert without upstream) is skipped, logged once and listed by :meth:`faults`; the worker serves the
    newest revision that loads. A revision that verifies but fails to load here (memory, I/O) is
    retried; after :data:`LOAD_ATTEMPTS` the worker is not :meth:`ready` until it converges.
    """

    def __init__(
        self,
        store: RevisionStore,
        revision: Revision,
        router: Any,
        poll_seconds: float,
        embeddings: Any,
        skipped: list[Skipped] | None = None,
        configs: Mapping[str, UpstreamConfig] | None = None,
    ) -> None:
        super().__init__(
            Upstreams(router, configs if configs is not None else upstreams_of(revision.extras)),
            revision.number,
        )
        self.store = store
        self.poll_seconds = poll_seconds
        self.embeddings = embeddings
        self._swap_lock = threading.Lock()
        self._converge_lock = threading.Lock()
        self.skipped: dict[int, str] = {}
        self.head_fault: str | None = None
        self.stuck: str | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._note_skipped(skipped or [])
        self._watcher = RevisionWatcher(
            store,
            self._follow,
            lambda: self.revision,
            details=lambda: {"since": self.since, "swaps": self.swaps},
            worker=self.worker,
            poll_seconds=poll_seconds,
            on_fault=self._on_head_fault,
        )

    @classmethod
    def open(cls, config: GatewayConfig, router: Any | None, load: Callable[[str], Any]) -> SharedState:
        """Seed ``config.state_dir`` from ``router`` (else ``load(config.router)``) and
        ``config.experts`` when it is empty, else load the newest revision that loads (the folder wins
        over the config); leftovers of killed processes are removed first.

        Raises:
            RevisionError: no revision of the store can be served (each reason in the message).
        """
        assert config.state_dir is not None
        store = RevisionStore(Path(config.state_dir), keep=config.revision_keep)
        store.clean()
        head, fault = store.head_or_fault()
        if head is None and fault is None and not store.revisions():
            seed = router if router is not None else load(config.router)
            store.initialize(seed.save_pretrained, extras_of(config.experts), writer=worker_id())
        embeddings = _loaded_embeddings(router)
        revision, (loaded, configs), skipped = store.read_newest(lambda r: _prepare(r, embeddings))
        state = cls(store, revision, loaded, config.revision_poll_seconds, embeddings, skipped, configs)
        if fault is not None:
            state._on_head_fault(fault)
        return state

    # ------------------------------------------------------------------ faults
    def _note_skipped(self, skipped: list[Skipped]) -> list[Skipped]:
        """Record damaged revisions (one log line each); return the transient failures."""
        transient = []
        for s in skipped:
            if s.revision < 0:
                continue  # a garbled HEAD: reported as head_fault
            if not _permanent(s.error):
                transient.append(s)
            elif s.revision not in self.skipped:
                self.skipped[s.revision] = s.reason
                logger.warning(
                    json.dumps(
                        {"event": "revision_skipped", "revision": s.revision, "worker": self.worker,
                         "reason": s.reason, "repair": f"ir3de revisions repair {self.store.folder}"},
                        ensure_ascii=False,
                    )
                )  # fmt: skip
        return transient

    def _on_head_fault(self, fault: str) -> None:
        if fault != self.head_fault:
            logger.warning(
                json.dumps(
                    {"event": "head_fault", "worker": self.worker, "reason": fault,
                     "repair": f"ir3de revisions repair {self.store.folder}"},
                    ensure_ascii=False,
                )
            )  # fmt: skip
        self.head_fault = fault
        self._converge(None)

    def ready(self) -> bool:
        """``False`` while a revision newer than the one served verifies but cannot be loaded here
        after :data:`LOAD_ATTEMPTS` (this worker cannot converge); damaged revisions do not count."""
        return self.stuck is None

    def faults(self) -> dict[str, Any]:
        return {
            "skipped": [{"revision": n, "reason": r} for n, r in sorted(self.skipped.items())],
            "head_fault": self.head_fault,
            "stuck": self.stuck,
        }

    # ------------------------------------------------------------------ following HEAD
    def _follow(self, head: Head) -> None:
        self.head_fault = None
        if head.revision > self.revision:
            self._converge(head.revision)

    def _converge(self, top: int | None) -> None:
        """Serve the newest revision above the one served that loads (``top``: HEAD's; ``None``: HEAD
        is garbled, look at what is on disk). Cheap when every newer revision is known damaged."""
        with self._converge_lock:
            if top is None:
                top = max(self.store.revisions(), default=0)
            pending = [n for n in range(self.revision + 1, top + 1) if n not in self.skipped]
            if not pending:
                self.stuck, self._failures = None, 0
                return
            if self._failures >= LOAD_ATTEMPTS and time.monotonic() < self._retry_at:
                return
            try:
                revision, (router, configs), skipped = self.store.read_newest(
                    lambda r: _prepare(r, self.embeddings), above=self.revision
                )
            except RevisionError as e:
                revision, skipped = None, e.skipped
            transient = self._note_skipped(skipped)
            if revision is not None:
                self._swap(revision.number, router, configs)
            if transient:
                self._failures += 1
                if self._failures >= LOAD_ATTEMPTS:
                    self._retry_at = time.monotonic() + RETRY_SECONDS
                    if self.stuck is None:
                        logger.warning(
                            json.dumps({"event": "not_ready", "worker": self.worker,
                                        "reason": transient[0].reason, "serving": self.revision})
                        )  # fmt: skip
                    self.stuck = f"revision {transient[0].revision} verifies but fails to load here: {transient[0].reason}"
            else:
                self.stuck, self._failures = None, 0

    def _swap(self, number: int, router: Any, configs: Mapping[str, UpstreamConfig]) -> None:
        with self._swap_lock:
            if number <= self.revision:
                return  # a newer one is served already (this worker's own commit, or a faster poll)
            self._publish(number, lambda: self.upstreams.replace(router, configs))
        logger.info('{"event": "revision", "revision": %d, "worker": "%s"}', number, self.worker)

    def sync(self) -> int:
        """Swap to the newest good revision now if it is newer (blocking: call it off the event loop);
        returns the revision served. The gateway calls it before an admin change and when a request
        names an expert this worker does not know (read-your-writes); engines that announce changes
        themselves (e.g. Ray Serve's ``reconfigure``) call it too.

        Example:
            >>> app.state.gateway.state.sync()   # doctest: +SKIP
            7
        """
        head, fault = self.store.head_or_fault()
        if fault is not None:
            self._on_head_fault(fault)
        elif head is not None:
            self._follow(head)
        return self.revision

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._watcher.stop()

    # ------------------------------------------------------------------ idempotency
    def recall(self, key: str) -> dict[str, Any] | None:
        return self.store.recall(key)

    def remember(self, key: str, answer: dict[str, Any], seconds: float) -> None:
        self.store.remember(key, answer, seconds=seconds)

    def key_lock(self, key: str) -> Any:
        """A file lock per key in the store: a retry on another worker waits for the first to answer."""
        from filelock import FileLock

        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return FileLock(
            str(self.store.folder / "idempotency" / f".{digest}.lock"), timeout=600, thread_local=False
        )

    # ------------------------------------------------------------------ changing
    def change(self, change: Change[T]) -> T:
        """Apply ``change`` to the newest revision (on a private copy of its router and upstreams),
        commit it as the next revision, then serve it here. Other workers follow within the poll
        interval. When ``change`` raises, nothing is committed and nothing changes.

        A damaged newest revision (or a garbled HEAD) is skipped: the change applies to the newest
        revision that loads, which repairs the store. When none loads, or the store cannot be
        written, a 503 :class:`GatewayError` (code ``state_store_fault``) says so and how to repair.
        """
        out: dict[str, Any] = {}
        key = CURRENT_KEY.get()

        def update(head: Revision) -> tuple[Callable[[Path], object], dict[str, Any]]:
            if key is not None:
                committed = self._committed(key, head.number)
                if committed is not None:
                    raise GatewayError(
                        409,
                        f"the change with this Idempotency-Key was committed as revision {committed}; its "
                        "answer was lost with the worker that made it. It is not applied again: GET the "
                        "resource to see the result",
                        code="idempotent_change_committed",
                    )
            try:
                router, configs = _prepare(head, self.embeddings)
            except Exception as e:  # damaged: apply the change to the newest revision that loads
                if not _permanent(e):  # it verifies but fails here: never build on an older one
                    raise _StoreFault(e) from e
                try:
                    _, (router, configs), skipped = self.store.read_newest(
                        lambda r: _prepare(r, self.embeddings), above=0
                    )
                except RevisionError as none:
                    self._note_skipped(none.skipped)
                    raise _StoreFault(none) from none
                self._note_skipped(skipped or [Skipped(head.number, f"{type(e).__name__}: {e}", e)])
            if self.embeddings is None:  # the first change of this worker: keep them for the next
                self.embeddings = router.embeddings
            copy = Upstreams(router, configs)
            out["result"] = change(copy.registry)
            out["router"], out["configs"] = router, copy.configs()
            extras = extras_of(out["configs"])
            if key is not None:
                extras[IDEMPOTENCY_EXTRA] = key
            return router.save_pretrained, extras

        try:
            revision = self.store.commit(update, writer=self.worker)
        except _StoreFault as e:
            raise store_fault("the change was not applied", self.store.folder, e.error) from None
        except (OSError, RevisionError) as e:
            if "result" in out or isinstance(e, RevisionError):
                raise store_fault("the change was not committed", self.store.folder, e) from None
            raise
        except Exception as e:
            if type(e).__name__ == "Timeout":  # filelock: another commit holds the lock
                raise store_fault("the change was not committed", self.store.folder, e) from None
            raise
        self.head_fault = None
        self._swap(revision.number, out["router"], out["configs"])
        result: T = out["result"]
        return result

    def _committed(self, key: str, head: int) -> int | None:
        """The revision (of those kept) that committed the change with idempotency ``key``."""
        for number in sorted((n for n in self.store.revisions() if n <= head), reverse=True):
            try:
                if self.store.load(number).extras.get(IDEMPOTENCY_EXTRA) == key:
                    return number
            except RevisionError:
                continue
        return None

    def describe(self) -> dict[str, Any]:
        head, fault = self.store.head_or_fault()
        stale_after = max(3 * self.poll_seconds, 2.0)
        return {
            "head": None
            if head is None
            else {"revision": head.revision, "time": head.time, "writer": head.writer},
            "state_dir": str(self.store.folder),
            "worker": self.worker,
            "revision": self.revision,
            "ready": self.ready(),
            **self.faults(),
            "head_fault": fault,
            "workers": [w.to_dict() for w in self.store.workers(stale_after)],
        }


class _StoreFault(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _prepare(revision: Revision, embeddings: Any) -> tuple[Any, dict[str, UpstreamConfig]]:
    """The router and upstream map of ``revision``, checked to be servable together (a revision
    whose router names an expert without upstream fails here, before any swap)."""
    router = _load_revision(revision, embeddings)
    configs = upstreams_of(revision.extras, f"revision {revision.number}")
    Upstreams._split(router, configs)
    return router, configs


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
