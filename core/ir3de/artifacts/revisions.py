"""Numbered revisions of a router artifact in one shared folder: the source of truth for many workers.

Several processes (uvicorn workers, Ray Serve replicas, machines on a shared file system) serve the
same router and change it while serving. Each change becomes a new *revision*; every process follows
the newest one. Layout of a :class:`RevisionStore` folder::

    folder/
      HEAD                    {"revision": 7, "time": 1764400000.0, "writer": "host-1234"}
      revisions/6/            a saved router folder (config.json, *.safetensors, tokenizer.json...)
      revisions/7/            ... plus extras.json: the caller's data (e.g. expert -> upstream map)
      workers/<id>.json       heartbeats: which revision each process serves
      idempotency/<sha>.json  answers to admin changes by idempotency key (kept ``remember_seconds``)
      .lock                   the file lock that serialises commits

* ``HEAD`` is replaced atomically (``os.replace``) after the revision folder it names is complete, so
  a reader never sees a half-written revision.
* :meth:`RevisionStore.commit` runs under a cross-process file lock (:mod:`filelock`): the change is
  applied to the newest revision (the caller gets HEAD and catches up first when it is behind), so two
  concurrent changes never lose one.
* The last ``keep`` revisions are kept (never the one HEAD names is deleted); a reader that finds its
  revision pruned re-reads HEAD (:meth:`RevisionStore.read`).
* :class:`RevisionWatcher` polls HEAD (one small read per interval) and calls back on a change; it
  writes the process's heartbeat on each poll (:meth:`RevisionStore.workers` lists them).
* Faults: :meth:`RevisionStore.read_newest` reads the newest revision that loads (HEAD first, then
  older ones; a garbled HEAD or a corrupted file skips that revision, and says why);
  :meth:`RevisionStore.repair` points HEAD back at it. Temp folders of a commit killed mid-save and
  heartbeats of dead workers are removed on open (:meth:`RevisionStore.clean`) and on every commit.

This module does not import the router: a router is saved by a callable ``save(folder)`` (e.g.
``router.save_pretrained``) and read back by the caller from :attr:`Revision.folder`.

Example:
    >>> store = RevisionStore("state")                                              # doctest: +SKIP
    >>> store.initialize(router.save_pretrained, {"note": "seed"}, writer="w1")      # doctest: +SKIP
    Revision(number=1, ...)
    >>> def change(head):                                                           # doctest: +SKIP
    ...     r = Router.from_pretrained(head.folder)
    ...     r.add_expert("legal", legal_texts)
    ...     return r.save_pretrained, head.extras
    >>> store.commit(change, writer="w1").number                                    # doctest: +SKIP
    2
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ir3de.errors import ArtifactError, InvalidInputError

__all__ = [
    "EXTRAS_FILE",
    "HEAD_FILE",
    "Head",
    "Revision",
    "RevisionError",
    "RevisionStore",
    "RevisionWatcher",
    "Skipped",
    "WorkerStatus",
    "worker_id",
]

logger = logging.getLogger("ir3de.artifacts.revisions")

HEAD_FILE = "HEAD"
EXTRAS_FILE = "extras.json"
REVISIONS_DIR = "revisions"
WORKERS_DIR = "workers"
IDEMPOTENCY_DIR = "idempotency"
LOCK_FILE = ".lock"
#: Heartbeats not rewritten for this long are removed by :meth:`RevisionStore.clean` (any host).
FORGET_WORKER_SECONDS = 3600.0
_HEARTBEAT_KEYS = frozenset({"worker", "revision", "pid", "host", "updated"})
#: Times a reader re-reads HEAD when the revision it was reading got pruned meanwhile.
READ_ATTEMPTS = 8

T = TypeVar("T")
#: What a commit's ``update`` returns: how to save the new router (``save(folder)``) and its extras.
Change = tuple[Callable[[Path], object], Mapping[str, Any]]


class RevisionError(ArtifactError):
    """A revision store is empty, unreadable, or the revision asked for is gone (pruned).

    ``skipped``: the revisions tried and why each failed (:meth:`RevisionStore.read_newest`)."""

    def __init__(self, message: str, skipped: list[Skipped] | None = None) -> None:
        super().__init__(message)
        self.skipped: list[Skipped] = list(skipped or [])


def worker_id() -> str:
    """This process's id in heartbeats and HEAD's ``writer``: ``<host>-<pid>``.

    Example:
        >>> worker_id().endswith(str(os.getpid()))
        True
    """
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Head:
    """The content of ``HEAD``: the newest revision, when and by whom it was written."""

    revision: int
    time: float
    writer: str


@dataclass(frozen=True)
class Revision:
    """One revision: its number, its router folder and the caller's extras stored with it."""

    number: int
    folder: Path
    extras: Mapping[str, Any]


