"""Speed and memory of one router in a fresh process with a fixed thread count (run by ``benchmarks.run``).

The thread environment (``RAYON_NUM_THREADS``, ``TOKENIZERS_PARALLELISM``, ``OMP_NUM_THREADS``…) is
set by the parent before this process starts, so the tokenizer's thread pool honours it; torch gets
``torch.set_num_threads``. Peak memory is this process's ``ru_maxrss``.

Usage (internal)::

    python -m benchmarks.worker --kind ir3de --artifact DIR --data data.json --threads 1 --out out.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _memory_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process in MB.

    ``ru_maxrss`` is not used: on Linux it survives ``exec`` and would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _stats(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, np.float64) / 1e3  # µs
    return {
        "p50_us": float(np.percentile(a, 50)),
        "p99_us": float(np.percentile(a, 99)),
        "mean_us": float(a.mean()),
        "n": int(a.size),
    }


def _best_time(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _latency_pair(route: Any, tokenize: Any, prompts: list[str], rounds: int) -> tuple[list[int], list[int]]:
    """Interleaved single-prompt timings of routing and of tokenization alone (same prompts).

    The order alternates prompt by prompt (tokenize → route, then route → tokenize), so neither side
    is always the one that meets the prompt first (cold caches) or second (warm ones).
    """
    for p in prompts[:10]:  # warm-up
        route(p)
        tokenize(p)
    r_ns: list[int] = []
    t_ns: list[int] = []
    clock = time.perf_counter_ns
    for r in range(rounds):
        for i, p in enumerate(prompts):
            if (i + r) % 2 == 0:
                t0 = clock()
                tokenize(p)
                t1 = clock()
                route(p)
                t2 = clock()
                t_ns.append(t1 - t0)
                r_ns.append(t2 - t1)
            else:
                t0 = clock()
                route(p)
                t1 = clock()
                tokenize(p)
                t2 = clock()
                r_ns.append(t1 - t0)
                t_ns.append(t2 - t1)
    return r_ns, t_ns


def _ir3de_extras(data: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Fitting throughput against tokenization, add_expert cost, and linear scaling (IR3DE only)."""
    from ir3de import Router, RouterConfig, TokenEmbeddings
    from ir3de.fitting.pipeline import count_expert, token_gram
    from ir3de.fitting.solve import column_normalize, ridge_solve
    from ir3de.fitting.statistics import balance_weights, combine_grams
    from ir3de.table import RouteTable, compile_logits

    emb = TokenEmbeddings.default()
    tok = emb.tokenizer
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    out: dict[str, Any] = {}

    def fit_profile(train: dict[str, list[str]]) -> dict[str, Any]:
        texts = [t for v in train.values() for t in v]
        tokens = sum(len(e.ids) for e in encode(texts, add_special_tokens=False))
        tok_s = _best_time(lambda: encode(texts, add_special_tokens=False), 1 if quick else 3)
        r = Router(emb, config=RouterConfig.paper(), device="cpu", progress=False)
        fit_s = _best_time(lambda: r.fit(train), 1 if quick else 3)
        # where the time goes: count (tokenize + histogram), Gram, solve, table
        t0 = time.perf_counter()
        counts = {n: count_expert(emb, v, name=n, level=r.config.level) for n, v in train.items()}
        t1 = time.perf_counter()
        grams = {n: token_gram(emb.matrix, c) for n, c in counts.items()}
        t2 = time.perf_counter()
        a, b = combine_grams(list(grams.values()), balance_weights([1] * len(grams), False))
        w = column_normalize(ridge_solve(a, b, r.config.lam))
        t3 = time.perf_counter()
        RouteTable.from_logits(compile_logits(emb.matrix, w), emb.excluded_ids)
        t4 = time.perf_counter()
        return {
            "texts": len(texts),
            "tokens": tokens,
            "fit_s": fit_s,
            "fit_tokens_per_s": tokens / fit_s,
            "tokenize_batch_s": tok_s,
            "tokenize_tokens_per_s": tokens / tok_s,
            "ratio_fit_vs_tokenize": (tokens / fit_s) / (tokens / tok_s),
            "breakdown_s": {
                "count (tokenize + histogram)": t1 - t0,
                "gram": t2 - t1,
                "solve": t3 - t2,
                "table (logits + entropy)": t4 - t3,
            },
            "distinct_tokens": int(sum(c.token_ids.size for c in counts.values())),
            "route_table_bytes": int(r.state.table.logits.nbytes),
        }

    out["fit"] = fit_profile(data["train"])

    # add_expert of a 1000-text expert at h = 576 (time excluding tokenization = add_expert_counts)
    new_texts = data["add_expert_texts"]
    r = Router(emb, config=RouterConfig.paper(), device="cpu", progress=False).fit(data["train"])
    t0 = time.perf_counter()
    counts = count_expert(emb, new_texts, name="new", level=r.config.level)
    count_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    r.add_expert("new", counts)
    add_counts_s = time.perf_counter() - t0
    r.remove_expert("new")
    t0 = time.perf_counter()
    r.add_expert("new", new_texts)
    add_total_s = time.perf_counter() - t0
    tok_only_s = _best_time(lambda: encode(new_texts, add_special_tokens=False), 2)
    out["add_expert"] = {
        "texts": len(new_texts),
        "tokens": int(counts.num_tokens),
        "hidden_size": int(emb.hidden_size),
        "excluding_tokenization_s": add_counts_s,
        "tokenize_and_count_s": count_s,
        "tokenize_only_s": tok_only_s,
        "total_s": add_total_s,
    }

    # scaling: fit at 3 corpus sizes (5 languages of fortunes, n per language)
    by_lang = data["scaling_texts"]
    sizes = data["scaling_sizes"]
    points = []
    for n in sizes:
        train = {lang: texts[:n] for lang, texts in by_lang.items()}
        p = fit_profile(train)
        p["texts_per_expert"] = n
        points.append(p)
    out["scaling"] = points
    return out


