"""Label-free feature alignment against adaptation: does moving the served prompts' features onto the
corpora's help where adapting to them does not?

Run: ``python -m benchmarks.alignment [--out benchmarks/results] [--checks NAME ...] [--seeds 0 1 2]``

Unsupervised domain adaptation's classic alternative to self-training is to align the features: map
each served prompt's mean embedding ``x`` so that the served prompts' mean and covariance become the
corpora's, then route it with the router as fitted. For a linear router the map is affine, so it
would collapse into the lookup table like everything else. Measured here, on the same checks, seeds,
served pools and held-out remainders as ``benchmarks.adaptation`` (:class:`benchmarks.adaptation.Check`):

* ``shift``: ``x − μ_served + μ_corpus`` (first moment only);
* ``coral-s``: CORAL, ``C_corpus^½ C^-½ (x − μ_served) + μ_corpus`` with the served covariance shrunk
  toward the corpora's, ``C = (1 − s) C_served + s C_corpus`` (a few dozen prompts cannot estimate a
  576-dimensional covariance), for ``s`` in :data:`SHRINKAGE`;
* each of them alone, and on top of ``Router.adapt``'s defaults (``+adapt``), next to the router
  before (``base``) and the defaults alone (``adapt``).

The corpora's moments are those of the rows the router was fitted on (its text Gram: texts and their
windows, expert-balanced); the served moments are those of the served prompts' mean embeddings. Writes
``alignment.json`` and ``alignment.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

if TYPE_CHECKING:
    from ir3de.fitting.adaptation import AdaptationPrompts

#: how far the served covariance is shrunk toward the corpora's in CORAL
SHRINKAGE = (0.5, 0.8, 0.95)


def corpus_moments(a0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the rows behind a text-level Gram ``a0`` ((h+1)², bias last).

    Example:
        >>> x = np.array([[1.0, 0.0], [3.0, 2.0]]); y = np.hstack([x, np.ones((2, 1))])
        >>> mean, cov = corpus_moments(y.T @ y)
        >>> mean.tolist(), cov.tolist()
        ([2.0, 1.0], [[1.0, 1.0], [1.0, 1.0]])
    """
    h = a0.shape[0] - 1
    mass = a0[h, h]
    mean = a0[:h, h] / mass
    return mean, a0[:h, :h] / mass - np.outer(mean, mean)


def _sqrtm(cov: np.ndarray, power: float) -> np.ndarray:
    """``cov ** power`` of a symmetric positive semi-definite matrix (eigenvalues floored at 1e-12)."""
    w, v = np.linalg.eigh(cov)
    return (v * np.clip(w, 1e-12, None) ** power) @ v.T


def alignment_map(
    served: np.ndarray, mean: np.ndarray, cov: np.ndarray, shrinkage: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(M, t)`` with ``x ↦ x @ M.T + t`` moving the served rows' moments onto ``(mean, cov)``: the mean
    only when ``shrinkage`` is None, else CORAL with the served covariance shrunk toward ``cov``.

    Example:
        >>> rng = np.random.default_rng(0); served = rng.normal(size=(500, 3)) * 2 + 5
        >>> m, t = alignment_map(served, np.zeros(3), np.eye(3), 0.0)
        >>> moved = served @ m.T + t
        >>> bool(np.allclose(moved.mean(0), 0) and np.allclose(np.cov(moved.T, bias=True), np.eye(3)))
        True
    """
    served_mean = served.mean(axis=0)
    if shrinkage is None:
        m = np.eye(served.shape[1])
    else:
        served_cov = np.cov(served.T, bias=True)
        m = _sqrtm(cov, 0.5) @ _sqrtm((1 - shrinkage) * served_cov + shrinkage * cov, -0.5)
    return m, mean - served_mean @ m.T


def _accuracy(
    held: AdaptationPrompts, used: np.ndarray, labels: np.ndarray, weights: np.ndarray, features: np.ndarray
) -> float:
    """Held-out accuracy of ``weights`` on the held-out prompts moved to ``features``."""
    from benchmarks.adaptation import _route_rows
    from ir3de.fitting.adaptation import AdaptationPrompts

    moved = AdaptationPrompts(features, held.tokens)
    return float(np.mean(_route_rows(moved, used, weights) == labels))


def run_check(check: Any, sizes: Sequence[int], seeds: Sequence[int]) -> dict[str, Any]:
    """Held-out accuracy (mean over seeds, per size) of every variant on one check."""
    from benchmarks.adaptation import ALL, _served_rows
    from ir3de.fitting.adaptation import AdaptationSettings, adapted_weights

    maps: dict[str, float | None] = {"shift": None, **{f"coral-{s:g}": s for s in SHRINKAGE}}
    variants = ["base", "adapt", *maps, *(f"{k}+adapt" for k in maps)]
    acc: dict[str, list[list[float]]] = {v: [[] for _ in sizes] for v in variants}
    mean, cov = corpus_moments(check.a0)
    for seed in seeds:
        pools, _, labels, held, used = check.split(seed, sizes)
        pool_rows = check.pool_rows(pools)
        base = check.router.state.weights
        for i, n in enumerate(sizes):
            rows = _served_rows(pool_rows, n) if n != ALL else _served_rows(pool_rows, max(sizes)) + held
            adapted = adapted_weights(check.a0, check.b0, rows, AdaptationSettings(), **check.options)

            score = functools.partial(_accuracy, held, used, labels)
            acc["base"][i].append(score(base, held.means))
            acc["adapt"][i].append(score(adapted, held.means))
            for name, shrinkage in maps.items():
                m, t = alignment_map(rows.means, mean, cov, shrinkage)
                features = held.means @ m.T + t
                acc[name][i].append(score(base, features))
                acc[f"{name}+adapt"][i].append(score(adapted, features))
    return {v: [float(np.mean(a)) for a in per_size] for v, per_size in acc.items()}


def markdown(res: Mapping[str, Any]) -> str:
    """The results as a table: one row per check, one column per variant."""
    from benchmarks.adaptation import size_label

    sizes = " / ".join(size_label(n) for n in res["sizes"])
    variants = list(next(iter(res["checks"].values())))
    lines = [
        f"Held-out accuracy (%) with {sizes} served prompts per expert; mean of seeds {res['seeds']}.",
        "",
        "| check | kind | " + " | ".join(variants) + " |",
        "|---|---|" + "---|" * len(variants),
    ]
    for c, acc in res["checks"].items():
        cells = [" / ".join(f"{100 * a:.1f}" for a in acc[v]) for v in variants]
        lines.append(f"| {c} | {res['kinds'][c]} | " + " | ".join(cells) + " |")
    lines += ["", f"`{res['command']}`: {res['total_s']:.0f} s."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.adaptation import ALL, SEEDS, Check, checks
    from ir3de import TokenEmbeddings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--checks", nargs="*", default=None, help="a subset of the checks (default: all)")
    ap.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    ap.add_argument("--sizes", nargs="*", type=int, default=[10, 30, 100, ALL], help="-1: all")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    kinds = {c: k for c, k in checks().items() if args.checks is None or c in args.checks}
    emb = TokenEmbeddings.default()
    res: dict[str, Any] = {
        "command": " ".join(
            ["python -m benchmarks.alignment", *(argv if argv is not None else sys.argv[1:])]
        ),
        "sizes": list(args.sizes),
        "seeds": list(args.seeds),
        "kinds": kinds,
        "checks": {c: run_check(Check(c, emb), args.sizes, args.seeds) for c in kinds},
    }
    res["total_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "alignment.json").write_text(json.dumps(res, indent=2) + "\n")
    table = markdown(res)
    (out / "alignment.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
