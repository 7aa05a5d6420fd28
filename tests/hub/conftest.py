"""A real Hugging Face Hub server on loopback (olah) serving git repositories, for the Hub tests.

* ``hub_server`` (session): starts ``olah-cli`` on a free port of 127.0.0.1 with
  ``[accessibility] offline = true`` and a ``mirrors-path`` whose ``models/<org>/<name>`` folders are
  git repositories; ``hub_server.publish(folder, repo_id)`` commits a folder's files into one.
* ``hub_env``: points huggingface_hub and ir3de at that server (``HF_ENDPOINT``) with a fresh
  ``HF_HOME`` for the session, downloads allowed; ``hub_env.go_offline()`` sets ``HF_HUB_OFFLINE=1``.
  huggingface_hub reads its constants at import time, so the constants are patched as well as the
  environment (the subprocess tests set the real environment instead).
* ``git_uploads``: ``HfApi.create_repo`` / ``create_branch`` / ``create_commit`` commit into the
  served git repositories instead of uploading over HTTP (olah accepts no uploads); everything before
  them (``HfApi``, ``CommitOperationAdd``, ir3de's push code) is the real code.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

GIT_ENV = {
    "GIT_AUTHOR_NAME": "ir3de tests",
    "GIT_AUTHOR_EMAIL": "tests@ir3de.invalid",
    "GIT_COMMITTER_NAME": "ir3de tests",
    "GIT_COMMITTER_EMAIL": "tests@ir3de.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
# What huggingface.co writes into a new repo (HF's default .gitattributes, abridged); > 150 bytes.
GITATTRIBUTES = "".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n"
    for ext in ("safetensors", "bin", "gguf", "h5", "msgpack", "onnx", "pt", "pth", "tar.gz", "zip")
)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {result.stderr}")
    return result.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HubServer:
    """An olah server and the git repositories it serves."""

    endpoint: str
    mirrors: Path
    private: dict[str, bool | None] = field(default_factory=dict)

    def repo_path(self, repo_id: str) -> Path:
        return self.mirrors / "models" / repo_id

    def create(self, repo_id: str) -> Path:
        repo = self.repo_path(repo_id)
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "-q", "-b", "main")
            (repo / ".gitattributes").write_text(GITATTRIBUTES)
            _git(repo, "add", "-A")
            _git(repo, "commit", "-q", "-m", "initial commit")
        return repo

    def commit_files(
        self, repo_id: str, files: dict[str, bytes | None], message: str, branch: str = "main"
    ) -> str:
        """Commit ``files`` (name → bytes, or None to delete) on ``branch``; returns the commit sha."""
        repo = self.create(repo_id)
        branches = _git(repo, "branch", "--list", branch)
        _git(repo, "checkout", "-q", branch) if branches else _git(repo, "checkout", "-q", "-b", branch)
        for name, data in files.items():
            if data is None:
                (repo / name).unlink(missing_ok=True)
            else:
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                (repo / name).write_bytes(data)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", message)
        sha = _git(repo, "rev-parse", "HEAD")
        _git(repo, "checkout", "-q", "main")
        return sha

    def publish(self, folder: Path, repo_id: str, *, branch: str = "main", tag: str | None = None) -> str:
        """Commit every file of a saved folder (e.g. ``save_pretrained`` output) into the served repo."""
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        sha = self.commit_files(repo_id, files, f"add {Path(folder).name}", branch=branch)
        if tag:
            _git(self.repo_path(repo_id), "tag", tag, sha)
        return sha

    def head(self, repo_id: str, ref: str = "main") -> str:
        return _git(self.repo_path(repo_id), "rev-parse", ref)


def _wait_until_up(endpoint: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"olah exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/api/models/ir3de-probe/none/revision/main", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (404 for the probe repo)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"olah did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """olah on 127.0.0.1:<free port>, serving git repos under ``mirrors/models/<org>/<name>``."""
    olah = shutil.which("olah-cli") or str(Path(sys.executable).with_name("olah-cli"))
    if not Path(olah).exists():
        pytest.fail("olah is not installed: pip install olah==0.5.4 (see OFFLINE.md)")
    root = tmp_path_factory.mktemp("olah")
    mirrors = root / "mirrors"
    (mirrors / "models").mkdir(parents=True)
    port = _free_port()
    config = root / "olah.toml"
    config.write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'repos-path = "{root / "repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        "metadata-cache-ttl = 0\n"
        "[accessibility]\n"
        "offline = true\n"
    )
    log = root / "olah.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([olah, "-c", str(config)], cwd=root, stdout=fh, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(endpoint, proc, log)
        yield HubServer(endpoint, mirrors)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _reset_hub_sessions() -> None:
    """huggingface_hub 0.x decides offline or online when it creates its cached HTTP session (1.x on
    each request): drop that session, so that a switch of ``HF_HUB_OFFLINE`` takes effect."""
    import huggingface_hub.utils as hub_utils

    reset_sessions = getattr(hub_utils, "reset_sessions", None)
    if reset_sessions is not None:
        reset_sessions()


@dataclass
class HubEnv:
    endpoint: str
    home: Path
    cache: Path
    monkeypatch: pytest.MonkeyPatch

    def go_offline(self) -> None:
        import huggingface_hub.constants as constants

        self.monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        self.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        _reset_hub_sessions()

    def subprocess_env(self, offline: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(self.home),
            HF_HUB_OFFLINE="1" if offline else "0",
            HF_HUB_DISABLE_TELEMETRY="1",
            TOKENIZERS_PARALLELISM="false",
        )
        return env


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh HF_HOME for the session (never the user's cache)."""
    return tmp_path_factory.mktemp("hf-home")


