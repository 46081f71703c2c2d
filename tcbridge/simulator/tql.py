# -*- test-case-name: tests.unit.test_simulator_v3 -*-
"""
A small subset of ThreatConnect Query Language (TQL), as the simulator's
C{/v3/indicators?tql=} understands it.

Grammar (keywords and field names are case-insensitive)::

    query  := term (AND term)*              (empty: no condition)
            | term (OR term)+
    term   := clause | "(" query ")"
    clause := field op value
            | field [NOT] IN "(" value ("," value)* ")"
    op     := EQ | NE | GT | GEQ | GE | LT | LEQ | LE | = | != | > | >= | < | <=
    value  := "double-quoted string" | number | true | false

Strings are in double quotes; a backslash escapes the next character.
C{OR} joins only clauses on one field that take C{IN}, each with C{EQ} or
C{IN}: C{(indicatorActive EQ true OR indicatorActive EQ false)} is read as
one C{IN} condition.  Any other C{OR}, C{AND} and C{OR} mixed without
parentheses, unknown fields, operators a field does not take and values of
the wrong kind are refused: L{parse} raises L{TqlError} with a message
naming the problem (the simulator answers 400).

Fields:

  - C{typeName} (EQ, NE, IN, NOT IN): the indicator type, case-insensitive.
  - C{ownerName} (EQ, NE, IN, NOT IN): the owner name, exact.
  - C{rating}, C{confidence} (comparisons): items with no rating (or no
    confidence) never match a condition on it.
  - C{indicatorActive} (EQ, NE; C{true} or C{false}; both, joined by
    C{OR}, for active and inactive items alike).
  - C{dateAdded}, C{lastModified} (comparisons) against
    C{"YYYY-MM-DD"}, C{"YYYY-MM-DD HH:MM:SS"} or ISO 8601 (zone-less: UTC).
  - C{tag} (EQ, NE, IN, NOT IN): the item has (EQ, IN) or has not (NE,
    NOT IN) one of the tags; exact names.
  - C{summary} (EQ, NE, IN, NOT IN): the generic summary, exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from attrs import frozen

from tcbridge.simulator.slots import Slot
from tcbridge.simulator.tables import TYPES

__all__ = ["Condition", "Plan", "TqlError", "parse", "plan"]


class TqlError(ValueError):
    """
    The TQL text is outside the supported subset or malformed.
    """


#: A parsed value: a string, a number, a boolean or epoch seconds (dates).
Value = str | float | bool


@frozen
class Condition:
    """
    One clause of a query.

    :ivar field: the canonical field name, e.g. C{"typeName"}.
    :ivar op: C{"EQ"}, C{"NE"}, C{"GT"}, C{"GE"}, C{"LT"}, C{"LE"},
        C{"IN"} or C{"NOT IN"}.
    :ivar values: one value, or the C{IN} list; dates as epoch seconds.
    """

    field: str
    op: str
    values: tuple[Value, ...]


_STRING_FIELDS: Final = ("typeName", "ownerName", "tag", "summary")
_NUMBER_FIELDS: Final = ("rating", "confidence")
_DATE_FIELDS: Final = ("dateAdded", "lastModified")
_BOOL_FIELDS: Final = ("indicatorActive",)
_FIELDS: Final = {
    name.lower(): name for name in (*_STRING_FIELDS, *_NUMBER_FIELDS, *_DATE_FIELDS, *_BOOL_FIELDS)
}

_OPS: Final = {
    "eq": "EQ",
    "=": "EQ",
    "ne": "NE",
    "!=": "NE",
    "gt": "GT",
    ">": "GT",
    "geq": "GE",
    "ge": "GE",
    ">=": "GE",
    "lt": "LT",
    "<": "LT",
    "leq": "LE",
    "le": "LE",
    "<=": "LE",
}
_COMPARISONS: Final = frozenset(("EQ", "NE", "GT", "GE", "LT", "LE"))
_SET_OPS: Final = frozenset(("EQ", "NE", "IN", "NOT IN"))

_TOKEN: Final = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<num>-?\d+(?:\.\d+)?)
      | (?P<op>>=|<=|!=|=|>|<)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE | re.DOTALL,
)
_UNESCAPE: Final = re.compile(r"\\(.)", re.DOTALL)


def _tokens(text: str) -> list[tuple[str, str]]:
    """
    Split C{text} into C{(kind, text)} tokens.

    :raises TqlError: at a character no token starts with.
    """
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            rest = text[pos:].lstrip()
            what = "unterminated string" if rest.startswith('"') else f"unexpected {rest[:20]!r}"
            raise TqlError(f"Invalid TQL: {what} at position {pos}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _date(text: str) -> float:
    """
    Parse a TQL date as epoch seconds; zone-less means UTC.

    :raises TqlError: for anything else.
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise TqlError(f"Invalid TQL: {text!r} is not a date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class _Parser:
    """
    A recursive-descent parser over the tokens of one query.
    """

    def __init__(self, text: str) -> None:
        """
        Tokenise C{text}.
        """
        self._tokens = _tokens(text)
        self._pos = 0

    def _next(self, expected: str) -> tuple[str, str]:
        """
        Consume and return the next token.

        :raises TqlError: at the end of the text.
        """
        if self._pos >= len(self._tokens):
            raise TqlError(f"Invalid TQL: {expected} expected at the end of the query")
        token = self._tokens[self._pos]
        self._pos += 1
        return token

    def _peek_word(self) -> str | None:
        """
        Return the next token's text, lower case, if it is a word.
        """
        if self._pos < len(self._tokens) and self._tokens[self._pos][0] == "word":
            return self._tokens[self._pos][1].lower()
        return None

    def query(self) -> tuple[Condition, ...]:
        """
        Parse the whole query.
        """
        if not self._tokens:
            return ()
        conditions = self._terms(closing=False)
        return tuple(conditions)

    def _terms(self, closing: bool) -> list[Condition]:
        """
        Terms joined by AND, or by OR (see L{_either}), up to the end (or,
        C{closing}, a C{)}).
        """
        terms = [self._term()]
        joins: set[str] = set()
        while self._pos < len(self._tokens):
            kind, text = self._next("AND")
            if kind == "word" and text.lower() in ("and", "or"):
                joins.add(text.lower())
                if len(joins) > 1:
                    raise TqlError("Invalid TQL: AND and OR mixed; group them with parentheses")
                terms.append(self._term())
            elif closing and kind == "punct" and text == ")":
                return _either(terms) if "or" in joins else [c for t in terms for c in t]
            else:
                raise TqlError(f"Invalid TQL: AND expected, found {text!r}")
        if closing:
            raise TqlError("Invalid TQL: ) expected at the end of the query")
        return _either(terms) if "or" in joins else [c for t in terms for c in t]

    def _term(self) -> list[Condition]:
        """
        One clause, or a group of them in parentheses.
        """
        if self._pos < len(self._tokens) and self._tokens[self._pos] == ("punct", "("):
            self._pos += 1
            return self._terms(closing=True)
        return [self._clause()]

    def _clause(self) -> Condition:
        """
        Parse C{field op value} or C{field [NOT] IN (...)}.
        """
        kind, text = self._next("a field name")
        if kind != "word":
            raise TqlError(f"Invalid TQL: a field name expected, found {text!r}")
        field = _FIELDS.get(text.lower())
        if field is None:
            raise TqlError(f"Invalid TQL: unknown field {text!r}")
        kind, text = self._next("an operator")
        op = text.lower()
        if kind == "word" and op == "not":
            if self._peek_word() != "in":
                raise TqlError(f"Invalid TQL: IN expected after NOT for {field}")
            self._pos += 1
            op = "NOT IN"
        elif kind == "word" and op == "in":
            op = "IN"
        elif op in _OPS and kind in ("word", "op"):
            op = _OPS[op]
        else:
            raise TqlError(f"Invalid TQL: unknown operator {text!r} for {field}")
        if op in ("IN", "NOT IN"):
            values = self._list(field)
        else:
            values = (self._value(field),)
        allowed = _SET_OPS if field in _STRING_FIELDS else _COMPARISONS
        if field in _BOOL_FIELDS:
            allowed = frozenset(("EQ", "NE"))
        if op not in allowed:
            raise TqlError(f"Invalid TQL: operator {op} is not supported for {field}")
        return Condition(field, op, values)

    def _list(self, field: str) -> tuple[Value, ...]:
        """
        Parse C{(value, value...)}.
        """
        _, text = self._next("(")
        if text != "(":
            raise TqlError(f"Invalid TQL: ( expected after IN for {field}")
        values = [self._value(field)]
        while True:
            _, text = self._next(") or ,")
            if text == ")":
                return tuple(values)
            if text != ",":
                raise TqlError(f"Invalid TQL: , or ) expected in the IN list of {field}")
            values.append(self._value(field))

    def _value(self, field: str) -> Value:
        """
        Parse one value of the kind C{field} takes.
        """
        kind, text = self._next(f"a value for {field}")
        if field in _STRING_FIELDS or field in _DATE_FIELDS:
            if kind != "str":
                raise TqlError(f"Invalid TQL: {field} takes a double-quoted string, not {text!r}")
            value = _UNESCAPE.sub(r"\1", text[1:-1])
            return _date(value) if field in _DATE_FIELDS else value
        if field in _NUMBER_FIELDS:
            if kind != "num":
                raise TqlError(f"Invalid TQL: {field} takes a number, not {text!r}")
            return float(text)
        if kind == "word" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise TqlError(f"Invalid TQL: {field} takes true or false, not {text!r}")


def _either(terms: list[list[Condition]]) -> list[Condition]:
    """
    Terms joined by OR, as the one C{IN} condition they amount to.

    :raises TqlError: unless every term is one C{EQ} or C{IN} clause on
        the same field, a field that takes C{IN} (or C{indicatorActive}).
    """
    fields = {c.field for term in terms for c in term}
    field = fields.pop() if len(fields) == 1 else None
    if field not in (*_STRING_FIELDS, *_BOOL_FIELDS) or any(
        len(term) != 1 or term[0].op not in ("EQ", "IN") for term in terms
    ):
        raise TqlError("Invalid TQL: OR only joins EQ or IN conditions on one field that takes IN")
    values = tuple(dict.fromkeys(v for term in terms for v in term[0].values))
    return [Condition(field, "IN", values)]


def parse(text: str) -> tuple[Condition, ...]:
    """
    Parse TQL C{text} into its AND-ed conditions (none for blank text).

    :raises TqlError: outside the supported subset; the message names the
        problem.
    """
    return _Parser(text).query()


def compare(op: str, left: float, right: float) -> bool:
    """
    Apply comparison C{op} (C{"EQ"}, C{"NE"}, C{"GT"}...) to two numbers.
    """
    if op == "EQ":
        return left == right
    if op == "NE":
        return left != right
    if op == "GT":
        return left > right
    if op == "GE":
        return left >= right
    if op == "LT":
        return left < right
    return left <= right


@frozen
class Plan:
    """
    What a query selects, split the way the simulator serves it.

    :ivar types: the type names allowed, canonical.
    :ivar owner_conditions: the C{ownerName} conditions.
    :ivar active: the C{active} values allowed (only C{True} when the query
        says nothing about C{indicatorActive}: ThreatConnect's default).
    :ivar slot_conditions: conditions on per-slot attributes.
    :ivar item_conditions: conditions on each item (the summary).
    """

    types: tuple[str, ...]
    owner_conditions: tuple[Condition, ...]
    active: frozenset[bool]
    slot_conditions: tuple[Condition, ...]
    item_conditions: tuple[Condition, ...]

    @property
    def slot_key(self) -> object:
        """
        A hashable name for L{slot_test}.
        """
        return ("tql", self.active, self.slot_conditions)

    @property
    def item_key(self) -> object:
        """
        A hashable name for L{item_test}.
        """
        return self.item_conditions

    def owners(self, scope: Sequence[str]) -> list[str]:
        """
        Return the owners of C{scope} that pass the C{ownerName} conditions.
        """
        return [o for o in scope if all(_in_set(c, o) for c in self.owner_conditions)]

    def slot_test(self, slot: Slot) -> bool:
        """
        Say whether items of C{slot} pass the per-slot conditions.
        """
        if slot.active not in self.active:
            return False
        for c in self.slot_conditions:
            if c.field == "tag":
                names = set(slot.tag_names)
                hit = any(v in names for v in c.values)
                if hit == (c.op in ("NE", "NOT IN")):
                    return False
                continue
            value: float | None
            if c.field == "rating":
                value = slot.rating
            elif c.field == "confidence":
                value = slot.confidence
            elif c.field == "dateAdded":
                value = slot.added
            else:
                value = slot.modified
            if value is None or not compare(c.op, value, float(c.values[0])):
                return False
        return True

    def item_test(self) -> Callable[[str], bool] | None:
        """
        Return a test of an item's summary, or C{None} if there is no
        per-item condition.
        """
        if not self.item_conditions:
            return None
        conditions = self.item_conditions
        return lambda summary: all(_in_set(c, summary) for c in conditions)


def _in_set(c: Condition, value: str) -> bool:
    """
    Apply an EQ, NE, IN or NOT IN condition to a string.
    """
    hit = value in c.values
    return not hit if c.op in ("NE", "NOT IN") else hit


def plan(conditions: Sequence[Condition]) -> Plan:
    """
    Turn parsed conditions into a L{Plan}.
    """
    canonical = {t.lower(): t for t in TYPES}
    types = list(TYPES)
    active = {True, False}
    seen_active = False
    owners: list[Condition] = []
    slots: list[Condition] = []
    items: list[Condition] = []
    for c in conditions:
        if c.field == "typeName":
            named = {canonical.get(str(v).lower(), "") for v in c.values}
            keep = c.op not in ("NE", "NOT IN")
            types = [t for t in types if (t in named) == keep]
        elif c.field == "ownerName":
            owners.append(c)
        elif c.field == "indicatorActive":
            seen_active = True
            flags = {bool(v) for v in c.values}
            active &= flags if c.op in ("EQ", "IN") else {True, False} - flags
        elif c.field == "summary":
            items.append(c)
        else:
            slots.append(c)
    return Plan(
        types=tuple(types),
        owner_conditions=tuple(owners),
        active=frozenset(active if seen_active else {True}),
        slot_conditions=tuple(slots),
        item_conditions=tuple(items),
    )
