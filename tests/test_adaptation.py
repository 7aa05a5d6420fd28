"""Adapting to unlabelled served prompts: router.adapt / forget_adaptation / adaptation (issue 24).

The math is checked against a plain oracle of the formula (per-prompt loops, a dense solve); exactness
(forget, order and split), persistence, thread safety and the report on a real small router
(SmolLM2 embeddings, reasoning4 texts), copied before mutating.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from safetensors.numpy import load_file

from ir3de import Router
from ir3de.artifacts.format import FORMAT_VERSION
from ir3de.errors import InvalidInputError, NotFittedError
from ir3de.fitting import adaptation as adaptation_module
from ir3de.fitting.adaptation import AdaptationPrompts, AdaptationReport, AdaptationSettings
from ir3de.routing.prompts import encode_prompts, route_indices


@pytest.fixture(scope="module")
def corpus(small_corpus):
    return {name: texts[:40] for name, texts in small_corpus.items()}


@pytest.fixture(scope="module")
def served(small_tests):
    """Unlabelled 'served' prompts: 10 per expert, interleaved as traffic arrives."""
    prompts = [t for texts in small_tests.values() for t in texts[:10]]
    return [prompts[i] for i in np.random.default_rng(0).permutation(len(prompts))]


@pytest.fixture(scope="module")
def held_out(small_tests):
    return [t for texts in small_tests.values() for t in texts[10:40]]


@pytest.fixture(scope="module")
def base_folder(smollm2, corpus, tmp_path_factory):
    router = Router(smollm2, device="cpu", progress=False).fit(corpus)
    return router.save_pretrained(tmp_path_factory.mktemp("adapt") / "base")


def _fresh(folder, smollm2) -> Router:
    return Router.from_pretrained(folder, embeddings=smollm2, device="cpu")


def _state(router: Router):
    return router.state


def _routes(router: Router, prompts) -> np.ndarray:
    return route_indices(router.state, router.config, prompts)


def _encode(router: Router, prompts) -> tuple[np.ndarray, np.ndarray]:
    return encode_prompts(router.state.tokenizer, list(prompts), router.config.max_tokens)


def _weights(router: Router) -> np.ndarray:
    return _state(router).weights


def _same_bits(a: Router, b: Router) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.experts == sb.experts
    assert np.array_equal(sa.weights, sb.weights)
    assert np.array_equal(sa.ridge_solution, sb.ridge_solution)
    assert np.array_equal(sa.table.logits, sb.table.logits)


# ---------------------------------------------------------------------------------------------- the oracle


def _corpus_statistics(router: Router) -> tuple[np.ndarray, np.ndarray]:
    """``A``, ``B`` of a text-level router's corpus statistics (no traffic, no adaptation)."""
    from ir3de.fitting.pipeline import level_matrices

    c = router.config
    matrix = router.embeddings.matrix  # a loaded router holds small experts as token ids: rebuild them
    counts = [router.statistics[n].counts.with_text_statistics(matrix) for n in router.experts]
    return level_matrices(counts, level=c.level, balance=c.balance)


