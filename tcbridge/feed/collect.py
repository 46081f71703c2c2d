# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
Taking in pages: indicator batches in, packed columns out.

L{Collector.add} applies the feed's filters to one L{IndicatorBatch} (type,
minimum rating, minimum score), normalises its values with the rules of
L{tcbridge.feed.iocs} (a whole column at a time), drops excluded values,
counts everything it leaves out, and keeps only packed data
(L{tcbridge.feed.columns}): never the batch, never an object per indicator.

Skip reasons, as counted in C{BuildStats.skipped}: per indicator
C{unsupported type <T>}, C{type disabled}, C{below minimum rating},
C{below minimum score}, C{sha1 only (no Carbon Black type)},
C{missing value}, C{invalid ipv4/ipv6}, C{invalid dns}; per value
C{invalid md5}, C{invalid sha256}, C{reserved address}, C{reserved name},
C{private or documentation address} (L{tcbridge.feed.reserved}),
C{excluded} (also per list in C{excluded_by}) and, per indicator, L{AGED_OUT}.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import compress
from typing import Any, Final, Literal

from tcbridge.model import KNOWN_TYPES
from tcbridge.threatconnect.records import IndicatorBatch

from .columns import MAX_TIMESTAMP, KindValues, LabelStore
from .expanded import ExpandedStore
from .filters import Exclusions, indicator_score
from .iocs import classify_ips, normalise_hosts, pack_hashes
from .reserved import PRIVATE_ADDRESS, left_out
from .settings import BuildStats, FeedSettings, SourceCounts
from .text import MAX_TAGS, cb_tags, one_line

_MAX_TYPE_NAME: Final = 40
#: The skip reason of an indicator older than C{max_age_days}.
AGED_OUT: Final = "aged out (max_age_days)"


