"""The LlamaIndex recipes in cookbook/ run, and do what they say."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


def _recipe(cookbook_path, name):
    return importlib.import_module(name)


def test_router_query_engine_recipe(cookbook_path, smollm2):
    results = _recipe(cookbook_path, "llamaindex_router_query_engine").main(
        embeddings=smollm2, questions_per_domain=3, verbose=False
    )
    assert len(results) == 12
    for r in results:
        assert r["answered_by"] == [r["selected"]]  # the selected engine's documents answered
        assert f"expert {r['selected']!r}" in r["reason"]
    assert sum(r["selected"] == r["label"] for r in results) >= 10


def test_chat_engine_recipe(cookbook_path, smollm2):
    records = _recipe(cookbook_path, "llamaindex_chat_engine").main(
        embeddings=smollm2, questions_per_domain=2, verbose=False
    )
    assert [r["mode"] for r in records[:4]] == ["chat", "stream_chat", "achat", "astream_chat"]
    for r in records:
        assert r["answer"].startswith(f"[{r['expert']}] ")  # answered by the routed expert's LLM
    assert sum(r["expert"] == r["label"] for r in records) >= 7


def test_add_expert_recipe(cookbook_path, smollm2):
    result = _recipe(cookbook_path, "llamaindex_add_expert").main(
        embeddings=smollm2, prompts_per_domain=20, verbose=False
    )
    assert result["experts"] == ["math", "code", "instructions", "multilingual"]
    assert "multilingual" not in result["before"] and sum(result["before"].values()) == 20
    assert result["after"].get("multilingual", 0) >= 18
    for expert, text in result["during"]:
        assert text.startswith(f"[{expert}] ")


@pytest.fixture(scope="session")
def smollm2_lm(cookbook_path):
    """SmolLM2-135M-Instruct as a causal LM, loaded once per session (about 15 s on an idle CPU)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 135M model gains nothing from threads; oversubscribed CPUs lose a lot
    try:
        yield _recipe(cookbook_path, "llamaindex_local_smollm2").load_smollm2()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_local_smollm2_recipe(cookbook_path, smollm2, smollm2_lm):
    records = _recipe(cookbook_path, "llamaindex_local_smollm2").main(
        model_and_tokenizer=smollm2_lm, embeddings=smollm2, questions_per_domain=1, verbose=False
    )
    assert [r["label"] for r in records] == ["math", "code", "instructions", "multilingual"]
    assert [r["mode"] for r in records] == ["chat", "stream_chat", "achat", "astream_chat"]
    for r in records:
        assert isinstance(r["answer"], str) and r["answer"].strip()
    assert sum(r["expert"] == r["label"] for r in records) >= 3
    # greedy decoding is deterministic: the routed expert's own LLM (its system prompt) gives the answer
    from llama_index.core.base.llms.types import ChatMessage

    recipe = _recipe(cookbook_path, "llamaindex_local_smollm2")
    llms = recipe.expert_llms(*smollm2_lm, [r["expert"] for r in records])
    for r in records[:2]:
        direct = llms[r["expert"]].chat([ChatMessage(role="user", content=r["question"])])
        assert direct.message.content.strip() == r["answer"].strip()


def test_docs_example_runs(smollm2, capsys):
    """The ten-line example of docs/llamaindex.md, executed as written (offline settings from conftest)."""
    from ir3de_integrations.llama_index import describe_route

    text = (Path(__file__).resolve().parents[3] / "docs" / "llamaindex.md").read_text(encoding="utf-8")
    block = text.split("<!-- llamaindex-example -->")[1].split("```python\n")[1].split("```")[0]
    code = [
        line for line in block.splitlines() if line.strip() and not line.startswith(("from ", "import ", "#"))
    ]
    assert len(code) <= 10
    namespace: dict = {}
    exec(compile(block, "docs/llamaindex.md", "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    prompt = "Write a Python function that reverses a list."
    decision = namespace["router"].route(prompt)
    assert printed == describe_route(decision)
    assert decision.expert == "code"
    sources = namespace["response"].source_nodes
    assert sources and all(any(n.node.text in t for t in namespace["corpus"]["code"]) for n in sources)
