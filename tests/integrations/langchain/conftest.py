"""Fixtures for the LangChain adapter tests: LangChain's own fake chat models as experts, real routers."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("langchain_core")


@pytest.fixture
def make_experts():
    """experts(names) -> {name: fake chat model answering 'answers: <name> expert here'}."""

    from lc_helpers import fake_expert

    def make(names):
        return {name: fake_expert(name) for name in names}

    return make


@pytest.fixture(scope="session")
def saved_router(paper_router, tmp_path_factory) -> Path:
    """The shared paper router saved once, so tests that mutate a router can load their own copy."""
    return paper_router.save_pretrained(tmp_path_factory.mktemp("lc") / "router")


@pytest.fixture
def fresh_router(saved_router, smollm2):
    """A private, mutable copy of the paper router (math, code, instructions, multilingual)."""
    from ir3de import Router

    return Router.from_pretrained(saved_router, embeddings=smollm2, device="cpu", progress=False)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector, name, obj):
    """Run this folder's async tests (ours and the langchain-tests standard suites, which leave them
    unmarked and expect asyncio_mode=auto) on pytest-asyncio: mark them before it collects them."""
    import inspect

    here = Path(__file__).parent
    if (
        inspect.iscoroutinefunction(obj)
        and name.startswith("test")
        and here in Path(str(collector.path)).parents
        and not any(m.name == "asyncio" for m in getattr(obj, "pytestmark", []))
    ):
        pytest.mark.asyncio(obj)
