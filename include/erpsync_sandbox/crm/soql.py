"""A SOQL subset for the sandbox CRM: tokenizer, parser and compiler to Python predicates.

Supported (what Salesforce replication clients send):

``SELECT f1, f2 | COUNT() | COUNT(f) FROM Account|Opportunity|User|Contact
[WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]``

``cond`` is field expressions ``f = | != | <> | < | <= | > | >= literal``,
``f [NOT] IN (lit, ...)``, ``f [NOT] LIKE 'pat%'``, combined with ``AND``/``OR``/``NOT`` and
parentheses. As in Salesforce, mixing ``AND`` and ``OR`` at one level without parentheses is a
``MALFORMED_QUERY``. Literals:
quoted strings (``\\'`` escapes), numbers, ``true``/``false``, ``null``, date ``2026-01-01``,
datetime ``2026-01-01T00:00:00Z`` / ``...00.000+0000`` / ``...+01:00``, and the date literals
``TODAY``, ``YESTERDAY``, ``TOMORROW``, ``LAST_N_DAYS:n``, ``NEXT_N_DAYS:n``.

Semantics follow Salesforce: keywords, object and field names are case-insensitive (results use
the canonical names); text ``=``/``LIKE`` compare case-insensitively; ``!=`` and ``NOT IN``
match nulls; a literal of the wrong type for a field is ``INVALID_FIELD`` ("value of filter
criterion for field ... must be of type dateTime and should not be enclosed in quotes");
unknown fields are ``INVALID_FIELD`` ("No such column ... on entity ..."); syntax errors are
``MALFORMED_QUERY``. Error messages carry Salesforce's ``ERROR at Row:r:Column:c`` pointer.

Not supported (answered with ``MALFORMED_QUERY`` or ``INVALID_FIELD``): relationship paths
(``Account.Name``), subqueries, ``GROUP BY``/``HAVING``, functions other than ``COUNT``,
``INCLUDES``/``EXCLUDES``, ``FOR UPDATE``, ``USING SCOPE``.

Reference: https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select.htm
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .schema import (
    BOOLEAN_TYPES,
    DATE_TYPES,
    DATETIME_TYPES,
    ID_TYPES,
    NUMBER_TYPES,
    FieldDef,
    SObjectSchema,
)

__all__ = ["CompiledQuery", "SoqlError", "compile_query", "dt_key", "error_at", "parse"]


class SoqlError(Exception):
    """A query Salesforce would reject; ``code`` is the errorCode, ``message`` its text."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# ----------------------------------------------------------------------------- tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\dT]))
  | (?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?![\w]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><>|!=|<=|>=|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<colon>:)
    """,
    re.VERBOSE,
)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper()


def _locate(query: str, pos: int) -> tuple[int, int, str]:
    row = query.count("\n", 0, pos) + 1
    start = query.rfind("\n", 0, pos) + 1
    end = query.find("\n", pos)
    line = query[start : end if end >= 0 else len(query)]
    return row, pos - start + 1, line


def error_at(query: str, pos: int, message: str, code: str = "MALFORMED_QUERY") -> SoqlError:
    """An error with Salesforce's pointer layout (the query line, a caret, Row/Column)."""
    row, col, line = _locate(query, min(pos, len(query)))
    pointer = " " * (col - 1) + "^"
    return SoqlError(code, f"\n{line}\n{pointer}\nERROR at Row:{row}:Column:{col}\n{message}")


