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

from ir3de.errors import Ir3deError, MissingDependencyError

if TYPE_CHECKING:
    from ir3de.decision import RouteDecision
    from ir3de.embeddings import TokenEmbeddings
    from ir3de.router import Router

__all__ = ["main"]

# Modules that add subcommands: each defines ``register(subparsers)`` (keeps this file small and lets
# each capability own its command).
_COMMAND_MODULES: tuple[str, ...] = (
    "ir3de.cli.evaluate",
    "ir3de.cli.hub",
    "ir3de.cli.learn",
    "ir3de_integrations.serve.cli",
)


def _load_embeddings(spec: str) -> TokenEmbeddings:
    from ir3de.embeddings import TokenEmbeddings

    if spec == "default":
        return TokenEmbeddings.default()
    if spec.endswith(".gguf"):
        return TokenEmbeddings.from_gguf(spec)
    return TokenEmbeddings.from_pretrained(spec)


class CliUsageError(Ir3deError, ValueError):
    """A command-line argument is wrong (exit status 2, like argparse's own usage errors)."""


#: Exit statuses of the ``ir3de`` command (also in ``ir3de --help`` and the README).
EXIT_OK = 0
EXIT_PARTIAL = 1  # `route`: some (not all) prompts are errors, reported in place
EXIT_ERROR = 2  # nothing done: bad arguments, unreadable input, a missing or corrupted router, ...
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit status:
  0    success
  1    `route`: some prompts could not be routed (each input line still gets its answer line; the
       errors are in place, the other prompts are routed)
  2    error, nothing done or written: bad arguments, unreadable corpus or input, missing or
       corrupted router, an existing output folder without --force, a missing optional package,
       or `route` could route none of the prompts
  130  interrupted (Ctrl-C)
"""


class _IntermixedParser(argparse.ArgumentParser):
    """Accepts options between positionals (``ir3de route ROUTER --json PROMPT``)."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        nested = any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._actions)
        if self._parsing or nested:
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def _parse_pairs(pairs: Sequence[str] | None, what: str, *, unique: bool = False) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise CliUsageError(f"{what} must look like NAME=VALUE, got {pair!r}")
        if unique and name in out:
            raise CliUsageError(
                f"expert {name!r} is given twice ({what} {name}={out[name][0]} and {what} {pair}); give "
                f"each expert once, with a glob or a folder for several files (e.g. {what} "
                f"{name}='data/{name}/*.txt'), or use another name"
            )
        out.setdefault(name, []).append(value)
    return out


def _expert_fields(args: argparse.Namespace, experts: Sequence[str]) -> dict[str, str | None]:
    """``--field FIELD`` (every expert) and ``--field NAME=FIELD`` (one expert) → field per expert."""
    default: str | None = None
    per_expert: dict[str, str] = {}
    for value in getattr(args, "field", None) or []:
        name, sep, rest = value.partition("=")
        if sep and name in experts:
            per_expert[name] = rest
        elif default is not None and default != value:
            raise CliUsageError(
                f"--field is given twice for every expert ({default!r} and {value!r}); name the expert "
                f"with --field NAME=FIELD (experts: {', '.join(experts)})"
            )
        else:
            default = value
    return {name: per_expert.get(name, default) for name in experts}


def _read_options(
    args: argparse.Namespace, name: str, patterns: list[str], field: str | None
) -> dict[str, Any]:
    """``read_texts`` options of one expert: ``--whole-file`` applies to its plain text files only."""
    from ir3de.data.corpus import expand_paths, is_structured

    whole_file: bool | None = None
    if getattr(args, "whole_file", False):
        files = expand_paths(patterns)
        structured = [f for f in files if is_structured(f)]
        if structured and len(structured) < len(files):
            raise CliUsageError(
                f"expert {name!r} mixes record files ({structured[0]}) and plain text files, and "
                "--whole-file is given: give the plain text files their own expert, or drop --whole-file"
            )
        whole_file = True if not structured else None
    return {"field": field, "whole_file": whole_file}


def _expert_files(args: argparse.Namespace, *, allow_empty: bool = False) -> dict[str, list[str]]:
    experts = _parse_pairs(args.expert, "--expert", unique=True)
    if not experts and not allow_empty:
        raise CliUsageError("give at least one --expert NAME=FILE_OR_GLOB (or --labelled FILE)")
    return experts


