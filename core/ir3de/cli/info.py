"""``ir3de info``: check every file of a saved router and describe it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ir3de.cli.options import EXIT_OK

__all__ = ["register"]


def _verify_router(folder: Path) -> dict[str, Any]:
    """Read a saved router completely: every file's size and sha256, shapes, tokenizer (like routing)."""
    from ir3de.artifacts import format as artifact
    from ir3de.router import Router

    config = artifact.read_config(folder)
    for name in sorted(config.get("files") or {}):
        artifact.read_file_checked(folder, name, config)
    Router.from_pretrained(folder, device="cpu")  # shapes, statistics, tokenizer fingerprint
    return config


def cmd_info(args: argparse.Namespace) -> int:
    config = _verify_router(Path(args.router))
    if args.json:
        print(json.dumps(config, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(
        f"ir3de router (format {config['format_version']}, written by ir3de {config.get('library_version')})"
    )
    print(f"  files: {len(config.get('files') or {})} checked (size and sha256 as recorded)")
    print(f"  vocabulary {config['vocab_size']} ids, hidden size {config['hidden_size']}")
    source = config.get("embedding_source") or {}
    print(
        f"  embeddings: {source.get('kind')} {source.get('model_id') or source.get('path') or source.get('package') or ''}"
    )
    print(f"  settings: {config['settings']}")
    print("  experts:")
    for e in config["experts"]:
        desc = f" — {e['description']}" if e.get("description") else ""
        learned = f" + {e['traffic']['num_prompts']} learned prompts" if e.get("traffic") else ""
        print(f"    {e['name']}: {e['num_texts']} texts, {e['num_tokens']} tokens{learned}{desc}")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``info`` to the ``ir3de`` command's subparsers."""
    p = sub.add_parser("info", help="check every file of a saved router and describe it")
    p.add_argument("router", help="router folder")
    p.add_argument("--json", action="store_true", help="print config.json")
    p.set_defaults(func=cmd_info)