def oracle_adapted_weights(router: Router, prompts, settings: AdaptationSettings) -> np.ndarray:
    """The adaptation written out plainly: per-prompt mean rows by a Python loop over token ids, the
    posterior softmax per prompt, the blocks as sums of per-prompt outer products, a dense solve."""
    matrix = router.embeddings.matrix
    excluded = {int(i) for i in router.state.excluded_ids}
    c = router.config
    a0, b0 = _corpus_statistics(router)
    rows, tokens = [], []
    for text in prompts:
        ids = router.state.tokenizer.encode(text, add_special_tokens=False).ids[: c.max_tokens]
        ids = [t for t in ids if t not in excluded]
        if ids:
            rows.append(np.append(np.mean([matrix[t].astype(np.float64) for t in ids], axis=0), 1.0))
            tokens.append(len(ids))
    d = b0.shape[1]
    masses = b0[-1]
    prior = masses / masses.sum()

    def solve(a, b):
        return np.linalg.solve(a + c.lam * np.eye(a.shape[0]), b)

    w = solve(a0, b0)
    scale = None
    for _ in range(settings.rounds):
        labels = []
        for x, n in zip(rows, tokens):
            z = x @ w / (c.effective_temperature * (1 + c.effective_evidence_tokens / n))
            p = np.exp(z - z.max())
            labels.append(p / p.sum())
        labels = np.array(labels)
        if scale is None:  # the gate: mean uncertainty of the router before adapting
            uncertainty = np.mean([1 - max(p) for p in labels])
            scale = min(1.0, uncertainty / settings.gate) if settings.gate else 1.0
        if settings.prior:
            labels = labels * (prior / labels.mean(axis=0)) ** settings.prior
            labels = labels / labels.sum(axis=1, keepdims=True)
        top = labels.max(axis=1)
        keep = (top >= settings.floor) * top**settings.confidence  # confidence-weighted rows
        if not settings.soft:
            labels = np.eye(d)[labels.argmax(axis=1)]
        labels = labels * keep[:, None]
        soft_counts = labels.sum(axis=0)
        if settings.policy == "share":  # an expert below share_floor × an even share is not scaled up
            least = settings.share_floor * soft_counts.sum() / d
            v = [
                settings.weight * masses[j] / max(soft_counts[j], least) if soft_counts[j] > 0 else 0.0
                for j in range(d)
            ]
        else:
            v = [settings.weight * masses.sum() / soft_counts.sum()] * d
        v = [scale * vj for vj in v]
        a, b = a0.copy(), b0.copy()
        for x, label in zip(rows, labels):
            for j in range(d):
                a += v[j] * label[j] * np.outer(x, x)
                b[:, j] += v[j] * label[j] * x
        w = solve(a, b)
    return w


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"rounds": 1, "soft": False, "policy": "global", "weight": 0.5},
        {"rounds": 3, "floor": 0.9, "prior": 1.0, "weight": 2.0},
        {"gate": 0.5, "weight": 0.5},
        {"share_floor": 1.0, "confidence": 1.0, "soft": False, "rounds": 2},
        {"share_floor": 0.0, "confidence": 0.0},
    ],
)
def test_adapt_equals_the_plain_oracle(base_folder, smollm2, served, held_out, options) -> None:
    router = _fresh(base_folder, smollm2)
    expected = oracle_adapted_weights(router, served, AdaptationSettings(**options))
    router.adapt(served, **options)
    np.testing.assert_allclose(_weights(router), expected, rtol=1e-6, atol=1e-9)
    x_held = _encode(router, held_out)
    assert _routes(router, held_out).tolist() == adaptation_module_routes(router, x_held, expected)


def adaptation_module_routes(router: Router, encoded, weights: np.ndarray) -> list[int]:
    """Routes of the ``avg`` selector from mean rows under ``weights`` (prompts all have tokens here)."""
    rows, used = adaptation_module.prompt_rows(router.embeddings.matrix, *encoded, router.state.excluded_ids)
    assert used.all()
    x = np.concatenate([rows.means, np.ones((rows.num_prompts, 1))], axis=1)
    return np.argmax(x @ weights, axis=1).tolist()