def tokenize(query: str) -> list[Token]:
    """Split ``query`` into tokens; anything unrecognised is ``MALFORMED_QUERY``."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        m = _TOKEN_RE.match(query, pos)
        if m is None:
            raise error_at(query, pos, f"unexpected token: '{query[pos]}'")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("eof", "", len(query)))
    return tokens


# ----------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Lit:
    """A literal: kind is string | number | boolean | null | date | datetime | dateconst."""

    kind: str
    value: Any
    pos: int


@dataclass(frozen=True)
class Cmp:
    field: str
    pos: int
    op: str
    lit: Lit


@dataclass(frozen=True)
class InList:
    field: str
    pos: int
    values: tuple[Lit, ...]
    negate: bool


@dataclass(frozen=True)
class Like:
    field: str
    pos: int
    lit: Lit


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND | OR
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    item: Any


@dataclass(frozen=True)
class OrderItem:
    field: str
    pos: int
    descending: bool
    nulls_first: bool


@dataclass
class ParsedQuery:
    sobject: str
    sobject_pos: int
    fields: list[tuple[str, int]] = field(default_factory=list)
    count: str | None = None  # None | "" (COUNT()) | field name (COUNT(f))
    count_pos: int = 0
    where: Any = None
    order: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    #: parts of the query outside SOQL's documented syntax that the sandbox still accepts
    #: (the app records them with :func:`erpsync_sandbox.contract.undocumented`)
    undocumented: list[str] = field(default_factory=list)


_RESERVED = {
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "LIMIT",
    "OFFSET",
    "TRUE",
    "FALSE",
    "NULL",
    "GROUP",
    "HAVING",
    "WITH",
    "FOR",
    "USING",
    "INCLUDES",
    "EXCLUDES",
}
_DATE_CONSTS = {"TODAY", "YESTERDAY", "TOMORROW"}
_DATE_N_CONSTS = {"LAST_N_DAYS", "NEXT_N_DAYS"}


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.i = 0
        self.notes: list[str] = []

    # -- helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def unexpected(self, tok: Token | None = None) -> SoqlError:
        tok = tok or self.tok
        shown = "<EOF>" if tok.kind == "eof" else f"'{tok.text}'"
        return error_at(self.query, tok.pos, f"unexpected token: {shown}")

    def keyword(self, word: str) -> bool:
        if self.tok.kind == "ident" and self.tok.upper == word:
            self.i += 1
            return True
        return False

    def expect_keyword(self, word: str) -> Token:
        tok = self.tok
        if not self.keyword(word):
            raise self.unexpected(tok)
        return tok

    def expect(self, kind: str) -> Token:
        if self.tok.kind != kind:
            raise self.unexpected()
        return self.advance()

    def name(self) -> Token:
        tok = self.tok
        if tok.kind != "ident" or tok.upper in _RESERVED:
            raise self.unexpected()
        return self.advance()

    # -- grammar
    def parse(self) -> ParsedQuery:
        self.expect_keyword("SELECT")
        fields: list[tuple[str, int]] = []
        count: str | None = None
        count_pos = self.tok.pos
        if (
            self.tok.kind == "ident"
            and self.tok.upper == "COUNT"
            and self.tokens[self.i + 1].kind == "lparen"
        ):
            self.i += 2
            if self.tok.kind == "rparen":
                count = ""
            else:
                count = self.name().text
            self.expect("rparen")
        else:
            while True:
                tok = self.tok
                if tok.kind == "lparen":
                    raise error_at(self.query, tok.pos, "sandbox SOQL does not support subqueries")
                nxt = self.tokens[self.i + 1]
                if tok.kind == "ident" and nxt.kind == "lparen":
                    raise error_at(
                        self.query, tok.pos, f"sandbox SOQL does not support function {tok.text}"
                    )
                fields.append((self.name().text, tok.pos))
                if self.tok.kind != "comma":
                    break
                self.advance()
        self.expect_keyword("FROM")
        obj = self.name()
        parsed = ParsedQuery(obj.text, obj.pos, fields, count, count_pos)
        if self.keyword("WHERE"):
            parsed.where = self.condition()
        if self.tok.kind == "ident" and self.tok.upper in ("GROUP", "HAVING", "WITH", "USING"):
            raise error_at(
                self.query, self.tok.pos, f"sandbox SOQL does not support {self.tok.upper}"
            )
        if self.keyword("ORDER"):
            self.expect_keyword("BY")
            while True:
                ftok = self.name()
                desc = False
                if self.keyword("DESC"):
                    desc = True
                else:
                    self.keyword("ASC")
                nulls_first = not desc
                if self.keyword("NULLS"):
                    if self.keyword("FIRST"):
                        nulls_first = True
                    else:
                        self.expect_keyword("LAST")
                        nulls_first = False
                parsed.order.append(OrderItem(ftok.text, ftok.pos, desc, nulls_first))
                if self.tok.kind != "comma":
                    break
                self.advance()
        if self.keyword("LIMIT"):
            parsed.limit = self.integer()
        if self.keyword("OFFSET"):
            parsed.offset = self.integer()
            if parsed.offset > 2000:
                raise SoqlError(
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    f"Maximum SOQL offset allowed is 2000 (got {parsed.offset})",
                )
        if self.tok.kind != "eof":
            raise self.unexpected()
        parsed.undocumented = self.notes
        return parsed

    def integer(self) -> int:
        tok = self.tok
        if tok.kind != "number" or not tok.text.isdigit():
            raise self.unexpected()
        self.advance()
        return int(tok.text)

    def condition(self) -> Any:
        first = self.unary()
        if not (self.tok.kind == "ident" and self.tok.upper in ("AND", "OR")):
            return first
        op = self.tok.upper
        items = [first]
        while self.tok.kind == "ident" and self.tok.upper in ("AND", "OR"):
            if self.tok.upper != op:
                # Salesforce: "Parentheses are required whenever you mix the operators."
                raise self.unexpected()
            self.advance()
            items.append(self.unary())
        return BoolOp(op, tuple(items))

    def unary(self) -> Any:
        if self.keyword("NOT"):
            return Not(self.unary())
        if self.tok.kind == "lparen":
            self.advance()
            inner = self.condition()
            self.expect("rparen")
            return inner
        return self.simple()

    def simple(self) -> Any:
        ftok = self.name()
        tok = self.tok
        if tok.kind == "op":
            self.advance()
            op = "!=" if tok.text == "<>" else tok.text
            return Cmp(ftok.text, ftok.pos, op, self.literal())
        negate = self.keyword("NOT")
        if self.keyword("IN"):
            self.expect("lparen")
            if self.tok.kind == "ident" and self.tok.upper == "SELECT":
                raise error_at(self.query, self.tok.pos, "sandbox SOQL does not support semi-joins")
            values = [self.literal()]
            while self.tok.kind == "comma":
                self.advance()
                values.append(self.literal())
            self.expect("rparen")
            return InList(ftok.text, ftok.pos, tuple(values), negate)
        if self.keyword("LIKE"):
            lit = self.literal()
            cond: Any = Like(ftok.text, ftok.pos, lit)
            return Not(cond) if negate else cond
        raise self.unexpected()

    def literal(self) -> Lit:
        tok = self.advance()
        if tok.kind == "string":
            return Lit("string", _unescape(tok.text[1:-1]), tok.pos)
        if tok.kind == "number":
            text = tok.text
            value: Any = float(text) if ("." in text) else int(text)
            return Lit("number", value, tok.pos)
        if tok.kind == "datetime":
            if not _DOCUMENTED_DATETIME.match(tok.text):
                self.notes.append(
                    f"SOQL dateTime literal {tok.text!r} is not a documented form"
                    " (YYYY-MM-DDThh:mm:ss+hh:mm, -hh:mm or Z)"
                )
            try:
                return Lit("datetime", _parse_datetime(tok.text), tok.pos)
            except ValueError:
                raise error_at(
                    self.query,
                    tok.pos,
                    f"line 1:{tok.pos} no viable alternative at character '{tok.text}'",
                ) from None
        if tok.kind == "date":
            try:
                return Lit("date", dt.date.fromisoformat(tok.text), tok.pos)
            except ValueError:
                raise self.unexpected(tok) from None
        if tok.kind == "ident":
            word = tok.upper
            if word in ("TRUE", "FALSE"):
                return Lit("boolean", word == "TRUE", tok.pos)
            if word == "NULL":
                return Lit("null", None, tok.pos)
            if word in _DATE_CONSTS:
                return Lit("dateconst", (word, 0), tok.pos)
            if word in _DATE_N_CONSTS:
                self.expect("colon")
                n = self.integer()
                return Lit("dateconst", (word, n), tok.pos)
        raise self.unexpected(tok)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


#: The dateTime literal forms SOQL documents (no fractional seconds, offset with a colon):
#: https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_dateformats.htm
_DOCUMENTED_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")


def _parse_datetime(text: str) -> dt.datetime:
    s = text
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    elif len(s) >= 5 and s[-5] in "+-" and s[-3] != ":":
        s = s[:-2] + ":" + s[-2:]
    m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(\.\d+)?([+-]\d{2}:\d{2})$", s)
    if not m:
        raise ValueError(text)
    frac = m.group(2) or ""
    if frac:
        frac = "." + (frac[1:] + "000000")[:6]
    return dt.datetime.fromisoformat(m.group(1) + frac + m.group(3)).astimezone(dt.UTC)


def parse(query: str) -> ParsedQuery:
    """Parse SOQL text; raises :class:`SoqlError` (``MALFORMED_QUERY``) on syntax errors."""
    if not query or not query.strip():
        raise SoqlError("MALFORMED_QUERY", "A query string must be provided.")
    return _Parser(query).parse()


# ----------------------------------------------------------------------------- values


def dt_key(value: Any) -> str | None:
    """Normalise a Salesforce datetime (``2026-11-25T10:00:00.000+0000``, ``...Z``, offsets)
    to ``YYYY-MM-DDTHH:MM:SS.ffffff`` in UTC, so text order is time order."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    s = str(value)
    n = len(s)
    if n == 28 and s.endswith("+0000") and s[19] == ".":
        return s[:23] + "000"
    if n == 27 and s.endswith("Z") and s[19] == ".":
        return s[:26]
    if n == 24 and s.endswith("Z") and s[19] == ".":
        return s[:23] + "000"
    if n == 20 and s.endswith("Z"):
        return s[:19] + ".000000"
    if n == 10:
        return s + "T00:00:00.000000"
    try:
        return dt_key(_parse_datetime(s))
    except ValueError:
        return s


