"""The low-cost load generator: `wrk` (C, epoll; Debian's `wrk` package) driven by a Lua script.

Each of `clients` keep-alive connections sends its next request as soon as the previous one is
answered (closed loop), one Rotten Tomatoes snippet per request; the request bytes are built
once, in the script's `init`, so the client spends next to nothing per request (its CPU is
measured and reported next to the server's). `done` prints one JSON line with the counts and
the latency percentiles (wrk measures every response, in microseconds).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.serving.load import LoadResult

_SCRIPT = r"""
local reqs = {}
local counter = 0

function init(args)
  local path, auth, file = args[1], args[2], args[3]
  local headers = {["Authorization"] = auth, ["Content-Type"] = "application/json"}
  for line in io.lines(file) do
    reqs[#reqs + 1] = wrk.format("POST", path, headers, line)
  end
end

function request()
  counter = counter % #reqs + 1
  return reqs[counter]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d,'
    .. ' "write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "p50": %d,'
    .. ' "p90": %d, "p95": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def write_inputs(path: Path, bodies: list[dict[str, Any]]) -> Path:
    """One JSON request body per line (json.dumps escapes newlines inside texts)."""
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies), encoding="utf-8")
    return path


def run_wrk(
    url: str,
    path: str,
    api_key: str,
    bodies_file: Path,
    *,
    clients: int,
    seconds: float,
    work: Path,
) -> LoadResult:
    """One closed-loop run: `clients` connections on one wrk thread for `seconds`. wrk counts
    socket errors apart from requests; `LoadResult.requests` includes both."""
    script = work / "predict.lua"
    script.write_text(_SCRIPT, encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [
        "wrk",
        "-t1",
        f"-c{clients}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "60s",
        "-s",
        str(script),
        url,
        "--",
        path,
        f"Bearer {api_key}",
        str(bodies_file),
    ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr[-2000:]}")
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {run.stdout[-2000:]}")
    return parse_summary(
        json.loads(line),
        client_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


def parse_summary(data: dict[str, Any], *, client_cpu_s: float) -> LoadResult:
    errors = data["errors"]
    socket_errors = int(errors["connect"] + errors["read"] + errors["write"] + errors["timeout"])
    return LoadResult(
        requests=int(data["requests"]) + socket_errors,
        non_2xx=int(errors["status"]),
        socket_errors=socket_errors,
        duration_s=data["duration_us"] / 1e6,
        latency_ms={k: round(v / 1000.0, 3) for k, v in data["latency_us"].items()},
        client_cpu_s=client_cpu_s,
    )
