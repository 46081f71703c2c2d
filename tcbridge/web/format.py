# -*- test-case-name: tests.unit.test_web -*-
"""
Small text formatting helpers shared by the pages and the health document:
times and ages.
"""

from __future__ import annotations

import time


def http_time(seconds: float | None, never: str = "Never") -> str:
    """
    Format a time the way the 2015 bridge's page did: C{Sat, 28 Nov 2026
    06:23:29 +0000}.
    """
    if seconds is None:
        return never
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(seconds))


def age(seconds: float | None, now: float) -> str:
    """
    Say how long ago C{seconds} was, roughly: C{"42 s ago"}, C{"5 min ago"}.
    """
    if seconds is None:
        return ""
    delta = max(0.0, now - seconds)
    if delta < 120:
        return f"{delta:.0f} s ago"
    if delta < 2 * 3600:
        return f"{delta / 60:.0f} min ago"
    if delta < 2 * 86400:
        return f"{delta / 3600:.1f} h ago"
    return f"{delta / 86400:.1f} days ago"


def when(seconds: float | None, now: float, never: str = "Never") -> str:
    """
    A time followed by its age, or C{never}.
    """
    if seconds is None:
        return never
    return f"{http_time(seconds)} ({age(seconds, now)})"


def iso_time(seconds: float | None) -> str | None:
    """
    An ISO-8601 UTC time to the second (C{2026-11-28T06:23:29Z}) for the
    machine-readable views, or C{None}.
    """
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
