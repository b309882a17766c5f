"""The model alone, in-process: what each input costs by batch size, with no HTTP and no queue.

Through the serving engine's own code (`app.serving.model.load_model`: the same ONNX Runtime
session options as the endpoint and the engine's latency measurement,
sec_engine/artifact_contract/onnx_runtime.py, and the same thread count), on the same real
texts the load generator sends, each batch cut into model calls the way the server cuts it.
Per batch size:

- `cpu_ms_per_input`: CPU time (every thread of this process: ONNX Runtime's intra-op threads
  included) of the ONNX Runtime calls alone: the model's own cost;
- `tokenize_cpu_ms_per_input`: CPU time of tokenising the same batches;
- `wall_ms_per_input`: wall time of the whole `predict` (tokenise, pad, run, softmax, labels),
  whose inverse is the in-process throughput the HTTP figures are compared with.

Each figure is the best of `rounds` passes over the texts: on a shared machine other work
only ever adds to a pass, so the best one is the closest to the model's own cost.
"""

from __future__ import annotations

import tarfile
import time
from pathlib import Path
from typing import Any

from bench.serving.cpu import CurvePoint, ModelCurve

SIZES = (1, 2, 4, 8, 16, 32)
QUICK_SIZES = (1, 8, 32)


def _chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]


def measure_model(
    archive: Path,
    manifest: dict[str, Any],
    work: Path,
    texts: list[str],
    *,
    threads: int,
    sizes: tuple[int, ...] = SIZES,
    rounds: int = 3,
) -> ModelCurve:
    from app.serving.model import load_model, plan_batches
    from sec_engine.artifact_contract import parse_manifest

    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(work, filter="data")
    (top,) = [p for p in work.iterdir() if p.is_dir()]
    model = load_model(top, parse_manifest(manifest), threads=threads)
    points = []
    for size in sizes:
        batches = _chunks(texts, size)
        model.predict(batches[0])  # warm this size's buffers
        n = size * len(batches)

        tokenize_cpu = run_cpu = predict_wall = float("inf")
        for _ in range(rounds):
            cpu = time.process_time()
            encoded = [model.encoder.tokenize(b) for b in batches]
            tokenize_cpu = min(tokenize_cpu, time.process_time() - cpu)

            feeds = []
            for encodings in encoded:
                plan = plan_batches(
                    [len(e.ids) for e in encodings], max_rows=size, max_tokens=model.max_tokens
                )
                feeds += [model.encoder.pad([encodings[i] for i in rows]) for rows in plan]
            cpu = time.process_time()
            for feed in feeds:
                model.session.run(["logits"], feed)
            run_cpu = min(run_cpu, time.process_time() - cpu)

            wall = time.perf_counter()
            for batch in batches:
                model.predict(batch)
            predict_wall = min(predict_wall, time.perf_counter() - wall)

        points.append(
            CurvePoint(
                batch=size,
                cpu_ms_per_input=1000 * run_cpu / n,
                wall_ms_per_input=1000 * predict_wall / n,
                tokenize_cpu_ms_per_input=1000 * tokenize_cpu / n,
            )
        )
    return ModelCurve(points)
