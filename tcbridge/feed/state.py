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

from attrs import frozen

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


@frozen
class Preloaded:
    """
    A state file read ahead of its job (L{preload_state}), with its
    columns' index: used if the job names that file, unchanged since.

    :ivar path: the file.
    :ivar stamp: its identity when read (device, inode, size, mtime).
    :ivar builder: what it holds.
    :ivar index: its columns' index (L{tcbridge.feed.patch.index_collected}).
    """

    path: str
    stamp: tuple[int, ...]
    builder: FeedBuilder
    index: CollectorIndex


def _stamp(path: str) -> tuple[int, ...]:
    found = os.stat(path)
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


def preload_state(path: str) -> Preloaded | None:
    """
    Read the state in C{path} and index its columns ahead of a job that may
    start from it (a build child does while the sync's pull runs); C{None}
    if it cannot be (the job then reads what it names itself).
    """
    try:
        stamp = _stamp(path)
        builder = load_state(path)
        return Preloaded(path, stamp, builder, builder.index())
    except (OSError, PatchError):
        return None


def _base(job: StateJob, preloaded: Preloaded | None) -> tuple[FeedBuilder, CollectorIndex | None]:
    """
    The state C{job} starts from: the one read ahead if it is that file,
    unchanged, else the file read now.
    """
    assert job.base is not None
    if preloaded is not None and preloaded.path == job.base:
        try:
            if _stamp(job.base) == preloaded.stamp:
                return preloaded.builder, preloaded.index
        except OSError:
            pass
    return load_state(job.base), None


def apply_state(builder: FeedBuilder, job: StateJob, preloaded: Preloaded | None = None) -> None:
    """
    Do what C{job} asks before C{builder} builds: lay it over a state (the
    one C{preloaded}, if that is the file the job names), keep the result.
    A state that cannot be written (a full disk) is not kept (its file is
    removed), and the build goes on: the next delta then builds from every
    indicator.

    :raise PatchError: if the state cannot be used (nothing is kept then).
    """
    if job.base is not None:
        if job.minus is None:
            raise PatchError("a state to start from needs what to take out of it")
        base, index = _base(job, preloaded)
        builder.rebase(base, job.minus, index)
    if job.save_to is not None:
        try:
            save_state(job.save_to, builder)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(job.save_to)
