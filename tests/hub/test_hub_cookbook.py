"""The Hub recipes in cookbook/, run against the local Hub server (pushes land as git commits)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

COOKBOOK = Path(__file__).parents[2] / "cookbook"


def _recipe(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, COOKBOOK / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publish_then_pull_and_route(git_uploads, hub_env):
    published = _recipe("hub_publish_router").main("cookbook-org/reasoning4", private=True, max_texts=80)
    assert published["accuracy"] > 0.9 and published["commit"] == git_uploads.head("cookbook-org/reasoning4")
    card = (git_uploads.repo_path("cookbook-org/reasoning4") / "README.md").read_text()
    assert f"| routing accuracy | {published['accuracy']:.4f} |" in card

    routed = _recipe("hub_pull_and_route").main("cookbook-org/reasoning4", revision=published["commit"])
    assert [expert for _, expert in routed] == ["math", "code", "instructions", "multilingual"]


def test_two_owners_publish_packs_and_a_third_party_merges(git_uploads, hub_env):
    result = _recipe("hub_stat_packs").main("owner-a/math-stats", "owner-b/code-stats", max_texts=80)
    assert result["experts"] == ["math", "code"] and result["equals_central"] is True
    assert result["accuracy"] > 0.95
