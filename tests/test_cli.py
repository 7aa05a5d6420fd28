"""The `ir3de` command end to end on real data files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ir3de.cli.main import main
from ir3de.routing.prompts import route_indices


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
    from ir3de.evaluation.evaluate import evaluate

    grown = Router.from_pretrained(tmp_path / "router")
    assert grown.experts == ("math", "code", "instructions", "multilingual")
    assert evaluate(grown, reasoning4.test).accuracy == result["four_experts"]


# ---------------------------------------------------------------------------------------------
# issue 13: the command forgives, and no input crashes it


def _cli(*args, stdin: bytes | None = None):
    """Run the real `ir3de` command in a subprocess (argv and stdin as raw bytes)."""
    return subprocess.run(
        [sys.executable, "-m", "ir3de.cli", *args], input=stdin, capture_output=True, check=False
    )


def test_lone_surrogates_route_as_replacement_characters(paper_router):
    """13.1: `router.route("caf\\udce9")` raised the tokenizer's bare TypeError."""
    clean = "SELECT caf\ufffd FROM t"
    for dirty in ("SELECT caf\udce9 FROM t", "SELECT caf\ud83d FROM t"):
        assert paper_router.route(dirty) == paper_router.route(clean)
        assert paper_router.route_batch([dirty, "x"])[0] == paper_router.route(clean)
        assert (
            route_indices(paper_router.state, paper_router.config, [dirty]).tolist()
            == route_indices(paper_router.state, paper_router.config, [clean]).tolist()
        )
    assert paper_router.route("\ud83d\ude00 How many apples?") == paper_router.route("😀 How many apples?")


def test_undecodable_bytes_on_stdin_and_in_arguments(cli_router):
    """13.1: `printf 'SELECT caf\\xe9 FROM t\\n' | ir3de route R` (and as an argument) ended in a traceback."""
    expected = json.loads(_cli("route", str(cli_router), "SELECT caf\ufffd FROM t", "--json").stdout)
    piped = _cli("route", str(cli_router), "--json", stdin=b"SELECT caf\xe9 FROM t\n")
    assert piped.returncode == 0, piped.stderr.decode()
    got = json.loads(piped.stdout)
    assert got["prompt"] == "SELECT caf\ufffd FROM t" and got["expert"] == expected["expert"]
    assert got["confidence"] == expected["confidence"]
    argument = _cli("route", str(cli_router), b"SELECT caf\xe9 FROM t", "--json")  # argv bytes, not UTF-8
    assert argument.returncode == 0 and b"Traceback" not in argument.stderr, argument.stderr.decode()
    assert json.loads(argument.stdout)["expert"] == expected["expert"]


def test_fitting_on_lone_surrogates_counts_replacement_characters(smollm2, small_corpus, tmp_path):
    """13.16: a JSON string "\\ud83d" is a valid str; counting it raised the tokenizer's TypeError."""
    from ir3de import Router, RouterConfig

    dirty = {n: [t + " \ud83d" for t in texts[:20]] for n, texts in small_corpus.items()}
    clean = {n: [t + " \ufffd" for t in texts[:20]] for n, texts in small_corpus.items()}
    a = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(dirty)
    b = Router(smollm2, config=RouterConfig.paper(), device="cpu", progress=False).fit(clean)
    assert a.statistics == b.statistics
    # the CLI reads such a string from a .jsonl file (json.loads keeps the lone surrogate)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"q": t}) + "\n" for t in dirty["math"]))
    (tmp_path / "b.txt").write_text("\n".join(t.replace("\n", " ") for t in clean["multilingual"]))
    assert '\\ud83d"}' in (tmp_path / "a.jsonl").read_text()
    rc = main(["fit", "--expert", f"math={tmp_path / 'a.jsonl'}", "--field", "q",
               "--expert", f"ml={tmp_path / 'b.txt'}", "--preset", "paper", "--quiet", "-o", str(tmp_path / "r")])  # fmt: skip
    assert rc == 0


