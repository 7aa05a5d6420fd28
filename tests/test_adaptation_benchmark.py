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
