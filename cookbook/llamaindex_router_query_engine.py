"""Recipe: a LlamaIndex ``RouterQueryEngine`` that picks the query engine with ir3de instead of an LLM.

One ``VectorStoreIndex`` per domain over real documents (GSM8K, HumanEval, IFEval, fortunes); the
``Ir3deSelector`` routes each held-out question by its tokens — no selector LLM call, no JSON to
parse — and the decision (expert, confidence, deciding tokens) lands in
``response.metadata["selector_result"]``.

The engines' LLM and embedding model are LlamaIndex's ``MockLLM``/``MockEmbedding`` so the recipe
runs offline; put your real ones in their place.

Run: ``python cookbook/llamaindex_router_query_engine.py``
"""

from __future__ import annotations

from typing import Any

from llama_index.core import MockEmbedding, VectorStoreIndex
from llama_index.core.llms import LLM, MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RouterQueryEngine
from llama_index.core.tools import QueryEngineTool
from llamaindex_common import DESCRIPTIONS, documents, fit_router, offline_settings, suite, token_counter

from ir3de import Router, TokenEmbeddings
from ir3de_integrations.llama_index import Ir3deSelector


def build_engine(
    router: Router,
    docs: dict[str, list[Any]],
    llm: LLM,
    *,
    multi: bool = False,
    embed_dim: int = 16,
) -> RouterQueryEngine:
    """A ``RouterQueryEngine`` over one vector index per domain, routed by ``Ir3deSelector``."""
    splitter = SentenceSplitter(chunk_size=512, chunk_overlap=0, tokenizer=token_counter(router))
    tools = []
    for domain, domain_docs in docs.items():
        index = VectorStoreIndex.from_documents(
            domain_docs, transformations=[splitter], embed_model=MockEmbedding(embed_dim=embed_dim)
        )
        engine = index.as_query_engine(llm=llm, similarity_top_k=2)
        tools.append(QueryEngineTool.from_defaults(engine, name=domain, description=DESCRIPTIONS[domain]))
    selector = Ir3deSelector(router, multi=multi)
    return RouterQueryEngine(selector=selector, query_engine_tools=tools, llm=llm)


def main(
    embeddings: TokenEmbeddings | None = None, questions_per_domain: int = 3, verbose: bool = True
) -> list[dict]:
    """Build the app, ask held-out questions, and return what answered each one."""
    data = suite()
    router = fit_router(data, embeddings=embeddings)
    llm = MockLLM()
    results = []
    with offline_settings(router, llm=llm):
        engine = build_engine(router, {d: documents(data, d) for d in data.domains}, llm)
        for domain in data.domains:
            for question in data.test[domain][:questions_per_domain]:
                response = engine.query(question)
                selection = response.metadata["selector_result"]
                answered_by = {n.node.metadata["domain"] for n in response.source_nodes}
                results.append(
                    {
                        "question": question,
                        "label": domain,
                        "selected": data.domains[selection.ind],
                        "answered_by": sorted(answered_by),
                        "reason": selection.reason,
                    }
                )
                if verbose:
                    print(f"[{domain:>12}] {question[:50]!r:55} -> {selection.reason}")
    return results


if __name__ == "__main__":
    main()
