"""Recipe: ``create_agent`` with ``Ir3deModelMiddleware``: a tool-using agent whose every human turn goes
to the routed expert model, sticky per thread through a checkpointer.

Run: ``python cookbook/agents_middleware.py``

The math expert calls a calculator tool; the loop (model → tool → model) stays on it. A neutral
follow-up in the same thread keeps the thread's expert; another thread starts afresh. The decision
is in the agent state (``state["ir3de"]``) and in every answer's ``response_metadata["ir3de"]``;
feedback by thread id teaches the router.
"""

from __future__ import annotations

from agents_common import ScriptedExpert, build_router, calculator, expert_of
from langchain.agents import create_agent
from langgraph.checkpoint.memory import InMemorySaver

from ir3de import TokenEmbeddings
from ir3de_integrations.langchain import Ir3deModelMiddleware


def main(embeddings: TokenEmbeddings | None = None, per_domain: int = 80) -> dict[str, object]:
    router, suite = build_router(embeddings, per_domain)
    models = {name: ScriptedExpert(expert=name) for name in router.experts}
    models["math"] = ScriptedExpert(
        expert="math", tool_name="calculator", tool_args={"expression": "48 / 2 + 48"}
    )
    middleware = Ir3deModelMiddleware(router, models)
    agent = create_agent(
        models["code"], tools=[calculator], middleware=[middleware], checkpointer=InMemorySaver()
    )

    alice = {"configurable": {"thread_id": "alice"}}
    question = suite.test["math"][0]
    first = agent.invoke({"messages": [("user", question)]}, alice)
    steps = [m.response_metadata["ir3de"]["expert"] for m in first["messages"] if m.type == "ai"]
    print(f"alice turn 1 → {first['ir3de']['expert']}; model calls by {steps}: {first['messages'][-1].text}")
    follow_up = agent.invoke({"messages": [("user", "Thanks! Can you explain how you got that?")]}, alice)
    print(f"alice turn 2 → {follow_up['ir3de']['expert']} ({follow_up['ir3de']['reason']})")

    bob = {"configurable": {"thread_id": "bob"}}
    code = agent.invoke({"messages": [("user", suite.test["code"][0])]}, bob)
    print(f"bob turn 1 → {code['ir3de']['expert']}: {code['messages'][-1].text}")
    learned = middleware.feedback(thread_id="bob", expert="code")
    return {
        "question": question,
        "first": first,
        "steps": steps,
        "follow_up": follow_up,
        "code": code,
        "answered_by": expert_of(first["messages"][-1]),
        "feedback": learned,
        "router": router,
    }


if __name__ == "__main__":
    main()
