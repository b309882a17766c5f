"""The SEC engine: a plain library that turns a base model + labelled text into a compressed model.

It imports neither `app` nor `workers`; callers report progress through
`sec_engine.callbacks.EngineCallbacks`. Importing this package never touches CUDA.
"""

__version__ = "0.1.0"
