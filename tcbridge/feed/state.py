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
from .patch import PatchError

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


def apply_state(builder: FeedBuilder, job: StateJob) -> None:
    """
    Do what C{job} asks before C{builder} builds: lay it over a state, keep
    the result.  A state that cannot be written (a full disk) is not kept
    (its file is removed), and the build goes on: the next delta then
    builds from every indicator.

    :raise PatchError: if the state cannot be used (nothing is kept then).
    """
    if job.base is not None:
        if job.minus is None:
            raise PatchError("a state to start from needs what to take out of it")
        builder.rebase(load_state(job.base), job.minus)
    if job.save_to is not None:
        try:
            save_state(job.save_to, builder)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(job.save_to)
