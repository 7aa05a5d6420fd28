"""What every ``ir3de`` command shares: exit statuses, argument groups, reading corpora, status lines.

Command modules (``ir3de.cli.fit``, ``ir3de.cli.route``, ...) and integration commands registered
through the ``ir3de.commands`` entry-point group build on these; nothing here imports a command.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ir3de.errors import Ir3deError, check_expert_name

if TYPE_CHECKING:
    from ir3de.embeddings import TokenEmbeddings
    from ir3de.router import Router


def load_embeddings(spec: str) -> TokenEmbeddings:
    from ir3de.embeddings import TokenEmbeddings

    if spec == "default":
        return TokenEmbeddings.default()
    if spec.endswith(".gguf"):
        return TokenEmbeddings.from_gguf(spec)
    return TokenEmbeddings.from_pretrained(spec)


class CliUsageError(Ir3deError, ValueError):
    """A command-line argument is wrong (exit status 2, like argparse's own usage errors)."""


#: Exit statuses of the ``ir3de`` command (also in ``ir3de --help`` and docs/cli.md).
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


class IntermixedParser(argparse.ArgumentParser):
    """Accepts options between positionals (``ir3de route ROUTER --json PROMPT``)."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        nested = any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._actions)
        if self._parsing or nested:
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def parse_pairs(pairs: Sequence[str] | None, what: str, *, unique: bool = False) -> dict[str, list[str]]:
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


def expert_fields(args: argparse.Namespace, experts: Sequence[str]) -> dict[str, str | None]:
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


def read_options(
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


def expert_files(args: argparse.Namespace, *, allow_empty: bool = False) -> dict[str, list[str]]:
    experts = parse_pairs(args.expert, "--expert", unique=True)
    if not experts and not allow_empty:
        raise CliUsageError("give at least one --expert NAME=FILE_OR_GLOB (or --labelled FILE)")
    return experts


def expert_texts(args: argparse.Namespace) -> dict[str, list[str]]:
    from ir3de.data.corpus import read_texts

    labelled = getattr(args, "labelled", None)  # --labelled FILE: added by ir3de.cli.learn
    experts = expert_files(args, allow_empty=bool(labelled))
    for name in experts:  # the one name rule, before any file is read
        check_expert_name(name)
    fields = expert_fields(args, list(experts))
    texts = {
        name: list(read_texts(patterns, **read_options(args, name, patterns, fields[name])))
        for name, patterns in experts.items()
    }
    if labelled:
        from ir3de.data.labelled import read_labelled

        data = read_labelled(labelled, text_field=args.text_field, label_field=args.label_field)
        for name, more in data.by_label().items():
            texts.setdefault(name, []).extend(more)
    return texts


def descriptions(args: argparse.Namespace) -> dict[str, str]:
    return {
        k: " ".join(v) for k, v in parse_pairs(getattr(args, "description", None), "--description").items()
    }


def router_settings(args: argparse.Namespace) -> dict[str, Any]:
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


def config_defaults() -> Any:
    from ir3de.router import RouterConfig

    return RouterConfig(), RouterConfig.paper()


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    d, paper = config_defaults()
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


def add_corpus_arguments(p: argparse.ArgumentParser) -> None:
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


def status(args: argparse.Namespace, message: str) -> None:
    """A progress line on stderr (kept off stdout, which carries results), unless --quiet."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def check_output(folder: str, force: bool, *, replaces: str | None = None) -> None:
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


def load_embeddings_verbose(args: argparse.Namespace, spec: str) -> TokenEmbeddings:
    status(args, f"loading token embeddings {spec!r} (the first load reads and caches the tensor) …")
    start = time.perf_counter()
    emb = load_embeddings(spec)
    status(
        args,
        f"loaded {emb.name}: {emb.vocab_size} × {emb.hidden_size} in {time.perf_counter() - start:.1f} s",
    )
    return emb


def fit_with_progress_bar(args: argparse.Namespace, router: Router, texts: dict[str, list[str]]) -> Any:
    """Fit with one progress bar in characters (a single huge text shows its size and elapsed time)."""
    from ir3de.cli.progress import fit_with_progress

    return fit_with_progress(router, texts, descriptions(args), quiet=getattr(args, "quiet", False))


def settings_error(e: ValueError) -> CliUsageError:
    message = str(e).replace("pass fallback='general' (or any name)", "pass --fallback NAME")
    return CliUsageError(message)


def cli_message(message: str) -> str:
    """Error messages written for Python callers, with the command's own flags instead
    (:func:`ir3de.serving.error_codes.for_surface`, the one table the gateway uses too)."""
    from ir3de.serving.error_codes import for_surface

    return for_surface(message, "cli")
