"""Recipe: a LlamaIndex chat engine whose LLM is an ir3de ``RoutingLLM`` over one LLM per domain.

Each user turn is routed on its tokens to the expert's LLM (math, code, instructions, multilingual);
the chat engine does not know there are several models. The routes are observed the LlamaIndex way:
an event handler on the instrumentation dispatcher collects every ``Ir3deRouteEvent``.

The experts here are offline stand-ins (``TaggedLLM``); ``llamaindex_local_smollm2.py`` runs the same
app with a real local model.

Run: ``python cookbook/llamaindex_chat_engine.py``
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import LLM
from llama_index.core.memory import ChatMemoryBuffer
from llamaindex_common import TaggedLLM, fit_router, offline_settings, suite, token_counter
from pydantic import Field

from ir3de import TokenEmbeddings
from ir3de_integrations.llama_index import Ir3deRouteEvent, RoutingLLM, dispatcher


class RouteLog(BaseEventHandler):
    """Collects the ``Ir3deRouteEvent``s LlamaIndex's instrumentation dispatches."""

    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "RouteLog"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, Ir3deRouteEvent):
            self.events.append(event)


@contextlib.contextmanager
def route_log() -> Iterator[RouteLog]:
    """Attach a :class:`RouteLog` to the ir3de dispatcher for the ``with`` block."""
    log = RouteLog(events=[])
    dispatcher.add_event_handler(log)
    try:
        yield log
    finally:
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not log]


def run_chat(
    make_llms: Callable[[Sequence[str]], dict[str, LLM]],
    *,
    embeddings: TokenEmbeddings | None = None,
    questions_per_domain: int = 2,
    verbose: bool = True,
) -> list[dict]:
    """Chat through a ``SimpleChatEngine`` over a ``RoutingLLM``: sync, streaming, async, async streaming.

    Returns one record per turn: the question, its domain, the routed expert and the answer.
    """
    data = suite()
    router = fit_router(data, embeddings=embeddings)
    routing_llm = RoutingLLM(router, make_llms(router.experts))
    turns = [(d, q) for d in data.domains for q in data.test[d][:questions_per_domain]]
    records: list[dict] = []
    with offline_settings(router), route_log() as log:
        memory = ChatMemoryBuffer.from_defaults(llm=routing_llm, tokenizer_fn=token_counter(router))
        chat = SimpleChatEngine.from_defaults(llm=routing_llm, memory=memory)
        for i, (domain, question) in enumerate(turns):
            mode = ("chat", "stream_chat", "achat", "astream_chat")[i % 4]
            if mode == "chat":
                answer = chat.chat(question).response
            elif mode == "stream_chat":
                answer = "".join(chat.stream_chat(question).response_gen)
            elif mode == "achat":
                answer = asyncio.run(chat.achat(question)).response
            else:
                answer = asyncio.run(_astream(chat, question))
            event = log.events[-1]
            records.append(
                {
                    "question": question,
                    "label": domain,
                    "mode": mode,
                    "expert": event.expert,
                    "answer": answer,
                }
            )
            if verbose:
                print(f"[{mode:>12}] {question[:40]!r:45} -> {event.expert:>12}: {answer[:60]!r}")
            chat.reset()  # one question per conversation keeps the demo's turns independent
    return records


async def _astream(chat: SimpleChatEngine, question: str) -> str:
    response = await chat.astream_chat(question)
    return "".join([token async for token in response.async_response_gen()])


def main(
    embeddings: TokenEmbeddings | None = None, questions_per_domain: int = 2, verbose: bool = True
) -> list[dict]:
    """The chat app with offline stand-in experts."""
    return run_chat(
        lambda experts: {name: TaggedLLM(name=name) for name in experts},
        embeddings=embeddings,
        questions_per_domain=questions_per_domain,
        verbose=verbose,
    )


if __name__ == "__main__":
    main()
