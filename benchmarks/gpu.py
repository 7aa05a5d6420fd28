"""Gram + solve + table for a 128,256 × 4,096 embedding matrix on a CUDA GPU, against the CPU.

Usage::

    python -m benchmarks.gpu            # the full size (Llama-3-class vocabulary and width)
    python -m benchmarks.gpu --quick    # 16,384 × 1,024

Runs :func:`benchmarks.run.gpu_benchmark` (8 experts' token Grams, the float64 solve and the dense table,
on ``cuda`` then on ``cpu``, and a 100k-prompt batch route) and writes ``benchmarks/results/gpu.{json,md}``.
Without torch or without a CUDA device it prints why and exits 0 having run nothing (nothing is
written), so it can sit in any script.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from benchmarks.reporting import machine, publish

ROOT = Path(__file__).resolve().parent.parent


def unavailable() -> str | None:
    """Why the GPU benchmark cannot run here (``None`` when a CUDA device is visible to torch)."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'ir3de[gpu]')"
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA device on this machine"
    return None


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"GPU: {res['gpu']}; embeddings {res['vocab']:,} × {res['hidden']:,}, {res['experts']} experts",
        "",
        "| device | Grams s | solve s | table s | total s |",
        "|---|---:|---:|---:|---:|",
    ]
    for device in ("cuda", "cpu"):
        r = res[device]
        lines.append(
            f"| {device} | {r['gram_s']:.2f} | {r['solve_s']:.2f} | {r['table_s']:.2f} | {r['total_s']:.2f} |"
        )
    b = res["batch_100k"]
    lines.append(f"\nBatch route of {b['prompts']:,} prompts ({b['tokens']:,} tokens): {b['select_s']:.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16,384 × 1,024 instead of 128,256 × 4,096")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    args = ap.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        print(f"benchmarks.gpu: skipped, {reason}; nothing was measured or written")
        return 0
    from benchmarks.run import gpu_benchmark

    res = gpu_benchmark(args.quick)
    res["machine"] = machine()
    publish(res, markdown(res), Path(args.out), "gpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
