"""Routers and stat packs on the Hugging Face Hub: resolve (local folder → HF cache → download), push.

huggingface_hub does the transport: a string that names an existing folder is read from disk; else it
must be a Hub repo id (``owner/name``), fetched with ``snapshot_download`` into the standard cache
(``HF_HOME`` / ``HF_HUB_CACHE``, or ``cache_dir=``) from ``HF_ENDPOINT``; ``HF_HUB_OFFLINE=1`` or
``local_files_only=True`` use only the cache. Tokens come from ``token=``, ``HF_TOKEN`` or
``hf auth login``. ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are also read when called.

Only the artifact's own file names are fetched (``allow_patterns``), all at one commit. What is
ir3de's own: each file the config lists is checked against the size and sha256 it records. A
damaged cached file raises :class:`~ir3de.errors.ArtifactError` naming the file and the fix
(``force_download=True`` re-fetches and repairs the cache). A name that is neither a folder nor a
repo id, or a repo missing from the cache while downloads are off, fails at once, saying where it
looked locally (absolute path) and on the Hub (repo id and endpoint).

Nothing downloaded is ever executed: artifacts are JSON, safetensors and ``tokenizer.json``.

Example:
    >>> from ir3de.artifacts.hub import looks_like_repo_id
    >>> looks_like_repo_id("org/my-router"), looks_like_repo_id("my-router"), looks_like_repo_id("/tmp/x")
    (True, False, False)
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from ir3de.artifacts import format as artifact
from ir3de.artifacts.folders import PACK_CONFIG_FILE, read_pack_config
from ir3de.errors import ArtifactError

__all__ = [
    "ResolvedArtifact",
    "hub_endpoint",
    "hub_offline",
    "looks_like_repo_id",
    "pull",
    "push_folder",
    "push_saved",
    "resolve_folder",
    "resolve_router_folder",
]

#: kind → (its config file, the files that config may list, what a repo without the config file may be)
_KINDS = {
    "router": (
        artifact.CONFIG_FILE,
        artifact.CHECKED_FILES,
        "it is not an ir3de router (a stat pack has stat_pack.json instead: merge it with "
        "router.add_expert(pack.name, StatPack.from_pretrained(repo)) or `ir3de merge`)",
    ),
    "stat_pack": (
        PACK_CONFIG_FILE,
        (artifact.STATISTICS_FILE,),
        "it is not an ir3de stat pack (a router has config.json instead: load it with Router.from_pretrained)",
    ),
}
_ARTIFACT_FILES = [artifact.CONFIG_FILE, PACK_CONFIG_FILE, *artifact.CHECKED_FILES, artifact.CARD_FILE]


class SavesPretrained(Protocol):
    """What the Hub layer needs of an artifact: it saves itself to a folder (a Router, a StatPack)."""

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path: ...


@dataclasses.dataclass(frozen=True)
class ResolvedArtifact:
    """Where an artifact was found: ``folder`` (the HF cache folder of the download, for Hub artifacts), ``kind``
    (``"router"`` or ``"stat_pack"``), and for a Hub artifact its ``repo_id`` and ``commit``."""

    folder: Path
    kind: str
    repo_id: str | None = None
    commit: str | None = None


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` as set now, else huggingface_hub's endpoint (``https://huggingface.co``)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """Whether downloads are off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) now or at import."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    # huggingface_hub >= 1.0 has is_offline_mode(); 0.x only the flag read at import
    at_import = getattr(constants, "is_offline_mode", lambda: bool(constants.HF_HUB_OFFLINE))()
    return env.strip().upper() in constants.ENV_VARS_TRUE_VALUES or bool(at_import)


