"""What learning from traffic costs: ``router.learn`` of 100 labelled prompts and ``forget_traffic``.

Usage::

    python -m benchmarks.learn_cost                  # writes benchmarks/results/learn_cost.{json,md}
    python -m benchmarks.learn_cost --repeats 3 --out /tmp/lc

A router is fitted on the full reasoning4 training side (CPU, library defaults, and the paper
preset at token level), then, ``--repeats`` times: learn 100 held-out prompts (25 per expert) with
their labels, and forget them. Each preset runs in a fresh subprocess with 1 and with 2 BLAS threads
(``OMP/OPENBLAS/MKL_NUM_THREADS`` set before import): on a loaded machine, multithreaded BLAS makes
the small (h+1)² Cholesky many times slower, so both are shown. Each is timed end to end (wall and CPU seconds; the median is
reported) and split into its steps, each timed on its own: counting the prompts, the ridge
statistics, the (h+1)² solve, the table compile (V × h · h × D in float64) and the table's derived
columns (entropy, votes, log-probabilities). A full refit from the texts is timed in the same run as
the baseline the learning path avoids.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ir3de.fitting.pipeline import ridge_matrices

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _time(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_ms": 1000 * statistics.median(walls), "cpu_ms": 1000 * statistics.median(cpus)}


def measure(preset: str, repeats: int) -> dict[str, Any]:
    from ir3de import Router, RouterConfig, TokenEmbeddings
    from ir3de.data.datasets import load_suite
    from ir3de.fitting import pipeline as fitting
    from ir3de.fitting import traffic
    from ir3de.table import RouteTable

    emb = TokenEmbeddings.default()
    suite = load_suite("reasoning4", seed=0)
    config = RouterConfig.paper() if preset == "paper" else RouterConfig()
    router = Router(emb, config=config, device="cpu", progress=False)
    refit = _time(lambda: router.fit(suite.train), 1)
    prompts = [t for name in suite.test for t in suite.test[name][:25]]
    labels = [name for name in suite.test for _ in suite.test[name][:25]]

    def learn_and_forget() -> tuple[float, float, float, float]:
        w, c = time.perf_counter(), time.process_time()
        router.learn(prompts, labels)
        learn = (time.perf_counter() - w, time.process_time() - c)
        w, c = time.perf_counter(), time.process_time()
        router.forget_traffic()
        return (*learn, time.perf_counter() - w, time.process_time() - c)

    learn_and_forget()  # warm-up: token Grams, caches
    runs = [learn_and_forget() for _ in range(repeats)]
    med = [1000 * statistics.median(r[i] for r in runs) for i in range(4)]
    # the steps, each on its own
    router.learn(prompts, labels)
    names = tuple(router.experts)
    groups = {n: [p for p, e in zip(prompts, labels) if e == n] for n in names}
    steps = {
        "count_prompts": _time(
            lambda: [traffic.count_prompts(groups[n], router.embeddings, name=n) for n in names], repeats
        )
    }
    steps["statistics"] = _time(
        lambda: ridge_matrices(router.statistics, router.config, matrix=router.embeddings.matrix), repeats
    )
    a, b = ridge_matrices(router.statistics, router.config, matrix=router.embeddings.matrix)
    c = router.config
    steps["solve"] = _time(lambda: fitting.solve_weights(a, b, lam=c.lam, column_norm=c.column_norm), repeats)
    _, applied = fitting.solve_weights(a, b, lam=c.lam, column_norm=c.column_norm)
    steps["compile_table"] = _time(
        lambda: fitting.compile_table(emb.matrix, applied, router.state.excluded_ids), repeats
    )
    logits = router.state.table.logits
    steps["derived_columns"] = _time(
        lambda: RouteTable.from_logits(logits, router.state.excluded_ids), repeats
    )
    router.forget_traffic()
    return {
        "preset": preset,
        "level": c.level,
        "experts": len(names),
        "vocab_size": emb.vocab_size,
        "hidden_size": emb.hidden_size,
        "corpus_texts": sum(len(t) for t in suite.train.values()),
        "prompts_learned": len(prompts),
        "learn": {"wall_ms": med[0], "cpu_ms": med[1]},
        "forget_traffic": {"wall_ms": med[2], "cpu_ms": med[3]},
        "refit_from_texts": refit,
        "steps": steps,
    }


def _worker(preset: str, threads: int, repeats: int) -> dict[str, Any]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, "-m", "benchmarks.learn_cost", "--worker", preset, "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "threads": threads}


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Cost of learning from traffic",
        "",
        f"`python -m benchmarks.learn_cost --repeats {res['repeats']}` on {res['machine']} "
        f"(load average {res['load_avg']}); medians, milliseconds, CPU only.",
        "",
        "| router | BLAS threads | learn 100 prompts (wall / CPU) | forget_traffic (wall / CPU) | refit from texts (wall) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['preset']} ({r['level']} level, {r['experts']} experts, {r['corpus_texts']} corpus texts) "
            f"| {r['threads']} | {r['learn']['wall_ms']:.0f} / {r['learn']['cpu_ms']:.0f} "
            f"| {r['forget_traffic']['wall_ms']:.0f} / {r['forget_traffic']['cpu_ms']:.0f} "
            f"| {r['refit_from_texts']['wall_ms']:.0f} |"
        )
    lines += [
        "",
        "Steps (each timed on its own, wall / CPU ms):",
        "",
        "| router | BLAS threads | " + " | ".join(res["runs"][0]["steps"]) + " |",
    ]
    lines.append("|---|---:|" + "---:|" * len(res["runs"][0]["steps"]))
    for r in res["runs"]:
        cells = [f"{s['wall_ms']:.1f} / {s['cpu_ms']:.1f}" for s in r["steps"].values()]
        lines.append(f"| {r['preset']} | {r['threads']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "CPU time is the figure to read on a shared machine (wall time includes waiting for a core). "
        "Learning = counting the prompts (tokenize + their text Gram: one (h+1)² outer product per "
        "prompt and per 8-token window) + statistics + solve + compile + derived columns; forgetting "
        "= the last four. No corpus text is re-read.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--worker", choices=["default", "paper"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.repeats)))
        return 0
    res = {
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg": [round(x, 1) for x in os.getloadavg()],
        "runs": [_worker(p, t, args.repeats) for p in ("default", "paper") for t in (1, 2)],
    }
    res["load_avg_after"] = [round(x, 1) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learn_cost.json").write_text(json.dumps(res, indent=2) + "\n")
    text = markdown(res)
    (out / "learn_cost.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
