"""Recipe: fit a router on real domain text, evaluate it, and publish it to the Hugging Face Hub.

Run: ``python cookbook/hub_publish_router.py --repo your-name/ir3de-reasoning4 [--private]``

Needs a Hub token with write access (``hf auth login`` or ``HF_TOKEN``); ``HF_ENDPOINT`` selects
another Hub server.

1. Fit the paper's router on four public domains (GSM8K, HumanEval, IFEval, multilingual fortunes).
2. Evaluate it on the held-out split and record the figures in the router, so the model card and
   ``config.json`` carry them.
3. ``push_to_hub``: one commit with the artifact (safetensors + JSON + tokenizer) and a model card
   listing the experts, their corpus sizes, the embeddings, λ / selector / k and the evaluation.
"""

from __future__ import annotations

import argparse
from typing import Any

from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de.data.datasets import load_suite
from ir3de.evaluation.evaluate import evaluate, record_evaluation

DESCRIPTIONS = {
    "math": "grade-school math word problems (GSM8K)",
    "code": "Python function stubs with docstrings (HumanEval)",
    "instructions": "instructions with verifiable constraints (IFEval)",
    "multilingual": "German, Spanish, Italian, Russian and Polish fortunes",
}


def main(repo_id: str, *, private: bool = False, max_texts: int | None = None) -> dict[str, Any]:
    suite = load_suite("reasoning4", seed=0)
    train = {name: texts[:max_texts] for name, texts in suite.train.items()}
    router = Router(TokenEmbeddings.default(), config=RouterConfig.paper(), progress=False).fit(
        train, descriptions=DESCRIPTIONS
    )
    report = evaluate(router, suite.test)
    record_evaluation(router, report, test_set="reasoning4 held-out split (seed 0)")
    print(f"fitted {router.experts}; held-out accuracy {report.accuracy:.4f} on {report.num_prompts} prompts")

    info = router.push_to_hub(repo_id, private=private, commit_message="IR3DE router over 4 domains")
    print(f"pushed to {repo_id} as commit {info.oid[:12]}: {info.commit_url}")
    return {"commit": info.oid, "accuracy": report.accuracy, "experts": list(router.experts)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repo", required=True, help="Hub model repo to create or update, e.g. you/ir3de-router"
    )
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--max-texts", type=int, help="fit on at most this many texts per domain")
    args = parser.parse_args()
    main(args.repo, private=args.private, max_texts=args.max_texts)
