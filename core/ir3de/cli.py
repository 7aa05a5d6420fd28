"""The ``ir3de`` command: fit, route, grow, inspect, and a quickstart on real domain text.

Examples::

    ir3de quickstart
    ir3de fit --expert math=gsm8k.jsonl --expert code='src/**/*.py' --field question -o my-router
    ir3de route my-router "Solve 3x + 5 = 11" --explain
    echo "def f(x):" | ir3de route my-router --json
    ir3de add-expert my-router --expert legal=contracts.txt
    ir3de remove-expert my-router legal
    ir3de info my-router
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Ir3deError, MissingDependencyError

if TYPE_CHECKING:
    from .decision import RouteDecision
    from .embeddings import TokenEmbeddings
    from .router import Router

__all__ = ["main"]

# Modules that add subcommands: each defines ``register(subparsers)`` (keeps this file small and lets
# each capability own its command).
_COMMAND_MODULES: tuple[str, ...] = ("ir3de.evaluate_cli", "ir3de.hub_cli", "ir3de.learn_cli")


def _load_embeddings(spec: str) -> TokenEmbeddings:
    from .embeddings import TokenEmbeddings

    if spec == "default":
        return TokenEmbeddings.default()
    if spec.endswith(".gguf"):
        return TokenEmbeddings.from_gguf(spec)
    return TokenEmbeddings.from_pretrained(spec)


def _parse_pairs(pairs: Sequence[str] | None, what: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"ir3de: error: {what} must look like NAME=VALUE, got {pair!r}")
        out.setdefault(name, []).append(value)
    return out


def _expert_texts(args: argparse.Namespace) -> dict[str, list[str]]:
    from .corpus import read_texts

    experts = _parse_pairs(args.expert, "--expert")
    labelled = getattr(args, "labelled", None)  # --labelled FILE: added by ir3de.learn_cli
    if not experts and not labelled:
        raise SystemExit("ir3de: error: give at least one --expert NAME=FILE_OR_GLOB (or --labelled FILE)")
    texts = {
        name: list(read_texts(patterns, field=args.field, whole_file=args.whole_file))
        for name, patterns in experts.items()
    }
    if labelled:
        from .labelled import read_labelled

        data = read_labelled(labelled, text_field=args.text_field, label_field=args.label_field)
        for name, more in data.by_label().items():
            texts.setdefault(name, []).extend(more)
    return texts


def _descriptions(args: argparse.Namespace) -> dict[str, str]:
    return {
        k: " ".join(v) for k, v in _parse_pairs(getattr(args, "description", None), "--description").items()
    }


def _router_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key in ("level", "lam", "k", "selector", "combine", "max_tokens", "fallback", "threshold"):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if getattr(args, "balance", False):
        settings["balance"] = True
    if getattr(args, "no_column_norm", False):
        settings["column_norm"] = False
    return settings


def _add_settings_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--level",
        choices=["token", "text"],
        help="one ridge row per training text (default) or per token occurrence (the paper)",
    )
    p.add_argument("--lam", type=float, help="ridge strength λ (default 0.1; paper: 1e-2)")
    p.add_argument("--k", type=int, help="tokens kept by the top-k entropy selector (paper: 10)")
    p.add_argument("--selector", choices=["topk", "all", "avg"])
    p.add_argument("--combine", choices=["vote", "logprob"])
    p.add_argument("--max-tokens", type=int, dest="max_tokens")
    p.add_argument("--fallback", help="expert name for prompts with no countable token / low confidence")
    p.add_argument("--threshold", type=float, help="confidence below which the fallback is taken")


def _add_corpus_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--expert",
        action="append",
        metavar="NAME=FILES",
        help="an expert and its text: .txt (a text per line), .jsonl/.json/.parquet/.csv (with --field), globs; repeat",
    )
    p.add_argument(
        "--field",
        help="which field of .jsonl/.json/.parquet/.csv records holds the text (e.g. prompt[-1].content)",
    )
    p.add_argument("--whole-file", action="store_true", help=".txt files are one text each, not one per line")
    p.add_argument(
        "--description", action="append", metavar="NAME=TEXT", help="a one-line description of an expert"
    )


_EXPLAIN_TOKENS = 50


def _print_decision(prompt: str, d: RouteDecision, explain: bool) -> None:
    flag = f" (fallback; top expert {d.top_expert})" if d.fallback_used else ""
    print(f"{d.expert}{flag}\tconfidence={d.confidence:.3f}\t{prompt[:70]!r}")
    if not explain:
        if d.tokens:
            print("    deciding tokens: " + ", ".join(f"{t.text!r}→{t.vote}" for t in d.tokens[:5]))
        return
    print(f"    {d.num_tokens} countable tokens; scores: "
          + "  ".join(f"{n}={v:.3f}" for n, v in sorted(d.scores.items(), key=lambda kv: -kv[1])))  # fmt: skip
    if not d.tokens:
        return
    names = list(d.scores)
    width = max(6, *(len(n) for n in names))
    header = f"    {'pos':>4}  {'token':<16} {'vote':<{width}} {'entropy':>7}  " + " ".join(
        f"{n:>{width}}" for n in names
    )
    print("    deciding tokens (lowest entropy first) and each token's probability per expert:")
    print(header)
    for t in d.tokens[:_EXPLAIN_TOKENS]:
        probs = " ".join(f"{t.probabilities.get(n, 0.0):>{width}.3f}" for n in names)
        print(f"    {t.position:>4}  {t.text!r:<16} {t.vote:<{width}} {t.entropy:>7.3f}  {probs}")
    if len(d.tokens) > _EXPLAIN_TOKENS:  # the avg selector averages every token: show the clearest ones
        print(
            f"    … and {len(d.tokens) - _EXPLAIN_TOKENS} more tokens (higher entropy), all averaged into the scores"
        )


def _fit_on_ray(args: argparse.Namespace, router: Router) -> None:
    try:
        from ir3de_integrations.ray import fit_router
    except ImportError as e:
        raise MissingDependencyError("--engine ray needs the Ray extra: pip install 'ir3de[ray]'") from e
    import ray

    experts = _parse_pairs(args.expert, "--expert")
    if not experts:
        raise SystemExit("ir3de: error: give at least one --expert NAME=SHARD_GLOB")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    try:
        _, report = fit_router(
            experts,
            router=router,
            descriptions=_descriptions(args),
            field=args.field,
            whole_file=args.whole_file,
            skip_bad=args.skip_bad,
        )
    finally:
        if started_here:
            ray.shutdown()
    print(report.summary())


def cmd_fit(args: argparse.Namespace) -> int:
    from .router import Router, RouterConfig

    emb = _load_embeddings(args.embeddings)
    base = RouterConfig.paper() if args.preset == "paper" else RouterConfig()
    router = Router(emb, config=base, device=args.device, progress=not args.quiet, **_router_settings(args))
    start = time.perf_counter()
    if args.engine == "ray":
        _fit_on_ray(args, router)
    else:
        router.fit(_expert_texts(args), descriptions=_descriptions(args))
    elapsed = time.perf_counter() - start
    out = router.save_pretrained(args.output)
    sizes = ", ".join(
        f"{n}: {c.num_texts} texts / {c.num_tokens} tokens" for n, c in router.statistics.items()
    )
    print(f"fitted {len(router.experts)} experts in {elapsed:.2f} s ({sizes}); saved to {out}")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from .router import Router

    router = Router.from_pretrained(args.router, device="cpu")
    settings = _router_settings(args)
    if settings:
        router.configure(**settings)
    prompts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not prompts:
        raise SystemExit("ir3de: error: give prompts as arguments or on standard input (one per line)")
    decisions = router.route_batch(prompts)
    if args.json:
        for prompt, d in zip(prompts, decisions):
            print(json.dumps({"prompt": prompt, **d.to_dict()}, ensure_ascii=False))
    else:
        for prompt, d in zip(prompts, decisions):
            _print_decision(prompt, d, args.explain)
    return 0


def cmd_add_expert(args: argparse.Namespace) -> int:
    from .router import Router

    router = Router.from_pretrained(args.router, progress=not args.quiet)
    descriptions = _descriptions(args)
    for name, texts in _expert_texts(args).items():
        if args.update:
            router.update_expert(name, texts)
        else:
            router.add_expert(name, texts, description=descriptions.get(name, ""))
    out = router.save_pretrained(args.output or args.router)
    print(f"experts now {router.experts}; saved to {out}")
    return 0


def cmd_remove_expert(args: argparse.Namespace) -> int:
    from .router import Router

    router = Router.from_pretrained(args.router)
    for name in args.name:
        router.remove_expert(name)
    out = router.save_pretrained(args.output or args.router)
    print(f"experts now {router.experts}; saved to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .artifact import read_config

    config = read_config(Path(args.router))
    if args.json:
        print(json.dumps(config, indent=2, ensure_ascii=False))
        return 0
    print(
        f"ir3de router (format {config['format_version']}, written by ir3de {config.get('library_version')})"
    )
    print(f"  vocabulary {config['vocab_size']} ids, hidden size {config['hidden_size']}")
    source = config.get("embedding_source") or {}
    print(
        f"  embeddings: {source.get('kind')} {source.get('model_id') or source.get('path') or source.get('package') or ''}"
    )
    print(f"  settings: {config['settings']}")
    print("  experts:")
    for e in config["experts"]:
        desc = f" — {e['description']}" if e.get("description") else ""
        print(f"    {e['name']}: {e['num_texts']} texts, {e['num_tokens']} tokens{desc}")
    return 0


QUICKSTART_PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did she sell altogether?",
    'def fibonacci(n: int) -> list[int]:\n    """Return the first n Fibonacci numbers."""\n',
    "Write a haiku about autumn. Your entire response must be in lowercase letters and contain no commas.",
    "Wer nicht wagt, der nicht gewinnt — und wer zu spät kommt, den bestraft das Leben.",
    "Лучше синица в руках, чем журавль в небе.",
]


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .datasets import load_suite
    from .embeddings import TokenEmbeddings
    from .evaluate import evaluate
    from .router import Router, RouterConfig

    print("ir3de quickstart: four real domains, SmolLM2-135M token embeddings, seeded 50/50 split\n")
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
        tokens = sum(c.num_tokens for c in router.statistics.values())
        print(
            f"\nfitted the {preset} preset on {tokens} tokens in {time.perf_counter() - t1:.2f} s: {router.config}"
        )
        routers[preset] = router
    first = routers[chosen[0]]
    print(f"\nrouting example prompts ({chosen[0]} preset):")
    for prompt, d in zip(QUICKSTART_PROMPTS, first.route_batch(QUICKSTART_PROMPTS)):
        _print_decision(prompt, d, explain=False)
    print()
    for preset, router in routers.items():
        report = evaluate(router, suite.test)
        recalls = ", ".join(f"{n} {r:.3f}" for n, r in report.per_expert_recall.items())
        print(f"held-out routing accuracy ({preset} preset): {report.accuracy:.4f} "
              f"(macro recall {report.macro_recall:.4f}; {recalls}; {report.num_prompts} prompts)")  # fmt: skip
    if args.save:
        print(f"saved the {chosen[0]} router to {first.save_pretrained(args.save)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="ir3de", description="IR3DE: route prompts to domain-expert LLMs.")
    parser.add_argument("--version", action="version", version=f"ir3de {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a router on expert corpora and save it")
    _add_corpus_arguments(p)
    _add_settings_arguments(p)
    p.add_argument(
        "--embeddings",
        default="default",
        help="'default' (SmolLM2-135M), a .gguf file, a HF model folder or id",
    )
    p.add_argument("--preset", choices=["default", "paper"], default="default")
    p.add_argument("--balance", action="store_true", help="give every expert the same token mass")
    p.add_argument("--no-column-norm", action="store_true", help="skip the per-class column normalisation")
    p.add_argument("--device", default="auto")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="count locally or on Ray Data")
    p.add_argument("--address", help="Ray cluster address for --engine ray (default: start a local Ray)")
    p.add_argument("--skip-bad", action="store_true", help="--engine ray: skip bad shards and list them")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("-o", "--output", required=True, help="folder to write the router to")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("route", help="route prompts (arguments, or one per line on stdin)")
    p.add_argument("router", help="router folder")
    p.add_argument("text", nargs="*", help="prompts; read from stdin when omitted")
    _add_settings_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object per prompt")
    p.add_argument("--explain", action="store_true", help="show every deciding token and all scores")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("add-expert", help="add experts (or more text with --update) to a saved router")
    p.add_argument("router")
    _add_corpus_arguments(p)
    p.add_argument("--update", action="store_true", help="add the text to existing experts instead")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("-o", "--output", help="write here instead of updating ROUTER in place")
    p.set_defaults(func=cmd_add_expert)

    p = sub.add_parser("remove-expert", help="remove experts from a saved router")
    p.add_argument("router")
    p.add_argument("name", nargs="+")
    p.add_argument("-o", "--output")
    p.set_defaults(func=cmd_remove_expert)

    p = sub.add_parser("info", help="describe a saved router")
    p.add_argument("router")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("quickstart", help="fit on four real domains and route example prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--preset",
        choices=["both", "default", "paper"],
        default="both",
        help="which presets to fit and score",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--save", help="also save the (first) router to this folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_quickstart)

    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ir3de`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except Ir3deError as e:
        print(f"ir3de: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
