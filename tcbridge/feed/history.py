# -*- test-case-name: tests.unit.test_feed_history -*-
"""
Report timestamp history: what each published report's timestamp and
content digest were, so that a report's timestamp moves only when its
content changes.

Carbon Black's incremental sync takes only new reports and reports whose
C{timestamp} changed.  The builder therefore stamps a report:

 - with its previous timestamp if its digest is unchanged;
 - otherwise (new or changed) with the newest C{lastModified} of its IOCs,
   or the previous timestamp + 1 if that is not later.

The digest (L{tcbridge.feed.render.report_digest}) is 8 bytes of BLAKE2b
over the report as serialised without its C{timestamp}, so a report read
back from a cached feed file digests exactly like the freshly built one
(L{history_from_reports}).

Memory: report ids of the form C{<head>-<number>} (every Expanded id with a
ThreatConnect id, every group id) are kept per head as three numpy arrays
(number, timestamp, digest): 24 bytes per report.  Other ids are kept in a
dict.  L{save} and L{load} write and read the same in a small binary file,
so a restart does not have to parse the feed to know its history.  (numpy
is imported only once a history has reports: a write-mode sync never needs
it before its build.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from .render import digest_of

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

_MAGIC: Final = b"tcbridge-history-1\n"
_MAX_TAIL: Final = 19


def split_id(report_id: str) -> tuple[str, int] | None:
    """
    C{(head, number)} for an id C{<head>-<number>} whose number is at most
    19 digits without leading zeros; C{None} for any other id.
    """
    head, sep, tail = report_id.rpartition("-")
    if (
        sep
        and tail.isascii()
        and tail.isdigit()
        and len(tail) <= _MAX_TAIL
        and (tail[0] != "0" or tail == "0")
    ):
        return head, int(tail)
    return None


class _Head:
    """
    The reports of one id head: numbers sorted, with their timestamps and
    digests.
    """

    __slots__ = ("digests", "numbers", "stamps")

    def __init__(
        self, numbers: NDArray[np.uint64], stamps: NDArray[np.int64], digests: NDArray[np.uint64]
    ) -> None:
        import numpy as np

        order = np.argsort(numbers, kind="stable")
        self.numbers = numbers[order]
        self.stamps = stamps[order]
        self.digests = digests[order]

    def find(self, numbers: NDArray[np.uint64]) -> NDArray[np.intp]:
        """
        The position of each number, or -1.
        """
        import numpy as np

        if not len(self.numbers):
            return np.full(len(numbers), -1, dtype=np.intp)
        at = np.minimum(np.searchsorted(self.numbers, numbers), len(self.numbers) - 1)
        return np.where(self.numbers[at] == numbers, at, -1)


class ReportHistory:
    """
    Report id -> (timestamp, digest) for the reports of one published feed.
    """

    __slots__ = ("_heads", "_other")

    def __init__(self, entries: Iterable[tuple[str, int, bytes]] = ()) -> None:
        """
        :param entries: C{(report id, timestamp, 8-byte digest)} triples.
        """
        self._heads: dict[str, _Head] = {}
        self._other: dict[str, tuple[int, bytes]] = {}
        recorder = HistoryRecorder()
        for report_id, timestamp, digest in entries:
            recorder.set(report_id, timestamp, digest)
        recorder.into(self)

    def set(self, report_id: str, timestamp: int, digest: bytes) -> None:
        """
        Record one report's timestamp (a non-negative int) and digest (slow:
        for tests and small histories; builds use a L{HistoryRecorder}).
        """
        recorder = HistoryRecorder()
        for entry in self.entries():
            if entry[0] != report_id:
                recorder.set(*entry)
        recorder.set(report_id, timestamp, digest)
        recorder.into(self)

    def get(self, report_id: str) -> tuple[int, bytes] | None:
        """
        The recorded C{(timestamp, digest)} of a report, or C{None}.
        """
        import numpy as np

        split = split_id(report_id)
        if split is None:
            return self._other.get(report_id)
        head = self._heads.get(split[0])
        if head is None:
            return None
        at = int(head.find(np.array([split[1]], dtype=np.uint64))[0])
        if at < 0:
            return None
        return int(head.stamps[at]), int(head.digests[at]).to_bytes(8, "big")

    def lookup(
        self, head: str, numbers: NDArray[np.uint64]
    ) -> tuple[NDArray[np.bool_], NDArray[np.int64], NDArray[np.uint64]]:
        """
        For the reports C{<head>-<number>}: whether each is recorded, and
        its timestamp and digest (as a big-endian 64-bit number; 0 when not
        recorded).
        """
        import numpy as np

        found = self._heads.get(head)
        if found is None or not len(found.numbers):
            return (
                np.zeros(len(numbers), dtype=bool),
                np.zeros(len(numbers), dtype=np.int64),
                np.zeros(len(numbers), dtype=np.uint64),
            )
        at = found.find(numbers)
        known = at >= 0
        safe = np.where(known, at, 0)
        stamps = np.where(known, found.stamps[safe], 0).astype(np.int64)
        digests = np.where(known, found.digests[safe], 0).astype(np.uint64)
        return known, stamps, digests

    def entries(self) -> Iterator[tuple[str, int, bytes]]:
        """
        Every C{(report id, timestamp, digest)}, heads first.
        """
        for name, head in self._heads.items():
            for number, stamp, digest in zip(
                head.numbers.tolist(), head.stamps.tolist(), head.digests.tolist(), strict=True
            ):
                yield f"{name}-{number}", stamp, digest.to_bytes(8, "big")
        for report_id, (stamp, digest) in self._other.items():
            yield report_id, stamp, digest

    def __len__(self) -> int:
        return sum(len(head.numbers) for head in self._heads.values()) + len(self._other)

    def __contains__(self, report_id: object) -> bool:
        return isinstance(report_id, str) and self.get(report_id) is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReportHistory):
            return NotImplemented
        return sorted(self.entries()) == sorted(other.entries())

    def __repr__(self) -> str:
        return f"<ReportHistory of {len(self)} reports>"

    def save(self, path: str) -> None:
        """
        Write the history to C{path} (not atomically: the caller renames).
        """
        heads = [{"head": name, "count": len(head.numbers)} for name, head in self._heads.items()]
        other = [
            [report_id, stamp, digest.hex()] for report_id, (stamp, digest) in self._other.items()
        ]
        header = orjson.dumps({"heads": heads, "other": other})
        with open(path, "wb") as f:
            f.write(_MAGIC)
            f.write(len(header).to_bytes(8, "big"))
            f.write(header)
            for head in self._heads.values():
                f.write(head.numbers.astype("<u8").tobytes())
                f.write(head.stamps.astype("<i8").tobytes())
                f.write(head.digests.astype("<u8").tobytes())
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: str) -> ReportHistory:
        """
        Read a history written by L{save}.

        :raise ValueError: if the file is not one.
        :raise OSError: if it cannot be read.
        """
        import numpy as np

        with open(path, "rb") as f:
            data = f.read()
        if not data.startswith(_MAGIC):
            raise ValueError(f"{path} is not a tcbridge history file")
        at = len(_MAGIC)
        size = int.from_bytes(data[at : at + 8], "big")
        try:
            header = orjson.loads(data[at + 8 : at + 8 + size])
            history = cls()
            offset = at + 8 + size
            for entry in header["heads"]:
                count = int(entry["count"])
                arrays = []
                for dtype in ("<u8", "<i8", "<u8"):
                    end = offset + 8 * count
                    if end > len(data):
                        raise ValueError("truncated")
                    arrays.append(np.frombuffer(data, dtype=dtype, count=count, offset=offset))
                    offset = end
                numbers, stamps, digests = arrays
                history._heads[str(entry["head"])] = _Head(
                    numbers.astype(np.uint64), stamps.astype(np.int64), digests.astype(np.uint64)
                )
            for report_id, stamp, digest in header["other"]:
                history._other[str(report_id)] = (int(stamp), bytes.fromhex(digest))
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as e:
            raise ValueError(f"{path} is damaged ({e})") from None
        return history


class StoredHistory:
    """
    A report history kept in a file written by L{ReportHistory.save}, not
    read yet: what a process that never builds (the service, when builds
    run in a child process) holds instead of the history itself.
    """

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"<StoredHistory {self.path}>"

    def load(self) -> ReportHistory:
        """
        The history itself (an empty one if the file is gone).

        :raise ValueError: if the file is damaged.
        """
        try:
            return ReportHistory.load(self.path)
        except FileNotFoundError:
            return ReportHistory()


#: A report history, or where one is kept.
AnyHistory = ReportHistory | StoredHistory


def resolve(history: AnyHistory) -> ReportHistory:
    """
    The history itself, read from its file if needed.
    """
    return history.load() if isinstance(history, StoredHistory) else history


class HistoryRecorder:
    """
    Collects the history of the feed being built, report by report, and
    turns it into a L{ReportHistory}.
    """

    def __init__(self) -> None:
        self._heads: dict[str, tuple[list[int], list[int], list[int]]] = {}
        self._other: dict[str, tuple[int, bytes]] = {}

    def set(self, report_id: str, timestamp: int, digest: bytes) -> None:
        """
        Record one report.
        """
        split = split_id(report_id)
        if split is None:
            self._other[report_id] = (timestamp, digest[:8])
            return
        lists = self._heads.get(split[0])
        if lists is None:
            lists = self._heads[split[0]] = ([], [], [])
        lists[0].append(split[1])
        lists[1].append(timestamp)
        lists[2].append(int.from_bytes(digest[:8], "big"))

    def add_head(
        self, head: str, numbers: Iterable[int], stamps: Iterable[int], digests: Iterable[int]
    ) -> None:
        """
        Record many reports C{<head>-<number>} at once (digests as
        big-endian 64-bit numbers).
        """
        lists = self._heads.get(head)
        if lists is None:
            lists = self._heads[head] = ([], [], [])
        lists[0].extend(numbers)
        lists[1].extend(stamps)
        lists[2].extend(digests)

    def into(self, history: ReportHistory) -> None:
        """
        Make C{history} hold what was recorded.
        """
        history._other = dict(self._other)
        history._heads = {}
        if not self._heads:
            return
        import numpy as np

        history._heads = {
            name: _Head(
                np.array(numbers, dtype=np.uint64),
                np.array(stamps, dtype=np.int64),
                np.array(digests, dtype=np.uint64),
            )
            for name, (numbers, stamps, digests) in self._heads.items()
        }

    def history(self) -> ReportHistory:
        """
        What was recorded, as a L{ReportHistory}.
        """
        history = ReportHistory()
        self.into(history)
        return history


def history_from_reports(reports: Iterable[Mapping[str, Any]]) -> ReportHistory:
    """
    Rebuild the history of a published feed from its reports (for example
    the C{reports} of the cached feed file read back after a restart).
    Reports without a string id or a numeric, non-negative timestamp are
    skipped.
    """
    recorder = HistoryRecorder()
    for report in reports:
        report_id = report.get("id")
        timestamp = report.get("timestamp")
        if not isinstance(report_id, str) or isinstance(timestamp, bool):
            continue
        if not isinstance(timestamp, (int, float)) or not timestamp >= 0:
            continue
        try:
            stamp = int(timestamp)
        except (OverflowError, ValueError):
            continue
        recorder.set(report_id, stamp, digest_of(dict(report)))
    return recorder.history()


__all__ = [
    "AnyHistory",
    "HistoryRecorder",
    "ReportHistory",
    "StoredHistory",
    "history_from_reports",
    "resolve",
    "split_id",
]