def _expert_texts(args: argparse.Namespace) -> dict[str, list[str]]:
    from ir3de.data.corpus import read_texts

    labelled = getattr(args, "labelled", None)  # --labelled FILE: added by ir3de.cli.learn
    experts = _expert_files(args, allow_empty=bool(labelled))
    fields = _expert_fields(args, list(experts))
    texts = {
        name: list(read_texts(patterns, **_read_options(args, name, patterns, fields[name])))
        for name, patterns in experts.items()
    }
    if labelled:
        from ir3de.data.labelled import read_labelled

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
    if getattr(args, "balance", None) is not None:
        settings["balance"] = bool(args.balance)
    if getattr(args, "column_norm", None) is not None:
        settings["column_norm"] = bool(args.column_norm)
    return settings


def _config_defaults() -> Any:
    from ir3de.router import RouterConfig

    return RouterConfig(), RouterConfig.paper()


def _add_settings_arguments(p: argparse.ArgumentParser) -> None:
    d, paper = _config_defaults()
    p.add_argument(
        "--level",
        choices=["token", "text"],
        help=f"one ridge row per training text or per token occurrence (default {d.level}; paper {paper.level})",
    )
    p.add_argument("--lam", type=float, help=f"ridge strength λ (default {d.lam}; paper {paper.lam})")
    p.add_argument("--k", type=int, help=f"tokens kept by --selector topk (default {d.k}; paper {paper.k})")
    p.add_argument(
        "--selector",
        choices=["topk", "all", "avg"],
        help="which tokens decide: topk = the k lowest-entropy tokens, all = every token, avg = the mean "
        f"of all token logits (default {d.selector}; paper {paper.selector})",
    )
    p.add_argument(
        "--combine",
        choices=["vote", "logprob"],
        help="how topk/all tokens combine: vote = majority of token argmaxes, logprob = sum of "
        f"log-probabilities (default {d.combine}; paper {paper.combine})",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        dest="max_tokens",
        help=f"only the first N tokens of a prompt count (default {d.max_tokens})",
    )
    p.add_argument(
        "--fallback",
        metavar="NAME",
        help="expert name returned for prompts with no countable token, or below --threshold",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="confidence in [0, 1] below which --fallback is returned (needs --fallback; default 0)",
    )


def _add_corpus_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--expert",
        action="append",
        metavar="NAME=FILES",
        help="an expert and its text, once per expert: a file, folder or quoted glob; .txt (a text per "
        "line), .jsonl/.json/.parquet/.csv (records, with --field), source code and documents (.py, .md, "
        "… : a text per file); repeat for each expert",
    )
    p.add_argument(
        "--field",
        action="append",
        metavar="[NAME=]FIELD",
        help="the field of .jsonl/.json/.parquet/.csv records that holds the text (e.g. question, "
        "prompt[-1].content); FIELD applies to every expert's record files, NAME=FIELD to one expert",
    )
    p.add_argument(
        "--whole-file",
        action="store_true",
        help="plain text files (.txt, any suffix) are one text each, not one per line; record files "
        "(.jsonl, ...) are not affected",
    )
    p.add_argument(
        "--description", action="append", metavar="NAME=TEXT", help="a one-line description of an expert"
    )


