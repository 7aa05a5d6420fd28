"""Fixtures for the gateway tests: a small real router saved once, instant echo upstreams, a live gateway."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
pytest.importorskip("prometheus_client")

sys.path.insert(0, str(Path(__file__).resolve().parent))

EXPERTS = ("math", "code", "instructions", "multilingual")


@pytest.fixture(scope="session")
def gateway_router_folder(smollm2, small_corpus, tmp_path_factory) -> Path:
    """The library-default router fitted on the small real corpus (4 domains), saved once."""
    from ir3de import Router

    router = Router(smollm2, device="cpu", progress=False).fit(small_corpus)
    return router.save_pretrained(tmp_path_factory.mktemp("gateway") / "router")


@pytest.fixture(scope="session")
def gateway_router(gateway_router_folder, smollm2):
    """The saved router, loaded as ``ir3de serve`` loads it. Shared: tests must not change it."""
    from ir3de import Router

    return Router.from_pretrained(gateway_router_folder, embeddings=smollm2, device="cpu", progress=False)


@pytest.fixture
def fresh_router(gateway_router_folder, smollm2):
    """A copy of the saved router of its own (for tests that add, update or remove experts)."""
    from ir3de import Router

    return Router.from_pretrained(gateway_router_folder, embeddings=smollm2, device="cpu", progress=False)


@pytest.fixture(scope="session")
def echo_upstreams() -> Iterator[dict[str, Any]]:
    """One instant echo upstream per expert (plus 'medical' for hot adds): name -> ServerThread."""
    from gateway_helpers import ServerThread

    from ir3de_integrations.serve.echo import EchoUpstream

    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(ServerThread(EchoUpstream(name))) for name in (*EXPERTS, "medical")
        }
        yield servers


@pytest.fixture
def start_gateway(gateway_router, echo_upstreams) -> Iterator[Callable[..., Any]]:
    """start_gateway(**config, upstreams={name: url}) -> ServerThread of a live gateway (stopped after the test).

    Defaults: every expert points at its echo upstream; config keys override GatewayConfig's.
    """
    from gateway_helpers import ServerThread

    from ir3de_integrations.serve import GatewayConfig, create_app

    stack = ExitStack()

    def start(router: Any = None, upstreams: dict[str, str] | None = None, **config: Any) -> Any:
        experts = {n: {"base_url": f"{echo_upstreams[n].url}/v1", "model": f"{n}-model"} for n in EXPERTS}
        for name, url in (upstreams or {}).items():
            experts[name] = {"base_url": url, "model": f"{name}-model"}
        cfg = GatewayConfig.from_dict({"router": "in-memory", "experts": experts, **config})
        server = ServerThread(create_app(cfg, router if router is not None else gateway_router))
        return stack.enter_context(server)

    with stack:
        yield start