def test_fast_sweep_weights_equal_the_routers(base_folder, smollm2, served) -> None:
    """adapted_weights (one Gram product, for sweeps) = derive + add_blocks + solve (the router's)."""
    router = _fresh(base_folder, smollm2)
    a0, b0 = _corpus_statistics(router)
    c = router.config
    rows, _ = adaptation_module.prompt_rows(
        router.embeddings.matrix, *_encode(router, served), router.state.excluded_ids
    )
    fast = adaptation_module.adapted_weights(
        a0,
        b0,
        rows,
        AdaptationSettings(),
        lam=c.lam,
        column_norm=c.column_norm,
        temperature=c.effective_temperature,
        evidence_tokens=c.effective_evidence_tokens,
    )
    router.adapt(served)
    np.testing.assert_allclose(_weights(router), fast, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------- exactness


def test_forget_adaptation_gives_back_the_router_bit_for_bit(base_folder, smollm2, served) -> None:
    base, router = _fresh(base_folder, smollm2), _fresh(base_folder, smollm2)
    router.adapt(served)
    assert not np.array_equal(_weights(router), _weights(base))
    assert router.adaptation.num_prompts == len(served)
    assert router.forget_adaptation() is None
    _same_bits(router, base)
    assert router.adaptation.num_prompts == 0 and not router.adaptation.experts


def test_any_order_or_split_gives_the_same_router(base_folder, smollm2, served) -> None:
    one, split = _fresh(base_folder, smollm2), _fresh(base_folder, smollm2)
    one.adapt(served[::-1])
    split.adapt(served[:7])
    split.adapt(served[7:25])
    split.adapt(served[25:])
    _same_bits(one, split)
    assert one.adaptation.to_dict() == split.adaptation.to_dict()


def test_adaptation_and_labelled_traffic_are_separate_blocks(
    base_folder, smollm2, served, small_tests
) -> None:
    labelled = {name: texts[40:44] for name, texts in small_tests.items()}
    learned_only = _fresh(base_folder, smollm2).learn(labelled)
    router = _fresh(base_folder, smollm2).learn(labelled)
    router.adapt(served)
    router.forget_adaptation()
    _same_bits(router, learned_only)  # forgetting the adaptation keeps the traffic
    assert router.traffic.keys() == learned_only.traffic.keys()
    router.adapt(served)
    router.forget_traffic()  # forgetting traffic keeps the adaptation
    assert router.traffic == {} and router.adaptation.num_prompts == len(served)
    router.forget_adaptation()
    _same_bits(router, _fresh(base_folder, smollm2))


def test_weight_zero_and_a_prompt_without_tokens(base_folder, smollm2, served) -> None:
    base, router = _fresh(base_folder, smollm2), _fresh(base_folder, smollm2)
    report = router.adapt([*served, "   "], weight=0.0)
    assert report.prompts == len(served) + 1 and report.used == len(served)
    assert report.routes_changed == 0
    np.testing.assert_array_equal(_routes(router, served), _routes(base, served))


def test_a_new_fit_clears_the_adaptation(base_folder, smollm2, served, corpus) -> None:
    router = _fresh(base_folder, smollm2)
    router.adapt(served)
    router.fit(corpus)
    assert router.adaptation.num_prompts == 0
    _same_bits(router, _fresh(base_folder, smollm2))


# ---------------------------------------------------------------------------------------------- settings and bounds


def test_options_are_checked_and_kept(base_folder, smollm2, served) -> None:
    router = _fresh(base_folder, smollm2)
    with pytest.raises(InvalidInputError, match="unknown adapt options"):
        router.adapt(served, wieght=1.0)
    for bad in (
        {"weight": -1.0},
        {"rounds": 0},
        {"floor": 1.5},
        {"policy": "all"},
        {"soft": "yes"},
        {"share_floor": 1.5},
        {"confidence": -1.0},
        {"confidence": float("inf")},
    ):
        with pytest.raises(InvalidInputError, match="invalid"):
            router.adapt(served, **bad)
    assert router.adaptation.num_prompts == 0  # nothing committed by a bad call
    router.adapt(served[:10], rounds=1)
    assert router.adapt(served[10:]).settings.rounds == 1  # options stay for later calls
    with pytest.raises(NotFittedError):
        Router(smollm2, device="cpu").adapt(served)
    with pytest.raises(InvalidInputError):
        router.adapt([1, 2])


def test_max_prompts_keeps_the_newest(base_folder, smollm2, served) -> None:
    bounded, newest = _fresh(base_folder, smollm2), _fresh(base_folder, smollm2)
    first = bounded.adapt(served[:30], max_prompts=25)
    report = bounded.adapt(served[30:])
    assert (first.kept, first.dropped) == (25, 5)
    assert report.kept == 25 and report.dropped == len(served) - 30
    newest.adapt(served[-25:], max_prompts=25)
    _same_bits(bounded, newest)


def test_report_claims_only_label_free_figures(base_folder, smollm2, served) -> None:
    base, router = _fresh(base_folder, smollm2), _fresh(base_folder, smollm2)
    report = router.adapt(served)
    assert isinstance(report, AdaptationReport)
    before, after = _routes(base, served), _routes(router, served)
    assert report.routes_changed == int((before != after).sum())
    for shares, routes in ((report.share_before, before), (report.share_after, after)):
        assert tuple(shares) == router.experts
        assert [shares[n] for n in router.experts] == pytest.approx(
            [float(np.mean(routes == i)) for i in range(len(router.experts))]
        )
    confidences = [d.confidence for d in router.route_batch(served)]
    assert report.confidence_after == pytest.approx(np.mean(confidences), rel=1e-5)
    assert 0.0 <= report.entropy_after <= np.log(len(router.experts))
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert not any("accuracy" in key for key in data)
    with pytest.raises(AttributeError):
        report.prompts = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------- artifact


def test_saved_adaptation_round_trips_and_keeps_no_text(base_folder, smollm2, served, tmp_path) -> None:
    router = _fresh(base_folder, smollm2)
    router.adapt(served[:20])
    folder = router.save_pretrained(tmp_path / "adapted")
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION >= 4  # 4 added the adaptation
    assert config["adaptation"]["num_prompts"] == 20
    loaded = _fresh(folder, smollm2)
    _same_bits(loaded, router)
    assert loaded.adaptation.to_dict() == router.adaptation.to_dict()
    loaded.adapt(served[20:])  # continues from the saved rows: same as adapting on all at once
    everything = _fresh(base_folder, smollm2)
    everything.adapt(served)
    _same_bits(loaded, everything)
    stats = load_file(str(folder / "statistics.safetensors"))
    assert stats["adaptation_means"].shape == (20, smollm2.hidden_size)
    assert (folder / "tokenizer.json").read_bytes() == (base_folder / "tokenizer.json").read_bytes()
    raw = b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "tokenizer.json")
    for text in served[:20]:
        for word in text.split()[:20]:
            if len(word) > 8:
                assert word.encode() not in raw  # no prompt text in any file
    loaded.forget_adaptation()
    folder = loaded.save_pretrained(tmp_path / "forgotten")
    assert "adaptation" not in json.loads((folder / "config.json").read_text())
    assert not any(k.startswith("adaptation_") for k in load_file(str(folder / "statistics.safetensors")))


