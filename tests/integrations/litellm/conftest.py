"""Fixtures for the LiteLLM strategy tests: a real litellm.Router over local echo upstreams, a real router."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no model-price download
pytest.importorskip("litellm")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "integrations" / "serve"))  # gateway_helpers: servers on loopback

EXPERTS = ("math", "code", "instructions", "multilingual")


@pytest.fixture(scope="session")
def litellm_router_ir3de(smollm2, small_corpus):
    """A library-default ir3de router on the small real corpus (4 domains). Tests must not change it."""
    from ir3de import Router

    return Router(smollm2, device="cpu", progress=False).fit(small_corpus)


@pytest.fixture(scope="session")
def litellm_upstreams() -> Iterator[dict[str, Any]]:
    """One instant echo upstream per expert (answers '<expert>: <prompt>'): name -> ServerThread."""
    from gateway_helpers import ServerThread

    from ir3de_integrations.serve.echo import EchoUpstream

    with ExitStack() as stack:
        yield {name: stack.enter_context(ServerThread(EchoUpstream(name))) for name in EXPERTS}


@pytest.fixture
def cookbook_path() -> Path:
    path = str(ROOT / "cookbook")
    if path not in sys.path:
        sys.path.insert(0, path)
    return ROOT / "cookbook"
