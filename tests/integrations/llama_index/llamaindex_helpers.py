"""Helpers shared by the LlamaIndex adapter tests (imported by the test modules)."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field

from ir3de_integrations.llama_index import Ir3deRouteEvent


class TagLLM(CustomLLM):
    """A real LlamaIndex ``CustomLLM`` that says who answered: ``<tag> <end of the prompt>``.

    Used as an expert model so a test can check which LLM a routed call reached.
    """

    tag: str
    context_window: int = 4096
    num_output: int = 256
    is_chat_model: bool = False

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.num_output,
            is_chat_model=self.is_chat_model,
            model_name=self.tag,
        )

    def _text(self, prompt: str, formatted: bool = True) -> str:
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        return f"<{self.tag}> {prompt[-40:]}"

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(
            text=self._text(prompt, formatted), additional_kwargs={"answered_by": self.tag}
        )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._text(prompt, formatted)

        def gen() -> CompletionResponseGen:
            for i in range(0, len(text), 7):
                yield CompletionResponse(
                    text=text[: i + 7], delta=text[i : i + 7], additional_kwargs={"answered_by": self.tag}
                )

        return gen()


def tag_of(text: str) -> str:
    """The tag a ``TagLLM`` answer starts with."""
    assert text.startswith("<"), text
    return text[1 : text.index(">")]


class RouteEventCollector(BaseEventHandler):
    """Collects the ir3de route events LlamaIndex's instrumentation dispatches."""

    events: list = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "RouteEventCollector"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, Ir3deRouteEvent):
            self.events.append(event)