class Collector:
    """
    Everything a build needs from the pages seen so far.

    :ivar stats: what was received and left out so far.
    :ivar labels: per source label, its counts and (grouped modes) columns.
    :ivar tag_sets: cleaned tag sets by id (id 0: no tags).
    :ivar expanded: the Expanded store (Expanded grouping only).
    """

    def __init__(self, settings: FeedSettings, stats: BuildStats) -> None:
        self.settings = settings
        self.stats = stats
        self.labels: dict[str, LabelStore] = {}
        self.expanded = ExpandedStore() if settings.grouping == "Expanded" else None
        self.tag_sets: list[tuple[str, ...]] = [()]
        self._tag_ids: dict[tuple[str, ...], int] = {(): 0}
        self._tag_memo: dict[tuple[str, ...], int] = {(): 0}
        self._scores: dict[object, int] = {}
        exclusions = settings.exclusions
        self._exclusions: Exclusions | None = exclusions if exclusions else None
        self._enabled = settings.types.intersection(KNOWN_TYPES)

    # -- bookkeeping ------------------------------------------------------

    def label(self, name: str) -> LabelStore:
        """
        The store of one source label, made on first use.
        """
        store = self.labels.get(name)
        if store is None:
            counts = self.stats.per_source.setdefault(name, SourceCounts())
            store = self.labels[name] = LabelStore(name, counts, len(self.labels))
        return store

    def _skip(self, reason: str, count: int = 1) -> None:
        if count:
            skipped = self.stats.skipped
            skipped[reason] = skipped.get(reason, 0) + count

    def tag_id(self, raw: tuple[str, ...]) -> int:
        """
        The id of the cleaned tag set of an indicator's raw tags (0: none).
        """
        found = self._tag_memo.get(raw)
        if found is not None:
            return found
        tag_id = self.tag_set_id(cb_tags(raw)[:MAX_TAGS])
        if len(self._tag_memo) < 65536:
            self._tag_memo[raw] = tag_id
        return tag_id

    def known_tag_set(self, cleaned: tuple[str, ...]) -> int | None:
        """
        The id of a cleaned tag set, if this collector has it.
        """
        return self._tag_ids.get(cleaned)

    def tag_set_id(self, cleaned: tuple[str, ...]) -> int:
        """
        The id of a cleaned tag set (added if new).
        """
        tag_id = self._tag_ids.get(cleaned)
        if tag_id is None:
            tag_id = self._tag_ids[cleaned] = len(self.tag_sets)
            self.tag_sets.append(cleaned)
        return tag_id

    # -- filters ----------------------------------------------------------

    def _score_keys(self, batch: IndicatorBatch) -> Sequence[object]:
        source = self.settings.score_source
        if source == "rating":
            return batch.ratings
        if source == "confidence":
            return batch.confidences
        if source == "threatAssessScore":
            return batch.assess
        return list(zip(batch.ratings, batch.confidences, batch.assess, strict=True))

    def _score_of(self, key: Any) -> int:
        if key.__class__ is tuple:
            rating, confidence, assess = key
        else:
            rating = confidence = assess = key
        return indicator_score(rating, confidence, self.settings.score_source, assess)

    def scores(self, batch: IndicatorBatch) -> list[int]:
        """
        Each indicator's score, memoised on the raw values it comes from
        (except booleans, which compare equal to 0 and 1).
        """
        keys = self._score_keys(batch)
        memo = self._scores
        try:
            distinct = set(keys)
        except TypeError:
            return [self._score_of(key) for key in keys]
        if any(
            k.__class__ is bool or (k.__class__ is tuple and bool in map(type, k)) for k in distinct
        ):
            return [self._score_of(key) for key in keys]
        missing = [key for key in distinct if key not in memo]
        for key in missing:
            if len(memo) < 4096:
                memo[key] = self._score_of(key)
        if any(key not in memo for key in missing):
            return [memo[key] if key in memo else self._score_of(key) for key in keys]
        return list(map(memo.__getitem__, keys))

    def _rated(self, batch: IndicatorBatch, rows: list[int]) -> list[int]:
        minimum = self.settings.min_rating
        if not minimum:
            return rows
        ratings = batch.ratings
        passes: dict[object, bool] = {}
        for rating in set(ratings):
            if rating.__class__ is bool:
                passes = {}
                break
            passes[rating] = (
                isinstance(rating, (int, float)) and not math.isnan(rating) and rating >= minimum
            )
        if passes:
            kept = list(compress(rows, map(passes.__getitem__, [ratings[row] for row in rows])))
        else:
            kept = [row for row in rows if _rated_enough(ratings[row], minimum)]
        self._skip("below minimum rating", len(rows) - len(kept))
        return kept

    def _recent(self, batch: IndicatorBatch, rows: list[int], after: int) -> list[int]:
        """
        The rows modified at or after C{after} (or with no C{lastModified});
        the others are counted as aged out.
        """
        modified = batch.modified
        kept = [row for row in rows if (m := modified[row]) is None or m >= after]
        self._skip(AGED_OUT, len(rows) - len(kept))
        return kept

    # -- taking in a batch -------------------------------------------------

    def add(self, batch: IndicatorBatch) -> None:
        """
        Take in one batch; nothing refers to it afterwards.
        """
        count = len(batch)
        self.stats.indicators += count
        store = self.label(batch.source)
        store.counts.indicators += count
        kind = batch.type
        if kind not in self._enabled:
            if kind in KNOWN_TYPES:
                self._skip("type disabled", count)
            else:
                name = one_line(str(kind))[:_MAX_TYPE_NAME]
                self._skip(f"unsupported type {name}", count)
            return
        rows = self._rated(batch, list(range(count)))
        if self.settings.modified_after is not None and rows:
            rows = self._recent(batch, rows, self.settings.modified_after)
        if not rows:
            return
        scores = self.scores(batch)
        minimum = self.settings.min_score
        if min(scores[row] for row in rows) < minimum:
            kept = [row for row in rows if scores[row] >= minimum]
            self._skip("below minimum score", len(rows) - len(kept))
            rows = kept
        if not rows:
            return
        values = self._values(batch, rows)
        if values:
            self._store(store, batch, rows, [scores[row] for row in rows], values)

    def _values(self, batch: IndicatorBatch, rows: list[int]) -> list[KindValues]:
        """
        The valid, not excluded values of the chosen rows, per IOC kind,
        counting what is left out.
        """
        column = batch.values
        found: list[KindValues] = []
        if batch.type == "File":
            md5 = [column["md5"][row] for row in rows]
            sha256 = [column["sha256"][row] for row in rows]
            pairs: tuple[tuple[Literal["md5", "sha256"], list[Any]], ...] = (
                ("md5", md5),
                ("sha256", sha256),
            )
            for kind, raw in pairs:
                good, packed, bad = pack_hashes(kind, raw)
                self._skip(f"invalid {kind}", len(bad))
                if good:
                    found.append(KindValues(kind, good, packed=packed))
            sha1 = column["sha1"]
            absent = [i for i, pair in enumerate(zip(md5, sha256, strict=True)) if not any(pair)]
            sha1_only = sum(1 for i in absent if sha1[rows[i]])
            self._skip("sha1 only (no Carbon Black type)", sha1_only)
            self._skip("missing value", len(absent) - sha1_only)
        elif batch.type == "Address":
            v4_rows, v4, v6_rows, v6, bad, missing = classify_ips(
                [column["ip"][row] for row in rows]
            )
            self._skip("invalid ipv4/ipv6", len(bad))
            self._skip("missing value", len(missing))
            if v4_rows:
                found.append(KindValues("ipv4", v4_rows, texts=v4))
            if v6_rows:
                found.append(KindValues("ipv6", v6_rows, texts=v6))
        else:
            good, names, bad, missing = normalise_hosts([column["host"][row] for row in rows])
            self._skip("invalid dns", len(bad))
            self._skip("missing value", len(missing))
            if good:
                found.append(KindValues("dns", good, texts=names))
        if self.settings.exclude_reserved or self.settings.exclude_private:
            found = [kept for kind in found if (kept := self._unreserved(kind)) is not None]
        if self._exclusions is not None:
            found = [kept for kind in found if (kept := self._exclude(kind)) is not None]
        return found

    def _unreserved(self, values: KindValues) -> KindValues | None:
        """
        C{values} without reserved (and, if asked, private) ones; C{None}
        if none is left.
        """
        if values.kind not in ("ipv4", "ipv6", "dns"):
            return values
        settings = self.settings
        reasons = left_out(values.kind, values.text_list(), settings.exclude_private)
        if not any(reasons):
            return values
        if not settings.exclude_reserved:
            reasons = [r if r == PRIVATE_ADDRESS else None for r in reasons]
        keep = [position for position, reason in enumerate(reasons) if reason is None]
        for reason in reasons:
            if reason is not None:
                self._skip(reason)
        if len(keep) == len(reasons):
            return values
        return values.subset(keep) if keep else None

    def _exclude(self, values: KindValues) -> KindValues | None:
        """
        C{values} without those an exclusion list names; C{None} if none is
        left.
        """
        assert self._exclusions is not None
        match = self._exclusions.match
        kind = values.kind
        texts = values.text_list()
        keep: list[int] = []
        excluded_by = self.stats.excluded_by
        for position, text in enumerate(texts):
            name = match(kind, text)
            if name is None:
                keep.append(position)
            else:
                excluded_by[name] = excluded_by.get(name, 0) + 1
        self._skip("excluded", len(texts) - len(keep))
        if len(keep) == len(texts):
            return values
        return values.subset(keep) if keep else None

    def _store(
        self,
        store: LabelStore,
        batch: IndicatorBatch,
        rows: list[int],
        scores: list[int],
        values: list[KindValues],
    ) -> None:
        """
        Keep the values of the chosen rows (positions in C{values} refer to
        C{rows}), packed.
        """
        modified = batch.modified
        stamps = _timestamps([modified[row] for row in rows])
        raw_tags = batch.tags
        tag_id = self.tag_id
        tags = [0 if not (raw := raw_tags[row]) else tag_id(raw) for row in rows]
        if self.expanded is not None:
            self.expanded.add(store, batch, rows, scores, stamps, tags, values)
            return
        meta = [stamp << 7 | score for stamp, score in zip(stamps, scores, strict=True)]
        for kind_values in values:
            store.column(kind_values.kind).append(kind_values, meta, tags)
        if not self.settings.web_url:
            used = _used_positions(values, len(rows))
            links = batch.links
            if len(used) != len(links):
                links = [links[rows[position]] for position in used]
            store.add_origins(links)


def _rated_enough(rating: object, minimum: float) -> bool:
    return (
        rating.__class__ is not bool
        and isinstance(rating, (int, float))
        and not math.isnan(rating)
        and rating >= minimum
    )


def _timestamps(raw: list[Any]) -> list[int]:
    """
    Report timestamps from C{lastModified}: 0 when missing, capped at
    L{MAX_TIMESTAMP}.
    """
    if raw and set(map(type, raw)) == {int} and min(raw) > 0 and max(raw) < MAX_TIMESTAMP:
        return raw
    return [
        (stamp if stamp < MAX_TIMESTAMP else MAX_TIMESTAMP)
        if stamp.__class__ is int and stamp > 0
        else 0
        for stamp in raw
    ]


def _used_positions(values: Iterable[KindValues], count: int) -> list[int]:
    """
    The positions (in order) that kept at least one value.
    """
    used: set[int] = set()
    for kind_values in values:
        used.update(kind_values.positions)
    if len(used) == count:
        return list(range(count))
    return sorted(used)
