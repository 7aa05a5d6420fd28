"""`ir3de adapt` and `ir3de forget-adaptation` end to end on real text: every labelled-reader format read
text-only, the router written back equal to one adapted in Python, and forgetting exact."""

from __future__ import annotations

import csv
import json

import pytest

from ir3de import Router
from ir3de.cli.main import main
from ir3de.data.datasets import load_domain


def _decisions(router, probes):
    return [(d.expert, d.confidence) for d in (router.route(p) for p in probes)]


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """Served prompts from outside the corpora (medical questions)."""
    return load_domain("medical")[:60]


@pytest.fixture(scope="module")
def saved(paper_router, tmp_path_factory):
    return paper_router.save_pretrained(tmp_path_factory.mktemp("adapt-cli") / "router")


@pytest.fixture(scope="module")
def files(tmp_path_factory, prompts):
    """The same 40 prompts as a labelled CSV (labels to ignore), a JSONL of objects and a .txt."""
    folder = tmp_path_factory.mktemp("served")
    served = prompts[:40]
    with open(folder / "served.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "prompt", "domain"])
        writer.writerows([i, t, "medical"] for i, t in enumerate(served))
    (folder / "served.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in served), encoding="utf-8"
    )
    (folder / "served.txt").write_text("".join(t.replace("\n", " ") + "\n" for t in served), encoding="utf-8")
    return folder


def test_adapt_writes_the_router_adapted_in_python_and_forget_restores_it(
    saved, files, prompts, smollm2, tmp_path, capsys
):
    probes = prompts[40:]
    original = Router.from_pretrained(saved, embeddings=smollm2)
    out = tmp_path / "adapted"
    fields = ["--text-field", "prompt", "--label-field", "domain"]
    assert main(["adapt", str(saved), str(files / "served.csv"), *fields, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "served.csv has a label column 'domain'" in captured.err and "ir3de learn" in captured.err
    assert "adapted to 40 unlabelled prompts" in captured.out and "routes changed:" in captured.out
    assert "no accuracy" in captured.out

    adapted = Router.from_pretrained(out, embeddings=smollm2)
    reference = Router.from_pretrained(saved, embeddings=smollm2)
    reference.adapt(prompts[:40])
    assert adapted.adaptation.to_dict() == reference.adaptation.to_dict()
    assert adapted.adaptation.num_prompts == 40
    assert _decisions(adapted, probes) == _decisions(reference, probes) != _decisions(original, probes)
    assert main(["info", str(saved)]) == 0  # the source folder is untouched: -o wrote elsewhere
    capsys.readouterr()
    assert Router.from_pretrained(saved).adaptation.num_prompts == 0

    # forget in place: bit-identical decisions to the router before adapting
    assert main(["forget-adaptation", str(out)]) == 0
    assert "forgot the adaptation" in capsys.readouterr().out
    forgotten = Router.from_pretrained(out, embeddings=smollm2)
    assert forgotten.adaptation.num_prompts == 0
    assert _decisions(forgotten, probes) == _decisions(original, probes)


def test_every_format_adapts_to_the_same_text_and_options_reach_the_router(
    saved, files, smollm2, tmp_path, capsys
):
    results = {}
    for name, extra in [("served.jsonl", []), ("served.txt", []), ("served.csv", ["--text-field", "prompt"])]:
        out = tmp_path / name
        # hard labels with unweighted rows: the .txt joins a prompt's lines, so its scores differ a little
        assert main(["adapt", str(saved), str(files / name), *extra, "--rounds", "1", "--hard", "--confidence",
                     "0", "--share-floor", "0.25", "--json", "-o", str(out)]) == 0  # fmt: skip
        captured = capsys.readouterr()
        report = json.loads(captured.out)["report"]
        assert report["prompts"] == 40 and report["settings"]["rounds"] == 1
        assert report["settings"]["soft"] is False
        assert (report["settings"]["confidence"], report["settings"]["share_floor"]) == (0.0, 0.25)
        assert captured.err == ""  # the CSV's label column is 'domain', not the default 'label'
        results[name] = Router.from_pretrained(out, embeddings=smollm2).adaptation.to_dict()
    assert results["served.jsonl"] == results["served.txt"] == results["served.csv"]


def test_bad_files_and_options_are_clear_errors(saved, files, tmp_path, capsys):
    assert main(["adapt", str(saved), str(files / "served.csv")]) == 2  # default text field: text
    err = capsys.readouterr().err
    assert "no column 'text'" in err and "'prompt'" in err
    bad = tmp_path / "served.py"
    bad.write_text("print(1)\n")
    assert main(["adapt", str(saved), str(bad)]) == 2
    assert "unsupported file for served prompts" in capsys.readouterr().err
    assert (
        main(["adapt", str(saved), str(files / "served.txt"), "--rounds", "0", "-o", str(tmp_path / "x")])
        == 2
    )
    assert "rounds" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written on an error
