"""Learning from labelled traffic: router.learn / feedback / forget_traffic / traffic.

The traffic math is checked against a plain ridge fit with the traffic rows appended (paper_oracle);
the rest on a real small router (SmolLM2 embeddings, reasoning4 texts), copied before mutating.
"""

from __future__ import annotations

import doctest
import json
import threading

import numpy as np
import pytest
from safetensors.numpy import load_file

from ir3de import Router
from ir3de.artifacts.format import FORMAT_VERSION
from ir3de.artifacts.stat_packs import StatPack, add_pack_to_router, merge_packs
from ir3de.data.labelled import LabelledData
from ir3de.errors import ArtifactError, InvalidInputError, UnknownExpertError
from ir3de.fitting import statistics as statistics_module
from ir3de.fitting.statistics import traffic_weights, weights_with_traffic
from ir3de.routing.prompts import route_indices
from tests.paper_oracle import traffic_fit


def _fit(smollm2, corpus, **settings):
    return Router(smollm2, device="cpu", progress=False, **settings).fit(corpus)


@pytest.fixture(scope="module")
def corpus(small_corpus):
    return {name: texts[:40] for name, texts in small_corpus.items()}


@pytest.fixture(scope="module")
def served(small_tests):
    """Labelled 'served' prompts: 8 per expert, interleaved as traffic arrives."""
    pairs = [(t, name) for name, texts in small_tests.items() for t in texts[:8]]
    order = np.random.default_rng(0).permutation(len(pairs))
    return [pairs[i][0] for i in order], [pairs[i][1] for i in order]


@pytest.fixture(scope="module")
def base(smollm2, corpus):
    return _fit(smollm2, corpus)


@pytest.fixture(scope="module")
def held_out(small_tests):
    return [t for texts in small_tests.values() for t in texts[8:40]]


def _copy(router: Router, tmp_path, name="copy") -> Router:
    return Router.from_pretrained(
        router.save_pretrained(tmp_path / name), embeddings=router.embeddings, device="cpu"
    )


def _same_bits(a: Router, b: Router) -> None:
    assert a.experts == b.experts
    assert np.array_equal(a.state.weights, b.state.weights)
    assert np.array_equal(a.state.ridge_solution, b.state.ridge_solution)
    assert np.array_equal(a.state.table.logits, b.state.table.logits)


def _close(a: Router, b: Router, prompts) -> None:
    assert a.experts == b.experts
    np.testing.assert_allclose(a.state.weights, b.state.weights, rtol=1e-9, atol=1e-12)
    assert (
        route_indices(a.state, a.config, prompts).tolist()
        == route_indices(b.state, b.config, prompts).tolist()
    )
    assert {n: s.traffic for n, s in a.statistics.items() if s.traffic is not None}.keys() == {
        n: s.traffic for n, s in b.statistics.items() if s.traffic is not None
    }.keys()
    for name, block in {n: s.traffic for n, s in a.statistics.items() if s.traffic is not None}.items():
        assert (
            block == {n: s.traffic for n, s in b.statistics.items() if s.traffic is not None}[name]
        )  # counts exact, text Grams to float64 rounding


# ---------------------------------------------------------------------------------------------- the math


def test_balanced_policy_balances_corpus_and_traffic_together() -> None:
    w, u = weights_with_traffic([100, 300, 50], [10, 0, 25], balance=True, weight=4.0, policy="balanced")
    masses = np.array([100, 300, 50]) * w + np.array([10, 0, 25]) * u
    assert masses.tolist() == pytest.approx([masses.mean()] * 3)  # every expert: the same total mass
    assert u.tolist() == pytest.approx((4.0 * w * [1, 0, 1]).tolist())
    plain_w, plain_u = weights_with_traffic(
        [100, 300, 50], [10, 0, 25], balance=False, weight=4.0, policy="balanced"
    )
    assert plain_w.tolist() == [1.0, 1.0, 1.0] and plain_u.tolist() == [4.0, 0.0, 4.0]
    per_prompt = weights_with_traffic([100, 300], [10, 0], balance=True, weight=4.0, policy="per_prompt")
    assert per_prompt[0].tolist() == [2.0, 2 / 3]  # the corpus weights do not move