def _status(args: argparse.Namespace, message: str) -> None:
    """A progress line on stderr (kept off stdout, which carries results), unless --quiet."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _check_output(folder: str, force: bool, *, replaces: str | None = None) -> None:
    """Refuse to overwrite a router without --force, and never write into a non-router folder."""
    path = Path(folder)
    if replaces is not None and path.resolve() == Path(replaces).resolve():
        return  # updating a router in place is what add-expert / remove-expert do without -o
    if path.exists() and not path.is_dir():
        raise CliUsageError(f"-o {folder}: a file exists there; choose another output folder")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not (path / "config.json").is_file():
        raise CliUsageError(
            f"-o {folder}: the folder exists, is not empty and is not an ir3de router; choose a new or "
            "empty folder (--force never writes into a folder that is not a router)"
        )
    if not force:
        raise CliUsageError(
            f"-o {folder}: a router exists there; pass --force to replace it, or choose another folder"
        )


def _load_embeddings_verbose(args: argparse.Namespace, spec: str) -> TokenEmbeddings:
    _status(args, f"loading token embeddings {spec!r} (the first load reads and caches the tensor) …")
    start = time.perf_counter()
    emb = _load_embeddings(spec)
    _status(
        args,
        f"loaded {emb.name}: {emb.vocab_size} × {emb.hidden_size} in {time.perf_counter() - start:.1f} s",
    )
    return emb


def _with_progress(args: argparse.Namespace, router: Router, texts: dict[str, list[str]]) -> Any:
    """Fit with one progress bar in characters (a single huge text shows its size and elapsed time)."""
    from ir3de.cli.progress import fit_with_progress

    return fit_with_progress(router, texts, _descriptions(args), quiet=getattr(args, "quiet", False))


_EXPLAIN_TOKENS = 50


def _print_decision(prompt: str, d: RouteDecision, explain: bool, router: Router | None = None) -> None:
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


#: Below this many countable tokens, --explain warns that the evidence is thin.
FEW_TOKENS = 4


def _why(router: Router, d: RouteDecision) -> list[str]:
    """How the confidence follows from the evidence: raw per-expert evidence, temperature, margin."""
    import numpy as np

    config = router.config
    if d.num_tokens == 0 or not d.tokens:
        return ["no countable token: the prompt went to the fallback" if d.fallback_used else ""]
    ids = np.asarray([t.id for t in d.tokens], np.int64)
    names = list(d.scores)
    temperature = config.effective_temperature
    if config.selector == "avg":
        evidence = router.state.table.logits[ids].mean(axis=0, dtype=np.float64)
        what = f"mean token logit over all {d.num_tokens} tokens"
    elif config.combine == "vote":
        evidence = np.bincount(router.state.table.votes[ids], minlength=len(names)).astype(np.float64)
        what = f"votes of the {len(ids)} selected tokens"
        temperature = None
    else:
        evidence = router.state.table.log_probs[ids].sum(axis=0)
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


def _fit_on_ray(args: argparse.Namespace, router: Router) -> None:
    try:
        from ir3de_integrations.ray import fit_router, quiet_ray_logging
    except ImportError as e:
        raise MissingDependencyError("--engine ray needs the Ray extra: pip install 'ir3de[ray]'") from e
    import ray

    experts = _expert_files(args)
    fields = set(_expert_fields(args, list(experts)).values())
    if len(fields) > 1:
        raise CliUsageError("--engine ray reads every expert's shards with one --field; give one FIELD")
    started_here = not ray.is_initialized()
    if started_here:
        _status(
            args, "starting a local Ray …" if args.address is None else f"joining Ray at {args.address} …"
        )
        ray.init(address=args.address, include_dashboard=False, **quiet_ray_logging())
    try:
        _, report = fit_router(
            experts,
            router=router,
            descriptions=_descriptions(args),
            field=fields.pop(),
            whole_file=True if args.whole_file else None,
            skip_bad=args.skip_bad,
        )
    finally:
        if started_here:
            ray.shutdown()
    print(report.summary())


def _settings_error(e: ValueError) -> CliUsageError:
    message = str(e).replace("pass fallback='general' (or any name)", "pass --fallback NAME")
    return CliUsageError(message)


def cmd_fit(args: argparse.Namespace) -> int:
    from ir3de.router import Router, RouterConfig

    _check_output(args.output, args.force)
    if args.engine == "local":
        texts = _expert_texts(args)  # read (and check) the corpus before the slow embedding load
    emb = _load_embeddings_verbose(args, args.embeddings)
    base = RouterConfig.paper() if args.preset == "paper" else RouterConfig()
    try:
        progress = False if args.engine == "local" else not args.quiet  # local: one bar in characters
        router = Router(emb, config=base, device=args.device, progress=progress, **_router_settings(args))
    except ValueError as e:
        if isinstance(e, Ir3deError):
            raise
        raise _settings_error(e) from None
    start = time.perf_counter()
    if args.engine == "ray":
        _fit_on_ray(args, router)
    else:
        _with_progress(args, router, texts)
    elapsed = time.perf_counter() - start
    out = router.save_pretrained(args.output)
    sizes = ", ".join(
        f"{n}: {s.counts.num_texts} texts / {s.counts.num_tokens} tokens"
        for n, s in router.statistics.items()
    )
    print(f"fitted {len(router.experts)} experts in {elapsed:.2f} s ({sizes}); saved to {out}")
    return EXIT_OK


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


def _cli_message(message: str) -> str:
    """Error messages written for Python callers, with the command's own flags instead."""
    for python, flags in _CLI_HINTS:
        message = message.replace(python, flags)
    return message


