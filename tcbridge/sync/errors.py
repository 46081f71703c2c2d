# -*- test-case-name: tests.unit.test_sync -*-
"""
Why a cycle published nothing, and the one line that says so on the page
and in the log.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.python.failure import Failure

from tcbridge.cbserver import CbSyncError
from tcbridge.threatconnect.errors import ThreatConnectError


class FeedHeldBackError(Exception):
    """
    The new feed shrank more than allowed and was not published.
    """


class SyncDeadlineError(Exception):
    """
    A sync ran longer than C{sync_deadline_minutes}; it was stopped and
    nothing was published.
    """


class FeedInvalidError(Exception):
    """
    The built feed broke a Carbon Black feed rule; it is not published.
    """


def describe_failure(failure: Failure) -> str:
    """
    One line for the page and the log: ThreatConnect's own words for an API
    failure, otherwise the exception's type and text.
    """
    error = failure.value
    if isinstance(
        error,
        ThreatConnectError | FeedInvalidError | SyncDeadlineError | FeedHeldBackError | CbSyncError,
    ):
        return str(error)
    if isinstance(error, defer.CancelledError):
        return "the sync was cancelled (the bridge is stopping)"
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"
