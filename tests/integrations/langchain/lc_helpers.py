"""Helpers shared by the LangChain adapter tests (a uniquely named module, imported by the tests)."""

from __future__ import annotations

import itertools


def fake_expert(name: str, text: str = "answers: {name} expert here"):
    """A LangChain GenericFakeChatModel whose every answer names the expert (streams word by word)."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    return GenericFakeChatModel(messages=itertools.cycle([text.format(name=name)]))


def expert_of(message) -> str:
    """The expert named in a fake expert's answer."""
    text = message.text if hasattr(message, "text") else str(message)
    return str(text).split()[1]
