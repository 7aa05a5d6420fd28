"""The adaptation to unlabelled prompts travels with a router and a stat pack through the Hub (push, pull)."""

from __future__ import annotations

import numpy as np

from ir3de import Router
from ir3de.artifacts.stat_packs import StatPack, merge_packs


def _state(router: Router):
    return router.state


def test_adaptation_goes_through_the_hub(git_uploads, hub_env, small_corpus, small_tests, smollm2, tmp_path):
    base = Router(smollm2, device="cpu", progress=False).fit({n: t[:30] for n, t in small_corpus.items()})
    router = Router.from_pretrained(base.save_pretrained(tmp_path / "r"), embeddings=smollm2, device="cpu")
    served = [t for texts in small_tests.values() for t in texts[:6]]
    router.adapt(served)
    router.push_to_hub("ir3de-test/adapted")
    pulled = Router.from_pretrained("ir3de-test/adapted", embeddings=smollm2, device="cpu")
    assert pulled.adaptation.to_dict() == router.adaptation.to_dict()
    np.testing.assert_array_equal(_state(pulled).table.logits, _state(router).table.logits)
    pulled.forget_adaptation()
    np.testing.assert_array_equal(_state(pulled).table.logits, _state(base).table.logits)

    StatPack.from_router(router, "math").push_to_hub("ir3de-test/math-adapted")
    pack = StatPack.from_pretrained("ir3de-test/math-adapted")
    block = router.adaptation.blocks["math"]
    assert pack.adaptation is not None and pack.adaptation.prompts == block.prompts
    np.testing.assert_array_equal(pack.adaptation.gram, block.gram)
    others = [StatPack.from_router(router, n) for n in router.experts if n != "math"]
    merged = merge_packs([*others, pack], embeddings=smollm2, config=router.config, device="cpu")
    order = [merged.experts.index(n) for n in router.experts]
    np.testing.assert_allclose(
        _state(merged).weights[:, order], _state(router).weights, rtol=1e-9, atol=1e-12
    )
    assert merged.adaptation.num_prompts == 0  # blocks travel, prompt rows do not
    assert set(merged.adaptation.experts) == set(router.experts)
