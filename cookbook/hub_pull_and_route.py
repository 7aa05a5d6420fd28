"""Recipe: pull a router from the Hugging Face Hub and route prompts with it.

Run: ``python cookbook/hub_pull_and_route.py --repo your-name/ir3de-reasoning4 [--revision v1]``

``Router.from_pretrained`` resolves a local folder first, then the HF cache, then downloads (from
``HF_ENDPOINT``). Every file is checked against the sizes and sha256 in ``config.json`` before use,
and nothing downloaded is executed. Run it a second time with ``HF_HUB_OFFLINE=1``: it loads from the
cache without the network. Routing needs only the downloaded tokenizer and table (no embeddings, no GPU).
"""

from __future__ import annotations

import argparse

from ir3de import Router

PROMPTS = [
    "A baker makes 24 muffins and sells 3/4 of them. How many are left?",
    'def count_vowels(text: str) -> int:\n    """Return the number of vowels in text."""\n',
    "Write a limerick about a cat. Do not use the letter e anywhere in your answer.",
    "Chi va piano va sano e va lontano.",
]


def main(
    repo_id: str, *, revision: str | None = None, prompts: list[str] | None = None
) -> list[tuple[str, str]]:
    router = Router.from_pretrained(repo_id, revision=revision, device="cpu")
    print(f"loaded {repo_id}" + (f"@{revision}" if revision else "") + f": experts {router.experts}")
    routed = []
    for prompt, d in zip(prompts or PROMPTS, router.route_batch(prompts or PROMPTS)):
        deciding = ", ".join(f"{t.text!r}→{t.vote}" for t in d.tokens[:4])
        print(f"{d.expert:>12}  confidence {d.confidence:.2f}  {prompt[:50]!r}  ({deciding})")
        routed.append((prompt, d.expert))
    return routed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="Hub model repo of a router, e.g. you/ir3de-router")
    parser.add_argument("--revision", help="branch, tag or commit")
    args = parser.parse_args()
    main(args.repo, revision=args.revision)
