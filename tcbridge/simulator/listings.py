# -*- test-case-name: tests.unit.test_simulator -*-
"""
The simulator's listings: the v2 and v3 routes that page through the data
set (with the changes L{Listings.shift} makes to a listing's front, and
next pages built ahead of time), independent of authentication, faults and
recording, which L{tcbridge.simulator.app.Simulator} adds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson
from twisted.internet.defer import Deferred
from twisted.web.server import Request

from tcbridge.simulator import tql
from tcbridge.simulator.changes import Changed, iso
from tcbridge.simulator.data import Dataset
from tcbridge.simulator.params import (
    MSG_ACCESS_DENIED,
    FailureError,
    envelope,
    header,
    modified_since,
    paging,
    parse_time,
    raw_envelope,
    tql_text,
    v2_active,
    wants_count,
    wants_tags,
)
from tcbridge.simulator.runs import Front, Run, page_runs
from tcbridge.simulator.slots import Slot
from tcbridge.simulator.tables import TYPES

#: Runs a page-building function, typically in a thread; see L{Simulator}.
Runner = Callable[[Callable[[], bytes]], "Deferred[bytes]"]


def _active_only(slot: Slot) -> bool:
    """
    Say whether the items of C{slot} are active.
    """
    return slot.active


def _inactive_only(slot: Slot) -> bool:
    """
    Say whether the items of C{slot} are inactive.
    """
    return not slot.active


def _any_slot(slot: Slot) -> bool:
    """
    Accept every slot.
    """
    return True


_V2_VIEWS: Final[dict[frozenset[bool], Callable[[Slot], bool]]] = {
    frozenset((True,)): _active_only,
    frozenset((False,)): _inactive_only,
    frozenset((True, False)): _any_slot,
    frozenset(): lambda slot: False,
}


def _v2_selection(
    active: frozenset[bool], since: int | None
) -> tuple[object, Callable[[Slot], bool]]:
    """
    The v2 selection of items by C{active} flag and, if given, by
    C{lastModified} at or after C{since}: its cache key and slot test.
    """
    view = _V2_VIEWS[active]
    if since is None:
        return ("v2", active), view
    return ("v2", active, since), lambda slot: view(slot) and slot.modified >= since


class Listings:
    """
    The data-serving half of the simulator.
    """

    def __init__(self, dataset: Dataset, prefix: str, prefetch: Runner | None) -> None:
        self._dataset = dataset
        self._prefix = prefix
        self._fronts: dict[tuple[str, str], Front] = {}
        self._served: tuple[str, str] | None = None
        self._prefetch = prefetch
        self._prefetched: tuple[tuple[object, ...], Deferred[bytes]] | None = None

    @property
    def dataset(self) -> Dataset:
        """
        The data set being served.
        """
        return self._dataset

    def shift(self, owner: str, type: str, shift: int) -> None:
        """
        Make C{shift} new items appear at the front of C{owner}'s C{type}
        listing (positive), or the first C{-shift} items of its active
        listing disappear (negative), in every listing that includes them
        (v2 per-type and generic, v3).  This is what the C{"changing"} fault
        does after serving a request.

        New items are active, have fresh ids and values, and come newest
        first.  Deletions take the newest inserted items first, then the
        generated ones in order (inactive ones before a deleted active one go
        too).

        :raises KeyError: for an unknown owner or type.
        """
        front = self._fronts.get((owner, type), Front())
        self._fronts[(owner, type)] = self._dataset.shift_front(owner, type, front, shift)

    def front(self, owner: str, type: str) -> Front:
        """
        Return how the front of C{owner}'s C{type} listing has changed.
        """
        return self._fronts.get((owner, type), Front())

    def visible_count(self, owner: str, type: str, active: bool = True) -> int:
        """
        Return how many active (or inactive) C{type} items of C{owner} the
        listings serve now: L{Dataset.active_count} plus inserted, minus
        deleted items.

        :raises KeyError: for an unknown owner or type.
        """
        test = _active_only if active else _inactive_only
        return len(self._run(owner, type, ("v2", frozenset((active,))), test))

    def _run(
        self,
        owner: str,
        type: str,
        key: object,
        test: Callable[[Slot], bool],
        item_test: Callable[[str], bool] | None = None,
        item_key: object = None,
    ) -> Run:
        """
        Select C{owner}'s C{type} items with the current front.
        """
        front = self._fronts.get((owner, type))
        return self._dataset.run(owner, type, key, test, item_test, front, item_key)

    def _owner(self, params: dict[str, list[str]]) -> str:
        """
        Return the owner a request names, or the default owner.

        :raises FailureError: 403 for an owner the API user cannot see.
        """
        names = params.get("owner")
        if not names:
            return self._dataset.default_owner
        if names[0] not in self._dataset.owners:
            raise FailureError(403, MSG_ACCESS_DENIED)
        return names[0]

    def _owners(self, params: dict[str, list[str]]) -> bytes:
        """
        Serve C{/v2/owners}.
        """
        start, limit = paging(params)
        ds = self._dataset
        owners = [
            {"id": ds.owner_id(name), "name": name, "type": ds.owner_type(name)}
            for name in ds.owners[start : start + limit]
        ]
        return envelope("owner", owners, len(ds.owners), start == 0)

    def _typed(self, params: dict[str, list[str]], type: str, key: str) -> bytes | Deferred[bytes]:
        """
        Serve one page of a per-type listing.
        """
        owner = self._owner(params)
        start, limit = paging(params)
        tags = wants_tags(params)
        active = v2_active(params)
        selection, test = _v2_selection(active, modified_since(params))
        run = self._run(owner, type, selection, test)
        count = len(run)
        self._served = (owner, type)

        def build(at: int) -> bytes:
            return raw_envelope(key, b"[" + run.typed(at, at + limit, tags) + b"]", count, at == 0)

        version = self._dataset.changes.version
        front = self.front(owner, type)
        listing = ("typed", owner, type, limit, tags, selection, front, version)
        return self._page(listing, start, limit, count, build)

    def _generic(self, params: dict[str, list[str]]) -> bytes | Deferred[bytes]:
        """
        Serve one page of the generic (type and summary) listing.
        """
        owner = self._owner(params)
        start, limit = paging(params)
        active = v2_active(params)
        selection, test = _v2_selection(active, modified_since(params))
        runs = [self._run(owner, t, selection, test) for t in TYPES]
        total = sum(len(run) for run in runs)
        self._served = (owner, TYPES[0])

        def build(at: int) -> bytes:
            parts = [run.generic(lo, hi) for run, lo, hi in page_runs(runs, at, at + limit)]
            return raw_envelope("indicator", b"[" + b",".join(parts) + b"]", total, at == 0)

        fronts = tuple(self.front(owner, t) for t in TYPES)
        listing = ("generic", owner, limit, selection, fronts, self._dataset.changes.version)
        return self._page(listing, start, limit, total, build)

    def _v2_deleted(self, params: dict[str, list[str]]) -> bytes:
        """
        Serve one page of C{/v2/indicators/deleted}: an owner's deleted
        items (of C{type}, if given), without ids, C{lastModified} null.
        """
        owner = self._owner(params)
        start, limit = paging(params)
        items = [
            {
                "ownerName": owner,
                "type": type,
                "dateAdded": iso(self._dataset.item_slot(owner, type, index).added),
                "lastModified": None,
                "summary": self._dataset.summary(owner, type, index),
            }
            for type, index, _ in self._deleted(params, owner)
        ]
        return envelope("indicator", items[start : start + limit], len(items), start == 0)

    def _v3_deleted(self, params: dict[str, list[str]]) -> bytes:
        """
        Serve one page of C{/v3/indicators/deleted}: the deleted items of
        C{owner} (without it, of the default owner only, as ThreatConnect
        lists only the API user's organization's), of C{type} if given,
        deleted at or after C{deletedSince} if given.
        """
        start, limit = paging(params)
        owners = [self._owner(params)]
        items = [
            {
                "ownerName": owner,
                "type": type,
                "summary": self._dataset.summary(owner, type, index),
                "dateDeleted": iso(state.deleted_at or 0),
            }
            for owner in owners
            for type, index, state in self._deleted(params, owner)
        ]
        doc: dict[str, Any] = {"data": items[start : start + limit], "status": "Success"}
        if start == 0 and wants_count(params):
            doc["count"] = len(items)
        return orjson.dumps(doc)

    def _deleted(self, params: dict[str, list[str]], owner: str) -> list[tuple[str, int, Changed]]:
        """
        An owner's deleted items that C{type=} and C{deletedSince=} select.
        """
        wanted = params.get("type", [None])[0]
        since = parse_time((params.get("deletedsince") or [""])[0])
        return [
            (type, index, state)
            for type, index, state in self._dataset.changes.deleted(owner, wanted)
            if since is None or (state.deleted_at or 0) >= since
        ]

    def _v3_indicators(self, params: dict[str, list[str]], request: Request, query: str) -> bytes:
        """
        Serve one page of C{/v3/indicators}.
        """
        start, limit = paging(params)
        try:
            conditions = tql.parse(tql_text(params))
        except tql.TqlError as e:
            raise FailureError(400, str(e)) from None
        plan = tql.plan(conditions)
        ds = self._dataset
        if "owner" in params:
            scope = [self._owner(params)]
        elif plan.owner_conditions:
            scope = list(ds.owners)
        else:
            scope = [ds.default_owner]
        item_test = plan.item_test()
        runs = [
            self._run(owner, type, plan.slot_key, plan.slot_test, item_test, plan.item_key)
            for owner in plan.owners(scope)
            for type in plan.types
        ]
        if runs:
            self._served = (runs[0].owner, runs[0].type)
        elif scope and plan.types:
            self._served = (scope[0], plan.types[0])
        fields = {f.strip().lower() for value in params.get("fields", ()) for f in value.split(",")}
        tags, assess = "tags" in fields, "threatassess" in fields
        total = sum(len(run) for run in runs)
        page = page_runs(runs, start, start + limit)
        items = b",".join(run.v3(lo, hi, tags, assess) for run, lo, hi in page)
        path = "/v3/indicators"
        return self._v3_page(items, total, start, limit, params, request, path, query)

    def _v3_owners(self, params: dict[str, list[str]], request: Request, query: str) -> bytes:
        """
        Serve C{/v3/security/owners}.
        """
        start, limit = paging(params)
        ds = self._dataset
        owners = [
            {
                "id": ds.owner_id(name),
                "name": name,
                "type": ds.owner_type(name),
                "ownerRole": "Director",
                "permIndicator": "FULL",
            }
            for name in ds.owners[start : start + limit]
        ]
        items = orjson.dumps(owners)[1:-1]
        total = len(ds.owners)
        path = "/v3/security/owners"
        return self._v3_page(items, total, start, limit, params, request, path, query)

    def _v3_page(
        self,
        items: bytes,
        total: int,
        start: int,
        limit: int,
        params: dict[str, list[str]],
        request: Request,
        path: str,
        query: str,
    ) -> bytes:
        """
        Wrap serialised C{items} in the v3 envelope, with C{count} (asked
        for, at start 0), C{next} and C{prev}.
        """
        out = [b'{"data":[', items, b"]"]
        if start == 0 and wants_count(params):
            out.append(b',"count":%d' % total)
        if limit > 0 and start + limit < total:
            out.append(b',"next":' + orjson.dumps(self._link(request, path, query, start + limit)))
        if start > 0:
            back = max(start - limit, 0)
            out.append(b',"prev":' + orjson.dumps(self._link(request, path, query, back)))
        out.append(b',"status":"Success"}')
        return b"".join(out)

    def _link(self, request: Request, path: str, query: str, start: int) -> str:
        """
        Return the absolute URL of C{path} with the raw C{query}, whose
        C{resultStart} is set to C{start}; scheme and host come from the
        request.
        """
        scheme = "https" if request.isSecure() else "http"
        host = header(request, b"host")
        if not host:
            address = request.getHost()
            host = f"{getattr(address, 'host', '127.0.0.1')}:{getattr(address, 'port', 80)}"
        pieces = []
        placed = False
        for piece in query.split("&") if query else []:
            if unquote_plus(piece.partition("=")[0]).lower() == "resultstart":
                if not placed:
                    pieces.append(f"resultStart={start}")
                    placed = True
                continue
            pieces.append(piece)
        if not placed:
            pieces.append(f"resultStart={start}")
        return f"{scheme}://{host}{self._prefix}{path}?{'&'.join(pieces)}"

    def _page(
        self,
        listing: tuple[object, ...],
        start: int,
        limit: int,
        total: int,
        build: Callable[[int], bytes],
    ) -> bytes | Deferred[bytes]:
        """
        Return page C{build(start)} of C{listing}, from the prefetched page if
        it is that one, and prefetch the next page if a runner is set.
        """
        key = (*listing, start)
        pending, self._prefetched = self._prefetched, None
        body: bytes | Deferred[bytes]
        if pending is not None and pending[0] == key:
            body = pending[1]
            body.addErrback(lambda _: build(start))
        else:
            if pending is not None:
                pending[1].addErrback(lambda _: None)
            body = build(start)
        after = start + limit
        if self._prefetch is not None and limit > 0 and after < total:
            self._prefetched = ((*listing, after), self._prefetch(lambda: build(after)))
        return body
