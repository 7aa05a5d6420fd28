"""Packaging for a new user (issue 27, points 1 and 2): torch is optional, ``[all]`` is every extra,
and fit -> save -> load -> route -> serve runs in a process where torch cannot be imported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_torch_is_an_extra_not_a_dependency() -> None:
    assert "torch" not in {_name(r) for r in PROJECT["dependencies"]}
    assert "torch" in {_name(r) for r in PROJECT["optional-dependencies"]["gpu"]}


#: the extras `all` leaves out on purpose (each one said in pyproject.toml and the README)
NOT_IN_ALL = {
    "all": "the union itself",
    "dev": "test tools",
    "docs": "the documentation site",
    "gpu": "torch: its right build depends on the machine (install.sh --gpu)",
    "litellm-proxy-bench": "one benchmark row",
}


def test_all_is_every_extra() -> None:
    extras = PROJECT["optional-dependencies"]
    (line,) = extras["all"]
    match = re.fullmatch(r"ir3de\[(.*)\]", line)
    assert match is not None, line
    assert set(match.group(1).split(",")) == set(extras) - set(NOT_IN_ALL)


def test_readme_says_what_each_extra_brings() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for extra in PROJECT["optional-dependencies"]:
        assert f"| `{extra}` |" in text, f"README does not describe the [{extra}] extra"


def _dry_run(tmp_path: Path, *args: str, index_url: str | None = None) -> list[str]:
    """install.sh --dry-run with a python that reports torch missing: the pip lines it would run."""
    wrapper = tmp_path / "python"
    wrapper.write_text(
        '#!/usr/bin/env bash\nif [[ "$1" == -c && "$2" == *"import torch"* ]]; then exit 1; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(wrapper), "HOME": str(tmp_path)}
    if index_url:
        env["TORCH_INDEX_URL"] = index_url
    done = subprocess.run(
        ["bash", "scripts/install.sh", "--dry-run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("would run:") and " pip " in line]


def test_install_script_installs_no_torch_unless_gpu_or_dev(tmp_path: Path) -> None:
    plain = _dry_run(tmp_path)
    assert not any("torch" in line for line in plain), plain
    assert any(line.endswith("-e .[all]") for line in plain), plain
    assert _dry_run(tmp_path, "--no-torch") == plain  # the old flag is accepted: it is the default
    cpu = "https://download.pytorch.org/whl/cpu"
    gpu = _dry_run(tmp_path, "--gpu", index_url=cpu)
    assert any("torch==2.13.0" in line and f"--index-url {cpu}" in line for line in gpu), gpu
    assert any(line.endswith("-e .[all,gpu]") for line in gpu), gpu
    # the dev extra includes gpu, and the GPU-path / from_model tests import torch: pinned first
    dev = _dry_run(tmp_path, "--dev")
    assert any(line.endswith("install --disable-pip-version-check torch==2.13.0") for line in dev), dev
    assert dev.index(next(line for line in dev if "torch==" in line)) < dev.index(
        next(line for line in dev if line.endswith("-e .[all,dev]"))
    ), dev
    for both in (["--no-torch", "--gpu"], ["--dev", "--no-torch"]):  # contradictory: refused, nothing runs
        refused = subprocess.run(
            ["bash", "scripts/install.sh", "--dry-run", *both],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert refused.returncode == 2 and "--no-torch contradicts" in refused.stderr, refused
        assert "would run" not in refused.stdout, refused.stdout
    helped = subprocess.run(
        ["bash", "scripts/install.sh", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0 and "--gpu" in helped.stdout and "TORCH_INDEX_URL" in helped.stdout


BLOCK_TORCH = """
import sys
sys.modules["torch"] = None  # `import torch` raises ModuleNotFoundError; importlib.util.find_spec -> None
"""

FIT_TO_SERVE = """
import importlib.util, json, sys
from pathlib import Path
assert importlib.util.find_spec("torch") is None
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("torch should be blocked")
import httpx
from ir3de import Router, TokenEmbeddings
from ir3de.data.datasets import load_domain
from ir3de_integrations.serve import GatewayConfig, create_app
from ir3de_integrations.serve.echo import EchoUpstream
from ir3de_integrations.serve.server import ServerThread

folder = Path(sys.argv[1])
texts = {name: load_domain(name)[:40] for name in ("math", "code")}
router = Router(TokenEmbeddings.default(), progress=False).fit(texts)  # device "auto": no torch -> CPU
router.save_pretrained(folder)
loaded = Router.from_pretrained(folder, progress=False)
question = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
assert loaded.route(question).expert == "math"
with ServerThread(EchoUpstream("math")) as m, ServerThread(EchoUpstream("code")) as c:
    experts = {n: {"base_url": f"{s.url}/v1", "model": n} for n, s in (("math", m), ("code", c))}
    cfg = GatewayConfig.from_dict({"router": str(folder), "experts": experts})
    with ServerThread(create_app(cfg)) as gw:
        r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=60,
                       json={"model": "ir3de", "messages": [{"role": "user", "content": question}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].startswith("math"), r.text
loaded_torch = sorted(m for m in sys.modules if m.startswith("torch.") or (m == "torch" and sys.modules[m]))
assert not loaded_torch, loaded_torch
print("OK")
"""


def test_fit_save_load_route_serve_without_torch(tmp_path: Path) -> None:
    """A new user's first run with no torch: an empty ir3de cache, so the torch-blocked process
    converts the default GGUF file (tokenizer and embeddings) itself, then fits, saves, loads, routes
    and serves."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    # the torch-free GGUF tokenizer conversion is transformers 5.x's; with 4.x the conversion needs torch
    # and says so (a typed MissingDependencyError naming the upgrade)
    pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    cache = tmp_path / "empty-ir3de-cache"
    script = textwrap.dedent(BLOCK_TORCH) + textwrap.dedent(FIT_TO_SERVE)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "router")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "IR3DE_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
    assert [p.name.startswith("gguf-") for p in cache.iterdir()] == [True]  # it converted, and cached
    assert "PyTorch was not found" not in done.stderr  # transformers' import-time advice, kept quiet
