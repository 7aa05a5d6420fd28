"""Distributed counting on a local Ray (2 CPUs) equals the local fit, integer for integer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ir3de import Router, RouterConfig  # noqa: E402
from ir3de.data.corpus import read_texts  # noqa: E402
from ir3de.routing.prompts import route_indices  # noqa: E402
from ir3de_integrations.ray import ShardError, count_dataset, count_shards, fit_router  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory, reasoning4):
    """The real reasoning4 training text split into many shards of several formats."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("shards")
    for name, texts in reasoning4.train.items():
        texts = texts[:300]
        for i in range(5):
            part = texts[i::5]
            if name == "code" and i % 2:
                pq.write_table(pa.table({"text": part}), folder / f"{name}-{i}.parquet")
            else:
                with open(folder / f"{name}-{i}.jsonl", "w") as fh:
                    for t in part:
                        fh.write(json.dumps({"text": t}) + "\n")
    return folder


def _globs(folder, names=("math", "code", "instructions", "multilingual")):
    return {
        n: [str(folder / f"{n}-*.jsonl"), str(folder / f"{n}-*.parquet")]
        if n == "code"
        else [str(folder / f"{n}-*.jsonl")]
        for n in names
    }


def _local_texts(folder, globs):
    from ir3de.data.corpus import expand_paths

    return {n: list(read_texts(expand_paths(g), field="text")) for n, g in globs.items()}


def test_ray_counts_equal_local_counts(local_ray, smollm2, shard_folder):
    globs = _globs(shard_folder)
    report = count_shards(globs, embeddings=smollm2, field="text")
    local = Router(smollm2, device="cpu", progress=False).fit(_local_texts(shard_folder, globs))
    assert report.shards_counted == 20 and not report.skipped
    for name in globs:  # token counts exactly; text Grams to float64 rounding (shard sums reorder)
        assert report.statistics[name] == local.statistics[name].counts
        assert report.statistics[name].text_gram is not None
    router, _ = fit_router(globs, embeddings=smollm2, field="text")
    np.testing.assert_allclose(router.state.weights, local.state.weights, rtol=1e-7, atol=1e-10)
    prompts = [t for texts in _local_texts(shard_folder, globs).values() for t in texts[:30]]
    assert (
        route_indices(router.state, router.config, prompts).tolist()
        == route_indices(local.state, local.config, prompts).tolist()
    )
    # token level: integer counts, so the Ray fit is bit-identical to the local one
    paper, paper_report = fit_router(
        globs, router=Router(smollm2, config=RouterConfig.paper(), device="cpu"), field="text"
    )
    assert all(c.text_gram is None for c in paper_report.statistics.values())  # not counted: not needed
    local_paper = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(
        _local_texts(shard_folder, globs)
    )
    assert np.array_equal(paper.state.weights, local_paper.state.weights)
    assert "20 shard(s)" in report.summary()


def test_ray_dataset_inputs_equal_local_counts(local_ray, smollm2, small_corpus):
    rows = [{"text": t, "expert": n} for n, texts in small_corpus.items() for t in texts]
    report = count_dataset(ray.data.from_items(rows), embeddings=smollm2, batch_size=37)
    local = Router(smollm2, device="cpu", progress=False).fit(small_corpus)
    assert {n: report.statistics[n] for n in small_corpus} == {
        n: s.counts for n, s in local.statistics.items()
    }
    per_expert = {n: ray.data.from_items([{"text": t} for t in texts]) for n, texts in small_corpus.items()}
    report = count_dataset(per_expert, embeddings=smollm2)
    assert {n: report.statistics[n] for n in small_corpus} == {
        n: s.counts for n, s in local.statistics.items()
    }


