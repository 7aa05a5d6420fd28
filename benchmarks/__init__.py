"""Benchmarks of ir3de against baseline routers (not part of the library): python -m benchmarks.run."""
