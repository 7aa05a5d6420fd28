"""Recipe: an LCEL app that routes each question to a domain expert with ``RouterRunnable``.

Run: ``python cookbook/langchain_lcel_router.py``

1. Fit the paper's router on real text (reasoning4: GSM8K math, HumanEval code, IFEval instructions,
   multilingual fortunes), a small slice per domain.
2. Put it in a pipeline: ``prompt | RouterRunnable(router, experts) | StrOutputParser()``. Each expert
   here is one of LangChain's fake chat models (swap in ChatOpenAI, ChatOllama, ... unchanged).
3. Invoke, batch (one batched call per expert) and stream held-out questions, and read the decision.
"""

from __future__ import annotations

import itertools

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de.data.datasets import load_suite
from ir3de_integrations.langchain import RouterRunnable


def main(embeddings: TokenEmbeddings | None = None, per_domain: int = 60) -> dict[str, object]:
    suite = load_suite("reasoning4", seed=0)
    router = Router(embeddings or TokenEmbeddings.default(), config=RouterConfig.paper(), progress=False)
    router.fit({name: texts[:per_domain] for name, texts in suite.train.items()})

    experts = {
        name: GenericFakeChatModel(messages=itertools.cycle([f"[{name} expert] here is my answer"]))
        for name in router.experts
    }
    prompt = ChatPromptTemplate.from_messages([("system", "Answer concisely."), ("human", "{question}")])
    app = prompt | RouterRunnable(router, experts) | StrOutputParser()

    questions = [(name, texts[0]) for name, texts in suite.test.items()]
    for domain, question in questions:
        print(f"{domain:>12} → {app.invoke({'question': question})}   {question[:50]!r}")

    held_out = [(name, t) for name, texts in suite.test.items() for t in texts[:10]]
    answers = app.batch([{"question": t} for _, t in held_out])
    chosen = [a.split()[0].strip("[") for a in answers]
    accuracy = sum(c == d for c, (d, _) in zip(chosen, held_out)) / len(held_out)
    print(f"batched {len(held_out)} held-out questions: {accuracy:.0%} reached their domain's expert")

    streamed = list(app.stream({"question": questions[1][1]}))
    print(f"streamed {len(streamed)} chunks: {''.join(streamed)!r}")

    with_decision = prompt | RouterRunnable(router, experts, return_decision=True)
    out = with_decision.invoke({"question": questions[0][1]})
    decision = out["decision"]
    print(
        f"decision: {decision.expert} ({decision.confidence:.2f}), tokens {[t.text for t in decision.tokens[:5]]}"
    )
    return {"accuracy": accuracy, "chosen": chosen, "stream": "".join(streamed), "decision": decision.expert}


if __name__ == "__main__":
    main()
