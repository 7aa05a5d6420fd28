"""The learning-curve benchmark (``python -m benchmarks.learning``): its traffic weighting, its splits
and its quick mode end to end. No timing is asserted: timings live in the benchmark's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.learning import (  # noqa: E402
    POLICIES,
    POLICY_BY_NAME,
    TrafficWeight,
    api_settings,
    count_traffic,
    mean_features,
    route_features,
    route_state,
    split_test,
    state_with_traffic,
    weights_with_traffic,
)
from ir3de.routing.prompts import encode_prompts, route_indices  # noqa: E402


def test_split_keeps_learned_prompts_out_of_the_remainder():
    test = {"a": [f"a{i}" for i in range(300)], "b": [f"b{i}" for i in range(30)]}
    pools, rest = split_test(test, seed=0, pool=100)
    assert {k: len(v) for k, v in pools.items()} == {"a": 100, "b": 15}  # at most half of a side
    for name in test:
        assert not set(pools[name]) & set(rest[name])
        assert sorted(pools[name] + rest[name]) == sorted(test[name])
    again, rest_again = split_test(test, seed=0, pool=100)
    assert again == pools and rest_again == rest  # seeded
    assert split_test(test, seed=1, pool=100)[0] != pools


def test_traffic_weight_policies():
    assert TrafficWeight("x30", per_prompt=30).multiplier(1000, 7) == 30
    assert TrafficWeight("s", share=0.5).multiplier(1000, 10) == 50
    assert TrafficWeight("s", share=0.5).multiplier(1000, 100) == 5
    assert TrafficWeight("s", share=0.5, cap=30).multiplier(1000, 10) == 30
    assert TrafficWeight("s", share=0.5).multiplier(1000, 0) == 0
    assert len({p.name for p in POLICIES}) == len(POLICIES)


@pytest.fixture(scope="module")
def unbalanced(smollm2, small_corpus):
    from ir3de import Router

    return Router(smollm2, device="cpu", progress=False, balance=False).fit(small_corpus)


def test_traffic_at_x3_equals_prompts_added_three_times(smollm2, small_corpus, small_tests, unbalanced):
    """Oracle: without balancing, traffic weighted ×3 is the corpus plus each prompt three times."""
    from ir3de import Router

    learned = {name: texts[:5] for name, texts in small_tests.items()}
    traffic = {name: count_traffic(unbalanced, texts) for name, texts in learned.items()}
    _, applied = weights_with_traffic(unbalanced, traffic, TrafficWeight("x3", per_prompt=3))
    oracle = Router(smollm2, device="cpu", progress=False, balance=False).fit(
        {name: list(texts) + learned[name] * 3 for name, texts in small_corpus.items()}
    )
    np.testing.assert_allclose(applied, oracle.state.weights, rtol=1e-6, atol=1e-9)


def test_fast_path_routes_like_the_table(smollm2, small_corpus, small_tests):
    from ir3de import Router
    from ir3de.routing.calibration import labelled_prompts

    router = Router(smollm2, device="cpu", progress=False).fit(small_corpus)
    prompts, _ = labelled_prompts(router.experts, {n: t[10:] for n, t in small_tests.items()})
    ids, lengths = encode_prompts(router.state.tokenizer, prompts, router.config.max_tokens)
    features = mean_features(router, ids, lengths)
    # no traffic: the corpus fit itself, routed like the router
    none_state = state_with_traffic(router, {}, TrafficWeight("x30", per_prompt=30))
    np.testing.assert_allclose(none_state.weights, router.state.weights, rtol=1e-9, atol=1e-12)
    before = route_features(features, router.state.weights)
    np.testing.assert_array_equal(before, route_indices(router.state, router.config, prompts))
    # traffic from the same sources as the evaluated prompts: the table and the fast path agree
    traffic = {n: count_traffic(router, t[:10]) for n, t in small_tests.items()}
    weight = TrafficWeight("share1", share=1.0)
    state = state_with_traffic(router, traffic, weight)
    after = route_features(features, weights_with_traffic(router, traffic, weight)[1])
    np.testing.assert_array_equal(after, route_state(router, state, ids, lengths))
    assert not np.array_equal(state.weights, router.state.weights)


@pytest.mark.slow
def test_quick_learning_benchmark_end_to_end(tmp_path):
    out = tmp_path / "results"
    plot = tmp_path / "img" / "learning_curves.png"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.learning", "--quick", "--out", str(out), "--plot", str(plot)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "learning.json").read_text())
    sizes = res["sizes"]
    assert sizes[0] == 0 and len(sizes) == 3
    assert "user-prompts-other-benchmarks" in res["checks"]
    assert res["choice"]["chosen"] in {p.name for p in POLICIES}
    chosen = res["choice"]["chosen"]
    api = {f"api:{p}" for p in (chosen, "x1") if api_settings(POLICY_BY_NAME[p]) is not None}
    for check in res["checks"].values():
        for run in check["seeds"].values():
            assert run["fast_path_mismatches"] == 0
            assert run["api_mismatches"] == 0  # Router.learn routes exactly like the pipeline sweep
            acc = run["accuracy"]
            assert {p.name for p in POLICIES} | {"knn-k1", "knn-k5", "knn-k10"} | api == set(acc)
            assert all(acc[name] == acc[name.removeprefix("api:")] for name in api)
            assert all(len(v) == len(sizes) and all(0 <= a <= 1 for a in v) for v in acc.values())
            # 0 prompts: every weight policy is the plain corpus fit
            assert len({v[0] for k, v in acc.items() if not k.startswith("knn")}) == 1
    assert res["cost"]["learn_ms"] > 0 and res["cost"]["forget_ms"] > 0
    assert res["cost"]["api"].startswith("Router.learn")
    assert {t["met"] for t in res["targets"]} <= {True, False}
    md = (out / "learning.md").read_text()
    assert "| user-prompts-other-benchmarks | MiniLM kNN" in md and "### Targets" in md
    assert (out / "traffic_weight_choice.md").read_text().startswith("# Traffic weight default")
    assert plot.stat().st_size > 0
