"""Recipe: a LangGraph multi-agent graph with ir3de as the supervisor (no LLM supervisor).

Run: ``python cookbook/langgraph_multi_agent.py``

``create_routed_graph`` builds ``START → route → <expert's agent> → END``: one ``create_agent`` agent
per expert (the math agent has a calculator tool), the ``route`` node routes each human turn once and
returns ``Command(goto=expert)``. With a checkpointer the thread keeps its expert for neutral
follow-ups. The same routing as a conditional edge: ``RouteEdge``.
"""

from __future__ import annotations

from agents_common import ScriptedExpert, build_router, calculator, expert_of
from langchain.agents import create_agent
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

from ir3de import TokenEmbeddings
from ir3de_integrations.langgraph import RouteEdge, create_routed_graph


def main(embeddings: TokenEmbeddings | None = None, per_domain: int = 80) -> dict[str, object]:
    router, suite = build_router(embeddings, per_domain)
    agents = {name: create_agent(ScriptedExpert(expert=name), name=name) for name in router.experts}
    math_model = ScriptedExpert(
        expert="math", tool_name="calculator", tool_args={"expression": "48 / 2 + 48"}
    )
    agents["math"] = create_agent(math_model, tools=[calculator], name="math")
    graph = create_routed_graph(router, agents, checkpointer=InMemorySaver())

    thread = {"configurable": {"thread_id": "t1"}}
    turns = []
    for text in (suite.test["math"][0], "Thanks! Can you explain how you got that?", suite.test["code"][0]):
        state = graph.invoke({"messages": [("user", text)]}, thread)
        turns.append({"expert": state["ir3de"]["expert"], "answered_by": expert_of(state["messages"][-1])})
        print(f"→ {state['ir3de']['expert']} ({state['ir3de']['reason']}): {state['messages'][-1].text}")

    # the same routing as a conditional edge of your own graph (stateless: no stickiness)
    edge = RouteEdge(router)
    builder = StateGraph(MessagesState)
    for name in router.experts:
        builder.add_node(name, agents[name])
        builder.add_edge(name, END)
    builder.add_conditional_edges(START, edge, edge.path_map)
    edged = builder.compile()
    state = edged.invoke({"messages": [("user", suite.test["multilingual"][0])]})
    print(f"edge → {expert_of(state['messages'][-1])}")
    return {"turns": turns, "edge_answer": expert_of(state["messages"][-1]), "router": router, "suite": suite}


if __name__ == "__main__":
    main()
