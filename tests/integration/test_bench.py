"""
The benchmarks in C{bench/} run end to end at 20,000 indicators, so that
C{make bench} keeps working.  Figures are printed, never asserted: only
that every contender ran and the table is complete.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own script, our own interpreter
        [sys.executable, str(BENCH / script), "--count", "20000", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sync_benchmark_runs() -> None:
    """
    bench_sync.py prints, at the count and at twice it, a median row for
    the bare loop and each grouping (time, ratio, peak RSS, the process
    tree's peak), then the growth per grouping.
    """
    out = _run("bench_sync.py", "--runs", "1", "--growth")
    for count in ("20,000", "40,000"):
        assert f"{count} indicators, medians:" in out
    for name in ("bare", "Condensed", "MaxCondensed", "Expanded"):
        rows = re.findall(rf"^  {name} +[\d.]+ s +[\d.]+ +\d+ MiB +\d+ MiB$", out, re.M)
        assert len(rows) == 2, out
    for name in ("Condensed", "MaxCondensed", "Expanded"):
        assert re.search(
            rf"^  {name} +time x[\d.]+, peak RSS [+-]\d+ MiB per extra million "
            rf"\(tree [+-]\d+\)$",
            out,
            re.M,
        )


def test_daemon_benchmark_runs() -> None:
    """
    bench_daemon.py measures the service during and after a sync and a
    restart; the service never loads numpy (builds run in a child).
    """
    out = _run("bench_daemon.py")
    assert "reactor stalls" in out and "/healthz from another process" in out
    assert "(numpy not loaded in the service)" in out
    assert re.search(r"restart: first byte of the cached feed [\d.]+ s after start", out)


def test_delta_benchmark_runs() -> None:
    """
    bench_delta.py prints a full sync and a delta after churn (time,
    requests, bytes received, indicators transferred), their ratios, and
    what the delta changed.
    """
    out = _run("bench_delta.py")
    assert re.search(r"^  full sync +[\d.]+ s +[\d,]+ +[\d,]+ +[\d,]+$", out, re.M), out
    assert re.search(r"^  delta sync +[\d.]+ s +[\d,]+ +[\d,]+ +[\d,]+$", out, re.M), out
    assert re.search(r"^  delta / full +[\d.]+% +[\d.]+% +[\d.]+% +[\d.]+%$", out, re.M), out
    assert "the last delta:" in out


def test_minutely_benchmark_runs() -> None:
    """
    bench_minutely.py runs a daemon syncing every minute and prints each
    cycle's kind and CPU, then the average (one cycle here: a minute).
    """
    out = _run("bench_minutely.py", "--cycles", "1")
    assert re.search(r"^  cycle 1: delta after [\d,]+ changes, [\d.]+ s CPU$", out, re.M), out
    assert re.search(r"^daemon CPU over 1 one-minute cycles: .* of one core on average", out, re.M)