def test_bad_shards_are_named_or_skipped_and_counted(local_ray, smollm2, shard_folder, tmp_path):
    (tmp_path / "math-wrongfield.jsonl").write_text(json.dumps({"question": "What is 2+2?"}) + "\n")
    (tmp_path / "math-notastring.jsonl").write_text(json.dumps({"text": 5}) + "\n")
    (tmp_path / "math-empty.jsonl").write_text("")
    (tmp_path / "math-broken.parquet").write_bytes(b"this is not parquet")
    globs = _globs(shard_folder, ("math", "code"))
    bad = [str(tmp_path / "math-*.jsonl"), str(tmp_path / "math-*.parquet")]
    with pytest.raises(ShardError) as info:
        count_shards({**globs, "math": globs["math"] + bad}, embeddings=smollm2, field="text")
    message = str(info.value)
    for name in ("math-wrongfield.jsonl", "math-notastring.jsonl", "math-empty.jsonl", "math-broken.parquet"):
        assert name in message
    assert "empty shard" in message and "skip_bad" in message
    report = count_shards(
        {**globs, "math": globs["math"] + bad}, embeddings=smollm2, field="text", skip_bad=True
    )
    assert sorted(p.shard.rsplit("/", 1)[1] for p in report.skipped) == [
        "math-broken.parquet", "math-empty.jsonl", "math-notastring.jsonl", "math-wrongfield.jsonl",
    ]  # fmt: skip
    good = count_shards(globs, embeddings=smollm2, field="text")
    assert report.statistics == good.statistics
    assert "skipped 4 bad shard(s)" in report.summary()


def test_bad_dataset_columns_are_reported(local_ray, smollm2):
    with pytest.raises(ShardError, match="no column"):
        count_dataset(ray.data.from_items([{"body": "x", "expert": "a"}]), embeddings=smollm2)
    with pytest.raises(ShardError, match="non-string"):
        count_dataset(
            ray.data.from_items([{"text": "ok", "expert": "a"}, {"text": None, "expert": "a"}]),
            embeddings=smollm2,
        )
    report = count_dataset(
        ray.data.from_items([{"text": "fine text", "expert": "a"}, {"body": "x", "expert": "b"}]),
        embeddings=smollm2,
        skip_bad=True,
        batch_size=1,
    )
    assert list(report.statistics) == ["a"] and len(report.skipped) == 1


def test_cli_fits_on_ray_from_a_shard_glob(shard_folder, tmp_path):
    """`ir3de fit --engine ray` without an address starts its own local Ray and equals the local CLI fit."""
    common = ["--field", "text", "--quiet", "--device", "cpu"]
    experts = [
        "--expert",
        f"math={shard_folder / 'math-*.jsonl'}",
        "--expert",
        f"multilingual={shard_folder / 'multilingual-*.jsonl'}",
    ]
    env_cmd = [sys.executable, "-m", "ir3de.cli", "fit", *experts, *common]
    ray_run = subprocess.run(
        [*env_cmd, "--engine", "ray", "-o", str(tmp_path / "ray")], capture_output=True, text=True
    )
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    assert "counted 10 shard(s)" in ray_run.stdout
    # issue 13.12: Ray's INFO logs (start-up, execution plans) no longer flood the terminal
    assert not [line for line in (ray_run.stdout + ray_run.stderr).splitlines() if " INFO " in line]
    subprocess.run([*env_cmd, "-o", str(tmp_path / "local")], check=True, capture_output=True)
    a, b = Router.from_pretrained(tmp_path / "ray"), Router.from_pretrained(tmp_path / "local")
    assert a.statistics == b.statistics  # token counts exactly, text Grams to float64 rounding
    np.testing.assert_allclose(a.state.table.logits, b.state.table.logits, rtol=1e-5, atol=1e-6)


