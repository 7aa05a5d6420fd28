"""benchmarks/agents.py: the decision-model benchmark measures what it says (the LLM run is slow)."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core.decisions")

from langchain_core.decisions import Choice

from benchmarks.agents import CRITERIA, INSTRUCTIONS, markdown, measure
from ir3de_integrations.langchain import Ir3deDecisionModel


def test_measure_counts_the_routers_correct_choices_and_no_tokens(paper_router, small_tests):
    prompts = [(name, text) for name in paper_router.experts for text in small_tests[name][:5]]
    question = Choice(instructions=INSTRUCTIONS, criteria=CRITERIA)
    got = measure(Ir3deDecisionModel(paper_router), prompts, question)
    expected = sum(paper_router.route(text).expert == name for name, text in prompts) / len(prompts)
    assert got["decisions"] == 20 and got["accuracy"] == pytest.approx(expected)
    assert got["tokens_per_decision"] == 0
    assert 0 < got["latency_ms_median"] <= got["latency_ms_p95"]


@pytest.mark.slow  # loads SmolLM2-135M and runs 13 LLM forward passes on 2 shared cores
def test_quick_benchmark_runs_both_classifiers_on_the_same_prompts():
    from benchmarks.agents import main

    result = main(["--quick"])
    assert result["decisions"] == 12
    ir3de, llm = result["models"]["ir3de (Ir3deDecisionModel)"], result["models"]["SmolLM2-135M classifier"]
    assert ir3de["tokens_per_decision"] == 0 and llm["tokens_per_decision"] > 50
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in (ir3de, llm))
    assert "SmolLM2-135M classifier" in markdown(result)
