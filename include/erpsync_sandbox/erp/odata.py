"""OData v4 query options for the Business Central sandbox: ``$filter``, ``$orderby``, ``$select``.

Business Central's API v2.0 is an OData v4 service; this module parses the subset of the query
options a connector uses and evaluates them against stored entity bodies:

* ``$filter``: comparisons ``eq ne gt ge lt le``, ``and``/``or``/``not``, parentheses, the string
  functions ``contains``, ``startswith``, ``endswith``, and literals of the OData ABNF: quoted
  strings (``''`` escapes a quote), GUIDs, ``DateTimeOffset`` (``2026-01-01T00:00:00Z``), dates,
  integers, decimals, ``true``/``false``/``null``. Operands are type-checked against the entity's
  property types the way the OData library in BC does: an unknown property or incompatible operand
  types is a 400 ``BadRequest``.
* Filters are split into the part the SQLite store can evaluate (``lastModifiedDateTime`` ranges
  on the indexed modstamp column, equality on strings and GUIDs) and a residual predicate evaluated
  in Python, so an incremental read stays on the fast raw-JSON path.

Reference: https://learn.microsoft.com/en-us/dynamics365/business-central/dev-itpro/developer/devenv-connect-apps-filtering
and the OData v4.01 URL conventions,
https://docs.oasis-open.org/odata/odata/v4.01/odata-v4.01-part2-url-conventions.html
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "Compare",
    "FilterPlan",
    "Func",
    "Literal",
    "Logical",
    "Not",
    "ODataError",
    "Prop",
    "parse_filter",
    "parse_orderby",
    "parse_select",
    "plan_filter",
]


class ODataError(ValueError):
    """A malformed or ill-typed query option; the service turns it into 400 ``BadRequest``."""


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Literal:
    """A typed literal: ``edm`` is the EDM type name, ``value`` its Python value."""

    edm: str
    value: Any


@dataclass(frozen=True)
class Prop:
    """A property reference (top-level property of the entity)."""

    name: str


@dataclass(frozen=True)
class Compare:
    """``left op right`` with op one of eq ne gt ge lt le."""

    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Logical:
    """``and`` / ``or`` of two or more operands."""

    op: str
    operands: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    """``not operand``."""

    operand: Any


@dataclass(frozen=True)
class Func:
    """A boolean string function call: contains / startswith / endswith."""

    name: str
    args: tuple[Any, ...]


# --------------------------------------------------------------------------- tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,12})?)?(?:Z|z|[+-]\d{2}:\d{2}))
  | (?P<guid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)

_COMPARE_OPS = ("eq", "ne", "gt", "ge", "lt", "le")
_FUNCS = {"contains": 2, "startswith": 2, "endswith": 2}
_OP_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise ODataError(f"Syntax error at position {pos} in '{text}'.")
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    return toks


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, types: Mapping[str, str], entity: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.types = types
        self.entity = entity

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise ODataError(f"Syntax error: unexpected end of expression '{self.text}'.")
        self.i += 1
        return tok

    def keyword(self, *words: str) -> str | None:
        tok = self.peek()
        if tok is not None and tok.kind == "ident" and tok.text in words:
            self.i += 1
            return tok.text
        return None

    def expect(self, kind: str) -> _Tok:
        tok = self.take()
        if tok.kind != kind:
            raise ODataError(
                f"Syntax error at position {tok.pos} in '{self.text}': expected {kind},"
                f" found '{tok.text}'."
            )
        return tok

    def parse(self) -> Any:
        node = self.or_expr()
        tok = self.peek()
        if tok is not None:
            raise ODataError(f"Syntax error at position {tok.pos} in '{self.text}'.")
        if not _is_boolean(node, self.types):
            raise ODataError("The $filter expression must evaluate to a single boolean value.")
        return node

    def or_expr(self) -> Any:
        operands = [self.and_expr()]
        while self.keyword("or"):
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Logical("or", tuple(operands))

    def and_expr(self) -> Any:
        operands = [self.not_expr()]
        while self.keyword("and"):
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else Logical("and", tuple(operands))

    def not_expr(self) -> Any:
        if self.keyword("not"):
            return Not(self.not_expr())
        return self.compare()

    def compare(self) -> Any:
        left = self.primary()
        op = self.keyword(*_COMPARE_OPS)
        if op is None:
            return left
        right = self.primary()
        self.check_types(op, left, right)
        return Compare(op, left, right)

    def primary(self) -> Any:
        tok = self.take()
        if tok.kind == "lparen":
            node = self.or_expr()
            self.expect("rparen")
            return node
        if tok.kind == "string":
            return Literal("Edm.String", tok.text[1:-1].replace("''", "'"))
        if tok.kind == "datetime":
            return Literal("Edm.DateTimeOffset", _parse_datetime(tok.text))
        if tok.kind == "guid":
            return Literal("Edm.Guid", tok.text.lower())
        if tok.kind == "date":
            try:
                return Literal("Edm.Date", dt.date.fromisoformat(tok.text))
            except ValueError as exc:
                raise ODataError(f"Invalid date literal '{tok.text}'.") from exc
        if tok.kind == "number":
            raw = tok.text.rstrip("mMdDfFlL")
            try:
                num = Decimal(raw)
            except InvalidOperation as exc:  # pragma: no cover - the regex prevents it
                raise ODataError(f"Invalid number literal '{tok.text}'.") from exc
            is_int = re.fullmatch(r"-?\d+", raw) is not None
            return Literal("Edm.Int64" if is_int else "Edm.Decimal", num)
        if tok.kind == "ident":
            word = tok.text
            if word in ("true", "false"):
                return Literal("Edm.Boolean", word == "true")
            if word == "null":
                return Literal("null", None)
            nxt = self.peek()
            if nxt is not None and nxt.kind == "lparen" and word in _FUNCS:
                self.take()
                args = [self.primary()]
                while self.peek() is not None and self.peek().kind == "comma":  # type: ignore[union-attr]
                    self.take()
                    args.append(self.primary())
                self.expect("rparen")
                if len(args) != _FUNCS[word]:
                    raise ODataError(
                        f"No function signature for the function with name '{word}' matches"
                        f" the specified arguments."
                    )
                for arg in args:
                    if _type_of(arg, self.types) not in ("Edm.String", "null"):
                        raise ODataError(
                            f"No function signature for the function with name '{word}' matches"
                            f" the specified arguments."
                        )
                return Func(word, tuple(args))
            if nxt is not None and nxt.kind == "lparen":
                raise ODataError(f"An unknown function with name '{word}' was found.")
            if word not in self.types:
                raise ODataError(
                    f"Could not find a property named '{word}' on type"
                    f" 'Microsoft.NAV.{self.entity}'."
                )
            return Prop(word)
        raise ODataError(f"Syntax error at position {tok.pos} in '{self.text}'.")

    def check_types(self, op: str, left: Any, right: Any) -> None:
        lt = _type_of(left, self.types)
        rt = _type_of(right, self.types)
        if lt == "null" or rt == "null":
            return
        if _compatible(lt, rt):
            return
        raise ODataError(
            "A binary operator with incompatible types was detected. Found operand types"
            f" '{lt}' and '{rt}' for operator kind '{_OP_KIND[op]}'."
        )


_NUMERIC = {"Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"}
_TEMPORAL = {"Edm.DateTimeOffset", "Edm.Date"}


def _compatible(a: str, b: str) -> bool:
    if a == b:
        return True
    if a in _NUMERIC and b in _NUMERIC:
        return True
    # A date literal against a DateTimeOffset property is promoted to midnight UTC.
    return a in _TEMPORAL and b in _TEMPORAL


def _type_of(node: Any, types: Mapping[str, str]) -> str:
    if isinstance(node, Literal):
        return node.edm
    if isinstance(node, Prop):
        return types[node.name]
    return "Edm.Boolean"


def _is_boolean(node: Any, types: Mapping[str, str]) -> bool:
    if isinstance(node, Compare | Logical | Not | Func):
        return True
    return _type_of(node, types) == "Edm.Boolean"


def _parse_datetime(text: str) -> dt.datetime:
    s = text
    if s[-1] in "Zz":
        s = s[:-1] + "+00:00"
    m = re.match(r"^(.*T\d{2}:\d{2}(?::\d{2})?)(\.\d+)?([+-]\d{2}:\d{2})$", s)
    if m is None:
        raise ODataError(f"Invalid DateTimeOffset literal '{text}'.")
    base, frac, tz = m.group(1), m.group(2) or "", m.group(3)
    if frac:
        frac = "." + (frac[1:] + "000000")[:6]
    try:
        return dt.datetime.fromisoformat(base + frac + tz).astimezone(dt.UTC)
    except ValueError as exc:
        raise ODataError(f"Invalid DateTimeOffset literal '{text}'.") from exc


def parse_filter(text: str, types: Mapping[str, str], entity: str) -> Any:
    """Parse a ``$filter`` expression into an AST, type-checked against ``types``
    (property name to EDM type). Raises :class:`ODataError`."""
    if not text.strip():
        raise ODataError("The $filter expression is empty.")
    return _Parser(text, types, entity).parse()


# --------------------------------------------------------------------------- evaluation


def _to_iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _coerce(value: Any, edm: str) -> Any:
    """A body value as a comparable Python value of EDM type ``edm`` (None stays None)."""
    if value is None:
        return None
    if edm == "Edm.DateTimeOffset":
        if isinstance(value, dt.datetime):
            return value
        text = str(value)
        if len(text) == 10:
            return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
        return _parse_datetime(text if text[-1] in "Zz" or "+" in text[10:] else text + "Z")
    if edm == "Edm.Date":
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        return dt.date.fromisoformat(str(value)[:10])
    if edm in _NUMERIC:
        if isinstance(value, bool):
            return Decimal(int(value))
        return Decimal(str(value))
    if edm == "Edm.Guid":
        return str(value).lower()
    if edm == "Edm.Boolean":
        return bool(value)
    return str(value)


def _operand(node: Any, body: Mapping[str, Any], types: Mapping[str, str], want: str) -> Any:
    if isinstance(node, Literal):
        if node.value is None:
            return None
        if want == "Edm.DateTimeOffset" and node.edm == "Edm.Date":
            return dt.datetime.combine(node.value, dt.time(), tzinfo=dt.UTC)
        if want == "Edm.Date" and node.edm == "Edm.DateTimeOffset":
            return node.value.date()
        return node.value
    if isinstance(node, Prop):
        return _coerce(body.get(node.name), types[node.name])
    return evaluate(node, body, types)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return bool(a != b)
    if a is None or b is None:
        return False
    if op == "gt":
        return bool(a > b)
    if op == "ge":
        return bool(a >= b)
    if op == "lt":
        return bool(a < b)
    return bool(a <= b)


def evaluate(node: Any, body: Mapping[str, Any], types: Mapping[str, str]) -> Any:
    """Evaluate a parsed filter against one entity body; returns a bool for predicates."""
    if isinstance(node, Logical):
        if node.op == "and":
            return all(evaluate(o, body, types) for o in node.operands)
        return any(evaluate(o, body, types) for o in node.operands)
    if isinstance(node, Not):
        return not evaluate(node.operand, body, types)
    if isinstance(node, Compare):
        want = _prop_type(node.left, types) or _prop_type(node.right, types) or ""
        a = _operand(node.left, body, types, want)
        b = _operand(node.right, body, types, want)
        return _compare(node.op, a, b)
    if isinstance(node, Func):
        hay, needle = (_operand(a, body, types, "Edm.String") for a in node.args)
        if hay is None or needle is None:
            return False
        if node.name == "contains":
            return needle in hay
        if node.name == "startswith":
            return hay.startswith(needle)
        return hay.endswith(needle)
    if isinstance(node, Prop):
        return bool(body.get(node.name))
    if isinstance(node, Literal):
        return node.value
    raise ODataError("Unsupported $filter expression.")  # pragma: no cover


def _prop_type(node: Any, types: Mapping[str, str]) -> str | None:
    return types[node.name] if isinstance(node, Prop) else None


# --------------------------------------------------------------------------- planning


@dataclass
class FilterPlan:
    """A filter split into store conditions (exact, pushed into SQL) and a residual predicate.

    ``conditions`` use the store's ``(field, op, value)`` form; ``modstamp`` is the indexed
    column that holds ``lastModifiedDateTime`` exactly (the store writes the body field from it).
    ``residual`` is None when everything was pushed down.
    """

    conditions: list[tuple[str, str, Any]] = field(default_factory=list)
    residual: Callable[[Mapping[str, Any]], bool] | None = None


_SQL_OPS = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_FLIP = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}


def _push(node: Any, types: Mapping[str, str], stamp_field: str) -> tuple[str, str, Any] | None:
    """A store condition equivalent to ``node``, or None when it must stay in Python."""
    if not isinstance(node, Compare):
        return None
    op, left, right = node.op, node.left, node.right
    if isinstance(right, Prop) and isinstance(left, Literal):
        op, left, right = _FLIP[op], right, left
    if not (isinstance(left, Prop) and isinstance(right, Literal)) or right.value is None:
        return None
    edm = types[left.name]
    if left.name == stamp_field and edm == "Edm.DateTimeOffset":
        moment = right.value
        if right.edm == "Edm.Date":
            moment = dt.datetime.combine(moment, dt.time(), tzinfo=dt.UTC)
        return ("modstamp", _SQL_OPS[op], _to_iso(moment))
    if op != "eq":
        return None
    if left.name == "id" and edm == "Edm.Guid" and right.edm == "Edm.Guid":
        return ("id", "=", right.value)
    if edm == "Edm.String" and right.edm == "Edm.String":
        return (left.name, "=", right.value)
    if edm == "Edm.Guid" and right.edm == "Edm.Guid":
        return (left.name, "=", right.value)
    return None


def plan_filter(
    node: Any | None, types: Mapping[str, str], stamp_field: str = "lastModifiedDateTime"
) -> FilterPlan:
    """Split a parsed filter into pushed-down store conditions and a residual predicate."""
    plan = FilterPlan()
    if node is None:
        return plan
    conjuncts = list(node.operands) if isinstance(node, Logical) and node.op == "and" else [node]
    rest: list[Any] = []
    for conj in conjuncts:
        cond = _push(conj, types, stamp_field)
        if cond is None:
            rest.append(conj)
        else:
            plan.conditions.append(cond)
    if rest:
        residual = rest[0] if len(rest) == 1 else Logical("and", tuple(rest))

        def predicate(body: Mapping[str, Any]) -> bool:
            return bool(evaluate(residual, body, types))

        plan.residual = predicate
    return plan


# --------------------------------------------------------------------------- $orderby / $select

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_orderby(text: str, types: Mapping[str, str], entity: str) -> list[tuple[str, bool]]:
    """``$orderby`` into ``[(property, descending)]``."""
    out: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise ODataError(f"Syntax error in $orderby '{text}'.")
        name = words[0]
        if name not in types:
            raise ODataError(
                f"Could not find a property named '{name}' on type 'Microsoft.NAV.{entity}'."
            )
        out.append((name, len(words) == 2 and words[1] == "desc"))
    return out


def parse_select(text: str, types: Mapping[str, str], entity: str) -> list[str]:
    """``$select`` into a list of property names (``*`` means all: returns [])."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if "*" in names:
        return []
    for name in names:
        if not _IDENT_RE.match(name) or name not in types:
            raise ODataError(
                f"Could not find a property named '{name}' on type 'Microsoft.NAV.{entity}'."
            )
    return names


def sort_key(value: Any, edm: str) -> tuple[int, Any]:
    """A total-order key for ``$orderby`` (nulls first, as SQL Server sorts them)."""
    coerced = _coerce(value, edm)
    if coerced is None:
        return (0, "")
    if isinstance(coerced, dt.datetime):
        return (1, _to_iso(coerced))
    if isinstance(coerced, dt.date):
        return (1, coerced.isoformat())
    if isinstance(coerced, Decimal):
        return (1, coerced)
    if isinstance(coerced, bool):
        return (1, int(coerced))
    return (1, coerced)
