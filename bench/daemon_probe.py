"""
The bridge service as twistd runs it (its real service tree, on the global
reactor, listening on 127.0.0.1), plus a 10 ms timer that records how late
it fires.  Run by bench_daemon.py; prints one JSON line with the reactor's
stalls once the first sync has published (its meta file appears in the
cache folder), then goes on serving until stopped.

    .venv/bin/python bench/daemon_probe.py CONFIG
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson
from twisted.internet import task

from tcbridge.memory import freeze_startup_objects, return_freed_memory
from tcbridge.store import META_FILE_NAME
from tcbridge.tap import Options, build_service

TICK = 0.01


def main() -> None:
    from twisted.internet import reactor

    return_freed_memory()
    options = Options()
    options.parseOptions(["--config", sys.argv[1]])
    service = build_service(options, reactor)
    freeze_startup_objects()
    lags: list[float] = []
    started = time.perf_counter()
    late: list[str] = []
    last = [started]
    reported = [False]

    meta = Path(options["loaded"].sync.cache_folder) / META_FILE_NAME

    def tick() -> None:
        now = time.perf_counter()
        lags.append(now - last[0] - TICK)
        if lags[-1] > 0.05:
            late.append(f"{lags[-1] * 1000:.0f} ms at {last[0] - started:.2f} s")
        last[0] = now
        if not reported[0] and len(lags) % 10 == 0 and meta.exists():
            reported[0] = True
            ordered = sorted(lags)
            print(
                orjson.dumps(
                    {
                        "max_ms": ordered[-1] * 1000,
                        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
                        "over_50_ms": sum(1 for lag in ordered if lag > 0.05),
                        "ticks": len(ordered),
                        "late": late,
                    }
                ).decode(),
                flush=True,
            )

    ticker = task.LoopingCall(tick)
    ticker.clock = reactor
    service.startService()
    ticker.start(TICK, now=False)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
