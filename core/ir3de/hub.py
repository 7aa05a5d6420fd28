"""Routers and stat packs on the Hugging Face Hub: resolve (local folder → HF cache → download), push.

Resolution follows the other Hugging Face libraries: a string that names an existing folder is read
from disk; anything else must be a Hub repo id (``org/name``), fetched with ``huggingface_hub`` into
the standard cache (``HF_HOME`` / ``HF_HUB_CACHE``) from ``HF_ENDPOINT``. With ``HF_HUB_OFFLINE=1``
or ``local_files_only=True`` only the cache is used. Tokens come from ``token=``, ``HF_TOKEN`` or
``hf auth login``. The environment is read at call time, so setting ``HF_ENDPOINT`` after
``huggingface_hub`` was imported still takes effect.

Only the files an artifact's config lists are fetched, all at the commit the config came from, and
each is checked (size and sha256 recorded in the config, format version) before use. A corrupted or
truncated cached file raises :class:`~ir3de.errors.ArtifactError` naming the file and the fix
(``force_download=True``, or deleting the cache entry); ``force_download=True`` re-fetches every file
and repairs the cache.

Nothing downloaded is ever executed: artifacts are JSON, safetensors and ``tokenizer.json``.

Example:
    >>> from ir3de.hub import looks_like_repo_id
    >>> looks_like_repo_id("org/my-router"), looks_like_repo_id("./my-router"), looks_like_repo_id("/tmp/x")
    (True, False, False)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import artifact
from .errors import ArtifactError, MissingDependencyError

if TYPE_CHECKING:
    from .router import Router

__all__ = [
    "ResolvedArtifact",
    "hub_cache_dir",
    "hub_endpoint",
    "hub_offline",
    "looks_like_repo_id",
    "pull",
    "push_folder",
    "push_router",
    "resolve_folder",
    "resolve_router_folder",
]

_INSTALL = "pip install 'ir3de[hub]'"
PACK_CONFIG_FILE = "stat_pack.json"  # re-exported by stat_pack; defined here to avoid an import cycle


@dataclass(frozen=True)
class ResolvedArtifact:
    """Where an artifact was found.

    Attributes:
        folder: a folder holding the artifact's files (the HF cache snapshot for Hub artifacts).
        kind: ``"router"`` or ``"stat_pack"``.
        repo_id: the Hub repo id, or ``None`` for a local folder.
        commit: the commit the files come from (Hub only).
    """

    folder: Path
    kind: str
    repo_id: str | None = None
    commit: str | None = None


class _MissingFileError(ArtifactError):
    """A file is neither on the Hub (at that revision) nor, offline, in the cache."""

    def __init__(self, message: str, filename: str) -> None:
        super().__init__(message)
        self.filename = filename


# ---------------------------------------------------------------------------------------------- env


def _hf() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants  # a lazy package: the submodule must be imported explicitly
    except ImportError as e:  # pragma: no cover - huggingface_hub is a core dependency today
        raise MissingDependencyError(f"the Hugging Face Hub needs huggingface_hub: {_INSTALL}") from e
    return huggingface_hub


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    """The Hub endpoint: ``HF_ENDPOINT`` as set now, else huggingface_hub's (``https://huggingface.co``)."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    return str(_hf().constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """Whether downloads are off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, now or at import)."""
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return _is_true(env) or bool(_hf().constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """The HF cache folder, honouring ``HF_HUB_CACHE`` / ``HUGGINGFACE_HUB_CACHE`` / ``HF_HOME`` as set now."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expandvars(os.path.expanduser(os.environ[var]))
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"])), "hub")
    return str(_hf().constants.HF_HUB_CACHE)


def looks_like_repo_id(value: str) -> bool:
    """Whether a string that is not an existing folder should be fetched from the Hub."""
    if not value or value.startswith((".", "/", "~", "\\")) or "\\" in value or value.count("/") > 1:
        return False
    if os.path.isabs(value) or value.endswith("/"):
        return False
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(value)
    except ImportError:
        return "/" in value
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- resolve


def _describe(repo_id: str, revision: str | None) -> str:
    return f"{repo_id!r}" + (f" (revision {revision!r})" if revision else "")


def _revision_exists(repo_id: str, revision: str | None, token: str | bool | None) -> bool:
    try:
        api = _hf().HfApi(endpoint=hub_endpoint(), token=token, library_name="ir3de")
        return bool(api.revision_exists(repo_id, revision or "main", repo_type="model"))
    except Exception:  # any failure means we cannot tell; report the original error
        return False


def _download(
    repo_id: str,
    filename: str,
    *,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str,
    local_files_only: bool,
    force_download: bool,
    missing_hint: str,
    first: bool = False,
) -> Path:
    """``hf_hub_download`` with errors turned into :class:`ArtifactError` that say what to do.

    ``first``: the artifact's first file (its config), whose absence may mean a mistyped local folder.
    """
    hf = _hf()
    from huggingface_hub import errors as hf_errors

    where = _describe(repo_id, revision)
    local = f"no local folder named {repo_id!r}, and " if first else ""
    try:
        path = hf.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
            endpoint=hub_endpoint(),
            library_name="ir3de",
        )
    except hf_errors.LocalEntryNotFoundError as e:
        if local_files_only:
            reason = "local_files_only=True" if not hub_offline() else "HF_HUB_OFFLINE=1"
            raise _MissingFileError(
                f"{local}{filename} of Hub repo {where} is not in the cache "
                f"{cache_dir} while downloads are off "
                f"({reason}); download it once with network access (unset HF_HUB_OFFLINE), or pass the "
                "path of a local folder",
                filename,
            ) from e
        raise ArtifactError(
            f"{local}cannot reach the Hub at {hub_endpoint()} to fetch "
            f"{filename} of {where}, which is not in the "
            f"cache {cache_dir} ({e}); check the network / HF_ENDPOINT, or pass the path of a local folder"
        ) from e
    except hf_errors.RevisionNotFoundError as e:
        raise ArtifactError(
            f"Hub repo {repo_id!r} has no revision {revision!r}; pass an existing branch, tag or commit"
        ) from e
    except hf_errors.RepositoryNotFoundError as e:
        if _revision_exists(repo_id, revision, token):  # a server that answers 404 for a missing file
            raise _MissingFileError(f"Hub repo {where} has no {filename}: {missing_hint}", filename) from e
        if revision is not None:
            raise ArtifactError(
                f"Hub repo {repo_id!r} or its revision {revision!r} was not found at {hub_endpoint()} (a "
                "private or gated repo needs token=... or `hf auth login`; a revision is a branch, tag or commit)"
            ) from e
        raise ArtifactError(
            f"no local folder named {repo_id!r} and no Hub repo {repo_id!r} at {hub_endpoint()} (or it is "
            "private or gated: pass token=... or run `hf auth login`)"
        ) from e
    except hf_errors.EntryNotFoundError as e:
        raise _MissingFileError(f"Hub repo {where} has no {filename}: {missing_hint}", filename) from e
    except hf_errors.HfHubHTTPError as e:
        raise ArtifactError(f"downloading {filename} of {where} from {hub_endpoint()} failed: {e}") from e
    except OSError as e:
        raise ArtifactError(
            f"downloading {filename} of {where} failed ({e}); check disk space and network"
        ) from e
    return Path(path)


def _cache_hint(repo_id: str, folder: Path) -> str:
    return (
        f"the cached copy of Hub repo {repo_id!r} is corrupted or truncated; download it again with "
        f"force_download=True (CLI: `ir3de pull {repo_id} --force-download`) or delete {folder} "
        f"(`hf cache delete`)"
    )


def _verify(
    folder: Path,
    config: Mapping[str, Any],
    names: Sequence[str],
    repo_id: str | None,
) -> None:
    """Check every listed file against the size and sha256 in the config; name the file and the fix."""
    for name in names:
        try:
            artifact.read_file_checked(folder, name, config)
        except ArtifactError as e:
            if repo_id is None:
                raise
            raise ArtifactError(f"{e} — {_cache_hint(repo_id, folder)}") from e


def _listed_files(config: Mapping[str, Any], allowed: Sequence[str], where: str) -> list[str]:
    files = config.get("files")
    if not isinstance(files, Mapping) or not files:
        raise ArtifactError(f"{where} lists no files (no 'files' entry); re-save and push the artifact again")
    unknown = [n for n in files if n not in allowed]
    if unknown:
        raise ArtifactError(f"{where} lists unexpected files {unknown}; expected only {list(allowed)}")
    for name, meta in files.items():
        if not (
            isinstance(meta, Mapping)
            and isinstance(meta.get("size"), int)
            and isinstance(meta.get("sha256"), str)
        ):
            raise ArtifactError(f"{where}: the entry of {name} has no integer size and sha256")
    return list(files)


_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "router": (artifact.CONFIG_FILE, artifact.CHECKED_FILES),
    "stat_pack": (PACK_CONFIG_FILE, (artifact.STATISTICS_FILE,)),
}
_MISSING_HINT = {
    "router": (
        "it is not an ir3de router (a stat pack has stat_pack.json instead: merge it with "
        "router.add_expert_from_stats(repo) or `ir3de merge`)"
    ),
    "stat_pack": (
        "it is not an ir3de stat pack (a router has config.json instead: load it with Router.from_pretrained)"
    ),
}


def _read_kind_config(kind: str, folder: Path) -> dict[str, Any]:
    if kind == "router":
        return artifact.read_config(folder)
    from .stat_pack import read_pack_config

    return read_pack_config(folder)


def resolve_folder(
    id_or_folder: str | os.PathLike[str],
    *,
    kind: str = "router",
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    read_config: Callable[[Path], dict[str, Any]] | None = None,
) -> ResolvedArtifact:
    """Find an artifact: an existing local folder as is, else a Hub repo via the HF cache.

    For a Hub repo the config (``config.json`` / ``stat_pack.json``) is fetched at ``revision``; the
    files it lists are then fetched at the exact commit it came from, and all are checked (sizes,
    sha256, format version) before the folder is returned. Local folders are returned unchecked
    (the loaders check them).

    Example:
        >>> r = resolve_folder("org/my-router", revision="v1")   # doctest: +SKIP
        >>> r.folder, r.commit                                   # doctest: +SKIP
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    if isinstance(id_or_folder, os.PathLike) or Path(str(id_or_folder)).expanduser().exists():
        return ResolvedArtifact(Path(id_or_folder).expanduser(), kind)
    value = str(id_or_folder)
    if not looks_like_repo_id(value):
        return ResolvedArtifact(Path(value).expanduser(), kind)  # the loader reports the missing folder
    config_file, allowed = _KINDS[kind]
    cache = str(cache_dir) if cache_dir is not None else hub_cache_dir()
    offline = bool(local_files_only) or hub_offline()
    common: dict[str, Any] = {
        "token": token,
        "cache_dir": cache,
        "local_files_only": offline,
        "force_download": force_download and not offline,
        "missing_hint": _MISSING_HINT[kind],
    }
    config_path = _download(value, config_file, revision=revision, first=True, **common)
    folder = config_path.parent
    commit = folder.name
    reader = read_config or (lambda f: _read_kind_config(kind, f))
    try:
        config = reader(folder)
    except ArtifactError as e:
        raise ArtifactError(f"{e} — {_cache_hint(value, folder)}") from e
    names = _listed_files(config, allowed, f"{value}/{config_file}")
    for name in names:
        _download(value, name, revision=commit, **common)
    with contextlib.suppress(ArtifactError):  # the model card is optional for loading
        _download(value, artifact.CARD_FILE, revision=commit, **common)
    _verify(folder, config, names, value)
    return ResolvedArtifact(folder, kind, value, commit)


def resolve_router_folder(
    id_or_folder: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Path:
    """The folder to load a router from (what :meth:`Router.from_pretrained` calls first)."""
    return resolve_folder(
        id_or_folder,
        kind="router",
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        force_download=force_download,
    ).folder


def detect_kind(folder: Path) -> str:
    """``"router"`` or ``"stat_pack"`` for a local artifact folder."""
    if (folder / artifact.CONFIG_FILE).is_file():
        return "router"
    if (folder / PACK_CONFIG_FILE).is_file():
        return "stat_pack"
    raise ArtifactError(
        f"{folder} holds neither a router ({artifact.CONFIG_FILE}) nor a stat pack ({PACK_CONFIG_FILE}); "
        "pass a folder written by save_pretrained or `ir3de stats`"
    )


def pull(
    id_or_folder: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> ResolvedArtifact:
    """Fetch a router or a stat pack (whichever the repo holds) into the cache and check it; with
    ``output``, also copy its files to that folder (atomically).

    Example:
        >>> pull("org/my-router", output="my-router").kind   # doctest: +SKIP
        'router'
    """
    kwargs: dict[str, Any] = {
        "revision": revision,
        "token": token,
        "cache_dir": cache_dir,
        "local_files_only": local_files_only,
        "force_download": force_download,
    }
    local = Path(str(id_or_folder)).expanduser()
    if local.is_dir():
        resolved = ResolvedArtifact(local, detect_kind(local))
    else:
        try:
            resolved = resolve_folder(id_or_folder, kind="router", **kwargs)
        except _MissingFileError as router_error:
            if router_error.filename != artifact.CONFIG_FILE:
                raise
            try:  # not a router: a stat pack?
                resolved = resolve_folder(id_or_folder, kind="stat_pack", **kwargs)
            except _MissingFileError as pack_error:
                if pack_error.filename != PACK_CONFIG_FILE:
                    raise
                raise router_error from None
    config_file, _ = _KINDS[resolved.kind]
    config = _read_kind_config(resolved.kind, resolved.folder)
    names = _listed_files(config, _KINDS[resolved.kind][1], str(resolved.folder / config_file))
    _verify(resolved.folder, config, names, resolved.repo_id)
    if output is not None:
        files = {name: (resolved.folder / name).read_bytes() for name in [config_file, *names]}
        card = resolved.folder / artifact.CARD_FILE
        if card.is_file():
            files[artifact.CARD_FILE] = card.read_bytes()
        folder = artifact.write_folder_atomically(output, files)
        return ResolvedArtifact(folder, resolved.kind, resolved.repo_id, resolved.commit)
    return resolved


# ---------------------------------------------------------------------------------------------- push


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
    """Upload a saved router or stat pack folder to a Hub model repo as one commit.

    The folder is checked first (config, sizes, sha256); the model card is re-rendered with the
    repo id in its usage snippets. The repo is created when missing (``private`` applies then), and
    a ``revision`` other than ``main`` is created as a branch. Returns huggingface_hub's
    ``CommitInfo`` (``.oid`` is the new commit, ``.commit_url`` its page).

    Example:
        >>> push_folder("my-router", "org/my-router", private=True)   # doctest: +SKIP
    """
    from .model_card import render_model_card, render_stat_pack_card

    path = Path(folder)
    kind = detect_kind(path)
    config_file, allowed = _KINDS[kind]
    config = _read_kind_config(kind, path)
    names = _listed_files(config, allowed, str(path / config_file))
    _verify(path, config, names, None)
    if hub_offline():
        raise ArtifactError(
            f"cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE=1); unset it to push {path}"
        )
    hf = _hf()
    api = hf.HfApi(endpoint=hub_endpoint(), token=token, library_name="ir3de")
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    target = getattr(repo_url, "repo_id", None) or repo_id
    if revision and revision != "main" and not create_pr:
        api.create_branch(target, branch=revision, exist_ok=True, repo_type="model")
    render = render_model_card if kind == "router" else render_stat_pack_card
    card = render(config, repo_id=target).encode("utf-8")
    operations = [
        hf.CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path / name))
        for name in [config_file, *names]
    ]
    operations.append(hf.CommitOperationAdd(path_in_repo=artifact.CARD_FILE, path_or_fileobj=card))
    what = "router" if kind == "router" else f"stat pack of expert {config['expert']['name']!r}"
    return api.create_commit(
        target,
        operations=operations,
        commit_message=commit_message or f"Upload ir3de {what}",
        revision=revision,
        create_pr=create_pr,
        repo_type="model",
    )


def push_router(
    router: Router,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Save ``router`` to a temporary folder and push it (see :func:`push_folder`)."""
    return push_saved(
        router,
        repo_id,
        "router",
        private=private,
        token=token,
        revision=revision,
        commit_message=commit_message,
        create_pr=create_pr,
    )


def push_saved(artifact: Any, repo_id: str, name: str, **push_kwargs: Any) -> Any:
    """Save anything with ``save_pretrained(folder)`` (a router, a stat pack) to a temporary folder and
    push that folder with :func:`push_folder`."""
    with tempfile.TemporaryDirectory(prefix="ir3de-push-") as tmp:
        folder = artifact.save_pretrained(Path(tmp) / name)
        return push_folder(folder, repo_id, **push_kwargs)


def config_summary(folder: Path) -> str:
    """One line describing a local artifact folder (for the CLI)."""
    kind = detect_kind(folder)
    config = _read_kind_config(kind, folder)
    if kind == "router":
        experts = ", ".join(e["name"] for e in config.get("experts", []))
        return f"router with experts [{experts}]"
    e = config["expert"]
    return f"stat pack of expert {e['name']!r} ({e['num_texts']} texts, {e['num_tokens']} tokens)"
