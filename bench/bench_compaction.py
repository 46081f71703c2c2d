"""
What a delta costs the reactor when it writes the file of what the last
sync saw whole again (compaction: once the changes appended to it reach a
quarter of its size, see C{tcbridge.sync.rebuild.COMPACT_AT}), against a
delta that only appends its changes.

The simulator runs in its own process on 127.0.0.1 with C{--count}
indicators; a bridge with C{incremental_sync} on (the real service
objects: store thread, child build) syncs once in full.  Then, for each of
C{--runs} rounds, C{--churn} of the indicators change and a delta appends
its changes; they change again and a delta compacts (this script makes the
threshold zero for that one delta, which is all it changes).  A 10 ms timer
records how late the reactor runs it during each delta.

Prints, per kind of delta, the medians of the wall time and of the timer's
p99 and worst lateness, and the timer's firings more than 50 ms late (the
DESIGN's bound for a stall).  Prints figures; asserts nothing.

    .venv/bin/python bench/bench_compaction.py [--count 1000000] [--runs 3]
        [--api-version v3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_delta import bench_bridge, churn

import tcbridge.sync.rebuild as rebuild
from tcbridge.simulator.process import simulator_process

TICK = 0.01


class LagMeter:
    """
    A timer every L{TICK} seconds on the reactor, and how late each firing
    came.
    """

    def __init__(self, reactor: Any) -> None:
        self.lags: list[float] = []
        self._last = 0.0
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor

    def _tick(self) -> None:
        now = time.perf_counter()
        self.lags.append(now - self._last - TICK)
        self._last = now

    def start(self) -> None:
        self.lags = []
        self._last = time.perf_counter()
        self._loop.start(TICK, now=False)

    def stop(self) -> tuple[float, float, int]:
        """
        Stop; the p99 and worst lateness in ms, and the firings over 50 ms.
        """
        self._loop.stop()
        ordered = sorted(self.lags) or [0.0]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return p99 * 1000, ordered[-1] * 1000, sum(1 for lag in ordered if lag > 0.05)


async def delta(reactor: Any, bridge: Any, meter: LagMeter) -> tuple[float, float, float, int]:
    """
    One delta, timed and watched: seconds, p99 and worst lateness, stalls.
    """
    await task.deferLater(reactor, 0.5, lambda: None)  # the last commit's checkpoint
    meter.start()
    started = time.perf_counter()
    await bridge.cycle.run()
    seconds = time.perf_counter() - started
    await task.deferLater(reactor, 0.2, lambda: None)
    return (seconds, *meter.stop())


async def run(reactor: Any, args: argparse.Namespace) -> None:
    with simulator_process(args.count) as facts, tempfile.TemporaryDirectory() as tmp:
        bridge = bench_bridge(reactor, facts, Path(tmp) / "a", True, args.api_version)
        meter = LagMeter(reactor)
        await bridge.cycle.run()
        print(f"{args.count:,} indicators, {args.api_version}: the full sync is done", flush=True)
        kinds: dict[str, list[tuple[float, float, float, int]]] = {"appends": [], "compacts": []}
        threshold = rebuild.COMPACT_AT
        for round_ in range(args.runs):
            for kind in kinds:
                churn(facts, args.churn)
                rebuild.COMPACT_AT = 10**12 if kind == "compacts" else threshold  # type: ignore[misc]
                kinds[kind].append(await delta(reactor, bridge, meter))
                seconds, p99, worst, stalls = kinds[kind][-1]
                print(
                    f"  round {round_ + 1}, a delta that {kind}: {seconds:.2f} s, "
                    f"lateness p99 {p99:.1f} ms, worst {worst:.1f} ms, {stalls} over 50 ms",
                    flush=True,
                )
        rebuild.COMPACT_AT = threshold  # type: ignore[misc]
        print(f"medians of {args.runs}        wall time   lateness p99   worst   over 50 ms")
        for kind, rows in kinds.items():
            medians = [statistics.median(r[i] for r in rows) for i in range(4)]
            print(
                f"  delta that {kind:8}  {medians[0]:7.2f} s  {medians[1]:10.1f} ms"
                f"  {medians[2]:6.1f} ms  {medians[3]:9.0f}"
            )
        await bridge.pool.closeCachedConnections()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--churn", type=float, default=0.005)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--api-version", default="v3", choices=("v2", "v3"))
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
