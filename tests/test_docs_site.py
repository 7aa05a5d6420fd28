"""The documentation site builds without a warning, and the documented defaults are the code's.

``mkdocs build --strict`` (mkdocs.yml at the repository root) fails on a broken link, a page missing
from the nav, an unknown ``::: object`` of the API reference or a docstring mkdocstrings cannot read.
The build test skips only where mkdocs is not installed (the ``docs`` extra, part of ``dev``).

The settings table of docs/settings.md is read back and compared with ``RouterConfig()`` and
``RouterConfig.paper()``: a default changed in the code and not in the docs (or the reverse) fails.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ir3de.config import RouterConfig

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_PAGE = ROOT / "docs" / "settings.md"


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed (the docs extra)"
)
def test_site_builds_strict_without_warnings(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    log = done.stdout + done.stderr
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert done.returncode == 0 and not warnings, "\n".join(warnings) or log[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "core" / "index.html").read_text(encoding="utf-8").count("Router") > 5


def _documented_value(cell: str) -> object:
    """One value of the table as written: `text`, 0.1, 1e-2, on/off, none, `None`."""
    cell = cell.strip().strip("`")
    words = {"on": True, "off": False, "none": None, "None": None}
    if cell in words:
        return words[cell]
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        return cell


def documented_defaults(page: Path = SETTINGS_PAGE) -> dict[str, tuple[object, object]]:
    """``{setting: (default, paper)}`` from the settings table (`–` in the paper column: not given)."""
    rows: dict[str, tuple[object, object]] = {}
    for line in page.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`(\w+)`", cells[0])
        defaults, papers = cells[2].split(", "), cells[3].split(", ")
        assert len(defaults) == len(names) and len(papers) in (1, len(names)), f"settings row {cells[0]}"
        for i, name in enumerate(names):
            paper = papers[i] if len(papers) == len(names) else papers[0]
            rows[name] = (_documented_value(defaults[i]), None if paper == "–" else _documented_value(paper))
    return rows


def test_documented_defaults_table_reader(tmp_path: Path):
    """The reader itself, on a small table with every kind of cell."""
    page = tmp_path / "settings.md"
    page.write_text(
        "| setting | meaning | default | paper |\n|---|---|---|---|\n"
        "| `lam` | ridge, with a | pipe-free cell | 0.1 | 1e-2 |\n"
        "| `lam` | ridge strength | 0.1 | 1e-2 |\n| `column_norm` | norm | off | on |\n"
        "| `selector` | how | `avg` | `topk` |\n| `max_tokens` | cap | 1024 | 1024 |\n"
        "| `fallback` | name | none | none |\n| `a`, `b` | two | 1.0, `share` | – |\n"
    )
    assert documented_defaults(page) == {
        "lam": (0.1, 0.01),
        "column_norm": (False, True),
        "selector": ("avg", "topk"),
        "max_tokens": (1024, 1024),
        "fallback": (None, None),
        "a": (1.0, None),
        "b": ("share", None),
    }


def test_documented_defaults_equal_router_config():
    rows = documented_defaults()
    default, paper = RouterConfig(), RouterConfig.paper()
    fields = {f.name for f in dataclasses.fields(RouterConfig)}
    assert set(rows) == fields, f"settings table: missing {fields - set(rows)}, unknown {set(rows) - fields}"
    wrong = {
        name: (documented, getattr(default, name))
        for name, (documented, _) in rows.items()
        if documented != getattr(default, name)
    }
    assert not wrong, f"docs/settings.md defaults differ from RouterConfig() (documented, code): {wrong}"
    wrong_paper = {
        name: (documented, getattr(paper, name))
        for name, (_, documented) in rows.items()
        if documented is not None and documented != getattr(paper, name)
    }
    assert not wrong_paper, f"docs/settings.md paper column differs from RouterConfig.paper(): {wrong_paper}"
