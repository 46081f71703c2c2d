"""
A daemon that syncs every minute with incremental sync on, measured from
outside: what it costs to keep a feed of C{--count} indicators fresh to
the minute.

 1. The simulator runs in its own process on 127.0.0.1 with C{--count}
    indicators.
 2. C{twistd -n tcbridge} starts with C{incremental_sync = true} and
    C{feed_retrieval_minutes = 1} on an empty cache; its first (full) sync
    is waited for.
 3. Then, for C{--cycles} cycles, C{--churn} of the indicators change
    after each published sync (a signed POST to the simulator), and the
    daemon's CPU time (its own and its build children's, from
    C{/proc/<pid>/stat}) is read at the start and at the end.

Prints the CPU used over the wall time, on average and per cycle, and how
each cycle went.  Prints figures; asserts nothing.

    .venv/bin/python bench/bench_minutely.py [--count 1000000] [--cycles 10] [--churn 0.005]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon import free_port, get, twistd
from bench_delta import churn
from bench_sync import simulator


def cpu_seconds(pid: int) -> float:
    """
    CPU seconds of a process and of its children it has waited for.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def health(port: int) -> dict[str, object]:
    _, body = get(port, "/healthz")
    found: dict[str, object] = orjson.loads(body)
    return found


def wait_for_sync(port: int, after: object, limit: float) -> dict[str, object]:
    """
    Poll /healthz until a sync newer than C{after} succeeded; its document.
    """
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            doc = health(port)
        except OSError:
            time.sleep(0.2)
            continue
        if doc.get("last_success") not in (None, after):
            return doc
        time.sleep(0.2)
    raise SystemExit(f"no sync succeeded within {limit:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--churn", type=float, default=0.005)
    args = parser.parse_args()
    port = free_port()
    with simulator(args.count) as facts, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "tcbridge.conf"
        config.write_text(
            "[threatconnect]\n"
            f"url={facts['base_url']}\napi_key={facts['api_key']}\n"
            f"secret_key={facts['secret_key']}\nsources=*\nioc_grouping=Condensed\n"
            "[bridge]\nlistener_address=127.0.0.1\n"
            f"listener_port={port}\ncache_folder={tmp}/cache\nlog_level=WARNING\n"
            "feed_retrieval_minutes=1\nincremental_sync=true\n"
        )
        daemon = twistd(config, tmp)
        try:
            doc = wait_for_sync(port, None, 900)
            print(f"{args.count:,} indicators: the first (full) sync published", flush=True)
            cpu, wall = cpu_seconds(daemon.pid), time.monotonic()
            last = doc["last_success"]
            for cycle in range(args.cycles):
                changed = churn(facts, args.churn)
                before = cpu_seconds(daemon.pid)
                doc = wait_for_sync(port, last, 300)
                last = doc["last_success"]
                incremental = doc.get("incremental") or {}
                kind = incremental.get("last_cycle") if isinstance(incremental, dict) else None
                print(
                    f"  cycle {cycle + 1}: {kind} after {changed:,} changes, "
                    f"{cpu_seconds(daemon.pid) - before:.1f} s CPU",
                    flush=True,
                )
            used, elapsed = cpu_seconds(daemon.pid) - cpu, time.monotonic() - wall
        finally:
            daemon.terminate()
            daemon.wait()
    print(
        f"daemon CPU over {args.cycles} one-minute cycles: {used:.1f} s in {elapsed:.0f} s "
        f"= {used / elapsed:.1%} of one core on average ({used / args.cycles:.1f} s per cycle)"
    )


if __name__ == "__main__":
    main()