def test_statistics_docstring_examples() -> None:
    result = doctest.testmod(statistics_module)
    assert result.attempted > 0 and result.failed == 0


def test_traffic_weights_policies() -> None:
    masses, weights, traffic = [100, 300, 50], [1.5, 0.5, 3.0], [10, 0, 25]
    assert traffic_weights(masses, weights, traffic, weight=30, policy="per_prompt").tolist() == [
        45.0,
        0.0,
        90.0,
    ]
    share = traffic_weights(masses, weights, traffic, weight=0.5, policy="share")
    # the traffic's weighted mass is half the corpus's weighted mass, whatever its size
    assert (share * traffic).tolist() == pytest.approx([0.5 * 1.5 * 100, 0.0, 0.5 * 3.0 * 50])
    assert traffic_weights(masses, weights, traffic, weight=0, policy="share").tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="policy"):
        traffic_weights(masses, weights, traffic, weight=1, policy="nope")
    with pytest.raises(ValueError, match=">= 0"):
        traffic_weights(masses, weights, traffic, weight=-1, policy="share")


@pytest.mark.parametrize(
    ("level", "balance", "policy", "weight"),
    [("text", True, "per_prompt", 30.0), ("text", False, "share", 0.7), ("token", True, "share", 2.0),
     ("token", False, "per_prompt", 5.0), ("text", True, "balanced", 30.0), ("token", True, "balanced", 3.0)],
)  # fmt: skip
def test_traffic_equals_a_plain_fit_with_the_traffic_rows_appended(
    smollm2, small_corpus, small_tests, level, balance, policy, weight
) -> None:
    names = list(small_corpus)[:3]
    corpus = {n: small_corpus[n][:12] for n in names}
    traffic = {names[0]: small_tests[names[0]][:3], names[2]: small_tests[names[2]][:5]}  # none for names[1]
    router = _fit(smollm2, corpus, level=level, balance=balance, traffic_policy=policy, traffic_weight=weight)
    router.learn(traffic)
    encode = smollm2.tokenizer.encode
    ids = {n: [encode(t, add_special_tokens=False).ids for t in texts] for n, texts in corpus.items()}
    t_ids = [[encode(t, add_special_tokens=False).ids for t in traffic.get(n, [])] for n in names]
    expected = traffic_fit(
        [ids[n] for n in names],
        t_ids,
        smollm2.matrix,
        {int(i) for i in smollm2.excluded_ids},
        level=level,
        lam=router.config.lam,
        balance=balance,
        weight=weight,
        policy=policy,
    )
    np.testing.assert_allclose(router.state.weights, expected, rtol=1e-6, atol=1e-8)
    summary = router.traffic
    assert list(summary) == [names[0], names[2]]
    assert summary[names[0]].num_prompts == 3 and summary[names[2]].num_prompts == 5
    assert summary[names[2]].num_tokens == sum(len(x) for x in t_ids[2])


# ---------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("level", ["text", "token"])
def test_learning_then_forgetting_gives_back_the_identical_router(
    smollm2, corpus, served, level, tmp_path
) -> None:
    before = _fit(smollm2, corpus, level=level)
    router = _fit(smollm2, corpus, level=level)
    router.learn(*served)
    assert not np.array_equal(router.state.weights, before.state.weights)
    assert router.state.evaluation is None
    router.forget_traffic()
    _same_bits(router, before)
    assert (
        router.traffic == {}
        and {n: s.traffic for n, s in router.statistics.items() if s.traffic is not None} == {}
    )
    router.forget_traffic()  # nothing to forget: a no-op
    _same_bits(router, before)


