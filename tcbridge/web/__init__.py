"""
The HTTP side: Klein routes serving the published feed, the diagnostics page
and the HTML view of the feed.  It only reads the store and the sync status.
"""
