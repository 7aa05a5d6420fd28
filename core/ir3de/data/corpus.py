"""Read domain texts from files: plain text, JSON Lines, JSON, CSV and Parquet (the CLI's input).

:func:`read_texts` takes paths or glob patterns (``**`` included) and yields one ``str`` per record,
streaming line by line where the format allows (``.json`` and ``.parquet`` are read whole/by batch).
The format comes from the suffix; ``.gz`` variants of ``.txt``, ``.jsonl``, ``.json`` and ``.csv``
are decompressed on the fly:

============  ========================================================================
suffix        records
============  ========================================================================
``.txt``      one text per non-blank line (``whole_file=True``: the whole file is one text)
``.jsonl``    one JSON value per non-blank line: a string, or an object read with ``field`` (not needed
              when the object has one field or a field named ``text``)
``.json``     a JSON list of strings or objects
``.csv``      rows of a CSV file with a header row; ``field`` names the column
``.parquet``  rows of a Parquet file (needs ``pyarrow``); ``field`` names the column
``.py`` …     source code and documents (:data:`WHOLE_FILE_SUFFIXES`: ``.py``, ``.js``, ``.rs``,
              ``.md``, ``.tex`` …): each file is one text
============  ========================================================================

``field`` is a small path into each record: ``text``, ``a.b``, ``a[0]``, ``prompt[-1].content`` or
``prompt[-1]["content"]``. A key that contains dots can be named as is (the whole string is tried as
a key first). Blank texts (empty or whitespace only) are skipped; every text is returned unchanged
otherwise. Files are read as UTF-8 (a leading byte-order mark is ignored).

Every problem raises :class:`~ir3de.errors.CorpusError` naming the file, the line or row, and what to
do about it.

Example:
    >>> import json, pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.txt").write_text("first prompt\\n\\nsecond prompt\\n", encoding="utf-8")
    >>> rows = [{"prompt": [{"content": "hi"}, {"content": "how are you?"}]}]
    >>> _ = (d / "b.jsonl").write_text("\\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    >>> list(read_texts(d / "a.txt"))
    ['first prompt', 'second prompt']
    >>> list(read_texts(d / "b.jsonl", field="prompt[-1].content"))
    ['how are you?']
    >>> [p.name for p in expand_paths(str(d / "*"))]
    ['a.txt', 'b.jsonl']
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os
import re
import shlex
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ir3de.errors import CorpusError, require

__all__ = [
    "SUPPORTED_SUFFIXES",
    "WHOLE_FILE_SUFFIXES",
    "expand_paths",
    "is_structured",
    "parse_field",
    "read_texts",
    "select_field",
]

PathLike = str | os.PathLike[str]
Steps = tuple[str | int, ...]

#: File suffixes :func:`read_texts` understands (``.gz`` only for the first four).
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".txt",
    ".jsonl",
    ".json",
    ".csv",
    ".parquet",
    ".txt.gz",
    ".jsonl.gz",
    ".json.gz",
    ".csv.gz",
)
#: Suffixes of source code and documents: read whole by default (one file = one text), because a
#: line of code or markup is rarely a meaningful text on its own.
WHOLE_FILE_SUFFIXES: tuple[str, ...] = (
    ".py", ".pyi", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".scala",
    ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".m", ".r",
    ".jl", ".lua", ".pl", ".hs", ".ml", ".sh", ".bash", ".sql", ".html", ".css", ".yaml",
    ".yml", ".toml", ".ini", ".md", ".rst", ".tex", ".org",
)  # fmt: skip
_STRUCTURED = ("jsonl", "json", "csv", "parquet")
_PARQUET_INSTALL = "pip install pyarrow"

# ----------------------------------------------------------------------------------------------
# paths


def expand_paths(patterns: PathLike | Sequence[PathLike]) -> list[Path]:
    """Expand paths and glob patterns (``*``, ``?``, ``[..]``, ``**``) into a list of files.

    Each pattern's matches are sorted; the patterns keep the order they are given in, and a file
    matched twice is listed once. An existing path is taken literally (even if it contains glob
    characters); a directory stands for every file with a supported suffix below it.

    Raises:
        CorpusError: a pattern matches nothing (the message names it), or no pattern is given.

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("b.txt", "a.txt", "sub/c.jsonl"):
        ...     (d / name).parent.mkdir(exist_ok=True)
        ...     _ = (d / name).write_text("x", encoding="utf-8")
        >>> [p.relative_to(d).as_posix() for p in expand_paths([str(d / "**" / "*.*"), d / "a.txt"])]
        ['a.txt', 'b.txt', 'sub/c.jsonl']
    """
    items = _as_list(patterns)
    if not items:
        raise CorpusError("no input file given: pass at least one path or glob pattern (e.g. 'data/*.jsonl')")
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.exists():
            matches = _files_below(path) if path.is_dir() else [path]
            if not matches:
                raise CorpusError(
                    f"directory {text!r} has no file with a supported suffix "
                    f"({', '.join(SUPPORTED_SUFFIXES)}); pass a glob pattern for the files to read"
                )
        else:
            found = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            matches = []
            for m in found:
                p = Path(m)
                matches.extend(_files_below(p) if p.is_dir() else [p])
            if not matches:
                raise CorpusError(
                    f"no file matches {text!r}: check the path (relative paths start at {os.getcwd()!r}) "
                    "and quote glob patterns so the shell does not expand them"
                )
        for p in matches:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def _as_list(patterns: PathLike | Sequence[PathLike]) -> list[PathLike]:
    if isinstance(patterns, (str, os.PathLike)):
        return [patterns]
    if isinstance(patterns, (bytes, bytearray)):
        raise CorpusError("paths must be str or os.PathLike, not bytes")
    return list(patterns)


def _files_below(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and (_format_of(p) is not None or _is_document(p))
    )


def _is_document(path: Path) -> bool:
    """Source code or a document (read whole by default): see :data:`WHOLE_FILE_SUFFIXES`."""
    return path.name.lower().endswith(WHOLE_FILE_SUFFIXES)


def is_structured(path: PathLike) -> bool:
    """Whether a file holds separate records (``.jsonl``, ``.json``, ``.csv``, ``.parquet``, gzipped or not).

    Example:
        >>> is_structured("a/q.jsonl.gz"), is_structured("notes.txt"), is_structured("x.py")
        (True, False, False)
    """
    fmt = _format_of(Path(os.fspath(path)))
    return fmt is not None and fmt[0] in _STRUCTURED


def _format_of(path: Path) -> tuple[str, bool] | None:
    """``(format, gzipped)`` from the file name, or ``None`` for an unknown suffix."""
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix.split(".")[1], suffix.endswith(".gz")
    return None


# ----------------------------------------------------------------------------------------------
# field paths

_KEY = re.compile(r"[^.\[\]]+")
_INDEX = re.compile(r"\[\s*(-?\d+)\s*\]")
_QUOTED = re.compile(r"""\[\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\s*\]""")


def parse_field(field: str) -> tuple[str | int, ...]:
    """Parse a field path into keys (``str``) and list indices (``int``).

    Example:
        >>> parse_field('prompt[-1].content'), parse_field('prompt[-1]["content"]'), parse_field("a.b[0]")
        (('prompt', -1, 'content'), ('prompt', -1, 'content'), ('a', 'b', 0))

    Raises:
        CorpusError: the path is empty or malformed.
    """
    if not isinstance(field, str) or not field.strip():
        raise CorpusError(
            f"field must be a non-empty string like 'text' or 'prompt[-1].content', got {field!r}"
        )
    steps: list[str | int] = []
    pos, n = 0, len(field)
    expect_key = True  # at the start or right after a dot
    while pos < n:
        if field[pos] == "[":
            m = _INDEX.match(field, pos)
            if m:
                steps.append(int(m.group(1)))
            else:
                m = _QUOTED.match(field, pos)
                if not m:
                    raise CorpusError(_bad_field(field, pos))
                raw = m.group(1) if m.group(1) is not None else m.group(2)
                steps.append(re.sub(r"\\(.)", r"\1", raw))
            pos, expect_key = m.end(), False
        elif field[pos] == ".":
            if expect_key:
                raise CorpusError(_bad_field(field, pos))
            pos, expect_key = pos + 1, True
            if pos == n:
                raise CorpusError(_bad_field(field, pos))
        else:
            m = _KEY.match(field, pos)
            if not m or not expect_key:
                raise CorpusError(_bad_field(field, pos))
            steps.append(m.group(0))
            pos, expect_key = m.end(), False
    return tuple(steps)


def _bad_field(field: str, pos: int) -> str:
    return (
        f"cannot parse field {field!r} at character {pos}: use keys separated by dots and list indices "
        "in brackets, e.g. 'text', 'meta.title', 'prompt[-1].content' or 'prompt[-1][\"content\"]'"
    )


def select_field(record: Any, field: str, steps: Steps | None = None) -> Any:
    """Follow a field path into a record (dicts and lists). Raises ``LookupError`` with a reason.

    The whole ``field`` string is tried first as a plain key, so keys that contain dots or brackets
    still work.

    Example:
        >>> select_field({"prompt": [{"content": "a"}, {"content": "b"}]}, "prompt[-1].content")
        'b'
        >>> select_field({"a.b": 1}, "a.b")
        1
    """
    if isinstance(record, dict) and field in record:
        return record[field]
    value = record
    walked = ""
    for step in steps if steps is not None else parse_field(field):
        if isinstance(step, int):
            if not isinstance(value, (list, tuple)):
                raise LookupError(
                    f"{walked or 'the record'} is {_kind(value)}, not a list, so [{step}] does not apply"
                )
            if not -len(value) <= step < len(value):
                raise LookupError(
                    f"index [{step}] is out of range: {walked or 'the record'} has {len(value)} items"
                )
            value = value[step]
            walked += f"[{step}]"
        else:
            if not isinstance(value, dict):
                raise LookupError(
                    f"{walked or 'the record'} is {_kind(value)}, not an object, so key {step!r} "
                    "does not apply"
                )
            if step not in value:
                raise LookupError(f"{walked or 'the record'} has no key {step!r} (keys: {_keys(value)})")
            value = value[step]
            walked += f".{step}" if walked else step
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    name = {dict: "object", list: "list", str: "string", bool: "boolean", float: "number"}.get(
        type(value), type(value).__name__
    )
    return ("an " if name[0] in "aeiou" else "a ") + name


def _keys(record: dict[str, Any], limit: int = 20) -> str:
    keys = [str(k) for k in record]
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys)} keys)" if len(keys) > limit else "") if keys else "none"


# ----------------------------------------------------------------------------------------------
# reading


def read_texts(
    paths: PathLike | Sequence[PathLike],
    *,
    field: str | None = None,
    whole_file: bool | None = None,
) -> Iterator[str]:
    """Yield the texts stored in files, one per record, in file order.

    Args:
        paths: a path, a glob pattern, or a sequence of them (see :func:`expand_paths`).
        field: for records that are objects (JSON objects, CSV/Parquet rows), the path of the text in
            each record: ``"question"``, ``"meta.title"``, ``"prompt[-1].content"``. Leave it ``None``
            for ``.txt`` files and for JSON records that are plain strings.
        whole_file: ``None`` (default): per file type: ``.txt`` holds one text per line, source code
            and documents (:data:`WHOLE_FILE_SUFFIXES`, e.g. ``.py``, ``.md``) are one text per file.
            ``True``: every non-structured file (``.txt``, ``.txt.gz``, and files with any other
            suffix) is one text. ``False``: every plain text file, source code included, holds one
            text per line. Structured files (``.jsonl``, ``.json``, ``.csv``, ``.parquet``) always
            hold records; ``whole_file=True`` on them is refused.

    Paths, suffixes, the field syntax and ``pyarrow`` (for Parquet) are checked before the first text
    is returned; problems inside a file are raised when the reader reaches them.

    Raises:
        CorpusError: a pattern matches nothing, an unknown suffix, a malformed or undecodable file, a
            record without ``field`` or whose value is not a string, objects read without ``field``.
        MissingDependencyError: a ``.parquet`` file and ``pyarrow`` is not installed.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "q.csv"
        >>> _ = p.write_text('id,question\\n1,"What is 2+2?"\\n2,Name a prime.\\n', encoding="utf-8")
        >>> list(read_texts(p, field="question"))
        ['What is 2+2?', 'Name a prime.']
    """
    files = expand_paths(paths)
    steps = parse_field(field) if field is not None else None
    plan: list[tuple[Path, str, bool]] = []
    for path in files:
        fmt = _format_of(path)
        if fmt is None and whole_file is False and _is_document(path):
            plan.append((path, "txt", False))
        elif fmt is None and whole_file is None and _is_document(path):
            plan.append((path, "whole", False))
        elif fmt is None or (whole_file and fmt[0] == "txt"):
            if not whole_file:
                raise CorpusError(
                    f"{path}: unknown file type; supported suffixes: {', '.join(SUPPORTED_SUFFIXES)} "
                    "(or pass whole_file=True / --whole-file to read any text file as one text; source code such as .py "
                    "is read whole by default)"
                )
            plan.append((path, "whole", path.name.lower().endswith(".gz")))
        else:
            if whole_file:
                raise CorpusError(
                    f"{path}: whole_file (--whole-file) reads plain text files as one text each; a "
                    f".{fmt[0]} file holds separate records, so read it without whole_file"
                )
            plan.append((path, fmt[0], fmt[1]))
    if any(kind == "parquet" for _, kind, _ in plan):
        _import_parquet()
    return _iterate(plan, field, steps)


def _iterate(plan: list[tuple[Path, str, bool]], field: str | None, steps: Steps | None) -> Iterator[str]:
    for path, kind, gz in plan:
        if kind == "whole":
            yield from _read_whole(path, gz)
        elif kind == "txt":
            yield from _read_txt(path, gz)
        elif kind == "jsonl":
            yield from _read_jsonl(path, gz, field, steps)
        elif kind == "json":
            yield from _read_json(path, gz, field, steps)
        elif kind == "csv":
            yield from _read_csv(path, gz, field, steps)
        else:
            yield from _read_parquet(path, field, steps)


def _open_binary(path: Path, gz: bool) -> gzip.GzipFile | io.BufferedReader:
    try:
        return gzip.open(path, "rb") if gz else open(path, "rb")
    except OSError as e:
        raise CorpusError(
            f"{path}: cannot open the file ({e.strerror or e}); check that it exists and is readable"
        ) from e


def _read_error(path: Path, e: Exception, where: str = "") -> CorpusError:
    if isinstance(e, (gzip.BadGzipFile, EOFError, zlib.error)):
        return CorpusError(f"{path}{where}: not a valid gzip file ({e}); decompress it or fix the .gz suffix")
    return CorpusError(f"{path}{where}: cannot read the file ({e}); check that it is readable")


def _binary_lines(path: Path, gz: bool) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every line, decoded as UTF-8 line by line."""
    number = 0
    with _open_binary(path, gz) as f:
        while True:
            try:
                raw = f.readline()
            except (OSError, EOFError, zlib.error) as e:
                raise _read_error(path, e, f" line {number + 1}") from e
            if not raw:
                return
            number += 1
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield number, _decode(raw, path, number).rstrip("\r\n")


