"""The scale benchmark (workers on one shared state) runs end to end (``--quick``) and fails nothing.

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
def test_scale_benchmark_quick(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "scale.json").read_text())
    assert sorted(results["throughput"], key=int) == ["1", "2", "4"]
    for cell in results["throughput"].values():
        assert cell["errors"] == 0 and cell["requests"] > 0 and cell["rps"] > 0
    (prop,) = results["propagation"].values()
    assert prop["samples"] == 3 * prop["changes"]  # each change reached the 3 other workers
    assert 0 < prop["p50_ms"] <= prop["p99_ms"] <= prop["max_ms"]
    table = (tmp_path / "scale.md").read_text()
    assert table.startswith("| workers |") and "every round" in table and "| poll interval |" in table
    import matplotlib.image

    pixels = matplotlib.image.imread(tmp_path / "scale.png")
    assert (
        pixels.shape[0] > 200 and pixels.shape[1] > 500 and pixels[..., :3].std() > 0.05
    )  # drawn, not blank
