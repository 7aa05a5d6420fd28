"""Reading served prompts text-only (``ir3de adapt``): every labelled format plus .txt, labels reported
and never read, and the errors."""

from __future__ import annotations

import doctest
import gzip
import json
from pathlib import Path

import pytest

from ir3de.data import unlabelled
from ir3de.data.unlabelled import PROMPT_SUFFIXES, read_prompts
from ir3de.errors import CorpusError

ROWS = [
    {"prompt": "What is 2+2?", "domain": "math"},
    {"prompt": "def f(x):\n    return x", "domain": "code"},
    {"prompt": "   ", "domain": "math"},  # blank text: skipped
    {"prompt": 'Ünïcödé, ‚quoted‘ "text"', "domain": "poetry"},
]
EXPECTED = ("What is 2+2?", "def f(x):\n    return x", 'Ünïcödé, ‚quoted‘ "text"')


def _write(path: Path, data: str) -> Path:
    raw = data.encode("utf-8")
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _file(folder: Path, suffix: str, rows: list[dict]) -> Path:
    path = folder / f"served{suffix}"
    if suffix.startswith(".jsonl"):
        return _write(path, "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    if suffix.startswith(".json"):
        return _write(path, json.dumps(rows, ensure_ascii=False))
    if suffix.startswith(".csv"):
        return _write(path, _csv(rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize(
    "suffix", [".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz", ".parquet"]
)
def test_every_labelled_format_reads_the_texts_and_reports_the_label_column(tmp_path, suffix):
    path = _file(tmp_path, suffix, ROWS)
    served = read_prompts(path, text_field="prompt", label_field="domain")
    assert served.prompts == EXPECTED and len(served) == 3
    assert served.files == (path,) and served.labelled_files == (path,)
    # the default label field is not in these records: the file counts as unlabelled
    assert read_prompts(path, text_field="prompt").labelled_files == ()


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_a_file_without_labels_is_read_the_same(tmp_path, suffix):
    path = _file(tmp_path, suffix, [{"prompt": r["prompt"]} for r in ROWS])
    served = read_prompts(path, text_field="prompt", label_field="domain")
    assert served.prompts == EXPECTED and served.labelled_files == ()


def test_plain_text_and_bare_strings(tmp_path):
    txt = _write(tmp_path / "a.txt.gz", "first prompt\n\n  \nsecond prompt\n")
    strings = _write(tmp_path / "b.jsonl", '"third prompt"\n"fourth"\n')
    served = read_prompts([txt, strings], text_field=None)
    assert served.prompts == ("first prompt", "second prompt", "third prompt", "fourth")
    assert served.labelled_files == ()
    # a glob, files in sorted order; .txt ignores the text field
    _write(tmp_path / "c.txt", "fifth\n")
    assert read_prompts(str(tmp_path / "*.txt*")).prompts == ("first prompt", "second prompt", "fifth")


def test_nested_fields(tmp_path):
    rows = [{"messages": [{"content": "hi"}, {"content": "what is a monad?"}], "meta": {"label": "code"}}]
    path = _file(tmp_path, ".jsonl", rows)
    served = read_prompts(path, text_field="messages[-1].content", label_field="meta.label")
    assert served.prompts == ("what is a monad?",) and served.labelled_files == (path,)


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "match"),
    [
        (
            "x.py",
            "print(1)\n",
            {},
            r"x\.py: unsupported file for served prompts; supported suffixes: \.jsonl",
        ),
        ("x.jsonl", '{"q": "hi"}\n', {}, r"x\.jsonl line 1: field 'text' not found"),
        ("x.csv", "q\nhi\n", {}, r"no column 'text' in the header \(columns: 'q'\)"),
        ("x.jsonl", '{"text": 3}\n', {}, r"field 'text' holds an int, not a string"),
        ("x.jsonl", '{"text": "  "}\n', {}, r"no prompt in .*x\.jsonl: every record was blank"),
        ("x.jsonl", "{oops\n", {}, r"x\.jsonl line 1: not valid JSON"),
        ("x.jsonl", '{"q": "hi", "a": "yo"}\n', {"text_field": None}, r"pass field= \(--field\)"),
    ],
)
def test_errors_name_the_file_and_the_fix(tmp_path, name, content, kwargs, match):
    path = _write(tmp_path / name, content)
    with pytest.raises(CorpusError, match=match):
        read_prompts(path, **kwargs)


def test_no_file(tmp_path):
    with pytest.raises(CorpusError, match="no file matches"):
        read_prompts(tmp_path / "missing-*.jsonl")


def test_suffixes_are_the_labelled_ones_plus_text():
    from ir3de.data.labelled import LABELLED_SUFFIXES

    assert set(PROMPT_SUFFIXES) == {*LABELLED_SUFFIXES, ".txt", ".txt.gz"}


def test_doctests():
    assert doctest.testmod(unlabelled).failed == 0
