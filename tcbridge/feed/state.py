# -*- test-case-name: tests.unit.test_feed_patch -*-
"""
A build's collected state kept for the next one: the packed columns and
figures a builder took in (not its report history), in a file, so that a
delta sync builds its feed from the last sync's state with the delta's
changes laid over it (L{tcbridge.feed.patch}) instead of taking in every
indicator again.

A build is told what to do with state by a L{StateJob}: start from a
state file, less what one builder took in (the old versions of what the
delta changed) and plus what the build's own builder took in (the new
versions); and keep the result, before building, where the next sync will
look for it.  Whether a state file is the store's content is for the
sync to know (L{tcbridge.sync.base}); here it is only read and written.
State files are pickles the service itself wrote in its own cache
folder; nothing else is ever read this way.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import Final

from attrs import define, frozen

from .builder import FeedBuilder
from .patch import CollectorIndex, PatchError

#: The first item of every state file: a file of another layout is not read.
FORMAT: Final = "tcbridge feed state 1"


@frozen
class StateJob:
    """
    What a build does with collected state besides building.

    :ivar save_to: keep the builder's state here (just before building).
    :ivar base: start from the state in this file...
    :ivar minus: ...less what this builder took in (then add what the
        build's own builder took in).
    """

    save_to: str | None = None
    base: str | None = None
    minus: FeedBuilder | None = None


def save_state(path: str, builder: FeedBuilder) -> None:
    """
    Write what C{builder} took in to C{path} (blocking).  Not synced to
    the disk: a state serves only the deltas of the process that wrote it
    (every start begins with a full sync, which writes a new one), and one
    cut short by a crash cannot be read back (L{load_state} refuses it).
    """
    with open(path, "wb") as f:
        pickle.dump((FORMAT, builder.state()), f, protocol=pickle.HIGHEST_PROTOCOL)


def load_state(path: str) -> FeedBuilder:
    """
    The builder a state file holds (not built yet).

    :raise PatchError: if the file cannot be read or holds no state.
    """
    try:
        with open(path, "rb") as f:
            found = pickle.load(f)  # noqa: S301 - written by the service, in its own folder
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise PatchError(f"the last sync's state {path} cannot be read: {e}") from None
    if (
        not isinstance(found, tuple)
        or len(found) != 2
        or found[0] != FORMAT
        or not isinstance(found[1], FeedBuilder)
    ):
        raise PatchError(f"{path} holds no feed state")
    return found[1]


@define
class Preloaded:
    """
    A state file read ahead of its job (L{preload_state}), with its
    columns' index: used if the job names that file, unchanged since.
    Given up after its job has looked at it (L{take}), used or not, so
    that the build does not hold it.

    :ivar path: the file.
    :ivar stamp: its identity when read (device, inode, size, mtime).
    """

    path: str
    stamp: tuple[int, ...]
    _held: tuple[FeedBuilder, CollectorIndex] | None

    def take(self, path: str | None) -> tuple[FeedBuilder, CollectorIndex] | None:
        """
        What was read, if C{path} is that file, unchanged; nothing is held
        afterwards either way (C{None}: just let it go).
        """
        held, self._held = self._held, None
        if held is None or path is None or path != self.path:
            return None
        try:
            return held if _stamp(path) == self.stamp else None
        except OSError:
            return None


def _stamp(path: str) -> tuple[int, ...]:
    found = os.stat(path)
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


def preload_state(path: str) -> Preloaded | None:
    """
    Read the state in C{path} and index its columns ahead of a job that may
    start from it (a build child does while the sync's pull runs); C{None}
    if it cannot be, for any reason (the job then reads what it names
    itself, and says what is wrong with it).
    """
    try:
        stamp = _stamp(path)
        builder = load_state(path)
        return Preloaded(path, stamp, (builder, builder.index()))
    except Exception:
        return None


def apply_state(builder: FeedBuilder, job: StateJob, preloaded: Preloaded | None = None) -> None:
    """
    Do what C{job} asks before C{builder} builds: lay it over a state (the
    one C{preloaded}, if that is the file the job names), keep the result.
    A state that cannot be written (a full disk) is not kept (its file is
    removed), and the build goes on: the next delta then builds from every
    indicator.

    :raise PatchError: if the state cannot be used (nothing is kept then).
    """
    ahead = preloaded.take(job.base) if preloaded is not None else None
    if job.base is not None:
        if job.minus is None:
            raise PatchError("a state to start from needs what to take out of it")
        base, index = ahead if ahead is not None else (load_state(job.base), None)
        del ahead
        builder.rebase(base, job.minus, index)
        del base, index
    if job.save_to is not None:
        try:
            save_state(job.save_to, builder)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(job.save_to)