def _date_key(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)[:10]


def _num_key(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _bool_key(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _text_key(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).casefold()


def _id_key(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)[:15]


def _sort_text_key(value: Any) -> str | None:
    return _text_key(value)


def _kind_of(f: FieldDef) -> str:
    if f.type in DATETIME_TYPES:
        return "datetime"
    if f.type in DATE_TYPES:
        return "date"
    if f.type in NUMBER_TYPES:
        return "number"
    if f.type in BOOLEAN_TYPES:
        return "boolean"
    if f.type in ID_TYPES:
        return "id"
    return "text"


_KEY_FNS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt_key,
    "date": _date_key,
    "number": _num_key,
    "boolean": _bool_key,
    "id": _id_key,
    "text": _text_key,
}

_TYPE_WORD = {
    "datetime": ("dateTime", False),
    "date": ("date", False),
    "number": ("double", False),
    "boolean": ("boolean", False),
    "id": ("id", True),
    "text": ("string", True),
}


# ----------------------------------------------------------------------------- compile


@dataclass
class CompiledQuery:
    """A bound query, ready to run over record bodies."""

    sobject: str
    fields: list[str]
    predicate: Callable[[dict[str, Any]], bool] | None
    order: list[tuple[Callable[[dict[str, Any]], Any], bool, bool]]
    limit: int | None
    offset: int | None
    count: str | None
    modstamp_gt: dt.datetime | None = None
    modstamp_ge: dt.datetime | None = None
    ids: list[str] | None = None  # ``Id = '...'``/``Id IN (...)`` at the top level
    #: Set when WHERE is only SystemModstamp comparisons (AND-ed): (op, dt_key of literal)
    stamp_filters: list[tuple[str, str]] | None = None
    #: ORDER BY as (canonical field, descending) pairs
    order_names: list[tuple[str, bool]] = field(default_factory=list)

    def sort(
        self, items: list[Any], body_of: Callable[[Any], dict[str, Any]] = lambda b: b
    ) -> list[Any]:
        """Sort items (bodies, or anything ``body_of`` maps to one) in place by ORDER BY;
        stable, so ties keep store order. Returns ``items``."""
        for keyfn, desc, nulls_first in reversed(self.order):
            null_rank = 0 if nulls_first != desc else 2

            def key(item: Any, keyfn: Any = keyfn, null_rank: int = null_rank) -> Any:
                v = keyfn(body_of(item))
                return (null_rank, 0) if v is None else (1, v)

            items.sort(key=key, reverse=desc)
        return items

    def stamp_order(self) -> bool | None:
        """For ``ORDER BY SystemModstamp [, Id]`` (one direction): the direction (True =
        descending), so the caller can sort on the store's modstamp column; else None."""
        if not self.order_names or len({d for _, d in self.order_names}) != 1:
            return None
        names = [n for n, _ in self.order_names]
        if names not in (["SystemModstamp"], ["SystemModstamp", "Id"], ["Id"]):
            return None
        return self.order_names[0][1]


def compile_query(
    query: str,
    schema: SObjectSchema,
    parsed: ParsedQuery | None = None,
    *,
    today: dt.date | None = None,
) -> CompiledQuery:
    """Bind a parsed query to ``schema``: resolve names (``INVALID_FIELD``), type-check literals
    and build the predicate and sort keys. ``today`` anchors TODAY/LAST_N_DAYS (UTC)."""
    p = parsed or parse(query)
    today = today or dt.datetime.now(dt.UTC).date()

    def resolve(name: str, pos: int) -> FieldDef:
        if "." in name:
            rel = name.split(".", 1)[0]
            raise error_at(
                query,
                pos,
                f"Didn't understand relationship '{rel}' in field path. If you are attempting"
                " to use a custom relationship, be sure to append the '__r' after the custom"
                " relationship name. Please reference your WSDL or the describe call for the"
                " appropriate names.",
                "INVALID_FIELD",
            )
        f = schema.lookup(name)
        if f is None:
            raise error_at(
                query,
                pos,
                f"No such column '{name}' on entity '{schema.name}'. If you are attempting to"
                " use a custom field, be sure to append the '__c' after the custom field name."
                " Please reference your WSDL or the describe call for the appropriate names.",
                "INVALID_FIELD",
            )
        return f

    fields: list[str] = []
    for name, pos in p.fields:
        canon = resolve(name, pos).name
        if canon in fields:
            raise error_at(query, pos, f"duplicate field selected: {canon}", "DUPLICATE_FIELD")
        fields.append(canon)
    count = p.count
    if count:
        count = resolve(count, p.count_pos).name

    predicate = None
    if p.where is not None:
        predicate = _compile_cond(p.where, query, resolve, today)

    order: list[tuple[Callable[[dict[str, Any]], Any], bool, bool]] = []
    for item in p.order:
        f = resolve(item.field, item.pos)
        if not f.sortable:
            raise error_at(
                query,
                item.pos,
                f"field '{f.name}' can not be sorted in a query call",
                "INVALID_FIELD",
            )
        kind = _kind_of(f)
        keyf = _KEY_FNS[kind] if kind not in ("text",) else _sort_text_key
        name = f.name

        def getter(b: dict[str, Any], name: str = name, keyf: Any = keyf) -> Any:
            return keyf(b.get(name))

        order.append((getter, item.descending, item.nulls_first))

    compiled = CompiledQuery(schema.name, fields, predicate, order, p.limit, p.offset, count)
    compiled.order_names = [(resolve(i.field, i.pos).name, i.descending) for i in p.order]
    # Push-downs for the store (the predicate still re-checks every row).
    conjuncts = (
        list(p.where.items)
        if isinstance(p.where, BoolOp) and p.where.op == "AND"
        else ([p.where] if p.where is not None else [])
    )
    stamp_only = bool(conjuncts) and all(
        isinstance(c, Cmp) and c.lit.kind == "datetime" and c.field.lower() == "systemmodstamp"
        for c in conjuncts
    )
    if stamp_only:
        compiled.stamp_filters = [(c.op, dt_key(c.lit.value) or "") for c in conjuncts]
    for c in conjuncts:
        if isinstance(c, Cmp) and c.lit.kind == "datetime" and c.field.lower() == "systemmodstamp":
            if c.op == ">" and (compiled.modstamp_gt is None or c.lit.value > compiled.modstamp_gt):
                compiled.modstamp_gt = c.lit.value
            elif c.op == ">=" and (
                compiled.modstamp_ge is None or c.lit.value > compiled.modstamp_ge
            ):
                compiled.modstamp_ge = c.lit.value
        elif (
            c.__class__ is Cmp
            and c.field.lower() == "id"
            and c.op == "="
            and c.lit.kind == "string"
        ):
            compiled.ids = [c.lit.value]
        elif isinstance(c, InList) and not c.negate and c.field.lower() == "id":
            compiled.ids = [v.value for v in c.values if v.kind == "string"]
    return compiled


def _date_range(lit: Lit, today: dt.date) -> tuple[dt.date, dt.date]:
    word, n = lit.value
    if word == "TODAY":
        return today, today + dt.timedelta(days=1)
    if word == "YESTERDAY":
        return today - dt.timedelta(days=1), today
    if word == "TOMORROW":
        return today + dt.timedelta(days=1), today + dt.timedelta(days=2)
    if word == "LAST_N_DAYS":
        return today - dt.timedelta(days=n), today + dt.timedelta(days=1)
    # NEXT_N_DAYS
    return today + dt.timedelta(days=1), today + dt.timedelta(days=n + 1)


def _check_literal(query: str, f: FieldDef, kind: str, lit: Lit) -> None:
    if lit.kind == "null":
        return
    ok = {
        "datetime": ("datetime", "dateconst"),
        "date": ("date", "dateconst"),
        "number": ("number",),
        "boolean": ("boolean",),
        "id": ("string",),
        "text": ("string",),
    }[kind]
    if lit.kind in ok:
        if kind == "id":
            v = lit.value
            if not (len(v) in (15, 18) and v.isalnum()):
                raise error_at(
                    query, lit.pos, f"invalid ID field: {v}", "INVALID_QUERY_FILTER_OPERATOR"
                )
        return
    word, quoted = _TYPE_WORD[kind]
    if f.type == "int":
        word = "integer"
    how = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
    raise error_at(
        query,
        lit.pos,
        f"value of filter criterion for field '{f.name}' must be of type {word} and {how}",
        "INVALID_FIELD",
    )


def _lit_key(kind: str, lit: Lit) -> Any:
    if lit.kind == "null":
        return None
    if kind == "datetime":
        return dt_key(lit.value)
    if kind == "date":
        return lit.value.isoformat()
    return _KEY_FNS[kind](lit.value)


def _compile_cond(
    node: Any, query: str, resolve: Callable[[str, int], FieldDef], today: dt.date
) -> Callable[[dict[str, Any]], bool]:
    if isinstance(node, BoolOp):
        parts = [_compile_cond(i, query, resolve, today) for i in node.items]
        if node.op == "AND":
            return lambda b: all(p(b) for p in parts)
        return lambda b: any(p(b) for p in parts)
    if isinstance(node, Not):
        inner = _compile_cond(node.item, query, resolve, today)
        return lambda b: not inner(b)

    f = resolve(node.field, node.pos)
    if not f.filterable:
        raise error_at(
            query,
            node.pos,
            f"field '{f.name}' can not be filtered in a query call",
            "INVALID_FIELD",
        )
    kind = _kind_of(f)
    keyf = _KEY_FNS[kind]
    name = f.name

    if isinstance(node, Like):
        if kind not in ("text", "id"):
            raise error_at(
                query,
                node.pos,
                f"invalid operator on {f.type} field: LIKE",
                "INVALID_QUERY_FILTER_OPERATOR",
            )
        if node.lit.kind != "string":
            _check_literal(query, f, "text", node.lit)
        rx = re.compile(_like_regex(node.lit.value), re.IGNORECASE | re.DOTALL)

        def like(b: dict[str, Any]) -> bool:
            v = b.get(name)
            return v is not None and rx.fullmatch(str(v)) is not None

        return like

    if isinstance(node, InList):
        for lit in node.values:
            _check_literal(query, f, kind, lit)
        keys = {_lit_key(kind, lit) for lit in node.values if lit.kind != "dateconst"}
        if node.negate:
            return lambda b: keyf(b.get(name)) not in keys
        return lambda b: keyf(b.get(name)) in keys

    assert isinstance(node, Cmp)
    lit = node.lit
    _check_literal(query, f, kind, lit)
    op = node.op
    if lit.kind == "dateconst":
        lo_d, hi_d = _date_range(lit, today)
        if kind == "datetime":
            lo: Any = lo_d.isoformat() + "T00:00:00.000000"
            hi: Any = hi_d.isoformat() + "T00:00:00.000000"
        else:
            lo, hi = lo_d.isoformat(), hi_d.isoformat()

        def in_range(b: dict[str, Any]) -> bool | None:
            v = keyf(b.get(name))
            if v is None:
                return None
            return lo <= v < hi

        if op == "=":
            return lambda b: in_range(b) is True
        if op == "!=":
            return lambda b: in_range(b) is not True

        def ranged(b: dict[str, Any]) -> bool:
            v = keyf(b.get(name))
            if v is None:
                return False
            if op == ">":
                return bool(v >= hi)
            if op == ">=":
                return bool(v >= lo)
            if op == "<":
                return bool(v < lo)
            return bool(v < hi)  # <=

        return ranged

    target = _lit_key(kind, lit)
    if target is None:
        if op == "=":
            return lambda b: b.get(name) is None
        if op == "!=":
            return lambda b: b.get(name) is not None
        return lambda b: False
    if op == "=":
        return lambda b: keyf(b.get(name)) == target
    if op == "!=":
        return lambda b: keyf(b.get(name)) != target
    if op == ">":

        def gt(b: dict[str, Any]) -> bool:
            v = keyf(b.get(name))
            return v is not None and v > target

        return gt
    if op == ">=":

        def ge(b: dict[str, Any]) -> bool:
            v = keyf(b.get(name))
            return v is not None and v >= target

        return ge
    if op == "<":

        def lt(b: dict[str, Any]) -> bool:
            v = keyf(b.get(name))
            return v is not None and v < target

        return lt

    def le(b: dict[str, Any]) -> bool:
        v = keyf(b.get(name))
        return v is not None and v <= target

    return le


def _like_regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)