@pytest.fixture
def hub_env(hub_server: HubServer, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> HubEnv:
    """Point huggingface_hub and ir3de at the local server, with a fresh session cache, downloads on."""
    import huggingface_hub.constants as constants

    cache = hf_home / "hub"
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.endpoint)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub_server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    _reset_hub_sessions()
    return HubEnv(hub_server.endpoint, hf_home, cache, monkeypatch)


@pytest.fixture
def git_uploads(hub_server: HubServer, hub_env: HubEnv, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """HfApi's repo creation and commits land as git commits in the served repositories."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.hf_api import CommitInfo, RepoUrl

    def create_repo(
        self: HfApi, repo_id: str, *, private: bool | None = None, exist_ok: bool = False, **kw: Any
    ):
        existed = (hub_server.repo_path(repo_id) / ".git").is_dir()
        if existed and not exist_ok:
            raise RuntimeError(f"{repo_id} exists")
        hub_server.create(repo_id)
        if not existed:
            hub_server.private[repo_id] = private
        return RepoUrl(f"{self.endpoint}/{repo_id}", endpoint=self.endpoint)

    def create_branch(self: HfApi, repo_id: str, *, branch: str, exist_ok: bool = False, **kw: Any) -> None:
        repo = hub_server.create(repo_id)
        if not _git(repo, "branch", "--list", branch):
            _git(repo, "branch", branch, "main")
        elif not exist_ok:
            raise RuntimeError(f"branch {branch} exists")

    def create_commit(
        self: HfApi,
        repo_id: str,
        operations: Any,
        *,
        commit_message: str,
        revision: str | None = None,
        **kw: Any,
    ) -> CommitInfo:
        assert self.endpoint == hub_server.endpoint, "push must use HF_ENDPOINT"
        files: dict[str, bytes | None] = {}
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                with op.as_file() as fh:
                    files[op.path_in_repo] = fh.read()
            elif isinstance(op, CommitOperationDelete):
                files[op.path_in_repo] = None
            else:
                raise AssertionError(f"unexpected operation {op!r}")
        sha = hub_server.commit_files(repo_id, files, commit_message, branch=revision or "main")
        # huggingface_hub >= 1.0 takes the endpoint; 0.x derives it from the URL
        known = {f.name for f in dataclasses.fields(CommitInfo)}
        extra = {"_endpoint": self.endpoint} if "_endpoint" in known else {}
        return CommitInfo(
            commit_url=f"{self.endpoint}/{repo_id}/commit/{sha}",
            commit_message=commit_message,
            commit_description="",
            oid=sha,
            **extra,
        )

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return hub_server


@pytest.fixture(scope="session")
def packs(smollm2: Any, small_corpus: dict[str, list[str]]) -> dict[str, Any]:
    """One stat pack per reasoning4 domain, counted from the same texts as ``paper_router``."""
    from ir3de.artifacts.stat_packs import StatPack

    descriptions = {"math": "grade-school math word problems (GSM8K)", "code": "Python functions (HumanEval)"}
    return {
        name: StatPack.compute(name, texts, smollm2, description=descriptions.get(name, ""), progress=False)
        for name, texts in small_corpus.items()
    }
