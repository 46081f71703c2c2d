"""
twistd plugin: C{twistd -n tcbridge --config FILE}.  Lazy: the bridge's own
modules are imported only when the subcommand runs.
"""

from twisted.application.service import ServiceMaker

tcbridge = ServiceMaker(
    "tcbridge",
    "tcbridge.tap",
    "ThreatConnect to Carbon Black EDR threat-intelligence bridge.",
    "tcbridge",
)
