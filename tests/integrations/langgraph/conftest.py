"""Fixtures of the LangGraph tests: the recipes' scripted expert chat models (cookbook/agents_common.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("langgraph.graph")
pytest.importorskip("langchain.agents")

COOKBOOK = Path(__file__).resolve().parents[3] / "cookbook"
if str(COOKBOOK) not in sys.path:
    sys.path.insert(0, str(COOKBOOK))
