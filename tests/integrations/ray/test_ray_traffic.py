"""Labelled traffic counted on Ray equals router.learn on the same prompts."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ir3de import Router  # noqa: E402
from ir3de_integrations.ray import learn_router  # noqa: E402


def test_learn_router_on_ray_equals_learn(smollm2, small_corpus, small_tests, tmp_path):
    base = Router(smollm2, device="cpu", progress=False).fit({n: t[:30] for n, t in small_corpus.items()})
    folder = base.save_pretrained(tmp_path / "base")
    rows = [{"text": t, "expert": n} for n, texts in small_tests.items() for t in texts[:6]]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 * 2**20)
    try:
        on_ray = Router.from_pretrained(folder, embeddings=smollm2, device="cpu")
        report = learn_router(ray.data.from_items(rows, override_num_blocks=3), on_ray, concurrency=1)
    finally:
        ray.shutdown()
    assert report.num_texts == len(rows)
    local = Router.from_pretrained(folder, embeddings=smollm2, device="cpu")
    local.learn([r["text"] for r in rows], [r["expert"] for r in rows])
    assert on_ray.traffic == local.traffic
    for name, block in {n: s.traffic for n, s in local.statistics.items() if s.traffic is not None}.items():
        assert {n: s.traffic for n, s in on_ray.statistics.items() if s.traffic is not None}[name] == block
    np.testing.assert_allclose(on_ray.state.weights, local.state.weights, rtol=1e-9, atol=1e-12)
