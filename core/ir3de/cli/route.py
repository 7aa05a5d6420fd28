"""``ir3de route``: route prompts (arguments, or one per line on stdin) with a saved router."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ir3de.cli.options import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PARTIAL,
    CliUsageError,
    add_settings_arguments,
    cli_message,
    router_settings,
    settings_error,
)
from ir3de.config import STATISTICS_SETTINGS
from ir3de.errors import Ir3deError

if TYPE_CHECKING:
    from ir3de.decision import RouteDecision
    from ir3de.router import Router

__all__ = ["print_decision", "register"]

#: Fewer countable tokens than this: ``--explain`` warns that the confidence rests on little evidence.
FEW_TOKENS = 4

_EXPLAIN_TOKENS = 50


def print_decision(prompt: str, d: RouteDecision, explain: bool, router: Router | None = None) -> None:
    flag = f" (fallback; top expert {d.top_expert})" if d.fallback_used else ""
    print(f"{d.expert}{flag}\tconfidence={d.confidence:.3f}\t{prompt[:70]!r}")
    if not explain:
        if d.tokens:
            print("    deciding tokens: " + ", ".join(f"{t.text!r}→{t.vote}" for t in d.tokens[:5]))
        return
    print(f"    {d.num_tokens} countable tokens; scores: "
          + "  ".join(f"{n}={v:.3f}" for n, v in sorted(d.scores.items(), key=lambda kv: -kv[1])))  # fmt: skip
    if router is not None:
        for line in _why(router, d):
            print("    " + line)
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


def _why(router: Router, d: RouteDecision) -> list[str]:
    """How the confidence follows from the evidence: raw per-expert evidence, temperature, margin."""
    import numpy as np

    config = router.config
    if d.num_tokens == 0 or not d.tokens:
        return ["no countable token: the prompt went to the fallback" if d.fallback_used else ""]
    ids = np.asarray([t.id for t in d.tokens], np.int64)
    names = list(d.scores)
    temperature: float | None = config.effective_temperature
    if config.selector == "avg":
        evidence = router.state.table.rows(ids).mean(axis=0)
        what = f"mean token logit over all {d.num_tokens} tokens"
    elif config.combine == "vote":
        evidence = np.bincount(router.state.table.votes[ids], minlength=len(names)).astype(np.float64)
        what = f"votes of the {len(ids)} selected tokens"
        temperature = None
    else:
        evidence = router.state.table.log_prob_rows(ids).sum(axis=0)
        what = f"sum of log-probabilities of the {len(ids)} selected tokens"
    order = np.argsort(-evidence, kind="stable")
    lines = [f"evidence ({what}): " + "  ".join(f"{names[i]}={evidence[i]:.3f}" for i in order)]
    if len(order) > 1:
        gap = float(evidence[order[0]] - evidence[order[1]])
        if temperature is None:
            lines.append(f"confidence = vote share; lead over {names[order[1]]}: {gap:.0f} vote(s)")
        else:
            lines.append(
                f"confidence = softmax(evidence / temperature {temperature:g}): the lead of {gap:.3f} over "
                f"{names[order[1]]} becomes a factor of {np.exp(min(gap / temperature, 700)):.3g} in odds"
            )
    if d.num_tokens < FEW_TOKENS:
        lines.append(
            f"caution: only {d.num_tokens} countable token(s): this confidence rests on very little evidence "
            "and is not calibrated for prompts this short; use --fallback NAME --threshold T to abstain"
        )
    return lines


def _read_prompts(args: argparse.Namespace) -> list[str]:
    """Prompts from the arguments, or one per line of stdin (every line, blank ones included).

    Undecodable bytes (not UTF-8) become U+FFFD, as do lone surrogates (see :mod:`ir3de.sanitize`).
    """
    from ir3de.sanitize import clean_arg, decode_bytes

    if args.text:
        return [clean_arg(t) for t in args.text]
    buffer = getattr(sys.stdin, "buffer", None)
    # a text stream without bytes underneath (e.g. replaced in tests) is read as text
    data = decode_bytes(buffer.read()) if buffer is not None else sys.stdin.read()
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


_JSON_PROMPT_CHARS = 200


def _route_all(router: Router, prompts: list[str]) -> list[RouteDecision | Ir3deError]:
    """A decision or an error for every prompt (one bad prompt does not stop the others)."""
    from ir3de.errors import EmptyPromptError

    results: list[RouteDecision | Ir3deError] = [
        EmptyPromptError("")  # placeholder, replaced below
    ] * len(prompts)
    no_fallback = router.config.fallback is None
    todo = [i for i, p in enumerate(prompts) if not (no_fallback and not p.strip())]
    for i in set(range(len(prompts))) - set(todo):
        results[i] = EmptyPromptError(
            "blank prompt: no countable token; pass --fallback NAME to route such prompts to an expert"
        )
    try:
        for i, d in zip(todo, router.route_batch([prompts[i] for i in todo])):
            results[i] = d
    except Ir3deError:  # some prompt failed: route one by one to report each error in place
        for i in todo:
            try:
                results[i] = router.route(prompts[i])
            except Ir3deError as e:
                results[i] = e
    return results


def cmd_route(args: argparse.Namespace) -> int:
    from ir3de.router import Router

    prompts = _read_prompts(args)
    if not prompts:
        raise CliUsageError("give prompts as arguments or on standard input (one per line)")
    settings = router_settings(args)
    refit = [f"--{k.replace('_', '-')}" for k in settings if k in STATISTICS_SETTINGS]
    if refit:  # they would re-solve the router on every call, silently, and not be saved
        raise CliUsageError(
            f"{', '.join(refit)} change{'s' if len(refit) == 1 else ''} how the router is fitted, not how it "
            "routes: `ir3de route` only routes; refit with `ir3de fit ... "
            f"{' '.join(refit)} ...` (or `ir3de learn`/`ir3de tune` for traffic and thresholds)"
        )
    router = Router.from_pretrained(args.router, device="cpu")
    if settings:
        try:
            router.configure(**settings)
        except ValueError as e:
            if isinstance(e, Ir3deError):
                raise
            raise settings_error(e) from None
    results = _route_all(router, prompts)
    failed: list[int] = []
    first_error = ""
    for number, (prompt, d) in enumerate(zip(prompts, results), start=1):
        if isinstance(d, Ir3deError):
            failed.append(number)
            message = cli_message(str(d))
            first_error = first_error or message
            if args.json:
                print(json.dumps({"line": number, "error": message, "error_type": type(d).__name__}))
            else:
                print(f"error\tline {number}: {message}\t{prompt[:70]!r}")
            continue
        if args.json:
            shown = prompt if len(prompt) <= _JSON_PROMPT_CHARS else prompt[:_JSON_PROMPT_CHARS] + "…"
            print(json.dumps({"line": number, "prompt": shown, "prompt_chars": len(prompt), **d.to_dict()},
                             ensure_ascii=False))  # fmt: skip
        else:
            print_decision(prompt, d, args.explain, router)
    sys.stdout.flush()
    if failed:
        lines = ", ".join(map(str, failed[:10])) + (", …" if len(failed) > 10 else "")
        print(
            f"ir3de: error: {len(failed)} of {len(prompts)} prompts could not be routed (line {lines}); "
            f"line {failed[0]}: {first_error}",
            file=sys.stderr,
        )
        return EXIT_ERROR if len(failed) == len(prompts) else EXIT_PARTIAL
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``route`` to the ``ir3de`` command's subparsers."""
    p = sub.add_parser("route", help="route prompts (arguments, or one per line on stdin)",
                       epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("router", help="router folder, or a Hugging Face Hub repo id (org/name)")
    p.add_argument(
        "text",
        nargs="*",
        help="prompts; when omitted, every line of stdin is one prompt (blank lines answered in place)",
    )
    add_settings_arguments(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per input line, with its line number (errors as {line, error})",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="show the evidence, how it becomes the confidence, every deciding token and all scores",
    )
    p.set_defaults(func=cmd_route)
