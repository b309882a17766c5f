"""Measuring models: task metrics, size on disk and latency (the feedback the controller reads)."""
