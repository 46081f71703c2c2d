# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
What every report needs besides its IOCs: how its labels are named in
titles, where its links point, and the counting of what went into the
feed; and the C{max_reports} cut and the report-count warning, which every
grouping applies the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar
from urllib.parse import quote

from tcbridge.model import THREATCONNECT_HOME

from .columns import LabelStore
from .settings import BuildStats, FeedSettings
from .text import http_link, one_line, origin, valid_text

T = TypeVar("T")

#: ThreatConnect type of each IOC kind, for titles and links
TC_TYPE = {"md5": "File", "sha256": "File", "ipv4": "Address", "ipv6": "Address", "dns": "Host"}


class ReportContext:
    """
    The labels of a build and what reports say about them.
    """

    def __init__(
        self, settings: FeedSettings, stats: BuildStats, labels: dict[str, LabelStore]
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.labels = labels
        self._titles = {name: one_line(name) or "(unnamed source)" for name in labels}

    def title_name(self, labels: Iterable[str]) -> str:
        """
        The labels as a title names them: C{"A + B"}.
        """
        return " + ".join(self._titles[label] for label in labels)

    def base_url(self, label: str) -> str:
        """
        The ThreatConnect web UI base for a source's links, without a
        trailing slash: the C{web_url} of its instance, else the site its
        indicators' own links point at, else C{app.threatconnect.com}.
        """
        for prefix, url in self.settings.instance_web_urls:
            if label.startswith(prefix):
                return valid_text(url).rstrip("/")
        if self.settings.web_url:
            return valid_text(self.settings.web_url).rstrip("/")
        store = self.labels.get(label)
        found = [] if store is None else [o for raw in store.origins if (o := origin(raw))]
        return min(found) if found else THREATCONNECT_HOME.rstrip("/")

    def default_link(self, label: str) -> str:
        """
        The link of an Expanded report whose indicator came without one:
        the C{web_url} of its label's instance as written (the main
        instance's for labels of no other instance), else
        C{app.threatconnect.com}.
        """
        url = self.settings.web_url
        for prefix, other in self.settings.instance_web_urls:
            if label.startswith(prefix):
                url = other
                break
        return http_link(url) or THREATCONNECT_HOME

    def group_link(self, labels: Sequence[str], kind: str | None) -> str:
        """
        A best-effort ThreatConnect browse link for a group report: the
        first owner (in its own instance's UI), and the type unless the
        report mixes types.
        """
        label = owner = labels[0]
        for prefix, _ in self.settings.instance_web_urls:
            if label.startswith(prefix):
                owner = label[len(prefix) :]
                break
        owner_text = quote(valid_text(owner), safe="")
        link = f"{self.base_url(label)}/browse/index.xhtml#/?owner={owner_text}"
        if kind is not None:
            link += f"&type={TC_TYPE[kind]}"
        return link

    def count(self, labels: Sequence[str], by_kind: dict[str, int]) -> None:
        """
        Count the IOCs of one published report: per kind, and for each of
        its labels (a shared value counts for each of them).
        """
        stats = self.stats
        total = 0
        for kind, number in by_kind.items():
            stats.iocs_by_kind[kind] = stats.iocs_by_kind.get(kind, 0) + number
            total += number
        for label in labels:
            self.labels[label].counts.iocs += total
        if len(labels) > 1:
            stats.shared_iocs += total

    def warn(self, reports: int) -> None:
        """
        Advise the user when the feed has more reports than Carbon Black
        likes.
        """
        threshold = self.settings.report_warning_threshold
        if reports <= threshold:
            return
        grouping = self.settings.grouping
        if grouping == "Expanded":
            advice = "set ioc_grouping = Condensed"
        elif grouping == "Condensed":
            advice = "set max_reports, or ioc_grouping = MaxCondensed"
        else:
            advice = "set max_reports"
        self.stats.warnings.append(
            f"{reports} reports: Carbon Black advises fewer than {threshold:,} per feed; {advice}"
        )


def cut(
    plan: list[tuple[str, int, int, T]], limit: int | None, stats: BuildStats
) -> list[tuple[str, int, int, T]]:
    """
    Apply C{max_reports} to a plan of C{(id, score, timestamp, what)}: keep
    the highest scores, then the newest, then the smallest ids; return the
    kept ones sorted by id.
    """
    if limit is not None and len(plan) > max(limit, 0):
        plan.sort(key=lambda item: (-item[1], -item[2], item[0]))
        stats.truncated_reports = len(plan) - max(limit, 0)
        del plan[max(limit, 0) :]
    plan.sort(key=lambda item: item[0])
    return plan
