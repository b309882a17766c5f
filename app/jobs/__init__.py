"""Compression jobs: creation, listing, cancellation, events and the controller trace."""
