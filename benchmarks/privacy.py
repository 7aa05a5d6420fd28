"""How much text do a saved router's statistics give back? Token recovery from the saved folder alone.

Usage::

    python -m benchmarks.privacy            # 3 experts of 10 texts per source, 60 served prompts per source
    python -m benchmarks.privacy --quick    # 1 expert, 12 served prompts, probe on 40 windows per source, no OMP
                                            # on the adapted means (what the tests run)

A router fitted with the library defaults (``Router(progress=False, keep_token_ids=False)``) saves, for
an expert with fewer than h + 1 (= 577) rows, its text statistics as float64 rows
(``text_rows``, one per 8-token window of each training text, :func:`ir3de.fitting.statistics.text_factor`),
and after :meth:`~ir3de.Router.adapt` one mean token embedding per served prompt with its token count
(``adaptation_means``, ``adaptation_tokens``). For each source (GSM8K questions, HumanEval prompts,
IFEval prompts, HealthBench prompts, loaded with :func:`ir3de.data.datasets.load_domain`), this fits
``experts`` experts of ``texts`` texts each, adapts to served prompts of every source (half of them
whole, half cut to their first 8 words, as the ``reasoning4-short-prompts`` check cuts them), saves the
router, and then reads **only the saved folder** plus the public embedding matrix
(:meth:`~ir3de.embeddings.base.TokenEmbeddings.default`: the attacker knows the embedding model) and the
library's public constants (window length and weight).

Attacks (each figure in the results names the attack that gave it):

* ``probe`` — the first probe: divide a row by its last column (its weight), so it is a convex mix of
  the window's mean and its text's mean; orthogonal matching pursuit (OMP: the atom most correlated with
  the residual, then a least-squares refit on all atoms picked so far) with up to 24 atoms over the
  vocabulary; a token's multiplicity is its coefficient over the median coefficient of the atoms within
  0.3x of the largest (no ground truth used).
* ``unmixed`` — the rows' last column takes one value per (windows in the text, tokens in its last
  window) for a text's full windows and another for its last one, so the rows split into texts exactly
  (a depth-first parse of the weights, checked against every row); each text's rows are then a known
  linear mix ``y_w = (√c / |w|) S_w + (γ_w / |t|) Σ_v S_v`` of its window *sums* ``S_w``, which one
  small solve per text unmixes. Each sum of ``|w|`` token embeddings is decoded by OMP with at most
  ``|w|`` atoms and coefficients rounded to integers (a one-window text's length is taken as the
  ``L ≤ 8`` that makes its coefficients integers) — ``unmixed, OMP`` — then by an integer local search
  that swaps one or two tokens while that lowers the residual (:func:`refine`; OMP confuses near-twins
  such as ``" It"``/``" it"``, and a capital moved from one word to another barely changes a sum) —
  ``unmixed, OMP + swaps``; or by the NNLS of ``mean x count`` below (a one-window text's length again
  the ``L`` that makes ``L`` times its coefficients integers) — ``unmixed, NNLS``.
* ``mean x count`` — an adapted prompt's saved mean times its saved token count is the sum of its
  token embeddings: nonnegative least squares over the whole vocabulary by column generation
  (:func:`nnls_decode`), coefficients rounded — ``NNLS``; and (not in ``--quick``) OMP with up to
  ``min(count, 160)`` atoms then the swaps — ``OMP + swaps``, which greedy picks leave short of the
  truth on long prompts where NNLS is exact.

Ground truth (never shown to the attacks): each text tokenized by the router's own tokenizer
(``router.embeddings.encode_batch``, served prompts as routing encodes them, first ``max_tokens``),
excluded (special) ids dropped as counting drops them. Figures: per source, the fraction of each
window's tokens recovered (multiset overlap, over all windows' tokens), the fraction of windows
recovered exactly (as multisets; the order inside a window is not in the rows), the same for whole texts'
multisets, and for adapted prompts the same by length bucket (≤16, 17–64, >64 tokens); plus decoded
examples. Writes ``benchmarks/results/privacy.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from benchmarks.reporting import machine, publish

ROOT = Path(__file__).resolve().parent.parent

#: source name (an :func:`ir3de.data.datasets.load_domain` domain) → what it is
SOURCES: dict[str, str] = {
    "math": "GSM8K questions",
    "code": "HumanEval prompts",
    "instructions": "IFEval prompts",
    "medical": "HealthBench prompts",
}
TEXTS_PER_EXPERT = 10
EXPERTS, QUICK_EXPERTS = 3, 1
SERVED, QUICK_SERVED = 60, 12
#: words kept by the cut half of the served prompts (as ``ir3de.data.datasets.SHORT_PROMPT_WORDS``)
SHORT_WORDS = 8
BUCKETS: tuple[tuple[str, int, int], ...] = (("<=16", 1, 16), ("17-64", 17, 64), (">64", 65, 1 << 30))
PROBE_ATOMS = 24
#: --quick runs the probe (3x the cost of the other attacks) on the first texts of each source, up to this many windows
QUICK_PROBE_WINDOWS = 40
#: most atoms one adapted prompt's sum is decoded with (OMP cost grows with the atoms)
MEAN_ATOMS = 160
#: tokens added per round and rounds of :func:`nnls_decode`
NNLS_ADD, NNLS_ROUNDS = 64, 60
#: OMP stops when the residual is below this fraction of the target's norm
TOL = 1e-5
SEED = 0
_CHUNK = 256
#: rounds, positions and candidate tokens per position of :func:`refine`'s local search
SWAP_ROUNDS, SWAP_POSITIONS, SWAP_NEAREST = 6, 8, 8


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- the saved folder


@dataclass
class Saved:
    """What the attacker reads: the saved folder's statistics and the public embedding matrix."""

    experts: list[str]
    forms: np.ndarray  # per expert: 2 = rows (the statistics are text_rows), else a Gram or token ids
    rows: list[np.ndarray]  # per expert: its (n, h+1) text rows (empty unless its form is rows)
    means: np.ndarray  # (P, h) adapted prompts' mean embeddings
    tokens: np.ndarray  # (P,) their countable token counts
    matrix: np.ndarray  # (V, h) float32: the public embedding matrix
    countable: np.ndarray  # (V,) bool: ids that count (the config's excluded_ids are not)


