"""Benchmarks: `python -m bench` runs them all; results are kept in docs/benchmarks.md."""
