# -*- test-case-name: tests.unit.test_childbuild -*-
"""
The end of what a child process writes to stderr, kept to say why it
failed (the build child, L{tcbridge.childbuild}; the store child,
L{tcbridge.storechild}).
"""

from __future__ import annotations


class StderrTail:
    """
    Keeps the last C{keep} bytes a child wrote to stderr.
    """

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._kept = b""

    def add(self, data: bytes) -> None:
        """
        Take what the child just wrote.
        """
        self._kept = (self._kept + data)[-self._keep :]

    def text(self, limit: int) -> str:
        """
        The last C{limit} characters of what it wrote, without surrounding
        white space (empty if it wrote nothing).
        """
        return self._kept.decode("utf-8", "replace").strip()[-limit:]
