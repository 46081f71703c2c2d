# -*- test-case-name: tests.unit.test_simulator -*-
"""
Run the ThreatConnect API simulator on its own::

    python -m tcbridge.simulator --port 8443 --count 100000 --seed 1 [--prefix /api]

It prints C{base_url=...}, C{api_key=...} and C{secret_key=...}, one per line,
then serves until interrupted.  C{--latency SECONDS} answers every
request that much later, as a remote ThreatConnect's round trip.
C{--fault KIND[:N]} (repeatable) queues N
(default 1) faults of that kind with default options (see
L{tcbridge.simulator.faults}) before serving.  With C{--prefetch} it builds the next page of
a listing in a thread ahead of the request, which hides the simulator's own
work behind a slow client's (but favours slow clients in a benchmark).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorCore, IReactorTCP

from tcbridge.simulator.faults import FAULT_KINDS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    Parse the command line.
    """
    parser = argparse.ArgumentParser(
        prog="python -m tcbridge.simulator",
        description="Serve generated indicators through a simulated ThreatConnect API.",
    )
    parser.add_argument("--port", type=int, default=8443, help="TCP port (0: any free port)")
    parser.add_argument("--count", type=int, default=100000, help="File+Address+Host indicators")
    parser.add_argument("--seed", type=int, default=1, help="data set seed")
    parser.add_argument("--prefix", default="/api", help='API path prefix ("" for none)')
    parser.add_argument(
        "--interface", default="127.0.0.1", help="address to listen on (default loopback)"
    )
    parser.add_argument(
        "--prefetch",
        action="store_true",
        help="build the next page of a listing in a thread ahead of the request",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="answer every request that many seconds late, as a remote ThreatConnect would",
    )
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="KIND[:N]",
        help=f"inject N (default 1) faults of KIND, one of {', '.join(FAULT_KINDS)}",
    )
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must not be negative")
    if args.latency < 0:
        parser.error("--latency must not be negative")
    return args


def _fault(text: str) -> tuple[str, int]:
    """
    Parse C{KIND[:N]}.
    """
    kind, sep, times = text.partition(":")
    if kind not in FAULT_KINDS or (sep and not times.isdigit()):
        raise argparse.ArgumentTypeError(f"expected KIND[:N] with KIND one of {FAULT_KINDS}")
    return kind, int(times) if sep else 1


async def _serve(reactor: IReactorTCP, args: argparse.Namespace) -> None:
    """
    Start the simulator, print how to reach it, and serve until the reactor
    stops.
    """
    from tcbridge.simulator.server import start_simulator

    options = ("count", "port", "seed", "prefix", "interface", "prefetch")
    demo = start_simulator(reactor, **{name: getattr(args, name) for name in options})
    demo.simulator.latency = args.latency
    for kind, times in args.fault:
        demo.simulator.fault_next(kind, times)
    sys.stdout.write(
        f"base_url={demo.base_url}\napi_key={demo.api_key}\nsecret_key={demo.secret_key}\n"
    )
    sys.stdout.flush()
    forever: defer.Deferred[None] = defer.Deferred()
    core: IReactorCore = reactor  # type: ignore[assignment]
    core.addSystemEventTrigger("before", "shutdown", forever.callback, None)
    await forever


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the simulator with the global reactor until Ctrl-C.
    """
    args = parse_args(argv)
    if args.prefetch:
        # The page-building thread holds the GIL for tens of milliseconds;
        # a shorter switch interval lets the reactor thread keep sending the
        # previous page meanwhile.
        sys.setswitchinterval(0.0005)
    task.react(lambda reactor: defer.ensureDeferred(_serve(reactor, args)))


if __name__ == "__main__":
    main()
