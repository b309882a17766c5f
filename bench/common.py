"""Helpers shared by the benchmarks: logging callbacks, load sampling, machine info, split digest.

Every benchmark runs on the target machine class (a 2-core CPU shared with other work), so
timings use a fixed thread count and the 1-minute load average is recorded next to them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from sec_engine.callbacks import Phase, TraceRow
from sec_engine.data.splits import DataBundle

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
THREADS = 2  # the target machine: a 2-core CPU; fixed so every timing uses the same threads
DEFAULT_SPEC = ROOT / "examples" / "minilm_rotten_tomatoes.yaml"  # the engine target spec


def spec_variant(spec: Path) -> str:
    """ "" for the default spec, else the spec file's stem: results of another spec (a second
    seed, an ablation) are written under it, so they never overwrite the default's."""
    return "" if spec.resolve() == DEFAULT_SPEC.resolve() else spec.stem


class LogCallbacks:
    """Timestamped engine events on stderr, and when each phase began (for training time)."""

    def __init__(self, tag: str, *, verbose: bool = True) -> None:
        self.tag = tag
        self.verbose = verbose
        self.start = time.monotonic()
        self.last_progress = -1.0
        self.phase_started: dict[str, float] = {}
        self.teacher_resumed = False  # the job restored its teacher from a checkpoint

    def _log(self, text: str) -> None:
        if self.verbose:
            print(f"[{self.tag} {time.monotonic() - self.start:7.1f}s] {text}", file=sys.stderr)

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        if kind == "teacher.done" and data is not None and data.get("resumed"):
            self.teacher_resumed = True
        self._log(f"{kind}: {message}")

    def trace(self, row: TraceRow) -> None:
        acc = "-" if row.val_accuracy is None else f"{row.val_accuracy:.4f}"
        rule = row.decision.get("rule", "")
        self._log(
            f"trace {row.phase} step={row.step} val_acc={acc} sparsity={row.sparsity} "
            f"size_mb={row.size_mb} λ1={row.lambda1:.3f} λ2={row.lambda2:.3f} rule={rule}"
        )

    def progress(self, phase: Phase, fraction: float) -> None:
        self.phase_started.setdefault(str(phase), time.monotonic() - self.start)
        if fraction - self.last_progress >= 0.05 or fraction < self.last_progress:
            self.last_progress = fraction
            self._log(f"progress {phase} {fraction:.2f}")

    def should_cancel(self) -> bool:
        return False

    def training_seconds(self) -> float:
        """From the job's start to the start of evaluation: preparing + teacher + data +
        compression, without the measuring and exporting that every row does alike."""
        end = self.phase_started.get(str(Phase.EVALUATING), time.monotonic() - self.start)
        return round(end, 1)


class LoadSampler:
    """Samples the 1-minute load average in the background: the machine is shared."""

    def __init__(self, every_s: float = 15.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every_s)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [0.0]
        return {"mean": round(statistics.fmean(s), 2), "max": round(max(s), 2), "n": len(s)}


def split_digest(data: DataBundle) -> dict[str, Any]:
    """A fingerprint of the split, so a reader can check that every row shares it."""

    def digest(rows: list[Any]) -> str:
        h = hashlib.sha256()
        for r in rows:
            h.update(f"{r.text}\x1f{r.text_pair}\x1f{r.label}\x1e".encode())
        return h.hexdigest()[:16]

    return {
        name: {"rows": len(rows), "sha256_16": digest(rows)}
        for name, rows in (
            ("train", data.train),
            ("validation", data.validation),
            ("test", data.test),
            ("unlabelled", data.unlabelled),
        )
    }


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# The instruction sets int8 and fp32 kernels choose between: the same model's latency ratios
# differ by several times between an AVX2-only CPU and one with VNNI or AMX.
INT8_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def machine_info() -> dict[str, Any]:
    model = ""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    return {
        "cpu": model or platform.processor(),
        "cpu_int8": " ".join(f for f in INT8_ISA_FLAGS if f in flags) or "unknown",
        "cpu_count": os.cpu_count(),
        "torch_threads": THREADS,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "transformers": _version("transformers"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
