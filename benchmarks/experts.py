"""Thousands of experts: fit time, peak memory, artifact size and routing cost by expert count.

Usage::

    python -m benchmarks.experts            # 5, 50, 500, 1000, 5000 experts over the same ~2M tokens
    python -m benchmarks.experts --quick    # 5 and 50 experts over 600 texts (what the tests run)
    python -m benchmarks.experts --plot-only  # redraw docs/img/experts.png from experts.json

The same texts (Debian fortunes in five languages, 6,000 per language: ~2.03M SmolLM2 tokens) are
dealt round-robin into N experts, so only the expert count changes. Each N runs in a fresh process
with one thread on one CPU (``OMP_NUM_THREADS=1``, ``RAYON_NUM_THREADS=1``, pinned with
``os.sched_setaffinity``, so the fit does not tokenize ahead on a second thread): a fit with the library defaults
(median of 3 runs), the first one's peak memory (``VmHWM`` over the RSS before the fit), the saved folder's size, single-prompt
routing latency (p50/p99 over held-out prompts, after a warm-up), batch routing throughput and
``add_expert`` of a 100-text expert on the N-expert router (median of 3 adds, each followed by its
``remove_expert``), and the saved size of the same router with ``keep_token_ids=False`` (the defaults
save experts with fewer than h + 1 rows as their token ids; without ids, as those rows). Then the same
fit with ``keep_token_ids=True`` (every expert whose ids are smaller than its Gram): its fit time,
saved size, and the first ``add_expert`` after loading it (which rebuilds every expert's statistics
from the ids), and one default fit with the process given two CPUs (it then
tokenizes the next batch on a second thread while it counts this one). Also: batch tokenization of the
corpus alone (median of 3, pinned too), so the fit is reported as a fraction of the tokenizer's pace. Writes
``benchmarks/results/experts.{json,md}`` and ``docs/img/experts.png``; the machine's load average is
recorded with the figures (timings on a shared machine are noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.reporting import machine, publish

ROOT = Path(__file__).resolve().parent.parent
COUNTS = (5, 50, 500, 1000, 5000)
QUICK_COUNTS = (5, 50)
TEXTS_PER_LANGUAGE = 6000
QUICK_TEXTS_PER_LANGUAGE = 120
LATENCY_PROMPTS = 400
BATCH_PROMPTS = 2000
#: Fits (and corpus tokenizations) per count: the table reports their median.
FIT_REPEATS = 3


def _memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024.0
    return float("nan")


def _corpus(per_language: int) -> tuple[list[str], list[str]]:
    """Training texts (all languages, interleaved) and held-out prompts (the texts after them)."""
    from ir3de.data.datasets import load_multilingual

    by_lang = load_multilingual()
    train = [t for texts in zip(*(v[:per_language] for v in by_lang.values())) for t in texts]
    held = [t for v in by_lang.values() for t in v[per_language : per_language + LATENCY_PROMPTS // 5]]
    return train, held


def _deal(texts: list[str], experts: int) -> dict[str, list[str]]:
    return {f"e{i:05d}": texts[i::experts] for i in range(experts)}


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def measure(experts: int, per_language: int, repeats: int, baseline: str = "") -> dict[str, Any]:
    """One expert count, in this process (run by :func:`main` in a fresh subprocess per count). With
    ``baseline``, a folder: the first count saves its router there, and every later count loads it and
    times its routes interleaved with its own (prompt by prompt, alternating which goes first), so the
    latency ratio compares the two under the same machine load."""
    import gc

    from ir3de import Router, TokenEmbeddings
    from ir3de.routing.prompts import route_indices

    all_cpus = _pin_to_one_cpu()
    emb = TokenEmbeddings.default()
    train, held = _corpus(per_language)
    groups = _deal(train, experts)
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak is the fit's
    before = _memory_mb("VmRSS")
    t0 = time.perf_counter()
    router = Router(emb, device="cpu", progress=False).fit(groups)
    fits = [time.perf_counter() - t0]
    peak = _memory_mb("VmHWM") - before
    for _ in range(FIT_REPEATS - 1):  # the same fit again: the median is less at the mercy of the load
        t0 = time.perf_counter()
        Router(emb, device="cpu", progress=False).fit(groups)
        fits.append(time.perf_counter() - t0)
    fit_s = float(np.median(fits))
    stats = [e.counts for e in router.statistics.values()]
    forms = {f: sum(1 for c in stats if c.text_form == f) for f in ("rows", "gram")}
    stats_mb = (
        sum(
            (c.text_rows.nbytes if c.text_rows is not None else 0)
            + (c.stored_gram.nbytes if c.stored_gram is not None else 0)
            for c in stats
        )
        / 1e6
    )
    with tempfile.TemporaryDirectory(prefix="ir3de-experts-") as tmp:
        folder = router.save_pretrained(Path(tmp) / "router")
        size_mb = _folder_mb(folder)
        files_mb = {p.name: p.stat().st_size / 1e6 for p in folder.iterdir() if p.is_file()}
    base = None
    if baseline and Path(baseline, "config.json").exists():
        base = Router.from_pretrained(baseline, embeddings=emb, device="cpu")
    elif baseline:
        router.save_pretrained(baseline)  # the first count: the baseline of the later ones
    prompts = (held * (LATENCY_PROMPTS // max(1, len(held)) + 1))[:LATENCY_PROMPTS]
    for p in prompts[:50]:
        router.route(p)  # warm-up
        if base is not None:
            base.route(p)
    ns, base_ns = [], []
    for _ in range(repeats):
        for i, p in enumerate(prompts):
            first_base = base is not None and i % 2 == 1
            if first_base:
                assert base is not None
                t = time.perf_counter_ns()
                base.route(p)
                base_ns.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            router.route(p)
            ns.append(time.perf_counter_ns() - t)
            if base is not None and not first_base:
                t = time.perf_counter_ns()
                base.route(p)
                base_ns.append(time.perf_counter_ns() - t)
    del base
    lat = np.asarray(ns, np.float64) / 1e3
    base_p50 = float(np.percentile(base_ns, 50)) / 1e3 if base_ns else float(np.percentile(lat, 50))
    batch = (held * (BATCH_PROMPTS // max(1, len(held)) + 1))[:BATCH_PROMPTS]
    route_indices(router.state, router.config, batch[:100])
    t0 = time.perf_counter()
    route_indices(router.state, router.config, batch)
    batch_s = time.perf_counter() - t0
    extra = [f"{t} (added)" for t in train[:100]]
    adds = []
    for _ in range(3):  # add, then remove (which re-forms the sum of the N experts for the next add)
        t0 = time.perf_counter()
        router.add_expert("added", extra)
        adds.append(time.perf_counter() - t0)
        router.remove_expert("added")
    add_s = float(np.median(adds))
    table_form, table_mb = router.state.table.form, router.state.table.nbytes / 1e6
    with_ids = sum(1 for e in router.statistics.values() if e.counts.text_tokens is not None)
    router.configure(keep_token_ids=False)  # the same statistics without ids: small experts save rows
    with tempfile.TemporaryDirectory(prefix="ir3de-experts-") as tmp:
        rows_mb = _folder_mb(router.save_pretrained(Path(tmp) / "router"))
    del router
    gc.collect()
    t0 = time.perf_counter()
    kept = Router(emb, device="cpu", progress=False, keep_token_ids=True).fit(groups)
    kept_fit_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="ir3de-experts-") as tmp:
        folder = kept.save_pretrained(Path(tmp) / "router")
        kept_mb = _folder_mb(folder)
        kept_files_mb = {p.name: p.stat().st_size / 1e6 for p in folder.iterdir() if p.is_file()}
        del kept
        gc.collect()
        loaded = Router.from_pretrained(folder, embeddings=emb, device="cpu")
        t0 = time.perf_counter()
        loaded.add_expert("added", extra)  # the first change rebuilds the statistics from the ids
        kept_first_add_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded.add_expert("added-2", extra)
        kept_add_s = time.perf_counter() - t0
        del loaded
    fit_two_cpus_s = None
    if all_cpus is not None and len(all_cpus) > 1:  # the default fit where two CPUs are free to it
        os.sched_setaffinity(0, sorted(all_cpus)[:2])
        gc.collect()
        t0 = time.perf_counter()
        Router(emb, device="cpu", progress=False).fit(groups)  # tokenizes the next batch meanwhile
        fit_two_cpus_s = time.perf_counter() - t0
    return {
        "experts": experts,
        "texts": len(train),
        "table_form": table_form,
        "statistics_forms": forms,
        "statistics_mb": stats_mb,
        "table_mb": table_mb,
        "fit_s": fit_s,
        "fit_samples_s": fits,
        "fit_peak_mb": peak,
        "artifact_mb": size_mb,
        "artifact_files_mb": files_mb,
        "token_id_experts": with_ids,
        "rows_artifact_mb": rows_mb,
        "route_p50_us": float(np.percentile(lat, 50)),
        "baseline_route_p50_us": base_p50,  # the first count's router, timed interleaved with this one
        "route_p99_us": float(np.percentile(lat, 99)),
        "route_samples": int(lat.size),
        "batch_prompts_per_s": len(batch) / batch_s,
        "add_expert_s": add_s,
        "add_expert_samples_s": adds,
        "kept_fit_s": kept_fit_s,
        "kept_artifact_mb": kept_mb,
        "kept_artifact_files_mb": kept_files_mb,
        "kept_first_add_s": kept_first_add_s,
        "kept_add_s": kept_add_s,
        "fit_two_cpus_s": fit_two_cpus_s,
    }


def _pin_to_one_cpu() -> set[int] | None:
    """Pin this process to one CPU (the one-thread figures: the fit then does not tokenize ahead on a
    second thread either); the CPUs it could use before, or ``None`` where the OS has no affinity."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = set(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {min(cpus)})
    return cpus


