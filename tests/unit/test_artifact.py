"""ir3de.artifacts.format: atomic folder writes, checked reads, typed errors for every broken artifact."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from ir3de.artifacts.format import (
    CONFIG_FILE,
    FORMAT_VERSION,
    ROUTER_FILE,
    check_text_statistics_spec,
    dequantize_q8_blocks,
    expect_shape,
    file_sha256,
    q8_blocks,
    read_config,
    read_file_checked,
    read_tensors,
    read_text_statistics,
    tensors_to_bytes,
    text_gram_tensors,
    text_statistics_spec,
    write_folder_atomically,
)
from ir3de.errors import ArtifactError, ArtifactVersionError
from ir3de.fitting.statistics import ExpertCounts


def listing(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(folder):
    return sorted(p.name for p in folder.parent.iterdir())


def config_bytes(**extra):
    return json.dumps({"library": "ir3de", "format_version": FORMAT_VERSION, **extra}).encode()


# ------------------------------------------------------------------------------------- atomic writes


def test_write_creates_and_replaces_keeping_other_entries(tmp_path):
    folder = tmp_path / "deep" / "router"
    assert write_folder_atomically(folder, {"a.txt": b"1", "b.bin": b"\x00\x01"}) == folder.absolute()
    assert listing(folder) == {"a.txt": b"1", "b.bin": b"\x00\x01"}
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_bytes(b"ref")
    (folder / "notes.md").write_bytes(b"mine")
    write_folder_atomically(folder, {"a.txt": b"2", "c.txt": b"3"})
    # new files replace old ones of the same name; entries not written are carried over
    assert listing(folder) == {
        ".git/HEAD": b"ref",
        "a.txt": b"2",
        "b.bin": b"\x00\x01",
        "c.txt": b"3",
        "notes.md": b"mine",
    }
    assert siblings(folder) == ["router"]  # no temporary or backup folder left behind


def test_a_failed_write_leaves_the_previous_folder_intact(tmp_path):
    folder = tmp_path / "router"
    write_folder_atomically(folder, {"a.txt": b"old", "b.txt": b"old"})
    before = listing(folder)

    class Unwritable:
        pass

    with pytest.raises(TypeError):
        write_folder_atomically(folder, {"a.txt": b"new", "b.txt": Unwritable()})  # type: ignore[dict-item]
    assert listing(folder) == before and siblings(folder) == ["router"]


def test_a_failed_swap_restores_the_previous_folder(tmp_path, monkeypatch):
    folder = tmp_path / "router"
    write_folder_atomically(folder, {"a.txt": b"old"})
    real_replace = os.replace

    def failing_replace(src, dst):
        if ".tmp-" in str(src):  # the final swap of the new folder into place
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_folder_atomically(folder, {"a.txt": b"new"})
    monkeypatch.undo()
    assert listing(folder) == {"a.txt": b"old"} and siblings(folder) == ["router"]


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "router").write_bytes(b"not a folder")
    with pytest.raises(ArtifactError, match="is not a folder"):
        write_folder_atomically(tmp_path / "router", {"a": b""})
    assert (tmp_path / "router").read_bytes() == b"not a folder"


# ------------------------------------------------------------------------------------------- reads


def test_sha256_is_hashlib():
    assert file_sha256(b"ir3de") == hashlib.sha256(b"ir3de").hexdigest()


def test_read_config_accepts_a_valid_one(tmp_path):
    folder = write_folder_atomically(tmp_path / "r", {CONFIG_FILE: config_bytes(experts=["a"])})
    assert read_config(folder)["experts"] == ["a"]
    older = write_folder_atomically(tmp_path / "v1", {CONFIG_FILE: config_bytes(format_version=1)})
    assert read_config(older)["format_version"] == 1


@pytest.mark.parametrize(
    ("files", "error", "message"),
    [
        (None, ArtifactError, "is not a folder"),
        ({"other.json": b"{}"}, ArtifactError, "has no config.json"),
        ({CONFIG_FILE: b"{not json"}, ArtifactError, "not valid JSON"),
        ({CONFIG_FILE: b"\xff\xfe"}, ArtifactError, "not valid JSON"),
        ({CONFIG_FILE: b"[]"}, ArtifactError, "is not an ir3de router"),
        (
            {CONFIG_FILE: json.dumps({"library": "other", "format_version": 1}).encode()},
            ArtifactError,
            "needs",
        ),
        (
            {CONFIG_FILE: json.dumps({"library": "ir3de"}).encode()},
            ArtifactError,
            "no integer format_version",
        ),
        ({CONFIG_FILE: config_bytes(format_version="2")}, ArtifactError, "no integer format_version"),
        (
            {CONFIG_FILE: config_bytes(format_version=FORMAT_VERSION + 1)},
            ArtifactVersionError,
            "pip install -U",
        ),
    ],
)
def test_read_config_errors(files, error, message, tmp_path):
    folder = tmp_path / "r"
    if files is not None:
        write_folder_atomically(folder, files)
    with pytest.raises(error, match=message):
        read_config(folder)


def test_checked_reads_verify_size_and_sha256(tmp_path):
    arrays = {"logits": np.arange(6, dtype=np.float32).reshape(3, 2), "ids": np.array([1, 5], np.int64)}
    data = tensors_to_bytes(arrays, {"kind": "test"})
    config = {"files": {ROUTER_FILE: {"size": len(data), "sha256": file_sha256(data)}}}
    folder = write_folder_atomically(tmp_path / "r", {ROUTER_FILE: data})
    loaded = read_tensors(folder, ROUTER_FILE, config)
    assert loaded.keys() == arrays.keys()
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype and np.array_equal(loaded[k], v)
    assert read_file_checked(folder, ROUTER_FILE, {}) == data  # nothing recorded: nothing to check

    (folder / ROUTER_FILE).write_bytes(data[:-1])
    with pytest.raises(ArtifactError, match="truncated"):
        read_file_checked(folder, ROUTER_FILE, config)
    flipped = bytearray(data)
    flipped[-1] ^= 1
    (folder / ROUTER_FILE).write_bytes(bytes(flipped))
    with pytest.raises(ArtifactError, match="sha256"):
        read_tensors(folder, ROUTER_FILE, config)
    (folder / ROUTER_FILE).write_bytes(b"\x08" + b"\x00" * 7 + b"garbage!")
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        read_tensors(folder, ROUTER_FILE, {})
    (folder / ROUTER_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"is missing router\.safetensors"):
        read_tensors(folder, ROUTER_FILE, config)


def test_expect_shape():
    arrays = {"w": np.zeros((3, 2))}
    assert expect_shape(arrays, "w", (3, 2), "here") is arrays["w"]
    with pytest.raises(ArtifactError, match=r"tensor 'w' has shape \(3, 2\), expected \(2, 3\)"):
        expect_shape(arrays, "w", (2, 3), "here")
    with pytest.raises(ArtifactError, match="has no tensor 'logits'"):
        expect_shape(arrays, "logits", (3, 2), "here")


def test_text_statistics_spec_is_checked():
    spec = text_statistics_spec()
    check_text_statistics_spec(None, "old file")  # files without text statistics are fine
    check_text_statistics_spec(dict(spec), "file")
    with pytest.raises(ArtifactError, match="re-count"):
        check_text_statistics_spec({**spec, "window": spec["window"] + 1}, "file")


def test_text_statistics_tensors_round_trip_in_each_form(tmp_path):
    gram = np.diag([1.0, 2.0, 1.25])
    rows = np.array([[0.5, 0.0, 1.0], [0.0, 0.25, 0.5]])
    counts = [
        ExpertCounts(np.array([1]), np.array([1]), 1, gram),
        ExpertCounts(np.array([2]), np.array([3]), 1),
        ExpertCounts(np.array([2]), np.array([3]), 2, text_rows=rows),
    ]
    tensors = text_gram_tensors(counts, hidden=2)
    assert tensors["text_forms"].tolist() == [4, 0, 2] and tensors["text_grams"].shape == (0, 3, 3)
    assert tensors["text_grams_lower"].tolist() == [[1.0, 0.0, 2.0, 0.0, 0.0, 1.25]]  # lower triangle
    assert tensors["text_rows"].shape == (2, 3) and tensors["text_row_offsets"].tolist() == [0, 0, 0, 2]
    data = tensors_to_bytes(tensors)
    folder = write_folder_atomically(tmp_path / "s", {"statistics.safetensors": data})
    back = read_text_statistics(read_tensors(folder, "statistics.safetensors", {}), 3, 2, "stats")
    assert np.array_equal(back[0]["stored_gram"], gram) and back[1] == {}
    assert np.array_equal(back[2]["text_rows"], rows)
    assert text_gram_tensors([c.without_text_gram() for c in counts], hidden=2) == {}
    assert read_text_statistics({}, 3, 2, "stats") == [{}, {}, {}]
    with pytest.raises(ArtifactError, match="expected"):
        read_text_statistics(tensors, 4, 2, "stats")  # wrong number of experts
    with pytest.raises(ArtifactError, match="float64"):
        read_text_statistics({**tensors, "text_rows": tensors["text_rows"].astype(np.float32)}, 3, 2, "stats")
    with pytest.raises(ArtifactError, match="text_row_offsets"):
        read_text_statistics({**tensors, "text_row_offsets": np.array([0, 1, 1, 2])}, 3, 2, "stats")


def test_text_statistics_of_format_3_still_load():
    gram = np.diag([1.0, 2.0, 1.25])
    older = {"text_grams": np.stack([gram, np.zeros((3, 3))]), "has_text_gram": np.array([1, 0], np.uint8)}
    back = read_text_statistics(older, 2, 2, "stats")
    assert np.array_equal(back[0]["stored_gram"], gram) and back[1] == {}
    with pytest.raises(ArtifactError, match="float64"):
        read_text_statistics({**older, "text_grams": older["text_grams"].astype(np.float32)}, 2, 2, "stats")


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_q8_blocks_find_gguf_q8_0_exactly_and_nothing_else() -> None:
    """Embeddings dequantised from GGUF's Q8_0 (the gguf package's own quantise/dequantise) come back
    as the same int8 values and float16 scales, bit for bit; any other matrix comes back None."""
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(0)
    original = (rng.normal(size=(300, 64)) * rng.uniform(0.001, 3.0, size=(300, 1))).astype(np.float32)
    original[7] = 0.0  # an all-zero row: scale 0
    original[8, :32] = 0.0  # and an all-zero block
    packed = gguf.quants.quantize(original, gguf.GGMLQuantizationType.Q8_0)
    matrix = gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.Q8_0).astype(np.float32)
    found = q8_blocks(matrix)
    assert found is not None
    q, scales = found
    assert (
        q.dtype == np.int8
        and q.shape == (300, 64)
        and scales.dtype == np.float16
        and scales.shape == (300, 2)
    )
    raw = packed.reshape(300, 2, 34)
    assert np.array_equal(raw[:, :, 2:].copy().view(np.int8).reshape(300, 64), q)
    assert np.array_equal(raw[:, :, :2].copy().view(np.uint16).reshape(300, 2), scales.view(np.uint16))
    assert _bits_equal(dequantize_q8_blocks(q, scales), matrix)

    off = matrix.copy()
    off[123, 45] = np.nextafter(off[123, 45], np.float32(np.inf))  # one ulp off the grid
    negative_zero = matrix.copy()
    negative_zero[7, 0] = -0.0  # equal as a number, not as bits
    for other in (
        off,
        negative_zero,
        original,
        matrix[:, :48],
        matrix.astype(np.float64),
        np.full((2, 32), np.nan, np.float32),
    ):
        assert q8_blocks(other) is None
    # any block size that divides the width, with the Q8_0 rule (a block's largest magnitude is 127 · scale)
    q16 = rng.integers(-127, 128, size=(5, 2, 16)).astype(np.int8)
    q16[:, :, 3] = -127
    d16 = rng.uniform(1e-3, 1.0, size=(5, 2)).astype(np.float16)
    x16 = (q16.astype(np.float32) * d16.astype(np.float32)[:, :, None]).reshape(5, 32)
    found16 = q8_blocks(x16, block=16)
    assert found16 is not None and np.array_equal(found16[0], q16.reshape(5, 32))
    assert _bits_equal(dequantize_q8_blocks(*found16), x16)