_CLI_HINTS: tuple[tuple[str, str], ...] = (
    ("pass a non-empty prompt or set Router(fallback='name') to route such prompts",
     "pass a non-empty prompt, or --fallback NAME to route such prompts"),
    ("set Router(fallback='name')", "pass --fallback NAME"),
    ("Router(fallback='name')", "--fallback NAME"),
    ("pass fallback='general' (or any name)", "pass --fallback NAME"),
    ("or use Router(level='token')", "or refit with --level token"),
    ("call fit({...}) or Router.from_pretrained(folder)", "fit one with `ir3de fit`"),
)  # fmt: skip


def cmd_route(args: argparse.Namespace) -> int:
    from ir3de.router import Router

    prompts = _read_prompts(args)
    if not prompts:
        raise CliUsageError("give prompts as arguments or on standard input (one per line)")
    router = Router.from_pretrained(args.router, device="cpu")
    settings = _router_settings(args)
    if settings:
        try:
            router.configure(**settings)
        except ValueError as e:
            if isinstance(e, Ir3deError):
                raise
            raise _settings_error(e) from None
    results = _route_all(router, prompts)
    failed: list[int] = []
    first_error = ""
    for number, (prompt, d) in enumerate(zip(prompts, results), start=1):
        if isinstance(d, Ir3deError):
            failed.append(number)
            message = _cli_message(str(d))
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
            _print_decision(prompt, d, args.explain, router)
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


def cmd_add_expert(args: argparse.Namespace) -> int:
    from ir3de.router import Router

    if args.output:
        _check_output(args.output, args.force, replaces=args.router)
    texts = _expert_texts(args)
    router = Router.from_pretrained(args.router, progress=not args.quiet)
    for name in texts:
        if args.update and name not in router.experts:
            raise CliUsageError(
                f"--update adds text to an existing expert, and the router has no expert {name!r} "
                f"(experts: {', '.join(router.experts)}); drop --update to add it as a new expert"
            )
        if not args.update and name in router.experts:
            raise CliUsageError(
                f"expert {name!r} already exists; pass --update to add this text to it, or "
                f"`ir3de remove-expert {args.router} {name}` first"
            )
    descriptions = _descriptions(args)
    for name, expert_texts in texts.items():
        if args.update:
            router.add_expert(name, expert_texts, update=True)
        else:
            router.add_expert(name, expert_texts, description=descriptions.get(name, ""))
    out = router.save_pretrained(args.output or args.router)
    print(f"experts now {list(router.experts)}; saved to {out}")
    return EXIT_OK


def cmd_remove_expert(args: argparse.Namespace) -> int:
    from ir3de.router import Router

    if args.output:
        _check_output(args.output, args.force, replaces=args.router)
    router = Router.from_pretrained(args.router)
    for name in args.name:
        router.remove_expert(name)
    out = router.save_pretrained(args.output or args.router)
    print(f"experts now {list(router.experts)}; saved to {out}")
    return EXIT_OK


def _verify_router(folder: Path) -> dict[str, Any]:
    """Read a saved router completely: every file's size and sha256, shapes, tokenizer (like routing)."""
    from ir3de.artifacts import format as artifact
    from ir3de.router import Router

    config = artifact.read_config(folder)
    for name in sorted(config.get("files") or {}):
        artifact.read_file_checked(folder, name, config)
    Router.from_pretrained(folder, device="cpu")  # shapes, statistics, tokenizer fingerprint
    return config


