"""Recipe: fit a router on real domain text, route prompts, save it, load it, and grow it.

Run: ``python cookbook/core_grow_a_router.py [--out DIR]``

1. Fit the paper's router on three public domains (math: GSM8K, code: HumanEval, instructions: IFEval)
   with the default SmolLM2-135M token embeddings.
2. Route prompts and show the tokens that decided.
3. Save the router; load it back (routing needs only the folder).
4. Add a fourth expert (multilingual fortunes) at runtime: its statistics are counted and added, the
   solve reruns, nothing is refitted from scratch.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de.data.datasets import load_suite
from ir3de.evaluation.evaluate import evaluate


def main(out: str | None = None) -> dict[str, float]:
    suite = load_suite("reasoning4", seed=0)
    train, test = suite.train, suite.test
    embeddings = TokenEmbeddings.default()

    router = Router(embeddings, config=RouterConfig.paper(), progress=False)
    router.fit({name: train[name] for name in ("math", "code", "instructions")})
    for prompt in [
        "What is 15% of 240?",
        "def is_palindrome(s: str) -> bool:",
        "Answer in exactly three bullet points.",
    ]:
        d = router.route(prompt)
        print(f"{d.expert:>12} {d.confidence:.2f}  {prompt!r}  tokens: {[t.text for t in d.tokens[:4]]}")

    folder = Path(out or tempfile.mkdtemp()) / "router"
    router.save_pretrained(folder)
    loaded = Router.from_pretrained(folder)
    three = {name: test[name] for name in ("math", "code", "instructions")}
    before = evaluate(loaded, three).accuracy
    print(f"3 experts, held-out accuracy {before:.4f}")

    loaded.add_expert("multilingual", train["multilingual"], description="fortunes in de/es/it/ru/pl")
    after = evaluate(loaded, test).accuracy
    print(f"4 experts after add_expert, held-out accuracy {after:.4f}")
    print(loaded.route("Wer zuletzt lacht, lacht am besten.").expert)
    loaded.save_pretrained(folder)
    return {"three_experts": before, "four_experts": after}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder to save the router in (default: a temporary folder)")
    main(parser.parse_args().out)
