"""Text-level fitting (the library default): statistics, growth, artifacts, stat packs, settings."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from ir3de import ExpertCounts, Router, RouterConfig
from ir3de.artifacts.stat_packs import StatPack, merge_packs
from ir3de.errors import ExpertError
from ir3de.fitting.pipeline import select_lambda
from ir3de.fitting.statistics import text_gram, text_means, text_rows
from ir3de.routing.prompts import route_indices


def _fit(smollm2, corpus, **settings):
    return Router(smollm2, device="cpu", progress=False, **settings).fit(corpus)


@pytest.fixture(scope="module")
def text_router(smollm2, small_corpus):
    return _fit(smollm2, small_corpus)


@pytest.fixture(scope="module")
def prompts(small_tests):
    return [t for texts in small_tests.values() for t in texts]


def test_default_fit_counts_text_statistics_and_temperature_follows_the_evidence(text_router):
    counts = [s.counts for s in text_router.statistics.values()]
    assert all(c.text_gram is not None and c.num_scored_texts == 80 for c in counts)
    config = text_router.config
    # no explicit temperature: the measured default of the selector's evidence; an explicit one wins
    assert config.temperature is None and config.effective_temperature == 0.1
    assert replace(config, selector="topk", combine="logprob").effective_temperature == 1.0
    assert replace(config, selector="topk", combine="logprob", temperature=0.3).effective_temperature == 0.3
    assert replace(config, temperature=2.0).effective_temperature == 2.0


def test_confidence_is_the_softmax_of_mean_logits_over_the_temperature(text_router, smollm2):
    prompt = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"
    ids = [i for i in smollm2.tokenizer.encode(prompt, add_special_tokens=False).ids]
    means = text_router.state.table.logits[ids].astype(np.float64).mean(0)
    # the temperature grows for few tokens: T · (1 + n0 / n) (the evidence prior, ir3de.routing.calibration)
    z = np.exp((means - means.max()) / (0.1 * (1 + text_router.config.effective_evidence_tokens / len(ids))))
    d = text_router.route(prompt)
    assert d.expert == "math"
    assert [d.scores[n] for n in text_router.experts] == pytest.approx(z / z.sum(), rel=1e-9)
    text_router.configure(temperature=0.5)
    try:
        assert text_router.route(prompt).confidence < d.confidence
    finally:
        text_router.configure(temperature=None)


def test_text_statistics_skip_texts_without_countable_tokens(smollm2):
    special = smollm2.tokenizer.id_to_token(int(smollm2.excluded_ids[0]))
    router = _fit(smollm2, {"a": ["Solve 2 + 2.", special, "   "], "b": ["Der Hund läuft.", "Il gatto."]})
    assert router.statistics["a"].counts.num_texts == 3
    assert router.statistics["a"].counts.num_scored_texts == 1
    assert router.statistics["b"].counts.num_scored_texts == 2


def test_text_gram_arithmetic_and_validation():
    m = np.arange(12, dtype=np.float32).reshape(6, 2)
    countable = np.ones(6, bool)
    means = text_means(m, np.array([0, 1, 5]), np.array([2, 1]), countable)
    assert means.tolist() == [[1.0, 2.0], [10.0, 11.0]]
    g = text_gram(means)
    assert g[-1, -1] == 2 and g[:2, -1].tolist() == [11.0, 13.0]
    a = ExpertCounts(np.array([0, 1]), np.array([1, 1]), 1, text_gram(means[:1]))
    b = ExpertCounts(np.array([5]), np.array([1]), 1, text_gram(means[1:]))
    assert np.allclose((a + b).text_gram, g)
    assert (a + b.without_text_gram()).text_gram is None  # kept only when both sides have one
    with pytest.raises(ValueError, match="square"):
        ExpertCounts(np.array([0]), np.array([1]), 1, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="corner"):
        ExpertCounts(np.array([0]), np.array([1]), 1, g)  # 2 scored texts but num_texts = 1
    with pytest.raises(ValueError, match="different embedding"):
        _ = a + ExpertCounts(np.array([0]), np.array([1]), 1, np.eye(4) * 0 + np.diag([0, 0, 0, 1.0]))


def test_switching_levels_resolves_from_the_statistics(smollm2, small_corpus, text_router, prompts):
    router = _fit(smollm2, small_corpus)
    router.configure(level="token", selector="topk", k=50, lam=1e-2)
    reference = _fit(smollm2, small_corpus, level="token", selector="topk", k=50, lam=1e-2)
    assert np.array_equal(router.state.weights, reference.state.weights)
    router.configure(level="text", selector="avg", lam=0.1)
    assert np.array_equal(router.state.weights, text_router.state.weights)


def test_token_only_counts_cannot_fit_at_text_level(smollm2, small_corpus, prompts):
    paper = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(small_corpus)
    assert all(s.counts.text_gram is None for s in paper.statistics.values())  # not computed: not needed
    before = route_indices(paper.state, paper.config, prompts)
    with pytest.raises(ExpertError, match="level='text'"):
        paper.configure(level="text")
    assert paper.config.level == "token"  # the failed change left the router as it was
    assert route_indices(paper.state, paper.config, prompts).tolist() == before.tolist()
    with pytest.raises(ExpertError, match="re-count"):
        Router(smollm2, device="cpu").fit(paper.statistics)


def test_artifact_round_trip_keeps_text_statistics(tmp_path, text_router, prompts, smollm2, small_corpus):
    folder = text_router.save_pretrained(tmp_path / "r")
    loaded = Router.from_pretrained(folder)
    assert loaded.config == text_router.config
    assert np.array_equal(loaded.state.weights, text_router.state.weights)
    assert (
        route_indices(loaded.state, loaded.config, prompts).tolist()
        == route_indices(text_router.state, text_router.config, prompts).tolist()
    )
    for name in text_router.experts:
        counts = loaded.statistics[name].counts  # saved as token ids where it had rows ("auto")
        assert np.array_equal(
            counts.with_text_statistics(smollm2.matrix).text_gram,
            text_router.statistics[name].counts.text_gram,
        )
    extra = ["Der Hund läuft schnell über die Wiese.", "Il gatto dorme sul divano tutto il giorno."] * 3
    loaded.add_expert("extra", extra)  # grows at text level after loading
    reference = _fit(smollm2, dict(small_corpus, extra=extra))
    assert np.array_equal(loaded.state.weights, reference.state.weights)


def test_version_1_artifacts_load_as_token_level(tmp_path, smollm2, small_corpus, prompts):
    paper = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(small_corpus)
    folder = paper.save_pretrained(tmp_path / "v1")
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = 1
    del config["settings"]["level"]
    config["settings"]["temperature"] = 1.0
    (folder / "config.json").write_text(json.dumps(config))
    loaded = Router.from_pretrained(folder)
    assert loaded.config.level == "token"
    assert (
        route_indices(loaded.state, loaded.config, prompts).tolist()
        == route_indices(paper.state, paper.config, prompts).tolist()
    )


def test_stat_packs_carry_text_statistics(tmp_path, smollm2, small_corpus, text_router, prompts):
    folders = [
        StatPack.compute(n, texts, smollm2, progress=False).save_pretrained(tmp_path / n)
        for n, texts in small_corpus.items()
    ]
    pack = StatPack.from_pretrained(folders[0])
    assert pack.counts == text_router.statistics[pack.name].counts
    assert json.loads((folders[0] / "stat_pack.json").read_text())["expert"]["has_text_statistics"] is True
    merged = merge_packs(folders, device="cpu")
    assert merged.config.level == "text"
    np.testing.assert_allclose(merged.state.weights, text_router.state.weights, rtol=1e-9, atol=1e-12)
    assert (
        route_indices(merged.state, merged.config, prompts).tolist()
        == route_indices(text_router.state, text_router.config, prompts).tolist()
    )


def test_select_lambda_rejects_bad_grids(text_router):
    with pytest.raises(ValueError, match="positive"):
        select_lambda(text_router.statistics, text_router.config, [0.1, -1.0])
    assert select_lambda(text_router.statistics, text_router.config, [0.1]) == 0.1


def test_text_statistics_of_another_definition_are_refused(tmp_path, text_router):
    from ir3de.errors import ArtifactError

    folder = text_router.save_pretrained(tmp_path / "r")
    config = json.loads((folder / "config.json").read_text())
    assert config["text_statistics"] == {"window": 8, "window_weight": 0.25}
    config["text_statistics"] = {"window": 16, "window_weight": 1.0}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="re-count"):
        Router.from_pretrained(folder)


def test_short_spans_are_training_rows(smollm2):
    """A text contributes its mean (weight 1) and its 8-token windows (total weight 0.25)."""
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    ids = np.array(smollm2.tokenizer.encode(text, add_special_tokens=False).ids)
    countable = np.ones(smollm2.vocab_size, bool)
    countable[smollm2.excluded_ids] = False
    rows, weights = text_rows(smollm2.matrix, ids, np.array([ids.size]), countable)
    windows = -(-ids.size // 8)
    assert rows.shape[0] == 1 + windows and weights[0] == 1.0
    assert weights[1:].sum() == pytest.approx(0.25)
    np.testing.assert_allclose(rows[1], smollm2.matrix[ids[:8]].astype(np.float64).mean(0))
    np.testing.assert_allclose(rows[0], smollm2.matrix[ids].astype(np.float64).mean(0))


@pytest.mark.parametrize(("window", "window_weight"), [(8, 0.25), (3, 1.0), (None, 0.25), (8, 0.0)])
def test_fused_text_statistics_equal_the_explicit_rows(smollm2, window, window_weight):
    """The counter's fused update (one Gram row per window, text means folded in) against the Gram
    of the explicit rows, on the real embeddings, with special tokens and empty texts mixed in."""
    from ir3de.fitting.statistics import add_text_statistics

    rng = np.random.default_rng(0)
    lengths = np.array([0, 1, 7, 8, 9, 40, 3, 0, 129, 16])
    ids = rng.integers(0, smollm2.vocab_size, lengths.sum())
    ids[::11] = smollm2.excluded_ids[0]
    countable = np.ones(smollm2.vocab_size, bool)
    countable[smollm2.excluded_ids] = False
    rows, weights = text_rows(smollm2.matrix, ids, lengths, countable, window, window_weight)
    expected = text_gram(rows, weights)
    gram = np.zeros_like(expected)
    add_text_statistics(gram, smollm2.matrix, ids, lengths, countable, window, window_weight)
    np.testing.assert_allclose(gram, expected, rtol=1e-10, atol=1e-12)
    assert gram[-1, -1] == pytest.approx(
        (1 + (window_weight if window else 0))
        * np.count_nonzero(
            np.bincount(np.repeat(np.arange(lengths.size), lengths)[countable[ids]], minlength=lengths.size)
        )
    )


@pytest.mark.parametrize("keep_token_ids", [False, True])
def test_tokenizing_the_next_batch_on_a_second_thread_counts_the_same_bits(
    smollm2, small_corpus, keep_token_ids
):
    """count_texts(overlap=True) tokenizes ahead on a worker thread; the batches are counted in the same
    order, so the histogram, the text statistics and the kept ids are those of the plain loop, bit for bit."""
    from ir3de.fitting.pipeline import count_texts

    texts = [t for ts in small_corpus.values() for t in ts]
    kw = dict(
        tokenizer=smollm2.tokenizer,
        vocab_size=smollm2.vocab_size,
        excluded_ids=smollm2.excluded_ids,
        embedding_matrix=smollm2.matrix,
        batch_size=37,  # many batches, the last one short
        keep_token_ids=keep_token_ids,
    )
    alone, ahead = count_texts(texts, overlap=False, **kw), count_texts(texts, overlap=True, **kw)
    assert alone.num_texts == ahead.num_texts == len(texts)
    assert np.array_equal(alone.token_ids, ahead.token_ids) and np.array_equal(alone.counts, ahead.counts)
    assert alone.text_form == ahead.text_form
    assert np.array_equal(alone.text_gram, ahead.text_gram)
    if keep_token_ids:
        assert alone.text_tokens == ahead.text_tokens


def test_a_bad_text_in_a_later_batch_is_named_with_the_tokenizer_running_ahead(smollm2, small_corpus):
    from ir3de.errors import InvalidInputError
    from ir3de.fitting.pipeline import count_texts

    texts: list[object] = list(small_corpus["math"][:50])
    texts.insert(40, 7)
    with pytest.raises(InvalidInputError, match=r"text #40 of expert 'math' is a int, not a str"):
        count_texts(
            texts,  # type: ignore[arg-type]
            tokenizer=smollm2.tokenizer,
            vocab_size=smollm2.vocab_size,
            embedding_matrix=smollm2.matrix,
            name="math",
            batch_size=16,
            overlap=True,
        )
