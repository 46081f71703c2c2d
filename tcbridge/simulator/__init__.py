# -*- test-case-name: tests.test_simulator -*-
"""
A ThreatConnect API simulator: generated indicators served through a signed
subset of the v1/v2 REST API.

It backs the C{--demo} mode (the bridge runs it in-process on a loopback port),
the integration tests and the benchmarks.  Run it on its own with
C{python -m tcbridge.simulator --port 8443 --count 100000}.
"""

from tcbridge.simulator.app import DemoServer, RecordedRequest, Simulator, start_demo
from tcbridge.simulator.data import Dataset, generate

__all__ = ["Dataset", "DemoServer", "RecordedRequest", "Simulator", "generate", "start_demo"]
