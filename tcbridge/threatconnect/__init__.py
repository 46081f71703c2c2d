"""
The ThreatConnect side: request signing, the signed HTTP client, paging over
the v1/v2 API and turning raw JSON into L{tcbridge.threatconnect.records.Indicator}
records.  Nothing here knows about Carbon Black.
"""