def test_forgetting_one_expert_equals_never_learning_it(base, served, tmp_path, held_out) -> None:
    prompts, labels = served
    router = _copy(base, tmp_path, "a")
    router.learn(prompts, labels)
    router.forget_traffic("math")
    assert "math" not in router.traffic and len(router.traffic) == 3
    reference = _copy(base, tmp_path, "b")
    reference.learn([p for p, e in zip(prompts, labels) if e != "math"], [e for e in labels if e != "math"])
    _close(router, reference, held_out)
    with pytest.raises(UnknownExpertError, match="experts are"):
        router.forget_traffic("nope")


def test_any_order_or_split_gives_the_same_router(base, served, tmp_path, held_out) -> None:
    prompts, labels = served
    once = _copy(base, tmp_path, "once").learn(prompts, labels)
    split = _copy(base, tmp_path, "split")
    half = len(prompts) // 2
    split.learn(prompts[half:][::-1], labels[half:][::-1])
    for p, e in zip(prompts[:half], labels[:half]):
        split.learn([p], [e])
    grouped = _copy(base, tmp_path, "grouped").learn(LabelledData(tuple(prompts), tuple(labels)).by_label())
    _close(once, split, held_out)
    _close(once, grouped, held_out)
    assert {n: s.num_prompts for n, s in once.traffic.items()} == {n: 8 for n in base.experts}


def test_traffic_weight_is_a_statistics_setting(base, served, tmp_path) -> None:
    router = _copy(base, tmp_path).learn(*served)
    learned = router.state.weights.copy()
    router.configure(traffic_weight=0.0)  # re-solves without re-reading text; traffic is kept
    _same_bits(router, base)
    assert router.traffic["code"].num_prompts == 8 and router.traffic["code"].row_weight == 0.0
    router.configure(traffic_weight=base.config.traffic_weight)  # back to the default: the same bits
    assert np.array_equal(router.state.weights, learned)
    router.configure(traffic_policy="share", traffic_weight=1.0)
    summary = router.traffic["code"]
    assert summary.share == pytest.approx(1.0)
    assert summary.row_weight == pytest.approx(
        summary.corpus_row_weight * 40 / 8
    )  # 40 corpus texts, 8 prompts
    with pytest.raises(ValueError, match="traffic_weight"):
        router.configure(traffic_weight=-1.0)
    with pytest.raises(ValueError, match="traffic_policy"):
        router.configure(traffic_policy="sometimes")


def test_learning_moves_routing_towards_the_labels(base, tmp_path) -> None:
    prompt = "Write a limerick about a cat who codes in Python"
    router = _copy(base, tmp_path)
    target = next(e for e in router.experts if e != router.route(prompt).expert)
    before = router.route(prompt).scores[target]
    router.learn([prompt] * 3, target)
    assert router.route(prompt).scores[target] > before


# ---------------------------------------------------------------------------------------------- experts and input


def test_unknown_labels_are_an_error_listing_the_experts_or_new_experts(
    base, tmp_path, held_out, smollm2
) -> None:
    router = _copy(base, tmp_path)
    with pytest.raises(UnknownExpertError) as info:
        router.learn(["Which clause governs termination?"], ["legal"])
    assert "['legal']" in str(info.value) and str(list(base.experts)) in str(info.value)
    assert "create_experts=True" in str(info.value)
    _same_bits(router, base)  # nothing changed
    legal = ["Which clause governs termination?", "The lessee shall indemnify the lessor."]
    router.learn([*legal, "2 + 2 = ?"], ["legal", "legal", "math"], create_experts=True)
    assert router.experts == (*base.experts, "legal")
    assert router.statistics["legal"].counts.num_texts == 2 and "legal" not in router.traffic  # its corpus
    reference = _copy(base, tmp_path, "ref")
    reference.add_expert("legal", legal)
    reference.learn(["2 + 2 = ?"], ["math"])
    _close(router, reference, held_out)


