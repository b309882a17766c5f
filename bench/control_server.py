"""The API under yappi, for `python -m bench.control --profile`: `python -m
bench.control_server PORT STATS_FILE`. The profile runs from SIGUSR1 (after the client's
warm-up, so start-up and imports stay out of it) to SIGUSR2 or the end; on shutdown (SIGTERM) it writes the functions
with the largest inclusive CPU share of the profiled stretch, every thread counted."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import uvicorn
import yappi


def main() -> None:
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    yappi.set_clock_type("cpu")
    signal.signal(signal.SIGUSR1, lambda *_: yappi.start(builtins=False, profile_threads=True))
    signal.signal(signal.SIGUSR2, lambda *_: yappi.stop())
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)

    def stop(*_: object) -> None:
        server.should_exit = True

    # Not `server.run()`: it re-raises SIGTERM after shutdown, which ends the process before
    # the profile is written.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        asyncio.run(server._serve())
    finally:
        yappi.stop()
        total = sum(t.ttot for t in yappi.get_thread_stats()) or 1.0
        rows = sorted(yappi.get_func_stats(), key=lambda f: f.ttot, reverse=True)
        lines = [f"total CPU {total:.2f} s (every thread); inclusive share, own share, calls"]
        for f in rows[:600]:
            where = f"{f.module.split('site-packages/')[-1]}:{f.lineno} {f.name}"
            lines.append(
                f"{100 * f.ttot / total:6.1f}% {100 * f.tsub / total:6.1f}% {f.ncall:8d}  {where}"
            )
        out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
