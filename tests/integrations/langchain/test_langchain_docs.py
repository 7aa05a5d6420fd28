"""The example in docs/langchain.md runs, is as short as its heading says, and prints what its comment says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "langchain.md"


def test_docs_example_runs_and_prints_what_it_claims(capsys):
    text = DOC.read_text(encoding="utf-8")
    heading = re.search(r"## Example \((\d+) lines\)\n\n```python\n(.*?)```", text, re.S)
    claimed_lines, example = int(heading.group(1)), heading.group(2)
    code_lines = [line for line in example.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code_lines) == claimed_lines
    claimed = re.search(r"print\(.*\)\s+# (\w+) here ([\d.]+) \(its vote share\)", example)
    namespace: dict = {}
    exec(compile(example, str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out.split()
    assert printed[:2] == [claimed.group(1), "here"]
    confidence = float(printed[2])
    assert confidence == pytest.approx(float(claimed.group(2)), abs=0.005)  # the comment's number
    # the printed confidence is the router's own decision for that prompt: a top-k vote share
    router, reply = namespace["router"], namespace["reply"]
    decision = router.route("Write a Python function that reverses a list")
    assert decision.expert == claimed.group(1) == reply.response_metadata["ir3de"]["expert"]
    assert confidence == decision.confidence == decision.scores[decision.expert]
    voters = min(router.config.k, decision.num_tokens)
    assert confidence * voters == pytest.approx(round(confidence * voters))
