"""Router is a façade over the fitting pipeline and persistence: the same functions, the same numbers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ir3de import Router, RouterConfig
from ir3de.artifacts import folders as persistence
from ir3de.artifacts.stat_packs import StatPack
from ir3de.errors import NotFittedError, TokenizerMismatchError
from ir3de.fitting import pipeline as fitting
from ir3de.fitting.pipeline import ridge_matrices
from ir3de.router import record_evaluation


def test_pipeline_functions_rebuild_the_routers_table(paper_router, smollm2):
    names = paper_router.experts
    counts = [paper_router.statistics[n].counts for n in names]
    c = paper_router.config
    grams = [fitting.token_gram(smollm2.matrix, x) for x in counts]
    state = fitting.fit_state(
        names,
        counts,
        matrix=smollm2.matrix,
        excluded_ids=paper_router.state.excluded_ids,
        level=c.level,
        lam=c.lam,
        balance=c.balance,
        column_norm=c.column_norm,
        token_grams=grams,
    )
    assert state.experts == tuple(names)
    np.testing.assert_array_equal(state.table.logits, paper_router.state.table.logits)
    np.testing.assert_array_equal(state.weights, paper_router.state.weights)
    a, b = ridge_matrices(paper_router.statistics, paper_router.config, matrix=paper_router.embeddings.matrix)
    a2, b2 = fitting.level_matrices(counts, level="token", balance=False, token_grams=grams)
    np.testing.assert_allclose(a, a2, rtol=1e-12)
    np.testing.assert_allclose(b, b2, rtol=1e-12)


def test_public_state_replaces_private_attributes(paper_router, smollm2):
    state = paper_router.state
    assert state.tokenizer is smollm2.tokenizer and state.experts == paper_router.experts
    assert state.fingerprint == smollm2.fingerprint()
    assert state.embedding_source == dict(smollm2.source)
    np.testing.assert_array_equal(state.excluded_ids, np.asarray(smollm2.excluded_ids))
    assert dict(state.descriptions) == {n: s.description for n, s in paper_router.statistics.items()}
    with pytest.raises(NotFittedError):
        Router(smollm2, device="cpu").state  # noqa: B018


def test_device_is_checked_at_once_and_resolved_when_fitting() -> None:
    with pytest.raises(ValueError, match="device must be"):
        Router(device="tpu")
    assert Router(device="cpu").experts == ()  # "cpu" needs no torch to resolve
    assert fitting.resolve_device("auto") in ("cpu", "cuda")


def test_evaluation_is_public_and_cleared_by_a_change_of_experts(smollm2, small_corpus):
    router = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(
        {n: small_corpus[n][:20] for n in list(small_corpus)[:2]}
    )
    record_evaluation(router, {"accuracy": 0.5})
    data = persistence.RouterData(router.config, router.state, router.statistics)
    assert persistence.router_config_dict(data)["evaluation"] == {"accuracy": 0.5}
    router.configure(lam=0.05)  # a re-solve under new settings keeps the figures
    assert router.state.evaluation == {"accuracy": 0.5}
    name = list(small_corpus)[2]
    router.add_expert(name, small_corpus[name][:20])
    assert router.state.evaluation is None


def test_stat_pack_round_trip_through_persistence(tmp_path, paper_router, smollm2):
    name = paper_router.experts[0]
    pack = StatPack.from_router(paper_router, name)
    folder = pack.save_pretrained(tmp_path / "pack")
    data = persistence.load_pack(folder)
    assert data.name == name and data.counts == paper_router.statistics[name].counts
    assert data.fingerprint == paper_router.state.fingerprint
    loaded = StatPack.from_pretrained(folder)
    assert isinstance(loaded, StatPack) and loaded.counts == pack.counts
    other = dict(paper_router.state.fingerprint, embedding_sha256="0" * 64)
    with pytest.raises(TokenizerMismatchError, match="embedding matrix"):
        loaded.check_compatible(other)


def test_fitting_on_the_cpu_imports_no_torch() -> None:
    script = textwrap.dedent(
        """
        import sys
        from ir3de import Router, RouterConfig, TokenEmbeddings
        from ir3de.artifacts.stat_packs import StatPack
        texts = {"math": ["Solve 3x + 5 = 11", "What is 7 * 8?"], "code": ["def f(x): return x", "import os"]}
        emb = TokenEmbeddings.default()
        for level in ("text", "token"):
            router = Router(emb, device="cpu", progress=False, level=level).fit(texts)
            assert router.route("2 + 2 = ?").expert in ("math", "code")
        StatPack.compute("math", texts["math"], emb, progress=False)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
