"""The many-experts benchmark end to end (--quick) and the GPU benchmark's clean skip without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "core"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_gpu_benchmark_skips_cleanly_without_cuda(tmp_path):
    pytest.importorskip("torch")
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--quick", "--out", str(tmp_path)],
        env=_env(CUDA_VISIBLE_DEVICES=""),  # hides any GPU: the skip path runs on every machine
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "benchmarks.gpu: skipped, torch sees no CUDA device" in run.stdout
    assert not any(tmp_path.iterdir())  # nothing written


def test_gpu_unavailable_names_the_reason(monkeypatch):
    import torch

    from benchmarks import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.unavailable() == "torch sees no CUDA device on this machine"
    monkeypatch.setattr(gpu.importlib.util, "find_spec", lambda name: None)
    assert "torch is not installed" in (gpu.unavailable() or "")


def test_experts_benchmark_quick(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.experts",
            "--quick",
            "--out",
            str(tmp_path),
            "--plot",
            str(tmp_path / "experts.png"),
        ],
        env=_env(),
        cwd=ROOT,
        check=True,
        timeout=900,
    )
    res = json.loads((tmp_path / "experts.json").read_text())
    assert [r["experts"] for r in res["runs"]] == [5, 50]
    five, fifty = res["runs"]
    assert five["texts"] == fifty["texts"] == 600  # the same texts, dealt into more experts
    assert fifty["statistics_forms"] == {"rows": 50, "gram": 0}  # 12 texts each: rows are smaller
    assert five["statistics_forms"]["gram"] == 5
    assert all(r["route_p50_us"] > 0 and r["artifact_mb"] > 0 and r["fit_peak_mb"] > 0 for r in res["runs"])
    # the defaults save the 50 small experts as token ids: smaller than their rows; so does True, and
    # loading then growing works
    assert fifty["token_id_experts"] == 50 and five["token_id_experts"] == 0
    assert (
        fifty["artifact_mb"] < fifty["rows_artifact_mb"]
        and fifty["kept_artifact_mb"] < fifty["rows_artifact_mb"]
    )
    assert fifty["kept_first_add_s"] > 0
    # the 5-expert router is timed interleaved with the 50-expert one, in the same process
    assert five["baseline_route_p50_us"] == five["route_p50_us"] and fifty["baseline_route_p50_us"] > 0
    assert "load_avg" in res["machine"] and (tmp_path / "experts.md").read_text().startswith("| experts")
    assert (tmp_path / "experts.png").stat().st_size > 10_000
