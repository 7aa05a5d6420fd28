"""``ir3de stats``, ``ir3de merge``, ``ir3de push`` and ``ir3de pull``: stat packs and the Hugging Face Hub.

Examples::

    ir3de stats --expert math=gsm8k.jsonl --field question --description "math=grade-school math" -o math-pack
    ir3de push math-pack org/math-pack
    ir3de merge org/math-pack org/code-pack -o my-router          # a new router from packs
    ir3de merge org/legal-pack --into org/my-router -o my-router  # grow an existing router
    ir3de push my-router org/my-router --private
    ir3de pull org/my-router --revision v1 -o local-copy
    ir3de route org/my-router "Solve 3x + 5 = 11"                  # route loads repo ids too
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ir3de.cli.options import (
    add_corpus_arguments,
    add_settings_arguments,
    descriptions,
    expert_texts,
    load_embeddings,
    router_settings,
)

__all__ = ["register"]

_TOKEN_HELP = "Hub token (default: HF_TOKEN or the stored `hf auth login` token)"


def _hub_arguments() -> argparse.ArgumentParser:
    """The Hub options of the commands that download (``from_pretrained`` / ``pull`` keyword arguments)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--revision", help="branch, tag or commit of Hub repos (default: main)")
    p.add_argument("--token", help=_TOKEN_HELP)
    p.add_argument("--cache-dir", dest="cache_dir", help="HF cache folder (default: HF_HUB_CACHE / HF_HOME)")
    p.add_argument("--local-files-only", action="store_true", help="use the HF cache only")
    p.add_argument("--force-download", action="store_true", help="re-download into the cache")
    return p


def _hub_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = ("revision", "token", "cache_dir", "local_files_only", "force_download")
    return {name: getattr(args, name) for name in names}


def cmd_stats(args: argparse.Namespace) -> int:
    from ir3de.artifacts.stat_packs import StatPack

    texts = expert_texts(args)
    if len(texts) != 1:
        raise SystemExit(
            f"ir3de: error: a stat pack holds one expert; got {sorted(texts)} (run `ir3de stats` once per expert)"
        )
    ((name, corpus),) = texts.items()
    description = descriptions(args).get(name, "")
    emb = load_embeddings(args.embeddings)
    pack = StatPack.compute(name, corpus, emb, description=description, progress=not args.quiet)
    out = pack.save_pretrained(args.output)
    print(
        f"stat pack of {name!r}: {pack.num_texts} texts, {pack.num_tokens} tokens, "
        f"{pack.counts.token_ids.size} distinct token ids (embeddings {emb.name}); saved to {out}"
    )
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ir3de.artifacts.stat_packs import merge_packs
    from ir3de.router import Router, RouterConfig

    hub = _hub_kwargs(args)
    pack_hub = {k: v for k, v in hub.items() if k != "revision"}  # --revision is the router's (--into)
    if args.into:
        router = Router.from_pretrained(args.into, device=args.device, progress=not args.quiet, **hub)
        router.configure(**router_settings(args))
        merge_packs(args.packs, router=router, hub_kwargs=pack_hub)
    else:
        router = merge_packs(
            args.packs,
            embeddings=load_embeddings(args.embeddings) if args.embeddings else None,
            config=RouterConfig.paper() if args.preset == "paper" else RouterConfig(),
            device=args.device,
            progress=not args.quiet,
            hub_kwargs=pack_hub,
            **router_settings(args),
        )
    out = router.save_pretrained(args.output)
    sizes = ", ".join(
        f"{n}: {s.counts.num_texts} texts / {s.counts.num_tokens} tokens"
        for n, s in router.statistics.items()
    )
    print(f"merged {len(args.packs)} stat packs; experts {list(router.experts)} ({sizes}); saved to {out}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from ir3de.artifacts.hub import config_summary, push_folder

    options = {k: getattr(args, k) for k in ("token", "revision", "commit_message", "create_pr")}
    info = push_folder(args.folder, args.repo_id, private=args.private or None, **options)
    print(f"pushed {config_summary(Path(args.folder))} to {args.repo_id}: {info.commit_url}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from ir3de.artifacts.hub import config_summary, pull

    resolved = pull(args.repo_id, output=args.output, **_hub_kwargs(args))
    where = f"{resolved.repo_id}@{resolved.commit[:12]}" if resolved.commit else args.repo_id
    print(f"{config_summary(resolved.folder)} from {where}, checked; at {resolved.folder}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``stats``, ``merge``, ``push`` and ``pull`` to the ``ir3de`` command."""
    hub = _hub_arguments()
    p = subparsers.add_parser(
        "stats", help="count one expert's corpus into a stat pack (statistics, no weights)"
    )
    add_corpus_arguments(p)
    p.add_argument(
        "--embeddings",
        default="default",
        help="'default' (SmolLM2-135M), a .gguf file, a HF model folder or id",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("-o", "--output", required=True, help="folder to write the stat pack to")
    p.set_defaults(func=cmd_stats)

    p = subparsers.add_parser(
        "merge", parents=[hub], help="build a router from stat packs (folders or Hub repo ids)"
    )
    p.add_argument("packs", nargs="+", help="stat pack folders or Hub repo ids")
    p.add_argument("--into", help="add the packs to this router (folder or Hub repo id) instead of a new one")
    add_settings_arguments(p)
    p.add_argument("--embeddings", help="embeddings to use (default: the source recorded in the packs)")
    p.add_argument("--preset", choices=["default", "paper"], default="default")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("-o", "--output", required=True, help="folder to write the router to")
    p.set_defaults(func=cmd_merge)

    p = subparsers.add_parser(
        "push", help="upload a saved router or stat pack folder to the Hugging Face Hub"
    )
    p.add_argument("folder", help="a folder written by save_pretrained / `ir3de fit` / `ir3de stats`")
    p.add_argument("repo_id", help="Hub model repo, e.g. org/my-router (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", help=_TOKEN_HELP)
    p.add_argument("--revision", help="branch to commit to (created when missing; default main)")
    p.add_argument("--commit-message")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead")
    p.set_defaults(func=cmd_push)

    p = subparsers.add_parser(
        "pull", parents=[hub], help="download and check a router or stat pack from the Hub"
    )
    p.add_argument("repo_id", help="Hub model repo, e.g. org/my-router")
    p.add_argument("-o", "--output", help="also copy the files to this folder")
    p.set_defaults(func=cmd_pull)
