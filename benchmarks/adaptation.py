"""Adapting to unlabelled served prompts: held-out accuracy before and after, on every check in the repository.

Run: ``python -m benchmarks.adaptation [--out benchmarks/results] [--plot docs/img/adaptation.png]``

Checks: every cross-source check of :data:`ir3de.data.datasets.CROSS_SOURCE` (test prompts from
another source, language or length than the corpora) and every same-source suite of
:data:`ir3de.data.datasets.SUITES` (test prompts from the corpora's own source). For each, the library
defaults are fitted once on the train side. For each seed the test side is split exactly as
``benchmarks.learning`` splits it (:func:`benchmarks.learning.split_test`): per expert, the first
``min(100, half)`` prompts of a seeded shuffle are the *served pool*, the rest the *held-out remainder*
(never adapted to, always scored). With ``n`` ∈ {0, 10, 30, 100} the first ``n`` pool prompts of every
expert are served, **without their labels**, and the router adapts to them. With ``n = "all"``
(:data:`ALL`) the whole test side is served — the pools and the held-out remainder itself, at the
test side's own, uneven mix of experts (up to 900 prompts of one expert next to 41 of another) — and the
remainder is scored: adapting to the very traffic it routes, as a gateway does (labelled learning is
not run there: it would learn the scored prompts' labels):

* **every candidate setting** of :func:`candidates` (soft or hard pseudo-labels, a confidence floor,
  pulling the pseudo-label shares toward the corpus prior, rounds, a weight relative to the corpus, two
  weight policies) is measured on every check by the library's own math
  (:func:`ir3de.fitting.adaptation.adapted_weights`, routed by mean features — the ``avg`` selector's
  route), and the defaults are chosen by :func:`choose`: the best mean gain on the cross-source checks
  among the settings that never lose more than 0.3 points on any check (seed means, any ``n``);
* the chosen defaults are measured again through the public API (``Router.adapt`` /
  ``Router.forget_adaptation``, compared route by route with the sweep, and forgetting compared bit for
  bit with the router before);
* **labelled learning** with the same prompts and their true labels (``Router.learn``, the default
  traffic weight) and **MiniLM kNN** (all-MiniLM-L6-v2, k = 5, the train side as index; it has no use
  for unlabelled prompts) on the same held-out remainders. kNN figures are taken from
  ``learning.json`` (same splits, checked by the remainder sizes) where that run covers the check, and
  computed otherwise (``--knn compute`` recomputes all).

Also the cost of ``Router.adapt`` on 1,000 prompts and of ``forget_adaptation``, and a plot of accuracy
against served prompts. Writes ``adaptation.json``, ``adaptation.md`` and the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One BLAS thread: on a shared, loaded machine OpenBLAS threads spinning for cores make a 577 × 577
# Cholesky take seconds instead of milliseconds (measured: 5 s vs 0.05 s at load 20 on 2 cores).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

#: served prompts per expert; :data:`ALL`: the whole test side (pools + the scored remainder)
ALL = -1
SIZES = (0, 10, 30, 100, ALL)
SEEDS = (0, 1, 2)
#: the Done-when targets of issue 24
GAIN_TARGET = 0.04
KNN_RATIO_TARGET = 1.03
MAX_LOSS = 0.003
KNN_K = 5


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def checks() -> dict[str, str]:
    """Check name → kind (``"cross-source"`` or ``"same-source"``)."""
    from ir3de.data.datasets import CROSS_SOURCE, SUITES

    return {**dict.fromkeys(CROSS_SOURCE, "cross-source"), **dict.fromkeys(SUITES, "same-source")}


def load_check(name: str) -> Any:
    from ir3de.data.datasets import CROSS_SOURCE, load_cross_source, load_suite

    return load_cross_source(name) if name in CROSS_SOURCE else load_suite(name)


def size_label(n: int) -> str:
    """``"all"`` for :data:`ALL`, else the number."""
    return "all" if n == ALL else str(n)


def candidates() -> dict[str, Any]:
    """Every setting measured (name → :class:`~ir3de.fitting.adaptation.AdaptationSettings`).

    The first grid (no suffix ``-sf…``) has neither a share floor nor confidence weighting (the
    settings measured before those options existed); the ``-sf{share_floor}-conf{confidence}`` grid
    adds them."""
    from functools import partial

    from ir3de.fitting.adaptation import AdaptationSettings as Settings

    # rounds=2 unless named otherwise (the names say r2; the library default is 3)
    AdaptationSettings = partial(Settings, rounds=2, share_floor=0.0, confidence=0.0)
    out: dict[str, Any] = {}
    for weight in (0.25, 0.5, 1.0):
        for rounds in (1, 2, 3):
            for soft in (True, False):
                name = f"share{weight:g}-r{rounds}-{'soft' if soft else 'hard'}"
                out[name] = AdaptationSettings(weight=weight, policy="share", rounds=rounds, soft=soft)
    for weight in (0.5, 1.0):
        for soft in (True, False):
            name = f"global{weight:g}-r2-{'soft' if soft else 'hard'}"
            out[name] = AdaptationSettings(weight=weight, policy="global", rounds=2, soft=soft)
    for weight in (0.5, 1.0):
        for floor in (0.8, 0.95):
            out[f"share{weight:g}-r2-soft-floor{floor:g}"] = AdaptationSettings(weight=weight, floor=floor)
    for prior in (0.5, 1.0):
        out[f"share0.5-r2-soft-prior{prior:g}"] = AdaptationSettings(weight=0.5, prior=prior)
    out["global1-r2-soft-prior1"] = AdaptationSettings(policy="global", prior=1.0)
    for weight in (0.5, 1.0):
        for gate in (0.02, 0.05, 0.1):
            out[f"share{weight:g}-r2-soft-gate{gate:g}"] = AdaptationSettings(weight=weight, gate=gate)
    grid = [(0.5, 3, True, sf, conf) for sf in (0.5, 0.75, 1.0) for conf in (0.0, 1.0, 2.0)]
    grid += [(1.0, 3, True, 0.5, 2.0), (1.0, 3, True, 1.0, 2.0), (0.5, 2, True, 0.5, 2.0)]
    grid += [(1.0, 2, False, 0.5, 0.0)]
    for weight, rounds, soft, sf, conf in grid:
        name = f"share{weight:g}-r{rounds}-{'soft' if soft else 'hard'}-sf{sf:g}-conf{conf:g}"
        out[name] = Settings(weight=weight, rounds=rounds, soft=soft, share_floor=sf, confidence=conf)
    return out


# ---------------------------------------------------------------------------------------------- one check


def _routes(router: Any, prompts: Sequence[str]) -> np.ndarray:
    """Expert index per prompt through the router's compiled table (``-1``: no countable token)."""
    from ir3de.routing.prompts import route_indices

    return route_indices(router.state, router.config, prompts)


