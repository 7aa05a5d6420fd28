"""The gateway benchmark runs end to end (``--quick``, without the LiteLLM rows) and fails no request.

No timing is asserted: timings live in the benchmark's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_gateway_benchmark_quick(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gateway", "--quick", "--no-litellm", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "gateway.json").read_text())
    for side in ("direct", "gateway"):
        assert sorted(results[side], key=int) == ["1", "32", "256"]
        for cell in results[side].values():
            assert cell["errors"] == 0 and cell["requests"] > 0
            assert 0 < cell["p50_ms"] <= cell["p99_ms"]
    for cell in results["overhead"].values():
        assert cell["routing_mean_ms"] > 0  # the gateway routed every request (its own histogram)
    table = (tmp_path / "gateway.md").read_text()
    assert table.startswith("| concurrency |") and "Failed requests: 0." in table