def looks_like_repo_id(value: str) -> bool:
    """Whether a name that is not an existing folder can be the Hub repo of an artifact: ``owner/name``.

    A name without an owner (``my-router``) is a mistyped folder: ir3de artifacts always live in a
    user's or an organisation's namespace, so it is never sent to the Hub.
    """
    from huggingface_hub.utils import validate_repo_id

    if value.count("/") != 1:
        return False
    try:  # validate_repo_id refuses paths like ./x, ~/x, /x
        validate_repo_id(value)
    except ValueError:
        return False
    return True


def _read_config(folder: Path, kind: str) -> dict[str, Any]:
    return artifact.read_config(folder) if kind == "router" else read_pack_config(folder)


def _download(repo_id: str, revision: str | None, hub: dict[str, Any]) -> Path:
    """``snapshot_download`` of the artifact files only, at one commit, into the HF cache; its errors
    turned into :class:`ArtifactError` that say where ir3de looked and what to do."""
    from huggingface_hub import HfApi, errors, snapshot_download

    endpoint = hub_endpoint()
    where = f"Hub repo {repo_id!r}" + (f" (revision {revision!r})" if revision else "") + f" at {endpoint}"
    local = f"no local folder {Path(repo_id).absolute()}, and "
    no_revision = f"{where} has no revision {revision!r}; pass an existing branch, tag or commit"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=_ARTIFACT_FILES,
            endpoint=endpoint,
            library_name="ir3de",
            **hub,
        )
    except errors.LocalEntryNotFoundError as e:
        if hub["local_files_only"]:
            reason = "HF_HUB_OFFLINE=1" if hub_offline() else "local_files_only=True"
            raise ArtifactError(
                f"{local}{where} is not in the cache {hub['cache_dir']} while downloads are off ({reason}); "
                "download it once with network access (unset HF_HUB_OFFLINE), or pass the path of a local folder"
            ) from e
        raise ArtifactError(
            f"{local}cannot reach {where}, which is not in the cache {hub['cache_dir']} ({e}); check the "
            "network / HF_ENDPOINT, or pass the path of a local folder"
        ) from e
    except errors.RevisionNotFoundError as e:
        raise ArtifactError(no_revision) from e
    except errors.RepositoryNotFoundError as e:
        api = HfApi(endpoint=endpoint, token=hub["token"], library_name="ir3de")
        try:  # some servers answer 404 "repository" for a missing revision
            exists = bool(revision) and api.revision_exists(repo_id, "main")
        except Exception:
            exists = False
        if exists:
            raise ArtifactError(no_revision) from e
        raise ArtifactError(
            f"{local}no Hub repo {repo_id!r} at {endpoint} (a private or gated repo needs token=... or "
            "`hf auth login`)"
        ) from e
    except (errors.HfHubHTTPError, OSError) as e:
        raise ArtifactError(f"downloading {where} failed ({e}); check the network and disk") from e
    return Path(folder)


def _checked(folder: Path, kind: str, repo_id: str | None) -> tuple[dict[str, Any], list[str]]:
    """The config and the files it lists, all checked (names, sizes, sha256). For a Hub repo the error
    also names the fix for a damaged cache."""
    config_file, allowed, _ = _KINDS[kind]
    try:
        config = _read_config(folder, kind)
        files = config.get("files")
        where = f"{repo_id or folder}/{config_file}"
        if not isinstance(files, Mapping) or not files:
            raise ArtifactError(f"{where} lists no files; re-save and push the artifact again")
        unknown = [n for n in files if n not in allowed]
        if unknown:
            raise ArtifactError(f"{where} lists unexpected files {unknown}; expected only {list(allowed)}")
        for name, meta in files.items():
            if not isinstance(meta, Mapping) or not (
                isinstance(meta.get("size"), int) and isinstance(meta.get("sha256"), str)
            ):
                raise ArtifactError(f"{where}: the entry of {name} has no integer size and sha256")
            artifact.read_file_checked(folder, name, config)
    except ArtifactError as e:
        if repo_id is None:
            raise
        raise ArtifactError(
            f"{e} — the cached copy of Hub repo {repo_id!r} is corrupted or truncated; download it again with "
            f"force_download=True (CLI: `ir3de pull {repo_id} --force-download`) or delete {folder} "
            "(`hf cache delete`)"
        ) from e
    return config, list(files)


