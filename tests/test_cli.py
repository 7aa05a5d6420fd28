"""The `ir3de` command end to end on real data files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ir3de.cli import main


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory, small_corpus):
    folder = tmp_path_factory.mktemp("corpus")
    with open(folder / "math.jsonl", "w") as fh:
        for t in small_corpus["math"]:
            fh.write(json.dumps({"question": t}) + "\n")
    (folder / "code").mkdir()
    for i, t in enumerate(small_corpus["code"]):
        (folder / "code" / f"snippet{i}.txt").write_text(t)
    (folder / "multilingual.txt").write_text(
        "\n".join(t.replace("\n", " ") for t in small_corpus["multilingual"])
    )
    return folder


@pytest.fixture(scope="module")
def cli_router(tmp_path_factory, corpus_files):
    out = tmp_path_factory.mktemp("routers") / "r"
    code = main(
        [
            "fit",
            "--expert", f"math={corpus_files / 'math.jsonl'}",
            "--field", "question",
            "--expert", f"multilingual={corpus_files / 'multilingual.txt'}",
            "--quiet", "--preset", "paper", "-o", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_fit_info_route(cli_router, capsys):
    assert main(["info", str(cli_router)]) == 0
    out = capsys.readouterr().out
    assert "math: 80 texts" in out and "multilingual: 80 texts" in out
    assert (
        main(["route", str(cli_router), "Tom has 3 apples and buys 5 more. How many apples?", "--json"]) == 0
    )
    decision = json.loads(capsys.readouterr().out.strip())
    assert decision["expert"] == "math" and decision["tokens"] and 0 < decision["confidence"] <= 1
    assert main(["route", str(cli_router), "Die Liebe ist ein seltsames Spiel.", "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("multilingual") and "scores:" in out and "deciding tokens" in out


def test_route_reads_stdin_and_grows(cli_router, corpus_files, tmp_path):
    grown = tmp_path / "grown"
    code = main(
        ["add-expert", str(cli_router), "--expert", f"code={corpus_files / 'code' / '*.txt'}", "--whole-file",
         "--description", "code=Python functions", "--quiet", "-o", str(grown)]
    )  # fmt: skip
    assert code == 0
    result = subprocess.run(
        [sys.executable, "-m", "ir3de.cli", "route", str(grown), "--json"],
        input="def add(a, b):\n    return a + b\nJohn has 12 apples and gives 5 to Mary. How many apples does John have left?\n",
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["prompt"] for d in lines][:2] == ["def add(a, b):", "    return a + b"]
    assert lines[0]["expert"] == "code" and lines[2]["expert"] == "math"
    assert main(["remove-expert", str(grown), "code"]) == 0
    config = json.loads((grown / "config.json").read_text())
    assert [e["name"] for e in config["experts"]] == ["math", "multilingual"]


def test_cli_errors_are_clear(cli_router, tmp_path, capsys):
    assert main(["route", str(tmp_path / "missing"), "hi"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["route", str(cli_router), "   "]) == 2
    assert "no countable token" in capsys.readouterr().err
    assert (
        main(
            [
                "fit",
                "--expert",
                f"a={tmp_path / 'nothing*.txt'}",
                "--expert",
                "b=x.txt",
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "nothing" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_quickstart_reaches_paper_accuracy():
    result = subprocess.run(
        [sys.executable, "-m", "ir3de.cli", "quickstart", "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    accuracy = {
        line.split("(")[1].split()[0]: float(line.split(":")[1].split()[0])
        for line in result.stdout.splitlines()
        if line.startswith("held-out routing accuracy")
    }
    assert set(accuracy) == {"default", "paper"}, result.stdout
    assert accuracy["paper"] >= 0.97, result.stdout
    assert accuracy["default"] >= accuracy["paper"], result.stdout
    assert "deciding tokens" in result.stdout


def test_cookbook_core_recipe(tmp_path, reasoning4):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "cookbook" / "core_grow_a_router.py"
    spec = importlib.util.spec_from_file_location("core_grow_a_router", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(str(tmp_path))
    assert result["three_experts"] > 0.95 and result["four_experts"] > 0.95
    # the folder it saved last is the grown router: it loads with four experts and routes as measured
    from ir3de import Router
    from ir3de.evaluate import evaluate

    grown = Router.from_pretrained(tmp_path / "router")
    assert grown.experts == ["math", "code", "instructions", "multilingual"]
    assert evaluate(grown, reasoning4.test).accuracy == result["four_experts"]
