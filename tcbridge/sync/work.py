# -*- test-case-name: tests.unit.test_sync -*-
"""
What a sync cycle works with: where heavy steps run (L{RunHeavy}), how a
feed file is built (L{BuildFeed}), and the feed builder's and the pull's
settings made from a configuration.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from attrs import evolve
from twisted.internet import defer

from tcbridge.config import Config, ThreatConnectSettings
from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.filters import Exclusions, parse_exclusion_file
from tcbridge.feed.job import build_feed_file
from tcbridge.feed.state import StateJob
from tcbridge.feedfile import FeedFile
from tcbridge.threatconnect.pull import PullOptions

T = TypeVar("T")

#: Runs a blocking function somewhere that does not stall the reactor (a
#: thread in production; inline in unit tests) and returns a Deferred.
RunHeavy = Callable[..., "defer.Deferred[Any]"]


#: Builds a feed into a temporary file: C{build(builder, directory, *,
#: gzip, pretty, state=None)}; see L{tcbridge.childbuild.ChildBuild}.
BuildFeed = Callable[..., Awaitable[FeedFile]]

#: Gets ready for a build soon, which may start from the given state file
#: (L{tcbridge.childbuild.ChildBuild.warm}); returns what to call if none
#: follows.
WarmBuild = Callable[[str | None], Callable[[], None]]


def run_inline(f: Callable[..., T], *args: Any) -> defer.Deferred[T]:
    """
    A L{RunHeavy} that runs C{f} at once in the caller's thread: for tests and
    for small feeds.
    """
    return defer.maybeDeferred(f, *args)


def build_here(
    builder: FeedBuilder,
    directory: str,
    *,
    gzip: bool,
    pretty: bool,
    state: StateJob | None = None,
) -> defer.Deferred[FeedFile]:
    """
    A L{BuildFeed} for write mode, which serves nothing while it builds:
    in this process, at once, using the second core when the process may
    fork (L{tcbridge.feed.forked}), without the checksums only a published
    feed's meta file needs.
    """
    return defer.maybeDeferred(
        build_feed_file,
        builder,
        directory,
        gzip=gzip,
        pretty=pretty,
        fork=True,
        checksums=False,
        state=state,
    )


def feed_settings(config: Config) -> tuple[FeedSettings, list[str]]:
    """
    The feed builder's settings for a configuration, and the problems found
    in its exclusion files (one line each, C{file:line: ...}; a bad line is
    skipped, never fatal).
    """
    lists = []
    problems: list[str] = []
    for excluded in config.feed.exclusions:
        parsed, bad = parse_exclusion_file(
            excluded.kind, excluded.option, excluded.path, excluded.lines
        )
        lists.append(parsed)
        problems += bad
    settings = FeedSettings(
        grouping=config.feed.grouping,
        types=config.feed.types,
        score_source=config.feed.score_source,
        min_rating=config.feed.min_rating,
        min_score=config.feed.min_score,
        exclude_reserved=config.feed.exclude_reserved,
        exclude_private=config.feed.exclude_private,
        exclusions=Exclusions.of(lists),
        max_reports=config.feed.max_reports,
        web_url=config.threatconnect.web_url,
        instance_web_urls=tuple((tc.label_prefix, tc.web_url) for tc in config.other_instances),
    )
    return settings, problems


def as_of(settings: FeedSettings, config: Config, now: float) -> FeedSettings:
    """
    C{settings} for a sync at C{now}: with C{max_age_days}, indicators last
    modified longer ago than that are left out.
    """
    days = config.feed.max_age_days
    if days is None:
        return settings
    return evolve(settings, modified_after=int(now) - days * 86400)


def pull_options(
    config: Config,
    pause: Callable[[], Awaitable[None]] | None = None,
    instance: ThreatConnectSettings | None = None,
) -> PullOptions:
    """
    How to page through ThreatConnect for a configuration (for one of its
    instances; the main one by default).  On v3 the
    minimum rating goes into the TQL query (filtering on ThreatConnect's
    side; the feed builder applies it again either way), and the ThreatAssess
    score is asked for when scores come from it.
    """
    fields: tuple[str, ...] = ("tags",)
    if config.feed.score_source in ("threatAssessScore", "max"):
        fields += ("threatAssess",)
    tc = config.threatconnect if instance is None else instance
    return PullOptions(
        api_version=tc.api_version,
        page_size=tc.page_size,
        label_prefix=tc.label_prefix,
        types=config.feed.types,
        min_rating=config.feed.min_rating,
        fields=fields,
        pause=pause,
    )
