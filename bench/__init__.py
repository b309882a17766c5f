"""Benchmarks that produce the committed result files under bench/results/."""

import sec_engine  # noqa: F401 - first, so torch starts with the engine's thread settings
