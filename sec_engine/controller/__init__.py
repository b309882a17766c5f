"""The Synergy Controller (paper eq. 5): a pure policy from observations to decisions."""

from sec_engine.controller.policy import Decision, Observation, decide, initial_decision

__all__ = ["Decision", "Observation", "decide", "initial_decision"]
