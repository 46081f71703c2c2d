# -*- test-case-name: tests.unit.test_simulator -*-
"""
Selections of a listing's items (L{Run}), pages cut across several runs
(L{page_runs}), and changes at the front of a listing (L{Front}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from attrs import field, frozen

from tcbridge.simulator.changes import Changed, patch

if TYPE_CHECKING:
    from tcbridge.simulator.slots import _Listing


@frozen
class Front:
    """
    How the front of one owner and type's listing has changed (see
    L{Dataset.shift_front}).

    :ivar added: how many new items precede the generated ones, the newest
        first.
    :ivar cut: generated items with a lower index are deleted.
    """

    added: int = 0
    cut: int = 0


@frozen
class Run:
    """
    The selected items of one owner and type, in listing order: first the
    inserted items (C{head}), then the generated items of ranks C{lo} to
    C{hi} among those whose slot is in C{mask} (or C{explicit}, when a
    per-item condition applies).
    """

    owner: str
    type: str
    listing: _Listing = field(repr=False, eq=False)
    head: list[int] = field(repr=False)
    mask: tuple[int, ...] = field(repr=False)
    lo: int
    hi: int
    explicit: list[int] | None = field(repr=False)
    #: changed items of the listing, by index (L{tcbridge.simulator.changes})
    changed: dict[int, Changed] | None = field(default=None, repr=False, eq=False)

    def __len__(self) -> int:
        """
        Return how many items the run selects.
        """
        body = self.hi - self.lo if self.explicit is None else len(self.explicit)
        return len(self.head) + body

    def indexes(self, start: int, stop: int) -> Sequence[int]:
        """
        Return the item indexes at positions C{start} to C{stop} (exclusive)
        of the run.
        """
        h = len(self.head)
        out: list[int] = self.head[start:stop] if start < h else []
        a, b = max(start - h, 0), max(stop - h, 0)
        if a >= b:
            return out
        if self.explicit is not None:
            rest: Sequence[int] = self.explicit[a:b]
        else:
            rest = self.listing.indexes(self.mask, self.lo + a, min(self.lo + b, self.hi))
        if not out:
            return rest
        out.extend(rest)
        return out

    def typed(self, start: int, stop: int, tags: bool) -> bytes:
        """
        Return positions C{start} to C{stop} in the v2 per-type form.
        """
        return self._render(
            self.indexes(start, stop), "typed", tags, lambda ix: self.listing.typed_at(ix, tags)
        )

    def generic(self, start: int, stop: int) -> bytes:
        """
        Return positions C{start} to C{stop} in the v2 generic form.
        """
        return self._render(self.indexes(start, stop), "generic", False, self.listing.generic_at)

    def v3(self, start: int, stop: int, tags: bool, assess: bool) -> bytes:
        """
        Return positions C{start} to C{stop} in the v3 form.
        """
        return self._render(
            self.indexes(start, stop), "v3", tags, lambda ix: self.listing.v3(ix, tags, assess)
        )

    def _render(
        self,
        indexes: Sequence[int],
        form: str,
        tags: bool,
        render: Callable[[Sequence[int]], bytes],
    ) -> bytes:
        """
        Items C{indexes} in C{form}, changed ones with their new state.
        """
        changed = self.changed
        if not changed or not any(i in changed for i in indexes):
            return render(indexes)
        parts: list[bytes] = []
        plain: list[int] = []
        for index in indexes:
            state = changed.get(index)
            if state is None:
                plain.append(index)
                continue
            if plain:
                parts.append(render(plain))
                plain = []
            parts.append(patch(render([index]), state, form, tags, self.listing.tag_link))
        if plain:
            parts.append(render(plain))
        return b",".join(parts)


def page_runs(runs: Sequence[Run], start: int, stop: int) -> list[tuple[Run, int, int]]:
    """
    Return C{(run, from, to)} for the parts of the concatenation of C{runs}
    at positions C{start} to C{stop}.
    """
    parts = []
    offset = 0
    for run in runs:
        n = len(run)
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        if lo < hi:
            parts.append((run, lo, hi))
        offset += n
        if offset >= stop:
            break
    return parts
