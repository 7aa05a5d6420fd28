"""The privacy benchmark end to end (--quick): what an attacker recovers from a saved router folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("math", "code", "instructions", "medical")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "core"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _check_score(s: dict[str, float], where: str) -> None:
    assert s["n"] > 0 and s["tokens"] >= s["n"], where
    for key in ("token_recall", "token_precision", "exact"):
        assert 0.0 <= s[key] <= 1.0, (where, key, s[key])


def test_privacy_benchmark_quick(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "benchmarks.privacy", "--quick", "--no-progress", "--out", str(tmp_path)],
        env=_env(),
        cwd=ROOT,
        check=True,
        timeout=900,
    )
    res = json.loads((tmp_path / "privacy.json").read_text())
    assert res["quick"] is True and "load_avg" in res["machine"]
    assert set(res["sources"]) == set(SOURCES)
    assert "statistics.safetensors" in res["artifact_files"]
    for source, r in res["sources"].items():
        # every expert of 10 texts is saved as rows, and the rows split into its texts by weight alone
        assert r["experts"] == {"rows": 1, "other": 0}, source
        assert r["parsed_experts"] == 1 and r["texts"] == 10, source
        for key in (
            "probe_windows",
            "probe_texts",
            "unmixed_omp_windows",
            "unmixed_windows",
            "unmixed_texts",
            "unmixed_nnls_windows",
            "unmixed_nnls_texts",
        ):
            _check_score(r[key], f"{source} {key}")
        assert r["unmixed_texts"]["n"] == 10, source
        # as many windows as rows, and every true token accounted for
        assert (
            r["unmixed_windows"]["n"] >= 10 and r["unmixed_windows"]["tokens"] == r["unmixed_texts"]["tokens"]
        )
        served = sum(r["adapted"][b]["n"] for b in ("<=16", "17-64", ">64") if r["adapted"][b])
        assert served == r["adapted"]["all"]["n"] == 12, source  # every served prompt has a countable token
        _check_score(r["adapted"]["all"], f"{source} adapted")
        # the attacks work: the saved statistics give the text back (what the docs must say)
        assert r["unmixed_windows"]["token_recall"] >= 0.9, source
        assert r["unmixed_nnls_windows"]["token_recall"] >= 0.9, source
        assert r["adapted"]["all"]["token_recall"] >= 0.8, source
        # the probe, which does not unmix the text term, recovers fewer windows exactly
        assert r["probe_windows"]["exact"] <= r["unmixed_windows"]["exact"], source
    assert res["sources"]["math"]["adapted"]["<=16"]["n"] > 0  # the 8-word cuts fill the short bucket
    assert len(res["examples"]) >= 4 and all(e["true"] and e["recovered"] for e in res["examples"])
    assert (tmp_path / "privacy.md").read_text().startswith("| source | attack on the window rows |")
