"""Pull routers from a real Hub server (olah on loopback) through HF_ENDPOINT; revisions; offline; corruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ir3de import Router
from ir3de.artifacts.hub import resolve_router_folder
from ir3de.errors import ArtifactError

PROMPTS = [
    "Natalia sold clips to 48 of her friends in April and half as many in May. How many clips in all?",
    "def fibonacci(n: int) -> list[int]:\n    '''Return the first n Fibonacci numbers.'''",
    "Write a haiku about autumn. Your entire response must be in lowercase letters.",
    "Wer nicht wagt, der nicht gewinnt.",
]


def _same_routing(a: Router, b: Router, prompts: list[str]) -> None:
    assert a.experts == b.experts
    np.testing.assert_array_equal(a.state.table.logits, b.state.table.logits)
    da, db = a.route_batch(prompts), b.route_batch(prompts)
    assert [d.expert for d in da] == [d.expert for d in db]
    assert [d.confidence for d in da] == [d.confidence for d in db]
    assert [[t.id for t in d.tokens] for d in da] == [[t.id for t in d.tokens] for d in db]


@pytest.fixture(scope="module")
def saved_router(paper_router, tmp_path_factory) -> Path:
    return paper_router.save_pretrained(tmp_path_factory.mktemp("saved") / "router")


def test_pull_router_over_http_routes_identically(
    hub_server, hub_env, paper_router, saved_router, small_tests
):
    import huggingface_hub.constants as constants

    sha = hub_server.publish(saved_router, "ir3de-test/reasoning4")
    # HF_ENDPOINT is read when called: a stale import-time endpoint in huggingface_hub does not matter
    hub_env.monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    hub_env.monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}"
    )
    loaded = Router.from_pretrained("ir3de-test/reasoning4", device="cpu")
    prompts = PROMPTS + [t for texts in small_tests.values() for t in texts[:15]]
    _same_routing(paper_router, loaded, prompts)
    snapshot = hub_env.cache / "models--ir3de-test--reasoning4" / "snapshots" / sha
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "README.md",
        "config.json",
        "router.safetensors",
        "statistics.safetensors",
        "tokenizer.json",
    ]
    assert loaded.statistics == paper_router.statistics


def test_revisions_and_offline_cache(hub_server, hub_env, paper_router, saved_router, tmp_path):
    # versions that differ in a routing setting (k), so no refit is needed to make them
    k5 = Router.from_pretrained(saved_router, device="cpu").configure(k=5)
    k3 = Router.from_pretrained(saved_router, device="cpu").configure(k=3)
    v1 = hub_server.publish(k5.save_pretrained(tmp_path / "k5"), "ir3de-test/versions", tag="v1")
    v2 = hub_server.publish(saved_router, "ir3de-test/versions")
    dev = hub_server.publish(k3.save_pretrained(tmp_path / "k3"), "ir3de-test/versions", branch="dev")
    assert len({v1, v2, dev}) == 3
    assert _k("ir3de-test/versions") == 10
    assert _k("ir3de-test/versions", revision="v1") == 5
    assert _k("ir3de-test/versions", revision=v1) == 5
    assert _k("ir3de-test/versions", revision="dev") == 3
    with pytest.raises(ArtifactError, match="revision 'nope'"):
        Router.from_pretrained("ir3de-test/versions", revision="nope")

    hub_env.go_offline()
    offline_main = Router.from_pretrained("ir3de-test/versions", device="cpu")
    _same_routing(paper_router, offline_main, PROMPTS)
    offline_v1 = Router.from_pretrained("ir3de-test/versions", revision=v1, device="cpu")
    assert offline_v1.config.k == 5
    _same_routing(k5, offline_v1, PROMPTS)
    assert _k("ir3de-test/versions", revision="dev") == 3
    with pytest.raises(ArtifactError, match="HF_HUB_OFFLINE=1"):
        Router.from_pretrained("ir3de-test/never-downloaded")


def test_local_files_only_and_missing_repos(hub_server, hub_env, saved_router, tmp_path):
    with pytest.raises(ArtifactError, match="local_files_only=True"):
        Router.from_pretrained("ir3de-test/not-yet-cached", local_files_only=True)
    with pytest.raises(ArtifactError, match="no Hub repo 'ir3de-test/does-not-exist'"):
        Router.from_pretrained("ir3de-test/does-not-exist")
    with pytest.raises(ArtifactError, match=r"no local folder .*missing-folder.*not a Hub repo id"):
        Router.from_pretrained(str(tmp_path / "missing-folder"))  # a path is never sent to the Hub
    hub_server.commit_files("ir3de-test/not-a-router", {"notes.md": b"# just notes\n" * 20}, "notes")
    with pytest.raises(ArtifactError, match=r"has no config\.json: it is not an ir3de router"):
        Router.from_pretrained("ir3de-test/not-a-router")


def _k(repo_id: str, revision: str | None = None) -> int:
    """The k recorded in the config of a resolved (downloaded and checked) router."""
    folder = resolve_router_folder(repo_id, revision=revision)
    return int(json.loads((folder / "config.json").read_text())["settings"]["k"])


def _cached_blob(cache: Path, repo: str, name: str) -> Path:
    folder = cache / f"models--{repo.replace('/', '--')}" / "snapshots"
    (snapshot,) = list(folder.iterdir())
    return (snapshot / name).resolve()


def test_corrupted_cache_is_named_and_repaired(hub_server, hub_env, paper_router, saved_router):
    repo = "ir3de-test/corrupted"
    hub_server.publish(saved_router, repo)
    folder = resolve_router_folder(repo)
    blob = _cached_blob(hub_env.cache, repo, "router.safetensors")
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])  # a truncated download
    with pytest.raises(ArtifactError) as info:
        Router.from_pretrained(repo)
    message = str(info.value)
    assert "router.safetensors" in message and "force_download=True" in message and "truncated" in message
    repaired = Router.from_pretrained(repo, force_download=True, device="cpu")
    _same_routing(paper_router, repaired, PROMPTS)
    assert blob.read_bytes() == data
    assert resolve_router_folder(repo) == folder  # the cache works again, without force_download

    blob = _cached_blob(hub_env.cache, repo, "tokenizer.json")
    blob.write_bytes(blob.read_bytes().replace(b'"model"', b'"modex"', 1))  # same size, other bytes
    with pytest.raises(
        ArtifactError, match=r"tokenizer\.json does not match the sha256.*force_download=True"
    ):
        Router.from_pretrained(repo)
    assert resolve_router_folder(repo, force_download=True) == folder
    assert resolve_router_folder(repo, local_files_only=True) == folder


def test_config_listing_unexpected_files_is_refused(hub_server, hub_env, saved_router):
    config = json.loads((saved_router / "config.json").read_text())
    config["files"]["../../outside.py"] = {"size": 200, "sha256": "0" * 64}
    files = {p.name: p.read_bytes() for p in saved_router.iterdir()}
    files["config.json"] = json.dumps(config, indent=2).encode()
    hub_server.commit_files("ir3de-test/hostile", files, "hostile config")
    with pytest.raises(ArtifactError, match="unexpected files"):
        Router.from_pretrained("ir3de-test/hostile")
    assert not any(p.name == "outside.py" for p in Path(os.environ["HF_HOME"]).rglob("outside.py"))


def _no_hub_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the Hub was asked for {args}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


def test_mistyped_router_name_fails_at_once_saying_where_it_looked(hub_env, tmp_path, monkeypatch, capsys):
    """Issue 13.5: a name that cannot be an owner/name repo id is never sent to the Hub (no retries)."""
    from ir3de.artifacts.stat_packs import StatPack
    from ir3de.cli.main import main

    monkeypatch.chdir(tmp_path)
    _no_hub_calls(monkeypatch)
    for name in ("no-such-router", "./no-such-router", "a/b/c", "no such router"):
        with pytest.raises(ArtifactError) as info:
            Router.from_pretrained(name)
        message = str(info.value)
        assert str((tmp_path / name).absolute()) in message, message
        assert "not a Hub repo id" in message and hub_env.endpoint in message and "was not asked" in message
    with pytest.raises(ArtifactError, match=r"no local folder .*no-such-pack.*not a Hub repo id"):
        StatPack.from_pretrained("no-such-pack")
    assert main(["route", "no-such-router", "Solve 3x + 5 = 11"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "no-such-router") in err and "owner/name" in err


def test_repo_id_missing_offline_fails_at_once_naming_folder_repo_and_endpoint(
    hub_env, tmp_path, monkeypatch, capsys
):
    """Downloads off: only the cache is looked at, and the error names all three places."""
    from ir3de.cli.main import main

    monkeypatch.chdir(tmp_path)
    hub_env.go_offline()
    with pytest.raises(ArtifactError) as info:
        Router.from_pretrained("ir3de-test/mistyped-router")
    message = str(info.value)
    for part in (
        f"no local folder {tmp_path / 'ir3de-test' / 'mistyped-router'}",
        "Hub repo 'ir3de-test/mistyped-router'",
        hub_env.endpoint,
        "HF_HUB_OFFLINE=1",
        str(hub_env.cache),
    ):
        assert part in message, (part, message)
    assert main(["route", "ir3de-test/mistyped-router", "hello"]) == 2
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err


def test_repo_id_missing_online_names_folder_repo_and_endpoint(hub_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArtifactError) as info:
        Router.from_pretrained("ir3de-test/not-on-the-hub")
    message = str(info.value)
    assert f"no local folder {tmp_path / 'ir3de-test' / 'not-on-the-hub'}" in message
    assert f"no Hub repo 'ir3de-test/not-on-the-hub' at {hub_env.endpoint}" in message
