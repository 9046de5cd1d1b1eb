"""Benchmarks: per-request recording cost and /metrics render time, side by side."""
