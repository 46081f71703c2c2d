# -*- test-case-name: tests.unit.test_simulator -*-
"""
A ThreatConnect API simulator: generated indicators served through a signed
subset of the v1/v2/v3 REST API (v3 with a TQL subset), with injectable
faults (L{Simulator.fault_next}; L{tcbridge.simulator.faults}).

It backs the C{--demo} mode (the bridge runs it in-process on a loopback port),
the integration tests and the benchmarks.  Run it on its own with
C{python -m tcbridge.simulator --port 8443 --count 100000}.
"""

from tcbridge.simulator.app import RecordedRequest, Simulator
from tcbridge.simulator.data import Dataset, generate
from tcbridge.simulator.faults import FAULT_KINDS
from tcbridge.simulator.runs import Front
from tcbridge.simulator.server import DemoServer, start_simulator

__all__ = [
    "FAULT_KINDS",
    "Dataset",
    "DemoServer",
    "Front",
    "RecordedRequest",
    "Simulator",
    "generate",
    "start_simulator",
]
