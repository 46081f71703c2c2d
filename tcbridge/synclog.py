# -*- test-case-name: tests.unit.test_synclog -*-
"""
The record of past syncs: one line of JSON per sync in
C{cache_folder/sync-history.jsonl}, the last L{KEEP} of them, kept across
restarts.  The page draws them (L{tcbridge.web.charts}) and
C{/history.json} serves them.

Each record: when the sync started, how long it took, how many requests
it made, the IOCs of each type in its feed, the change in IOCs from the
previous published feed, its result (C{published}, C{held back} or
C{failed}) and the error in one line.  Appending is one short write; the
file is rewritten (atomically) only when it has grown well past L{KEEP}
lines.  A line that cannot be read is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import orjson
from attrs import asdict, define, field, frozen
from twisted.logger import Logger

from tcbridge.files import write_atomic
from tcbridge.logs import bridge_observer

#: Syncs kept.
KEEP = 500
FILE_NAME = "sync-history.jsonl"


@frozen
class SyncRecord:
    """
    One sync, as the history keeps it.
    """

    started: float
    seconds: float
    result: str
    requests: int = 0
    iocs: int = 0
    iocs_by_type: Mapping[str, int] = field(factory=dict)
    change: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> SyncRecord:
        """
        :raise ValueError: if C{data} is not a record.
        """
        if not isinstance(data, dict):
            raise ValueError("not an object")
        try:
            return cls(
                started=float(data["started"]),
                seconds=float(data["seconds"]),
                result=str(data["result"]),
                requests=int(data.get("requests", 0)),
                iocs=int(data.get("iocs", 0)),
                iocs_by_type={
                    str(kind): int(count)
                    for kind, count in dict(data.get("iocs_by_type", {})).items()
                },
                change=None if data.get("change") is None else int(data["change"]),
                error=None if data.get("error") is None else str(data["error"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(str(e)) from None


@define
class SyncLog:
    """
    The last L{KEEP} sync records, in memory and (with a folder) on disk.
    """

    log = Logger(observer=bridge_observer)

    folder: str | None = None
    records: list[SyncRecord] = field(factory=list)
    _lines: int = field(default=0, init=False)

    @property
    def path(self) -> str | None:
        return None if self.folder is None else os.path.join(self.folder, FILE_NAME)

    def load(self) -> None:
        """
        Read the records kept on disk (a missing file is an empty history).
        """
        path = self.path
        if path is None:
            return
        try:
            with open(path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        except OSError as e:
            self.log.warn("Cannot read the sync history {path}: {error}", path=path, error=str(e))
            return
        records = []
        for line in lines:
            try:
                records.append(SyncRecord.from_json(orjson.loads(line)))
            except (ValueError, orjson.JSONDecodeError):
                continue
        self.records = records[-KEEP:]
        self._lines = len(lines)

    def last_published(self) -> SyncRecord | None:
        """
        The newest record of a published feed.
        """
        for record in reversed(self.records):
            if record.result == "published":
                return record
        return None

    def add(self, record: SyncRecord) -> None:
        """
        Keep C{record}, on disk too; a disk error is logged, never raised.
        """
        self.records.append(record)
        del self.records[:-KEEP]
        path = self.path
        if path is None:
            return
        try:
            if self._lines >= KEEP + KEEP // 5:
                self._rewrite(path)
            else:
                with open(path, "ab") as f:
                    f.write(orjson.dumps(record.to_json()) + b"\n")
                self._lines += 1
        except OSError as e:
            self.log.warn("Cannot write the sync history {path}: {error}", path=path, error=str(e))

    def _rewrite(self, path: str) -> None:
        write_atomic(path, b"".join(orjson.dumps(r.to_json()) + b"\n" for r in self.records))
        self._lines = len(self.records)

    def as_json(self) -> bytes:
        """
        The records, oldest first, as C{/history.json} serves them.
        """
        return orjson.dumps({"syncs": [record.to_json() for record in self.records]})