@pytest.fixture
def hang_guard():
    """Turn a hang into a failure: SIGALRM interrupts a job that stops making progress (issue 13.15)."""
    import signal

    def on_alarm(signum, frame):
        raise TimeoutError("the Ray fit did not finish in 300 s: counting actors starve the read tasks")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_fit_from_file_reading_datasets_finishes(local_ray, smollm2, small_corpus, tmp_path, hang_guard):
    """Datasets with read tasks (`read_json`, `read_parquet`; the other tests use `from_items`, which
    has none) give the statistics of a local fit: one labelled dataset, and {expert: dataset}. (This
    module's Ray has a small object store and did not hang before the fix; the hang itself is
    reproduced by the next test, on a fresh default Ray.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = {n: texts[:40] for n, texts in small_corpus.items()}
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    for i, (name, texts) in enumerate(corpus.items()):
        with open(labelled / f"part-{i}.jsonl", "w") as fh:
            for t in texts:
                fh.write(json.dumps({"text": t, "expert": name}) + "\n")
        pq.write_table(pa.table({"text": texts}), tmp_path / f"{name}.parquet")
    local = Router(smollm2, device="cpu", progress=False).fit(corpus)

    router, report = fit_router(
        ray.data.read_json(sorted(str(p) for p in labelled.glob("*.jsonl"))),
        router=Router(smollm2, device="cpu", progress=False),
    )
    assert {n: report.statistics[n] for n in corpus} == {n: s.counts for n, s in local.statistics.items()}
    np.testing.assert_allclose(router.state.weights, local.state.weights, rtol=1e-6, atol=1e-9)

    per_expert = {n: ray.data.read_parquet(str(tmp_path / f"{n}.parquet")) for n in corpus}
    router, report = fit_router(
        per_expert, router=Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False)
    )
    local_paper = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(corpus)
    assert {n: report.statistics[n] for n in corpus} == {
        n: s.counts for n, s in local_paper.statistics.items()
    }
    assert np.array_equal(router.state.weights, local_paper.state.weights)


_HANG_SCRIPT = """
import json, sys
from pathlib import Path
import ray
from ir3de import Router, RouterConfig, TokenEmbeddings
from ir3de_integrations.ray import fit_router
from ir3de.routing.prompts import route_indices