def test_a_format_3_folder_loads_without_adaptation(base_folder, smollm2, tmp_path) -> None:
    """A folder written before adaptation existed (format 3, no adaptation object) loads as before."""
    import shutil

    folder = tmp_path / "v3"
    shutil.copytree(base_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    router = _fresh(folder, smollm2)
    assert router.adaptation.num_prompts == 0
    _same_bits(router, _fresh(base_folder, smollm2))


# ---------------------------------------------------------------------------------------------- threads


def test_routing_while_adapting_is_consistent(base_folder, smollm2, served, held_out) -> None:
    router = _fresh(base_folder, smollm2)
    base = _routes(router, held_out).tolist()
    adapted_router = _fresh(base_folder, smollm2)
    adapted_router.adapt(served)
    adapted = _routes(adapted_router, held_out).tolist()
    seen, errors, stop = [], [], threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(_routes(router, held_out).tolist())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(2):
        router.adapt(served)  # the same rows again: each snapshot is one of the consistent states
        router.forget_adaptation()
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert seen and all(routes in (base, adapted) for routes in seen)


# ---------------------------------------------------------------------------------------------- unit math


def test_rows_are_kept_in_a_canonical_order() -> None:
    rows = AdaptationPrompts(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), np.array([1, 2, 3]))
    shuffled = AdaptationPrompts(rows.means[[2, 0, 1]], rows.tokens[[2, 0, 1]])
    for a, b in zip(rows.canonical(), shuffled.canonical()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        AdaptationPrompts(np.array([[1.0, 2.0]]), np.array([0]))


def test_share_and_global_weights() -> None:
    masses, prompts = np.array([100.0, 300.0]), np.array([10.0, 30.0])
    share = adaptation_module.block_weights(masses, prompts, AdaptationSettings(weight=0.5))
    assert share.tolist() == [5.0, 5.0]  # each block = 0.5 × its expert's mass
    glob = adaptation_module.block_weights(masses, prompts, AdaptationSettings(weight=0.5, policy="global"))
    assert glob.tolist() == [5.0, 5.0] and (glob * prompts).sum() == 0.5 * masses.sum()
    skew = adaptation_module.block_weights(
        masses, np.array([30.0, 10.0]), AdaptationSettings(weight=1.0, policy="global")
    )
    assert (skew * np.array([30.0, 10.0])).tolist() == [300.0, 100.0]  # split as the pseudo-labels fall


def test_share_floor_keeps_a_rarely_labelled_expert_from_being_scaled_up() -> None:
    masses, prompts = np.array([100.0, 100.0]), np.array([1.0, 99.0])
    free = adaptation_module.block_weights(masses, prompts, AdaptationSettings(weight=0.5, share_floor=0.0))
    assert free.tolist() == [50.0, 0.5 * 100.0 / 99.0]  # one pseudo-label weighs half a corpus
    floored = adaptation_module.block_weights(
        masses, prompts, AdaptationSettings(weight=0.5, share_floor=0.5)
    )
    assert floored.tolist() == [2.0, 0.5 * 100.0 / 99.0]  # as if it held half an even share (25 of 100)
    probs = np.array([[0.9, 0.1], [0.5, 0.5]])
    labels = adaptation_module.pseudo_labels(probs, AdaptationSettings(confidence=2.0), np.array([0.5, 0.5]))
    np.testing.assert_allclose(labels, probs * np.array([[0.81], [0.25]]))


def test_settings_saved_before_share_floor_and_confidence_read_as_without_them(
    base_folder, smollm2, served, tmp_path
) -> None:
    """A router that adapted before these options existed re-derives the same blocks after loading."""
    router = _fresh(base_folder, smollm2)
    router.adapt(served[:20], share_floor=0.0, confidence=0.0)
    folder = router.save_pretrained(tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    for key in ("share_floor", "confidence"):
        del config["adaptation"]["settings"][key]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = _fresh(folder, smollm2)
    assert (loaded.adaptation.settings.share_floor, loaded.adaptation.settings.confidence) == (0.0, 0.0)
    loaded.adapt([])  # re-derives from the kept rows with the kept settings
    _same_bits(loaded, router)


def test_stat_pack_carries_the_adaptation_block(base_folder, smollm2, served, tmp_path) -> None:
    from ir3de.artifacts.stat_packs import StatPack

    router = _fresh(base_folder, smollm2)
    router.adapt(served)
    name = router.experts[1]
    pack = StatPack.from_pretrained(StatPack.from_router(router, name).save_pretrained(tmp_path / "pack"))
    assert pack.adaptation is not None
    np.testing.assert_array_equal(pack.adaptation.gram, router.adaptation.blocks[name].gram)
    other = _fresh(base_folder, smollm2).remove_expert(name)
    other.add_expert(name, pack)
    block = other.adaptation.blocks[name]
    assert (block.prompts, block.weight) == (pack.adaptation.prompts, pack.adaptation.weight)
    assert StatPack.from_router(_fresh(base_folder, smollm2), name).adaptation is None


def test_a_token_level_router_adapts_and_forgets_exactly(paper_router, smollm2, served, tmp_path) -> None:
    folder = paper_router.save_pretrained(tmp_path / "paper")
    router = _fresh(folder, smollm2)
    report = router.adapt(served)
    assert report.used == len(served) and router.adaptation.num_prompts == len(served)
    assert not np.array_equal(_weights(router), _weights(paper_router))
    router.forget_adaptation()
    _same_bits(router, paper_router)


def test_library_defaults_are_the_benchmarks_choice() -> None:
    """AdaptationSettings() is what ``python -m benchmarks.adaptation`` chose over every check."""
    from pathlib import Path

    results = json.loads((Path(__file__).parents[1] / "benchmarks/results/adaptation.json").read_text())
    chosen = results["choice"]["chosen"]
    assert results["choice"]["scores"][chosen]["eligible"]
    assert AdaptationSettings().to_dict() == results["settings"][chosen]
