"""
The scale benchmark: a whole write-mode sync, as a user runs it, side by
side with the yardstick, in one run.

The simulator runs in its own process on 127.0.0.1 with C{--count}
indicators in three owners.  Each round runs, one after another, the bare
loop (C{bench/bare_pull.py}: the same signed pages a sync asks for, fetched
and parsed with orjson, nothing else) and C{tcbridge --config C write FILE}
for each grouping, each as a child process; rounds repeat C{--runs} times
so that noise on a shared machine hits every contender alike.  For each it
prints the median wall time, the ratio to the bare loop's median, the
median peak RSS of the child process (C{wait4}'s C{ru_maxrss}: the largest
single process) and the median peak of its whole process tree's memory,
sampled every 50 ms: its resident size plus the pages its descendants do
not share with it (write mode forks a copy for part of the pull and of
the render).  With C{--growth} it does the
same at twice the count and prints the time ratio and the extra peak
memory per extra million indicators.
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_sync.py [--count 1000000] [--runs 3]
        [--groupings Condensed,MaxCondensed,Expanded] [--growth]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

from tcbridge.simulator.process import simulator_process

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent


def simulator(count: int) -> AbstractContextManager[dict[str, str]]:
    """
    The simulator with C{count} indicators on a free loopback port.
    """
    return simulator_process(count)


def _tree(pid: int) -> list[int]:
    """
    C{pid} and every process below it, as /proc lists them now.
    """
    found, queue = [], [pid]
    while queue:
        one = queue.pop()
        found.append(one)
        try:
            for task in os.listdir(f"/proc/{one}/task"):
                with open(f"/proc/{one}/task/{task}/children") as f:
                    queue.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return found


def _tree_rss(pid: int) -> float:
    """
    The memory of C{pid} and its descendants together, in MiB: the
    resident size of C{pid}, plus for each descendant the pages it does
    not share (a forked copy's pages still shared with its parent are
    counted once, in the parent).
    """
    total = 0.0
    for one in _tree(pid):
        try:
            if one == pid:
                with open(f"/proc/{one}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
                continue
            with open(f"/proc/{one}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024


def timed(argv: list[str]) -> tuple[float, float, str, float]:
    """
    Run C{argv}; return wall seconds, the child's peak RSS in MiB (its
    C{ru_maxrss}: the largest single process), what it printed on stderr,
    and the peak of its process tree's memory (L{_tree_rss}, sampled
    every 50 ms).  A failed run stops the benchmark.
    """
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _tree_rss(child.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = child.stderr.read().decode(errors="replace")
    done.set()
    sampler.join()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err}")
    return elapsed, usage.ru_maxrss / 1024, err, peak[0]


def write_config(folder: Path, facts: dict[str, str], grouping: str) -> Path:
    path = folder / f"{grouping}.conf"
    path.write_text(
        "[threatconnect]\n"
        f"url={facts['base_url']}\napi_key={facts['api_key']}\n"
        f"secret_key={facts['secret_key']}\nsources=*\n"
        f"ioc_grouping={grouping}\nmax_reports=0\n"
        "[bridge]\ncache_folder=\n"
    )
    return path


def measure(count: int, runs: int, groupings: list[str]) -> dict[str, tuple[float, float, float]]:
    """
    Median (seconds, peak MiB, process tree's peak MiB) of the bare loop
    and of each grouping.
    """
    samples: dict[str, list[tuple[float, float, float]]] = {
        "bare": [],
        **{g: [] for g in groupings},
    }
    with simulator(count) as facts, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        configs = {g: write_config(folder, facts, g) for g in groupings}
        bare = [sys.executable, str(HERE / "bare_pull.py")]
        bare += [facts["base_url"], facts["api_key"], facts["secret_key"]]
        for run in range(runs):
            seconds, peak, _, tree = timed(bare)
            samples["bare"].append((seconds, peak, tree))
            line = [f"round {run + 1}: bare {seconds:.2f} s"]
            for grouping in groupings:
                out = folder / f"{grouping}.json"
                argv = [str(BIN / "tcbridge"), "--config", str(configs[grouping]), "write"]
                seconds, peak, _, tree = timed([*argv, str(out)])
                samples[grouping].append((seconds, peak, tree))
                line.append(f"{grouping} {seconds:.2f} s {peak:.0f} MiB (tree {tree:.0f})")
            print("  " + ", ".join(line), flush=True)
        sizes = {g: (folder / f"{g}.json").stat().st_size for g in groupings}
    for grouping, size in sizes.items():
        print(f"  {grouping} feed: {size:,} bytes")
    return {
        name: (
            statistics.median(s for s, _, _ in got),
            statistics.median(p for _, p, _ in got),
            statistics.median(t for _, _, t in got),
        )
        for name, got in samples.items()
    }


def table(count: int, medians: dict[str, tuple[float, float, float]]) -> None:
    bare = medians["bare"][0]
    print(f"\n{count:,} indicators, medians:")
    print(f"  {'':<14} {'wall time':>10} {'/ bare':>7} {'peak RSS':>10} {'tree peak':>10}")
    for name, (seconds, peak, tree) in medians.items():
        print(
            f"  {name:<14} {seconds:>8.2f} s {seconds / bare:>7.2f} {peak:>6.0f} MiB"
            f" {tree:>6.0f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--groupings", default="Condensed,MaxCondensed,Expanded")
    parser.add_argument("--growth", action="store_true", help="also run at twice the count")
    args = parser.parse_args()
    groupings = [g for g in args.groupings.split(",") if g]
    print(f"write-mode sync against the simulator: {args.count:,} indicators, {args.runs} rounds")
    medians = measure(args.count, args.runs, groupings)
    table(args.count, medians)
    if not args.growth:
        return
    double = 2 * args.count
    print(f"\nagain with {double:,} indicators")
    bigger = measure(double, args.runs, groupings)
    table(double, bigger)
    millions = args.count / 1_000_000
    print(f"\ngrowth from {args.count:,} to {double:,}:")
    for name in groupings:
        (one, one_peak, one_tree), (two, two_peak, two_tree) = medians[name], bigger[name]
        print(
            f"  {name:<14} time x{two / one:.2f}, "
            f"peak RSS {(two_peak - one_peak) / millions:+.0f} MiB per extra million "
            f"(tree {(two_tree - one_tree) / millions:+.0f})"
        )


if __name__ == "__main__":
    main()
