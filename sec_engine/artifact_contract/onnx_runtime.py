"""The one place ONNX Runtime sessions are configured, for the engine and for serving.

The latency the manifest reports (`sec_engine.evaluation.latency`) and the latency the hosted
endpoint sees (`app.serving.model`) come from sessions built here, so they run with the same
options: `threads` intra-op threads, one inter-op thread, sequential execution, every graph
optimisation, on the CPU provider.

Spinning is off: idle intra-op threads otherwise spin-wait for the next parallel section and
burn the cores they share with everything else (the API's event loop, the tokenizer, other
models, other jobs). On a small or busy machine that makes ONNX Runtime look several times
slower than it is; the wake-up cost of blocking waits is small next to a batch.

No torch import here: the API process loads this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROVIDERS = ["CPUExecutionProvider"]


def session_options(threads: int) -> Any:
    """`onnxruntime.SessionOptions` for `threads` intra-op threads (see the module doc)."""
    import onnxruntime as ort

    if threads < 1:
        raise ValueError("threads must be >= 1")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def cpu_session(path: Path | str, threads: int) -> Any:
    """An `onnxruntime.InferenceSession` for the model at `path`, with `session_options`."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads), providers=PROVIDERS)
