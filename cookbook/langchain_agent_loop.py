"""Recipe: ``RoutingChatModel`` as the chat model of an agent loop with tool calling.

Run: ``python cookbook/langchain_agent_loop.py``

The routing chat model routes on the last user message, so every step of one task (the tool call,
then the answer after the tool result) goes to the same expert. ``bind_tools`` is forwarded to the
chosen expert. The math expert is a scripted fake tool-calling chat model (a real one, e.g.
ChatOpenAI, works unchanged); the others are LangChain fake chat models.
"""

from __future__ import annotations

import itertools

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de.data.datasets import load_suite
from ir3de_integrations.langchain import RoutingChatModel


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '12 * (3 + 4)'."""
    allowed = set("0123456789+-*/(). ")
    if not set(expression) <= allowed:
        return "error: only arithmetic is allowed"
    return str(eval(expression, {"__builtins__": {}}, {}))


class ScriptedToolCaller(GenericFakeChatModel):
    """A fake tool-calling chat model: asks for the calculator, then answers with its result."""

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        return self

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs):
        from langchain_core.outputs import ChatGeneration, ChatResult

        last = messages[-1]
        if isinstance(last, ToolMessage):
            message = AIMessage(f"The answer is {last.content}.")
        else:
            call = {
                "name": "calculator",
                "args": {"expression": "48 / 2 + 48"},
                "id": "call_1",
                "type": "tool_call",
            }
            message = AIMessage("", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=message)])


def run_agent(model, question: str, tools: dict, max_steps: int = 4) -> tuple[str, list[str]]:
    """A minimal agent loop: call the model, run requested tools, feed results back."""
    messages: list[BaseMessage] = [HumanMessage(question)]
    experts = []
    for _ in range(max_steps):
        reply = model.invoke(messages)
        experts.append(reply.response_metadata["ir3de"]["expert"])
        messages.append(reply)
        if not reply.tool_calls:
            return str(reply.content), experts
        for call in reply.tool_calls:
            messages.append(ToolMessage(tools[call["name"]].invoke(call["args"]), tool_call_id=call["id"]))
    raise RuntimeError("the agent did not finish")


def main(embeddings: TokenEmbeddings | None = None, per_domain: int = 60) -> dict[str, object]:
    suite = load_suite("reasoning4", seed=0)
    router = Router(embeddings or TokenEmbeddings.default(), config=RouterConfig.paper(), progress=False)
    router.fit({name: texts[:per_domain] for name, texts in suite.train.items()})
    experts = {
        name: GenericFakeChatModel(messages=itertools.cycle([f"{name} expert: no tools needed"]))
        for name in router.experts
    }
    experts["math"] = ScriptedToolCaller(messages=iter(()))
    chat = RoutingChatModel(router, experts)
    agent_model = chat.bind_tools([calculator])

    question = (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?"
    )
    answer, steps = run_agent(agent_model, question, {"calculator": calculator})
    print(f"math question → experts per step {steps}: {answer}")
    code_answer, code_steps = run_agent(agent_model, suite.test["code"][0], {"calculator": calculator})
    print(f"code question → experts per step {code_steps}: {code_answer}")
    return {"answer": answer, "steps": steps, "code_answer": code_answer, "code_steps": code_steps}


if __name__ == "__main__":
    main()
