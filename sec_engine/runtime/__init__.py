"""Runtime settings shared by the engine's measurements and the hosted endpoint (no torch)."""