@pytest.fixture(scope="module")
def readme_files(tmp_path_factory, small_corpus):
    """gsm8k.jsonl (objects with a question) and src/**/*.py (real code files), as the README names them."""
    folder = tmp_path_factory.mktemp("readme")
    with open(folder / "gsm8k.jsonl", "w") as fh:
        for t in small_corpus["math"]:
            fh.write(json.dumps({"question": t, "answer": "42"}) + "\n")
    for i, t in enumerate(small_corpus["code"][:30]):
        (folder / "src" / f"pkg{i % 3}").mkdir(parents=True, exist_ok=True)
        (folder / "src" / f"pkg{i % 3}" / f"mod{i}.py").write_text(t)
    return folder


def test_readme_fit_example_with_per_expert_read_options(readme_files, monkeypatch, tmp_path):
    """13.2: `--field` and `--whole-file` applied to every expert and .py was an unknown type."""
    monkeypatch.chdir(readme_files)
    out = tmp_path / "my-router"
    rc = main(
        [
            "fit",
            "--expert",
            "math=gsm8k.jsonl",
            "--field",
            "question",
            "--expert",
            "code=src/**/*.py",
            "--whole-file",
            "--quiet",
            "-o",
            str(out),
        ]
    )  # fmt: skip  (the README's command, as written)
    assert rc == 0
    experts = {e["name"]: e for e in json.loads((out / "config.json").read_text())["experts"]}
    assert experts["math"]["num_texts"] == 80 and experts["code"]["num_texts"] == 30  # a .py file = a text
    # per-file-type default: without --whole-file a .py file is still one text; per-expert --field
    out2 = tmp_path / "r2"
    rc = main(["fit", "--expert", "code=src", "--expert", "math=gsm8k.jsonl", "--field", "math=question",
               "--quiet", "-o", str(out2)])  # fmt: skip
    assert rc == 0
    experts2 = {e["name"]: e for e in json.loads((out2 / "config.json").read_text())["experts"]}
    assert experts2["code"]["num_tokens"] == experts["code"]["num_tokens"]
    assert experts2["math"]["num_tokens"] == experts["math"]["num_tokens"]


def test_options_between_router_and_prompt(cli_router, capsys):
    """13.4: `ir3de route ROUTER --json PROMPT` was refused with 'unrecognized arguments'."""
    assert main(["route", str(cli_router), "--json", "Tom has 3 apples and buys 5 more."]) == 0
    assert json.loads(capsys.readouterr().out)["expert"] == "math"
    assert (
        main(["route", str(cli_router), "--k", "5", "--explain", "Tom has 3 apples.", "--selector", "topk"])
        == 0
    )
    assert capsys.readouterr().out.startswith("math")


