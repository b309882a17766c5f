"""Artifacts: the archived output of a job, downloadable with its sha256."""
