"""Recipe: LangChain's ``ModelRouterMiddleware`` with ir3de as its classifier (``Ir3deDecisionModel``).

Run: ``python cookbook/agents_model_router.py``

``ModelRouterMiddleware`` asks a decision model a ``Choice`` question before each agent run and sends
every model call of the run to the chosen model. Usually the classifier is an LLM call per run; here
it is the router's table lookup: same question, no tokens, a fraction of a millisecond.
"""

from __future__ import annotations

from agents_common import ScriptedExpert, build_router, expert_of
from langchain.agents import create_agent
from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware

from ir3de import TokenEmbeddings
from ir3de_integrations.langchain import Ir3deDecisionModel

CRITERIA = {
    "math": "Arithmetic and word problems.",
    "code": "Writing or completing Python code.",
    "instructions": "Writing tasks with formatting constraints.",
    "multilingual": "Messages in languages other than English.",
}


def main(embeddings: TokenEmbeddings | None = None, per_domain: int = 80) -> dict[str, object]:
    router, suite = build_router(embeddings, per_domain)
    middleware = ModelRouterMiddleware(
        choices={
            name: ModelChoice(model=ScriptedExpert(expert=name), criteria=CRITERIA[name])
            for name in router.experts
        },
        instructions="Pick the expert model best suited to the user's request.",
        classifier=Ir3deDecisionModel(router),
    )
    agent = create_agent(ScriptedExpert(expert="math"), middleware=[middleware])
    runs = []
    for domain in router.experts:
        question = suite.test[domain][0]
        state = agent.invoke({"messages": [("user", question)]})
        route = state["model_route"]  # the full ChoiceAnswer, kept in agent state
        runs.append(
            {
                "domain": domain,
                "question": question,
                "choice": route.choice,
                "confidence": route.confidence,
                "answered_by": expert_of(state["messages"][-1]),
            }
        )
        print(f"{domain:>12} → {route.choice} ({route.confidence:.2f}): {state['messages'][-1].text}")
    return {"runs": runs, "router": router}


if __name__ == "__main__":
    main()
