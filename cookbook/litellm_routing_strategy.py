"""Recipe: ir3de as the routing strategy of a LiteLLM Router, over real local OpenAI-compatible servers.

Run: ``python cookbook/litellm_routing_strategy.py`` (needs ``pip install 'ir3de[litellm,serve]'``)

1. Fit a router on three public domains (math: GSM8K, code: HumanEval, multilingual fortunes).
2. Start one local OpenAI-compatible server per expert (instant echo servers on 127.0.0.1 that say
   who answered; point ``api_base`` at vLLM, Ollama, llama.cpp or a hosted API instead).
3. Build a ``litellm.Router`` whose model group ``ir3de`` has one deployment per expert, tagged with
   ``model_info: {"ir3de_expert": NAME}``, and register ir3de as its routing strategy.
4. ``acompletion`` / ``completion`` / streaming on ``model="ir3de"``: each request goes to the
   deployment of the expert ir3de picks for its messages, with LiteLLM's retries, fallbacks and
   logging unchanged.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import ExitStack

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no model-price download

from ir3de import Router, TokenEmbeddings
from ir3de.data.datasets import load_suite

EXPERTS = ("math", "code", "multilingual")


def main(
    embeddings: TokenEmbeddings | None = None, prompts_per_domain: int = 3, verbose: bool = True
) -> list[dict[str, str]]:
    import litellm

    from ir3de_integrations.litellm import use_ir3de
    from ir3de_integrations.serve.echo import EchoUpstream
    from ir3de_integrations.serve.server import ServerThread

    suite = load_suite("reasoning4", seed=0)
    router = Router(embeddings or TokenEmbeddings.default(), progress=False)
    router.fit({name: suite.train[name][:200] for name in EXPERTS})

    records: list[dict[str, str]] = []
    with ExitStack() as stack:
        urls = {name: stack.enter_context(ServerThread(EchoUpstream(name))).url for name in EXPERTS}
        llm = litellm.Router(
            model_list=[
                {
                    "model_name": "ir3de",
                    "litellm_params": {
                        "model": f"openai/{name}-model",
                        "api_base": f"{url}/v1",
                        "api_key": "local",
                    },
                    "model_info": {"ir3de_expert": name},
                }
                for name, url in urls.items()
            ]
        )
        use_ir3de(llm, router)

        async def ask_all() -> None:
            for label in EXPERTS:
                for prompt in suite.test[label][:prompts_per_domain]:
                    response = await llm.acompletion(
                        model="ir3de", messages=[{"role": "user", "content": prompt}]
                    )
                    answer = response.choices[0].message.content
                    records.append({"mode": "acompletion", "label": label, "expert": answer.split(":")[0]})

        asyncio.run(ask_all())
        response = llm.completion(model="ir3de", messages=[{"role": "user", "content": "def add(a, b):"}])
        records.append(
            {
                "mode": "completion",
                "label": "code",
                "expert": response.choices[0].message.content.split(":")[0],
            }
        )

        async def stream() -> str:
            chunks = await llm.acompletion(
                model="ir3de",
                messages=[{"role": "user", "content": "Wer zuletzt lacht, lacht am besten."}],
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in chunks])

        records.append(
            {"mode": "stream", "label": "multilingual", "expert": asyncio.run(stream()).split(":")[0]}
        )
    if verbose:
        for r in records:
            print(f"{r['mode']:>11}  {r['label']:>12} prompt -> served by the {r['expert']!r} deployment")
    return records


if __name__ == "__main__":
    main()
