"""Read labelled prompts from files: a text column and a label column (JSONL, JSON, CSV, Parquet).

One labelled format serves every command that needs prompts *with their correct expert*:
``ir3de fit`` (the labels name the experts), ``ir3de eval`` (a held-out labelled file),
``ir3de learn`` (served prompts and their correct expert) and ``router.learn``.

============  ========================================================================
suffix        records
============  ========================================================================
``.jsonl``    one JSON object per non-blank line
``.json``     a JSON list of objects
``.csv``      rows of a CSV file with a header row
``.parquet``  rows of a Parquet file (needs ``pyarrow``)
============  ========================================================================

``.gz`` variants of the first three are decompressed on the fly. ``text_field`` and ``label_field``
name the two columns (defaults ``"text"`` and ``"label"``); in JSON records and Parquet structs they
are field paths like :func:`ir3de.data.corpus.read_texts`'s ``field`` (``prompt[-1].content``,
``meta.domain``). A label is a non-blank string (an integer label is read as its decimal string).
Records whose text is blank are skipped (as in :mod:`ir3de.data.corpus`); a blank or missing label is an
error, because silently dropping it would change the data.

Every problem raises :class:`~ir3de.errors.CorpusError` naming the file, the line or record, and
the fix; :func:`check_labels` raises :class:`~ir3de.errors.UnknownExpertError` listing the experts.

Example:
    >>> import json, pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "served.jsonl"
    >>> rows = [{"text": "Solve 2x = 4", "label": "math"}, {"text": "def f(): pass", "label": "code"}]
    >>> _ = p.write_text("\\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    >>> data = read_labelled(p)
    >>> data.texts, data.labels
    (('Solve 2x = 4', 'def f(): pass'), ('math', 'code'))
    >>> data.by_label()
    {'math': ['Solve 2x = 4'], 'code': ['def f(): pass']}
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ir3de.data.corpus import (
    PathLike,
    _format_of,
    _import_parquet,
    _kind,
    csv_rows,
    expand_paths,
    json_records,
    jsonl_records,
    parquet_records,
    parse_field,
    select_field,
)
from ir3de.errors import CorpusError, InvalidInputError, UnknownExpertError
from ir3de.fitting.statistics import ExpertCounts

__all__ = [
    "LABELLED_SUFFIXES",
    "LabelledData",
    "check_labels",
    "group_prompts",
    "iter_labelled",
    "learn_groups",
    "read_labelled",
]

#: File suffixes :func:`read_labelled` understands.
LABELLED_SUFFIXES: tuple[str, ...] = (
    ".jsonl",
    ".json",
    ".csv",
    ".parquet",
    ".jsonl.gz",
    ".json.gz",
    ".csv.gz",
)

DEFAULT_TEXT_FIELD = "text"
DEFAULT_LABEL_FIELD = "label"


@dataclass(frozen=True)
class LabelledData:
    """Prompts and their labels (expert names), in file order.

    Example:
        >>> d = LabelledData(texts=("a", "b", "c"), labels=("x", "y", "x"))
        >>> len(d), d.experts, d.by_label()
        (3, ['x', 'y'], {'x': ['a', 'c'], 'y': ['b']})
    """

    texts: tuple[str, ...]
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise CorpusError(
                f"{len(self.texts)} texts but {len(self.labels)} labels: give one label per text"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def experts(self) -> list[str]:
        """The distinct labels in order of first appearance."""
        return list(dict.fromkeys(self.labels))

    def by_label(self) -> dict[str, list[str]]:
        """``{label: [texts...]}`` in order of first appearance (the shape ``fit``/``evaluate`` take)."""
        out: dict[str, list[str]] = {}
        for text, label in zip(self.texts, self.labels):
            out.setdefault(label, []).append(text)
        return out


def read_labelled(
    paths: PathLike | Sequence[PathLike],
    *,
    text_field: str = DEFAULT_TEXT_FIELD,
    label_field: str = DEFAULT_LABEL_FIELD,
) -> LabelledData:
    """Read every labelled record of the files into a :class:`LabelledData`.

    Args:
        paths: a path, a glob pattern, or a sequence of them (see :func:`ir3de.data.corpus.expand_paths`).
        text_field: the column (or field path) that holds the prompt.
        label_field: the column (or field path) that holds its expert's name.

    Raises:
        CorpusError: no file, an unsupported suffix, a malformed file, a missing column, a text that
            is not a string, a blank or missing label, or no labelled record at all.
        MissingDependencyError: a ``.parquet`` file and ``pyarrow`` is not installed.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "held_out.csv"
        >>> _ = p.write_text("prompt,domain\\nWhat is 2+2?,math\\nprint(1),code\\n", encoding="utf-8")
        >>> read_labelled(p, text_field="prompt", label_field="domain").by_label()
        {'math': ['What is 2+2?'], 'code': ['print(1)']}
    """
    texts: list[str] = []
    labels: list[str] = []
    for text, label in iter_labelled(paths, text_field=text_field, label_field=label_field):
        texts.append(text)
        labels.append(label)
    if not texts:
        shown = ", ".join(str(p) for p in expand_paths(paths))
        raise CorpusError(
            f"no labelled prompt in {shown}: every record was blank; check the file and "
            f"the text field {text_field!r}"
        )
    return LabelledData(tuple(texts), tuple(labels))


def iter_labelled(
    paths: PathLike | Sequence[PathLike],
    *,
    text_field: str = DEFAULT_TEXT_FIELD,
    label_field: str = DEFAULT_LABEL_FIELD,
) -> Iterator[tuple[str, str]]:
    """Yield ``(text, label)`` for every record with a non-blank text, file by file, in order.

    Paths, suffixes, the field syntax and ``pyarrow`` are checked before the first pair is
    returned; problems inside a file are raised when the reader reaches them.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = p.write_text('[{"q": {"text": "hi"}, "y": 3}]', encoding="utf-8")
        >>> list(iter_labelled(p, text_field="q.text", label_field="y"))
        [('hi', '3')]
    """
    files = expand_paths(paths)
    fields = _Fields(text_field, label_field)
    plan: list[tuple[Path, str, bool]] = []
    for path in files:
        fmt = _format_of(path)
        if fmt is None or fmt[0] == "txt":
            raise CorpusError(
                f"{path}: a labelled file needs a text and a label per record; supported suffixes: "
                f"{', '.join(LABELLED_SUFFIXES)} (a .txt file holds texts only: name its expert with "
                "--expert NAME=FILE instead)"
            )
        plan.append((path, fmt[0], fmt[1]))
    if any(kind == "parquet" for _, kind, _ in plan):
        _import_parquet()
    return _iterate(plan, fields)


def check_labels(labels: Iterable[str], experts: Sequence[str], *, create: bool = False) -> list[str]:
    """The labels that are not experts, in order of first appearance; an error unless ``create``.

    Raises:
        UnknownExpertError: some label is not an expert and ``create`` is false; the message lists
            the unknown labels, the router's experts and the flag that creates them.

    Example:
        >>> check_labels(["math", "law", "math"], ["math", "code"], create=True)
        ['law']
    """
    known = set(experts)
    unknown = [label for label in dict.fromkeys(labels) if label not in known]
    if unknown and not create:
        raise UnknownExpertError(
            f"label(s) {unknown} are not experts of this router (experts: {list(experts)}); fix the labels, "
            "or pass create_experts=True (CLI: --create-experts) to add them as new experts"
        )
    return unknown


def learn_groups(
    prompts: str | Iterable[str] | Mapping[str, Iterable[str] | ExpertCounts] | LabelledData,
    experts: str | Iterable[str] | None = None,
) -> dict[str, list[str] | ExpertCounts]:
    """What ``Router.learn`` takes, grouped by expert: :func:`group_prompts` of prompts, or a mapping
    ``{expert: ExpertCounts}`` of precomputed traffic blocks kept as is (checked for type).

    Example:
        >>> learn_groups(["2+2?"], "math")
        {'math': ['2+2?']}
    """
    if isinstance(prompts, Mapping) and any(isinstance(v, ExpertCounts) for v in prompts.values()):
        if experts is not None:
            raise InvalidInputError(
                "a mapping {expert: ExpertCounts} carries its labels: pass it without experts"
            )
        for name, block in prompts.items():
            if not isinstance(name, str) or not isinstance(block, ExpertCounts):
                raise InvalidInputError(
                    f"learn takes either prompts or ExpertCounts per expert, not both: {name!r} has a "
                    f"{type(block).__name__}"
                )
        return dict(prompts)
    return dict(group_prompts(prompts, experts))


def group_prompts(
    prompts: str | Iterable[str] | Mapping[str, Iterable[str]] | LabelledData,
    experts: str | Iterable[str] | None = None,
) -> dict[str, list[str]]:
    """Prompts grouped by their expert, in order of first appearance, checked for type.

    Takes prompts and their experts in any of the forms ``Router.learn`` accepts: two aligned
    sequences, a sequence of prompts and one expert for all, a mapping ``{expert: prompts}``, or a
    :class:`LabelledData`.

    Raises:
        InvalidInputError: a prompt or a label that is not a string, sequences of different
            lengths, a mapping together with ``experts``, or no prompt at all.

    Example:
        >>> group_prompts(["2+2?", "def f():", "3*3?"], ["math", "code", "math"])
        {'math': ['2+2?', '3*3?'], 'code': ['def f():']}
        >>> group_prompts(["2+2?"], "math"), group_prompts({"code": ["x = 1"]})
        ({'math': ['2+2?']}, {'code': ['x = 1']})
    """
    if isinstance(prompts, LabelledData):
        if experts is not None:
            raise InvalidInputError("LabelledData carries its labels: pass it without experts")
        experts = list(prompts.labels)
        prompts = list(prompts.texts)
    if isinstance(prompts, Mapping):
        if experts is not None:
            raise InvalidInputError(
                "pass either a mapping {expert: prompts} or prompts and experts, not both"
            )
        pairs = [(p, e) for e, ps in prompts.items() for p in _prompt_list(ps, f"prompts of expert {e!r}")]
    else:
        texts = _prompt_list(prompts, "prompts")
        if experts is None:
            raise InvalidInputError(
                "say which expert each prompt belongs to: learn(prompts, experts) with one expert name per "
                "prompt (or one name for all), or learn({expert: prompts})"
            )
        if isinstance(experts, str):
            labels = [experts] * len(texts)
        else:
            labels = list(experts)
            if len(labels) != len(texts):
                raise InvalidInputError(
                    f"{len(texts)} prompts but {len(labels)} experts: give one expert name per prompt"
                )
        pairs = list(zip(texts, labels))
    if not pairs:
        raise InvalidInputError("no prompt to learn: give at least one prompt with its expert")
    out: dict[str, list[str]] = {}
    for i, (_, label) in enumerate(pairs):
        if not isinstance(label, str) or not label.strip():
            raise InvalidInputError(f"the expert of prompt #{i} is {label!r}; experts are non-empty strings")
    for text, label in pairs:
        out.setdefault(label, []).append(text)
    return out


def _prompt_list(prompts: Any, what: str) -> list[str]:
    if isinstance(prompts, (str, bytes)):
        raise InvalidInputError(
            f"{what} is a single {type(prompts).__name__}; pass a list of strings (e.g. [{prompts[:20]!r}]), "
            "also for one prompt: learn([prompt], expert)"
        )
    try:
        items = list(prompts)
    except TypeError:
        raise InvalidInputError(
            f"{what} must be an iterable of strings, got {type(prompts).__name__}"
        ) from None
    for i, p in enumerate(items):
        if not isinstance(p, str):
            raise InvalidInputError(f"prompt #{i} of {what} is a {type(p).__name__}, not a str")
    return items


# ----------------------------------------------------------------------------------------------
# internals


class _Fields:
    def __init__(self, text_field: str, label_field: str) -> None:
        self.text = text_field
        self.label = label_field
        self.text_steps = parse_field(text_field)
        self.label_steps = parse_field(label_field)


def _iterate(plan: list[tuple[Path, str, bool]], fields: _Fields) -> Iterator[tuple[str, str]]:
    for path, kind, gz in plan:
        if kind == "jsonl":
            records: Iterator[tuple[str, Any]] = jsonl_records(path, gz)
        elif kind == "json":
            records = json_records(path, gz, items="objects")
        elif kind == "csv":
            records = _csv_records(path, gz, fields)
        else:
            records = parquet_records(path, functools.partial(_label_columns, path, fields))
        for where, record in records:
            pair = _pair(record, fields, where)
            if pair is not None:
                yield pair


def _get(record: Any, field: str, steps: tuple[str | int, ...], where: str, what: str) -> Any:
    if not isinstance(record, dict):
        raise CorpusError(
            f"{where}: a record is {_kind(record)}; labelled records must be objects with a {what} "
            f"field {field!r}"
        )
    try:
        return select_field(record, field, steps)
    except LookupError as e:
        reason = e.args[0] if e.args else str(e)
        flag = "--text-field" if what == "text" else "--label-field"
        raise CorpusError(
            f"{where}: {what} field {field!r} not found: {reason}; pass the field that holds the "
            f"{what} in every record ({flag})"
        ) from None


def _pair(record: Any, fields: _Fields, where: str) -> tuple[str, str] | None:
    text = _get(record, fields.text, fields.text_steps, where, "text")
    if not isinstance(text, str):
        raise CorpusError(
            f"{where}: text field {fields.text!r} holds {_kind(text)}, not a string; choose the field "
            "whose value is the prompt (--text-field)"
        )
    if not text.strip():
        return None
    label = _get(record, fields.label, fields.label_steps, where, "label")
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str) or not label.strip():
        shown = "a blank string" if isinstance(label, str) else _kind(label)
        raise CorpusError(
            f"{where}: label field {fields.label!r} holds {shown}; every prompt needs its expert's "
            "name as the label (--label-field names the column)"
        )
    return text, label.strip()


def _csv_records(path: Path, gz: bool, fields: _Fields) -> Iterator[tuple[str, Any]]:
    rows = csv_rows(path, gz)
    first = next(rows, None)
    if first is None:
        return
    header = first[1]
    for field, what in ((fields.text, "text"), (fields.label, "label")):
        if field not in header:
            flag = "--text-field" if what == "text" else "--label-field"
            raise CorpusError(
                f"{path} line 1: no {what} column {field!r} in the header (columns: "
                f"{', '.join(map(repr, header))}); name it with {flag}"
            )
    for line, row in rows:
        if not row:
            continue
        where = f"{path} line {line}"
        if len(row) != len(header):
            raise CorpusError(
                f"{where}: the row has {len(row)} values but the header has {len(header)} columns; "
                "every row needs one value per column (quote values that contain commas)"
            )
        yield where, dict(zip(header, row))


def _label_columns(path: Path, fields: _Fields, names: list[str]) -> list[str]:
    """The Parquet columns holding the text and the label (one when both fields start in the same)."""
    columns: list[str] = []
    for field, steps, what in (
        (fields.text, fields.text_steps, "text"),
        (fields.label, fields.label_steps, "label"),
    ):
        column = field if field in names else (steps[0] if isinstance(steps[0], str) else None)
        if column not in names:
            flag = "--text-field" if what == "text" else "--label-field"
            raise CorpusError(
                f"{path}: no {what} column {field!r} (columns: {', '.join(map(repr, names))}); name it "
                f"with {flag}"
            )
        assert column is not None
        if column not in columns:
            columns.append(column)
    return columns