def read_saved(folder: Path, matrix: np.ndarray) -> Saved:
    """The folder's ``statistics.safetensors`` and ``config.json``: nothing else of the router."""
    from safetensors.numpy import load_file

    stats = load_file(str(folder / "statistics.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    experts = [str(e["name"]) for e in config["experts"]]
    offsets = stats["text_row_offsets"]
    rows = stats.get("text_rows", np.zeros((0, matrix.shape[1] + 1)))
    countable = np.ones(matrix.shape[0], bool)
    countable[np.asarray(config["excluded_ids"], np.int64)] = False
    hidden = matrix.shape[1]
    return Saved(
        experts=experts,
        forms=stats["text_forms"],
        rows=[rows[offsets[i] : offsets[i + 1]] for i in range(len(experts))],
        means=stats.get("adaptation_means", np.zeros((0, hidden))),
        tokens=stats.get("adaptation_tokens", np.zeros(0, np.int64)),
        matrix=matrix,
        countable=countable,
    )


# ---------------------------------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    """One target's OMP result: the atoms picked (token ids) and their coefficients."""

    atoms: np.ndarray
    coefs: np.ndarray


def omp(
    targets: np.ndarray, max_atoms: np.ndarray, matrix: np.ndarray, countable: np.ndarray, progress: str = ""
) -> list[Decoded]:
    """Orthogonal matching pursuit of every row of ``targets`` ((B, h) float64) over the countable rows
    of ``matrix`` (the vocabulary), batched: each step picks, per target, the atom with the largest
    correlation (dot product over the atom's norm) with its residual, then refits all its atoms by least
    squares (an incrementally grown Gram). Stops per target at ``max_atoms`` atoms or a residual below
    :data:`TOL` of its norm."""
    from tqdm.auto import tqdm

    b, hidden = targets.shape
    found: list[Decoded] = []
    norms = np.linalg.norm(matrix, axis=1).astype(np.float32)
    norms[norms == 0] = 1.0
    scale = np.where(countable, 1.0 / norms, 0.0).astype(np.float32)
    bar = tqdm(total=b, desc=progress, unit="target", disable=not progress, leave=False)
    for lo in range(0, b, _CHUNK):
        x = targets[lo : lo + _CHUNK]
        cap = np.asarray(max_atoms[lo : lo + _CHUNK], np.int64)
        n, k_max = x.shape[0], int(cap.max(initial=0))
        atoms = np.zeros((n, max(k_max, 1)), np.int64)
        gram = np.zeros((n, max(k_max, 1), max(k_max, 1)))
        rhs = np.zeros((n, max(k_max, 1)))
        coefs = np.zeros((n, max(k_max, 1)))
        picked = np.zeros(n, np.int64)
        residual = x.copy()
        x_norm = np.linalg.norm(x, axis=1)
        active = (cap > 0) & (x_norm > 0)
        for step in range(k_max):
            idx = np.flatnonzero(active & (cap > step))
            if idx.size == 0:
                break
            scores = (residual[idx].astype(np.float32) @ matrix.T) * scale
            if step:  # an atom already picked is never picked again (its residual correlation is ~0)
                np.put_along_axis(scores, atoms[idx, :step], -np.inf, axis=1)
            new = np.argmax(scores, axis=1)
            atoms[idx, step] = new
            e_new = matrix[new].astype(np.float64)  # (m, h)
            e_old = matrix[atoms[idx, :step]].astype(np.float64)  # (m, step, h)
            cross = np.einsum("msh,mh->ms", e_old, e_new)
            gram[idx, step, :step] = cross
            gram[idx, :step, step] = cross
            gram[idx, step, step] = np.einsum("mh,mh->m", e_new, e_new)
            rhs[idx, step] = np.einsum("mh,mh->m", e_new, x[idx])
            k = step + 1
            g = gram[idx, :k, :k] + np.eye(k) * 1e-12
            c = np.linalg.solve(g, rhs[idx, :k, None])[..., 0]
            coefs[idx, :k] = c
            picked[idx] = k
            basis = np.concatenate([e_old, e_new[:, None]], axis=1)
            residual[idx] = x[idx] - np.einsum("mk,mkh->mh", c, basis)
            done = np.linalg.norm(residual[idx], axis=1) <= TOL * x_norm[idx]
            active[idx[done]] = False
            bar.update(int(done.sum()))
        found += [Decoded(atoms[i, : picked[i]].copy(), coefs[i, : picked[i]].copy()) for i in range(n)]
        bar.update(int(active.sum()))
    bar.close()
    del hidden
    return found


def refine(
    targets: np.ndarray,
    found: list[list[int]],
    counts: np.ndarray,
    matrix: np.ndarray,
    countable: np.ndarray,
    rounds: int = SWAP_ROUNDS,
    positions: int = SWAP_POSITIONS,
    nearest: int = SWAP_NEAREST,
) -> list[list[int]]:
    """Integer local search after OMP. A target is a sum of ``counts[i]`` token embeddings, so while a
    multiset's residual ``r = x - Σ E[t]`` is not ~0 it makes its best move: add the token nearest to
    ``r`` while it has fewer than ``counts[i]`` tokens, drop the best one while it has more, else swap
    one or two of its ``positions`` least integer-looking tokens (least-squares coefficient furthest
    from an integer) for one of the ``nearest`` tokens to ``r`` plus that token — when the move lowers
    ``|r|`` (a count mismatch is always fixed). OMP's greedy picks confuse near-twins such as ``" It"``
    and ``" it"``, and capitals moved from one word to another (``" each" + " It"`` for ``" Each" +
    " it"``) change the sum so little that only a two-token swap lowers the residual."""
    emb = matrix.astype(np.float64)
    sq = np.einsum("vh,vh->v", emb, emb)
    sq[~countable] = np.inf
    out = [list(f) for f in found]
    x_norm = np.linalg.norm(targets, axis=1)
    for _ in range(rounds):
        residual = targets - np.stack([emb[f].sum(axis=0) if f else np.zeros(emb.shape[1]) for f in out])
        r_norm = np.linalg.norm(residual, axis=1)
        pending = np.flatnonzero((r_norm > 1e3 * TOL * x_norm) | (np.array([len(f) for f in out]) != counts))
        if pending.size == 0:
            break
        # the queries: (target, token dropped or -1, residual an added token should match)
        queries: list[tuple[int, int, np.ndarray]] = []
        drops: dict[int, list[int]] = {}
        for i in map(int, pending):
            f, r = out[i], residual[i]
            if len(f) < counts[i]:
                queries.append((i, -1, r))
            elif len(f) > counts[i]:
                drops[i] = sorted(set(f))
            else:
                distinct = sorted(set(f))
                coef = np.linalg.lstsq(emb[distinct].T, targets[i], rcond=None)[0]
                worst = np.argsort(-np.abs(coef - np.rint(coef)))[:positions]
                queries += [(i, distinct[j], r + emb[distinct[j]]) for j in worst]
        cands = np.zeros((len(queries), nearest), np.int64)
        for lo in range(0, len(queries), _CHUNK):
            t = np.stack([q[2] for q in queries[lo : lo + _CHUNK]])
            dist = sq[None, :] - 2.0 * (t.astype(np.float32) @ matrix.T)
            near = np.argpartition(dist, nearest, axis=1)[:, :nearest]
            cands[lo : lo + len(t)] = near
        moves: dict[int, list[tuple[int, int]]] = {}  # target -> its single moves (drop, add)
        for (i, drop, _), near in zip(queries, cands):
            moves.setdefault(i, []).extend((drop, int(b)) for b in near)
        for i, tokens in drops.items():
            moves[i] = [(t, -1) for t in tokens]
        for i, single in moves.items():
            r = residual[i]
            delta = np.stack([(emb[d] if d >= 0 else 0.0) - (emb[a] if a >= 0 else 0.0) for d, a in single])
            rd = delta @ r
            dd = delta @ delta.T
            base = float(r @ r)
            one = base + 2.0 * rd + np.diag(dd)
            best_norm, best_moves = float(one.min()), [single[int(one.argmin())]]
            if len(out[i]) == counts[i] and len(single) > 1:  # two swaps of two different tokens
                two = (
                    base
                    + 2.0 * (rd[:, None] + rd[None, :])
                    + np.diag(dd)[:, None]
                    + np.diag(dd)[None, :]
                    + 2.0 * dd
                )
                drop_of = np.array([d for d, _ in single])
                two[drop_of[:, None] == drop_of[None, :]] = np.inf
                k = int(two.argmin())
                if two.flat[k] < best_norm:
                    best_norm, best_moves = (
                        float(two.flat[k]),
                        [single[k // len(single)], single[k % len(single)]],
                    )
            if len(out[i]) == counts[i] and best_norm >= base:
                continue
            for drop, add in best_moves:
                if drop >= 0:
                    out[i].remove(drop)
                if add >= 0:
                    out[i].append(add)
    return out


def nnls_decode(
    targets: np.ndarray,
    matrix: np.ndarray,
    countable: np.ndarray,
    add: int = NNLS_ADD,
    rounds: int = NNLS_ROUNDS,
    progress: str = "",
) -> list[Decoded]:
    """Nonnegative least squares over the whole vocabulary, by column generation: solve on a candidate
    set of tokens (scipy's Lawson-Hanson ``nnls``), add the ``add`` tokens whose gradient ``E r`` is
    largest and positive, repeat until the residual is ~0 or no token has a positive gradient (then the
    candidate solution is the NNLS optimum over all tokens). Greedy pursuit commits to wrong picks on
    long prompts; NNLS finds the nonnegative combination that fits, which for these sums of token
    embeddings was the true one nearly every time measured."""
    from scipy.optimize import nnls
    from tqdm.auto import tqdm

    out: list[Decoded] = []
    for x in tqdm(targets, desc=progress, unit="target", disable=not progress, leave=False):
        chosen = np.zeros(0, np.int64)
        coef = np.zeros(0)
        residual = x.copy()
        for _ in range(rounds):
            grad = residual.astype(np.float32) @ matrix.T
            grad[~countable] = -np.inf
            grad[chosen] = -np.inf
            k = min(add, int((grad > 0).sum()))
            if k == 0:
                break
            chosen = np.concatenate([chosen, np.argpartition(-grad, k - 1)[:k]])
            basis = matrix[chosen].T.astype(np.float64)
            coef = nnls(basis, x, maxiter=50 * basis.shape[1])[0]
            nonzero = coef > 1e-9
            chosen, coef = chosen[nonzero], coef[nonzero]
            residual = x - matrix[chosen].T.astype(np.float64) @ coef
            if np.linalg.norm(residual) <= TOL * np.linalg.norm(x):
                break
        out.append(Decoded(chosen, coef))
    return out


def integer_tokens(d: Decoded, scale: float = 1.0) -> list[int]:
    """The token multiset of a decoded sum: each atom ``round(scale · coefficient)`` times."""
    mult = np.rint(d.coefs * scale).astype(np.int64)
    return [int(a) for a, m in zip(d.atoms, mult) for _ in range(max(int(m), 0))]


def probe_tokens(d: Decoded) -> list[int]:
    """The first probe's multiplicities (no count known): coefficient over the median of the atoms
    within 0.3x of the largest coefficient."""
    if d.coefs.size == 0 or d.coefs.max() <= 0:
        return []
    top = d.coefs[d.coefs >= 0.3 * d.coefs.max()]
    return integer_tokens(d, 1.0 / float(np.median(top)))


def one_window_tokens(d: Decoded, window: int) -> list[int]:
    """A one-window text's tokens from its decoded *mean*: the length ``L ≤ window`` whose ``L ·
    coefficients`` are closest to positive integers summing to ``L``."""
    best: tuple[float, int] = (np.inf, 1)
    for size in range(1, window + 1):
        m = d.coefs * size
        r = np.rint(m)
        if r.sum() != size or (r < 1).any():
            continue
        best = min(best, (float(np.abs(m - r).max()), size))
    return integer_tokens(d, float(best[1]))


# ---------------------------------------------------------------------------------------------- unmixing rows


@dataclass
class TextRows:
    """One text's rows in an expert's ``text_rows``: ``first`` row, ``windows`` rows, ``last`` = tokens in
    its last window (``0`` for a one-window text: its length is not in its weight)."""

    first: int
    windows: int
    last: int


def _weights(windows: int, last: int, window: int, weight: float) -> tuple[float, float, float]:
    """(alpha, gamma of a full window, gamma of the last window) of a text, as the library computes them
    (``ir3de.fitting.statistics._text_terms``)."""
    size = (windows - 1) * window + last
    c = weight / windows
    a_full, a_last = window / size, last / size
    beta = 1.0 / (1.0 + np.sqrt(1.0 + ((windows - 1) * a_full * a_full + a_last * a_last) / c))
    alpha = float(np.sqrt(c))
    return alpha, float(beta * a_full / alpha), float(beta * a_last / alpha)


def parse_texts(bias: np.ndarray, window: int, weight: float) -> list[TextRows] | None:
    """Split an expert's rows into texts by their last column alone (``None``: no parse explains it).

    A text of ``n`` windows and ``L`` tokens in its last gives its ``n - 1`` full windows one weight and
    its last another (equal when ``L = window``); a one-window text's weight does not depend on ``L``."""
    n_rows = bias.size
    full = np.full((n_rows + 1, window + 1), np.nan)
    last = np.full((n_rows + 1, window + 1), np.nan)
    for n in range(1, n_rows + 1):
        for ell in range(1, window + 1):
            alpha, g_full, g_last = _weights(n, ell, window, weight)
            full[n, ell], last[n, ell] = alpha + g_full, alpha + g_last
    single = last[1, 1]

    def close(a: np.ndarray | float, b: float) -> np.ndarray:
        return np.abs(np.asarray(a) - b) <= 1e-9 * abs(b)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * n_rows + 100))
    failed: set[int] = set()

    def parse(i: int) -> list[TextRows] | None:
        if i == n_rows:
            return []
        if i in failed:
            return None
        options: list[tuple[int, int]] = []
        if close(single, float(bias[i])):
            options.append((1, 0))
        ns, ls = np.nonzero(close(full[2 : n_rows - i + 1], float(bias[i])))
        options += [(int(n) + 2, int(ell)) for n, ell in zip(ns, ls)]
        for n, ell in options:
            if n > 1:
                if not close(bias[i : i + n - 1], float(full[n, ell])).all():
                    continue
                if not close(bias[i + n - 1], float(last[n, ell])):
                    continue
            rest = parse(i + n)
            if rest is not None:
                return [TextRows(i, n, ell), *rest]
        failed.add(i)
        return None

    return parse(0)


def unmix(rows: np.ndarray, text: TextRows, window: int, weight: float) -> np.ndarray:
    """The window sums ``S_w`` ((n, h)) of one text from its rows (for a one-window text: its *mean*)."""
    y = rows[text.first : text.first + text.windows]
    if text.windows == 1:
        return np.asarray(y[:, :-1] / y[:, -1:])
    n, ell = text.windows, text.last
    size = (n - 1) * window + ell
    alpha, g_full, g_last = _weights(n, ell, window, weight)
    sizes = np.full(n, float(window))
    sizes[-1] = ell
    gammas = np.full(n, g_full)
    gammas[-1] = g_last
    mix = np.diag(alpha / sizes) + np.outer(gammas / size, np.ones(n))
    return np.asarray(np.linalg.solve(mix, y[:, :-1]))


# ---------------------------------------------------------------------------------------------- scoring


def overlap(got: Sequence[int], true: Sequence[int]) -> int:
    """Tokens of ``true`` recovered: the size of the multiset intersection."""
    return sum((Counter(got) & Counter(true)).values())


def score(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, float | int]:
    """Token recall (over all true tokens), token precision and the share recovered exactly (as multisets)."""
    hit = sum(overlap(g, t) for g, t in pairs)
    true = sum(len(t) for _, t in pairs)
    got = sum(len(g) for g, _ in pairs)
    exact = sum(Counter(g) == Counter(t) for g, t in pairs)
    return {
        "n": len(pairs),
        "tokens": true,
        "token_recall": hit / true if true else 0.0,
        "token_precision": hit / got if got else 0.0,
        "exact": exact / len(pairs) if pairs else 0.0,
    }


def windows_of(ids: Sequence[int], window: int) -> list[list[int]]:
    return [list(ids[i : i + window]) for i in range(0, len(ids), window)]


# ---------------------------------------------------------------------------------------------- the run


def run(
    experts_per_source: int,
    served_per_source: int,
    probe_limit: int | None = None,
    greedy_means: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    from ir3de import Router
    from ir3de.data.datasets import load_domain
    from ir3de.embeddings.base import TokenEmbeddings
    from ir3de.fitting.statistics import TEXT_WINDOW, WINDOW_WEIGHT
    from ir3de.routing.prompts import encode_prompts

    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    train: dict[str, list[str]] = {}
    served: dict[str, list[str]] = {}
    for source in SOURCES:
        texts = load_domain(source)
        order = rng.permutation(len(texts))
        n_train = experts_per_source * TEXTS_PER_EXPERT
        for i in range(experts_per_source):
            train[f"{source}-{i}"] = [
                texts[j] for j in order[i * TEXTS_PER_EXPERT : (i + 1) * TEXTS_PER_EXPERT]
            ]
        pool = [texts[j] for j in order[n_train : n_train + served_per_source]]
        half = len(pool) // 2
        served[source] = pool[:half] + [" ".join(t.split()[:SHORT_WORDS]) for t in pool[half:]]

    _log(
        f"fitting {len(train)} experts of {TEXTS_PER_EXPERT} texts, adapting to {sum(map(len, served.values()))} prompts"
    )
    router = Router(progress=False, keep_token_ids=False).fit(train)
    prompts = [p for ps in served.values() for p in ps]
    router.adapt(prompts)
    with tempfile.TemporaryDirectory() as tmp:
        folder = router.save_pretrained(Path(tmp) / "router")
        saved = read_saved(Path(folder), TokenEmbeddings.default().matrix)
        artifact_files = sorted(p.name for p in Path(folder).iterdir())

    # ground truth: the router's own tokenizer, excluded ids dropped as counting drops them
    emb = router.embeddings
    keep = saved.countable

    def countable_ids(arrays: Sequence[np.ndarray]) -> list[list[int]]:
        return [[int(t) for t in a if keep[int(t)]] for a in arrays]

    true_texts = {
        name: [t for t in countable_ids(emb.encode_batch(texts)) if t] for name, texts in train.items()
    }
    flat, lengths = encode_prompts(router.state.tokenizer, prompts, router.config.max_tokens)
    split = np.split(flat, np.cumsum(lengths)[:-1])
    true_prompts = countable_ids(split)
    prompt_source = [s for s, ps in served.items() for _ in ps]
    used = [i for i, t in enumerate(true_prompts) if t]

    # ---- window rows
    attack_start = time.perf_counter()
    per_source: dict[str, Any] = {s: {"what": SOURCES[s]} for s in SOURCES}
    examples: list[dict[str, str]] = []
    # the probe: per source, its texts' rows (÷ their weight) and true windows, up to probe_limit windows
    probe_texts: dict[str, list[tuple[np.ndarray, list[list[int]]]]] = {s: [] for s in SOURCES}
    sums: list[np.ndarray] = []
    caps: list[int] = []
    sum_truth: list[list[int]] = []
    sum_where: list[tuple[int, int]] = []
    parse_ok: dict[str, list[bool]] = {s: [] for s in SOURCES}
    forms: dict[str, dict[str, int]] = {s: {"rows": 0, "other": 0} for s in SOURCES}
    texts_meta: list[tuple[str, str, int, list[int]]] = []  # (source, expert, text index, sum indices)
    for name, rows, form in zip(saved.experts, saved.rows, saved.forms):
        source = name.rsplit("-", 1)[0]
        if int(form) != 2 or rows.shape[0] == 0:
            forms[source]["other"] += 1
            continue
        forms[source]["rows"] += 1
        truth = [w for t in true_texts[name] for w in windows_of(t, TEXT_WINDOW)]
        if len(truth) != rows.shape[0]:
            raise RuntimeError(f"{name}: {rows.shape[0]} rows but {len(truth)} true windows")
        at = 0
        for t in true_texts[name]:
            wins = windows_of(t, TEXT_WINDOW)
            taken = sum(len(w) for _, w in probe_texts[source])
            if probe_limit is None or not taken or taken + len(wins) <= probe_limit:
                probe_texts[source].append(
                    (rows[at : at + len(wins), :-1] / rows[at : at + len(wins), -1:], wins)
                )
            at += len(wins)
        parsed = parse_texts(rows[:, -1], TEXT_WINDOW, WINDOW_WEIGHT)
        parse_ok[source].append(parsed is not None and len(parsed) == len(true_texts[name]))
        if parsed is None or len(parsed) != len(true_texts[name]):
            continue
        for t_index, (text, true_ids) in enumerate(zip(parsed, true_texts[name])):
            s = unmix(rows, text, TEXT_WINDOW, WINDOW_WEIGHT)
            first = len(sums)
            sums += list(s)
            wins = windows_of(true_ids, TEXT_WINDOW)
            caps += [TEXT_WINDOW] * text.windows if text.windows > 1 else [TEXT_WINDOW]
            if text.windows > 1:
                caps[-1] = text.last
            sum_truth += wins
            sum_where.append((text.windows, text.last))
            texts_meta.append((source, name, t_index, list(range(first, len(sums)))))

    probe_order = [(s, k) for s in SOURCES for k in range(len(probe_texts[s]))]
    probe_rows = [probe_texts[s][k][0] for s, k in probe_order]
    _log(f"probe: OMP of {sum(len(r) for r in probe_rows)} window rows")
    probe = omp(
        np.concatenate(probe_rows),
        np.full(sum(len(r) for r in probe_rows), PROBE_ATOMS),
        saved.matrix,
        keep,
        "probe" if progress else "",
    )
    probe_iter = iter(probe_tokens(d) for d in probe)
    probe_got = {key: [next(probe_iter) for _ in rows] for key, rows in zip(probe_order, probe_rows)}
    _log(f"unmixed: OMP of {len(sums)} window sums")
    decoded = omp(np.asarray(sums), np.asarray(caps), saved.matrix, keep, "unmixed" if progress else "")
    one_window = {m[3][0] for m, w in zip(texts_meta, sum_where) if w[0] == 1}
    omp_got = [
        one_window_tokens(d, TEXT_WINDOW) if i in one_window else integer_tokens(d)
        for i, d in enumerate(decoded)
    ]
    # a one-window text's target is its mean: its length is the one its decoding took
    sizes = np.array(
        [len(g) if i in one_window else c for i, (g, c) in enumerate(zip(omp_got, caps))], np.int64
    )
    scaled = np.asarray(sums) * np.where([i in one_window for i in range(len(sums))], sizes, 1)[:, None]
    unmixed_got = refine(scaled, omp_got, sizes, saved.matrix, keep)
    _log(f"unmixed: NNLS of {len(sums)} window sums")
    nnls_found = nnls_decode(
        np.asarray(sums), saved.matrix, keep, add=2 * TEXT_WINDOW, progress="unmixed NNLS" if progress else ""
    )
    nnls_got = [
        one_window_tokens(d, TEXT_WINDOW) if i in one_window else integer_tokens(d)
        for i, d in enumerate(nnls_found)
    ]
    for source in SOURCES:
        r = per_source[source]
        r["experts"] = forms[source]
        r["texts"] = sum(len(true_texts[n]) for n in train if n.startswith(source + "-"))
        r["parsed_experts"] = sum(parse_ok[source])
        pairs = [(probe_got[source, k], wins) for k, (_, wins) in enumerate(probe_texts[source])]
        r["probe_windows"] = score([(g, w) for got, wins in pairs for g, w in zip(got, wins)])
        r["probe_texts"] = score(
            [([t for g in got for t in g], [t for w in wins for t in w]) for got, wins in pairs]
        )
        metas = [m for m in texts_meta if m[0] == source]
        r["unmixed_omp_windows"] = score([(omp_got[i], sum_truth[i]) for m in metas for i in m[3]])
        r["unmixed_windows"] = score([(unmixed_got[i], sum_truth[i]) for m in metas for i in m[3]])
        r["unmixed_nnls_windows"] = score([(nnls_got[i], sum_truth[i]) for m in metas for i in m[3]])
        r["unmixed_nnls_texts"] = score(
            [([t for i in m[3] for t in nnls_got[i]], [t for i in m[3] for t in sum_truth[i]]) for m in metas]
        )
        r["unmixed_texts"] = score(
            [
                ([t for i in m[3] for t in unmixed_got[i]], [t for i in m[3] for t in sum_truth[i]])
                for m in metas
            ]
        )
        if metas:
            m = max(metas[:3], key=lambda m: len(m[3]))
            ids_true = [t for i in m[3] for t in sum_truth[i]]
            ids_got = [t for i in m[3] for t in unmixed_got[i]]
            examples.append(
                {
                    "source": source,
                    "kind": "training text (unmixed rows; order inside each 8-token window is the attack's)",
                    "true": emb.tokenizer.decode(ids_true),
                    "recovered": emb.tokenizer.decode(ids_got),
                }
            )

    # ---- adaptation means
    if saved.means.shape[0] != len(used):
        raise RuntimeError(
            f"{saved.means.shape[0]} adaptation means but {len(used)} prompts with a countable token"
        )
    counts = saved.tokens.astype(np.int64)
    targets = saved.means * counts[:, None]
    mean_greedy: list[list[int]] | None = None
    if greedy_means:
        _log(f"mean x count: OMP + swaps of {len(targets)} adapted prompts")
        dec = omp(
            targets, np.minimum(counts, MEAN_ATOMS), saved.matrix, keep, "means OMP" if progress else ""
        )
        mean_greedy = refine(targets, [integer_tokens(d) for d in dec], counts, saved.matrix, keep)
    _log(f"mean x count: NNLS of {len(targets)} adapted prompts")
    mean_got = [
        integer_tokens(d)
        for d in nnls_decode(targets, saved.matrix, keep, progress="means NNLS" if progress else "")
    ]

    def by_bucket(got: Sequence[Sequence[int]], idx: Sequence[int]) -> dict[str, Any]:
        found = {
            label: score(
                [(got[k], true_prompts[used[k]]) for k in idx if lo <= len(true_prompts[used[k]]) <= hi]
            )
            for label, lo, hi in BUCKETS
        }
        return {**found, "all": score([(got[k], true_prompts[used[k]]) for k in idx])}

    for source in SOURCES:
        idx = [k for k, i in enumerate(used) if prompt_source[i] == source]
        per_source[source]["adapted"] = by_bucket(mean_got, idx)
        if mean_greedy is not None:
            per_source[source]["adapted_greedy"] = by_bucket(mean_greedy, idx)
    by_len = sorted(range(len(used)), key=lambda k: len(true_prompts[used[k]]))
    for k in (by_len[len(by_len) // 4], by_len[(3 * len(by_len)) // 4]):
        examples.append(
            {
                "source": prompt_source[used[k]],
                "kind": f"adapted prompt of {len(true_prompts[used[k]])} tokens (mean x count; order is the attack's)",
                "true": emb.tokenizer.decode(true_prompts[used[k]]),
                "recovered": emb.tokenizer.decode(mean_got[k]),
            }
        )
    return {
        "experts_per_source": experts_per_source,
        "texts_per_expert": TEXTS_PER_EXPERT,
        "served_per_source": served_per_source,
        "window": TEXT_WINDOW,
        "probe_windows_limit": probe_limit,
        "artifact_files": artifact_files,
        "sources": per_source,
        "examples": examples,
        "attack_seconds": time.perf_counter() - attack_start,
        "total_seconds": time.perf_counter() - started,
    }


def _pct(x: Any) -> str:
    return f"{100 * float(x):.1f}%" if isinstance(x, (int, float)) else "–"


def markdown(res: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    lines = [
        "| source | attack on the window rows | windows | tokens | tokens recovered | precision | "
        "windows exact | texts exact |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for source, r in res["sources"].items():
        for attack, key in (
            ("probe", "probe"),
            ("unmixed, OMP", "unmixed_omp"),
            ("unmixed, OMP + swaps", "unmixed"),
            ("unmixed, NNLS", "unmixed_nnls"),
        ):
            w = r[f"{key}_windows"]
            texts = r.get(f"{key}_texts", {})
            lines.append(
                f"| {source} ({r['what']}) | {attack} | {w['n']} | {w['tokens']} | {_pct(w['token_recall'])} | "
                f"{_pct(w['token_precision'])} | {_pct(w['exact'])} | "
                f"{_pct(texts['exact']) + ' of ' + str(texts['n']) if texts else '–'} |"
            )
    lines += [
        "",
        "| source | attack on the adapted means | prompt tokens | prompts | tokens | tokens recovered | "
        "precision | exact |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for source, r in res["sources"].items():
        for attack, key in (
            ("mean x count, NNLS", "adapted"),
            ("mean x count, OMP + swaps", "adapted_greedy"),
        ):
            for bucket, _, _ in BUCKETS if key in r else ():
                a = r[key][bucket]
                if not a["n"]:
                    continue
                lines.append(
                    f"| {source} | {attack} | {bucket} | {a['n']} | {a['tokens']} | {_pct(a['token_recall'])} | "
                    f"{_pct(a['token_precision'])} | {_pct(a['exact'])} |"
                )
    forms = ", ".join(
        f"{s} {r['experts']['rows']}/{r['experts']['rows'] + r['experts']['other']}"
        for s, r in res["sources"].items()
    )
    parsed = ", ".join(f"{s} {r['parsed_experts']}/{r['experts']['rows']}" for s, r in res["sources"].items())
    limit = res.get("probe_windows_limit")
    lines += [
        "",
        f"{res['experts_per_source']} experts of {res['texts_per_expert']} texts per source (saved as rows: {forms}; "
        f"rows split into texts by their weights alone: {parsed}), {res['served_per_source']} served prompts per "
        f"source (half cut to {SHORT_WORDS} words). Exact = the token multiset (order inside a window or prompt "
        "is not in the statistics; the order of windows is). "
        + (f"The probe ran on the first texts of each source, up to {limit} windows. " if limit else "")
        + f"Attacks {res['attack_seconds']:.0f} s, run {res['total_seconds']:.0f} s.",
        "",
    ]
    for ex in res["examples"]:
        lines += [
            f"**{ex['source']}, {ex['kind']}**",
            "",
            f"- true: `{_one_line(ex['true'])}`",
            f"- recovered: `{_one_line(ex['recovered'])}`",
            "",
        ]
    return "\n".join(lines).rstrip()


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split()).replace("`", "'")
    return text if len(text) <= limit else text[:limit] + " …"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 expert and 12 served prompts per source")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    args = ap.parse_args(argv)
    res = run(
        QUICK_EXPERTS if args.quick else EXPERTS,
        QUICK_SERVED if args.quick else SERVED,
        QUICK_PROBE_WINDOWS if args.quick else None,
        greedy_means=not args.quick,
        progress=not args.no_progress,
    )
    res["quick"] = bool(args.quick)
    res["machine"] = machine()
    publish(res, markdown(res), Path(args.out), "privacy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
