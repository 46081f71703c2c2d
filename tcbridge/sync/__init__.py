"""
Syncing: the cycle (pull every source, build and validate the feed into a
file: L{cycle}), publishing it as one step (shrink guard, cache files,
swap, Carbon Black sync: L{publish}), the timer and write mode that run
cycles (L{service}), what a cycle works with (L{work}) and why one
published nothing (L{errors}).
"""

from tcbridge.sync.cycle import SyncCycle
from tcbridge.sync.errors import (
    FeedHeldBackError,
    FeedInvalidError,
    SyncDeadlineError,
    describe_failure,
)
from tcbridge.sync.publish import ACCEPT_SHRINK_FILE, Publisher, accept_marker
from tcbridge.sync.service import WriteOnceService, sync_timer, write_feed
from tcbridge.sync.work import (
    BuildFeed,
    RunHeavy,
    as_of,
    feed_settings,
    pull_options,
    run_inline,
)

__all__ = [
    "ACCEPT_SHRINK_FILE",
    "BuildFeed",
    "FeedHeldBackError",
    "FeedInvalidError",
    "Publisher",
    "RunHeavy",
    "SyncCycle",
    "SyncDeadlineError",
    "WriteOnceService",
    "accept_marker",
    "as_of",
    "describe_failure",
    "feed_settings",
    "pull_options",
    "run_inline",
    "sync_timer",
    "write_feed",
]