def test_duplicate_expert_names_are_refused(corpus_files, tmp_path, capsys):
    """13.6: `--expert sql=a --expert sql=b` merged silently, then 'needs at least 2 experts, got 1'."""
    rc = main(["fit", "--expert", f"sql={corpus_files / 'math.jsonl'}", "--expert",
               f"sql={corpus_files / 'multilingual.txt'}", "--field", "question", "-o", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "'sql' is given twice" in err and "multilingual.txt" in err
    assert not (tmp_path / "o").exists()


def test_json_output_keeps_line_alignment_and_reports_errors_in_place(cli_router):
    """13.7: blank lines vanished, one empty prompt aborted the batch, and --json echoed 5 MB prompts."""
    long_prompt = "How many apples does Tom have? " * 2000
    lines = [
        "Tom has 3 apples and buys 5 more.",
        "",
        "   ",
        "Die Liebe ist ein seltsames Spiel.",
        long_prompt,
    ]
    result = _cli("route", str(cli_router), "--json", stdin=("\n".join(lines) + "\n").encode())
    assert result.returncode == 1, result.stderr.decode()  # some lines failed: exit non-zero at the end
    out = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [o["line"] for o in out] == [1, 2, 3, 4, 5]
    assert out[0]["expert"] == "math" and out[3]["expert"] == "multilingual" and out[4]["expert"] == "math"
    assert out[1]["error_type"] == "EmptyPromptError" and "--fallback" in out[1]["error"]
    assert "error" in out[2] and "expert" not in out[2]
    assert len(out[4]["prompt"]) <= 201 and out[4]["prompt_chars"] == len(long_prompt)
    assert b"2 of 5 prompts could not be routed (line 2, 3); line 2: blank prompt" in result.stderr
    # text output: one line per prompt too; with --fallback every line routes and the exit is 0
    text = _cli("route", str(cli_router), stdin=b"Tom has 3 apples.\n\nDie Liebe\n")
    assert text.returncode == 1 and text.stdout.decode().splitlines()[2].startswith("error\tline 2")
    routed = _cli("route", str(cli_router), "--fallback", "math", "--json", stdin=b"a\n\n")
    assert (
        routed.returncode == 0 and [json.loads(x)["expert"] for x in routed.stdout.splitlines()][1] == "math"
    )


def test_errors_name_cli_flags_not_python_calls(cli_router, corpus_files, tmp_path, capsys):
    """13.8: errors suggested update_expert('poetry', more_texts) and Router(fallback='name')."""
    grown = tmp_path / "g"
    rc = main(["add-expert", str(cli_router), "--expert", f"math={corpus_files / 'multilingual.txt'}", "-o", str(grown)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--update" in err and "update_expert(" not in err
    rc = main(["add-expert", str(cli_router), "--update", "--expert", f"poetry={corpus_files / 'multilingual.txt'}", "-o", str(grown)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "drop --update" in err
    assert main(["route", str(cli_router), "   "]) == 2
    out = capsys.readouterr().out
    assert "--fallback NAME" in out and "Router(" not in out
    assert main(["route", str(cli_router), "--threshold", "0.9", "hello"]) == 2
    err = capsys.readouterr().err
    assert "--fallback NAME" in err and "fallback='general'" not in err and "Traceback" not in err


def test_help_documents_every_option_and_the_exit_codes(capsys, tmp_path):
    """13.9: options without help, --k showed the paper's value, no --no-balance, 'router folder' only."""
    from ir3de.cli.main import build_parser

    parser = build_parser()
    assert "exit status" in parser.format_help() and "130" in parser.format_help()
    sub = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    fit, route = sub.choices["fit"], sub.choices["route"]
    for p in (fit, route):
        for action in p._actions:
            assert action.help, f"{p.prog} {action.option_strings or action.dest} has no help"
    fit_help = fit.format_help()
    assert "--no-balance" in fit_help and "--no-column-norm" in fit_help
    assert "default 50" in " ".join(fit_help.split())
    assert "Hub" in route.format_help()
    with pytest.raises(SystemExit) as info:  # argparse's usage errors: status 2 as well
        main(["fit", "--expert", "a=x.txt", "-o", "o", "--no-such-option"])
    assert info.value.code == 2
    capsys.readouterr()
    (tmp_path / "x.txt").write_text("some text\n")
    (tmp_path / "y.txt").write_text("other text\n")
    usage = _cli(
        "stats",
        "--expert",
        f"a={tmp_path / 'x.txt'}",
        "--expert",
        f"b={tmp_path / 'y.txt'}",
        "-o",
        str(tmp_path / "o"),
    )  # fmt: skip  (a command's SystemExit("message"): status 2, not 1)
    assert usage.returncode == 2 and b"ir3de: error: a stat pack holds one expert" in usage.stderr, (
        usage.stderr
    )


def test_fit_refuses_to_overwrite_without_force(cli_router, corpus_files, tmp_path, capsys):
    """13.10: `fit -o` overwrote a router and wrote into a folder that was not a router."""
    import shutil

    target = tmp_path / "r"
    shutil.copytree(cli_router, target)
    before = (target / "config.json").read_bytes()
    args = ["fit", "--expert", f"math={corpus_files / 'math.jsonl'}", "--field", "question",
            "--expert", f"ml={corpus_files / 'multilingual.txt'}", "--quiet", "--preset", "paper"]  # fmt: skip
    assert main([*args, "-o", str(target)]) == 2
    assert "--force" in capsys.readouterr().err and (target / "config.json").read_bytes() == before
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    assert main([*args, "--force", "-o", str(other)]) == 2
    assert "not an ir3de router" in capsys.readouterr().err and sorted(os.listdir(other)) == ["cat.jpg"]
    assert main([*args, "--force", "-o", str(target)]) == 0
    assert json.loads((target / "config.json").read_text())["experts"][1]["name"] == "ml"


def test_info_verifies_every_file(cli_router, tmp_path, capsys):
    """13.11: `ir3de info` reported a router with a truncated statistics.safetensors as fine."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(cli_router, broken)
    data = (broken / "statistics.safetensors").read_bytes()
    (broken / "statistics.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["info", str(cli_router)]) == 0
    assert "checked" in capsys.readouterr().out
    assert main(["info", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "statistics.safetensors" in err and "truncated" in err


def test_progress_counts_characters_of_a_single_huge_text(smollm2, small_corpus, monkeypatch):
    """13.12: one 5 MB text showed a bar stuck at 0/1; the bar now counts characters."""
    import tqdm.auto

    from ir3de import Router, RouterConfig
    from ir3de.cli.progress import fit_with_progress

    seen: list[tuple[float, float]] = []

    class Recording(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False  # the test's stderr is not a terminal
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            out = super().update(n)
            seen.append((self.n, self.total))
            return out

        def close(self):  # the last step moves the bar silently: closing draws it (27 minor)
            seen.append((self.n, self.total))
            return super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    big = " ".join(small_corpus["code"]) * 3
    corpus = {"code": [big], "math": small_corpus["math"][:300], "ml": small_corpus["multilingual"][:300]}
    router = Router(smollm2, config=RouterConfig.paper(), device="cpu", batch_size=16, progress=False)
    fit_with_progress(router, corpus, batch_size=16)
    total = sum(len(t) for texts in corpus.values() for t in texts)
    seen = [(n, t) for n, t in seen if t == total]  # this bar's steps
    assert seen and seen[-1] == (total, total)
    assert any(n == len(big) for n, _ in seen)  # the huge text is its own step, sized in characters


def _cli_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the real `ir3de` command with stderr on a pseudo-terminal (100 columns), as a user sees
    it: progress bars only draw on a terminal. Returns the exit code and what stderr showed."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ir3de.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return proc.wait(timeout=600), shown.decode("utf-8", "replace")


def _final_bar_frames(shown: str) -> dict[str, list[str]]:
    """Per bar (its description), every frame drawn at 100 %."""
    frames: dict[str, list[str]] = {}
    for frame in re.split(r"[\r\n]+", shown):
        match = re.match(r"(counting[^:]*):\s+100%", frame)
        if match:
            frames.setdefault(match.group(1), []).append(frame)
    return frames


def test_progress_bars_draw_their_final_line_once(corpus_files, tmp_path):
    """27 minor: each bar's last line showed twice (the last update drew it, closing drew it again)."""
    fitted = tmp_path / "r"
    code, shown = _cli_on_a_terminal(
        "fit", "--expert", f"math={corpus_files / 'math.jsonl'}", "--field", "question",
        "--expert", f"ml={corpus_files / 'multilingual.txt'}", "-o", str(fitted),
    )  # fmt: skip
    assert code == 0, shown
    finals = _final_bar_frames(shown)
    assert list(finals) == ["counting ml"], shown  # the one bar in characters, named after the last expert
    assert [len(f) for f in finals.values()] == [1], finals
    code, shown = _cli_on_a_terminal(
        "add-expert", str(fitted), "--expert", f"code={corpus_files / 'code'}", "-o", str(tmp_path / "r2")
    )
    assert code == 0, shown
    finals = _final_bar_frames(shown)
    assert list(finals) == ["counting code"], shown  # the router's per-expert bar, in texts
    assert [len(f) for f in finals.values()] == [1], finals
    assert re.search(r"\| (\d+)/\1 \[", finals["counting code"][0])  # n/n texts: the bar's real end


def test_explain_shows_why_short_prompts_get_high_confidence(cli_router, capsys):
    """13.14: 'IRS' routed at 0.97 on near coin-toss evidence; --explain must show why."""
    assert main(["route", str(cli_router), "IRS", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "evidence (" in out and "confidence = " in out
    assert "caution: only" in out and "--threshold" in out
    assert (
        main(
            ["route", str(cli_router), "--explain", "Tom has 3 apples and buys 5 more. How many apples now?"]
        )
        == 0
    )
    assert "caution" not in capsys.readouterr().out


def test_status_lines_go_to_stderr(corpus_files, tmp_path):
    """13.12: the first embedding load printed nothing; results stay alone on stdout."""
    result = _cli("fit", "--expert", f"math={corpus_files / 'math.jsonl'}", "--field", "question", "--expert",
                  f"ml={corpus_files / 'multilingual.txt'}", "--preset", "paper", "-o", str(tmp_path / "r"))  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert b"loading token embeddings" in result.stderr and b"loaded " in result.stderr
    assert result.stdout.decode().startswith("fitted 2 experts")
