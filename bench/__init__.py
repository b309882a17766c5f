"""Benchmarks that produce the committed result files under bench/results/."""
