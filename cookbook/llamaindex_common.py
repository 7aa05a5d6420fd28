"""Shared pieces of the LlamaIndex recipes: a router fitted on real text, real documents, offline settings.

Every recipe fits its router on real public text (``ir3de.data.datasets.load_suite("reasoning4")``: GSM8K
math, HumanEval code, IFEval instructions, multilingual fortunes), sliced small so it runs in seconds.
Nothing here reaches the network: LlamaIndex's token counting uses the router's own tokenizer.

Run any recipe with ``python cookbook/llamaindex_<name>.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from llama_index.core import Document, MockEmbedding, Settings
from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback

from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de.data.datasets import Suite, load_suite

DESCRIPTIONS = {
    "math": "grade-school math word problems (GSM8K)",
    "code": "Python functions to complete from a signature and docstring (HumanEval)",
    "instructions": "writing tasks with explicit format constraints (IFEval)",
    "multilingual": "short texts in German, Spanish, Italian, Russian and Polish (fortunes)",
}


def suite(max_per_side: int = 200) -> Suite:
    """The paper's Reasoning setting on real public text, 50/50 train/test."""
    return load_suite("reasoning4", seed=0, max_per_side=max_per_side)


def fit_router(
    data: Suite,
    *,
    domains: Sequence[str] | None = None,
    per_domain: int = 80,
    embeddings: TokenEmbeddings | None = None,
) -> Router:
    """The paper's router fitted on the first ``per_domain`` training texts of each domain."""
    names = list(domains or data.domains)
    router = Router(
        embeddings or TokenEmbeddings.default(), config=RouterConfig.paper(), device="cpu", progress=False
    )
    return router.fit(
        {d: data.train[d][:per_domain] for d in names},
        descriptions={d: DESCRIPTIONS.get(d, "") for d in names},
    )


def documents(data: Suite, domain: str, n: int = 30, offset: int = 0) -> list[Document]:
    """``n`` real training texts of ``domain`` as LlamaIndex documents (the domain's knowledge base)."""
    texts = data.train[domain][offset : offset + n]
    return [Document(text=t, metadata={"domain": domain, "row": offset + i}) for i, t in enumerate(texts)]


def token_counter(router: Router) -> Callable[[str], list[int]]:
    """A local tokenizer callable for ``Settings.tokenizer`` (LlamaIndex counts tokens with it)."""
    tokenizer = router.state.tokenizer

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    return encode


@contextlib.contextmanager
def offline_settings(router: Router, llm: Any = None, embed_dim: int = 16) -> Iterator[None]:
    """Point LlamaIndex's global ``Settings`` at local objects for the ``with`` block, then restore them.

    ``Settings.tokenizer`` becomes the router's tokenizer (LlamaIndex's default downloads tiktoken
    encodings), ``Settings.embed_model`` a ``MockEmbedding`` and ``Settings.llm`` the given LLM.
    """
    import llama_index.core

    saved = (llama_index.core.global_tokenizer, Settings._llm, Settings._embed_model, Settings._node_parser)
    try:
        Settings.tokenizer = token_counter(router)
        Settings.embed_model = MockEmbedding(embed_dim=embed_dim)
        if llm is not None:
            Settings.llm = llm
        yield
    finally:
        llama_index.core.global_tokenizer, Settings._llm, Settings._embed_model, Settings._node_parser = saved


class TaggedLLM(CustomLLM):
    """A stand-in expert model for offline recipes: answers ``[name] <first line of the prompt>``.

    Swap it for a real LLM (``OpenAI``, ``Ollama``, ``HuggingFaceLLM``…) or the local SmolLM2 of
    ``llamaindex_local_smollm2.py``; the routing code does not change.
    """

    name: str
    context_window: int = 8192

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window, num_output=64, model_name=f"tagged-{self.name}"
        )

    def _answer(self, prompt: str) -> str:
        lines = [ln.strip() for ln in prompt.splitlines() if ln.strip() and not ln.startswith("assistant:")]
        last = lines[-1].removeprefix("user: ") if lines else ""
        return f"[{self.name}] {last[:60]}"

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        answer = self._answer(prompt)

        def gen() -> CompletionResponseGen:
            text = ""
            for word in answer.split(" "):
                delta = word if not text else " " + word
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()
