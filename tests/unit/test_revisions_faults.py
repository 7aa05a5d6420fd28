"""RevisionStore under faults: the newest revision that reads, a garbled HEAD, repair, leftovers,
idempotency records (the store moves folders and never looks inside: a small JSON "artifact")."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ir3de.artifacts.revisions import RevisionError, RevisionStore


def _saver(changes: list[str]):
    def save(folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps(changes))

    return save


def _read(revision) -> list[str]:
    return json.loads((revision.folder / "state.json").read_text())  # a garbled file raises


def _store(tmp_path: Path, n: int) -> RevisionStore:
    store = RevisionStore(tmp_path / "state")
    store.initialize(_saver(["seed"]), {}, writer="w")
    for i in range(n - 1):
        store.commit(lambda head, i=i: (_saver([*_read(head), f"c{i}"]), {}), writer="w")
    return store


def test_read_newest_skips_a_damaged_revision_and_says_why(tmp_path):
    store = _store(tmp_path, 3)
    (store.revision_folder(3) / "state.json").write_text("{garbled")
    revision, state, skipped = store.read_newest(_read)
    assert revision.number == 2 and state == ["seed", "c0"]
    assert [s.revision for s in skipped] == [3] and "JSONDecodeError" in skipped[0].reason
    with pytest.raises(RevisionError, match=r"no revision .* above 2 can be read") as e:
        store.read_newest(_read, above=2)
    assert [s.revision for s in e.value.skipped] == [3]


def test_a_garbled_head_falls_back_to_what_is_on_disk_commit_and_repair_recover(tmp_path):
    store = _store(tmp_path, 3)
    (store.folder / "HEAD").write_text("not json")
    assert store.head_or_fault()[0] is None and "not a revision HEAD" in store.head_or_fault()[1]
    revision, _, skipped = store.read_newest(_read)
    assert revision.number == 3 and skipped[0].revision == -1 and "HEAD" in skipped[0].reason
    # a commit over a garbled HEAD numbers past everything on disk and rewrites HEAD
    new = store.commit(lambda head: (_saver([*_read(head), "after"]), {}), writer="w")
    assert new.number == 4 and store.head().revision == 4 and _read(new)[-1] == "after"
    (store.revision_folder(4) / "state.json").write_text("{")
    (store.folder / "HEAD").write_text("{")
    head, skipped = store.repair(_read)
    assert head.revision == 3 and {s.revision for s in skipped} == {-1, 4}
    assert store.head().revision == 3 and not store.revision_folder(4).exists()


def test_clean_removes_temp_folders_dead_heartbeats_and_expired_records(tmp_path):
    store = _store(tmp_path, 1)
    (store.folder / "revisions" / ".tmp-2-abcdef12").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.heartbeat("alive", 1)
    (store.folder / "workers" / "dead.json").write_text(
        json.dumps({"worker": "dead", "revision": 1, "pid": dead.pid, "host": __import__("socket").gethostname(),
                    "updated": time.time()})
    )  # fmt: skip
    store.remember("k-old", {"status": 200}, seconds=-1)
    store.remember("k-new", {"status": 201}, seconds=60)
    removed = store.clean()
    assert "revisions/.tmp-2-abcdef12" in removed and "workers/dead.json" in removed
    assert [w.worker for w in store.workers()] == ["alive"]
    assert store.recall("k-old") is None and store.recall("k-new") == {"status": 201}
    # a commit cleans too
    (store.folder / "revisions" / ".tmp-9-00000000").mkdir()
    store.commit(lambda head: (_saver(["x"]), {}), writer="w")
    assert not (store.folder / "revisions" / ".tmp-9-00000000").exists()


def test_initialize_never_overwrites_revisions_without_a_head(tmp_path):
    store = _store(tmp_path, 2)
    (store.folder / "HEAD").unlink()
    with pytest.raises(RevisionError, match="ir3de revisions repair"):
        store.initialize(_saver(["other"]), {}, writer="w")
    assert _read(store.load(1)) == ["seed"]
