"""The routing report: per-expert precision/recall/F1, confusion, precision-vs-coverage curve and
misrouted prompts with their deciding tokens — from Python and from ``ir3de eval`` — checked
against plain loops over the router's own decisions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ir3de import Router
from ir3de.cli.main import main
from ir3de.evaluation.evaluate import evaluate, format_report
from ir3de.evaluation.plots import plot_precision_coverage
from ir3de.routing.calibration import labelled_prompts
from plot_checks import captured_figures, check_png, line_data


@pytest.fixture(scope="module")
def report_router(smollm2, small_corpus):
    return Router(smollm2, device="cpu", progress=False).fit(small_corpus)


@pytest.fixture(scope="module")
def report_tests(reasoning4):
    tests = {n: t[60:110] for n, t in reasoning4.test.items()}
    # short prefixes make some prompts misroute, so the report has something to show
    return {n: t + [" ".join(x.split()[:2]) for x in t] for n, t in tests.items()}


def test_report_matches_plain_loops(report_router, report_tests):
    router = report_router
    experts = router.experts
    report = evaluate(router, report_tests, details=True, max_misrouted=None)
    prompts, labels = labelled_prompts(experts, report_tests)
    decisions = router.route_batch(prompts)
    routed = [experts.index(d.top_expert) for d in decisions]
    for j, name in enumerate(experts):
        tp = sum(1 for r, y in zip(routed, labels) if r == j and y == j)
        fp = sum(1 for r, y in zip(routed, labels) if r == j and y != j)
        fn = sum(1 for r, y in zip(routed, labels) if r != j and y == j)
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        assert report.per_expert_precision[name] == pytest.approx(precision)
        assert report.per_expert_recall[name] == pytest.approx(recall)
        assert report.per_expert_f1[name] == pytest.approx(2 * precision * recall / (precision + recall))
        for k in range(len(experts)):
            assert report.confusion[j, k] == sum(1 for r, y in zip(routed, labels) if y == j and r == k)
    # precision-vs-coverage: for each distinct confidence, the routed share and its precision
    conf = [d.confidence for d in decisions]
    ok = [r == y for r, y in zip(routed, labels)]
    curve = report.extra["precision_coverage"]
    assert [p["threshold"] for p in curve] == sorted(set(conf), reverse=True)
    for p in curve[:: max(1, len(curve) // 15)]:
        kept = [o for c, o in zip(conf, ok) if c >= p["threshold"]]
        assert p["coverage"] == pytest.approx(len(kept) / len(conf))
        assert p["precision"] == pytest.approx(sum(kept) / len(kept))
    # misrouted: every wrong prompt, most confident first, with its deciding tokens
    wrong = [i for i, o in enumerate(ok) if not o]
    misrouted = report.extra["misrouted"]
    assert report.extra["num_misrouted"] == len(wrong) == len(misrouted) > 0
    assert sorted(m["prompt"] for m in misrouted) == sorted(prompts[i] for i in wrong)
    assert [m["confidence"] for m in misrouted] == sorted((conf[i] for i in wrong), reverse=True)
    first = misrouted[0]
    i = prompts.index(first["prompt"])
    assert first["expert"] == experts[labels[i]] != first["routed_to"] == decisions[i].top_expert
    assert [t["text"] for t in first["tokens"]] == [t.text for t in decisions[i].tokens[:5]]
    assert evaluate(router, report_tests, details=True, max_misrouted=3).extra["misrouted"] == misrouted[:3]
    assert report.extra["at_threshold"] == {
        "fallback": None,
        "coverage": 1.0,
        "precision": pytest.approx(np.mean(ok)),
        "abstained": 0,
    }
    json.dumps(report.to_dict())  # the JSON form is serialisable as it is
    text = format_report(report)
    for name in experts:
        line = next(x for x in text.splitlines() if x.strip().startswith(name + " "))
        assert f"{report.per_expert_f1[name]:.4f}" in line
    assert "precision vs coverage" in text and f"misrouted prompts: {len(wrong)}" in text
    assert "deciding tokens:" in text


def test_report_counts_what_a_tuned_router_abstains(report_router, report_tests):
    router = Router(report_router.embeddings, config=report_router.config, device="cpu", progress=False)
    router.fit(report_router.statistics).configure(fallback="general", threshold=0.9)
    report = evaluate(router, report_tests, details=True)
    decisions = router.route_batch(labelled_prompts(router.experts, report_tests)[0])
    kept = [d for d in decisions if not d.fallback_used]
    at = report.extra["at_threshold"]
    assert at["abstained"] == len(decisions) - len(kept) > 0
    assert at["coverage"] == pytest.approx(len(kept) / len(decisions))
    assert "sent to 'general'" in format_report(report)


def test_precision_coverage_plot(tmp_path, monkeypatch):
    curve = [
        {"threshold": 0.9, "coverage": 0.25, "precision": 1.0},
        {"threshold": 0.5, "coverage": 1.0, "precision": 0.75},
    ]
    with captured_figures(monkeypatch) as figures:
        png = plot_precision_coverage({"dev": curve}, tmp_path / "pc.png", target=0.95)
    check_png(png, figures[0])
    lines = line_data(figures[0].axes[0])
    assert lines["dev"] == ([0.25, 1.0], [1.0, 0.75])
    assert lines["target 0.95"][1] == [0.95, 0.95]


def test_cli_eval_report(report_router, report_tests, tmp_path, capsys):
    folder = report_router.save_pretrained(tmp_path / "r")
    path = tmp_path / "test.jsonl"
    with open(path, "w") as fh:
        for label, texts in report_tests.items():
            for t in texts:
                fh.write(json.dumps({"text": t, "label": label}) + "\n")
    assert main(["eval", str(folder), "--labelled", str(path), "--json", "--plots", str(tmp_path / "p")]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = evaluate(report_router, report_tests, details=True)
    assert out["per_expert_f1"] == pytest.approx(expected.per_expert_f1)
    assert out["num_misrouted"] == expected.extra["num_misrouted"]
    assert [m["prompt"] for m in out["misrouted"]] == [m["prompt"] for m in expected.extra["misrouted"]]
    assert sorted(p.rsplit("/", 1)[-1] for p in out["plots"]) == ["confusion.png", "precision_coverage.png"]
    assert main(["eval", str(folder), "--labelled", str(path), "--max-misrouted", "2"]) == 0
    text = capsys.readouterr().out
    assert "misrouted prompts:" in text and "2 shown" in text and "F1" in text
