"""Many experts on the real SmolLM2 embeddings: the factored route table against the float64 formula and
the dense table, decision.top(k), and a router of 600 small experts (more than h + 1 = 577, so the
automatic table is factored) that fits, grows, saves and loads with statistics in their rows form."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ir3de import Router, RouterConfig
from ir3de.artifacts.folders import RouterData, load_router, save_router
from ir3de.artifacts.format import file_sha256
from ir3de.fitting.pipeline import ridge_matrices
from ir3de.fitting.statistics import ExpertCounts, balance_weights, combine_grams
from ir3de.routing.prompts import route_indices
from ir3de.table import RouteTable


@pytest.fixture(scope="module")
def routers(smollm2, small_corpus):
    """The same fit held dense and factored (forced: 4 experts would be dense under "auto")."""
    dense = Router(smollm2, device="cpu", progress=False, table="dense").fit(small_corpus)
    factored = Router(smollm2, device="cpu", progress=False, table="factored").fit(small_corpus)
    return dense, factored


def _prompts(small_tests):
    return [t for texts in small_tests.values() for t in texts[:25]]


def _formula_means(router, prompt):
    """Plain float64 formula: the mean over countable tokens of [E[t], 1] · W."""
    ids = [
        i
        for i in router.state.tokenizer.encode(prompt, add_special_tokens=False).ids[
            : router.config.max_tokens
        ]
    ]
    keep = [i for i in ids if i not in set(router.state.excluded_ids.tolist())]
    x = np.concatenate([router.embeddings.matrix[keep].astype(np.float64), np.ones((len(keep), 1))], axis=1)
    return (x @ router.state.weights).mean(axis=0)


def test_factored_rows_are_the_float64_formula(routers, smollm2):
    dense, factored = routers
    assert dense.state.table.form == "dense" and factored.state.table.form == "factored"
    np.testing.assert_array_equal(dense.state.weights, factored.state.weights)  # same solve, another table
    ids = np.array([5, 17, 300, 4096, 49151])
    x = np.concatenate([smollm2.matrix[ids].astype(np.float64), np.ones((ids.size, 1))], axis=1)
    np.testing.assert_allclose(
        factored.state.table.rows(ids), x @ factored.state.weights, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        dense.state.table.rows(ids), x @ dense.state.weights, rtol=1e-6, atol=1e-6
    )  # float32 table
    assert factored.state.table.nbytes < dense.state.table.logits.nbytes / 10


def test_factored_routes_are_the_formula_and_the_dense_routes(routers, small_tests):
    dense, factored = routers
    prompts = _prompts(small_tests)
    for p in prompts:
        means = _formula_means(factored, p)
        d = factored.route(p)
        assert d.top_expert == factored.experts[int(np.argmax(means))]
        assert dense.route(p).top_expert == d.top_expert
        assert d.confidence == pytest.approx(dense.route(p).confidence, rel=1e-4)
    assert (
        route_indices(factored.state, factored.config, prompts).tolist()
        == route_indices(dense.state, dense.config, prompts).tolist()
    )
    batch = factored.route_batch(prompts)
    assert [b.expert for b in batch] == [factored.route(p).expert for p in prompts]
    # the explanation (deciding tokens, lowest entropy first) is that of the dense table
    assert [t.id for t in factored.route(prompts[0]).tokens] == [t.id for t in dense.route(prompts[0]).tokens]


@pytest.mark.parametrize(("selector", "combine"), [("topk", "vote"), ("all", "logprob")])
def test_factored_token_selectors_agree_with_the_dense_table(routers, small_tests, selector, combine):
    dense, factored = routers
    prompts = _prompts(small_tests)
    np.testing.assert_allclose(factored.state.table.entropy, dense.state.table.entropy, rtol=1e-5, atol=1e-6)
    agree = np.mean(factored.state.table.votes == dense.state.table.votes)
    assert agree > 0.999  # votes differ only where the float32 table rounds a near-tie
    for r in (dense, factored):
        r.configure(selector=selector, combine=combine)
    try:
        got, want = (
            route_indices(factored.state, factored.config, prompts),
            route_indices(dense.state, dense.config, prompts),
        )
        assert np.mean(got == want) > 0.98
        assert [factored.route(p).expert for p in prompts[:20]] == [
            b.expert for b in factored.route_batch(prompts[:20])
        ]
    finally:
        for r in (dense, factored):
            r.configure(selector="avg", combine="logprob")


def test_top_k_is_the_sorted_scores(routers, small_tests):
    _, factored = routers
    d = factored.route(_prompts(small_tests)[3])
    want = sorted(d.scores.items(), key=lambda kv: -kv[1])
    assert d.top(2) == want[:2] and d.top(10) == want
    assert d.top(1)[0] == (d.top_expert, d.confidence)
    with pytest.raises(ValueError, match="positive integer"):
        d.top(0)


def test_a_saved_factored_router_stores_no_logits_and_routes_identically(routers, small_tests, tmp_path):
    _, factored = routers
    folder = factored.save_pretrained(tmp_path / "f")
    tensors = load_file(folder / "router.safetensors")
    matrix = factored.embeddings.matrix
    # SmolLM2's embeddings are Q8_0 in the GGUF: stored as int8 blocks + float16 scales, a quarter of float32
    assert "logits" not in tensors and "table_matrix" not in tensors
    assert tensors["table_matrix_q8"].shape == matrix.shape and tensors["table_matrix_q8"].dtype == np.int8
    assert tensors["table_matrix_scales"].shape == (matrix.shape[0], matrix.shape[1] // 32)
    assert (folder / "router.safetensors").stat().st_size < matrix.nbytes * 0.3
    config = json.loads((folder / "config.json").read_text())
    assert config["table_form"] == "factored" and config["table_matrix_block"] == 32
    loaded = Router.from_pretrained(folder, device="cpu")
    assert loaded.state.table.form == "factored"
    # the float32 matrix comes back bit for bit
    assert np.array_equal(loaded.state.table.matrix.view(np.uint32), matrix.view(np.uint32))
    prompts = _prompts(small_tests)
    assert (
        route_indices(loaded.state, loaded.config, prompts).tolist()
        == route_indices(factored.state, factored.config, prompts).tolist()
    )
    assert [loaded.route(p).scores for p in prompts[:10]] == [factored.route(p).scores for p in prompts[:10]]


def test_a_matrix_without_exact_int8_blocks_is_saved_in_float32(routers, smollm2, small_tests, tmp_path):
    """One float32 ulp off the Q8_0 grid: no exact int8 form, so table_matrix stays float32 (and loads)."""
    _, factored = routers
    matrix = np.array(factored.state.table.matrix)
    matrix[100, 3] = np.nextafter(matrix[100, 3], np.float32(np.inf))
    table = RouteTable.factored(matrix, factored.state.weights, factored.state.excluded_ids)
    state = dataclasses.replace(factored.state, table=table)
    folder = save_router(tmp_path / "f32", RouterData(factored.config, state, factored.statistics))
    tensors = load_file(folder / "router.safetensors")
    assert "table_matrix_q8" not in tensors and tensors["table_matrix"].dtype == np.float32
    assert "table_matrix_block" not in json.loads((folder / "config.json").read_text())
    loaded = load_router(folder).state.table.matrix
    assert np.array_equal(loaded.view(np.uint32), matrix.view(np.uint32))


def _rewrite_as_format(folder, name, tensors, version, *, drop):
    """Write ``tensors`` as the folder's file ``name`` and its config as format ``version`` wrote it
    (without the key ``drop``, with the file's new checksum)."""
    save_file(tensors, folder / name)
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = version
    del config[drop]
    data = (folder / name).read_bytes()
    config["files"][name] = {"sha256": file_sha256(data), "size": len(data)}
    (folder / "config.json").write_text(json.dumps(config))


def test_format_6_factored_folders_still_load(routers, small_tests, tmp_path):
    """A factored folder as format 6 wrote it: table_matrix in float32, no table_matrix_block."""
    _, factored = routers
    folder = factored.save_pretrained(tmp_path / "v6")
    tensors = load_file(folder / "router.safetensors")
    q, scales = tensors.pop("table_matrix_q8"), tensors.pop("table_matrix_scales")
    tensors["table_matrix"] = (
        q.reshape(q.shape[0], -1, 32).astype(np.float32) * scales.astype(np.float32)[..., None]
    ).reshape(q.shape)
    _rewrite_as_format(folder, "router.safetensors", tensors, 6, drop="table_matrix_block")
    loaded = Router.from_pretrained(folder, device="cpu")
    matrix = factored.embeddings.matrix
    assert np.array_equal(loaded.state.table.matrix.view(np.uint32), matrix.view(np.uint32))
    prompts = _prompts(small_tests)
    assert [loaded.route(p).scores for p in prompts[:10]] == [factored.route(p).scores for p in prompts[:10]]


@pytest.fixture(scope="module")
def many(smollm2, reasoning4):
    """600 experts of 2–3 real texts each (more than h + 1 = 577: the automatic table is factored)."""
    texts = [t for v in reasoning4.train.values() for t in v][:1500]
    experts = {f"e{i:03d}": texts[i::600] for i in range(600)}
    return experts, Router(smollm2, device="cpu", progress=False, keep_token_ids=False).fit(experts)


def test_600_small_experts_keep_rows_and_a_factored_table(many, small_tests):
    _, router = many
    assert router.state.table.form == "factored" and len(router.experts) == 600
    forms = {c.text_form for c in [e.counts for e in router.statistics.values()]}
    assert forms == {"rows"}  # 2-3 texts: far fewer rows than h + 1
    stored = sum(c.text_rows.nbytes for c in [e.counts for e in router.statistics.values()])
    assert stored < 600 * 577 * 577 * 8 / 20  # the rows, not 600 dense Grams
    # the ridge statistics are the plain sums of the Grams
    a, b = ridge_matrices(router.statistics, router.config, matrix=router.embeddings.matrix)
    counts = [e.counts for e in router.statistics.values()]
    w = balance_weights([c.num_scored_texts for c in counts], True)
    a_plain, b_plain = combine_grams([c.text_gram for c in counts], w)
    np.testing.assert_allclose(a, a_plain, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b, b_plain, rtol=1e-9, atol=1e-12)
    d = router.route(_prompts(small_tests)[0])
    assert isinstance(d.confidence, float) and len(d.top(5)) == 5


def test_600_experts_grow_save_and_load(many, smollm2, small_tests, tmp_path):
    experts, router = many
    prompts = _prompts(small_tests)[:30]
    folder = router.save_pretrained(tmp_path / "many")
    loaded = Router.from_pretrained(folder, embeddings=smollm2, device="cpu")
    assert {n: e.counts for n, e in loaded.statistics.items()} == {
        n: e.counts for n, e in router.statistics.items()
    }
    assert (
        route_indices(loaded.state, loaded.config, prompts).tolist()
        == route_indices(router.state, router.config, prompts).tolist()
    )
    loaded.add_expert("extra", ["What is the integral of x squared?", "Solve 2x + 3 = 7."])
    grown = Router(smollm2, device="cpu", progress=False).fit(
        {**experts, "extra": ["What is the integral of x squared?", "Solve 2x + 3 = 7."]}
    )
    np.testing.assert_allclose(loaded.state.weights, grown.state.weights, rtol=1e-7, atol=1e-9)
    assert (
        route_indices(loaded.state, loaded.config, prompts).tolist()
        == route_indices(grown.state, grown.config, prompts).tolist()
    )
    loaded.remove_expert("extra")
    np.testing.assert_allclose(loaded.state.weights, router.state.weights, rtol=1e-7, atol=1e-9)


def test_format_3_statistics_still_load(routers, smollm2, small_tests, tmp_path):
    """A folder as format 3 wrote it: one dense (h+1)² Gram per expert, no table_form."""
    dense, _ = routers
    folder = dense.save_pretrained(tmp_path / "v3")
    counts = [e.counts for e in dense.statistics.values()]
    stats = load_file(folder / "statistics.safetensors")
    for key in ("text_forms", "text_rows", "text_row_offsets"):
        stats.pop(key)
    stats["text_grams"] = np.stack([c.text_gram for c in counts])
    stats["has_text_gram"] = np.ones(len(counts), np.uint8)
    _rewrite_as_format(folder, "statistics.safetensors", stats, 3, drop="table_form")
    loaded = Router.from_pretrained(folder, embeddings=smollm2, device="cpu")
    assert {n: e.counts for n, e in loaded.statistics.items()} == {
        n: e.counts for n, e in dense.statistics.items()
    }
    assert {e.counts.text_form for e in loaded.statistics.values()} == {"gram"}
    prompts = _prompts(small_tests)
    assert (
        route_indices(loaded.state, loaded.config, prompts).tolist()
        == route_indices(dense.state, dense.config, prompts).tolist()
    )
    assert isinstance(loaded.statistics["math"].counts, ExpertCounts)


@pytest.fixture(scope="module")
def many_kept(many, smollm2):
    """The 600 experts of ``many`` fitted with the defaults (``keep_token_ids="auto"``): 2–3 texts each,
    fewer rows than h + 1, so their statistics are kept as token ids too."""
    experts, _ = many
    router = Router(smollm2, device="cpu", progress=False).fit(experts)
    assert router.config.keep_token_ids == "auto"
    return router


def test_600_experts_kept_as_token_ids_save_small_and_grow_exactly(
    many, many_kept, smollm2, small_tests, tmp_path
):
    from ir3de.artifacts.stat_packs import StatPack

    experts, plain = many
    kept = many_kept
    prompts = _prompts(small_tests)[:30]
    np.testing.assert_array_equal(kept.state.weights, plain.state.weights)  # rows-form: the same rows
    for name in ("e000", "e599"):
        np.testing.assert_array_equal(
            kept.statistics[name].counts.text_rows, plain.statistics[name].counts.text_rows
        )
    small, big = kept.save_pretrained(tmp_path / "kept"), plain.save_pretrained(tmp_path / "plain")
    size = {f: (f / "statistics.safetensors").stat().st_size for f in (small, big)}
    assert size[small] < size[big] / 5
    assert "text_token_ids" in load_file(small / "statistics.safetensors")
    assert len(json.loads((small / "config.json").read_text())["tokenized_text_experts"]) == 600
    assert "contains tokenized training text" in (small / "README.md").read_text()
    assert "tokenized training text" not in (big / "README.md").read_text()

    loaded = Router.from_pretrained(small, device="cpu")  # routes without the embeddings
    assert {e.counts.text_form for e in loaded.statistics.values()} == {"tokens"}
    assert (
        route_indices(loaded.state, loaded.config, prompts).tolist()
        == route_indices(kept.state, kept.config, prompts).tolist()
    )
    assert loaded._embeddings is None and loaded.config.keep_token_ids
    assert {n: e.counts for n, e in loaded.statistics.items()} == {
        n: e.counts for n, e in kept.statistics.items()
    }

    loaded = Router.from_pretrained(small, embeddings=smollm2, device="cpu")
    extra = ["What is the integral of x squared?", "Solve 2x + 3 = 7."]
    loaded.add_expert("extra", extra)  # rebuilds every expert's rows from its ids, then adds one
    np.testing.assert_array_equal(
        loaded.statistics["e123"].counts.text_rows, kept.statistics["e123"].counts.text_rows
    )
    scratch = Router(smollm2, device="cpu", progress=False, keep_token_ids=True).fit(
        {**experts, "extra": extra}
    )
    np.testing.assert_array_equal(loaded.state.weights, scratch.state.weights)  # bit for bit
    np.testing.assert_allclose(
        loaded.state.weights, plain.add_expert("extra", extra).state.weights, rtol=1e-7, atol=1e-9
    )
    plain.remove_expert("extra")
    loaded.remove_expert("extra")
    np.testing.assert_array_equal(loaded.state.weights, kept.state.weights)

    pack = StatPack.from_router(kept, "e001")
    pack_folder = pack.save_pretrained(tmp_path / "pack")
    assert json.loads((pack_folder / "stat_pack.json").read_text())["expert"]["tokenized_text"] is True
    assert "contains the corpus's tokenized texts" in (pack_folder / "README.md").read_text()
    reloaded = StatPack.from_pretrained(pack_folder)
    assert reloaded.counts.text_form == "tokens"
    taker = Router(smollm2, device="cpu", progress=False, keep_token_ids=False)
    taker.fit({"a": experts["e002"], "b": experts["e003"]})
    taker.add_expert("e001", reloaded)  # a router that does not keep token ids drops them
    assert taker.statistics["e001"].counts.text_tokens is None
    np.testing.assert_array_equal(
        taker.statistics["e001"].counts.text_rows, plain.statistics["e001"].counts.text_rows
    )

    loaded.configure(keep_token_ids=False)  # drops the ids, keeps the statistics and the routes
    assert {e.counts.text_form for e in loaded.statistics.values()} == {"rows"}
    np.testing.assert_array_equal(loaded.state.weights, kept.state.weights)
    dropped = loaded.save_pretrained(tmp_path / "dropped")
    assert "text_token_ids" not in load_file(dropped / "statistics.safetensors")
    assert json.loads((dropped / "config.json").read_text())["tokenized_text_experts"] == []


def test_the_default_keeps_token_ids_only_where_the_rows_would_be_saved(smollm2, reasoning4, tmp_path):
    big, small = next(iter(reasoning4.train.items()))[1], ["What is 2 + 2?", "Name a prime number."]
    router = Router(smollm2, device="cpu", progress=False).fit({"big": big, "small": small})
    plain = Router(smollm2, device="cpu", progress=False, keep_token_ids=False).fit(
        {"big": big, "small": small}
    )
    counts = {n: e.counts for n, e in router.statistics.items()}
    assert counts["big"].text_form == "gram" and counts["big"].text_tokens is None  # an aggregate
    assert counts["small"].text_form == "rows" and counts["small"].text_tokens is not None
    np.testing.assert_array_equal(router.state.weights, plain.state.weights)  # the same statistics
    folder = router.save_pretrained(tmp_path / "r")
    assert json.loads((folder / "config.json").read_text())["tokenized_text_experts"] == ["small"]
    assert "tokenized training text" in (folder / "README.md").read_text()
    loaded = Router.from_pretrained(folder, embeddings=smollm2, device="cpu")
    assert loaded.config.keep_token_ids == "auto"
    assert loaded.statistics["small"].counts.text_form == "tokens"
    loaded.add_expert("more", ["Translate 'cat' into French."])
    scratch = Router(smollm2, device="cpu", progress=False).fit(
        {"big": big, "small": small, "more": ["Translate 'cat' into French."]}
    )
    np.testing.assert_array_equal(loaded.state.weights, scratch.state.weights)  # bit for bit
    loaded.configure(keep_token_ids=False)
    assert all(e.counts.text_tokens is None for e in loaded.statistics.values())
    np.testing.assert_array_equal(loaded.state.weights, scratch.state.weights)
    with pytest.raises(ValueError, match='"auto", True or False'):
        RouterConfig(keep_token_ids="yes")  # type: ignore[arg-type]
