"""Confidence by prompt length, and tuning to a target precision, on held-out halves.

Run: ``python -m benchmarks.tuning [--out benchmarks/results] [--quick]``

For every suite (reasoning4, five and the cross-source checks) the library defaults are fitted on the
train side; the test side is split into halves A (``0::2``) and B (``1::2``). Each half is used as it
is ("natural") and with short prompts added: the first 1, 2, 3 and 5 words of each of its prompts
("mixed lengths"; the project's suites have almost no prompt under 6 tokens, the case the evidence
prior is for).

* ECE (15 bins) on B by countable-token bucket: the defaults without the evidence prior
  (``evidence_tokens=0``), with the default prior, and calibrated on A (``ir3de.routing.tuning.calibrate``: the
  temperature and the prior fitted together).
* Tuning: ``Router.tune(A, target_precision=0.95)``, then precision and coverage of what it routes on
  B, overall and by bucket; and the same with ``per_expert=True``. Then A and B swap roles.
* The default prior: ``n0`` fitted at the default temperature on the mixed-length A halves of the
  suites without a source shift, pooled (what ``RouterConfig.evidence_tokens=None`` uses).

Writes ``tuning.json`` and ``tuning.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from ir3de.routing.prompts import encode_prompts

BUCKETS = ((1, 2), (3, 5), (6, 10), (11, 20), (21, 10**9))
PREFIX_WORDS = (1, 2, 3, 5)
TARGET = 0.95
#: Suites without a source shift: the default prior is fitted on these (a shift makes every prompt
#: over-confident, whatever its length; calibrate on served prompts for that).
IN_DISTRIBUTION = ("reasoning4", "five", "reasoning4-short-prompts")
EXAMPLES = ("IRS", "taxes", "What is a stanza?", "Solve 3x+5=11")


def _bucket_name(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}"


def _with_prefixes(tests: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {}
    for name, texts in tests.items():
        rows = list(texts)
        for w in PREFIX_WORDS:
            rows += [" ".join(t.split()[:w]) for t in texts if len(t.split()) > w]
        out[name] = rows
    return out


def _decisions(router: Any, tests: dict[str, list[str]]) -> dict[str, np.ndarray]:
    from ir3de.evaluation.evaluate import labelled_prompts

    prompts, labels = labelled_prompts(router.experts, tests)
    decisions = router.route_batch(prompts)
    index = {n: i for i, n in enumerate(router.experts)}
    return {
        "confidence": np.array([d.confidence for d in decisions]),
        "correct": np.array(
            [d.top_expert is not None and index[d.top_expert] == y for d, y in zip(decisions, labels)]
        ),
        "routed": np.array([not d.fallback_used for d in decisions]),
        "tokens": np.array([d.num_tokens for d in decisions]),
    }


def _ece_by_bucket(d: dict[str, np.ndarray]) -> dict[str, Any]:
    from ir3de.routing.calibration import calibration_report

    out: dict[str, Any] = {
        "all": {"n": int(d["tokens"].size), "ece": calibration_report(d["confidence"], d["correct"]).ece}
    }
    for lo, hi in BUCKETS:
        m = (d["tokens"] >= lo) & (d["tokens"] <= hi)
        if m.any():
            r = calibration_report(d["confidence"][m], d["correct"][m])
            out[_bucket_name(lo, hi)] = {
                "n": int(m.sum()),
                "ece": r.ece,
                "accuracy": float(d["correct"][m].mean()),
                "mean_confidence": float(d["confidence"][m].mean()),
            }
    return out


def _routed_by_bucket(d: dict[str, np.ndarray]) -> dict[str, Any]:
    def stats(m: np.ndarray) -> dict[str, Any]:
        routed = m & d["routed"]
        return {
            "n": int(m.sum()),
            "coverage": float(routed.sum() / max(m.sum(), 1)),
            "precision": float(d["correct"][routed].mean()) if routed.any() else float("nan"),
            "accuracy_without_abstain": float(d["correct"][m].mean()) if m.any() else float("nan"),
        }

    out = {"all": stats(np.ones_like(d["routed"]))}
    for lo, hi in BUCKETS:
        m = (d["tokens"] >= lo) & (d["tokens"] <= hi)
        if m.any():
            out[_bucket_name(lo, hi)] = stats(m)
    return out


def run_suite(name: str, suite: Any, emb: Any) -> dict[str, Any]:
    from ir3de import Router
    from ir3de.routing.tuning import calibrate

    base = Router(emb, device="cpu", progress=False).fit(suite.train)
    halves = {
        "A": {n: t[0::2] for n, t in suite.test.items()},
        "B": {n: t[1::2] for n, t in suite.test.items()},
    }
    result: dict[str, Any] = {}
    for kind, make in (("natural", lambda t: t), ("mixed", _with_prefixes)):
        a, b = make(halves["A"]), make(halves["B"])
        row: dict[str, Any] = {}
        base.configure(temperature=None, evidence_tokens=0.0, fallback=None, threshold=0.0, thresholds=None)
        row["ece_no_prior"] = _ece_by_bucket(_decisions(base, b))
        base.configure(evidence_tokens=None)
        row["ece_default_prior"] = _ece_by_bucket(_decisions(base, b))
        base.configure(evidence_tokens=0.0)
        router = Router.from_pretrained(
            base.save_pretrained(Path(os.environ["TUNING_TMP"]) / name), embeddings=emb
        )
        t_only = _temperature_only(router, a)
        row["temperature_only"] = t_only["temperature"]
        row["ece_temperature_only"] = _ece_by_bucket(_decisions(router, b))
        t = router.configure(**calibrate(router.state, router.config, a)).config.temperature
        row["calibrated"] = {"temperature": t, "evidence_tokens": router.config.evidence_tokens}
        row["ece_calibrated"] = _ece_by_bucket(_decisions(router, b))
        tuned: dict[str, Any] = {}
        for per_expert in (False, True):
            for tune_on, test_on in (("A", "B"), ("B", "A")):
                r = Router.from_pretrained(Path(os.environ["TUNING_TMP"]) / name, embeddings=emb)
                res = r.tune(
                    make(halves[tune_on]), target_precision=TARGET, per_expert=per_expert, abstain="fallback"
                )
                tuned[f"{'per_expert' if per_expert else 'global'}:{tune_on}->{test_on}"] = {
                    "tuning": res.to_dict(),
                    "held_out": _routed_by_bucket(_decisions(r, make(halves[test_on]))),
                }
        row["tuned"] = tuned
        result[kind] = row
    base.configure(evidence_tokens=None, temperature=None, fallback=None, threshold=0.0, thresholds=None)
    result["examples"] = {
        p: {"expert": (d := base.route(p)).expert, "confidence": d.confidence, "num_tokens": d.num_tokens}
        for p in EXAMPLES
    }
    base.configure(evidence_tokens=0.0)
    result["examples_no_prior"] = {p: base.route(p).confidence for p in EXAMPLES}
    return result


def _temperature_only(router: Any, tests: dict[str, list[str]]) -> dict[str, float]:
    from ir3de.routing.calibration import fit_temperature, labelled_prompts
    from ir3de.routing.prompts import select

    prompts, labels = labelled_prompts(router.experts, tests)
    ids, lengths = encode_prompts(router.state.tokenizer, prompts, router.config.max_tokens)
    sel = select(router.state, router.config, ids, lengths)
    keep = sel.winners >= 0
    t = fit_temperature(sel.evidence[keep], labels[keep])
    router.configure(temperature=t, evidence_tokens=0.0)
    return {"temperature": t}


def default_prior(suites: dict[str, Any], emb: Any) -> dict[str, Any]:
    """``n0`` at the default temperature, fitted on the pooled mixed-length A halves."""
    import scipy.optimize

    from ir3de import Router
    from ir3de.routing.calibration import _nll, labelled_prompts
    from ir3de.routing.prompts import select

    zs, ns, ys = [], [], []
    for suite in suites.values():
        router = Router(emb, device="cpu", progress=False, evidence_tokens=0.0).fit(suite.train)
        prompts, labels = labelled_prompts(
            router.experts, _with_prefixes({n: t[0::2] for n, t in suite.test.items()})
        )
        ids, lengths = encode_prompts(router.state.tokenizer, prompts, router.config.max_tokens)
        sel = select(router.state, router.config, ids, lengths)
        keep = sel.winners >= 0
        zs.append(sel.evidence[keep] / router.config.effective_temperature)
        ns.append(sel.num_countable[keep].astype(np.float64))
        ys.append(labels[keep])

    def fit(groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
        """n0 minimising the prompt-weighted NLL over suites (each suite has its own experts)."""
        total = sum(y.size for _, _, y in groups)

        def loss(u: float) -> float:
            return sum(_nll(z * (n / (n + np.exp(u)))[:, None], y) * y.size for z, n, y in groups) / total

        return float(np.exp(scipy.optimize.minimize_scalar(loss, bounds=(-9, 7), method="bounded").x))

    groups = list(zip(zs, ns, ys))
    per_suite = {name: fit([g]) for name, g in zip(suites, groups)}
    pool = [name for name in suites if name in IN_DISTRIBUTION]
    pooled = fit([g for name, g in zip(suites, groups) if name in IN_DISTRIBUTION])
    return {"pooled": pooled, "pooled_over": pool, "per_suite": per_suite}


def _f(x: float) -> str:
    return "–" if x != x else f"{x:.3f}"


def markdown(results: dict[str, Any], prior: dict[str, Any]) -> str:
    lines = [
        f"Default evidence prior n0 (fitted at the default temperature on the mixed-length A halves of "
        f"{', '.join(prior['pooled_over'])}): {prior['pooled']:.2f} "
        f"(per suite: {', '.join(f'{k} {v:.2f}' for k, v in prior['per_suite'].items())})",
        "",
        "Tuned to precision 0.95 on half A, measured on half B (and B→A), global threshold:",
        "",
        "| suite | prompts | accuracy (no abstain) | precision A→B | coverage A→B | precision B→A | coverage B→A | per-expert precision A→B | per-expert coverage A→B |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("natural", "mixed"):
        for name, r in results.items():
            t = r[kind]["tuned"]
            ab, ba, pe = (
                t["global:A->B"]["held_out"]["all"],
                t["global:B->A"]["held_out"]["all"],
                t["per_expert:A->B"]["held_out"]["all"],
            )
            label = name if kind == "natural" else f"{name} + 1/2/3/5-word prefixes"
            lines.append(
                f"| {label} | {ab['n']} | {_f(ab['accuracy_without_abstain'])} | {_f(ab['precision'])} | {_f(ab['coverage'])} | "
                f"{_f(ba['precision'])} | {_f(ba['coverage'])} | {_f(pe['precision'])} | {_f(pe['coverage'])} |"
            )
    names = [_bucket_name(lo, hi) for lo, hi in BUCKETS]
    lines += [
        "",
        "By countable tokens (mixed lengths, global threshold tuned on A, measured on B): precision / coverage",
        "",
    ]
    lines += ["| suite | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name, r in results.items():
        held = r["mixed"]["tuned"]["global:A->B"]["held_out"]
        cells = [
            f"{_f(held[b]['precision'])} / {_f(held[b]['coverage'])}" if b in held else "" for b in names
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "ECE on half B by countable tokens (mixed lengths): no prior → default prior → calibrated on A (temperature + prior); temperature-only calibration in brackets",
        "",
    ]
    lines += ["| suite | all | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for name, r in results.items():
        m = r["mixed"]
        cells = []
        for b in ["all", *names]:
            if b in m["ece_no_prior"]:
                cells.append(
                    f"{m['ece_no_prior'][b]['ece']:.3f} → {m['ece_default_prior'][b]['ece']:.3f} → {m['ece_calibrated'][b]['ece']:.3f} "
                    f"({m['ece_temperature_only'][b]['ece']:.3f})"
                )
            else:
                cells.append("")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ex = next(iter(results.values()))
    lines += ["", "Short prompts (first suite's router): confidence without → with the default prior", ""]
    lines += ["| prompt | expert | tokens | no prior | default prior |", "|---|---|---:|---:|---:|"]
    for p, d in ex["examples"].items():
        lines.append(
            f"| {p} | {d['expert']} | {d['num_tokens']} | {ex['examples_no_prior'][p]:.3f} | {d['confidence']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    from ir3de import TokenEmbeddings
    from ir3de.data.datasets import CROSS_SOURCE, load_cross_source, load_suite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--quick", action="store_true", help="reasoning4 and the short-prompt check, 200 texts per side"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    emb = TokenEmbeddings.default()
    cap = 200 if args.quick else 1000
    suites: dict[str, Any] = {"reasoning4": load_suite("reasoning4", max_per_side=cap)}
    if args.quick:
        suites["reasoning4-short-prompts"] = load_cross_source("reasoning4-short-prompts", max_per_side=cap)
    else:
        suites["five"] = load_suite("five")
        suites.update({name: load_cross_source(name) for name in CROSS_SOURCE})
    start = time.perf_counter()
    prior = default_prior(suites, emb)
    print("default prior", prior, flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TUNING_TMP"] = tmp
        for name, suite in suites.items():
            results[name] = run_suite(name, suite, emb)
            print(
                name,
                json.dumps(results[name]["natural"]["tuned"]["global:A->B"]["held_out"]["all"]),
                flush=True,
            )
    payload = {"default_prior": prior, "suites": results, "seconds": time.perf_counter() - start}
    (out / "tuning.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    table = markdown(results, prior)
    (out / "tuning.md").write_text(table)
    print(table)
    return payload


if __name__ == "__main__":
    main()
