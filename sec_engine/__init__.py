"""The SEC engine: a plain library that turns a base model + labelled text into a compressed model.

It imports neither `app` nor `workers`; callers report progress through
`sec_engine.callbacks.EngineCallbacks`. Importing this package never touches CUDA.

Importing it first (before torch) sets OpenMP's wait policy to passive unless the caller set
one: torch's CPU threads then sleep at a barrier instead of spinning. On a machine with other
work, spinning threads burn the cores they share (a training step cost 3.7x its CPU time with
two other processes busy, and took 2.6x longer), and they make CPU time a measure of the load
instead of the work, which the plan's calibration relies on (sec_engine.calibration).
"""

import os
import sys

__version__ = "0.1.0"

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
