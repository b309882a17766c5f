"""Hosted-inference benchmark: `python -m bench.serving` (see bench/serving/run.py)."""
