"""Runflow's ``q`` filter language: one parser and evaluator for the sandbox, sinks and alerts.

Grammar (AND binds tighter than OR; there is no implicit AND)::

    or    := and ("OR" and)*
    and   := unary ("AND" unary)*
    unary := "NOT" unary | "(" or ")" | field op value

Operators are ``:``/``=`` (equality), ``!=``, ``>``, ``<``, ``>=``, ``<=``, plus the
``field.EQ:'value'`` form Runflow's own client writes (``.NE:``, ``.GT:``, ``.GTE:``/``.GE:``,
``.LT:``, ``.LTE:``/``.LE:``). Values are bare, ``"double"`` or ``'single'`` quoted.

A query is parsed and compiled to closures once; matching an entry then only does work on the
entry side, because the sandbox runs one filter over hundreds of thousands of entries.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from operator import eq, ge, gt, le, lt
from typing import Any, Final, TypeAlias

from runflow_tail.times import _FAST_INSTANT, TimeValueError, parse_instant, parse_timestamp

__all__ = ["Filter", "FilterSyntaxError", "parse_filter"]

Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
# Greedy over every operator-ish character so that `==` or `=>` is reported as one unknown
# operator instead of silently becoming `=` followed by a value starting with `=`.
_OP_RUN = re.compile(r"[!=<>:~]+")
_KEYWORD = re.compile(r"(AND|OR|NOT)(?=[\s()]|\Z)")
_BARE = re.compile(r"[^\s()]+")
# [0-9] rather than \d: twice as fast, and other digits still reach parse_instant below.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_OPS: Final = {":": "=", "=": "=", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}
_SUFFIX_OPS: Final = dict(EQ="=", NE="!=", GT=">", GTE=">=", GE=">=", LT="<", LTE="<=", LE="<=")
_OP_LIST: Final = ":, =, !=, >, <, >=, <="
_RANGE_OPS: Final = frozenset({">", "<", ">=", "<="})
_CMP: Final[dict[str, Callable[[Any, Any], bool]]] = {"=": eq, ">": gt, "<": lt, ">=": ge, "<=": le}
_ESCAPABLE: Final = frozenset("\\\"'")
# Each level costs three parser frames and one compiler frame; this keeps far below
# Python's recursion limit while allowing any expression a person would write.
_MAX_DEPTH: Final = 100
_MISSING: Final = object()


class FilterSyntaxError(ValueError):
    """A filter that cannot be parsed: ``column`` is 1-based, ``reason`` says what was expected."""

    def __init__(self, text: str, column: int, reason: str) -> None:
        self.text = text
        self.column = column
        self.reason = reason
        # Control characters are blanked one-for-one so the message stays on one line and
        # the column still lines up with the text shown.
        shown = "".join(ch if ch.isprintable() else " " for ch in text)
        super().__init__(f"invalid filter at column {column}: {reason} (in: {shown})")

    def __reduce__(self) -> tuple[type[FilterSyntaxError], tuple[str, int, str]]:
        return (type(self), (self.text, self.column, self.reason))


@dataclasses.dataclass(frozen=True, slots=True)
class _Literal:
    text: str
    bare: bool
    instant: int | None
    number: int | float | None
    boolean: bool | None
    is_null: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _Compare:
    field: str
    op: str
    literal: _Literal


@dataclasses.dataclass(frozen=True, slots=True)
class _Not:
    child: _Node


@dataclasses.dataclass(frozen=True, slots=True)
class _Chain:
    keyword: str  # "AND" or "OR"
    children: tuple[_Node, ...]


_Node: TypeAlias = "_Compare | _Not | _Chain"


def _literal(text: str, *, bare: bool) -> _Literal:
    try:
        instant: int | None = parse_instant(text)
    except TimeValueError:
        instant = None
    number: int | float | None = None
    if _NUMBER.fullmatch(text):
        # Integers stay integers: a float would lose precision on nanosecond counts.
        number = float(text) if any(c in text for c in ".eE") else int(text)
    lowered = text.lower()
    boolean = True if lowered == "true" else False if lowered == "false" else None
    # Only bare `null` means "no value": a quoted 'null' is the four-letter string.
    return _Literal(text, bare, instant, number, boolean, bare and text == "null")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.open_parens: list[int] = []
        self.depth = 0

    def error(self, index: int, reason: str) -> FilterSyntaxError:
        return FilterSyntaxError(self.text, index + 1, reason)

    def skip_ws(self) -> None:
        rest = self.text[self.pos :]
        self.pos += len(rest) - len(rest.lstrip())

    def keyword(self) -> str | None:
        match = _KEYWORD.match(self.text, self.pos)
        return match.group(1) if match else None

    def token(self, index: int) -> str:
        if self.text[index] in "()":
            return self.text[index]
        match = _BARE.match(self.text, index)
        word = match.group() if match else self.text[index]
        return word if len(word) <= 20 else word[:20] + "..."

    def parse(self) -> _Node:
        node = self.parse_or(None)
        self.skip_ws()
        if self.pos < len(self.text):
            raise self.unexpected()
        return node

    def parse_or(self, after: tuple[str, int] | None) -> _Node:
        return self.parse_chain("OR", self.parse_and, after)

    def parse_and(self, after: tuple[str, int] | None) -> _Node:
        return self.parse_chain("AND", self.parse_unary, after)

    def parse_chain(
        self, keyword: str, part: Callable[[tuple[str, int] | None], _Node], after: Any
    ) -> _Node:
        children = [part(after)]
        while True:
            self.skip_ws()
            if self.keyword() != keyword:
                break
            self.pos += len(keyword)
            children.append(part((keyword, self.pos)))
        if len(children) == 1:
            return children[0]
        # Flattening makes `(a AND b) AND c` one conjunction: timestamp_lower_bound relies on it.
        flat: list[_Node] = []
        for child in children:
            same = isinstance(child, _Chain) and child.keyword == keyword
            flat.extend(child.children if isinstance(child, _Chain) and same else (child,))
        return _Chain(keyword, tuple(flat))

    def parse_unary(self, after: tuple[str, int] | None) -> _Node:
        """Parse one condition; ``after`` is the token just before it and where it ends."""
        self.skip_ws()
        text, start = self.text, self.pos
        keyword = self.keyword()
        if keyword == "NOT":
            self.pos += 3
            self.enter(start)
            node: _Node = _Not(self.parse_unary(("NOT", self.pos)))
            self.depth -= 1
            return node
        if start >= len(text) or keyword is not None or text[start] == ")":
            if start < len(text) and text[start] == ")":
                if not self.open_parens:
                    raise self.error(start, "unbalanced parentheses: ')' has no matching '('")
                if after is not None and after[0] == "(":
                    raise self.error(after[1] - 1, "empty group '()'; expected a condition")
            if after is None:
                raise self.error(start, f"expected a condition, found '{self.token(start)}'")
            raise self.error(after[1] - 1, f"expected a condition after '{after[0]}'")
        if text[start] == "(":
            self.pos += 1
            self.enter(start)
            self.open_parens.append(start)
            node = self.parse_or(("(", self.pos))
            self.skip_ws()
            if self.pos >= len(text):
                raise self.error(start, "unbalanced parentheses: '(' is never closed")
            if text[self.pos] != ")":
                raise self.unexpected()
            self.pos += 1
            self.open_parens.pop()
            self.depth -= 1
            return node
        return self.parse_comparison()

    def enter(self, index: int) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(index, f"nested too deeply (more than {_MAX_DEPTH} levels)")

    def unexpected(self) -> FilterSyntaxError:
        """The error for input left over after a complete condition."""
        pos, text = self.pos, self.text
        found = self.token(pos)
        if text[pos] == ")":
            return self.error(pos, "unbalanced parentheses: ')' has no matching '('")
        if text[pos] == "(" or _FIELD.match(text, pos):
            hint = " (AND, OR and NOT are uppercase)" if found.lower() in ("and", "or") else ""
            return self.error(
                pos,
                f"expected AND or OR before '{found}'; conditions are not joined implicitly" + hint,
            )
        if self.open_parens:
            column = self.open_parens[-1] + 1
            return self.error(pos, f"expected ')' to close '(' at column {column}, found '{found}'")
        return self.error(pos, f"expected AND, OR or the end of the filter, found '{found}'")

    def parse_comparison(self) -> _Compare:
        text, start = self.text, self.pos
        match = _FIELD.match(text, start)
        if match is None:
            raise self.error(start, f"expected a field name, found '{self.token(start)}'")
        name = match.group()
        self.pos = match.end()
        self.skip_ws()
        op_match = _OP_RUN.match(text, self.pos)
        head, _, suffix = name.rpartition(".")
        if head and suffix.upper() in _SUFFIX_OPS and op_match and op_match.group() == ":":
            # Runflow's own client form `client_ref.EQ:'value'`; only taken when the colon
            # follows, so a plain field whose last segment is `ne` or `gt` still works as `x.ne=1`.
            op, op_text, name = _SUFFIX_OPS[suffix.upper()], f".{suffix}:", head
        elif op_match is None:
            raise self.error(match.end() - 1, f"expected an operator ({_OP_LIST}) after '{name}'")
        elif op_match.group() not in _OPS:
            raise self.error(
                op_match.start(),
                f"unknown operator '{op_match.group()}'; expected one of {_OP_LIST}",
            )
        else:
            op, op_text = _OPS[op_match.group()], op_match.group()
        self.pos = op_match.end()
        self.skip_ws()
        # A missing value points at the operator that lacks it, not at whatever follows.
        return _Compare(name, op, self.parse_value(op_text, op_match.end() - 1))

    def parse_value(self, op_text: str, op_last: int) -> _Literal:
        text, start = self.text, self.pos
        if start >= len(text) or text[start] in "()" or self.keyword() is not None:
            raise self.error(op_last, f"expected a value after '{op_text}'")
        quote = text[start]
        if quote not in "\"'":
            match = _BARE.match(text, start)
            assert match is not None
            self.pos = match.end()
            return _literal(match.group(), bare=True)
        chars: list[str] = []
        pos = start + 1
        while pos < len(text):
            char = text[pos]
            # Only quotes and backslash are escapes, so a Windows path like C:\tmp survives.
            if char == "\\" and pos + 1 < len(text) and text[pos + 1] in _ESCAPABLE:
                chars.append(text[pos + 1])
                pos += 2
            elif char == quote:
                break
            else:
                chars.append(char)
                pos += 1
        else:
            raise self.error(start, f"unterminated quoted value: no closing {quote}")
        self.pos = pos + 1
        if self.pos < len(text) and not text[self.pos].isspace() and text[self.pos] not in "()":
            raise self.error(
                self.pos,
                f"expected a space, ')' or the end after the closing {quote}, "
                f"found '{self.token(self.pos)}'",
            )
        return _literal("".join(chars), bare=False)


def _entry_instant(value: str) -> int | None:
    """``parse_instant(value)``, or None if it is not an instant; usual shapes go fast."""
    try:
        if _FAST_INSTANT.fullmatch(value) is not None:
            return parse_timestamp(value)
        # Rare shapes (bare date, no seconds, padding) get the full parser, which strips.
        plausible = value[4:5] == "-" or value[:1].isspace()
        return parse_instant(value) if plausible else None
    except TimeValueError:
        return None


def _compile_compare(node: _Compare) -> Predicate:
    if node.op == "!=":
        # `!=` is exactly NOT `=`, so `x!=null` and lists behave as their negation.
        equal = _compile_compare(_Compare(node.field, "=", node.literal))
        return lambda entry: not equal(entry)
    first, *nested = node.field.split(".")
    literal, cmp = node.literal, _CMP[node.op]
    text, instant, number = literal.text, literal.instant, literal.number
    null_ok = literal.is_null and node.op == "="
    boolean = literal.boolean if node.op == "=" else None

    def test(value: Any) -> bool:
        if isinstance(value, str):
            if instant is not None:
                value_instant = _entry_instant(value)
                if value_instant is not None:
                    return cmp(value_instant, instant)
            return cmp(value, text)
        if value is None:
            return null_ok
        if value is True or value is False:
            return boolean is not None and value is boolean
        if isinstance(value, int | float):
            return number is not None and cmp(value, number)
        return False

    # The lookup and the commonest case (a string against a non-instant literal) are inlined:
    # this runs once per entry per comparison, and every extra call shows at sandbox scale.
    def predicate(entry: Mapping[str, Any]) -> bool:
        value = entry.get(first, _MISSING)
        for key in nested:
            if value.__class__ is not dict and not isinstance(value, Mapping):
                return null_ok
            value = value.get(key, _MISSING)
        if instant is None and value.__class__ is str:
            return cmp(value, text)
        if value is _MISSING:
            return null_ok
        if isinstance(value, list | tuple):
            return any(test(item) for item in value)
        return test(value)

    return predicate


def _compile(node: _Node) -> Predicate:
    if isinstance(node, _Compare):
        return _compile_compare(node)
    if isinstance(node, _Not):
        inner = _compile(node.child)
        return lambda entry: not inner(entry)
    parts = tuple(_compile(child) for child in node.children)
    # Plain loops rather than all()/any() over a generator: no generator object per entry.
    if node.keyword == "AND":

        def all_of(entry: Mapping[str, Any]) -> bool:
            for part in parts:  # noqa: SIM110
                if not part(entry):
                    return False
            return True

        return all_of

    def any_of(entry: Mapping[str, Any]) -> bool:
        for part in parts:  # noqa: SIM110
            if part(entry):
                return True
        return False

    return any_of


def _comparisons(node: _Node | None) -> Iterator[_Compare]:
    if isinstance(node, _Compare):
        yield node
    elif isinstance(node, _Not):
        yield from _comparisons(node.child)
    elif node is not None:
        for child in node.children:
            yield from _comparisons(child)


def _match_all(entry: Mapping[str, Any]) -> bool:
    return True


def _match_none(entry: Mapping[str, Any]) -> bool:
    return False


def _relax(node: _Node, unknown: Callable[[str], bool], positive: bool) -> _Node | bool:
    """``node`` with comparisons on unknown fields replaced by the constant that lets an
    entry through: True, or False under an odd number of NOTs; constants folded away."""
    if isinstance(node, _Compare):
        return positive if unknown(node.field) else node
    if isinstance(node, _Not):
        child = _relax(node.child, unknown, not positive)
        return (not child) if isinstance(child, bool) else _Not(child)
    neutral = node.keyword == "AND"  # True changes nothing in AND, False nothing in OR
    children: list[_Node] = []
    for part in node.children:
        relaxed = _relax(part, unknown, positive)
        if relaxed is not neutral and isinstance(relaxed, bool):
            return relaxed
        if not isinstance(relaxed, bool):
            children.append(relaxed)
    if not children:
        return neutral
    return children[0] if len(children) == 1 else _Chain(node.keyword, tuple(children))


@dataclasses.dataclass(frozen=True, slots=True)
class Filter:
    """A compiled filter expression; build it with :func:`parse_filter`.

    ``matches(entry) -> bool`` is the compiled predicate itself rather than a method
    wrapping it, which saves a call per entry.
    """

    text: str
    _node: _Node | None = dataclasses.field(repr=False)
    matches: Predicate = dataclasses.field(repr=False, compare=False)

    def __reduce__(self) -> tuple[Callable[[str], Filter], tuple[str]]:
        # Closures do not pickle; the text is the whole definition, so recompile from it.
        return (parse_filter, (self.text,))

    def fields(self) -> frozenset[str]:
        """The dotted field paths the expression refers to."""
        return frozenset(compare.field for compare in _comparisons(self._node))

    def timestamp_lower_bound(self, field: str = "timestamp") -> int | None:
        """The largest lower bound (epoch ns) the expression's top-level AND puts on ``field``.

        Only conjuncts of the top-level AND chain count: a bound under OR or NOT could
        exclude matching entries. ``>X`` yields X, not X+1, to stay conservative. The bound
        holds for entries whose ``field`` is an instant string (what a sorted index holds).
        """
        return max(self._instants(field, ("=", ">", ">=")), default=None)

    def timestamp_upper_bound(self, field: str = "timestamp") -> int | None:
        """The smallest upper bound (epoch ns, inclusive) the top-level AND puts on ``field``;
        like ``timestamp_lower_bound``, conservative: ``<X`` yields X."""
        return min(self._instants(field, ("=", "<", "<=")), default=None)

    def _instants(self, field: str, ops: tuple[str, ...]) -> list[int]:
        node = self._node
        conjuncts = node.children if isinstance(node, _Chain) and node.keyword == "AND" else (node,)
        return [
            part.literal.instant
            for part in conjuncts
            if isinstance(part, _Compare)
            and part.field == field
            and part.op in ops
            and part.literal.instant is not None
        ]

    def relaxed(self, unknown: Callable[[str], bool]) -> Filter:
        """This filter with every comparison on a field for which ``unknown(field)`` holds
        taken as whatever lets the entry through: it matches every entry the filter could
        match, whatever those fields hold (for fields that cannot be evaluated here)."""
        node = None if self._node is None else _relax(self._node, unknown, True)
        if isinstance(node, bool) or node is None:
            return Filter(self.text, None, _match_all if node in (None, True) else _match_none)
        return Filter(self.text, node, _compile(node))

    def has_range_on(self, field: str) -> bool:
        """Whether any comparison anywhere uses ``>``, ``<``, ``>=`` or ``<=`` on ``field``."""
        return any(c.field == field and c.op in _RANGE_OPS for c in _comparisons(self._node))


def parse_filter(text: str) -> Filter:
    """Parse and compile ``text``; an empty or blank filter matches every entry.

    Raises :class:`FilterSyntaxError` with the column and what was expected there.
    """
    if not text.strip():
        return Filter(text, None, _match_all)
    node = _Parser(text).parse()
    return Filter(text, node, _compile(node))
