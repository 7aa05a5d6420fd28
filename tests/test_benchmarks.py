"""The benchmark command runs end to end (``--quick``), and the baselines behave (save/load, the paper path).

No timing is asserted anywhere: timings live in the benchmark's output.
"""

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

from benchmarks.baselines import (  # noqa: E402
    KnnRouter,
    MiniLMEncoder,
    PaperTorchRouter,
    StaticEmbeddingLogRegRouter,
    TfidfLogRegRouter,
    load_router,
)
from ir3de.routing.prompts import route_indices  # noqa: E402


def _prompts(tests):
    return [t for v in tests.values() for t in v]


def test_quick_benchmark_end_to_end(tmp_path):
    out = tmp_path / "results"
    docs = tmp_path / "docs" / "benchmarks.md"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out), "--docs", str(docs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    r4 = res["accuracy"]["reasoning4"]
    expected = {
        "ir3de",
        "ir3de-defaults",
        "ir3de-token-logprob",
        "paper-torch",
        "random",
        "tfidf-lr",
        "static-emb-lr",
    } | {f"knn-{p}-k{k}" for p in ("mean", "cls") for k in (1, 5, 10)}
    assert set(r4["routers"]) == expected
    assert r4["paper_torch_route_mismatches"] == 0  # the paper's inference path routes exactly like IR3DE
    assert r4["routers"]["paper-torch"]["accuracy"] == r4["routers"]["ir3de"]["accuracy"]
    assert [p["k"] for p in r4["k_sweep"]] == [1, 2, 5, 10, 20, 50, 100, 200, 500, "all"]
    runs = res["speed"]["runs"]
    assert {"ir3de@1", "random@1"} <= set(runs)
    ir = runs["ir3de@1"]
    assert ir["latency"]["n"] > 0 and ir["tokenize_latency"]["n"] == ir["latency"]["n"]
    assert len(ir["scaling"]) == 3 and len({p["route_table_bytes"] for p in ir["scaling"]}) == 1
    # the defaults (issue 17): long prompts, fit against tokenization, memory, fresh-process start
    d = runs["ir3de-defaults@1"]
    assert d["latency_long"]["n"] == d["tokenize_latency_long"]["n"] > 0
    assert (
        d["defaults_fit_large"]["tokens"] > d["defaults_fit"]["tokens"] > 0 and d["defaults_fixed_fit_s"] > 0
    )
    assert {m["experts"] for m in res["speed"]["fit_memory"].values()} == {5, 50}
    cold = res["speed"]["cold_start"]
    assert len(cold) == 4 and all("torch_imported" in c for c in cold.values())
    assert cold["defaults, torch importable"].get("expert") in r4["sizes"]
    assert {t["met"] for t in res["targets"]} <= {True, False} and len(res["targets"]) >= 5
    assert "skipped" in res["gpu"] or "cuda" in res["gpu"]
    md = (out / "results.md").read_text()
    assert "### Accuracy" in md and "### Targets" in md and "| ir3de |" in md
    assert "### The library defaults beside the paper preset and the tokenizer" in md
    assert docs.read_text().startswith("# Benchmarks") and "](k_sweep.png)" in docs.read_text()
    # both k-sweep PNGs show exactly the k sweeps of results.json: redrawn here, pixel for pixel
    import matplotlib.image

    from ir3de.evaluation.plots import plot_k_sweep

    series = {s: a["k_sweep"] for s, a in res["accuracy"].items() if a.get("k_sweep")}
    assert series["reasoning4"] == r4["k_sweep"]
    redrawn = matplotlib.image.imread(plot_k_sweep(series, tmp_path / "redrawn.png"))
    for png in (out / "k_sweep.png", docs.parent / "k_sweep.png"):
        assert np.array_equal(matplotlib.image.imread(png), redrawn), png
    confusion = matplotlib.image.imread(out / "confusion_reasoning4.png")
    assert confusion.ndim == 3 and confusion[..., :3].std() > 0.05  # decodes, not blank


def test_paper_torch_path_equals_ir3de(paper_router, smollm2, small_tests):
    paper = PaperTorchRouter(
        paper_router.state.tokenizer,
        smollm2.matrix,
        paper_router.state.weights,
        paper_router.state.excluded_ids,
        paper_router.experts,
    )
    prompts = [*_prompts(small_tests), "   "]
    expected = np.append(route_indices(paper_router.state, paper_router.config, prompts[:-1]), -1)
    np.testing.assert_array_equal(paper.predict(prompts), expected)
    assert [paper.route_one(p) for p in prompts[:20]] == expected[:20].tolist()


def test_tfidf_and_static_baselines_round_trip(smollm2, small_corpus, small_tests, tmp_path):
    prompts = _prompts(small_tests)
    for router in (
        TfidfLogRegRouter().fit(small_corpus),
        StaticEmbeddingLogRegRouter(smollm2).fit(small_corpus),
    ):
        before = router.predict(prompts)
        loaded = load_router(router.save(tmp_path / router.kind))
        np.testing.assert_array_equal(loaded.predict(prompts), before)
        assert [loaded.route_one(p) for p in prompts[:10]] == before[:10].tolist()
        labels = np.repeat(np.arange(len(small_tests)), [len(v) for v in small_tests.values()])
        assert (before == labels).mean() > 0.8  # real, separable domains


def test_knn_baseline_round_trip(small_corpus, small_tests, tmp_path):
    encoder = MiniLMEncoder()
    train = {k: v[:6] for k, v in small_corpus.items()}
    prompts = [t for v in small_tests.values() for t in v[:3]]
    knn = KnnRouter(encoder, "mean", k=1).fit(train)
    before = knn.predict(prompts)
    # a batch of one gives the same embedding as a padded batch (attention mask), so route_one agrees
    assert [knn.route_one(p) for p in prompts[::3]] == before[::3].tolist()
    folder = knn.save(tmp_path / "knn")
    loaded = KnnRouter.load(folder, json.loads((folder / "meta.json").read_text()), encoder=encoder)
    np.testing.assert_array_equal(loaded.train_embeddings, knn.train_embeddings)
    np.testing.assert_array_equal(loaded.predict(prompts), before)
    emb = encoder.encode_both(prompts[:3])
    np.testing.assert_allclose(np.linalg.norm(emb["cls"], axis=1), 1.0, rtol=1e-5)
    with pytest.raises(KeyError):
        encoder.encode(prompts[:1], pooling="max")
