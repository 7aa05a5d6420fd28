"""Make any ``str`` safe to tokenize: lone surrogates become U+FFFD (the replacement character).

A Python ``str`` can hold code points that are not valid Unicode scalar values: lone UTF-16
surrogates (U+D800–U+DFFF), as produced by ``json.loads('"\\ud83d"')`` or by decoding undecodable
bytes with ``errors="surrogateescape"`` (how Python decodes ``sys.argv`` and file names). The Rust
tokenizer refuses them with a bare ``TypeError``. ir3de's policy, the same everywhere (routing,
batch routing, counting for a fit, stat packs, Ray workers, the CLI): **each lone surrogate is
replaced by U+FFFD** and the text is routed or counted as usual; a valid surrogate pair is joined
into its character. Undecodable bytes read by the ``ir3de`` command (arguments, standard input) are
decoded as UTF-8 with the same replacement. Corpus *files* that are not valid UTF-8 are still
refused with a :class:`~ir3de.errors.CorpusError` naming the line (a wrong encoding there is a data
problem worth fixing, not noise to replace).

Example:
    >>> clean_text("caf\\udce9")
    'caf�'
    >>> clean_text("plain ascii") == "plain ascii"
    True
    >>> decode_bytes(b"caf\\xe9")
    'caf�'
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

__all__ = ["clean_arg", "clean_text", "clean_texts", "decode_bytes"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (the same object when there is none).

    Example:
        >>> clean_text("\\ud83d\\ude00 ok"), clean_text("\\ud83d ok")
        ('😀 ok', '� ok')
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_texts(texts: Sequence[str]) -> list[str]:
    """:func:`clean_text` applied to every text (the list is new; clean texts are not copied)."""
    return [clean_text(t) for t in texts]


def decode_bytes(raw: bytes) -> str:
    """Decode UTF-8 bytes, replacing undecodable bytes with U+FFFD (a leading BOM is dropped)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw.decode("utf-8", "replace")


def clean_arg(arg: str) -> str:
    """A command-line argument as text: bytes that the OS decoding escaped become U+FFFD.

    ``sys.argv`` holds undecodable bytes as surrogate escapes (``b"\\xe9"`` → ``"\\udce9"``); the
    original bytes are recovered with :func:`os.fsencode` and decoded as UTF-8 with replacement.
    """
    if arg.isascii() or _SURROGATE.search(arg) is None:
        return arg
    try:
        return decode_bytes(os.fsencode(arg))
    except (UnicodeError, ValueError):
        return clean_text(arg)
