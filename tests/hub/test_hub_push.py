"""push_to_hub through the real huggingface_hub code up to HfApi; the commit lands in the served git repo and is
pulled back through the server. Also the model card with real numbers, read back with huggingface_hub."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from ir3de import Router, RouterConfig
from ir3de.artifacts.hub import resolve_router_folder
from ir3de.artifacts.stat_packs import merge_packs
from ir3de.errors import ArtifactError
from ir3de.evaluation.evaluate import evaluate, record_evaluation

PROMPTS = [
    "A train travels 60 miles per hour for 3 hours. How far does it go?",
    "def reverse(s: str) -> str:",
    "Respond in exactly two sentences and do not use any commas.",
    "Il mondo è bello perché è vario.",
]


@pytest.fixture(scope="module")
def evaluated_router(paper_router, small_tests, tmp_path_factory) -> Router:
    """A copy of the paper router with its evaluation recorded (the shared fixture is not mutated)."""
    router = Router.from_pretrained(
        paper_router.save_pretrained(tmp_path_factory.mktemp("ev") / "r"), device="cpu"
    )
    record_evaluation(router, evaluate(router, small_tests), test_set="reasoning4 held-out (60 per domain)")
    return router


def test_push_router_then_pull_it_back(git_uploads, hub_env, evaluated_router, small_tests):
    info = evaluated_router.push_to_hub("ir3de-test/pushed", private=True, commit_message="first router")
    repo = git_uploads.repo_path("ir3de-test/pushed")
    assert info.oid == git_uploads.head("ir3de-test/pushed")
    assert info.commit_url.startswith(hub_env.endpoint) and git_uploads.private["ir3de-test/pushed"] is True
    assert sorted(p.name for p in repo.iterdir() if p.name != ".git") == [
        ".gitattributes",
        "README.md",
        "config.json",
        "router.safetensors",
        "statistics.safetensors",
        "tokenizer.json",
    ]
    pulled = Router.from_pretrained("ir3de-test/pushed", device="cpu")
    prompts = PROMPTS + [t for texts in small_tests.values() for t in texts[:10]]
    assert [d.expert for d in pulled.route_batch(prompts)] == [
        d.expert for d in evaluated_router.route_batch(prompts)
    ]
    np.testing.assert_array_equal(pulled.state.table.logits, evaluated_router.state.table.logits)
    assert pulled.state.evaluation == evaluated_router.state.evaluation
    card = (repo / "README.md").read_text()
    assert 'Router.from_pretrained("ir3de-test/pushed")' in card

    # a second push on a branch; main is untouched, the branch is pinned by name
    evaluated_router.configure(k=4)
    try:
        dev = evaluated_router.push_to_hub("ir3de-test/pushed", revision="dev")
    finally:
        evaluated_router.configure(k=10)
    assert dev.oid == git_uploads.head("ir3de-test/pushed", "dev") != info.oid
    for revision, k in (("dev", 4), (None, 10), (info.oid, 10)):
        folder = resolve_router_folder("ir3de-test/pushed", revision=revision)
        assert json.loads((folder / "config.json").read_text())["settings"]["k"] == k


def test_push_refused_offline(git_uploads, hub_env, evaluated_router):
    hub_env.go_offline()
    with pytest.raises(ArtifactError, match="offline mode is on"):
        evaluated_router.push_to_hub("ir3de-test/offline-push")


def test_push_stat_pack_and_merge_from_hub(git_uploads, hub_env, packs, paper_router):
    info = packs["math"].push_to_hub("owner-a/math-stats")
    packs["code"].push_to_hub("owner-b/code-stats")
    assert info.oid == git_uploads.head("owner-a/math-stats")
    card = (git_uploads.repo_path("owner-a/math-stats") / "README.md").read_text()
    assert "ir3de merge owner-a/math-stats" in card and "| math | grade-school math" in card
    router = merge_packs(
        ["owner-a/math-stats", "owner-b/code-stats"], config=RouterConfig.paper(), device="cpu"
    )
    router.add_expert("instructions", packs["instructions"]).add_expert("multilingual", packs["multilingual"])
    assert router.state.descriptions["math"] == packs["math"].description
    np.testing.assert_allclose(router.state.table.logits, paper_router.state.table.logits, rtol=0, atol=1e-6)


def test_model_card_renders_real_numbers(git_uploads, hub_env, evaluated_router, paper_router, small_corpus):
    from huggingface_hub import ModelCard

    evaluated_router.push_to_hub("ir3de-test/carded")
    card = ModelCard.load("ir3de-test/carded")  # downloaded through the server, parsed by huggingface_hub
    data = card.data.to_dict()
    assert data["library_name"] == "ir3de" and "ir3de" in data["tags"] and data["license"] == "apache-2.0"
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    evaluation = evaluated_router.state.evaluation
    metrics = data["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["type"] == "accuracy" and metrics[0]["value"] == pytest.approx(evaluation["accuracy"])
    text = card.text
    for name, expert in paper_router.statistics.items():
        assert f"| {name} |" in text
        assert f"| {len(small_corpus[name])} | {expert.counts.num_tokens:,} |" in text
    assert f"| routing accuracy | {evaluation['accuracy']:.4f} |" in text
    assert f"| math | {evaluation['recall[math]']:.4f} |" in text
    assert "λ (ridge strength) = 0.01" in text and "selector = topk, k = 10" in text
    for snippet in (
        "from ir3de import Router",
        "RouterRunnable.from_pretrained",
        "Ir3deSelector.from_pretrained",
    ):
        assert snippet in text
    assert 'ir3de route ir3de-test/carded "' in text
    front = yaml.safe_load(text_front_matter(card.content))
    assert front == data
    config = json.loads((git_uploads.repo_path("ir3de-test/carded") / "config.json").read_text())
    assert config["evaluation"]["accuracy"] == evaluation["accuracy"]


def text_front_matter(content: str) -> str:
    assert content.startswith("---\n")
    return content.split("---\n")[1]


def test_a_router_kept_as_token_ids_round_trips_through_the_hub(git_uploads, hub_env, smollm2, small_corpus):
    """keep_token_ids: the pushed folder holds the ids (and says so), the pulled router routes without the
    embeddings and, grown, equals a fit from scratch bit for bit."""
    corpus = {n: t[:6] for n, t in small_corpus.items()}
    kept = Router(smollm2, device="cpu", progress=False, keep_token_ids=True).fit(corpus)
    kept.push_to_hub("ir3de-test/token-ids")
    repo = git_uploads.repo_path("ir3de-test/token-ids")
    assert "contains tokenized training text" in (repo / "README.md").read_text()
    pulled = Router.from_pretrained("ir3de-test/token-ids", device="cpu")
    assert {e.counts.text_form for e in pulled.statistics.values()} == {"tokens"}
    assert [d.expert for d in pulled.route_batch(PROMPTS)] == [d.expert for d in kept.route_batch(PROMPTS)]
    assert pulled._embeddings is None
    pulled = Router.from_pretrained("ir3de-test/token-ids", embeddings=smollm2, device="cpu")
    extra = ["Der Hund läuft schnell über die Wiese.", "Il gatto dorme sul divano."]
    pulled.add_expert("extra", extra)
    scratch = Router(smollm2, device="cpu", progress=False, keep_token_ids=True).fit(
        {**corpus, "extra": extra}
    )
    np.testing.assert_array_equal(pulled.state.weights, scratch.state.weights)
