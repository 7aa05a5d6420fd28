"""Shared by the agent recipes: a small router on real public prompts and scripted expert chat models.

``ScriptedExpert`` stands in for a real chat model (``init_chat_model("openai:gpt-5-mini")``, a local
model…) so the recipes run offline and instantly: it calls its tool once when it has one bound,
then answers naming itself, so the output shows which expert answered every step.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from pydantic import Field

from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de.data.datasets import load_suite


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '12 * (3 + 4)'."""
    if not set(expression) <= set("0123456789+-*/(). "):
        return "error: only arithmetic is allowed"
    return str(eval(expression, {"__builtins__": {}}, {}))


class ScriptedExpert(BaseChatModel):
    """A fake tool-calling chat model: with ``tool_name`` bound it first calls that tool with
    ``tool_args``, then answers ``"answers: <expert> expert here"`` (plus the tool's result)."""

    expert: str
    tool_name: str | None = None
    tool_args: dict[str, Any] = Field(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return "scripted-expert"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> ScriptedExpert:
        names = {getattr(t, "name", None) for t in tools}
        return self if self.tool_name in names else self.model_copy(update={"tool_name": None})

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            message = AIMessage(f"answers: {self.expert} expert here (the tool said {last.content})")
        elif self.tool_name and last.type == "human":
            call = {"name": self.tool_name, "args": dict(self.tool_args), "id": f"call_{len(messages)}"}
            message = AIMessage("", tool_calls=[{**call, "type": "tool_call"}])
        else:
            message = AIMessage(f"answers: {self.expert} expert here")
        return ChatResult(generations=[ChatGeneration(message=message)])


def expert_of(message: BaseMessage) -> str:
    """The expert a ``ScriptedExpert`` answer names."""
    return str(message.text).split()[1]


def build_router(embeddings: TokenEmbeddings | None = None, per_domain: int = 80) -> tuple[Router, Any]:
    """A router fitted on ``per_domain`` public prompts of each of the paper's four Reasoning domains
    (math, code, instructions, multilingual), and the suite (its ``test`` split has unseen prompts)."""
    suite = load_suite("reasoning4", seed=0)
    router = Router(embeddings or TokenEmbeddings.default(), config=RouterConfig.paper(), progress=False)
    router.fit({name: texts[:per_domain] for name, texts in suite.train.items()})
    return router, suite
