"""Recipe: two domain owners publish stat packs; a third party merges them into a router and evaluates it.

Run: ``python cookbook/hub_stat_packs.py --math-repo org-a/math-stats --code-repo org-b/code-stats``

A stat pack is one expert's token counts (no text, no weights) plus a fingerprint of the tokenizer and
embedding matrix they were counted with. Counts add exactly, so the merged router equals one fitted
centrally on both corpora (the recipe checks it). Merging packs built on other embeddings is refused.

1. Owner A counts its math corpus (GSM8K) locally and pushes the pack.
2. Owner B does the same for code (HumanEval).
3. A third party pulls both packs, merges them into a router, and evaluates it on held-out prompts.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ir3de import Router, TokenEmbeddings
from ir3de.artifacts.stat_packs import StatPack, merge_packs
from ir3de.data.datasets import load_suite
from ir3de.evaluation.evaluate import evaluate
from ir3de.routing.prompts import route_indices


def main(math_repo: str, code_repo: str, *, max_texts: int | None = None) -> dict[str, Any]:
    suite = load_suite("reasoning4", seed=0)
    embeddings = TokenEmbeddings.default()

    # Owner A and owner B: each counts only its own data, and publishes only the counts.
    for repo, name, description in (
        (math_repo, "math", "grade-school math word problems (GSM8K)"),
        (code_repo, "code", "Python function stubs with docstrings (HumanEval)"),
    ):
        pack = StatPack.compute(name, suite.train[name][:max_texts], embeddings, description=description)
        info = pack.push_to_hub(repo)
        print(f"{repo}: {pack} -> commit {info.oid[:12]}")

    # The third party: pull both packs (checked: sizes, sha256, fingerprints), merge, evaluate.
    router = merge_packs([math_repo, code_repo], progress=False)
    tests = {name: suite.test[name] for name in router.experts}
    report = evaluate(router, tests)
    print(
        f"merged router {list(router.experts)}: accuracy {report.accuracy:.4f} on {report.num_prompts} held-out prompts"
    )

    central = Router(embeddings, progress=False).fit({n: suite.train[n][:max_texts] for n in router.experts})
    prompts = [p for texts in tests.values() for p in texts]
    same = bool(
        np.array_equal(
            route_indices(router.state, router.config, prompts),
            route_indices(central.state, central.config, prompts),
        )
    )
    print(f"identical to a router fitted centrally on both corpora: {same}")
    return {"accuracy": report.accuracy, "experts": list(router.experts), "equals_central": same}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--math-repo", required=True, help="Hub repo for owner A's pack, e.g. org-a/math-stats"
    )
    parser.add_argument(
        "--code-repo", required=True, help="Hub repo for owner B's pack, e.g. org-b/code-stats"
    )
    parser.add_argument("--max-texts", type=int, help="count at most this many texts per domain")
    args = parser.parse_args()
    main(args.math_repo, args.code_repo, max_texts=args.max_texts)