@dataclass(frozen=True)
class Skipped:
    """A revision that was not served because it could not be read: its number and why."""

    revision: int
    reason: str
    error: BaseException | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "reason": self.reason}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass(frozen=True)
class WorkerStatus:
    """One heartbeat: the revision a worker served when it last wrote, and how long ago that was
    (``fields``: what else the worker wrote, e.g. since when it serves that revision)."""

    worker: str
    revision: int | None
    pid: int
    host: str
    updated: float
    age: float
    stale: bool
    fields: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.fields,
            "worker": self.worker,
            "revision": self.revision,
            "pid": self.pid,
            "host": self.host,
            "updated": self.updated,
            "age_seconds": round(self.age, 3),
            "stale": self.stale,
        }


def _write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class RevisionStore:
    """A folder of numbered router revisions with an atomic ``HEAD`` and serialised commits.

    Args:
        folder: the shared state folder (created when missing).
        keep: how many of the newest revisions to keep (at least 1; HEAD's is never deleted).
        lock_timeout: seconds a commit waits for another process's commit before failing.

    Example:
        >>> store = RevisionStore(tmp_path / "state", keep=5)   # doctest: +SKIP
        >>> store.head() is None                                # doctest: +SKIP
        True
    """

    def __init__(
        self, folder: str | os.PathLike[str], *, keep: int = 10, lock_timeout: float = 600.0
    ) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise InvalidInputError(f"keep must be a positive integer (revisions to keep), got {keep!r}")
        self.folder = Path(folder).absolute()
        if self.folder.exists() and not self.folder.is_dir():
            raise RevisionError(f"{self.folder} exists and is not a folder; give a folder for the revisions")
        self.keep = keep
        self.lock_timeout = float(lock_timeout)
        (self.folder / REVISIONS_DIR).mkdir(parents=True, exist_ok=True)
        (self.folder / WORKERS_DIR).mkdir(exist_ok=True)
        (self.folder / IDEMPOTENCY_DIR).mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"RevisionStore({str(self.folder)!r}, keep={self.keep})"

    # ------------------------------------------------------------------ reading
    def head(self) -> Head | None:
        """HEAD (cheap: one small file read), or ``None`` when no revision was committed yet.

        Raises:
            RevisionError: HEAD exists but is not what this module writes.
        """
        path = self.folder / HEAD_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            return Head(int(data["revision"]), float(data["time"]), str(data["writer"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise RevisionError(
                f"{path} is not a revision HEAD ({e!r}); it is written by ir3de only — run `ir3de "
                f"revisions repair {self.folder}` to point it at the newest good revision"
            ) from None

    def revision_folder(self, number: int) -> Path:
        """Where revision ``number`` lives (it may be pruned or not yet written)."""
        return self.folder / REVISIONS_DIR / str(int(number))

    def revisions(self) -> list[int]:
        """The numbers of the revisions on disk, oldest first."""
        out = []
        for entry in (self.folder / REVISIONS_DIR).iterdir():
            if entry.name.isdigit() and entry.is_dir():
                out.append(int(entry.name))
        return sorted(out)

    def load(self, number: int | None = None) -> Revision:
        """Revision ``number`` (``None``: HEAD's) with its extras.

        Raises:
            RevisionError: the store is empty, or the revision is not on disk (pruned: use
                :meth:`read` to follow HEAD instead).
        """
        if number is None:
            head = self.head()
            if head is None:
                raise RevisionError(f"{self.folder} holds no revision yet; initialize it first")
            number = head.revision
        folder = self.revision_folder(number)
        try:
            extras = json.loads((folder / EXTRAS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RevisionError(
                f"revision {number} is not in {self.folder / REVISIONS_DIR} (pruned, keep={self.keep}); "
                "read HEAD again"
            ) from None
        except json.JSONDecodeError as e:
            raise RevisionError(f"{folder / EXTRAS_FILE} is not valid JSON ({e})") from None
        return Revision(int(number), folder, extras)

    def read(self, read: Callable[[Revision], T], number: int | None = None) -> tuple[Revision, T]:
        """``read(revision)`` on revision ``number`` (``None``: HEAD); if that revision is pruned before
        or while it is read, HEAD is read again and the newest revision read instead.

        Example:
            >>> revision, router = store.read(lambda r: Router.from_pretrained(r.folder))   # doctest: +SKIP
        """
        last: Exception | None = None
        for _ in range(READ_ATTEMPTS):
            try:
                revision = self.load(number)
            except RevisionError as e:
                head = self.head()
                if head is None or (number is not None and self.revision_folder(number).exists()):
                    raise
                last, number = e, None  # pruned: follow HEAD
                continue
            try:
                return revision, read(revision)
            except Exception as e:
                if revision.folder.exists():
                    raise  # the revision is there: a real error, not a prune
                last, number = e, None  # pruned while it was read: follow HEAD
        raise RevisionError(f"could not read a revision of {self.folder}: {last}") from last

    def head_or_fault(self) -> tuple[Head | None, str | None]:
        """HEAD and ``None``, or ``(None, why)`` when HEAD is garbled (never raises for a bad HEAD)."""
        try:
            return self.head(), None
        except RevisionError as e:
            return None, str(e)

    def read_newest(
        self, read: Callable[[Revision], T], *, above: int = 0
    ) -> tuple[Revision, T, list[Skipped]]:
        """``read(revision)`` on the newest revision for which it succeeds: HEAD's first, then older
        ones on disk (all of them, newest first, when HEAD itself is garbled); only revisions above
        ``above``. Returns the revision, what ``read`` returned, and the revisions skipped with why
        (a checksum mismatch, a truncated file, garbled extras, a garbled HEAD...).

        Example:
            >>> revision, router, skipped = store.read_newest(lambda r: Router.from_pretrained(r.folder))  # doctest: +SKIP
            >>> [s.revision for s in skipped]                                                           # doctest: +SKIP
            [8]

        Raises:
            RevisionError: no revision above ``above`` can be read (the message lists each reason).
        """
        head, fault = self.head_or_fault()
        on_disk = [n for n in self.revisions() if n > above]
        if head is not None:
            on_disk = [n for n in on_disk if n <= head.revision]  # above HEAD: a commit that died
            if head.revision not in on_disk and head.revision > above:
                on_disk.append(head.revision)
        skipped = [] if fault is None else [Skipped(-1, f"HEAD: {fault}")]
        for number in sorted(on_disk, reverse=True):
            try:
                revision = self.load(number)
                return revision, read(revision), skipped
            except Exception as e:  # a damaged revision: try the one before
                skipped.append(Skipped(number, f"{type(e).__name__}: {e}", e))
        reasons = "; ".join(f"revision {s.revision}: {s.reason}" for s in skipped) or "no revision on disk"
        raise RevisionError(
            f"no revision of {self.folder} above {above} can be read ({reasons}); restore a backup of the "
            "folder or point state_dir at an empty folder to start from the configured router",
            skipped,
        )

    def repair(
        self, read: Callable[[Revision], object], *, writer: str = "repair"
    ) -> tuple[Head, list[Skipped]]:
        """Point HEAD at the newest revision ``read`` accepts (see :meth:`read_newest`), drop the
        damaged revisions above it, temp folders and dead workers' heartbeats (what ``ir3de revisions
        repair STATE_DIR`` runs). Returns the new HEAD and what was skipped.

        Example:
            >>> head, skipped = store.repair(lambda r: Router.from_pretrained(r.folder))   # doctest: +SKIP
        """
        with self._lock():
            revision, _, skipped = self.read_newest(read)
            for s in skipped:
                if s.revision > revision.number:
                    shutil.rmtree(self.revision_folder(s.revision), ignore_errors=True)
            head = Head(revision.number, time.time(), writer)
            _write_json_atomically(
                self.folder / HEAD_FILE, {"revision": head.revision, "time": head.time, "writer": head.writer}
            )
            self._clean_locked()
        return head, skipped

    # ------------------------------------------------------------------ leftovers
    def clean(self) -> list[str]:
        """Remove what killed processes left: temp folders of commits that died mid-save (under the
        commit lock, so never a live commit's), heartbeats of dead workers on this host and heartbeats
        not rewritten for :data:`FORGET_WORKER_SECONDS`, expired idempotency records. Returns what was
        removed (paths relative to the folder). Runs on every commit too.

        Example:
            >>> store.clean()                                     # doctest: +SKIP
            ['revisions/.tmp-4-1a2b3c4d', 'workers/host-4242.json']
        """
        with self._lock():
            return self._clean_locked()

    def _clean_locked(self) -> list[str]:
        removed = []
        for entry in (self.folder / REVISIONS_DIR).iterdir():
            if entry.name.startswith(".tmp-"):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(f"{REVISIONS_DIR}/{entry.name}")
        host, now = socket.gethostname(), time.time()
        for path in (self.folder / WORKERS_DIR).iterdir():
            if path.name.startswith("."):  # a heartbeat's temp file: its writer died mid-write if old
                try:
                    if now - path.stat().st_mtime > 60:
                        path.unlink(missing_ok=True)
                        removed.append(f"{WORKERS_DIR}/{path.name}")
                except OSError:
                    pass
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                dead = (data.get("host") == host and not _pid_alive(int(data["pid"]))) or (
                    now - float(data["updated"]) > FORGET_WORKER_SECONDS
                )
            except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                dead = False  # being replaced meanwhile: leave it
            if dead:
                path.unlink(missing_ok=True)
                removed.append(f"{WORKERS_DIR}/{path.name}")
        for path in (self.folder / IDEMPOTENCY_DIR).glob(".*"):  # per-key locks and temp files
            try:
                if now - path.stat().st_mtime > FORGET_WORKER_SECONDS:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
        for path in (self.folder / IDEMPOTENCY_DIR).glob("*.json"):
            try:
                expired = now > float(json.loads(path.read_text(encoding="utf-8"))["expires"])
            except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                expired = True
            if expired:
                path.unlink(missing_ok=True)
                removed.append(f"{IDEMPOTENCY_DIR}/{path.name}")
        if removed:
            logger.info("revision store %s: removed leftovers %s", self.folder, removed)
        return removed

    # ------------------------------------------------------------------ idempotency
    def _idempotency_path(self, key: str) -> Path:
        import hashlib

        return self.folder / IDEMPOTENCY_DIR / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"

    def recall(self, key: str) -> dict[str, Any] | None:
        """The answer remembered for idempotency ``key`` (:meth:`remember`), ``None`` if none or expired.

        Example:
            >>> store.remember("POST /admin/experts 5f1c", {"status": 201}, seconds=86400)   # doctest: +SKIP
            >>> store.recall("POST /admin/experts 5f1c")["status"]                           # doctest: +SKIP
            201
        """
        try:
            data = json.loads(self._idempotency_path(key).read_text(encoding="utf-8"))
            if data.get("key") == key and time.time() <= float(data["expires"]):
                return dict(data["answer"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        return None

    def remember(self, key: str, answer: Mapping[str, Any], *, seconds: float) -> None:
        """Keep ``answer`` (JSON values) for idempotency ``key`` for ``seconds`` (atomic write)."""
        _write_json_atomically(
            self._idempotency_path(key),
            {"key": key, "expires": time.time() + float(seconds), "answer": dict(answer)},
        )

    # ------------------------------------------------------------------ writing
    def _lock(self) -> Any:
        from filelock import FileLock

        return FileLock(str(self.folder / LOCK_FILE), timeout=self.lock_timeout)

    def initialize(
        self, save: Callable[[Path], object], extras: Mapping[str, Any], *, writer: str
    ) -> Revision:
        """Write revision 1 from ``save`` and ``extras`` when the store is empty; else return HEAD's
        revision untouched (so of many workers starting together, exactly one seeds the store).

        Example:
            >>> store.initialize(router.save_pretrained, {"upstreams": {...}}, writer=worker_id())  # doctest: +SKIP
        """
        if self.head() is not None:
            return self.load()
        with self._lock():
            if self.head() is not None:
                return self.load()
            if self.revisions():
                raise RevisionError(
                    f"{self.folder} holds revisions {self.revisions()} but no HEAD; run `ir3de revisions "
                    f"repair {self.folder}` to point HEAD at the newest good one"
                )
            return self._write(1, save, extras, writer)

    def commit(self, update: Callable[[Revision], Change], *, writer: str) -> Revision:
        """Apply a change to the newest revision and publish it as the next one.

        Under the store's file lock, ``update(head)`` gets HEAD's :class:`Revision` — the caller loads it
        when it is behind (its own state is older) and applies its change on it — and returns
        ``(save, extras)``: ``save(folder)`` writes the changed router, ``extras`` is stored beside it.
        The new revision is written to a temporary folder, renamed into place, then HEAD is replaced.
        Concurrent commits from other threads or processes wait for the lock, so none is lost. When
        ``update`` raises, nothing is written.

        Raises:
            RevisionError: the store is empty (call :meth:`initialize` first).
            filelock.Timeout: another commit held the lock longer than ``lock_timeout``.
        """
        with self._lock():
            head, fault = self.head_or_fault()
            on_disk = self.revisions()
            if head is None and (fault is None or not on_disk):
                raise RevisionError(f"{self.folder} holds no revision yet; initialize it first")
            number = head.revision if head is not None else on_disk[-1]  # garbled HEAD: the newest
            try:
                current = self.load(number)
            except RevisionError:  # its extras are damaged: the caller falls back (read_newest)
                current = Revision(number, self.revision_folder(number), {})
            save, extras = update(current)
            self._clean_locked()
            return self._write(max([number, *on_disk]) + 1, save, extras, writer)

    def _write(
        self, number: int, save: Callable[[Path], object], extras: Mapping[str, Any], writer: str
    ) -> Revision:
        """Write revision ``number`` and point HEAD at it (the lock is held)."""
        root = self.folder / REVISIONS_DIR
        tmp = root / f".tmp-{number}-{uuid.uuid4().hex[:8]}"
        try:
            save(tmp)
            extras_data = dict(extras)
            with open(tmp / EXTRAS_FILE, "w", encoding="utf-8") as fh:
                json.dump(extras_data, fh, ensure_ascii=False, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            final = self.revision_folder(number)
            if final.exists():  # left by a commit that died before writing HEAD: never read
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _write_json_atomically(
            self.folder / HEAD_FILE, {"revision": number, "time": time.time(), "writer": writer}
        )
        self._prune(number)
        return Revision(number, final, extras_data)

    def _prune(self, head: int) -> None:
        for number in self.revisions():
            if number <= head - self.keep:
                shutil.rmtree(self.revision_folder(number), ignore_errors=True)

    # ------------------------------------------------------------------ heartbeats
    def heartbeat(self, worker: str, revision: int | None, **fields: Any) -> None:
        """Record that ``worker`` serves ``revision`` now (``workers/<worker>.json``, atomic)."""
        data = {
            "worker": worker,
            "revision": revision,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "updated": time.time(),
            **fields,
        }
        _write_json_atomically(self.folder / WORKERS_DIR / f"{worker}.json", data)

    def drop_heartbeat(self, worker: str) -> None:
        """Remove ``worker``'s heartbeat (it stops serving)."""
        (self.folder / WORKERS_DIR / f"{worker}.json").unlink(missing_ok=True)

    def workers(self, stale_after: float = 5.0, *, include_stale: bool = True) -> list[WorkerStatus]:
        """Every worker's last heartbeat, by worker id; ``stale`` when older than ``stale_after`` seconds.

        Example:
            >>> [(w.worker, w.revision) for w in store.workers()]   # doctest: +SKIP
            [('host-1234', 7), ('host-1235', 7)]
        """
        now = time.time()
        out = []
        for path in sorted((self.folder / WORKERS_DIR).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                revision = data.get("revision")
                status = WorkerStatus(
                    worker=str(data["worker"]),
                    revision=None if revision is None else int(revision),
                    pid=int(data["pid"]),
                    host=str(data["host"]),
                    updated=float(data["updated"]),
                    age=max(0.0, now - float(data["updated"])),
                    stale=now - float(data["updated"]) > stale_after,
                    fields={k: v for k, v in data.items() if k not in _HEARTBEAT_KEYS},
                )
            except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # removed or being replaced meanwhile
            if include_stale or not status.stale:
                out.append(status)
        return out


class RevisionWatcher:
    """A daemon thread that polls a store's HEAD and calls ``on_change(head)`` when it moves.

    Each poll also writes this worker's heartbeat with ``current()`` (the revision it serves). A
    callback that raises is logged and retried on the next poll.

    Args:
        store: the store to follow.
        on_change: called with the new :class:`Head` (in the watcher's thread).
        current: the revision this process serves now (for the heartbeat).
        details: more heartbeat fields (JSON values), e.g. since when that revision is served.
        worker: this process's id (default :func:`worker_id`).
        poll_seconds: seconds between polls.
        on_fault: called with the reason when HEAD is garbled (default: log it once).

    Example:
        >>> watcher = RevisionWatcher(store, lambda head: swap_to(head.revision), lambda: served)  # doctest: +SKIP
        >>> watcher.start(); ...; watcher.stop()                                                  # doctest: +SKIP
    """

    def __init__(
        self,
        store: RevisionStore,
        on_change: Callable[[Head], object],
        current: Callable[[], int | None],
        *,
        details: Callable[[], Mapping[str, Any]] | None = None,
        worker: str | None = None,
        poll_seconds: float = 1.0,
        on_fault: Callable[[str], object] | None = None,
    ) -> None:
        if isinstance(poll_seconds, bool) or not isinstance(poll_seconds, (int, float)) or poll_seconds <= 0:
            raise InvalidInputError(f"poll_seconds must be a positive number, got {poll_seconds!r}")
        self.store = store
        self.on_change = on_change
        self.current = current
        self.details = details
        self.worker = worker or worker_id()
        self.poll_seconds = float(poll_seconds)
        self.on_fault = on_fault
        self._seen: int | None = current()
        self._logged: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> Head | None:
        """One poll: call back if HEAD moved past what was seen or this process is still behind it
        (``on_fault(why)`` instead when HEAD is garbled), write the heartbeat; returns HEAD."""
        head, fault = self.store.head_or_fault()
        if fault is not None:
            if self.on_fault is not None:
                self.on_fault(fault)
            else:
                self._log_once(f"revision watcher: {fault}")
        elif head is not None:
            current = self.current()
            if head.revision != self._seen or (current is not None and current < head.revision):
                self.on_change(head)
                self._seen = head.revision
        self.store.heartbeat(self.worker, self.current(), **(self.details() if self.details else {}))
        return head

    def _log_once(self, message: str) -> None:
        """One log line per distinct problem (not a traceback every poll)."""
        if message != self._logged:
            self._logged = message
            logger.warning("%s", message)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:  # keep watching: the next poll retries
                self._log_once(
                    f"revision watcher: poll of {self.store.folder} failed: {type(e).__name__}: {e}"
                )
            self._stop.wait(self.poll_seconds)

    def start(self) -> RevisionWatcher:
        """Start polling in a daemon thread (returns ``self``)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ir3de-revision-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, *, drop_heartbeat: bool = True) -> None:
        """Stop polling (waits for the thread) and, by default, remove this worker's heartbeat."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.poll_seconds))
            self._thread = None
        if drop_heartbeat:
            self.store.drop_heartbeat(self.worker)
