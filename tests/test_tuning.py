"""Tuning to a target precision, and the evidence prior that keeps few-token prompts from routing
over-confidently: the math against plain loops, and Router.tune / ``ir3de tune`` on a real router."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from ir3de import Router, RouterConfig
from ir3de.cli.main import main
from ir3de.data.labelled import read_labelled
from ir3de.errors import CorpusError, InvalidInputError, UnknownExpertError
from ir3de.routing.calibration import (
    choose_thresholds,
    evidence_scores,
    fit_confidence,
    labelled_prompts,
    precision_coverage,
    threshold_for_precision,
)

# ---------------------------------------------------------------------------------------------- math


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def test_evidence_scores_is_a_length_dependent_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4)) * 3
    n = rng.integers(1, 40, size=50)
    t, n0 = 0.7, 5.0
    shrunk = evidence_scores(_softmax(z / t), n, n0)
    oracle = np.array([_softmax((z[i] / (t * (1 + n0 / n[i])))[None])[0] for i in range(50)])
    np.testing.assert_allclose(shrunk, oracle, rtol=1e-9, atol=1e-12)
    assert np.array_equal(shrunk.argmax(1), z.argmax(1))  # the winner never changes
    for i in range(5):  # the single-prompt (list) path agrees with the batch path
        np.testing.assert_allclose(evidence_scores(_softmax(z / t)[i].tolist(), int(n[i]), n0), shrunk[i])
    assert evidence_scores(_softmax(z), n, 0.0) is not None
    np.testing.assert_array_equal(evidence_scores(_softmax(z), n, 0.0), _softmax(z))
    zero = evidence_scores(np.zeros((2, 3)), np.array([0, 0]), 4.0)
    np.testing.assert_array_equal(zero, np.zeros((2, 3)))  # prompts without countable tokens
    long = evidence_scores(np.array([[0.97, 0.03]]), np.array([10_000]), 4.0)
    assert long[0, 0] == pytest.approx(0.97, abs=1e-3)
    assert evidence_scores([0.97, 0.03], 1, 4.0)[0] < 0.75


def test_fit_confidence_recovers_temperature_and_prior():
    rng = np.random.default_rng(1)
    size = 6000
    n = rng.choice([1, 2, 3, 5, 10, 30, 100], size=size)
    z = rng.normal(size=(size, 3)) * 2
    true_t, true_n0 = 0.5, 6.0
    p = _softmax(z * (n / (n + true_n0))[:, None] / true_t)
    y = np.array([rng.choice(3, p=row) for row in p])
    t, n0 = fit_confidence(z, n, y)
    assert t == pytest.approx(true_t, rel=0.15)
    assert n0 == pytest.approx(true_n0, rel=0.35)
    # labels that do not depend on length: no prior is needed
    y_flat = np.array([rng.choice(3, p=row) for row in _softmax(z / true_t)])
    assert fit_confidence(z, n, y_flat)[1] < 0.5
    with pytest.raises(ValueError):
        fit_confidence(z, np.zeros(size), y)


def _curve_oracle(conf, ok):
    out = []
    for t in sorted(set(conf.tolist()), reverse=True):
        kept = [c >= t for c in conf]
        routed = sum(kept)
        hits = sum(1 for k, o in zip(kept, ok) if k and o)
        out.append((t, routed / len(conf), hits / routed))
    return out


def test_precision_coverage_and_threshold_against_a_plain_loop():
    rng = np.random.default_rng(2)
    for _ in range(20):
        size = int(rng.integers(1, 60))
        conf = np.round(rng.uniform(size=size), 1)  # many ties
        ok = rng.uniform(size=size) < conf
        curve = precision_coverage(conf, ok)
        oracle = _curve_oracle(conf, ok)
        assert [(p["threshold"], p["coverage"], p["precision"]) for p in curve] == [
            (t, pytest.approx(c), pytest.approx(p)) for t, c, p in oracle
        ]
        target = float(rng.choice([0.6, 0.8, 0.95]))
        threshold, precision, coverage = threshold_for_precision(conf, ok, target)
        feasible = [(c, p, t) for t, c, p in oracle if p >= target]
        if not feasible:
            assert coverage == 0.0 and math.isnan(precision) and threshold > conf.max() - 1e-12
            continue
        best_cov, best_prec, _ = max(feasible)
        assert coverage == pytest.approx(best_cov) and precision == pytest.approx(best_prec)
        kept = conf >= threshold
        assert kept.mean() == pytest.approx(best_cov) and ok[kept].mean() == pytest.approx(best_prec)
    with pytest.raises(ValueError):
        threshold_for_precision(np.array([0.5]), np.array([True]), 0.0)


def test_choose_thresholds_per_expert_against_a_plain_loop():
    rng = np.random.default_rng(3)
    conf = np.round(rng.uniform(size=200), 2)
    ok = rng.uniform(size=200) < conf
    to = rng.integers(-1, 3, size=200)  # -1: no countable token
    conf[to < 0] = 0.0
    ok[to < 0] = False
    threshold, thresholds, precision, coverage = choose_thresholds(
        conf, ok, to, ["a", "b", "c"], 0.9, per_expert=True
    )
    assert thresholds is not None and set(thresholds) == {"a", "b", "c"}
    routed = hits = 0
    for c, o, e in zip(conf, ok, to):
        if e >= 0 and c >= thresholds["abc"[e]]:
            routed += 1
            hits += bool(o)
    assert coverage == pytest.approx(routed / 200) and precision == pytest.approx(hits / routed)
    for i, name in enumerate("abc"):  # every expert's routed prompts reach the target
        mine = (to == i) & (conf >= thresholds[name])
        assert ok[mine].mean() >= 0.9
    g_threshold, none, g_precision, g_coverage = choose_thresholds(conf, ok, to, ["a", "b", "c"], 0.9)
    assert none is None and g_threshold == threshold
    kept = (conf >= g_threshold) & (to >= 0)
    assert g_coverage == pytest.approx(kept.mean()) and g_precision == pytest.approx(ok[kept].mean())


def test_config_settings_round_trip_and_old_artifacts_keep_their_confidence():
    c = RouterConfig(fallback="general", thresholds={"math": 0.5}, evidence_tokens=2.0)
    assert RouterConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.threshold_for("math") == 0.5 and c.threshold_for("code") == 0.0
    old = RouterConfig().to_dict()
    del old["evidence_tokens"], old["thresholds"]
    assert RouterConfig.from_dict(old).effective_evidence_tokens == 0.0  # saved before the prior
    assert RouterConfig().effective_evidence_tokens > 0
    assert RouterConfig.paper().effective_evidence_tokens == 0.0  # vote shares: no prior
    with pytest.raises(ValueError, match="fallback"):
        RouterConfig(thresholds={"math": 0.5})
    with pytest.raises(ValueError, match="thresholds"):
        RouterConfig(fallback="g", thresholds={"math": 1.5})
    with pytest.raises(ValueError, match="evidence_tokens"):
        RouterConfig(evidence_tokens=-1.0)


# ---------------------------------------------------------------------------------------------- real router


@pytest.fixture(scope="module")
def default_router(smollm2, small_corpus):
    return Router(smollm2, device="cpu", progress=False).fit(small_corpus)


def _with_prefixes(tests):
    out = {}
    for name, texts in tests.items():
        rows = list(texts)
        for w in (1, 2, 3):
            rows += [" ".join(t.split()[:w]) for t in texts if len(t.split()) > w]
        out[name] = rows
    return out


@pytest.fixture(scope="module")
def dev_and_test(reasoning4):
    dev = _with_prefixes({n: t[60:100] for n, t in reasoning4.test.items()})
    test = _with_prefixes({n: t[100:140] for n, t in reasoning4.test.items()})
    return dev, test


def _copy(router):
    clone = Router(router.embeddings, config=router.config, device="cpu", progress=False)
    return clone.fit(router.statistics)


def test_short_prompts_are_less_confident_and_routes_do_not_change(default_router, dev_and_test):
    _, test = dev_and_test
    prompts, _ = labelled_prompts(default_router.experts, test)
    prompts += ["IRS", "taxes", "What is a stanza?"]
    with_prior = default_router.route_batch(prompts)
    without = _copy(default_router).configure(evidence_tokens=0.0).route_batch(prompts)
    assert [d.expert for d in with_prior] == [d.expert for d in without]
    for a, b in zip(with_prior, without):
        if a.num_tokens <= 3:
            assert a.confidence <= b.confidence + 1e-12
    for prompt, a in list(zip(prompts, with_prior))[::25]:  # route() applies the same prior
        assert default_router.route(prompt).confidence == pytest.approx(a.confidence)
    short = [(a.confidence, b.confidence) for a, b in zip(with_prior, without) if a.num_tokens <= 2]
    assert short and np.mean([a for a, _ in short]) < np.mean([b for _, b in short]) - 0.02


def test_tune_reaches_the_target_on_the_prompts_it_was_tuned_on(default_router, dev_and_test, tmp_path):
    dev, test = dev_and_test
    router = _copy(default_router)
    before = router.route_batch(labelled_prompts(router.experts, test)[0])
    with pytest.raises(InvalidInputError, match="abstain"):
        router.tune(dev, target_precision=0.95)
    result = router.tune(dev, target_precision=0.95, abstain="general")
    assert result.fallback == "general" and result.n == sum(len(v) for v in dev.values())
    assert router.config.fallback == "general" and router.config.threshold == result.threshold
    assert router.config.temperature == result.temperature and result.thresholds is None
    # oracle: a plain loop over the router's own decisions on the tuning prompts
    prompts, labels = labelled_prompts(router.experts, dev)
    routed = hits = 0
    for d, y in zip(router.route_batch(prompts), labels):
        if not d.fallback_used:
            routed += 1
            hits += router.experts.index(d.expert) == y
    assert result.coverage == pytest.approx(routed / len(prompts))
    assert result.precision == pytest.approx(hits / routed) and result.precision >= 0.95
    assert 0.3 < result.coverage < 1.0  # the prefixes make the target cost something
    after = router.route_batch(labelled_prompts(router.experts, test)[0])
    for a, b in zip(after, before):  # confident routes never change; the rest go to the fallback
        assert a.top_expert == b.top_expert
        assert a.expert == ("general" if a.confidence < result.threshold else b.expert)
    loaded = Router.from_pretrained(router.save_pretrained(tmp_path / "tuned"))
    assert loaded.config == router.config
    assert [d.to_dict(with_tokens=False) for d in loaded.route_batch(prompts)] == [
        d.to_dict(with_tokens=False) for d in router.route_batch(prompts)
    ]


def test_tune_per_expert(default_router, dev_and_test):
    dev, _ = dev_and_test
    router = _copy(default_router).configure(fallback="general")
    result = router.tune(dev, target_precision=0.97, per_expert=True)
    assert result.thresholds is not None and set(result.thresholds) == set(router.experts)
    assert router.config.thresholds == result.thresholds
    prompts, labels = labelled_prompts(router.experts, dev)
    for name in router.experts:
        mine = [
            router.experts.index(d.expert) == y
            for d, y in zip(router.route_batch(prompts), labels)
            if d.expert == name and not d.fallback_used
        ]
        assert not mine or np.mean(mine) >= 0.97
    assert result.precision >= 0.97
    router.tune(dev, target_precision=0.97)  # a global tune drops the per-expert thresholds
    assert router.config.thresholds is None


def test_tune_on_vote_shares_keeps_the_temperature_unset(paper_router, dev_and_test):
    dev, _ = dev_and_test
    router = _copy(paper_router)
    result = router.tune(dev, target_precision=0.9, abstain="general")
    assert result.temperature is None and result.evidence_tokens == 0.0
    # top-10 vote shares of 1.0 are right only 86% of the time here: the target is out of reach, so
    # only unanimous votes are routed (threshold 1.0) and the precision reported is theirs
    assert result.precision >= 0.9 or result.threshold == 1.0
    kept = [d for d in router.route_batch(labelled_prompts(router.experts, dev)[0]) if not d.fallback_used]
    assert all(d.confidence == 1.0 for d in kept) or result.threshold < 1.0
    with pytest.raises(UnknownExpertError):
        router.tune({"legal": ["a contract"]}, abstain="general")


# ---------------------------------------------------------------------------------------------- ir3de tune


def test_cli_tune_on_jsonl_and_csv(default_router, dev_and_test, tmp_path, capsys):
    dev, _ = dev_and_test
    folder = default_router.save_pretrained(tmp_path / "r")
    jsonl = tmp_path / "dev.jsonl"
    with open(jsonl, "w") as fh:
        for label, texts in dev.items():
            for t in texts:
                fh.write(json.dumps({"prompt": t, "expert": label}) + "\n")
    args = ["tune", str(folder), str(jsonl), "--text-field", "prompt", "--label-field", "expert"]
    assert main([*args, "--abstain", "general", "--json", "-o", str(tmp_path / "t")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["precision"] >= 0.95 and out["fallback"] == "general"
    tuned = Router.from_pretrained(tmp_path / "t")
    assert tuned.config.threshold == out["threshold"] and tuned.config.fallback == "general"
    expected = _copy(default_router).tune(dev, 0.95, abstain="general")
    assert out["coverage"] == pytest.approx(expected.coverage)
    csv_path = tmp_path / "dev.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for label, texts in dev.items():
            w.writerows([t, label] for t in texts)
    assert (
        read_labelled(csv_path).by_label()
        == read_labelled(jsonl, text_field="prompt", label_field="expert").by_label()
    )
    assert main(["tune", str(tmp_path / "t"), str(csv_path), "--per-expert"]) == 0
    assert "thresholds per expert" in capsys.readouterr().out
    with pytest.raises(CorpusError):
        read_labelled(jsonl)  # default columns are text/label


def test_cli_tune_errors(default_router, tmp_path):
    folder = default_router.save_pretrained(tmp_path / "r")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "a contract", "label": "legal"}) + "\n")
    assert main(["tune", str(folder), str(bad), "--abstain", "g"]) != 0
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": "What is 2+2?", "label": "math"}) + "\n")
    assert main(["tune", str(folder), str(good)]) != 0  # no fallback and no --abstain
    assert Router.from_pretrained(folder).config.fallback is None  # nothing was saved


def test_a_router_saved_before_the_prior_loads_with_its_old_confidence(default_router, tmp_path):
    folder = default_router.save_pretrained(tmp_path / "r")
    config = json.loads((folder / "config.json").read_text())
    del config["settings"]["evidence_tokens"], config["settings"]["thresholds"]
    (folder / "config.json").write_text(json.dumps(config))
    old = Router.from_pretrained(folder)
    assert old.config.evidence_tokens == 0.0
    prompts = ["IRS", "What is a stanza?", "def add(a, b):\n    return a + b"]
    unchanged = _copy(default_router).configure(evidence_tokens=0.0)
    assert [d.confidence for d in old.route_batch(prompts)] == [
        d.confidence for d in unchanged.route_batch(prompts)
    ]
