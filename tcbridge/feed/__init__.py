# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
The Carbon Black side of tcbridge: IOC normalisation and validation
(L{iocs}), filters and exclusion lists (L{filters}), grouping indicators into
reports (L{builder}), the fixed parts of the document (L{document}), the
feed validator (L{validator}) and serialisation (L{serialize}).

Nothing here knows about HTTP or Twisted; the only ThreatConnect import is
the L{tcbridge.threatconnect.records} module.
"""
