"""Labelled files on the command line: `ir3de fit --labelled`, `ir3de eval --labelled`, `ir3de learn`,
`ir3de forget-traffic`, end to end on real text."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ir3de import Router
from ir3de.cli.main import main


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_corpus, small_tests):
    folder = tmp_path_factory.mktemp("labelled")
    names = ["math", "code", "multilingual"]
    train = [{"text": t, "label": n} for n in names for t in small_corpus[n][:30]]
    _write_jsonl(folder / "train.jsonl", train)
    with open(folder / "served.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "prompt", "domain"])
        for i, (name, t) in enumerate((n, t) for n in names for t in small_tests[n][:5]):
            writer.writerow([i, t, name])
    import pyarrow as pa
    import pyarrow.parquet as pq

    held = [{"q": t, "y": n} for n in names for t in small_tests[n][10:30]]
    pq.write_table(pa.Table.from_pylist(held), folder / "held_out.parquet")
    _write_jsonl(
        folder / "legal.jsonl", [{"text": "The lessee shall indemnify the lessor.", "label": "legal"}]
    )
    return folder


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, files):
    out = tmp_path_factory.mktemp("routers") / "r"
    assert main(["fit", "--labelled", str(files / "train.jsonl"), "--quiet", "-o", str(out)]) == 0
    return out


def test_fit_takes_experts_from_the_labels(fitted, small_corpus, smollm2):
    router = Router.from_pretrained(fitted)
    assert router.experts == ("math", "code", "multilingual")
    reference = Router(smollm2, device="cpu", progress=False).fit(
        {n: small_corpus[n][:30] for n in router.experts}
    )
    assert np.array_equal(router.state.weights, reference.state.weights)


def test_learn_then_forget_from_the_command_line(fitted, files, tmp_path, capsys):
    before = Router.from_pretrained(fitted)
    out = tmp_path / "learned"
    served = str(files / "served.csv")
    fields = ["--text-field", "prompt", "--label-field", "domain"]
    assert main(["learn", str(fitted), served, *fields, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "learned 15 labelled prompts" in printed and "math: 5 prompts" in printed
    learned = Router.from_pretrained(out)
    assert {n: s.num_prompts for n, s in learned.traffic.items()} == {"math": 5, "code": 5, "multilingual": 5}
    assert not np.array_equal(learned.state.weights, before.state.weights)
    assert main(["info", str(out)]) == 0
    assert "math: 30 texts" in (info := capsys.readouterr().out) and "+ 5 learned prompts" in info
    # in place, as JSON
    assert main(["learn", str(out), served, *fields, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["learned"] == 15 and report["traffic"]["code"]["num_prompts"] == 10
    assert main(["forget-traffic", str(out), "--expert", "code"]) == 0
    assert set(Router.from_pretrained(out).traffic) == {"math", "multilingual"}
    assert main(["forget-traffic", str(out)]) == 0
    capsys.readouterr()
    forgotten = Router.from_pretrained(out)
    assert forgotten.traffic == {}
    assert np.array_equal(forgotten.state.table.logits, before.state.table.logits)


def test_unknown_labels_are_an_error_or_new_experts(fitted, files, tmp_path, capsys):
    out = tmp_path / "grown"
    assert main(["learn", str(fitted), str(files / "legal.jsonl"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "['legal']" in err and "['math', 'code', 'multilingual']" in err and "--create-experts" in err
    assert not out.exists()
    assert main(["learn", str(fitted), str(files / "legal.jsonl"), "--create-experts", "-o", str(out)]) == 0
    assert "new experts" in capsys.readouterr().out
    assert Router.from_pretrained(out).experts == ("math", "code", "multilingual", "legal")


def test_bad_labelled_files_are_clear_errors(fitted, files, capsys):
    assert main(["learn", str(fitted), str(files / "served.csv")]) == 2  # default fields: text, label
    err = capsys.readouterr().err
    assert "no text column 'text'" in err and "'prompt'" in err and "--text-field" in err


def test_eval_reads_a_labelled_file(fitted, files, capsys):
    args = ["eval", str(fitted), "--labelled", str(files / "held_out.parquet"), "--text-field", "q"]
    assert main([*args, "--label-field", "y", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_prompts"] == 60 and report["accuracy"] > 0.8
    assert main([*args, "--label-field", "y", "--suite", "reasoning4"]) == 2  # a usage error
    assert "not both" in capsys.readouterr().err