def cmd_info(args: argparse.Namespace) -> int:
    config = _verify_router(Path(args.router))
    if args.json:
        print(json.dumps(config, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(
        f"ir3de router (format {config['format_version']}, written by ir3de {config.get('library_version')})"
    )
    print(f"  files: {len(config.get('files') or {})} checked (size and sha256 as recorded)")
    print(f"  vocabulary {config['vocab_size']} ids, hidden size {config['hidden_size']}")
    source = config.get("embedding_source") or {}
    print(
        f"  embeddings: {source.get('kind')} {source.get('model_id') or source.get('path') or source.get('package') or ''}"
    )
    print(f"  settings: {config['settings']}")
    print("  experts:")
    for e in config["experts"]:
        desc = f" — {e['description']}" if e.get("description") else ""
        learned = f" + {e['traffic']['num_prompts']} learned prompts" if e.get("traffic") else ""
        print(f"    {e['name']}: {e['num_texts']} texts, {e['num_tokens']} tokens{learned}{desc}")
    return EXIT_OK


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
        _check_output(args.save, args.force)
    print("ir3de quickstart: four real domains, SmolLM2-135M token embeddings, seeded 50/50 split\n")
    _status(args, "loading token embeddings (the first load reads and caches the tensor, about 10 s) …")
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
    from ir3de import __version__

    parser = argparse.ArgumentParser(
        prog="ir3de",
        description="IR3DE: route prompts to domain-expert LLMs.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ir3de {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_IntermixedParser)

    p = sub.add_parser("fit", help="fit a router on expert corpora and save it", epilog=EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _add_corpus_arguments(p)
    _add_settings_arguments(p)
    p.add_argument(
        "--embeddings",
        default="default",
        help="'default' (SmolLM2-135M), a .gguf file, a HF model folder or id",
    )
    p.add_argument(
        "--preset",
        choices=["default", "paper"],
        default="default",
        help="starting settings: the library defaults or the paper's router exactly (λ=1e-2, top-10 "
        "entropy vote, column norm, no balancing); other options override it (default: default)",
    )
    p.add_argument(
        "--balance",
        action=argparse.BooleanOptionalAction,
        help="weight every expert to the same mass so a big corpus does not drown a small one "
        "(default: on; paper preset: off)",
    )
    p.add_argument(
        "--column-norm",
        action=argparse.BooleanOptionalAction,
        dest="column_norm",
        help="divide each class column of W by its L2 norm, as the paper's code does (default: off; "
        "paper preset: on)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where the Gram products and the solve run: auto (a GPU when there is one), cpu, cuda[:N]",
    )
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="count locally or on Ray Data")
    p.add_argument("--address", help="Ray cluster address for --engine ray (default: start a local Ray)")
    p.add_argument("--skip-bad", action="store_true", help="--engine ray: skip bad shards and list them")
    p.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    p.add_argument("-o", "--output", required=True, help="folder to write the router to (new or empty)")
    p.add_argument("--force", action="store_true", help="replace a router that exists at -o")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("route", help="route prompts (arguments, or one per line on stdin)",
                       epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("router", help="router folder, or a Hugging Face Hub repo id (org/name)")
    p.add_argument(
        "text",
        nargs="*",
        help="prompts; when omitted, every line of stdin is one prompt (blank lines answered in place)",
    )
    _add_settings_arguments(p)
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

    p = sub.add_parser("add-expert", help="add experts (or more text with --update) to a saved router")
    p.add_argument("router", help="router folder")
    _add_corpus_arguments(p)
    p.add_argument("--update", action="store_true", help="add the text to existing experts instead")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("-o", "--output", help="write here instead of updating ROUTER in place")
    p.add_argument("--force", action="store_true", help="replace a router that exists at -o")
    p.set_defaults(func=cmd_add_expert)

    p = sub.add_parser("remove-expert", help="remove experts from a saved router")
    p.add_argument("router", help="router folder")
    p.add_argument("name", nargs="+", help="expert names to remove")
    p.add_argument("-o", "--output", help="write here instead of updating ROUTER in place")
    p.add_argument("--force", action="store_true", help="replace a router that exists at -o")
    p.set_defaults(func=cmd_remove_expert)

    p = sub.add_parser("info", help="check every file of a saved router and describe it")
    p.add_argument("router", help="router folder")
    p.add_argument("--json", action="store_true", help="print config.json")
    p.set_defaults(func=cmd_info)

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

    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ir3de`` command; returns the exit status (see :data:`EXIT_CODES_HELP`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except Ir3deError as e:
        print(f"ir3de: error: {_cli_message(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as e:  # argparse (message printed, status 2), or a command's SystemExit("message")
        if isinstance(e.code, str):  # Python would exit 1: print it and exit 2 like every other error
            message = e.code if e.code.startswith("ir3de: error:") else f"ir3de: error: {e.code}"
            print(message, file=sys.stderr)
            e.code = EXIT_ERROR
        raise
    except KeyboardInterrupt:
        print("ir3de: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `ir3de route ... | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