def test_bad_input_is_a_clear_error(base, tmp_path) -> None:
    router = _copy(base, tmp_path)
    for args, match in [
        (("just one string", "math"), "single str"),
        ((["a", "b"], ["math"]), "2 prompts but 1 experts"),
        ((["a"],), "say which expert"),
        (([3], ["math"]), "int, not a str"),
        ((["a"], [None]), "experts are non-empty strings"),
        (({"math": ["a"]}, ["math"]), "not both"),
        (([], []), "no prompt"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            router.learn(*args)
    with pytest.raises(InvalidInputError):
        router.learn([["a"]], "math")  # type: ignore[list-item]
    _same_bits(router, base)


def test_traffic_follows_expert_changes(base, served, tmp_path, smollm2, corpus) -> None:
    router = _copy(base, tmp_path).learn(*served)
    router.add_expert("code", ["def g(y):\n    return y * 2"], update=True)
    assert router.traffic["code"].num_prompts == 8
    router.remove_expert("math")
    assert "math" not in router.traffic and router.experts == tuple(e for e in base.experts if e != "math")
    router.fit(corpus)
    assert router.traffic == {}
    assert np.array_equal(router.state.weights, base.state.weights)


def test_learning_is_thread_safe_while_other_threads_route(base, served, tmp_path, held_out) -> None:
    router = _copy(base, tmp_path)
    before = route_indices(router.state, router.config, held_out).tolist()
    learned = _copy(base, tmp_path, "after").learn(*served)
    after = route_indices(learned.state, learned.config, held_out).tolist()
    assert before != after  # the test can tell the two states apart
    stop, seen, errors = threading.Event(), [], []

    def route_forever() -> None:
        try:
            while not stop.is_set():
                seen.append(route_indices(router.state, router.config, held_out).tolist())
                router.route(held_out[0])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=route_forever) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            router.learn(*served)
            router.forget_traffic()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert seen and all(s in (before, after) for s in seen)
    assert route_indices(router.state, router.config, held_out).tolist() == before


# ---------------------------------------------------------------------------------------------- artifacts


@pytest.fixture(scope="module")
def learned(base, served, tmp_path_factory) -> Router:
    """A copy of the base router that has learned the served prompts. Tests must not mutate it."""
    return _copy(base, tmp_path_factory.mktemp("learned")).learn(*served)


def test_traffic_is_saved_and_loaded(learned, base, tmp_path, smollm2) -> None:
    folder = learned.save_pretrained(tmp_path / "r")
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION >= 3  # 3 added traffic
    assert config["settings"]["traffic_weight"] == learned.config.traffic_weight
    assert {e["name"]: e["traffic"]["num_prompts"] for e in config["experts"]} == {
        n: 8 for n in learned.experts
    }
    assert "learned labelled served prompts" in (folder / "README.md").read_text()
    loaded = Router.from_pretrained(folder, device="cpu")
    _same_bits(loaded, learned)
    assert loaded.traffic == learned.traffic
    for name, block in {n: s.traffic for n, s in learned.statistics.items() if s.traffic is not None}.items():
        assert {n: s.traffic for n, s in loaded.statistics.items() if s.traffic is not None}[name] == block
        assert np.array_equal(
            {n: s.traffic for n, s in loaded.statistics.items() if s.traffic is not None}[name].text_gram,
            block.text_gram,
        )  # bitwise on disk
    loaded._attach_embeddings(smollm2)
    loaded.forget_traffic()
    _same_bits(loaded, base)
    # a router without traffic writes no traffic tensors and no traffic entries
    plain = base.save_pretrained(tmp_path / "plain")
    assert all("traffic" not in e for e in json.loads((plain / "config.json").read_text())["experts"])
    assert not any(
        k.startswith("traffic_") or k == "has_traffic" for k in load_file(plain / "statistics.safetensors")
    )


def test_format_2_folders_still_load(base, tmp_path, held_out, smollm2) -> None:
    """A folder as format 2 wrote it: no traffic settings, entries or tensors."""
    folder = base.save_pretrained(tmp_path / "v2")
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = 2
    del config["settings"]["traffic_weight"], config["settings"]["traffic_policy"]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = Router.from_pretrained(folder, embeddings=smollm2, device="cpu")
    _same_bits(loaded, base)
    assert loaded.traffic == {} and loaded.config == base.config
    loaded.learn(["What is 12 * 12?"], ["math"])  # and it can learn
    assert loaded.traffic["math"].num_prompts == 1


def test_traffic_files_that_do_not_match_the_config_are_refused(learned, tmp_path) -> None:
    folder = learned.save_pretrained(tmp_path / "r")
    config = json.loads((folder / "config.json").read_text())
    config["experts"][0]["traffic"]["num_prompts"] = 9
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="does not match the config"):
        Router.from_pretrained(folder, device="cpu")


