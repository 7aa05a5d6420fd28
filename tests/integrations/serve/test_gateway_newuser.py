"""The gateway as a new user meets it (issue 27): its router is its own (point 5), a gateway without
state_dir says admin changes are not kept (point 8), errors carry one code mapping and no Python
(point 9), and the decision in the body explains a conversation's switch (point 11)."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from ir3de.data.datasets import load_domain
from ir3de.errors import (
    ArtifactError,
    EmptyPromptError,
    InvalidInputError,
    Ir3deError,
    NotFittedError,
    UnknownExpertError,
)

TOKEN = "n3w-user"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MATH = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many clips?"
CODE = 'def fibonacci(n: int) -> list[int]:\n    """Return the first n Fibonacci numbers."""\n'


@pytest.fixture
def admin_gateway(start_gateway, fresh_router, monkeypatch):
    monkeypatch.setenv("GW_NEWUSER_ADMIN", TOKEN)
    return start_gateway(router=fresh_router, admin_token_env="GW_NEWUSER_ADMIN", fallback="instructions")


def test_admin_changes_never_reach_the_callers_router(admin_gateway, fresh_router, echo_upstreams):
    experts_before, table_before = tuple(fresh_router.experts), fresh_router.state.table.logits.copy()
    r = httpx.post(
        f"{admin_gateway.url}/admin/experts",
        headers=AUTH,
        json={
            "name": "medical",
            "texts": load_domain("medical")[:80],
            "upstream": {"base_url": f"{echo_upstreams['medical'].url}/v1", "model": "medical-model"},
        },
        timeout=120,
    )
    assert r.status_code == 201, r.text
    assert "medical" in admin_gateway.app.state.gateway.router.experts
    assert fresh_router.experts == experts_before and (fresh_router.state.table.logits == table_before).all()


def test_without_state_dir_admin_answers_say_not_persisted_and_start_up_logs_it(
    start_gateway, fresh_router, monkeypatch, caplog, echo_upstreams
):
    monkeypatch.setenv("GW_NEWUSER_ADMIN", TOKEN)
    with caplog.at_level(logging.WARNING, logger="ir3de.serve"):
        gw = start_gateway(router=fresh_router, admin_token_env="GW_NEWUSER_ADMIN")
    lines = [rec.getMessage() for rec in caplog.records if "--state-dir" in rec.getMessage()]
    assert len(lines) == 1 and "lost on restart" in lines[0]
    r = httpx.post(
        f"{gw.url}/admin/feedback",
        headers=AUTH,
        json={"feedback": [{"prompt": MATH, "expert": "math"}]},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["persisted"] is False
    r = httpx.delete(f"{gw.url}/admin/traffic", headers=AUTH, timeout=120)
    assert r.status_code == 200 and r.json()["persisted"] is False


def test_admin_tune_uses_the_gateway_fallback_and_errors_name_no_python(admin_gateway, reasoning4):
    held_out = {name: texts[:8] for name, texts in reasoning4.test.items()}
    r = httpx.post(f"{admin_gateway.url}/admin/tune", headers=AUTH, json={"held_out": held_out}, timeout=120)
    assert r.status_code == 200, r.text  # no "abstain": the gateway's fallback (instructions)
    assert r.json()["tuned"]["fallback"] == "instructions" and r.json()["persisted"] is False
    r = httpx.post(
        f"{admin_gateway.url}/admin/tune",
        headers=AUTH,
        json={"held_out": {"math": held_out["math"][:2], "code": held_out["code"]}},
        timeout=120,
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_input", error
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]) and "math (2)" in error["message"]


def test_gateway_tune_without_any_fallback_says_what_to_send(
    start_gateway, fresh_router, monkeypatch, reasoning4
):
    monkeypatch.setenv("GW_NEWUSER_ADMIN", TOKEN)
    gw = start_gateway(router=fresh_router, admin_token_env="GW_NEWUSER_ADMIN")
    held_out = {name: texts[:8] for name, texts in reasoning4.test.items()}
    r = httpx.post(f"{gw.url}/admin/tune", headers=AUTH, json={"held_out": held_out}, timeout=120)
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_input"
    assert '"abstain": NAME' in error["message"] and "configure(" not in error["message"]


def test_one_mapping_from_error_type_to_code_status_and_hint():
    from ir3de.serving.error_codes import ERROR_CODES, error_code, for_surface, http_status

    # every ir3de error type has a snake_case code; subclasses come before their bases
    kinds = [kind for kind, _, _ in ERROR_CODES]
    for i, kind in enumerate(kinds):
        assert not any(issubclass(kind, earlier) for earlier in kinds[:i]), kind
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", code) for _, code, _ in ERROR_CODES)
    assert (error_code(UnknownExpertError("x")), http_status(UnknownExpertError("x"))) == (
        "expert_not_found",
        404,
    )
    assert error_code(InvalidInputError("x")) == "invalid_input"
    assert (
        error_code(EmptyPromptError("x")) == "empty_prompt"
        and error_code(ArtifactError("x")) == "invalid_artifact"
    )
    assert http_status(NotFittedError("x")) == 409 and error_code(Ir3deError("x")) == "ir3de_error"
    assert error_code(ValueError("x")) == "internal_error"
    python = "tune ... none: pass abstain='general' (any name) or configure(fallback=...)"
    assert "--abstain NAME" in for_surface(python, "cli") and "abstain=" not in for_surface(python, "cli")
    assert '"abstain": NAME' in for_surface(python, "http")


def test_the_decision_in_the_body_explains_a_conversation_switch(start_gateway):
    gw = start_gateway()
    body = {"model": "ir3de", "user": "s-newuser", "ir3de": {"decision": True}}
    first = httpx.post(
        f"{gw.url}/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": MATH}]}
    )
    d1 = first.json()["ir3de"]
    assert d1["expert"] == "math" and d1["reason"] and d1["previous_expert"] is None
    second = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={
            **body,
            "messages": [
                {"role": "user", "content": MATH},
                {"role": "assistant", "content": "72"},
                {"role": "user", "content": CODE},
            ],
        },
    )
    d2 = second.json()["ir3de"]
    assert d2["previous_expert"] == "math" and isinstance(d2["reason"], str) and d2["reason"]
    assert isinstance(d2["margin"], float) and isinstance(d2["required_margin"], float)
    if d2["switched"]:
        assert d2["margin"] > d2["required_margin"]
    else:
        assert d2["expert"] == "math" and d2["margin"] <= d2["required_margin"]


def test_admin_gateway_loads_the_embeddings_in_the_background(
    start_gateway, gateway_router_folder, monkeypatch, caplog
):
    """Point 10: with admin on, the embeddings load at start, so the first change does not wait."""
    from ir3de import Router

    router = Router.from_pretrained(gateway_router_folder, device="cpu", progress=False)  # no embeddings
    monkeypatch.setenv("GW_NEWUSER_ADMIN", TOKEN)
    with caplog.at_level(logging.INFO, logger="ir3de"):
        gw = start_gateway(router=router, admin_token_env="GW_NEWUSER_ADMIN")
        preload = gw.app.state.gateway.preload
        assert preload is not None
        preload.join(timeout=300)
        assert not preload.is_alive()
        loaded = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded the embeddings")
        ]
        assert len(loaded) == 1
        r = httpx.post(
            f"{gw.url}/admin/feedback", headers=AUTH, json={"feedback": [{"prompt": MATH, "expert": "math"}]}
        )
        assert r.status_code == 200, r.text
    assert len([r for r in caplog.records if r.getMessage().startswith("loading the embeddings")]) == 1
