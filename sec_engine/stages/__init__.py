"""Technique stages (ADA, TAL, AIP, SQD) and the lifecycle they share; see `base`."""
