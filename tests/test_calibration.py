"""Confidence calibration: ECE arithmetic, temperature fitting, abstain curves, per-token evidence."""

from __future__ import annotations

import numpy as np
import pytest

from ir3de import Router
from ir3de.evaluation.evaluate import labelled_prompts
from ir3de.evaluation.plots import plot_reliability
from ir3de.routing.calibration import abstain_curve, calibration_report
from ir3de.routing.tuning import calibrate
from plot_checks import captured_figures, check_png, line_data


def test_ece_by_hand():
    conf = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    r = calibration_report(conf, correct, bins=10)
    # bin [0.9,1.0): mean conf 0.95, acc 0.5 -> gap 0.45; bin [0.5,0.6): 0.55 vs 1.0 -> gap 0.45
    assert r.ece == pytest.approx(0.45)
    assert r.max_gap == pytest.approx(0.45)
    assert [b[2] for b in r.bins] == [2, 2]
    perfect = calibration_report(np.array([1.0, 1.0, 0.5, 0.5]), np.array([True, True, True, False]))
    assert perfect.ece == pytest.approx(0.0)
    with pytest.raises(ValueError):
        calibration_report(np.zeros(3), np.zeros(2, bool))


def test_abstain_curve_by_hand():
    rows = abstain_curve(
        np.array([0.9, 0.6, 0.3]), np.array([True, False, True]), np.array([0.2, 0.8]), [0.5]
    )
    assert rows == [
        {
            "threshold": 0.5,
            "in_domain_coverage": pytest.approx(2 / 3),
            "in_domain_accuracy_answered": 0.5,
            "in_domain_accuracy_overall": pytest.approx(1 / 3),
            "out_of_domain_abstained": 0.5,
        }
    ]


def _confidences(router, tests):
    prompts, labels = labelled_prompts(router.experts, tests)
    decisions = router.route_batch(prompts)
    conf = np.array([d.confidence for d in decisions])
    correct = np.array([router.experts.index(d.top_expert) == y for d, y in zip(decisions, labels)])
    return conf, correct, [d.expert for d in decisions]


def test_calibrate_fits_a_temperature_without_changing_routes(
    smollm2, small_corpus, reasoning4, tmp_path, monkeypatch
):
    router = Router(smollm2, device="cpu", progress=False, selector="avg").fit(small_corpus)
    dev = {n: t[:60] for n, t in reasoning4.test.items()}
    held = {n: t[60:160] for n, t in reasoning4.test.items()}
    conf_before, correct, routes_before = _confidences(router, held)
    settings = calibrate(router.state, router.config, dev)
    temperature = router.configure(**settings).config.temperature
    conf_after, correct_after, routes_after = _confidences(router, held)
    assert routes_after == routes_before and np.array_equal(correct, correct_after)
    assert router.config.temperature == temperature != 1.0
    # mean-logit softmax is badly under-confident before calibration (logits are small); calibration fixes it
    assert calibration_report(conf_after, correct).ece < calibration_report(conf_before, correct).ece
    assert calibration_report(conf_after, correct).ece < 0.05
    loaded = Router.from_pretrained(router.save_pretrained(tmp_path / "r"))
    assert loaded.config.temperature == temperature
    reports = {
        "before": calibration_report(conf_before, correct),
        "after": calibration_report(conf_after, correct),
    }
    with captured_figures(monkeypatch) as figures:
        png = plot_reliability(reports, tmp_path / "reliability.png")
    check_png(png, figures[0])
    lines = line_data(figures[0].axes[0])
    assert lines["perfectly calibrated"] == ([0.0, 1.0], [0.0, 1.0])
    for name, report in reports.items():  # one point per non-empty bin: (mean confidence, accuracy)
        assert lines[f"{name} (ECE {report.ece:.3f})"] == (
            [b[3] for b in report.bins],
            [b[4] for b in report.bins],
        )


def test_calibrate_refuses_vote_shares(paper_router):
    with pytest.raises(ValueError, match="vote shares have no temperature"):
        calibrate(paper_router.state, paper_router.config, {"math": ["What is 2 + 2?"]})


def test_deciding_tokens_carry_per_expert_probabilities(smollm2, small_corpus):
    router = Router(smollm2, device="cpu", progress=False).fit(small_corpus)
    d = router.route("def add(a, b):\n    return a + b")
    assert d.expert == "code" and len(d.tokens) <= 50
    for t in d.tokens:
        assert set(t.probabilities) == set(router.experts)
        assert sum(t.probabilities.values()) == pytest.approx(1.0)
        assert max(t.probabilities, key=t.probabilities.get) == t.vote
    assert d.to_dict()["tokens"][0]["probabilities"] == dict(d.tokens[0].probabilities)
