"""The adaptation benchmark's choice rule and its fast-path helpers (pure functions; the numbers
themselves come from ``python -m benchmarks.adaptation``)."""

from __future__ import annotations

import numpy as np

from benchmarks.adaptation import MAX_LOSS, _route_rows, _served_rows, choose
from ir3de.fitting.adaptation import AdaptationPrompts


def test_choice_is_the_best_cross_source_gain_that_never_loses_more_than_the_bound() -> None:
    results = {
        "shifted": {"mean": {"bold": [0.50, 0.60, 0.62, 0.64], "safe": [0.50, 0.55, 0.56, 0.57]}},
        "same": {"mean": {"bold": [0.90, 0.89, 0.90, 0.90], "safe": [0.90, 0.90, 0.899, 0.90]}},
    }
    kinds = {"shifted": "cross-source", "same": "same-source"}
    choice = choose(results, kinds, ["bold", "safe"])
    assert choice["chosen"] == "safe"  # "bold" gains more but loses 1 pt on the same-source check
    assert not choice["scores"]["bold"]["eligible"] and choice["scores"]["safe"]["eligible"]
    assert choice["scores"]["safe"]["worst_change"] >= -MAX_LOSS
    assert np.isclose(choice["scores"]["bold"]["mean_gain_cross_source"], 0.12)


def test_served_rows_take_the_first_n_of_each_expert_and_skip_prompts_without_tokens() -> None:
    rows_a = AdaptationPrompts(np.arange(6.0).reshape(3, 2), np.array([1, 2, 3]))
    rows_b = AdaptationPrompts(np.arange(4.0).reshape(2, 2) + 10, np.array([4, 5]))
    pools = {"a": (rows_a, np.array([True, True, True])), "b": (rows_b, np.array([True, False, True]))}
    served = _served_rows(pools, 2)  # a: its first 2 prompts; b: its first 2, one has no token
    assert served.tokens.tolist() == [1, 2, 4]
    routes = _route_rows(
        served, np.array([True, False, True, True]), np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    )
    assert routes.tolist() == [1, -1, 1, 1]


def test_alignment_maps_move_the_served_moments_onto_the_corpus() -> None:
    from benchmarks.alignment import alignment_map, corpus_moments

    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(4000, 4)) @ rng.normal(size=(4, 4))
    y = np.hstack([corpus, np.ones((corpus.shape[0], 1))])
    mean, cov = corpus_moments(y.T @ y)
    assert np.allclose(mean, corpus.mean(0)) and np.allclose(cov, np.cov(corpus.T, bias=True))
    served = rng.normal(size=(300, 4)) * 3 + 7
    shift, t = alignment_map(served, mean, cov, None)
    assert np.array_equal(shift, np.eye(4)) and np.allclose((served + t).mean(0), mean)
    full, t = alignment_map(served, mean, cov, 0.0)  # CORAL: mean and covariance both
    moved = served @ full.T + t
    assert np.allclose(moved.mean(0), mean) and np.allclose(np.cov(moved.T, bias=True), cov)
    none, t = alignment_map(served, mean, cov, 1.0)  # shrunk all the way: the shift again
    assert np.allclose(none, np.eye(4)) and np.allclose((served @ none.T + t).mean(0), mean)


def test_alignment_benchmark_runs_and_its_base_and_adapt_are_the_adaptation_benchmarks(tmp_path) -> None:
    import json

    from benchmarks.adaptation import Check, run_check
    from benchmarks.alignment import main
    from ir3de import TokenEmbeddings
    from ir3de.fitting.adaptation import AdaptationSettings

    name = "user-prompts-other-benchmarks"
    assert main(["--out", str(tmp_path), "--checks", name, "--seeds", "0", "--sizes", "10"]) == 0
    res = json.loads((tmp_path / "alignment.json").read_text())["checks"][name]
    assert set(res) == {"base", "adapt", "shift", "shift+adapt"} | {
        f"coral-{s}{a}" for s in ("0.5", "0.8", "0.95") for a in ("", "+adapt")
    }
    same = run_check(Check(name, TokenEmbeddings.default()), {"adapt": AdaptationSettings()}, [0, 10], [0])
    acc = same["seeds"]["0"]["accuracy"]["adapt"]  # at 0 served prompts: the router before
    assert res["base"] == [acc[0]] and res["adapt"] == [acc[1]]
    assert "| coral-0.95+adapt |" in (tmp_path / "alignment.md").read_text()