def test_stat_packs_carry_traffic(learned, base, tmp_path, held_out) -> None:
    folders = [StatPack.from_router(learned, n).save_pretrained(tmp_path / n) for n in learned.experts]
    pack_config = json.loads((folders[0] / "stat_pack.json").read_text())
    assert pack_config["format_version"] >= 2 and pack_config["expert"]["traffic"]["num_prompts"] == 8
    pack = StatPack.from_pretrained(folders[0])
    assert (
        pack.traffic
        == {n: s.traffic for n, s in learned.statistics.items() if s.traffic is not None}[pack.name]
    )
    merged = merge_packs(folders, embeddings=learned.embeddings, device="cpu")
    _close(merged, learned, held_out)
    # added one by one to a router of the other experts
    grown = merge_packs(folders[:2], embeddings=learned.embeddings, device="cpu")
    for folder in folders[2:]:
        add_pack_to_router(grown, folder)
    _close(grown, learned, held_out)
    # a pack without traffic has none, and its json says nothing about it
    plain = StatPack.from_router(base, base.experts[0]).save_pretrained(tmp_path / "plain")
    assert StatPack.from_pretrained(plain).traffic is None
    assert "traffic" not in json.loads((plain / "stat_pack.json").read_text())["expert"]


def test_a_loaded_token_level_router_learns_and_forgets(paper_router, served, tmp_path, smollm2) -> None:
    router = _copy(paper_router, tmp_path, "a").learn(*served)
    loaded = Router.from_pretrained(router.save_pretrained(tmp_path / "b"), embeddings=smollm2, device="cpu")
    loaded.forget_traffic("code")  # token Grams are rebuilt after loading
    reference = _copy(paper_router, tmp_path, "c").learn(
        *[list(x) for x in zip(*[(p, e) for p, e in zip(*served) if e != "code"])]
    )
    np.testing.assert_allclose(loaded.state.weights, reference.state.weights, rtol=1e-9, atol=1e-12)
    loaded.forget_traffic()
    _same_bits(loaded, paper_router)


def test_learned_prompts_are_never_kept_as_token_ids(smollm2, corpus, served, tmp_path) -> None:
    """keep_token_ids keeps corpus texts (a new expert's too), never a traffic block's prompts."""
    from ir3de.fitting.pipeline import count_texts

    router = _fit(smollm2, corpus, keep_token_ids=True)
    router.learn(*served)
    assert all(e.counts.text_tokens is not None for e in router.statistics.values())
    assert all(e.traffic is not None and e.traffic.text_tokens is None for e in router.statistics.values())
    given = count_texts(
        ["What is 7 times 8?"],
        tokenizer=smollm2.tokenizer,
        vocab_size=smollm2.vocab_size,
        excluded_ids=smollm2.excluded_ids,
        embedding_matrix=smollm2.matrix,
        keep_token_ids=True,
    )
    assert given.text_tokens is not None
    router.learn({"math": given})  # precomputed counts with ids: the traffic block drops them
    assert router.statistics["math"].traffic.text_tokens is None
    router.learn(["Ein Gedicht über den Mond und die Sterne."], "poetry", create_experts=True)
    assert router.statistics["poetry"].counts.text_tokens is not None  # a corpus, as a fit keeps it
    stats = load_file(router.save_pretrained(tmp_path / "r") / "statistics.safetensors")
    assert "text_token_ids" in stats and "traffic_text_token_ids" not in stats
