"""Read unlabelled prompts (text only) from the files the labelled readers take, for ``ir3de adapt``.

Adaptation (:meth:`ir3de.Router.adapt`) learns served prompts *without* their correct expert, so a
file of served prompts is read for its text column alone, in every format :mod:`ir3de.data.labelled`
reads — ``.jsonl``, ``.json``, ``.csv``, ``.parquet`` and the ``.gz`` variants of the first three —
plus plain ``.txt`` (one prompt per non-blank line). ``text_field`` names the text column or field
path, as in :func:`ir3de.data.corpus.read_texts` (``prompt``, ``messages[-1].content``); a JSON file
or JSON Lines file of bare strings needs ``text_field=None``.

A label column in the file is ignored, never learned: :func:`read_prompts` reports which files carry
one (``label_field``) so a command can say so and point to ``ir3de learn``, which learns labels.

Every problem raises :class:`~ir3de.errors.CorpusError` naming the file, the line or record, and the
fix.

Example:
    >>> import json, pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "served.jsonl"
    >>> rows = [{"text": "Solve 2x = 4", "label": "math"}, {"text": "def f(): pass"}]
    >>> _ = p.write_text("\\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    >>> served = read_prompts(p)
    >>> served.prompts, [f.name for f in served.labelled_files]
    (('Solve 2x = 4', 'def f(): pass'), ['served.jsonl'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ir3de.data.corpus import (
    PathLike,
    _format_of,
    _import_parquet,
    csv_rows,
    expand_paths,
    json_records,
    jsonl_records,
    parse_field,
    read_texts,
    select_field,
)
from ir3de.data.labelled import LABELLED_SUFFIXES
from ir3de.errors import CorpusError

__all__ = ["PROMPT_SUFFIXES", "ServedPrompts", "read_prompts"]

#: File suffixes :func:`read_prompts` understands: the labelled readers' and plain text.
PROMPT_SUFFIXES: tuple[str, ...] = (*LABELLED_SUFFIXES, ".txt", ".txt.gz")


@dataclass(frozen=True)
class ServedPrompts:
    """Unlabelled prompts read from files, in file order.

    Attributes:
        prompts: the non-blank texts.
        files: the files read.
        labelled_files: the files whose records carry a label field (ignored: adaptation learns text).

    Example:
        >>> ServedPrompts(("a", "b"), (), ()).prompts
        ('a', 'b')
    """

    prompts: tuple[str, ...]
    files: tuple[Path, ...]
    labelled_files: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.prompts)


def read_prompts(
    paths: PathLike | Sequence[PathLike],
    *,
    text_field: str | None = "text",
    label_field: str = "label",
) -> ServedPrompts:
    """Read the prompts of the files, text only.

    Args:
        paths: a path, a glob pattern, or a sequence of them (see :func:`ir3de.data.corpus.expand_paths`).
        text_field: the column (or field path) that holds the prompt in structured files; ``None`` for
            JSON/JSON Lines files of bare strings. Ignored for ``.txt``.
        label_field: a column that, when present, marks a file as labelled (reported, not read).

    Raises:
        CorpusError: no file, an unsupported suffix, a malformed file, a missing text column, a text
            that is not a string, or no prompt at all.
        MissingDependencyError: a ``.parquet`` file and ``pyarrow`` is not installed.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "served.csv"
        >>> _ = p.write_text("prompt,domain\\nWhat is 2+2?,math\\nprint(1),code\\n", encoding="utf-8")
        >>> served = read_prompts(p, text_field="prompt", label_field="domain")
        >>> served.prompts, len(served.labelled_files)
        (('What is 2+2?', 'print(1)'), 1)
    """
    files = expand_paths(paths)
    for path in files:
        if not path.name.lower().endswith(PROMPT_SUFFIXES):
            raise CorpusError(
                f"{path}: unsupported file for served prompts; supported suffixes: {', '.join(PROMPT_SUFFIXES)}"
            )
    prompts: list[str] = []
    labelled: list[Path] = []
    for path in files:
        fmt = _format_of(path)
        assert fmt is not None  # every PROMPT_SUFFIXES entry is a corpus suffix
        kind, gz = fmt
        field = None if kind == "txt" else text_field
        prompts.extend(read_texts(path, field=field, whole_file=False if kind == "txt" else None))
        if kind != "txt" and _has_label(path, kind, gz, label_field):
            labelled.append(path)
    if not prompts:
        shown = ", ".join(str(p) for p in files)
        raise CorpusError(
            f"no prompt in {shown}: every record was blank; check the files and the text field {text_field!r}"
        )
    return ServedPrompts(tuple(prompts), tuple(files), tuple(labelled))


def _has_label(path: Path, kind: str, gz: bool, label_field: str) -> bool:
    """Whether the first record of a structured file has ``label_field`` (the file was read already,
    so it is well formed)."""
    if kind == "csv":
        header = next(csv_rows(path, gz), None)
        return header is not None and label_field in header[1]
    if kind == "parquet":
        names: list[str] = list(_import_parquet().ParquetFile(path).schema_arrow.names)
        steps = parse_field(label_field)
        return label_field in names or (isinstance(steps[0], str) and steps[0] in names)
    records = jsonl_records(path, gz) if kind == "jsonl" else json_records(path, gz)
    first = next(records, None)
    if first is None or not isinstance(first[1], dict):
        return False
    try:
        select_field(first[1], label_field)
    except LookupError:
        return False
    return True