def _decode(raw: bytes, path: Path, first_line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw[: e.start].count(b"\n")
        raise CorpusError(
            f"{path} line {line}: not valid UTF-8 ({e.reason}); convert the file to UTF-8, e.g. "
            "`iconv -f latin1 -t utf-8 in.txt > out.txt`"
        ) from None


def _read_whole(path: Path, gz: bool) -> Iterator[str]:
    with _open_binary(path, gz) as f:
        try:
            raw = f.read()
        except (OSError, EOFError, zlib.error) as e:
            raise _read_error(path, e) from e
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    text = _decode(raw, path, 1)
    if text.strip():
        yield text


def _read_txt(path: Path, gz: bool) -> Iterator[str]:
    for _, line in _binary_lines(path, gz):
        if line.strip():
            yield line


def _implied_field(names: Iterable[str]) -> str | None:
    """The field records need no ``field=`` for: a field named ``text``, else the only field."""
    names = list(names)
    if "text" in names:
        return "text"
    return names[0] if len(names) == 1 else None


def _text_of(record: Any, field: str | None, steps: Steps | None, where: str) -> str | None:
    """The text of one parsed record (``None`` when blank)."""
    if field is None:
        if isinstance(record, str):
            return record if record.strip() else None
        implied = _implied_field(record.keys()) if isinstance(record, dict) else None
        if implied is not None:
            return _text_of(record, implied, (implied,), where)
        if isinstance(record, dict):
            raise CorpusError(
                f"{where}: records are objects with keys {_keys(record)}; pass field= (--field) to say "
                "which one holds the text, e.g. --field " + shlex.quote(str(next(iter(record), "text")))
            )
        raise CorpusError(
            f"{where}: a record is {_kind(record)}; records must be strings, or objects read with "
            "field= (--field)"
        )
    try:
        value = select_field(record, field, steps)
    except LookupError as e:
        reason = e.args[0] if e.args else str(e)
        raise CorpusError(
            f"{where}: field {field!r} not found: {reason}; pass the field that holds the text in "
            "every record"
        ) from None
    if not isinstance(value, str):
        raise CorpusError(
            f"{where}: field {field!r} holds {_kind(value)}, not a string; choose a field whose value "
            "is the text"
        )
    return value if value.strip() else None


def jsonl_records(path: Path, gz: bool) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for every non-blank line of a ``.jsonl`` file (``where`` names path and line)."""
    for number, line in _binary_lines(path, gz):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(
                f"{path} line {number}: not valid JSON ({e.msg} at column {e.colno}); a .jsonl file "
                "holds one JSON value per line (use .json for one JSON document)"
            ) from None
        yield f"{path} line {number}", record


def json_records(path: Path, gz: bool, items: str = "strings or objects") -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for every item of a ``.json`` file holding one list of ``items``."""
    with _open_binary(path, gz) as f:
        try:
            raw = f.read()
        except (OSError, EOFError, zlib.error) as e:
            raise _read_error(path, e) from e
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        data = json.loads(_decode(raw, path, 1))
    except json.JSONDecodeError as e:
        raise CorpusError(
            f"{path} line {e.lineno}: not valid JSON ({e.msg} at column {e.colno}); fix the file, or use "
            ".jsonl for one JSON value per line"
        ) from None
    if not isinstance(data, list):
        hint = ""
        if isinstance(data, dict):
            lists = [k for k, v in data.items() if isinstance(v, list)]
            hint = f" (its list-valued keys: {', '.join(map(repr, lists))})" if lists else ""
        raise CorpusError(
            f"{path}: a .json file must hold a list of {items}, found {_kind(data)}{hint}; "
            "extract the list (e.g. `jq '.key' in.json > out.json`) or write one record per line as .jsonl"
        )
    for i, record in enumerate(data, start=1):
        yield f"{path} record {i}", record


def _read_jsonl(path: Path, gz: bool, field: str | None, steps: Steps | None) -> Iterator[str]:
    for where, record in jsonl_records(path, gz):
        text = _text_of(record, field, steps, where)
        if text is not None:
            yield text


def _read_json(path: Path, gz: bool, field: str | None, steps: Steps | None) -> Iterator[str]:
    for where, record in json_records(path, gz):
        text = _text_of(record, field, steps, where)
        if text is not None:
            yield text


def csv_rows(path: Path, gz: bool) -> Iterator[tuple[int, list[str]]]:
    """``(line number, row)`` of a CSV file, the header first (a UTF-8 BOM is dropped); a malformed
    file raises :class:`CorpusError` naming the line. Empty rows are yielded as ``[]``."""
    # Texts can be long: raise the csv module's per-field limit (131072 characters by default).
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with _open_binary(path, gz) as binary:
        reader = csv.reader(io.TextIOWrapper(binary, encoding="utf-8-sig", newline=""))
        for row in _guarded(reader, path, lambda: reader.line_num):
            yield reader.line_num, row


def _read_csv(path: Path, gz: bool, field: str | None, steps: Steps | None) -> Iterator[str]:
    rows = csv_rows(path, gz)
    first = next(rows, None)
    if first is None:
        return
    header = first[1]
    if field is None:
        field = _implied_field(header)
        steps = (field,) if field is not None else None
    if field is None:
        raise CorpusError(
            f"{path}: CSV rows have the columns {', '.join(map(repr, header))}; pass field= (--field) to "
            "say which column holds the text"
        )
    column = _column(field, steps, header)
    if column is None:
        raise CorpusError(
            f"{path} line 1: no column {field!r} in the header (columns: "
            f"{', '.join(map(repr, header))}); pass one of them as the field"
        )
    idx = header.index(column)
    for line, row in rows:
        if not row:
            continue
        where = f"{path} line {line}"
        if idx >= len(row):
            raise CorpusError(
                f"{where}: the row has {len(row)} values and no value for column {column!r}; every row "
                "needs as many values as the header"
            )
        if row[idx].strip():
            yield row[idx]


def _column(field: str, steps: Steps | None, names: list[str], nested: bool = False) -> str | None:
    """The column a field path starts with (CSV values are flat strings; Parquet columns may nest)."""
    if field in names:
        return field
    if steps and isinstance(steps[0], str) and steps[0] in names and (nested or len(steps) == 1):
        return steps[0]
    return None


def _guarded(reader: Iterable[list[str]], path: Path, line: Callable[[], int]) -> Iterator[list[str]]:
    it = iter(reader)
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except csv.Error as e:
            raise CorpusError(
                f"{path} line {line()}: malformed CSV ({e}); fix the quoting of that row"
            ) from None
        except UnicodeDecodeError as e:
            raise CorpusError(
                f"{path} near line {line() + 1}: not valid UTF-8 ({e.reason}); convert the file to UTF-8"
            ) from None
        except (OSError, EOFError, zlib.error) as e:
            raise _read_error(path, e, f" line {line() + 1}") from e
        yield row


def _import_parquet() -> Any:
    return require(
        "pyarrow.parquet", "reading .parquet files", f"{_PARQUET_INSTALL} (or pip install 'ir3de[files]')"
    )


def parquet_records(path: Path, columns: Callable[[list[str]], list[str]]) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for every row of a Parquet file, read in batches of the columns that
    ``columns(names of the file's columns)`` picks (it raises :class:`CorpusError` naming a missing one).

    An unreadable file or corrupt data raises :class:`CorpusError` naming the file and the record.
    """
    pq = _import_parquet()
    try:
        pfile = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses for bad files
        raise CorpusError(f"{path}: not a readable Parquet file ({e}); check the file") from None
    chosen = columns(list(pfile.schema_arrow.names))
    row = 0  # records read so far; messages count from 1
    try:
        for batch in pfile.iter_batches(batch_size=1024, columns=chosen):
            for record in batch.to_pylist():
                row += 1
                yield f"{path} record {row}", record
    except Exception as e:  # corrupt pages surface while iterating
        raise CorpusError(
            f"{path} record {row + 1}: cannot read the Parquet data ({e}); check the file"
        ) from None


def _read_parquet(path: Path, field: str | None, steps: Steps | None) -> Iterator[str]:
    def text_column(names: list[str]) -> list[str]:
        implied = _implied_field(names) if field is None else None
        if implied is not None:
            return [implied]
        if field is None:
            raise CorpusError(
                f"{path}: Parquet rows have the columns {', '.join(map(repr, names))}; pass field= (--field) "
                "to say which one holds the text"
            )
        column = _column(field, steps, names, nested=True)
        if column is None:
            raise CorpusError(
                f"{path}: no column {field!r} (columns: {', '.join(map(repr, names))}); pass one of them as "
                "the field"
            )
        return [column]

    for where, record in parquet_records(path, text_column):
        text = _text_of(record, field, steps, where)
        if text is not None:
            yield text