def resolve_folder(
    id_or_folder: str | os.PathLike[str],
    *,
    kind: str | None = "router",
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> ResolvedArtifact:
    """Find an artifact: an existing local folder as is, else a Hub repo ``owner/name`` via the HF cache.

    For a Hub repo one ``snapshot_download`` fetches the artifact files (and nothing else) at one
    commit of ``revision``; the files the config lists are checked (sizes, sha256, format version)
    before the folder is returned. Local folders are returned unchecked (the loaders check them).
    ``kind=None`` takes whichever the folder or repo holds, a router or a stat pack.

    Example:
        >>> r = resolve_folder("org/my-router", revision="v1")   # doctest: +SKIP
        >>> r.folder, r.commit                                   # doctest: +SKIP
    """
    from huggingface_hub import constants

    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)} or None, got {kind!r}")
    path, value = Path(id_or_folder).expanduser(), str(id_or_folder)
    if path.exists():
        return ResolvedArtifact(path, kind or detect_kind(path))
    if isinstance(id_or_folder, os.PathLike) or not looks_like_repo_id(value):
        raise ArtifactError(
            f"no local folder {path.absolute()} (it is not a folder); {value!r} is not a Hub repo id either "
            f"(those are 'owner/name'), so {hub_endpoint()} was not asked. Pass the folder written by "
            "save_pretrained / `ir3de fit`, or an 'owner/name' repo id"
        )
    offline = bool(local_files_only) or hub_offline()
    hub = {
        "token": token,
        "cache_dir": os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE,
        "local_files_only": offline,
        "force_download": force_download and not offline,
    }
    folder = _download(value, revision, hub)
    found = [k for k in ([kind] if kind else _KINDS) if (folder / _KINDS[k][0]).is_file()]
    if not found:
        config_file, _, not_this = _KINDS[kind or "router"]
        raise ArtifactError(f"Hub repo {value!r} has no {config_file}: {not_this}")
    _checked(folder, found[0], value)
    return ResolvedArtifact(folder, found[0], value, folder.name)


def resolve_router_folder(id_or_folder: str | os.PathLike[str], **hub_kwargs: Any) -> Path:
    """The folder to load a router from (what :meth:`Router.from_pretrained` calls first);
    ``hub_kwargs`` as in :func:`resolve_folder`."""
    return resolve_folder(id_or_folder, **hub_kwargs).folder


def detect_kind(folder: Path) -> str:
    """``"router"`` or ``"stat_pack"`` for a local artifact folder."""
    for kind, (config_file, _, _) in _KINDS.items():
        if (folder / config_file).is_file():
            return kind
    raise ArtifactError(
        f"{folder} holds neither a router ({artifact.CONFIG_FILE}) nor a stat pack ({PACK_CONFIG_FILE}); "
        "pass a folder written by save_pretrained or `ir3de stats`"
    )


