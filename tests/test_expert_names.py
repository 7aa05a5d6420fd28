"""One expert name rule (ir3de.errors.EXPERT_NAME_RULE), enforced by Router, the registry and the CLI.

Names must survive every place a name goes: the artifact (JSON), HTTP headers (latin-1, so ASCII),
URL path segments (unreserved characters only), Prometheus labels and log lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ir3de.errors import EXPERT_NAME_RULE, ExpertError, ExpertNameError, check_expert_name

ROOT = Path(__file__).resolve().parents[1]
BAD = [
    "../x",
    "a/b",
    "a\x00b",
    "a\nb",
    "math ",
    " math",
    "x" * 100_000,
    "数学",
    "",
    ".hidden",
    "a b",
    "a%2Fb",
    None,
    5,
]
GOOD = ["math", "code-review", "legal_2", "v1.5", "X", "9" * 64]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name):
    assert check_expert_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_with_the_rule(name):
    with pytest.raises(ExpertNameError) as e:
        check_expert_name(name)
    assert EXPERT_NAME_RULE in str(e.value) and len(str(e.value)) < 500
    assert isinstance(e.value, ExpertError)  # old `except ExpertError` handlers still catch it


def test_the_rule_is_what_headers_urls_and_labels_carry_verbatim():
    from urllib.parse import quote

    for name in GOOD:
        assert name.encode("latin-1").decode("ascii") == name  # an HTTP header value as it is
        assert quote(name, safe="") == name  # a URL path segment without escaping


def test_router_fit_and_add_expert_refuse_bad_names(smollm2, paper_router):
    from ir3de import Router

    router = Router(smollm2, device="cpu", progress=False)
    with pytest.raises(ExpertNameError, match="invalid expert name 'a/b'"):
        router.fit({"a/b": ["x"], "b": ["y"]})
    experts = list(paper_router.experts)
    with pytest.raises(ExpertNameError, match="invalid expert name"):
        paper_router.add_expert("数学", ["integrate x squared"])
    assert list(paper_router.experts) == experts  # nothing changed


def test_the_registry_refuses_bad_new_names_but_serves_old_ones(paper_router):
    from ir3de.serving.registry import ExpertRegistry

    registry = ExpertRegistry(paper_router, {n: n for n in paper_router.experts})
    with pytest.raises(ExpertNameError, match="1 to 64 ASCII"):
        registry.add("a/b", "handler", ["some text"])
    assert "a/b" not in paper_router.experts


def test_the_cli_refuses_bad_names(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("integrate x squared\nsolve for x\n")
    done = subprocess.run(
        [sys.executable, "-m", "ir3de.cli.main", "fit", "--expert", f"a/b={texts}", "--expert", f"code={texts}",
         "--output", str(tmp_path / "router")],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), str(ROOT)]), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode != 0 and "invalid expert name 'a/b'" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "router").exists()
