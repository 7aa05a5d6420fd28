"""Does confidence mean something? Calibration and abstain-vs-accuracy of the default router.

Run: ``python -m benchmarks.quality [--out benchmarks/results]``

* Calibration, per suite (reasoning4, five, the cross-source checks): the test side is split into a
  dev half (used only by ``ir3de.routing.tuning.calibrate``) and an evaluation half; expected calibration error
  (15 bins) of the library defaults before and after calibration, and of the paper preset's vote
  shares, on the evaluation half. Reliability diagram: ``reliability.png``.
* Abstain: a router fitted on reasoning4 (math, code, instructions, multilingual) sees its in-domain
  test prompts and HealthBench medical prompts, which no expert covers. For each confidence threshold:
  in-domain coverage and accuracy, and the share of medical prompts sent to the fallback
  (``abstain.png``).

Writes ``quality.json`` and ``quality.md``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def _confidence(router: Any, tests: dict[str, list[str]]) -> tuple[np.ndarray, np.ndarray]:
    from ir3de.evaluation.evaluate import labelled_prompts

    prompts, labels = labelled_prompts(router.experts, tests)
    decisions = router.route_batch(prompts)
    conf = np.array([d.confidence for d in decisions])
    index = {n: i for i, n in enumerate(router.experts)}
    correct = np.array([index[d.top_expert] == y for d, y in zip(decisions, labels)])
    return conf, correct


def calibration(suites: dict[str, Any], emb: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from ir3de import Router, RouterConfig
    from ir3de.routing.calibration import calibration_report
    from ir3de.routing.tuning import calibrate

    rows: dict[str, Any] = {}
    diagrams: dict[str, Any] = {}
    for name, suite in suites.items():
        dev = {n: t[0::2] for n, t in suite.test.items()}
        held = {n: t[1::2] for n, t in suite.test.items()}
        default = Router(emb, device="cpu", progress=False).fit(suite.train)
        conf, ok = _confidence(default, held)
        raw = calibration_report(conf, ok)
        temperature = default.configure(**calibrate(default.state, default.config, dev)).config.temperature
        conf_cal, ok_cal = _confidence(default, held)
        cal = calibration_report(conf_cal, ok_cal)
        paper = Router(emb, config=RouterConfig.paper(), device="cpu", progress=False).fit(suite.train)
        conf_p, ok_p = _confidence(paper, held)
        vote = calibration_report(conf_p, ok_p)
        rows[name] = {
            "accuracy_default": float(ok.mean()),
            "ece_default": raw.ece,
            "temperature": temperature,
            "ece_default_calibrated": cal.ece,
            "accuracy_paper": float(ok_p.mean()),
            "ece_paper_vote_share": vote.ece,
            "num_eval_prompts": int(ok.size),
        }
        if name == "reasoning4":
            diagrams = {"defaults": raw, "defaults, calibrated": cal, "paper preset (vote share)": vote}
        print(
            name, {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[name].items()}, flush=True
        )
    return rows, diagrams


def abstain(emb: Any) -> list[dict[str, float]]:
    from ir3de import Router
    from ir3de.data.datasets import load_domain, load_suite
    from ir3de.routing.calibration import abstain_curve
    from ir3de.routing.tuning import calibrate

    suite = load_suite("reasoning4")
    dev = {n: t[0::2] for n, t in suite.test.items()}
    held = {n: t[1::2] for n, t in suite.test.items()}
    router = Router(emb, device="cpu", progress=False).fit(suite.train)
    router.configure(**calibrate(router.state, router.config, dev))
    conf, ok = _confidence(router, held)
    medical = load_domain("medical")
    ood = np.array([d.confidence for d in router.route_batch(medical)])
    return abstain_curve(conf, ok, ood, THRESHOLDS)


def plot_abstain(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    x = [r["out_of_domain_abstained"] for r in rows]
    ax.plot(x, [r["in_domain_coverage"] for r in rows], marker="o", label="in-domain prompts answered")
    ax.plot(x, [r["in_domain_accuracy_answered"] for r in rows], marker="s", label="accuracy of answered")
    for r in rows:
        ax.annotate(
            f"t={r['threshold']}", (r["out_of_domain_abstained"], r["in_domain_coverage"]), fontsize=7
        )
    ax.set_xlabel("out-of-domain (medical) prompts abstained")
    ax.set_ylabel("fraction")
    ax.set_title("Abstain trade-off (reasoning4 router, calibrated)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(cal: dict[str, Any], abst: list[dict[str, float]]) -> str:
    lines = [
        "| suite | accuracy (defaults) | ECE defaults | temperature | ECE calibrated | accuracy (paper) | ECE paper vote share |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in cal.items():
        lines.append(
            f"| {name} | {r['accuracy_default']:.4f} | {r['ece_default']:.4f} | {r['temperature']:.3g} | "
            f"{r['ece_default_calibrated']:.4f} | {r['accuracy_paper']:.4f} | {r['ece_paper_vote_share']:.4f} |"
        )
    lines += [
        "",
        "| threshold | in-domain answered | accuracy of answered | overall in-domain accuracy | medical prompts abstained |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in abst:
        lines.append(
            f"| {r['threshold']} | {r['in_domain_coverage']:.3f} | {r['in_domain_accuracy_answered']:.4f} | "
            f"{r['in_domain_accuracy_overall']:.4f} | {r['out_of_domain_abstained']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from ir3de import TokenEmbeddings
    from ir3de.data.datasets import CROSS_SOURCE, load_cross_source, load_suite
    from ir3de.evaluation.plots import plot_reliability

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="reasoning4 only, 200 texts per side")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    emb = TokenEmbeddings.default()
    cap = 200 if args.quick else 1000
    suites: dict[str, Any] = {"reasoning4": load_suite("reasoning4", max_per_side=cap)}
    if not args.quick:
        suites["five"] = load_suite("five")
        suites.update({name: load_cross_source(name) for name in CROSS_SOURCE})
    cal, diagrams = calibration(suites, emb)
    abst = abstain(emb)
    plot_reliability(diagrams, out / "reliability.png", title="Reliability on reasoning4 (held-out half)")
    plot_abstain(abst, out / "abstain.png")
    result = {"calibration": cal, "abstain": abst}
    (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(cal, abst)
    (out / "quality.md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
