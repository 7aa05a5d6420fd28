"""Learned traffic travels with a router and a stat pack through the Hub (push, then pull back)."""

from __future__ import annotations

import numpy as np

from ir3de import Router
from ir3de.artifacts.stat_packs import StatPack, merge_packs


def test_traffic_goes_through_the_hub(git_uploads, hub_env, paper_router, small_tests, smollm2, tmp_path):
    router = Router.from_pretrained(
        paper_router.save_pretrained(tmp_path / "r"), embeddings=smollm2, device="cpu"
    )
    served = {name: texts[:4] for name, texts in small_tests.items()}
    router.learn(served)
    router.push_to_hub("ir3de-test/learned")
    pulled = Router.from_pretrained("ir3de-test/learned", embeddings=smollm2, device="cpu")
    assert pulled.traffic == router.traffic
    np.testing.assert_array_equal(pulled.state.table.logits, router.state.table.logits)
    pulled.forget_traffic()
    np.testing.assert_array_equal(pulled.state.table.logits, paper_router.state.table.logits)

    StatPack.from_router(router, "math").push_to_hub("ir3de-test/math-with-traffic")
    pack = StatPack.from_pretrained("ir3de-test/math-with-traffic")
    assert (
        pack.traffic == {n: s.traffic for n, s in router.statistics.items() if s.traffic is not None}["math"]
    )
    others = [StatPack.from_router(router, n) for n in router.experts if n != "math"]
    merged = merge_packs([pack, *others], embeddings=smollm2, config=router.config, device="cpu")
    merged_order = Router.from_pretrained(router.save_pretrained(tmp_path / "again"), device="cpu")
    assert {n: s.num_prompts for n, s in merged.traffic.items()} == {n: 4 for n in router.experts}
    np.testing.assert_allclose(
        merged.state.weights[:, [merged.experts.index(n) for n in merged_order.experts]],
        merged_order.state.weights,
        rtol=1e-9,
        atol=1e-12,
    )
