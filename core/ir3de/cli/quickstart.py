"""``ir3de quickstart``: fit on four real domains, route example prompts and score a held-out split."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ir3de.cli.options import check_output, status
from ir3de.cli.route import print_decision

__all__ = ["QUICKSTART_PROMPTS", "register"]


QUICKSTART_PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did she sell altogether?",
    'def fibonacci(n: int) -> list[int]:\n    """Return the first n Fibonacci numbers."""\n',
    "Write a haiku about autumn. Your entire response must be in lowercase letters and contain no commas.",
    "Wer nicht wagt, der nicht gewinnt — und wer zu spät kommt, den bestraft das Leben.",
    "Лучше синица в руках, чем журавль в небе.",
]


def cmd_quickstart(args: argparse.Namespace) -> int:
    from ir3de.data.datasets import load_suite
    from ir3de.embeddings import TokenEmbeddings
    from ir3de.evaluation.evaluate import evaluate
    from ir3de.router import Router, RouterConfig

    if args.save:
        check_output(args.save, args.force)
    print("ir3de quickstart: four real domains, SmolLM2-135M token embeddings, seeded 50/50 split\n")
    status(args, "loading token embeddings (the first load reads and caches the tensor, about 10 s) …")
    t0 = time.perf_counter()
    emb = TokenEmbeddings.default()
    print(
        f"loaded embeddings {emb.name}: {emb.vocab_size} × {emb.hidden_size} ({time.perf_counter() - t0:.1f} s)"
    )
    suite = load_suite("reasoning4", seed=args.seed)
    for name in suite.train:
        print(f"  {name:>13}: {len(suite.train[name]):4d} texts to fit, {len(suite.test[name]):4d} held out")
    presets = {"default": RouterConfig(), "paper": RouterConfig.paper()}
    chosen = ["default", "paper"] if args.preset == "both" else [args.preset]
    routers = {}
    for preset in chosen:
        router = Router(emb, config=presets[preset], device=args.device, progress=not args.quiet)
        t1 = time.perf_counter()
        router.fit(suite.train)
        tokens = sum(s.counts.num_tokens for s in router.statistics.values())
        print(
            f"\nfitted the {preset} preset on {tokens} tokens in {time.perf_counter() - t1:.2f} s: {router.config}"
        )
        routers[preset] = router
    first = routers[chosen[0]]
    print(f"\nrouting example prompts ({chosen[0]} preset):")
    for prompt, d in zip(QUICKSTART_PROMPTS, first.route_batch(QUICKSTART_PROMPTS)):
        print_decision(prompt, d, explain=False)
    print()
    for preset, router in routers.items():
        report = evaluate(router, suite.test)
        recalls = ", ".join(f"{n} {r:.3f}" for n, r in report.per_expert_recall.items())
        print(f"held-out routing accuracy ({preset} preset): {report.accuracy:.4f} "
              f"(macro recall {report.macro_recall:.4f}; {recalls}; {report.num_prompts} prompts)")  # fmt: skip
    if args.save:
        print(f"saved the {chosen[0]} router to {first.save_pretrained(args.save)}")
    return 0


def register(sub: Any) -> None:
    """Add ``quickstart`` to the ``ir3de`` command's subparsers."""
    p = sub.add_parser("quickstart", help="fit on four real domains and route example prompts")
    p.add_argument("--seed", type=int, default=0, help="seed of the 50/50 split (default 0)")
    p.add_argument(
        "--preset",
        choices=["both", "default", "paper"],
        default="both",
        help="which presets to fit and score (default: both)",
    )
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda[:N]")
    p.add_argument("--save", help="also save the (first) router to this folder")
    p.add_argument("--force", action="store_true", help="replace a router that exists at --save")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_quickstart)
