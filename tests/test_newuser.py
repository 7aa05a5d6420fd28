"""Rough edges a new user met (issue 27): each test here failed before its fix."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ir3de.cli.main import main
from ir3de.data.corpus import read_texts
from ir3de.errors import CorpusError


def _jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_records_with_one_field_or_a_text_field_need_no_field_option(tmp_path, small_corpus):
    """Point 7: JSONL (and CSV) whose only field is the text, or that has a `text` field, read as is."""
    math = _jsonl(tmp_path / "math.jsonl", [{"text": t} for t in small_corpus["math"][:30]])
    code = _jsonl(
        tmp_path / "code.jsonl", [{"id": i, "text": t} for i, t in enumerate(small_corpus["code"][:30])]
    )
    with open(tmp_path / "q.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question"])
        writer.writerows([t] for t in small_corpus["math"][:3])
    assert list(read_texts(tmp_path / "q.csv")) == small_corpus["math"][:3]
    assert list(read_texts(code))[:2] == small_corpus["code"][:2]
    out = tmp_path / "router"
    code_ = main(["fit", "--expert", f"math={math}", "--expert", f"code={code}", "--quiet", "-o", str(out)])
    assert code_ == 0 and (out / "config.json").is_file()
    # two fields, neither named text: still ambiguous, and the error names the flag
    both = _jsonl(tmp_path / "both.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(CorpusError, match="--field question"):
        list(read_texts(both))


def test_push_to_an_unreachable_endpoint_is_one_line_and_exit_2(paper_router, tmp_path):
    """Point 6: no traceback; one line naming the endpoint; exit 2 (as `pull` does)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    folder = paper_router.save_pretrained(tmp_path / "router")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run(
        [sys.executable, "-m", "ir3de.cli", "push", str(folder), "org/router", "--token", "hf_fake"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("ir3de: error:") and endpoint in done.stderr


@pytest.fixture(scope="module")
def default_router(smollm2, small_corpus):
    from ir3de import Router

    return Router(smollm2, device="cpu", progress=False).fit(small_corpus)


def test_tune_on_a_small_perfectly_separated_set_keeps_confidence_calibrated(
    default_router, smollm2, small_tests
):
    """Point 3: 24 prompts all routed right used to give T -> 0 and confidence 1.000 for 'hello there'."""
    from ir3de import Router

    router = Router(smollm2, config=default_router.config, device="cpu", progress=False)
    router.fit(default_router.statistics)
    dev = {name: texts[:6] for name, texts in small_tests.items()}
    assert all(router.route(t).expert == name for name, texts in dev.items() for t in texts)  # separable
    vague = ("hello there", "IRS")
    before = [router.route(p).confidence for p in vague]
    t_before = router.config.effective_temperature
    result = router.tune(dev, abstain="general")
    assert result.temperature is not None and t_before / 3 < result.temperature < t_before * 3
    after = [router.route(p).confidence for p in vague]
    assert max(after) < 0.9, (before, after)
    assert all(abs(a - b) < 0.15 for a, b in zip(after, before)), (before, after)


def test_tune_needs_a_few_prompts_per_expert_and_names_the_short_one(default_router, smollm2, small_tests):
    from ir3de import Router
    from ir3de.errors import InvalidInputError

    router = Router(smollm2, config=default_router.config, device="cpu", progress=False)
    router.fit(default_router.statistics)
    dev = {name: texts[:6] for name, texts in small_tests.items()}
    dev["code"] = dev["code"][:2]
    with pytest.raises(InvalidInputError, match=r"at least 3 .*code \(2\)"):
        router.tune(dev, abstain="general")
    assert router.config == default_router.config  # nothing changed


def test_the_prior_does_not_bias_a_large_calibration_set():
    """The MAP estimate against the plain MLE: on 6000 prompts drawn from a known T and n0 both recover
    them, with the prior centred far away (T0 = 3, n0 = 40)."""
    import numpy as np

    from ir3de.routing.calibration import fit_confidence

    rng = np.random.default_rng(1)
    n = rng.choice([1, 2, 3, 5, 10, 30, 100], size=6000)
    z = rng.normal(size=(6000, 3)) * 2
    logits = z * (n / (n + 6.0))[:, None] / 0.5
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    t_mle, n0_mle = fit_confidence(z, n, y)
    t_map, n0_map = fit_confidence(z, n, y, prior=(3.0, 40.0))
    assert t_map == pytest.approx(t_mle, rel=0.05) and n0_map == pytest.approx(n0_mle, rel=0.15)
    assert t_map == pytest.approx(0.5, rel=0.15)


def test_the_first_change_to_a_loaded_router_says_it_loads_the_embeddings(
    default_router, small_corpus, tmp_path, caplog
):
    """Point 10: the 2-5 s wait of the first change is logged (and only the first)."""
    import logging

    from ir3de import Router

    loaded = Router.from_pretrained(
        default_router.save_pretrained(tmp_path / "r"), device="cpu", progress=False
    )
    with caplog.at_level(logging.INFO, logger="ir3de"):
        loaded.route("What is 2 + 2?")
        assert not [r for r in caplog.records if "loading" in r.getMessage()]  # routing needs none
        loaded.add_expert("math", small_corpus["math"][:3], update=True)
        loaded.add_expert("math", small_corpus["math"][3:6], update=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "ir3de"]
    assert len([m for m in messages if m.startswith("loading the embeddings")]) == 1, messages
    assert any("needed to change a loaded router" in m for m in messages)
    assert any(m.startswith("loaded the embeddings") for m in messages)


def test_cli_tune_without_a_fallback_names_the_flag_not_python(default_router, small_tests, tmp_path, capsys):
    """Point 9: `ir3de tune` answered "pass abstain='general' ... or configure(fallback=...)"."""
    folder = default_router.save_pretrained(tmp_path / "r")
    dev = _jsonl(
        tmp_path / "dev.jsonl",
        [{"text": t, "label": name} for name, texts in small_tests.items() for t in texts[:5]],
    )
    assert main(["tune", str(folder), str(dev)]) == 2
    err = capsys.readouterr().err
    assert "--abstain NAME" in err and "abstain=" not in err and "configure(" not in err, err


def test_minor_cli_edges(default_router, small_corpus, tmp_path, capsys):
    """Minor points: route refuses fit options; one prompt is singular; a tiny corpus is warned about."""
    folder = default_router.save_pretrained(tmp_path / "r")
    assert main(["route", str(folder), "What is 2 + 2?", "--lam", "3"]) == 2
    err = capsys.readouterr().err
    assert "--lam" in err and "ir3de fit" in err
    assert main(["route", str(folder), "What is 2 + 2?", "--level", "token"]) == 2
    capsys.readouterr()
    labelled = _jsonl(tmp_path / "one.jsonl", [{"text": "Solve 3x + 5 = 11", "label": "math"}])
    assert main(["learn", str(folder), str(labelled), "-o", str(tmp_path / "learned")]) == 0
    assert "learned 1 labelled prompt in" in capsys.readouterr().out
    math = _jsonl(tmp_path / "math.jsonl", [{"text": t} for t in small_corpus["math"][:20]])
    code = _jsonl(tmp_path / "code.jsonl", [{"text": t} for t in small_corpus["code"][:60]])
    out = tmp_path / "tiny"
    assert (
        main(["fit", "--expert", f"math={math}", "--expert", f"code={code}", "--quiet", "-o", str(out)]) == 0
    )
    err = capsys.readouterr().err
    assert "few texts for math (20)" in err and "code" not in err.split("few texts for", 1)[1].split(":")[0]
