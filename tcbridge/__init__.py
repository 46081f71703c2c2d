"""
tcbridge: a ThreatConnect to Carbon Black EDR threat-intelligence bridge.

Pulls indicators of compromise from ThreatConnect with signed API calls and
serves them as a Carbon Black EDR feed from one Twisted process.
"""

__version__ = "3.0.0.dev0"
