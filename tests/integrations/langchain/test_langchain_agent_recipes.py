"""The LangChain agent recipes run end to end (scripted expert chat models, the real router)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("langchain.agents")

COOKBOOK = Path(__file__).resolve().parents[3] / "cookbook"


def _recipe(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(COOKBOOK))  # the recipes import their shared agents_common
    spec = importlib.util.spec_from_file_location(f"cookbook_{name}", COOKBOOK / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_model_router_middleware_with_the_decision_model_recipe(smollm2, monkeypatch):
    out = _recipe("agents_model_router", monkeypatch).main(embeddings=smollm2)
    router = out["router"]
    assert [run["domain"] for run in out["runs"]] == list(router.experts)
    for run in out["runs"]:
        decision = router.route(run["question"])
        assert run["choice"] == decision.expert and run["confidence"] == pytest.approx(decision.confidence)
        assert run["answered_by"] == run["choice"]
    assert sum(run["choice"] == run["domain"] for run in out["runs"]) >= 3


def test_agent_middleware_recipe(smollm2, monkeypatch):
    out = _recipe("agents_middleware", monkeypatch).main(embeddings=smollm2)
    router = out["router"]
    assert out["first"]["ir3de"]["expert"] == router.route(out["question"]).expert == "math"
    assert out["steps"] == ["math", "math"]  # the tool call and the answer after it
    assert out["answered_by"] == "math" and "72.0" in out["first"]["messages"][-1].text
    assert out["follow_up"]["ir3de"]["expert"] == "math" and not out["follow_up"]["ir3de"]["switched"]
    assert out["code"]["ir3de"]["expert"] == "code"
    assert out["feedback"].expert == "code" and out["feedback"].call_id == out["code"]["ir3de"]["route_id"]
