"""Fixtures of the LlamaIndex adapter tests: real indexes over real documents, offline LlamaIndex settings.

Every test here runs with sockets disabled (pytest-socket; Unix sockets stay allowed for asyncio) and
with LlamaIndex's global ``Settings`` pointed at local objects (the router's tokenizer, ``MockLLM``,
``MockEmbedding``), restored afterwards — so nothing can reach the network (tiktoken, nltk, OpenAI).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, MockEmbedding, Settings, SummaryIndex, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter

COOKBOOK = Path(__file__).resolve().parents[3] / "cookbook"
DOCS_PER_DOMAIN = 30


@pytest.fixture(autouse=True)
def no_network():
    """Fail any test that opens an internet socket (needs pytest-socket; without it the guard is off)."""
    try:
        from pytest_socket import disable_socket, enable_socket
    except ImportError:
        yield
        return
    disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        enable_socket()


@pytest.fixture(autouse=True)
def offline_llamaindex(paper_router):
    """LlamaIndex's global settings on local objects for one test, restored afterwards."""
    import llama_index.core

    saved = (llama_index.core.global_tokenizer, Settings._llm, Settings._embed_model, Settings._node_parser)
    tokenizer = paper_router.state.tokenizer
    Settings.tokenizer = lambda text: tokenizer.encode(text, add_special_tokens=False).ids
    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=16)
    try:
        yield
    finally:
        llama_index.core.global_tokenizer, Settings._llm, Settings._embed_model, Settings._node_parser = saved


@pytest.fixture(scope="session")
def cookbook_path():
    """Make the cookbook recipes importable (they import their shared ``llamaindex_common``)."""
    path = str(COOKBOOK)
    if path not in sys.path:
        sys.path.insert(0, path)
    return COOKBOOK


@pytest.fixture(scope="session")
def domain_documents(reasoning4) -> dict[str, list[Document]]:
    """30 real documents per domain (its first training texts), tagged with their domain."""
    return {
        domain: [Document(text=t, metadata={"domain": domain}) for t in texts[:DOCS_PER_DOMAIN]]
        for domain, texts in reasoning4.train.items()
    }


@pytest.fixture(scope="session")
def vector_indexes(domain_documents, paper_router) -> dict[str, VectorStoreIndex]:
    """One ``VectorStoreIndex`` per domain (real splitter with a local tokenizer, ``MockEmbedding``)."""
    tokenizer = paper_router.state.tokenizer
    splitter = SentenceSplitter(
        chunk_size=512,
        chunk_overlap=0,
        tokenizer=lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
    )
    return {
        domain: VectorStoreIndex.from_documents(
            docs, transformations=[splitter], embed_model=MockEmbedding(embed_dim=16)
        )
        for domain, docs in domain_documents.items()
    }


@pytest.fixture(scope="session")
def summary_indexes(domain_documents) -> dict[str, SummaryIndex]:
    """One ``SummaryIndex`` per domain (one node per document)."""
    from llama_index.core.schema import TextNode

    return {
        domain: SummaryIndex([TextNode(text=d.text, metadata=dict(d.metadata)) for d in docs])
        for domain, docs in domain_documents.items()
    }
