"""Benchmarks (not installed): run from a checkout with `python -m tests.bench.NAME`."""
