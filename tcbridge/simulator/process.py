"""
The simulator in a process of its own, for benchmarks and end-to-end
checks that run tcbridge's real programs against it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def simulator_process(
    count: int, seed: int | None = None, latency: float = 0.0
) -> Iterator[dict[str, str]]:
    """
    Run C{python -m tcbridge.simulator} with C{count} indicators on a free
    loopback port (answering C{latency} seconds late); yield its
    C{base_url}, C{api_key} and C{secret_key}, and stop it afterwards.

    :raise RuntimeError: if it stops before saying where it listens.
    """
    argv = [sys.executable, "-m", "tcbridge.simulator", "--port", "0", "--count", str(count)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if latency:
        argv += ["--latency", str(latency)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)  # noqa: S603
    facts: dict[str, str] = {}
    try:
        assert process.stdout is not None
        while len(facts) < 3:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("the simulator did not start")
            key, _, value = line.strip().partition("=")
            if key in ("base_url", "api_key", "secret_key"):
                facts[key] = value
        yield facts
    finally:
        process.terminate()
        process.wait()
