"""Fieldmark's benchmarks: ratios measured side by side in one run (``python -m benchmarks``), never timed asserts
in the test suite. Each ``bench_*.py`` module exposes ``run(...) -> list[dict]``."""
