"""Hosted-inference benchmark (issue 4): `python -m bench.serving`."""
