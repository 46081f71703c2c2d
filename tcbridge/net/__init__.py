"""
HTTP plumbing shared by both clients (ThreatConnect and the Carbon Black
server): the agent (TLS policy, connection pool partition, proxy tunnel),
reading response bodies, and turning network failures and error pages into
one readable line.  Nothing here knows either API.
"""
