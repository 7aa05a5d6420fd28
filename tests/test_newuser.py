"""Rough edges a new user met (issue 27): each test here failed before its fix."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ir3de.cli.main import main
from ir3de.data.corpus import read_texts
from ir3de.errors import CorpusError


def _jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_records_with_one_field_or_a_text_field_need_no_field_option(tmp_path, small_corpus):
    """Point 7: JSONL (and CSV) whose only field is the text, or that has a `text` field, read as is."""
    math = _jsonl(tmp_path / "math.jsonl", [{"text": t} for t in small_corpus["math"][:30]])
    code = _jsonl(
        tmp_path / "code.jsonl", [{"id": i, "text": t} for i, t in enumerate(small_corpus["code"][:30])]
    )
    with open(tmp_path / "q.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question"])
        writer.writerows([t] for t in small_corpus["math"][:3])
    assert list(read_texts(tmp_path / "q.csv")) == small_corpus["math"][:3]
    assert list(read_texts(code))[:2] == small_corpus["code"][:2]
    out = tmp_path / "router"
    code_ = main(["fit", "--expert", f"math={math}", "--expert", f"code={code}", "--quiet", "-o", str(out)])
    assert code_ == 0 and (out / "config.json").is_file()
    # two fields, neither named text: still ambiguous, and the error names the flag
    both = _jsonl(tmp_path / "both.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(CorpusError, match="--field question"):
        list(read_texts(both))


def test_push_to_an_unreachable_endpoint_is_one_line_and_exit_2(paper_router, tmp_path):
    """Point 6: no traceback; one line naming the endpoint; exit 2 (as `pull` does)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    folder = paper_router.save_pretrained(tmp_path / "router")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run(
        [sys.executable, "-m", "ir3de.cli", "push", str(folder), "org/router", "--token", "hf_fake"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("ir3de: error:") and endpoint in done.stderr
