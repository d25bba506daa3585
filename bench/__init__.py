"""Benchmarks: run on demand, never timed tests; they print figures and ratios measured in one run."""
