"""`ir3de stats / merge / push / pull` end to end against the local Hub server; env handling in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ir3de import Router
from ir3de.artifacts.stat_packs import StatPack
from ir3de.cli.main import main


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory, small_corpus):
    folder = tmp_path_factory.mktemp("corpus")
    for name in ("math", "code"):
        with open(folder / f"{name}.jsonl", "w") as fh:
            for text in small_corpus[name]:
                fh.write(json.dumps({"text": text}) + "\n")
    return folder


def test_stats_push_merge_pull(git_uploads, hub_env, corpus_files, packs, tmp_path, capsys):
    for name in ("math", "code"):
        code = main(
            ["stats", "--expert", f"{name}={corpus_files / f'{name}.jsonl'}", "--field", "text",
             "--description", f"{name}=the {name} domain", "--quiet", "-o", str(tmp_path / f"{name}-pack")]
        )  # fmt: skip
        assert code == 0
        assert StatPack.from_pretrained(tmp_path / f"{name}-pack").counts == packs[name].counts
        assert main(["push", str(tmp_path / f"{name}-pack"), f"cli-owner/{name}-pack"]) == 0
    out = capsys.readouterr().out
    assert "stat pack of 'math': 80 texts" in out and "pushed stat pack of expert 'code'" in out

    merged = tmp_path / "merged"
    assert main(["merge", "cli-owner/math-pack", "cli-owner/code-pack", "--preset", "paper", "--quiet",
                 "-o", str(merged)]) == 0  # fmt: skip
    router = Router.from_pretrained(merged, device="cpu")
    assert router.experts == ("math", "code") and router.state.descriptions["code"] == "the code domain"
    assert main(["push", str(merged), "cli-owner/merged-router", "--commit-message", "merged"]) == 0
    assert main(["pull", "cli-owner/merged-router", "-o", str(tmp_path / "copy")]) == 0
    assert "router with experts [math, code]" in capsys.readouterr().out
    copy = Router.from_pretrained(tmp_path / "copy", device="cpu")
    np.testing.assert_array_equal(copy.state.table.logits, router.state.table.logits)
    assert main(["pull", "cli-owner/math-pack"]) == 0  # a pack repo is recognised as such
    assert "stat pack of expert 'math'" in capsys.readouterr().out
    hub_env.go_offline()
    assert main(["pull", "cli-owner/math-pack"]) == 0  # and found in the cache offline
    assert "stat pack of expert 'math'" in capsys.readouterr().out

    pack = packs["multilingual"].save_pretrained(tmp_path / "multilingual-pack")
    grown = tmp_path / "grown"
    assert main(["merge", str(pack), "--into", "cli-owner/merged-router", "--quiet", "-o", str(grown)]) == 0
    assert Router.from_pretrained(grown).experts == ("math", "code", "multilingual")


def test_stats_refuses_two_experts(corpus_files, tmp_path):
    with pytest.raises(SystemExit, match="one expert"):
        main(["stats", "--expert", f"math={corpus_files / 'math.jsonl'}",
              "--expert", f"code={corpus_files / 'code.jsonl'}", "--field", "text", "-o", str(tmp_path / "p")])  # fmt: skip


def test_pull_then_route_offline_in_a_fresh_process(hub_server, hub_env, paper_router, tmp_path, capsys):
    """`ir3de pull` fills a cache; a new process with the real HF_HUB_OFFLINE=1 (read by huggingface_hub at
    import) and an unreachable HF_ENDPOINT routes from that cache."""
    sha = hub_server.publish(paper_router.save_pretrained(tmp_path / "r"), "ir3de-test/subprocess")
    cache = tmp_path / "fresh-cache"
    assert main(["pull", "ir3de-test/subprocess", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"ir3de-test/subprocess@{sha[:12]}" in out and str(cache) in out
    prompt = "Tom has 3 apples and buys 5 more. How many apples does he have?"
    env = hub_env.subprocess_env(offline=True) | {
        "HF_HUB_CACHE": str(cache),
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    routed = subprocess.run(
        [sys.executable, "-m", "ir3de.cli", "route", "ir3de-test/subprocess", prompt, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert routed.returncode == 0, routed.stderr
    decision = json.loads(routed.stdout)
    assert decision["expert"] == paper_router.route(prompt).expert == "math"