def _tokenize_rate(per_language: int) -> dict[str, float]:
    from ir3de import TokenEmbeddings

    _pin_to_one_cpu()
    tok = TokenEmbeddings.default().tokenizer
    train, _ = _corpus(per_language)
    tok.encode_batch_fast(train[:200], add_special_tokens=False)
    times, tokens = [], 0
    for _ in range(FIT_REPEATS):
        t0 = time.perf_counter()
        encodings = tok.encode_batch_fast(train, add_special_tokens=False)
        times.append(time.perf_counter() - t0)
        tokens = sum(len(e) for e in encodings)
        del encodings  # freeing 30,000 encodings inside the next timed call would slow it by ~30%
    seconds = float(np.median(times))
    return {
        "tokens": tokens,
        "tokenize_s": seconds,
        "tokenize_samples_s": times,
        "tokens_per_s": tokens / seconds,
    }


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        RAYON_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
    )
    paths = [str(ROOT / "core"), str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _run_child(args: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "benchmarks.experts", *args, "--out-json", out.name]
        subprocess.run(cmd, check=True, env=_child_env(), cwd=ROOT)
        result: dict[str, Any] = json.loads(Path(out.name).read_text())
        return result


def _route_ratio(run: dict[str, Any]) -> float:
    """A count's route p50 over the first count's, both timed interleaved in the same process."""
    return float(run["route_p50_us"] / run.get("baseline_route_p50_us", run["route_p50_us"]))


def markdown(res: dict[str, Any]) -> str:
    base = res["runs"][0]
    lines = [
        "| experts | table | statistics (rows/Gram) | experts saved as token ids | fit s | × 5 | fit peak MB "
        "| artifact MB | artifact MB, no ids | route p50 µs "
        "| × 5 | route p99 µs | batch prompts/s | add_expert s | × 5 | artifact MB, `True` "
        "| first add_expert s after loading, `True` |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        forms = r["statistics_forms"]
        lines.append(
            f"| {r['experts']:,} | {r['table_form']} | {forms['rows']}/{forms['gram']} | "
            f"{r.get('token_id_experts', 0):,} | {r['fit_s']:.1f} | "
            f"{r['fit_s'] / base['fit_s']:.2f} | {r['fit_peak_mb']:.0f} | {r['artifact_mb']:.0f} | "
            f"{r.get('rows_artifact_mb', float('nan')):.0f} | "
            f"{r['route_p50_us']:.0f} | {_route_ratio(r):.2f} | "
            f"{r['route_p99_us']:.0f} | {r['batch_prompts_per_s']:.0f} | {r['add_expert_s']:.2f} | "
            f"{r['add_expert_s'] / base['add_expert_s']:.2f} | {r['kept_artifact_mb']:.0f} | "
            f"{r['kept_first_add_s']:.2f} |"
        )
    tok = res["tokenize"]
    fit5 = base["fit_s"]
    lines += [
        "",
        f"{base['texts']:,} texts, {tok['tokens']:,} tokens; batch tokenization {tok['tokenize_s']:.2f} s "
        f"({tok['tokens_per_s'] / 1e6:.2f} M tokens/s); the 5-expert fit runs at "
        f"{tok['tokenize_s'] / fit5:.2f} × the tokenizer's pace. One thread on one CPU (pinned); fit and tokenization: median of 3; latency over "
        f"{base['route_samples']} routes; a route's × 5 is its p50 over the 5-expert router's, loaded into "
        "the same process and timed prompt by prompt interleaved with it (the same machine load for "
        "both); add_expert: median of 3 (each removed again). The defaults "
        '(`keep_token_ids="auto"`) save the experts with fewer than h + 1 rows as their token ids; "no ids": '
        "the same router with `keep_token_ids=False` (those experts' window rows instead); `True`: the same "
        "fit with `keep_token_ids=True` (every expert whose ids are smaller than its Gram); the first "
        "add_expert after loading it rebuilds every expert's statistics. "
        + (
            f"With two CPUs (still one BLAS and one tokenizer thread) the default fit tokenizes the next batch "
            f"while it counts this one: {base['fit_two_cpus_s']:.1f} s for the 5 experts "
            f"({tok['tokenize_s'] / base['fit_two_cpus_s']:.2f} × the one-thread tokenizer's pace). "
            if base.get("fit_two_cpus_s")
            else ""
        )
        + f"Load average {res['machine']['load_avg']} on "
        f"{res['machine']['cpus']} CPUs (shared machine: timings are noisy).",
    ]
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = res["runs"]
    x = [r["experts"] for r in runs]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [
        ("fit time (s)", [r["fit_s"] for r in runs]),
        ("fit peak memory (MB)", [r["fit_peak_mb"] for r in runs]),
        ("saved router (MB)", [r["artifact_mb"] for r in runs]),
        ("route p50 / p99 (µs)", [r["route_p50_us"] for r in runs]),
    ]
    for ax, (title, values) in zip(axes, panels):
        latency, saved = title.startswith("route"), title.startswith("saved")
        ax.plot(x, values, marker="o", label="p50" if latency else "statistics" if saved else None)
        if saved and all("kept_artifact_mb" in r for r in runs):
            ax.plot(x, [r["kept_artifact_mb"] for r in runs], marker="s", label="token ids")
            ax.set_yscale("log")
            ax.legend()
        if latency:
            ax.plot(x, [r["route_p99_us"] for r in runs], marker="s", label="p99")
            ax.set_yscale("log")  # p99 on a loaded machine is 2 orders of magnitude above p50
            ax.legend()
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("experts")
        ax.grid(alpha=0.3)
    fig.suptitle("IR3DE defaults, same ~2M tokens dealt into N experts (1 thread)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 and 50 experts over 600 texts")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "experts.png"), help="figure path")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from <out>/experts.json")
    ap.add_argument("--experts", type=int, default=0, help=argparse.SUPPRESS)  # child: one count
    ap.add_argument("--tokenize", action="store_true", help=argparse.SUPPRESS)  # child: tokenizer pace
    ap.add_argument("--out-json", default="", help=argparse.SUPPRESS)
    ap.add_argument("--baseline", default="", help=argparse.SUPPRESS)  # child: the first count's router
    args = ap.parse_args(argv)
    per_language = QUICK_TEXTS_PER_LANGUAGE if args.quick else TEXTS_PER_LANGUAGE
    if args.plot_only:
        plot(json.loads((Path(args.out) / "experts.json").read_text()), Path(args.plot))
        return 0
    if args.experts or args.tokenize:
        if args.tokenize:
            result = _tokenize_rate(per_language)
        else:  # fewer latency repeats for the largest counts keep the run under ~10 minutes
            repeats = 1 if args.experts >= 1000 else 2
            result = measure(args.experts, per_language, repeats, baseline=args.baseline)
        Path(args.out_json).write_text(json.dumps(result))
        return 0
    flag = ["--quick"] if args.quick else []
    res: dict[str, Any] = {"tokenize": _run_child([*flag, "--tokenize"]), "runs": []}
    with tempfile.TemporaryDirectory(prefix="ir3de-experts-baseline-") as tmp:
        baseline = str(Path(tmp) / "router")  # the first count saves its router here for the others
        for n in QUICK_COUNTS if args.quick else COUNTS:
            print(f"benchmarks.experts: {n} experts …", flush=True)
            res["runs"].append(_run_child([*flag, "--experts", str(n), "--baseline", baseline]))
    res["machine"] = machine(threads=1)
    publish(res, markdown(res), Path(args.out), "experts")
    plot(res, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
