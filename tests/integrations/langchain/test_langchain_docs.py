"""The example in docs/langchain.md runs and routes as it says."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "langchain.md"


def test_docs_example_runs(capsys):
    text = DOC.read_text(encoding="utf-8")
    example = re.search(r"## Example \(10 lines\)\n\n```python\n(.*?)```", text, re.S).group(1)
    code_lines = [line for line in example.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code_lines) <= 11
    exec(compile(example, str(DOC), "exec"), {})
    printed = capsys.readouterr().out.split()
    assert printed[:2] == ["code", "here"] and 0.0 < float(printed[2]) <= 1.0
