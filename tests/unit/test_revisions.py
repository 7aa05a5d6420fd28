"""RevisionStore: atomic HEAD, serialised commits that lose nothing, retention, pruned reads, watcher.

The store moves folders and never looks inside them, so these tests save a small JSON "artifact"
(a list of applied changes); the gateway tests run it with real routers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ir3de.artifacts.revisions import (
    EXTRAS_FILE,
    Head,
    RevisionError,
    RevisionStore,
    RevisionWatcher,
    worker_id,
)
from ir3de.errors import ArtifactError, InvalidInputError

ROOT = Path(__file__).resolve().parents[2]


def _saver(changes: list[str]):
    def save(folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps(changes))

    return save


def _state(revision) -> list[str]:
    return json.loads((revision.folder / "state.json").read_text())


def _append(item: str):
    def update(head):
        return _saver([*_state(head), item]), {**head.extras, "last": item}

    return update


def test_empty_store_has_no_head_and_says_how_to_start(tmp_path):
    store = RevisionStore(tmp_path / "state")
    assert store.head() is None
    with pytest.raises(RevisionError, match="initialize"):
        store.load()
    with pytest.raises(RevisionError, match="initialize"):
        store.commit(_append("x"), writer="w")


def test_initialize_once_then_commits_number_up_and_head_is_atomic_json(tmp_path):
    store = RevisionStore(tmp_path / "state")
    first = store.initialize(_saver([]), {"upstreams": {"a": 1}}, writer="w1")
    assert first.number == 1 and first.extras == {"upstreams": {"a": 1}}
    # a second initialize (another worker starting) returns HEAD and writes nothing
    again = store.initialize(_saver(["ignored"]), {}, writer="w2")
    assert again.number == 1 and _state(again) == [] and again.extras == {"upstreams": {"a": 1}}
    second = store.commit(_append("add legal"), writer="w2")
    assert second.number == 2 and _state(second) == ["add legal"]
    head = store.head()
    assert isinstance(head, Head) and (head.revision, head.writer) == (2, "w2")
    assert json.loads((tmp_path / "state" / "HEAD").read_text())["revision"] == 2
    assert store.load().extras == {"upstreams": {"a": 1}, "last": "add legal"}
    assert json.loads((second.folder / EXTRAS_FILE).read_text())["last"] == "add legal"
    # no temporary files or folders are left behind
    leftovers = [p.name for p in (tmp_path / "state").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_a_failing_update_writes_nothing(tmp_path):
    store = RevisionStore(tmp_path / "state")
    store.initialize(_saver([]), {}, writer="w")

    def broken(head):
        raise ValueError("bad change")

    with pytest.raises(ValueError, match="bad change"):
        store.commit(broken, writer="w")

    def broken_save(head):
        def save(folder: Path) -> None:
            folder.mkdir()
            raise OSError("disk full")

        return save, {}

    with pytest.raises(OSError, match="disk full"):
        store.commit(broken_save, writer="w")
    assert store.head().revision == 1 and store.revisions() == [1]
    assert not [p for p in (tmp_path / "state" / "revisions").iterdir() if p.name.startswith(".")]


def test_commit_applies_the_change_on_the_newest_revision(tmp_path):
    """Two stores (two workers) on one folder: the second's change lands on top of the first's."""
    a, b = RevisionStore(tmp_path / "s"), RevisionStore(tmp_path / "s")
    a.initialize(_saver([]), {}, writer="a")
    a.commit(_append("from a"), writer="a")
    seen = []

    def update(head):
        seen.append(head.number)
        return _append("from b")(head)

    b.commit(update, writer="b")
    assert seen == [2] and _state(b.load()) == ["from a", "from b"]


def test_concurrent_commits_from_many_processes_lose_nothing(tmp_path):
    store = RevisionStore(tmp_path / "state", keep=3)
    store.initialize(_saver([]), {}, writer="seed")
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from ir3de.artifacts.revisions import RevisionStore
        store = RevisionStore(sys.argv[1], keep=3)
        who = sys.argv[2]
        def save_with(changes):
            def save(folder):
                folder.mkdir(parents=True)
                (folder / "state.json").write_text(json.dumps(changes))
            return save
        for i in range(int(sys.argv[3])):
            def update(head, i=i):
                changes = json.loads((head.folder / "state.json").read_text())
                return save_with([*changes, f"{who}:{i}"]), {}
            store.commit(update, writer=who)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), os.environ.get("PYTHONPATH", "")]),
    }
    procs, per = 4, 6
    running = [
        subprocess.Popen([sys.executable, "-c", script, str(store.folder), f"p{n}", str(per)], env=env)
        for n in range(procs)
    ]
    # and threads of this process commit at the same time
    threads = [
        threading.Thread(
            target=lambda t=t: [store.commit(_append(f"t{t}:{i}"), writer=f"t{t}") for i in range(per)]
        )
        for t in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(p.wait(timeout=120) == 0 for p in running)
    final = store.load()
    expected = {f"p{n}:{i}" for n in range(procs) for i in range(per)} | {
        f"t{t}:{i}" for t in range(2) for i in range(per)
    }
    assert final.number == 1 + len(expected)
    assert sorted(_state(final)) == sorted(expected)  # every change, each exactly once
    for who in [*(f"p{n}" for n in range(procs)), "t0", "t1"]:  # each writer's changes stay in order
        mine = [c for c in _state(final) if c.startswith(f"{who}:")]
        assert mine == [f"{who}:{i}" for i in range(per)]
    assert store.revisions() == [final.number - 2, final.number - 1, final.number]  # keep=3


def test_retention_keeps_the_newest_and_never_head(tmp_path):
    store = RevisionStore(tmp_path / "state", keep=2)
    store.initialize(_saver([]), {}, writer="w")
    for i in range(5):
        store.commit(_append(str(i)), writer="w")
    assert store.revisions() == [5, 6] and store.head().revision == 6
    with pytest.raises(RevisionError, match="pruned"):
        store.load(2)
    one = RevisionStore(tmp_path / "one", keep=1)
    one.initialize(_saver([]), {}, writer="w")
    one.commit(_append("x"), writer="w")
    assert one.revisions() == [2] and _state(one.load()) == ["x"]
    with pytest.raises(InvalidInputError, match="keep"):
        RevisionStore(tmp_path / "bad", keep=0)


def test_a_reader_whose_revision_is_pruned_reads_head_again(tmp_path):
    store = RevisionStore(tmp_path / "state", keep=1)
    store.initialize(_saver([]), {}, writer="w")
    store.commit(_append("a"), writer="w")  # revision 1 is pruned now
    revision, state = store.read(_state, 1)
    assert revision.number == 2 and state == ["a"]

    calls = []

    def read_while_pruned(rev):
        calls.append(rev.number)
        if len(calls) == 1:  # another worker commits while this one reads: its revision goes away
            store.commit(_append("b"), writer="other")
        return _state(rev)

    revision, state = store.read(read_while_pruned)
    assert calls == [2, 3] and revision.number == 3 and state == ["a", "b"]


def test_a_read_error_on_a_revision_that_is_there_is_raised(tmp_path):
    store = RevisionStore(tmp_path / "state")
    store.initialize(_saver([]), {}, writer="w")

    def broken(rev):
        raise ArtifactError("corrupted")

    with pytest.raises(ArtifactError, match="corrupted"):
        store.read(broken)


def test_a_foreign_head_is_a_clear_error(tmp_path):
    store = RevisionStore(tmp_path / "state")
    (tmp_path / "state" / "HEAD").write_text("ref: refs/heads/main\n")
    with pytest.raises(RevisionError, match="not a revision HEAD"):
        store.head()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RevisionError, match="not a folder"):
        RevisionStore(tmp_path / "file")


def test_watcher_calls_back_on_each_new_head_and_writes_heartbeats(tmp_path):
    store = RevisionStore(tmp_path / "state")
    store.initialize(_saver([]), {}, writer="w")
    served = {"revision": 1}
    seen: list[int] = []
    changed = threading.Event()

    def on_change(head: Head) -> None:
        served["revision"] = head.revision
        seen.append(head.revision)
        changed.set()

    watcher = RevisionWatcher(store, on_change, lambda: served["revision"], worker="w-1", poll_seconds=0.02)
    watcher.poll()  # nothing new: no callback, a heartbeat
    assert seen == []
    (status,) = store.workers()
    assert (status.worker, status.revision, status.pid, status.stale) == ("w-1", 1, os.getpid(), False)
    watcher.start()
    try:
        store.commit(_append("x"), writer="other")
        assert changed.wait(timeout=30)
    finally:
        watcher.stop()
    assert seen == [2]
    assert store.workers() == []  # stop() removes the heartbeat
    with pytest.raises(InvalidInputError, match="poll_seconds"):
        RevisionWatcher(store, on_change, lambda: 1, poll_seconds=0)


def test_a_failing_callback_is_retried_on_the_next_poll(tmp_path):
    store = RevisionStore(tmp_path / "state")
    store.initialize(_saver([]), {}, writer="w")
    attempts = []

    def flaky(head: Head) -> None:
        attempts.append(head.revision)
        if len(attempts) == 1:
            raise OSError("transient")

    watcher = RevisionWatcher(store, flaky, lambda: None, worker="w-2")
    store.commit(_append("x"), writer="w")
    with pytest.raises(OSError):
        watcher.poll()
    watcher.poll()
    watcher.poll()  # seen now: no third call
    assert attempts == [2, 2]


def test_stale_heartbeats_are_reported(tmp_path):
    store = RevisionStore(tmp_path / "state")
    store.heartbeat("old", 3)
    path = tmp_path / "state" / "workers" / "old.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "updated": data["updated"] - 60}))
    store.heartbeat(worker_id(), 4, since=123.0)
    by_id = {w.worker: w for w in store.workers(stale_after=5)}
    assert by_id["old"].stale and by_id["old"].age >= 60
    assert not by_id[worker_id()].stale and by_id[worker_id()].revision == 4
    assert [w.worker for w in store.workers(stale_after=5, include_stale=False)] == [worker_id()]
    assert by_id["old"].to_dict()["age_seconds"] >= 60
    assert by_id[worker_id()].fields == {"since": 123.0} and by_id[worker_id()].to_dict()["since"] == 123.0