def pull(
    id_or_folder: str, *, output: str | os.PathLike[str] | None = None, **hub_kwargs: Any
) -> ResolvedArtifact:
    """Fetch a router or a stat pack (whichever the repo holds) into the cache and check it; with
    ``output``, also copy its files to that folder (atomically). ``hub_kwargs`` as in :func:`resolve_folder`.

    Example:
        >>> pull("org/my-router", output="my-router").kind   # doctest: +SKIP
        'router'
    """
    resolved = resolve_folder(id_or_folder, kind=None, **hub_kwargs)
    _, names = _checked(resolved.folder, resolved.kind, resolved.repo_id)
    if output is None:
        return resolved
    names = [_KINDS[resolved.kind][0], *names, artifact.CARD_FILE]
    files = {n: (resolved.folder / n).read_bytes() for n in names if (resolved.folder / n).is_file()}
    return dataclasses.replace(resolved, folder=artifact.write_folder_atomically(output, files))


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Upload a saved router or stat pack folder to a Hub model repo as ONE commit.

    The folder is checked first (config, sizes, sha256); the model card is re-rendered with the repo
    id in its usage snippets. The repo is created when missing (``private`` applies then), and a
    ``revision`` other than ``main`` is created as a branch. Returns huggingface_hub's ``CommitInfo``
    (``.oid`` is the new commit, ``.commit_url`` its page). ``HfApi.create_commit`` rather than
    ``upload_folder``: the card differs from the folder's, and the push must stay one commit.

    Example:
        >>> push_folder("my-router", "org/my-router", private=True)   # doctest: +SKIP
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from ir3de.artifacts.model_card import render_model_card, render_stat_pack_card

    path = Path(folder)
    kind = detect_kind(path)
    config, names = _checked(path, kind, None)
    if hub_offline():
        raise ArtifactError(
            f"cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE=1); unset it to push {path}"
        )
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token, library_name="ir3de")
    with _network_errors(f"pushing {path} to Hub repo {repo_id!r} at {endpoint}"):
        target = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision and revision != "main" and not create_pr:
            api.create_branch(target, branch=revision, exist_ok=True)
        render = render_model_card if kind == "router" else render_stat_pack_card
        operations = [CommitOperationAdd(n, str(path / n)) for n in (_KINDS[kind][0], *names)]
        operations.append(CommitOperationAdd(artifact.CARD_FILE, render(config, target).encode("utf-8")))
        what = "router" if kind == "router" else f"stat pack of expert {config['expert']['name']!r}"
        return api.create_commit(
            target,
            operations=operations,
            commit_message=commit_message or f"Upload ir3de {what}",
            revision=revision,
            create_pr=create_pr,
        )


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The transport-error classes of the HTTP client huggingface_hub uses: httpx (1.x), its httpx2
    fork (2.x), or requests (0.x) — whichever are installed."""
    found: list[type[BaseException]] = []
    for module, names in (
        ("httpx", ("TransportError",)),
        ("httpx2", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found.extend(getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type))
    return tuple(found)


@contextlib.contextmanager
def _network_errors(doing: str) -> Iterator[None]:
    """Turn a transport failure (no server, DNS, TLS, timeout) or an HTTP error answer of the Hub into
    one :class:`ArtifactError` that names the endpoint, so the CLI prints one line, not a traceback."""
    from huggingface_hub import errors

    try:
        yield
    except _transport_errors() as e:
        raise ArtifactError(
            f"{doing} failed: cannot reach the endpoint ({type(e).__name__}: {e}); check the network and "
            "HF_ENDPOINT"
        ) from e
    except errors.HfHubHTTPError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArtifactError(
            f"{doing} failed: {first}; check the repo id, token= (--token) and HF_ENDPOINT"
        ) from e


def push_saved(obj: SavesPretrained, repo_id: str, **push_kwargs: Any) -> Any:
    """Save anything with ``save_pretrained(folder)`` (a router, a stat pack) to a temporary folder and
    push that folder with :func:`push_folder` (``push_kwargs`` are its keyword arguments)."""
    with tempfile.TemporaryDirectory(prefix="ir3de-push-") as tmp:
        return push_folder(obj.save_pretrained(Path(tmp) / "artifact"), repo_id, **push_kwargs)


def config_summary(folder: Path) -> str:
    """One line describing a local artifact folder (for the CLI)."""
    kind = detect_kind(folder)
    config = _read_config(folder, kind)
    if kind == "router":
        return f"router with experts [{', '.join(e['name'] for e in config.get('experts', []))}]"
    e = config["expert"]
    return f"stat pack of expert {e['name']!r} ({e['num_texts']} texts, {e['num_tokens']} tokens)"