def _encode(router: Any, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    from ir3de.routing.prompts import encode_prompts

    return encode_prompts(router.state.tokenizer, list(prompts), router.config.max_tokens)


def _route_rows(rows: Any, used: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Expert per prompt from its adaptation row (``-1`` without a countable token): the ``avg`` route."""
    out = np.full(used.size, -1, np.int64)
    x = np.concatenate([rows.means, np.ones((rows.num_prompts, 1))], axis=1)
    out[used] = np.argmax(x @ weights, axis=1)
    return out


def _served_rows(pool_rows: Mapping[str, tuple[Any, np.ndarray]], n: int) -> Any:
    """The rows of the first ``n`` pool prompts of every expert (prompts without a countable token add none)."""
    from ir3de.fitting.adaptation import AdaptationPrompts

    parts = []
    for rows, used in pool_rows.values():
        k = int(used[:n].sum())
        parts.append(AdaptationPrompts(rows.means[:k], rows.tokens[:k]))
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


class Check:
    """One check's router (the defaults, fitted on the train side) and its statistics for the sweep."""

    def __init__(self, name: str, emb: Any) -> None:
        from ir3de import Router
        from ir3de.fitting.pipeline import level_matrices

        self.name, self.suite = name, load_check(name)
        t0 = time.perf_counter()
        self.router = Router(emb, device="cpu", progress=False).fit(self.suite.train)
        self.fit_s = time.perf_counter() - t0
        c = self.router.config
        names = self.router.experts  # the corpus statistics the router was fitted on (no traffic)
        counts = [self.router.statistics[n].counts for n in names]
        self.a0, self.b0 = level_matrices(counts, level=c.level, balance=c.balance, names=names)
        self.options = {
            "lam": c.lam,
            "column_norm": c.column_norm,
            "temperature": c.effective_temperature,
            "evidence_tokens": c.effective_evidence_tokens,
        }

    def split(self, seed: int, sizes: Sequence[int]) -> tuple[dict, list[str], np.ndarray, Any, np.ndarray]:
        """The seed's served pools, held-out prompts and labels, and the held-out rows."""
        from benchmarks.learning import split_test
        from ir3de.fitting.adaptation import prompt_rows
        from ir3de.routing.calibration import labelled_prompts

        r = self.router
        pools, rest = split_test(self.suite.test, seed, max(sizes))
        prompts, labels = labelled_prompts(r.experts, rest)
        held, used = prompt_rows(r.embeddings.matrix, *_encode(r, prompts), r.state.excluded_ids)
        return pools, prompts, labels, held, used

    def pool_rows(self, pools: Mapping[str, Sequence[str]]) -> dict[str, tuple[Any, np.ndarray]]:
        from ir3de.fitting.adaptation import prompt_rows

        r = self.router
        return {
            e: prompt_rows(r.embeddings.matrix, *_encode(r, pools[e]), r.state.excluded_ids)
            for e in r.experts
        }


def run_check(
    check: Check, settings: Mapping[str, Any], sizes: Sequence[int], seeds: Sequence[int]
) -> dict[str, Any]:
    """Accuracy per seed and size of every setting (the library's math, mean-feature routes) and of
    labelled learning with the same prompts (``Router.learn``), on one check."""
    from ir3de.fitting.adaptation import adapted_weights

    router, experts = check.router, check.router.experts
    out: dict[str, Any] = {"description": check.suite.description, "fit_s": check.fit_s, "seeds": {}}
    for seed in seeds:
        pools, prompts, labels, held, held_used = check.split(seed, sizes)
        base = _routes(router, prompts)
        pool_rows = check.pool_rows(pools)
        acc: dict[str, list[float | None]] = {k: [] for k in [*settings, "labelled"]}
        for n in sizes:
            if n == 0:
                for k in acc:
                    acc[k].append(float(np.mean(base == labels)))
                continue
            rows = _served_rows(pool_rows, n) if n != ALL else _served_rows(pool_rows, max(sizes)) + held
            for key, s in settings.items():
                pred = _route_rows(
                    held, held_used, adapted_weights(check.a0, check.b0, rows, s, **check.options)
                )
                acc[key].append(float(np.mean(pred == labels)))
            if n == ALL:  # labelled learning would learn the scored prompts' own labels
                acc["labelled"].append(None)
                continue
            router.learn({e: pools[e][:n] for e in experts if pools[e][:n]})
            acc["labelled"].append(float(np.mean(_routes(router, prompts) == labels)))
            router.forget_traffic()
        out["seeds"][str(seed)] = {
            "remainder": {e: int(np.sum(labels == i)) for i, e in enumerate(experts)},
            "served_per_expert": {e: len(pools[e]) for e in experts},
            "accuracy": acc,
            "checks": {
                "fast_path_mismatches_at_0": int(
                    (_route_rows(held, held_used, router.state.weights) != base).sum()
                )
            },
        }
        best = max(settings, key=lambda k: acc[k][-1])
        _log(
            f"  {check.name} seed {seed}: before {acc['labelled'][0]:.3f}, best at n={size_label(sizes[-1])} "
            f"{best} {acc[best][-1]:.3f}, labelled {' '.join('—' if a is None else f'{a:.3f}' for a in acc['labelled'])}"
        )
    _means(out, sizes)
    return out


def api_pass(check: Check, out: dict[str, Any], setting: Any, sizes: Sequence[int]) -> None:
    """The chosen setting through the public API (``Router.adapt`` / ``forget_adaptation``), on the same
    splits: accuracy as ``api:chosen``, routes compared with the sweep's and, after forgetting, with
    the router before adapting (bit-for-bit weights)."""
    from ir3de.fitting.adaptation import adapted_weights

    router, experts = check.router, check.router.experts
    weights_before = router.state.weights.copy()
    for seed, run in out["seeds"].items():
        pools, prompts, labels, held, held_used = check.split(int(seed), sizes)
        pool_rows = check.pool_rows(pools)
        acc = [run["accuracy"]["labelled"][0]]
        for n in sizes[1:]:
            served = [t for e in experts for t in pools[e][: n if n != ALL else len(pools[e])]]
            router.adapt(served + (list(prompts) if n == ALL else []), **setting.to_dict())
            api = _routes(router, prompts)
            acc.append(float(np.mean(api == labels)))
            rows = _served_rows(pool_rows, n) if n != ALL else _served_rows(pool_rows, max(sizes)) + held
            sweep = _route_rows(
                held, held_used, adapted_weights(check.a0, check.b0, rows, setting, **check.options)
            )
            run["checks"][f"api_vs_sweep_mismatches_n{size_label(n)}"] = int((api != sweep).sum())
            router.forget_adaptation()
            run["checks"][f"forget_not_bit_identical_n{size_label(n)}"] = int(
                not np.array_equal(router.state.weights, weights_before)
            )
        run["accuracy"]["api:chosen"] = acc
        _log(f"  {check.name} seed {seed}: Router.adapt {' '.join(f'{a:.3f}' for a in acc)} {run['checks']}")
    _means(out, sizes)


def _means(out: dict[str, Any], sizes: Sequence[int]) -> None:
    keys = list(dict.fromkeys(k for s in out["seeds"].values() for k in s["accuracy"]))

    def mean(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else float(np.mean(values))

    out["mean"] = {
        k: [mean([s["accuracy"][k][i] for s in out["seeds"].values()]) for i in range(len(sizes))]
        for k in keys
    }


# ---------------------------------------------------------------------------------------------- kNN


def knn_from_learning(path: Path, name: str, result: Mapping[str, Any]) -> dict[str, Any] | None:
    """MiniLM kNN (k = 5, no served prompts) per seed from ``learning.json`` when its remainders are
    this run's (same split function, same sizes); else ``None``."""
    if not path.is_file():
        return None
    ref = json.loads(path.read_text()).get("checks", {}).get(name)
    if ref is None:
        return None
    per_seed = {}
    for seed, run in result["seeds"].items():
        theirs = ref["seeds"].get(seed)
        if theirs is None or theirs.get("remainder") != run["remainder"]:
            return None
        per_seed[seed] = float(theirs["accuracy"][f"knn-k{KNN_K}"][0])
    return {"source": str(path), "per_seed": per_seed, "mean": float(np.mean(list(per_seed.values())))}


def knn_compute(name: str, result: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """MiniLM kNN (k = 5, the train side as index) on this run's held-out remainders."""
    from benchmarks.baselines import KnnRouter, MiniLMEncoder
    from benchmarks.learning import split_test
    from ir3de.routing.calibration import labelled_prompts

    suite = load_check(name)
    experts = list(suite.train)
    knn = KnnRouter(MiniLMEncoder(), "mean", KNN_K).fit(suite.train)
    per_seed = {}
    for seed in seeds:
        _, rest = split_test(suite.test, seed, max(SIZES))
        prompts, labels = labelled_prompts(experts, rest)
        per_seed[str(seed)] = float(np.mean(knn.predict(prompts) == labels))
    return {"source": "computed", "per_seed": per_seed, "mean": float(np.mean(list(per_seed.values())))}


# ---------------------------------------------------------------------------------------------- choice


def choose(results: Mapping[str, Any], kinds: Mapping[str, str], settings: Sequence[str]) -> dict[str, Any]:
    """The defaults: the best mean gain over the cross-source checks and every ``n`` > 0 (seed means),
    among the settings that never lose more than :data:`MAX_LOSS` on any check at any ``n``."""
    scores = {}
    for key in settings:
        gains = {c: [v - r["mean"][key][0] for v in r["mean"][key][1:]] for c, r in results.items()}
        cross = [g for c, gs in gains.items() if kinds[c] == "cross-source" for g in gs]
        worst = min(g for gs in gains.values() for g in gs)
        scores[key] = {
            "mean_gain_cross_source": float(np.mean(cross)) if cross else 0.0,
            "worst_change": float(worst),
            "eligible": bool(worst >= -MAX_LOSS - 1e-12),
        }
    eligible = [k for k, v in scores.items() if v["eligible"]] or list(scores)
    best = max(eligible, key=lambda k: scores[k]["mean_gain_cross_source"])
    return {
        "chosen": best,
        "rule": f"best mean gain over the cross-source checks × n in {[size_label(n) for n in SIZES[1:]]} "
        "(seed means) among "
        f"the settings that never lose more than {100 * MAX_LOSS:g} pt on any check at any n",
        "scores": scores,
    }


# ---------------------------------------------------------------------------------------------- cost


def measure_cost(emb: Any, setting: Any, repeats: int = 3) -> dict[str, Any]:
    """Seconds for ``Router.adapt`` on 1,000 served prompts (reasoning4 test side) and for
    ``forget_adaptation``, on the reasoning4 router with the defaults (medians of ``repeats``)."""
    from ir3de import Router
    from ir3de.data.datasets import load_suite

    suite = load_suite("reasoning4")
    router = Router(emb, device="cpu", progress=False).fit(suite.train)
    prompts = [t for texts in suite.test.values() for t in texts]
    prompts = [prompts[i] for i in np.random.default_rng(0).permutation(len(prompts))[:1000]]
    adapt, forget, adapt_cpu = [], [], []
    load = list(os.getloadavg())
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        router.adapt(prompts, **setting.to_dict())
        adapt.append(time.perf_counter() - t0)
        adapt_cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        router.forget_adaptation()
        forget.append(time.perf_counter() - t0)
    return {
        "prompts": len(prompts),
        "adapt_s": float(np.median(adapt)),
        "adapt_cpu_s": float(np.median(adapt_cpu)),
        "forget_s": float(np.median(forget)),
        "repeats": repeats,
        "load_average_before": load,
    }


# ---------------------------------------------------------------------------------------------- outputs


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def targets(res: Mapping[str, Any]) -> list[str]:
    """The Done-when targets per check, at the most served prompts per expert that are not the scored
    ones (n = 100); the whole test side served (``all``) is quoted beside."""
    default = res["choice"]["chosen"]
    sizes = res["sizes"]
    at = max(n for n in sizes if n != ALL)
    i = sizes.index(at)
    lines = []
    for c, r in res["checks"].items():
        m = r["mean"]["api:chosen"]
        gain = m[i] - m[0]
        knn = r.get("knn")
        ratio = m[i] / knn["mean"] if knn else float("nan")
        also = f"; all served: {_pct(m[sizes.index(ALL)])}" if ALL in sizes else ""
        if res["kinds"][c] == "cross-source":
            lines.append(
                f"- {c} (cross-source): {_pct(m[0])} → {_pct(m[i])} at n={at}{also} ({100 * gain:+.1f} pt; target ≥ +4.0: "
                f"{'met' if gain >= GAIN_TARGET else 'NOT met'}); vs MiniLM kNN {_pct(knn['mean']) if knn else '—'}: "
                f"{ratio:.3f}× (target ≥ {KNN_RATIO_TARGET}: {'met' if ratio >= KNN_RATIO_TARGET else 'NOT met'})"
            )
        else:
            worst = min(v - r["mean"][default][0] for v in r["mean"][default][1:])
            lines.append(
                f"- {c} (same-source): worst change {100 * worst:+.2f} pt over n (target ≥ -0.3: "
                f"{'met' if worst >= -MAX_LOSS - 1e-12 else 'NOT met'})"
            )
    return lines


def write_markdown(res: Mapping[str, Any]) -> str:
    from ir3de.fitting.adaptation import AdaptationSettings

    library = AdaptationSettings().to_dict()
    sizes = res["sizes"]
    default = res["choice"]["chosen"]
    lines = [
        f"Run {res['started']}: {res['machine']['cpus']} CPU cores (load average {res['machine']['load_avg']}), "
        f"Python {res['machine']['python']}; seeds {res['seeds']}; total {res['total_s']:.0f} s.",
        "",
        f"### Held-out accuracy (%) vs unlabelled served prompts per expert ({', '.join(map(size_label, sizes))}), "
        "mean over seeds (all: the whole test side served, the remainder among it, at the test side's own mix)",
        "",
        f"Adapted: **{default}** ({res['settings'][default]}), chosen by the rule below and measured through "
        f"`Router.adapt`; the library's defaults (`AdaptationSettings()` now) are "
        f"{'this setting' if res['settings'][default] == library else 'NOT this setting: ' + str(library)}. "
        "Labelled: `Router.learn` with the same prompts and their true labels (default traffic weight). "
        f"kNN: MiniLM mean-pooled, k={KNN_K}, train side as index (unlabelled prompts are no use to it).",
        "",
        "| check | kind | before | adapted "
        + " / ".join(map(size_label, sizes[1:]))
        + " | change at "
        + " / ".join(map(size_label, sizes[-2:]))
        + " | labelled "
        + " / ".join(map(size_label, sizes[1:]))
        + " | MiniLM kNN |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for c, r in res["checks"].items():
        m = r["mean"]
        knn = r.get("knn")
        lines.append(
            f"| {c} | {res['kinds'][c]} | {_pct(m['api:chosen'][0])} | "
            + " / ".join(_pct(v) for v in m["api:chosen"][1:])
            + " | "
            + " / ".join(f"{100 * (v - m['api:chosen'][0]):+.1f}" for v in m["api:chosen"][-2:])
            + " | "
            + " / ".join(_pct(v) for v in m["labelled"][1:])
            + f" | {_pct(knn['mean']) if knn else '—'} |"
        )
    lines += ["", "### Targets (issue 24)", "", *targets(res), ""]
    lines += [
        "### Every setting measured (mean accuracy %, n = " + ", ".join(map(size_label, sizes)) + ")",
        "",
        f"Choice rule: {res['choice']['rule']}.",
        "",
        "| setting | mean gain cross-source (pt) | worst change (pt) | eligible | "
        + " | ".join(res["checks"])
        + " |",
        "|---|---:|---:|---|" + "---|" * len(res["checks"]),
    ]
    order = sorted(
        res["choice"]["scores"], key=lambda k: -res["choice"]["scores"][k]["mean_gain_cross_source"]
    )
    for k in order:
        s = res["choice"]["scores"][k]
        cells = [" / ".join(_pct(v) for v in r["mean"][k]) for r in res["checks"].values()]
        mark = "**" if k == default else ""
        lines.append(
            f"| {mark}{k}{mark} | {100 * s['mean_gain_cross_source']:+.2f} | {100 * s['worst_change']:+.2f} | "
            f"{'yes' if s['eligible'] else 'no'} | " + " | ".join(cells) + " |"
        )
    cost = res.get("cost")
    if cost:
        lines += [
            "",
            f"Cost (reasoning4 router, defaults): `Router.adapt` on {cost['prompts']} prompts {cost['adapt_s']:.2f} s "
            f"wall / {cost['adapt_cpu_s']:.2f} s CPU, `forget_adaptation` {1e3 * cost['forget_s']:.0f} ms "
            f"(median of {cost['repeats']}; load average {cost['load_average_before'][0]:.1f} on "
            f"{res['machine']['cpus']} shared cores).",
        ]
    api = [v for r in res["checks"].values() for s in r["seeds"].values() for k, v in s["checks"].items()]
    lines += [
        "",
        f"Checks of the fast path: {sum(api)} routes differ in total between the sweep's math and the public API "
        "(`Router.adapt`, routed by the compiled table) and between the router after `forget_adaptation` and "
        "before adapting, over every check, seed and n.",
    ]
    return "\n".join(lines)


def plot(res: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = res["sizes"]
    names = list(res["checks"])
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows), squeeze=False)
    for ax, c in zip(axes.flat, names):
        r = res["checks"][c]
        d = len(r["seeds"]["0"]["remainder"])
        total = sum(r["seeds"]["0"]["remainder"].values()) + sum(
            r["seeds"]["0"]["served_per_expert"].values()
        )
        x = [d * n if n != ALL else total for n in sizes]
        m = r["mean"]
        ax.plot(x, [100 * v for v in m["api:chosen"]], "o-", label="adapted (no labels)")
        lab = [(xi, 100 * v) for xi, v in zip(x, m["labelled"]) if v is not None]
        ax.plot([a for a, _ in lab], [b for _, b in lab], "s--", label="labelled learning")
        ax.axhline(100 * m["api:chosen"][0], color="grey", lw=0.8, ls=":", label="before")
        if r.get("knn"):
            ax.axhline(100 * r["knn"]["mean"], color="C3", lw=1, ls="-.", label=f"MiniLM kNN k={KNN_K}")
        ax.set_title(f"{c} ({res['kinds'][c]})", fontsize=7)
        ax.set_xlabel("served prompts (all experts)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("held-out accuracy (%)", fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.reporting import machine
    from ir3de import TokenEmbeddings
    from ir3de.fitting.adaptation import AdaptationSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--plot", default="docs/img/adaptation.png")
    ap.add_argument("--checks", nargs="*", default=None, help="a subset of the checks (default: all)")
    ap.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    ap.add_argument(
        "--knn",
        choices=("reuse", "compute", "off"),
        default="reuse",
        help="reuse: from learning.json where it covers the check (else computed); compute: MiniLM here",
    )
    ap.add_argument("--learning-json", default="benchmarks/results/learning.json")
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument("--render", default=None, help="rewrite the outputs from a results JSON")
    args = ap.parse_args(argv)
    out, plot_path = Path(args.out), Path(args.plot)
    if args.render:
        res = json.loads(Path(args.render).read_text())
        write_outputs(res, out, plot_path)
        return 0
    start = time.perf_counter()
    kinds = {c: k for c, k in checks().items() if args.checks is None or c in args.checks}
    settings = candidates()
    emb = TokenEmbeddings.default()
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m benchmarks.adaptation " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sizes": list(SIZES),
        "seeds": list(args.seeds),
        "kinds": kinds,
        "settings": {k: s.to_dict() for k, s in settings.items()},
        "library_defaults": AdaptationSettings().to_dict(),
        "checks": {},
    }
    loaded = {}
    for c in kinds:
        _log(f"check {c}")
        loaded[c] = Check(c, emb)
        res["checks"][c] = run_check(loaded[c], settings, SIZES, args.seeds)
        if args.knn == "reuse":
            res["checks"][c]["knn"] = knn_from_learning(
                Path(args.learning_json), c, res["checks"][c]
            ) or knn_compute(c, res["checks"][c], args.seeds)
        elif args.knn == "compute":
            res["checks"][c]["knn"] = knn_compute(c, res["checks"][c], args.seeds)
    res["choice"] = choose(res["checks"], kinds, list(settings))
    chosen = settings[res["choice"]["chosen"]]
    for c, check in loaded.items():
        api_pass(check, res["checks"][c], chosen, SIZES)
    if not args.no_cost:
        res["cost"] = measure_cost(emb, chosen)
    res["total_s"] = time.perf_counter() - start
    res["machine"] = machine(blas_threads=os.environ.get("OPENBLAS_NUM_THREADS"))
    write_outputs(res, out, plot_path)
    return 0


def write_outputs(res: Mapping[str, Any], out: Path, plot_path: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "adaptation.json").write_text(json.dumps(res, indent=2) + "\n")
    table = write_markdown(res)
    (out / "adaptation.md").write_text(table + "\n")
    plot(res, plot_path)
    print(table)


if __name__ == "__main__":
    raise SystemExit(main())
