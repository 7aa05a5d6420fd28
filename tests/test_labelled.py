"""Reading labelled files (text + label columns): every format, field names, and every error."""

from __future__ import annotations

import doctest
import gzip
import json
from pathlib import Path

import pytest

from ir3de.data import labelled
from ir3de.data.labelled import LabelledData, check_labels, iter_labelled, read_labelled
from ir3de.errors import CorpusError, UnknownExpertError

ROWS = [
    {"prompt": "What is 2+2?", "domain": "math"},
    {"prompt": "def f(x):\n    return x", "domain": "code"},
    {"prompt": "   ", "domain": "math"},  # blank text: skipped
    {"prompt": 'Ünïcödé, ‚quoted‘ "text"', "domain": "poetry"},
    {"prompt": "Solve x + 1 = 3", "domain": "math"},
]
EXPECTED_TEXTS = ("What is 2+2?", "def f(x):\n    return x", 'Ünïcödé, ‚quoted‘ "text"', "Solve x + 1 = 3")
EXPECTED_LABELS = ("math", "code", "poetry", "math")


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


@pytest.mark.parametrize(
    "suffix", [".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz", ".parquet"]
)
def test_every_format_reads_the_same_pairs(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"served{suffix}"
    if suffix.startswith(".jsonl"):
        _write(path, "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n\n")
    elif suffix.startswith(".json"):
        _write(path, json.dumps(ROWS, ensure_ascii=False))
    elif suffix.startswith(".csv"):
        _write(path, _csv(ROWS))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    data = read_labelled(path, text_field="prompt", label_field="domain")
    assert data.texts == EXPECTED_TEXTS
    assert data.labels == EXPECTED_LABELS
    assert data.experts == ["math", "code", "poetry"]
    assert data.by_label() == {
        "math": ["What is 2+2?", "Solve x + 1 = 3"],
        "code": ["def f(x):\n    return x"],
        "poetry": ['Ünïcödé, ‚quoted‘ "text"'],
    }
    assert list(iter_labelled(path, text_field="prompt", label_field="domain")) == list(
        zip(EXPECTED_TEXTS, EXPECTED_LABELS)
    )


def test_default_fields_nested_paths_int_labels_and_globs(tmp_path: Path) -> None:
    _write(tmp_path / "a.jsonl", json.dumps({"text": "hello", "label": " greet "}) + "\n")
    _write(tmp_path / "b.jsonl", json.dumps({"text": "bye", "label": 7}) + "\n")
    data = read_labelled(str(tmp_path / "*.jsonl"))
    assert data.texts == ("hello", "bye") and data.labels == ("greet", "7")
    nested = [{"msg": [{"content": "x"}, {"content": "last turn"}], "meta": {"expert": "chat"}}]
    _write(tmp_path / "n.json", json.dumps(nested))
    got = read_labelled(tmp_path / "n.json", text_field="msg[-1].content", label_field="meta.expert")
    assert (got.texts, got.labels) == (("last turn",), ("chat",))


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "match"),
    [
        ("a.txt", "one\ntwo\n", {}, "a labelled file needs a text and a label"),
        ("a.jsonl", '{"text": "x"}\n', {}, "label field 'label' not found"),
        ("a.jsonl", '{"text": "x", "label": ""}\n', {}, "holds a blank string"),
        ("a.jsonl", '{"text": "x", "label": null}\n', {}, "holds null"),
        ("a.jsonl", '{"text": 3, "label": "m"}\n', {}, "not a string"),
        ("a.jsonl", '"just a string"\n', {}, "labelled records must be objects"),
        ("a.jsonl", "{bad json\n", {}, "line 1: not valid JSON"),
        ("a.json", '{"text": "x"}', {}, "must hold a list of objects"),
        ("a.csv", "prompt,label\nx,m\n", {}, "no text column 'text' in the header"),
        ("a.csv", "text,y\nx,m\n", {}, "no label column 'label'"),
        ("a.csv", "text,label\nx,m,extra\n", {}, "line 2: the row has 3 values"),
        ("a.jsonl", '{"q": "x", "label": "m"}\n', {"text_field": "q["}, "cannot parse field"),
        ("a.jsonl", "\n\n", {}, "no labelled prompt"),
    ],
)
def test_errors_name_the_file_and_the_fix(
    tmp_path: Path, name: str, content: str, kwargs: dict, match: str
) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(CorpusError) as info:
        read_labelled(path, **kwargs)
    assert match in str(info.value), str(info.value)


def test_missing_file_is_a_corpus_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no file matches"):
        read_labelled(tmp_path / "nope.jsonl")


def test_check_labels() -> None:
    assert check_labels(["math", "code"], ["code", "math"]) == []
    assert check_labels(["law", "math", "law", "bio"], ["math"], create=True) == ["law", "bio"]
    with pytest.raises(UnknownExpertError) as info:
        check_labels(["law", "math"], ["math", "code"])
    message = str(info.value)
    assert "['law']" in message and "['math', 'code']" in message and "--create-experts" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_labelled_data_checks_lengths() -> None:
    with pytest.raises(CorpusError, match="2 texts but 1 labels"):
        LabelledData(("a", "b"), ("x",))


def test_docstring_examples() -> None:
    result = doctest.testmod(labelled, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
