"""Recipe: a LlamaIndex ``AgentWorkflow`` whose starting agent ir3de picks per run, and routing inside a
``Workflow`` step.

Run: ``python cookbook/llamaindex_agent_workflow.py``

``RoutedAgentWorkflow`` is an ``AgentWorkflow``: agents, tools, memory and ``handoff`` work unchanged;
only the start is routed (one agent per expert, named like it). The multilingual agent here hands
off to the instructions agent, to show that handoffs still happen after the routed start. The agents'
LLMs are LlamaIndex's ``MockFunctionCallingLLM`` with a scripted reply (any function-calling LLM
works unchanged). ``route_event`` routes inside a step of your own ``Workflow``.
"""

from __future__ import annotations

import asyncio

from agents_common import build_router
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.workflow import Context, StartEvent, StopEvent, Workflow, step

from ir3de import TokenEmbeddings
from ir3de_integrations.llama_index import RoutedAgentWorkflow, RoutedEvent, route_event


def scripted_llm(expert: str, handoff_to: str | None = None) -> MockFunctionCallingLLM:
    """A mock function-calling LLM answering ``answers: <expert> expert here``; with ``handoff_to`` it
    first calls the workflow's ``handoff`` tool."""

    def reply(messages: list[ChatMessage], **kwargs: object) -> ChatMessage:
        if handoff_to and not any(m.role == MessageRole.TOOL for m in messages):
            call = ToolCallBlock(
                tool_call_id="handoff-1",
                tool_name="handoff",
                tool_kwargs={"to_agent": handoff_to, "reason": "a writing task"},
            )
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"answers: {expert} expert here")

    return MockFunctionCallingLLM(response_generator=reply)


def build_workflow(router) -> RoutedAgentWorkflow:
    agents = [
        FunctionAgent(
            name=name,
            description=f"answers {name} requests",
            llm=scripted_llm(name, handoff_to="instructions" if name == "multilingual" else None),
            can_handoff_to=["instructions"] if name == "multilingual" else [],
        )
        for name in router.experts
    ]
    return RoutedAgentWorkflow(agents, router=router, timeout=60)


class AnswerFlow(Workflow):
    """A two-step workflow: route the query, then answer with the chosen expert's LLM."""

    def __init__(self, router, llms, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.router, self.llms = router, llms

    @step
    async def route(self, ctx: Context, ev: StartEvent) -> RoutedEvent:
        return await route_event(self.router, ev.query, ctx=ctx)

    @step
    async def answer(self, ev: RoutedEvent) -> StopEvent:
        reply = await self.llms[ev.expert].achat([ChatMessage(role="user", content=str(ev.input))])
        return StopEvent(result={"expert": ev.expert, "answer": reply.message.content})


async def run(embeddings: TokenEmbeddings | None = None, per_domain: int = 80) -> dict[str, object]:
    router, suite = build_router(embeddings, per_domain)
    workflow = build_workflow(router)
    runs = []
    for domain in router.experts:
        ctx = Context(workflow)
        question = suite.test[domain][0]
        output = await workflow.run(user_msg=question, ctx=ctx)
        route = await ctx.store.get("ir3de")
        runs.append({"domain": domain, "start": route["expert"], "final": output.current_agent_name})
        print(
            f"{domain:>12}: started at {route['expert']}, answered by {output.current_agent_name}: {output.response.content}"
        )

    ctx = Context(workflow)  # one chat: the follow-up keeps the agent of the first question
    await workflow.run(user_msg=suite.test["math"][0], ctx=ctx)
    await workflow.run(user_msg="Thanks! Can you explain how you got that?", ctx=ctx)
    follow_up = await ctx.store.get("ir3de")
    print(f"follow-up kept {follow_up['expert']}: {follow_up['reason']}")

    flow = AnswerFlow(router, {name: scripted_llm(name) for name in router.experts}, timeout=60)
    stepped = await flow.run(query=suite.test["math"][1])
    print(f"workflow step routed to {stepped['expert']}: {stepped['answer']}")
    return {"runs": runs, "follow_up": follow_up, "stepped": stepped, "router": router, "suite": suite}


def main(embeddings: TokenEmbeddings | None = None, per_domain: int = 80) -> dict[str, object]:
    return asyncio.run(run(embeddings, per_domain))


if __name__ == "__main__":
    main()
