"""Probe for the next routing-quality step: ridge on each text's mean embedding ("sample level").

Run: ``python -m benchmarks.sample_level_probe``

Instead of one training row per token occurrence, each text contributes one row, the mean of its
tokens' embeddings (plus the bias 1). Statistics stay additive per expert (a dense (h+1)² Gram per
expert instead of a token histogram) and routing stays a table lookup (the mean of the prompt's token
logits, i.e. the ``avg`` selector on ``E W``). This script measures it with plain numpy on the public
suites so the library can decide whether to adopt it; it is not part of the library yet.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np


def text_means(texts: list[str], emb: object, excluded: set[int], max_tokens: int = 1024) -> np.ndarray:
    matrix = emb.matrix  # type: ignore[attr-defined]
    rows = []
    for enc in emb.tokenizer.encode_batch(texts, add_special_tokens=False):  # type: ignore[attr-defined]
        ids = [i for i in enc.ids[:max_tokens] if i not in excluded]
        mean = matrix[ids].astype(np.float64).mean(0) if ids else np.zeros(matrix.shape[1])
        rows.append(np.append(mean, 1.0))
    return np.asarray(rows)


def main() -> dict[str, float]:
    from ir3de import TokenEmbeddings
    from ir3de.datasets import CROSS_SOURCE, load_cross_source, load_suite
    from ir3de.solve import ridge_solve

    emb = TokenEmbeddings.default()
    excluded = set(emb.excluded_ids.tolist())
    suites = {"reasoning4": load_suite("reasoning4"), "five": load_suite("five")}
    suites.update({name: load_cross_source(name) for name in CROSS_SOURCE})
    results = {}
    print("| suite | sample-level ridge, balanced, λ=0.1 (%) | unbalanced, λ=0.1 (%) |")
    print("|---|---:|---:|")
    for name, suite in suites.items():
        experts = list(suite.train)
        train = {e: text_means(suite.train[e], emb, excluded) for e in experts}
        x_test = np.vstack([text_means(suite.test[e], emb, excluded) for e in experts])
        y_test = np.concatenate([[i] * len(suite.test[e]) for i, e in enumerate(experts)])
        cells = []
        for balance in (True, False):
            h1 = x_test.shape[1]
            a, b = np.zeros((h1, h1)), np.zeros((h1, len(experts)))
            mean_count = sum(len(x) for x in train.values()) / len(experts)
            for i, e in enumerate(experts):
                w = mean_count / len(train[e]) if balance else 1.0
                a += w * train[e].T @ train[e]
                b[:, i] += w * train[e].sum(0)
            accuracy = float(((x_test @ ridge_solve(a, b, 0.1)).argmax(1) == y_test).mean())
            results[f"{name}/{'balanced' if balance else 'unbalanced'}"] = accuracy
            cells.append(f"{100 * accuracy:.1f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)
    return results


if __name__ == "__main__":
    main()