def _defaults_extras(data: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Fitting the library defaults against batch tokenization, on reasoning4 and on the largest
    scaling corpus (≥ 2M tokens in the full run), and the fixed per-fit cost (solve + table)."""
    from ir3de import Router, TokenEmbeddings
    from ir3de.fitting.pipeline import count_expert

    emb = TokenEmbeddings.default()
    tok = emb.tokenizer
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    repeats = 1 if quick else 2

    def profile(train: dict[str, list[str]]) -> dict[str, Any]:
        texts = [t for v in train.values() for t in v]
        tokens = sum(len(e) for e in encode(texts, add_special_tokens=False))
        tok_s = _best_time(lambda: encode(texts, add_special_tokens=False), repeats)
        r = Router(emb, device="cpu", progress=False)
        fit_s = _best_time(lambda: r.fit(train), repeats)
        t0 = time.perf_counter()
        for n, v in train.items():
            count_expert(emb, v, name=n, level=r.config.level)
        count_s = time.perf_counter() - t0
        return {
            "texts": len(texts),
            "tokens": tokens,
            "fit_s": fit_s,
            "count_s": count_s,
            "tokenize_batch_s": tok_s,
            "fit_tokens_per_s": tokens / fit_s,
            "tokenize_tokens_per_s": tokens / tok_s,
            "ratio_fit_vs_tokenize": tok_s / fit_s,
        }

    tiny = {f"e{i}": [f"text {i}"] for i in range(len(data["scaling_texts"]))}
    fixed = Router(emb, device="cpu", progress=False)
    fixed_s = _best_time(lambda: fixed.fit(tiny), 3)
    big = {lang: texts[: data["scaling_sizes"][-1]] for lang, texts in data["scaling_texts"].items()}
    return {
        "defaults_fit": profile(data["train"]),
        "defaults_fit_large": profile(big),
        "defaults_fixed_fit_s": fixed_s,
    }


def _fit_memory(data: dict[str, Any], size: int, experts: int) -> dict[str, Any]:
    """Peak memory of fitting the defaults (this process's VmHWM over its RSS before fitting), on
    ``size`` texts per language; with ``experts`` > languages, each language is cut into equal parts."""
    import gc

    from ir3de import Router, TokenEmbeddings

    emb = TokenEmbeddings.default()
    langs = data["scaling_texts"]
    parts = max(1, experts // len(langs))
    train = {f"{lang}-{i}": texts[:size][i::parts] for lang, texts in langs.items() for i in range(parts)}
    tokens = sum(
        len(e)
        for e in emb.tokenizer.encode_batch_fast(
            [t for v in train.values() for t in v], add_special_tokens=False
        )
    )
    gc.collect()
    base = _memory_mb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    router = Router(emb, device="cpu", progress=False).fit(train)
    fit_s = time.perf_counter() - t0
    peak = _memory_mb("VmHWM")
    text_gram_mb = sum(s.counts.text_gram.nbytes for s in router.statistics.values()) / 1e6
    return {
        "experts": len(train),
        "texts": sum(len(v) for v in train.values()),
        "tokens": tokens,
        "fit_s": fit_s,
        "rss_before_fit_mb": base,
        "peak_rss_mb": peak,
        "fit_peak_over_before_mb": peak - base,
        "statistics_mb": text_gram_mb,
        "table_mb": (
            router.state.table.logits.nbytes
            + router.state.table.log_probs.nbytes
            + router.state.table.summed_rows.nbytes
        )
        / 1e6,
    }


def _reset_peak() -> None:
    """Reset this process's VmHWM (Linux ≥ 4.0: writing 5 to clear_refs), so the peak is the fit's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", required=True)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--extras", action="store_true", help="IR3DE only: fit throughput, add_expert, scaling")
    ap.add_argument("--size", type=int, default=0, help="fit-memory: texts per language")
    ap.add_argument("--experts", type=int, default=5, help="fit-memory: number of experts")
    args = ap.parse_args(argv)

    if args.kind == "fit-memory":
        import torch

        torch.set_num_threads(args.threads)
        data = json.loads(Path(args.data).read_text())
        Path(args.out).write_text(json.dumps(_fit_memory(data, args.size, args.experts)))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    import tokenizers  # the baseline RSS includes the libraries every router imports

    data = json.loads(Path(args.data).read_text())
    test: list[str] = data["test"]
    latency_prompts: list[str] = data["latency_prompts"]
    if args.kind.startswith("knn"):  # ~100 × slower per prompt: a third of the sample keeps the run short
        latency_prompts = latency_prompts[: max(10, len(latency_prompts) // 3)]
    batch_prompts: list[str] = data["batch_prompts_slow"] if args.kind.startswith("knn") else test
    rounds = 1 if args.kind.startswith("knn") or args.quick else 3
    if args.kind not in (
        "ir3de",
        "ir3de-defaults",
        "paper-torch",
    ):  # the tokenizer of the ratio, outside the router's memory
        from ir3de.artifacts.format import TOKENIZER_FILE

        tokenizer = tokenizers.Tokenizer.from_file(str(Path(data["ir3de_artifact"]) / TOKENIZER_FILE))
    base_rss = _memory_mb("VmRSS")

    t0 = time.perf_counter()
    if args.kind in ("ir3de", "ir3de-defaults", "paper-torch"):
        from ir3de import Router

        router = Router.from_pretrained(args.artifact, device="cpu")
        tokenizer = router.state.tokenizer
        if args.kind in ("ir3de", "ir3de-defaults"):
            route_one = router.route
            from ir3de.routing.prompts import route_indices

            route_batch = functools.partial(route_indices, router.state, router.config)
            extra_batch = {"route_batch_decisions": router.route_batch}
        else:
            from ir3de import TokenEmbeddings

            from .baselines import PaperTorchRouter

            emb = TokenEmbeddings.default()
            paper = PaperTorchRouter(
                tokenizer,
                emb.matrix,
                router.state.weights,
                router.state.excluded_ids,
                router.experts,
                k=router.config.k,
            )
            del router
            route_one = paper.route_one
            route_batch = paper.predict
            extra_batch = {}
    else:
        from .baselines import load_router

        baseline = load_router(args.artifact)
        route_one = baseline.route_one
        route_batch = baseline.predict
        extra_batch = {}
    load_s = time.perf_counter() - t0

    def tokenize_one(p: str) -> Any:  # the router's own tokenizer path: encode, then the ids list
        return tokenizer.encode(p, add_special_tokens=False).ids

    encode_batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    result: dict[str, Any] = {"kind": args.kind, "threads": args.threads, "load_s": load_s}
    if args.threads == 1:
        r_ns, t_ns = _latency_pair(route_one, tokenize_one, latency_prompts, rounds)
        result["latency"] = _stats(r_ns)
        result["tokenize_latency"] = _stats(t_ns)
        if args.kind in ("ir3de", "ir3de-defaults") and data.get("long_prompts"):
            r_ns, t_ns = _latency_pair(route_one, tokenize_one, data["long_prompts"], rounds)
            result["latency_long"] = _stats(r_ns)
            result["tokenize_latency_long"] = _stats(t_ns)
    repeats = 1 if args.kind.startswith("knn") else 3
    route_batch(batch_prompts[:32])  # warm-up
    batch_s = _best_time(lambda: route_batch(batch_prompts), repeats)
    tok_s = _best_time(lambda: encode_batch(batch_prompts, add_special_tokens=False), 3)
    result["batch"] = {
        "prompts": len(batch_prompts),
        "seconds": batch_s,
        "prompts_per_s": len(batch_prompts) / batch_s,
        "tokenize_seconds": tok_s,
        "tokenize_prompts_per_s": len(batch_prompts) / tok_s,
    }
    for name, fn in extra_batch.items():
        s = _best_time(lambda fn=fn: fn(batch_prompts), repeats)
        result[name] = {"prompts": len(batch_prompts), "seconds": s, "prompts_per_s": len(batch_prompts) / s}
    result["peak_rss_mb"] = _memory_mb("VmHWM")
    result["baseline_rss_mb"] = base_rss
    if args.extras and args.kind == "ir3de-defaults":
        result.update(_defaults_extras(data, args.quick))
    elif args.extras:
        result.update(_ir3de_extras(data, args.quick))
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