files = sorted(Path(sys.argv[1]).glob("part-*.jsonl"))
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a plain local 2-CPU Ray, as a user starts it
emb = TokenEmbeddings.default()
_, single = fit_router(ray.data.read_json([str(p) for p in files]), router=Router(emb, progress=False))
print("single", flush=True)
names = json.loads(sys.argv[2])
parts = {name: ray.data.read_json(str(p)) for name, p in zip(names, files)}  # the expert column is ignored
_, per_expert = fit_router(parts, router=Router(emb, progress=False))
print(json.dumps([{n: c.num_tokens for n, c in r.statistics.items()} for r in (single, per_expert)]))
ray.shutdown()
"""


def test_fit_from_read_json_on_a_fresh_two_cpu_ray_does_not_hang(smollm2, tmp_path):
    """13.15 as reported: `fit_router(ray.data.read_json(files))` on `ray.init(num_cpus=2)` (default
    object store) hung, the counting pool holding both CPUs so the read tasks never ran (this script
    and data: no result in 150 s and 200 s in two runs before the fix, 26 s after). A separate process,
    so a hang is a timeout, not a stuck suite."""
    from ir3de.data.datasets import load_domain

    names = ["math", "code", "instructions", "multilingual"]
    corpus = {n: load_domain(n)[:100] for n in names}
    for i, (name, texts) in enumerate(corpus.items()):
        with open(tmp_path / f"part-{i}.jsonl", "w") as fh:
            fh.writelines(json.dumps({"text": t, "expert": name}) + "\n" for t in texts)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _HANG_SCRIPT, str(tmp_path), json.dumps(names)],
            capture_output=True,
            text=True,
            timeout=420,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("fit_router on read_json datasets did not finish in 420 s: the read tasks starve")
    assert done.returncode == 0, done.stderr[-3000:]
    single, per_expert = json.loads(done.stdout.strip().splitlines()[-1])
    local = Router(smollm2, device="cpu", progress=False).fit(corpus)
    expected = {n: s.counts.num_tokens for n, s in local.statistics.items()}
    assert single == expected and per_expert == expected


def _texts_of(tokens):
    """The texts of TextTokens as a sorted list of id tuples (shards arrive in any order)."""
    return sorted(tuple(tokens.ids[a:b].tolist()) for a, b in zip(tokens.offsets[:-1], tokens.offsets[1:]))


@pytest.mark.parametrize("keep", ["auto", False])
def test_small_experts_arrive_in_their_smaller_form(local_ray, smollm2, small_corpus, tmp_path, keep):
    """Twelve experts of 4 texts (fewer rows than h + 1), each split over several dataset batches: the
    Ray count holds them as a local fit does — rows, with their token ids under ``"auto"`` — never
    as (h+1)² Grams, and the router saved from it is as small as the local one."""
    experts = {f"{n}-{i}": texts[4 * i : 4 * i + 4] for n, texts in small_corpus.items() for i in range(3)}
    rows = [
        {"text": t, "expert": n} for i in range(4) for n, texts in experts.items() for t in texts[i : i + 1]
    ]
    config = RouterConfig(keep_token_ids=keep)
    report = count_dataset(ray.data.from_items(rows), embeddings=smollm2, batch_size=7, keep_token_ids=keep)
    local = Router(smollm2, config=config, device="cpu", progress=False).fit(experts)
    for name in experts:
        got, want = report.statistics[name], local.statistics[name].counts
        assert got.text_form == "rows" and got.text_rows.shape == want.text_rows.shape
        np.testing.assert_allclose(got.text_gram, want.text_gram, rtol=1e-10, atol=1e-12)
        if keep == "auto":
            assert _texts_of(got.text_tokens) == _texts_of(want.text_tokens)
        else:
            assert got.text_tokens is None and want.text_tokens is None
    router, _ = fit_router(ray.data.from_items(rows), router=Router(smollm2, config=config, device="cpu"))
    np.testing.assert_allclose(router.state.weights, local.state.weights, rtol=1e-7, atol=1e-10)

    def size(folder):
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    ray_size = size(router.save_pretrained(tmp_path / "ray"))
    local_size = size(local.save_pretrained(tmp_path / "local"))
    assert ray_size <= 1.01 * local_size


def test_a_shard_row_gives_back_its_counts_in_every_form(smollm2, small_corpus):
    from ir3de.fitting.pipeline import count_texts
    from ir3de.fitting.statistics import ExpertCounts
    from ir3de_integrations.ray.report import row_counts, shard_row

    kw = {
        "tokenizer": smollm2.tokenizer,
        "vocab_size": smollm2.vocab_size,
        "excluded_ids": np.asarray(smollm2.excluded_ids),
        "progress": False,
    }
    matrix = np.asarray(smollm2.matrix)
    cases = {
        "gram": count_texts(small_corpus["math"], embedding_matrix=matrix, **kw),
        "rows": count_texts(small_corpus["math"][:3], embedding_matrix=matrix, **kw),
        "rows+ids": count_texts(
            small_corpus["math"][:3], embedding_matrix=matrix, keep_token_ids="auto", **kw
        ),
        "none": count_texts(small_corpus["math"][:3], **kw),
    }
    forms = {k: c.text_form for k, c in cases.items()}
    assert forms == {"gram": "gram", "rows": "rows", "rows+ids": "rows", "none": None}
    with_ids = cases["rows+ids"]
    cases["ids"] = ExpertCounts(
        with_ids.token_ids, with_ids.counts, with_ids.num_texts, text_tokens=with_ids.text_tokens
    )
    assert cases["ids"].text_form == "tokens"
    for name, counts in cases.items():
        back = row_counts(shard_row("s", "math", counts))
        assert back.text_form == counts.text_form and back == counts, name
        assert (back.text_tokens is None) == (counts.text_tokens is None), name


def test_shards_add_in_input_order_whichever_actor_finishes_first(local_ray, smollm2, small_corpus, tmp_path):
    """An expert's first shard is slow (60,000 texts of one special token, which count as texts without
    a token, before its real ones), its next two are quick, and two actors count them: the quick ones
    finish first, yet the statistics add in shard order, so the small expert's rows and ids are those
    of a local fit, bit for bit, on every run."""
    texts = small_corpus["math"][:9]
    parts = [["<|endoftext|>"] * 60_000 + texts[:3], texts[3:6], texts[6:]]
    for i, part in enumerate(parts):
        (tmp_path / f"math-{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    from ir3de.fitting.pipeline import count_texts

    want = count_texts(  # what a local fit counts: the texts in file order
        _local_texts(tmp_path, {"math": [str(tmp_path / "math-*.jsonl")]})["math"],
        tokenizer=smollm2.tokenizer,
        vocab_size=smollm2.vocab_size,
        excluded_ids=np.asarray(smollm2.excluded_ids),
        embedding_matrix=np.asarray(smollm2.matrix),
        keep_token_ids="auto",
        progress=False,
    )
    assert want.text_form == "rows" and want.text_tokens is not None
    for _ in range(2):
        report = count_shards(
            {"math": str(tmp_path / "math-*.jsonl")}, embeddings=smollm2, field="text", concurrency=2
        )
        got = report.statistics["math"]
        assert got == want and got.text_tokens == want.text_tokens
        assert np.array_equal(got.text_rows, want.text_rows)
