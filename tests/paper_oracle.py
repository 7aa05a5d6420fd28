"""A plain, per-token implementation of the paper's router: the oracle every fast path is tested against.

It materialises one row ``[E[t], 1]`` per token occurrence with its one-hot domain label, solves
``(XᵀX + λI) W = XᵀY`` directly, normalises the class columns like the reference code, and routes a
prompt by embedding lookup + matmul + softmax + entropy + top-k + majority vote. No shortcuts.

The text-level variant (``text_level_fit``/``text_level_route``) is written the same plain way: one
row per text, the Python mean of its non-excluded tokens' embeddings, and a prompt is routed by
applying W to its own mean embedding (no route table).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def token_rows(id_lists: Sequence[Sequence[int]], matrix: np.ndarray, excluded: set[int]) -> np.ndarray:
    ids = [t for ids in id_lists for t in ids if t not in excluded]
    x = matrix[np.asarray(ids, np.int64)].astype(np.float64)
    return np.hstack([x, np.ones((x.shape[0], 1))])


def paper_fit(
    ids_per_expert: Sequence[Sequence[Sequence[int]]],
    matrix: np.ndarray,
    excluded: set[int],
    lam: float,
    column_norm: bool = True,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """W ((h+1) × D) of the paper from per-expert token id lists."""
    d = len(ids_per_expert)
    h1 = matrix.shape[1] + 1
    a = np.zeros((h1, h1))
    b = np.zeros((h1, d))
    for j, id_lists in enumerate(ids_per_expert):
        x = token_rows(id_lists, matrix, excluded)
        w = 1.0 if weights is None else float(weights[j])
        y = np.zeros((x.shape[0], d))
        y[:, j] = 1.0
        a += w * (x.T @ x)
        b += w * (x.T @ y)
    sol = np.linalg.solve(a + lam * np.eye(h1), b)
    if column_norm:
        norm = np.linalg.norm(sol[:-1], axis=0)
        norm[norm == 0] = 1e-6
        sol = sol / norm
    return sol


def paper_route(
    ids: Sequence[int], matrix: np.ndarray, w: np.ndarray, excluded: set[int], selector: str, k: int
) -> int:
    """Expert index chosen for one prompt (ids already capped), or -1 when no token counts."""
    ids = [t for t in ids if t not in excluded]
    if not ids:
        return -1
    x = np.hstack([matrix[np.asarray(ids)].astype(np.float64), np.ones((len(ids), 1))])
    logits = (x @ w).astype(np.float32).astype(np.float64)  # the table stores float32 logits
    if selector == "avg":
        return int(np.argmax(logits.mean(0)))
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    entropy = -(p * np.log(p + 1e-10)).sum(1)
    order = np.argsort(entropy, kind="stable")
    chosen = order if selector == "all" else order[:k]
    votes = np.argmax(logits[chosen], axis=1)
    return int(np.argmax(np.bincount(votes, minlength=w.shape[1])))


def text_mean_row(ids: Sequence[int], matrix: np.ndarray, excluded: set[int]) -> np.ndarray | None:
    """``[mean of E over the text's non-excluded tokens, 1]``, or None when no token counts."""
    kept = [t for t in ids if t not in excluded]
    if not kept:
        return None
    total = np.zeros(matrix.shape[1])
    for t in kept:
        total += matrix[t].astype(np.float64)
    return np.append(total / len(kept), 1.0)


def text_level_rows(
    ids_per_expert: Sequence[Sequence[Sequence[int]]],
    matrix: np.ndarray,
    excluded: set[int],
    balance: bool,
    window: int = 8,
    window_weight: float = 0.25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Explicit training rows of the text-level ridge: each text's mean (weight 1) and the means of its
    consecutive ``window``-token spans (weight ``window_weight`` / number of spans); one-hot targets;
    row weights (balancing gives every expert the same total weight)."""
    rows, labels, weights = [], [], []
    for j, id_lists in enumerate(ids_per_expert):
        for ids in id_lists:
            kept = [t for t in ids if t not in excluded]
            if not kept:
                continue
            windows = [kept[s : s + window] for s in range(0, len(kept), window)]
            for span, weight in [(kept, 1.0)] + [(w, window_weight / len(windows)) for w in windows]:
                rows.append(text_mean_row(span, matrix, excluded))
                labels.append(j)
                weights.append(weight)
    x, y, w = np.array(rows), np.array(labels), np.array(weights)
    d = len(ids_per_expert)
    mass = np.bincount(y, weights=w, minlength=d)
    sample_weight = w * (mass.mean() / mass)[y] if balance else w
    return x, np.eye(d)[y], sample_weight


def text_level_fit(
    ids_per_expert: Sequence[Sequence[Sequence[int]]],
    matrix: np.ndarray,
    excluded: set[int],
    lam: float,
    balance: bool,
    column_norm: bool = False,
) -> np.ndarray:
    """W of the ridge on one row per text; balancing gives every expert the mean number of texts."""
    x, targets, sample_weight = text_level_rows(ids_per_expert, matrix, excluded, balance)
    a = (x * sample_weight[:, None]).T @ x
    b = (x * sample_weight[:, None]).T @ targets
    sol = np.linalg.solve(a + lam * np.eye(x.shape[1]), b)
    if column_norm:
        sol = sol / np.linalg.norm(sol[:-1], axis=0)
    return sol


def text_level_route(ids: Sequence[int], matrix: np.ndarray, w: np.ndarray, excluded: set[int]) -> int:
    """argmax of W applied to the prompt's mean embedding, or -1 when no token counts."""
    row = text_mean_row(ids, matrix, excluded)
    return -1 if row is None else int(np.argmax(row @ w))


def explicit_gcv(x: np.ndarray, targets: np.ndarray, weights: np.ndarray, lam: float) -> float:
    """GCV of weighted ridge from explicit rows: n·RSS/(n − tr H)², H the weighted hat matrix."""
    sw = np.sqrt(weights)[:, None]
    xs, ys = x * sw, targets * sw
    inverse = np.linalg.inv(xs.T @ xs + lam * np.eye(x.shape[1]))
    w = inverse @ xs.T @ ys
    rss = float(((ys - xs @ w) ** 2).sum())
    df = float(np.trace(xs @ inverse @ xs.T))
    n = float(weights.sum())
    if df >= n:
        return float("inf")  # more effective parameters than (weighted) rows: undefined
    return n * rss / (n - df) ** 2


def traffic_fit(
    corpus_ids: Sequence[Sequence[Sequence[int]]],
    traffic_ids: Sequence[Sequence[Sequence[int]]],
    matrix: np.ndarray,
    excluded: set[int],
    *,
    level: str,
    lam: float,
    balance: bool,
    weight: float,
    policy: str,
) -> np.ndarray:
    """W of a ridge fit on explicit rows: the corpus rows (weighted as the level's fit weighs them)
    with every traffic row appended, each weighing ``u_d`` times its own row weight.

    ``u_d``: ``per_prompt`` — ``weight`` × the expert's corpus row weight; ``share`` — chosen so the
    expert's traffic mass is ``weight`` × its weighted corpus mass. No column normalisation.
    """
    d = len(corpus_ids)
    if level == "text":
        x, y, w = text_level_rows(corpus_ids, matrix, excluded, balance)
        tx, ty, tw = text_level_rows(traffic_ids, matrix, excluded, balance=False)
        corpus_mass = np.bincount(
            y.argmax(1), weights=text_level_rows(corpus_ids, matrix, excluded, False)[2], minlength=d
        )
        traffic_mass = np.bincount(ty.argmax(1), weights=tw, minlength=d)
    else:
        xs, ys, txs, tys = [], [], [], []
        for j, id_lists in enumerate(corpus_ids):
            rows = token_rows(id_lists, matrix, excluded)
            xs.append(rows)
            ys.append(np.full(len(rows), j))
        for j, id_lists in enumerate(traffic_ids):
            rows = (
                token_rows(id_lists, matrix, excluded)
                if any(id_lists)
                else np.zeros((0, matrix.shape[1] + 1))
            )
            txs.append(rows)
            tys.append(np.full(len(rows), j))
        x, labels = np.vstack(xs), np.concatenate(ys)
        corpus_mass = np.bincount(labels, minlength=d).astype(float)
        w = (corpus_mass.mean() / corpus_mass)[labels] if balance else np.ones(len(labels))
        y = np.eye(d)[labels]
        tx, tlabels = np.vstack(txs), np.concatenate(tys).astype(int)
        ty, tw = np.eye(d)[tlabels], np.ones(len(tlabels))
        traffic_mass = np.bincount(tlabels, minlength=d).astype(float)
    # (corpus_mass: unweighted masses; the corpus row weight of expert j is the same for all its rows)
    row_weight = np.array([w[y.argmax(1) == j][0] for j in range(d)])
    if policy == "per_prompt":
        u = weight * row_weight
    else:
        u = np.where(
            traffic_mass > 0, weight * row_weight * corpus_mass / np.maximum(traffic_mass, 1e-300), 0.0
        )
    tw = tw * u[ty.argmax(1)]
    xa, ya, wa = np.vstack([x, tx]), np.vstack([y, ty]), np.concatenate([w, tw])
    a = (xa * wa[:, None]).T @ xa
    b = (xa * wa[:, None]).T @ ya
    return np.linalg.solve(a + lam * np.eye(xa.shape[1]), b)
