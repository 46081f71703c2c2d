# -*- test-case-name: tests.unit.test_feed_job -*-
"""
One feed build as a job: everything a build needs, written to a file, run
by a child process (C{python -m tcbridge.feed.job JOB OUTCOME}), its
outcome written back to a file.

The service builds this way (see L{tcbridge.childbuild}) so that the
build's CPU runs on the other core, its peak memory is given back to the
system the moment the child exits, and the service itself never imports
numpy: an idle service holds little more than the feed it serves.  Write
mode, and a service without a cache folder, call L{build_feed_file} in
their own process.

A job holds the L{FeedBuilder} with the pages taken in (packed columns,
some tens of megabytes for a million indicators), the report history as a
L{StoredHistory} or itself, and where to write the feed and the built
feed's history.  Files are pickles the service itself wrote in its own
cache folder; nothing else is ever read this way.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from collections.abc import Sequence
from functools import partial
from typing import Final

from attrs import frozen

from tcbridge.feedfile import FeedFile, write_feed_file
from tcbridge.memory import return_freed_memory, reusing_buffers

from .builder import FeedBuilder, FeedValidationError
from .forked import can_fork
from .history import ReportHistory, StoredHistory
from .patch import PatchError
from .settings import BuildStats
from .state import Preloaded, StateJob, apply_state, preload_state

#: Exit status of a child whose job could not even be read.
BAD_JOB: Final = 2

#: The child's first argument when started ahead of its job: it loads what
#: a build needs (and the state file named after it, if any, which a
#: delta's job starts from), then reads the job and outcome paths from
#: stdin (each ended by a NUL byte; none: exit at once).
WAIT: Final = "--wait"


@frozen
class BuildJob:
    """
    One build to run.

    :ivar builder: the builder, pages taken in, not built yet.
    :ivar directory: where the feed's temporary file goes.
    :ivar gzip: also compress the feed (kept in the outcome).
    :ivar pretty: indent the JSON.
    :ivar history_path: where to save the built feed's report history, or
        C{None} not to keep it.
    :ivar state: what to do with collected state (L{tcbridge.feed.state}).
    """

    builder: FeedBuilder
    directory: str
    gzip: bool
    pretty: bool
    history_path: str | None
    state: StateJob | None = None


@frozen
class BuildOutcome:
    """
    What a build gave: the feed file and the build's figures, or why there
    is no feed.

    :ivar feed: the built feed, C{None} if the build failed.
    :ivar stats: the build's figures.
    :ivar problems: validation problems (the feed was not kept).
    :ivar error: any other failure, as text with its traceback.
    :ivar notes: warnings for the log (e.g. a damaged history file).
    :ivar unpatched: why the state asked for could not be used (nothing
        was built; see L{tcbridge.feed.patch}).
    """

    feed: FeedFile | None
    stats: BuildStats
    problems: tuple[str, ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = ()
    unpatched: str | None = None


def build_feed_file(
    builder: FeedBuilder,
    directory: str,
    *,
    gzip: bool,
    pretty: bool,
    fork: bool = False,
    checksums: bool = True,
    state: StateJob | None = None,
    fork_plan: bool = False,
    preloaded: Preloaded | None = None,
) -> FeedFile:
    """
    Build the feed into a new temporary file in C{directory}, checking every
    report as it is written, with its gzip form if asked for.  Blocking.
    With C{fork}, use the second core when this process may fork (see
    L{tcbridge.feed.forked.can_fork}).  Without C{checksums} (write mode,
    which keeps no meta file), the file's SHA-256 and CRC-32 are not worked
    out.  With C{state}, first lay the builder over a kept state and keep
    its own (L{tcbridge.feed.state.apply_state}).  With C{fork_plan} (and
    C{fork}), a grouped feed's reports are worked out on two processes
    before the writing thread starts.

    :raise FeedValidationError: if a report broke a rule (no file is left).
    :raise PatchError: if the state asked for cannot be used.
    """
    if state is not None or preloaded is not None:
        apply_state(builder, state or StateJob(), preloaded)
    forks = fork and can_fork() and builder.settings.grouping == "Expanded"
    with reusing_buffers():
        if fork_plan and fork and not forks:
            builder.plan_ahead(fork=can_fork())
        build = partial(builder.build_to, fork=forks)
        # A build that does not fork writes, checks and compresses beside
        # the rendering, on the other core.
        feed = write_feed_file(
            directory, build, gzip=gzip, pretty=pretty, checksums=checksums, background=not forks
        )
    feed.reports = builder.stats.reports
    feed.iocs = builder.stats.iocs
    return feed


def _usable_history(builder: FeedBuilder) -> tuple[str, ...]:
    """
    Read a stored history into the builder; a damaged one is replaced by an
    empty one (report timestamps restart from the data) and said so.
    """
    history = builder.history
    if not isinstance(history, StoredHistory):
        return ()
    try:
        builder.history = history.load()
    except ValueError as e:
        builder.history = ReportHistory()
        return (f"the report history {history.path} cannot be read ({e}); it starts afresh",)
    return ()


def run_job(
    job: BuildJob, *, fork: bool = False, preloaded: Preloaded | None = None
) -> BuildOutcome:
    """
    Run a build (on two cores with C{fork}, see L{build_feed_file}; from
    the state C{preloaded} if the job names it); every failure becomes part
    of the outcome.
    """
    builder = job.builder
    notes = _usable_history(builder)
    try:
        feed = build_feed_file(
            builder,
            job.directory,
            gzip=job.gzip,
            pretty=job.pretty,
            fork=fork,
            state=job.state,
            # A delta's build (from a kept state) has both cores to itself;
            # a full sync's shares them with the service and its store.
            fork_plan=job.state is not None and job.state.base is not None,
            preloaded=preloaded,
        )
        if job.history_path is not None:
            history = builder.history
            assert isinstance(history, ReportHistory)
            history.save(job.history_path)
    except FeedValidationError as e:
        return BuildOutcome(None, builder.stats, problems=tuple(e.problems), notes=notes)
    except PatchError as e:
        return BuildOutcome(None, builder.stats, notes=notes, unpatched=str(e))
    except Exception:
        return BuildOutcome(None, builder.stats, error=traceback.format_exc(), notes=notes)
    return BuildOutcome(feed, builder.stats, notes=notes)


def write_job(path: str, job: BuildJob) -> None:
    """
    Write a job to C{path} (blocking).
    """
    with open(path, "wb") as f:
        pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_outcome(path: str) -> BuildOutcome:
    """
    Read the outcome a child wrote (blocking).

    :raise ValueError: if the file holds no outcome.
    """
    with open(path, "rb") as f:
        outcome = pickle.load(f)  # noqa: S301 - written by our own child, in our own folder
    if not isinstance(outcome, BuildOutcome):
        raise ValueError(f"{path} holds no build outcome")
    return outcome


def _wait_for_job(state: str | None) -> tuple[list[str], Preloaded | None]:
    """
    Load what a build needs (and the C{state} file its job may start
    from), then the job and outcome paths from stdin (none if it closes
    first).
    """
    import numpy  # noqa: F401 - loaded ahead, like the modules below

    from . import expanded_reports, grouped, patch  # noqa: F401

    preloaded = preload_state(state) if state is not None else None
    parts = sys.stdin.buffer.read().split(b"\0")
    return [os.fsdecode(part) for part in parts[:2]] if len(parts) > 2 else [], preloaded


def main(argv: Sequence[str] | None = None) -> int:
    """
    The child: run the job in C{argv[0]}, write the outcome to C{argv[1]}.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    preloaded = None
    if args[:1] == [WAIT] and len(args) <= 2:
        args, preloaded = _wait_for_job(args[1] if len(args) == 2 else None)
        if not args:
            return 0
    if len(args) != 2:
        print(f"usage: python -m tcbridge.feed.job JOB OUTCOME | {WAIT} [STATE]", file=sys.stderr)
        return BAD_JOB
    return_freed_memory()
    try:
        with open(args[0], "rb") as f:
            job = pickle.load(f)  # noqa: S301 - written by the service, in its own folder
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        print(f"cannot read the build job {args[0]}: {e}", file=sys.stderr)
        return BAD_JOB
    if not isinstance(job, BuildJob):
        print(f"{args[0]} holds no build job", file=sys.stderr)
        return BAD_JOB
    outcome = run_job(job, fork=True, preloaded=preloaded)
    with open(args[1], "wb") as f:
        pickle.dump(outcome, f, protocol=pickle.HIGHEST_PROTOCOL)
    return 0


if __name__ == "__main__":
    # Run as a script, this module is __main__; the job's classes are those
    # of tcbridge.feed.job, so run that module's main.
    from tcbridge.feed import job as _module

    status = _module.main()
    # The outcome is written and closed: end now, without the interpreter
    # freeing a build's worth of objects one by one (tens of milliseconds
    # a delta's sync would wait for).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
