"""Benchmarks: scripts that print numbers, run from the repository root as `python -m benchmarks.bench_x`."""
