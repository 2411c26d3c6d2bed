"""Audience expressions: a small language parsed by lark into an AST, compiled to SQL.

    tag:"高净值" AND (tag:"关注养老" OR attr.risk_level >= C3) AND NOT tag:"已退订"
    AND attr.maturity_date WITHIN 7d

Every value reaches the database as a bound parameter: tag names are resolved to
ids, attribute names are checked against the schema (``tagging.attributes``; never spliced from
input), and comparisons bind their operand.  Bad input raises
:class:`ExpressionError` with the 0-based character position it concerns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from tagging import attributes, service

MAX_LENGTH = 2000
MAX_TERMS = 64
SHANGHAI = ZoneInfo("Asia/Shanghai")

# The attribute schema lives with the import (tagging.attributes): the built-in fields
# and the institution's own, loaded when an expression is compiled.
Schema = attributes.Schema

GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: NOT not_expr -> not_
         | atom
?atom: tag_term
     | inactive_term
     | attr_cmp
     | attr_within
     | holding_cmp
     | holding_within
     | "(" or_expr ")"
tag_term: TAG ":" STRING
inactive_term: INACTIVE ":" DURATION
attr_cmp: ATTR "." NAME OP value
attr_within: ATTR "." NAME _WITHIN DURATION
holding_cmp: HOLDING "." NAME OP value
holding_within: HOLDING "." NAME _WITHIN DURATION
?value: STRING | NUMBER | BARE

_OR.2: /OR\b/i
_AND.2: /AND\b/i
NOT.2: /NOT\b/i
_WITHIN.2: /WITHIN\b/i
TAG.2: "tag"
INACTIVE.2: "inactive"
HOLDING.2: "holding"
ATTR.2: "attr"
OP: ">=" | "<=" | "!=" | "=" | ">" | "<"
DURATION: /[0-9]{1,4}d\b/
NAME: /[a-z_][a-z0-9_]{0,63}/
NUMBER: /-?[0-9]+(\.[0-9]+)?(?![A-Za-z_])/
BARE: /[A-Za-z0-9_\-]+/
STRING: /"(?:[^"\\]|\\.)*"/
%import common.WS
%ignore WS
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


class ExpressionError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at {position})")
        self.message = message
        self.position = position


# ---------------------------------------------------------------- the AST


@dataclass(frozen=True)
class TagTerm:
    name: str
    position: int


@dataclass(frozen=True)
class Inactive:
    """No message from the customer for ``days`` days (counted from today's midnight)."""

    days: int
    position: int


@dataclass(frozen=True)
class AttrCmp:
    name: str
    op: str
    value: str | float
    position: int


@dataclass(frozen=True)
class AttrWithin:
    name: str
    days: int
    position: int


@dataclass(frozen=True)
class HoldingCmp:
    """Some holding of the customer satisfies ``field op value`` (``attr.holdings``)."""

    name: str
    op: str
    value: str
    position: int


@dataclass(frozen=True)
class HoldingWithin:
    name: str
    days: int
    position: int


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


Node = TagTerm | Inactive | AttrCmp | AttrWithin | HoldingCmp | HoldingWithin | Not | And | Or

#: Fields of a holding (``tagging.attributes``): product risk R1–R5 compares by rank.
HOLDING_FIELDS: dict[str, attributes.AttrSpec] = {
    "product_code": attributes.AttrSpec("string", max_length=32),
    "risk_level": attributes.AttrSpec("enum", attributes.HOLDING_RISK),
    "maturity_date": attributes.AttrSpec("date"),
}


def _unquote(tok: Token) -> str:
    body = str(tok)[1:-1]
    return body.replace('\\"', '"').replace("\\\\", "\\")


class _ToAst(Transformer[Token, Node]):
    def tag_term(self, items: list[Token]) -> TagTerm:
        name = _unquote(items[1])
        if not name.strip():
            raise ExpressionError("empty tag name", int(items[1].start_pos or 0))
        return TagTerm(name, int(items[0].start_pos or 0))

    def inactive_term(self, items: list[Token]) -> Inactive:
        return Inactive(int(str(items[1])[:-1]), int(items[0].start_pos or 0))

    def attr_cmp(self, items: list[Any]) -> AttrCmp:
        attr, name, op, value = items
        raw: str | float
        if value.type == "STRING":
            raw = _unquote(value)
        elif value.type == "NUMBER":
            raw = float(value)
        else:
            raw = str(value)
        return AttrCmp(str(name), str(op), raw, int(attr.start_pos or 0))

    def attr_within(self, items: list[Token]) -> AttrWithin:
        attr, name, duration = items
        return AttrWithin(str(name), int(str(duration)[:-1]), int(attr.start_pos or 0))

    def holding_cmp(self, items: list[Any]) -> HoldingCmp:
        kw, name, op, value = items
        raw = _unquote(value) if value.type == "STRING" else str(value)
        return HoldingCmp(str(name), str(op), raw, int(kw.start_pos or 0))

    def holding_within(self, items: list[Token]) -> HoldingWithin:
        kw, name, duration = items
        return HoldingWithin(str(name), int(str(duration)[:-1]), int(kw.start_pos or 0))

    def not_(self, items: list[Any]) -> Not:
        return Not(items[1])

    def and_expr(self, items: list[Node]) -> And:
        return And(tuple(items))

    def or_expr(self, items: list[Node]) -> Or:
        return Or(tuple(items))


def _count_terms(node: Node) -> int:
    if isinstance(node, Not):
        return _count_terms(node.item)
    if isinstance(node, And | Or):
        return sum(_count_terms(i) for i in node.items)
    return 1


#: ASTs by expression text: an AST is immutable (frozen dataclasses and tuples), and the
#: console's builders send the same expressions again and again (lark's parse of one is
#: a fraction of a millisecond of Python).  Bounded; cleared whole when full.
_PARSED: dict[str, Node] = {}
_PARSED_MAX = 1024


def parse(expr: str) -> Node:
    """The AST of ``expr``, or :class:`ExpressionError` with the position."""
    node = _PARSED.get(expr)
    if node is None:
        node = _parse(expr)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[expr] = node
    return node


def _parse(expr: str) -> Node:
    if len(expr) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH)
    if not expr.strip():
        raise ExpressionError("empty expression", 0)
    try:
        tree = _PARSER.parse(expr)
    except UnexpectedEOF:
        raise ExpressionError(
            "unexpected end (an unclosed parenthesis or a missing term?)", len(expr)
        ) from None
    except UnexpectedCharacters as exc:
        at = int(exc.pos_in_stream or 0)
        raise ExpressionError(f"unexpected character {expr[at]!r}", at) from None
    except UnexpectedInput as exc:
        pos = int(getattr(exc, "pos_in_stream", None) or 0)
        token = getattr(exc, "token", None)
        if token is not None and getattr(token, "type", "") == "$END":
            raise ExpressionError(
                "unexpected end (an unclosed parenthesis or a missing term?)", len(expr)
            ) from None
        raise ExpressionError(
            f"unexpected {str(token)!r}" if token else "syntax error", pos
        ) from None
    try:
        node: Node = _ToAst().transform(tree)
    except Exception as exc:  # lark wraps a transformer's exception in VisitError
        inner = getattr(exc, "orig_exc", exc)
        if isinstance(inner, ExpressionError):
            raise inner from None
        raise
    if _count_terms(node) > MAX_TERMS:
        raise ExpressionError(f"more than {MAX_TERMS} terms", 0)
    return node


# ---------------------------------------------------------------- SQL


class _Sql:
    """Builds a WHERE clause with bound parameters in the connection's placeholder style.

    ``whole``: the clause selects a whole audience (a count), not the first rows in id
    order (a preview, a batch of the schedule job) — on SQLite a tag term is then a
    list subquery, read once through the (tag, customer) index, where a correlated
    EXISTS would probe the index once per customer row (measured: 3x slower over a
    million customers, bench/audience.py); an EXISTS stops at the first rows wanted.
    PostgreSQL plans EXISTS as a semi-join (or anti-join) either way.
    """

    def __init__(self, dialect: str, *, whole: bool = False) -> None:
        self.dialect = dialect
        self.whole = whole
        # Compiling below a NOT (see _two_valued).
        self.negated = False
        self.params: list[Any] = []

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}" if self.dialect == "postgres" else "?"

    def attr(self, name: str) -> str:
        # The name is checked against the schema before it gets here, and bound anyway.
        if self.dialect == "postgres":
            return f"(c.attributes ->> {self.bind(name)})"
        return f"json_extract(c.attributes, {self.bind('$.' + name)})"


def _today() -> date:
    return datetime.now(SHANGHAI).date()


def _two_valued(sql: _Sql, condition: str) -> str:
    """A comparison as TRUE/FALSE where a NOT is above it: a missing attribute (NULL)
    must count as not matching, and NOT NULL is NULL.  Elsewhere it stays bare — AND,
    OR and WHERE treat NULL as FALSE already, and a bare comparison keeps the planner's
    row estimate (inside COALESCE PostgreSQL guesses half the table and picks a hash
    join where an index probe wins)."""
    return f"COALESCE(({condition}), FALSE)" if sql.negated else f"({condition})"


async def _compile(
    node: Node, sql: _Sql, tag_ids: dict[str, list[int]], today: date, schema: Schema
) -> str:
    if isinstance(node, TagTerm):
        ids = tag_ids.get(node.name)
        if not ids:
            raise ExpressionError(f"unknown tag {node.name!r}", node.position)
        marks = ", ".join(sql.bind(i) for i in ids)
        # Only placeholders are interpolated; the ids are bound.
        if sql.whole and sql.dialect == "sqlite":
            # customer_id is NOT NULL, so NOT (… IN …) is exact.
            return (
                "c.id IN (SELECT ct.customer_id FROM tagging_customer_tag ct "  # noqa: S608 - placeholders only
                f"WHERE ct.tag_id IN ({marks}))"
            )
        return (
            "EXISTS (SELECT 1 FROM tagging_customer_tag ct "  # noqa: S608 - placeholders only
            f"WHERE ct.customer_id = c.id AND ct.tag_id IN ({marks}))"
        )
    if isinstance(node, Inactive):
        midnight = datetime.combine(today, time(0), SHANGHAI)
        since = (midnight - timedelta(days=node.days)).astimezone(UTC)
        return (
            "NOT EXISTS (SELECT 1 FROM bot_message m WHERE m.customer_id = c.id "  # noqa: S608 - placeholders only
            f"AND m.sender_role = {sql.bind('customer')} AND m.msgtime >= {sql.bind(since)})"
        )
    if isinstance(node, AttrCmp):
        return _compile_cmp(node, sql, schema)
    if isinstance(node, HoldingCmp | HoldingWithin):
        return _compile_holding(node, sql, today)
    if isinstance(node, AttrWithin):
        spec = _attr_spec(node.name, node.position, schema)
        if spec.type != "date":
            raise ExpressionError(
                f"WITHIN needs a date attribute; {node.name} is {spec.type}", node.position
            )
        col = sql.attr(node.name)
        lo = sql.bind(today.isoformat())
        hi = sql.bind((today + timedelta(days=node.days)).isoformat())
        # BETWEEN names the column once: each mention would be a parameter of its own.
        return _two_valued(sql, f"{col} BETWEEN {lo} AND {hi}")
    if isinstance(node, Not):
        outer, sql.negated = sql.negated, True
        try:
            return f"NOT ({await _compile(node.item, sql, tag_ids, today, schema)})"
        finally:
            sql.negated = outer
    joiner = " AND " if isinstance(node, And) else " OR "
    parts = [await _compile(i, sql, tag_ids, today, schema) for i in node.items]
    return "(" + joiner.join(parts) + ")"


def _rank_ok(op: str, i: int, rank: int) -> bool:
    return {
        "=": i == rank,
        "<>": i != rank,
        ">": i > rank,
        ">=": i >= rank,
        "<": i < rank,
        "<=": i <= rank,
    }[op]


def _holdings_of(sql: _Sql, condition: str) -> str:
    """EXISTS over the customer's holdings; ``condition`` reads one holding as ``h``."""
    if sql.dialect == "postgres":
        return (
            "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN "  # noqa: S608 - fixed text
            "jsonb_typeof(c.attributes -> 'holdings') = 'array' "
            "THEN c.attributes -> 'holdings' ELSE '[]'::jsonb END) h "
            f"WHERE {condition})"
        )
    return (
        # Fixed text around a condition of placeholders.
        "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_type(c.attributes, '$.holdings') "  # noqa: S608
        "= 'array' THEN json_extract(c.attributes, '$.holdings') ELSE '[]' END) h "
        f"WHERE {condition})"
    )


def _holding_field(sql: _Sql, name: str) -> str:
    if sql.dialect == "postgres":
        return f"(h.value ->> {sql.bind(name)})"
    return f"json_extract(h.value, {sql.bind('$.' + name)})"


def _compile_holding(node: HoldingCmp | HoldingWithin, sql: _Sql, today: date) -> str:
    spec = HOLDING_FIELDS.get(node.name)
    if spec is None:
        raise ExpressionError(
            f"unknown holding field {node.name!r} (one of {', '.join(HOLDING_FIELDS)})",
            node.position,
        )
    col = _holding_field(sql, node.name)
    if isinstance(node, HoldingWithin):
        if spec.type != "date":
            raise ExpressionError(f"WITHIN needs a date; holding.{node.name} is not", node.position)
        lo = sql.bind(today.isoformat())
        hi = sql.bind((today + timedelta(days=node.days)).isoformat())
        return _holdings_of(sql, f"{col} BETWEEN {lo} AND {hi}")
    op = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}[node.op]
    if spec.type == "enum":
        if node.value not in spec.values:
            raise ExpressionError(
                f"holding.{node.name} is one of {', '.join(spec.values)}", node.position
            )
        rank = spec.values.index(node.value)
        keep = [v for i, v in enumerate(spec.values) if _rank_ok(op, i, rank)]
        if not keep:
            return "(1 = 0)"
        return _holdings_of(sql, f"{col} IN ({', '.join(sql.bind(v) for v in keep)})")
    if spec.type == "date":
        try:
            date.fromisoformat(node.value)
        except ValueError:
            raise ExpressionError(
                f"holding.{node.name} compares with a date YYYY-MM-DD", node.position
            ) from None
    return _holdings_of(sql, f"{col} {op} {sql.bind(node.value)}")


def _attr_spec(name: str, position: int, schema: Schema) -> attributes.AttrSpec:
    spec = schema.get(name)
    if spec is None:
        raise ExpressionError(f"unknown attribute {name!r}", position)
    if spec.retired:
        raise ExpressionError(f"attribute {name!r} is retired (已停用)", position)
    if spec.sensitive:
        # Sealed at rest: the database cannot compare it.  A band, where there is one,
        # is kept in the clear for exactly this (docs/tagging.md, "Sensitive attributes").
        hint = f"; compare attr.{spec.band} instead" if spec.band else ""
        if name == "holdings":
            hint = "; use holding.product_code / holding.risk_level / holding.maturity_date"
        raise ExpressionError(
            f"{name} is sealed (sensitive) and cannot be compared{hint}", position
        )
    return spec


def _compile_cmp(node: AttrCmp, sql: _Sql, schema: Schema) -> str:
    spec = _attr_spec(node.name, node.position, schema)
    op = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}[node.op]
    if spec.type == "list":
        return _compile_contains(node, sql, spec, op)
    col = sql.attr(node.name)
    if spec.type in ("int", "decimal"):
        if not isinstance(node.value, float):
            raise ExpressionError(f"{node.name} compares with a number", node.position)
        cast = "NUMERIC" if sql.dialect == "postgres" else "REAL"
        return _two_valued(sql, f"CAST({col} AS {cast}) {op} {sql.bind(node.value)}")
    value = node.value if isinstance(node.value, str) else f"{node.value:g}"
    if spec.type == "enum":
        if value not in spec.values:
            raise ExpressionError(f"{node.name} is one of {', '.join(spec.values)}", node.position)
        if op in ("=", "<>"):
            return _two_valued(sql, f"{col} {op} {sql.bind(value)}")
        # Compare by rank: the values that satisfy the comparison, as a bound list.
        rank = spec.values.index(value)
        keep = [
            v
            for i, v in enumerate(spec.values)
            if {">": i > rank, ">=": i >= rank, "<": i < rank, "<=": i <= rank}[op]
        ]
        if not keep:
            return "(1 = 0)"
        return _two_valued(sql, f"{col} IN ({', '.join(sql.bind(v) for v in keep)})")
    if spec.type == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ExpressionError(
                f"{node.name} compares with a date YYYY-MM-DD", node.position
            ) from None
    return _two_valued(sql, f"{col} {op} {sql.bind(value)}")


def _compile_contains(node: AttrCmp, sql: _Sql, spec: attributes.AttrSpec, op: str) -> str:
    """A custom list: ``attr.hobbies = "高尔夫"`` holds when the list contains the value
    (``!=`` when it does not); order makes no sense for a list."""
    if op not in ("=", "<>"):
        raise ExpressionError(f"{node.name} is a list: use = (contains) or !=", node.position)
    value = node.value if isinstance(node.value, str) else f"{node.value:g}"
    if spec.values and value not in spec.values:
        raise ExpressionError(f"{node.name} is one of {', '.join(spec.values)}", node.position)
    if sql.dialect == "postgres":
        key = sql.bind(node.name)
        contains = (
            "EXISTS (SELECT 1 FROM jsonb_array_elements_text(CASE WHEN "  # noqa: S608 - placeholders
            f"jsonb_typeof(c.attributes -> {key}) = 'array' THEN c.attributes -> {key} "
            f"ELSE '[]'::jsonb END) v WHERE v = {sql.bind(value)})"
        )
    else:
        # "?" placeholders: each mention binds the path again, in order.
        typed, extracted = sql.bind("$." + node.name), sql.bind("$." + node.name)
        contains = (
            "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_type(c.attributes, "  # noqa: S608 - placeholders
            f"{typed}) = 'array' THEN json_extract(c.attributes, {extracted}) ELSE '[]' END) v "
            f"WHERE v.value = {sql.bind(value)})"
        )
    return contains if op == "=" else f"NOT {contains}"


def _tag_names(node: Node) -> list[str]:
    if isinstance(node, TagTerm):
        return [node.name]
    if isinstance(node, Not):
        return _tag_names(node.item)
    if isinstance(node, And | Or):
        return [n for i in node.items for n in _tag_names(i)]
    return []


def attribute_names(node: Node) -> list[str]:
    """The attributes an expression names (``attr.<name>``), in order."""
    if isinstance(node, AttrCmp | AttrWithin):
        return [node.name]
    if isinstance(node, Not):
        return attribute_names(node.item)
    if isinstance(node, And | Or):
        return [n for i in node.items for n in attribute_names(i)]
    return []


def _conn() -> BaseDBAsyncClient:
    return Tortoise.get_connection("default")


def _dialect(conn: BaseDBAsyncClient) -> str:
    return "postgres" if conn.capabilities.dialect == "postgres" else "sqlite"


async def where_clause(
    node: Node, *, conn: BaseDBAsyncClient, today: date | None = None, whole: bool = False
) -> tuple[str, list[Any]]:
    """``(sql, params)``: a condition on ``bot_customer c`` selecting the audience.

    ``whole=True`` when the query reads the whole audience (a count): see ``_Sql``.
    The clause is for a WHERE (or an AND/OR within one): a missing attribute makes a
    comparison unknown, which a WHERE reads as false.  To negate an audience, negate the
    expression (``NOT (…)``), whose terms are then compiled two-valued.
    """
    tag_ids = await service.tags_named(names=sorted(set(_tag_names(node))))
    sql = _Sql(_dialect(conn), whole=whole)
    clause = await _compile(node, sql, tag_ids, today or _today(), await _schema_for(node))
    return clause, sql.params


async def _schema_for(node: Node) -> Schema:
    # Custom fields never shadow a built-in name, so an expression naming built-in
    # attributes only compiles without reading the custom ones (one query less).
    named = set(attribute_names(node))
    if named <= set(attributes.BUILTIN):
        return attributes.BUILTIN
    return await attributes.load_schema()


class PreviewRow(NamedTuple):
    """One customer of a preview, masked.  A tuple: a preview builds one per row on
    every keystroke of the console's builders."""

    external_userid: str  # masked
    name: str  # masked


def mask_name(name: str) -> str:
    """A customer's name as marketing sees it: the first character, the rest hidden."""
    return "" if not name else name[0] + "*" * min(len(name) - 1, 3) if len(name) > 1 else "*"


#: A preview's columns, masked by the database as ``bot.outbox.mask_external_userid`` and
#: ``mask_name`` do (a test holds them equal): a name in the clear never leaves the
#: database for a sample that shows it masked, and 20 rows cost no Python per row.
MASKED_COLUMNS = (
    "CASE WHEN length(c.external_userid) <= 10 THEN '…' ELSE substr(c.external_userid, 1, 4) "
    "|| '…' || substr(c.external_userid, length(c.external_userid) - 3) END AS external_userid, "
    "CASE WHEN c.name IS NULL OR c.name = '' THEN '' WHEN length(c.name) = 1 THEN '*' "
    "ELSE substr(c.name, 1, 1) || substr('***', 1, length(c.name) - 1) END AS name"
)

#: What the custom attribute fields are now, as one text: any field added, edited,
#: retired or removed changes it (every change of a field sets its ``updated_at``).
_FIELDS_STAMP = (
    "(SELECT CAST(COUNT(*) AS TEXT) || '/' || COALESCE(CAST(MAX(f.updated_at) AS TEXT), '') "
    "FROM tagging_attribute_field f)"
)


async def fetch(conn: BaseDBAsyncClient, sql: str, params: Sequence[Any]) -> list[Any]:
    """Rows of a SELECT as tuples, straight from the driver (sqlite3 rows, asyncpg
    records: both index by position), under the client's connection lock — no dicts,
    no statement-kind sniffing.  The bench runs its hand-written queries through it too.
    """
    async with conn.acquire_connection() as raw:
        if _dialect(conn) == "postgres":
            return list(await raw.fetch(sql, *params))
        return list(await raw.execute_fetchall(sql, params))


class _Statement:
    """An expression compiled for one use (a count, or a preview of ``limit`` rows) on
    one dialect and day: the statement, its parameters, and what it was compiled with —
    the tag ids of its names and, when it names custom attributes, the fields' stamp.
    Its first two columns read those again, live, in the same query (``_run``)."""

    __slots__ = ("fields", "params", "sql", "tag_ids", "_pairs_seen")

    def __init__(
        self,
        sql: str,
        params: tuple[Any, ...],
        tag_ids: dict[str, tuple[int, ...]],
        fields: str | None,
    ) -> None:
        self.sql = sql
        self.params = params
        self.tag_ids = tag_ids
        self.fields = fields
        # The live pairs column as last read and found to match ``tag_ids``: the same
        # text again needs no decoding (the database aggregates in a stable order).
        self._pairs_seen: Any = None

    def current(self, row: Sequence[Any]) -> bool:
        if self.tag_ids:
            pairs = row[0]
            if pairs is None or pairs != self._pairs_seen:
                if _as_ids(pairs) != self.tag_ids:
                    return False
                self._pairs_seen = pairs
        return self.fields is None or str(row[1]) == self.fields


#: Compiled statements by (expression, use, dialect, day).  Never trusted alone: every
#: run reads the live tag ids and field stamp it was compiled with in its own query and
#: compiles again when they differ.  Bounded; cleared whole when full.
_STATEMENTS: dict[tuple[Any, ...], _Statement] = {}
_STATEMENTS_MAX = 1024


def _tag_pairs(sql: _Sql, names: Sequence[str]) -> str:
    """A scalar subquery: the live tags of ``names`` as a JSON array of [name, id]."""
    marks = ", ".join(sql.bind(n) for n in names)
    pairs = (
        "json_agg(json_build_array(t.name, t.id))"
        if sql.dialect == "postgres"
        else "json_group_array(json_array(t.name, t.id))"
    )
    return (
        f"(SELECT {pairs} FROM tagging_tag t "  # noqa: S608 - placeholders only
        f"WHERE t.name IN ({marks}) AND t.deleted_at IS NULL)"
    )


def _as_ids(pairs: Any) -> dict[str, tuple[int, ...]]:
    found: dict[str, list[int]] = {}
    for name, tag_id in json.loads(pairs) if isinstance(pairs, str) else pairs or ():
        found.setdefault(str(name), []).append(int(tag_id))
    return {name: tuple(sorted(ids)) for name, ids in found.items()}


async def _fields_stamp(conn: BaseDBAsyncClient) -> str:
    rows = await fetch(conn, f"SELECT {_FIELDS_STAMP}", ())
    return str(rows[0][0])


async def _compile_statement(
    node: Node, *, conn: BaseDBAsyncClient, dialect: str, today: date, limit: int | None
) -> _Statement:
    """Look the names up and compile (``limit=None``: a count)."""
    names = sorted(set(_tag_names(node)))
    custom = not set(attribute_names(node)) <= set(attributes.BUILTIN)
    # The stamp is read before the schema: a change in between compiles from the newer
    # schema under the older stamp, which the next run finds stale (never the reverse).
    stamp = await _fields_stamp(conn) if custom else None
    schema = await attributes.load_schema() if custom else attributes.BUILTIN
    found = await service.tags_named(names=names)
    tag_ids = {name: tuple(sorted(v)) for name, v in found.items()}
    sql = _Sql(dialect, whole=limit is None)
    # First in the statement, so first among SQLite's "?" parameters.
    pairs = _tag_pairs(sql, names) if names else "NULL"
    fields = _FIELDS_STAMP if custom else "NULL"
    ids = {n: list(v) for n, v in tag_ids.items()}
    clause = await _compile(node, sql, ids, today, schema)
    # The clause is built from the grammar's fixed fragments and placeholders; the limit
    # is a literal (an int): SQLite plans a bound one as if it could be large.
    if limit is None:
        text = (
            f"SELECT {pairs}, {fields}, COUNT(*) FROM bot_customer c "  # noqa: S608
            f"WHERE {clause}"
        )
    else:
        text = (
            f"SELECT {pairs}, {fields}, {MASKED_COLUMNS} FROM bot_customer c "  # noqa: S608
            f"WHERE {clause} ORDER BY c.id LIMIT {int(limit)}"
        )
    return _Statement(text, tuple(sql.params), tag_ids, stamp)


async def _run(expr: Node | str, *, today: date | None, limit: int | None) -> list[Any]:
    """The rows of an expression's count or preview statement, compiled once per
    expression and kept (``_STATEMENTS``) while its tags and fields stay as they were.

    A preview is the live answer of the console's builders, and the hand-written query
    it is measured against (bench/audience.py) answers in a fraction of a millisecond:
    parsing, looking the tag names up (a round trip; on SQLite a hop to the database
    thread) and compiling again on every keystroke were most of its time.  So a run is
    one query: the kept statement reads, beside its rows, the live (name, id) pairs of
    its tag names and the fields' stamp; only when they differ from what it was compiled
    with — or a preview finds no row to carry them — is it looked up and compiled again
    (an unknown name then raises, with its position).  The ids stay bound values, not a
    subquery: PostgreSQL cannot estimate ``tag_id IN (SELECT …)`` and chose a hashed
    scan of every tagged row (50x the hand-written query).
    """
    conn = _conn()
    dialect = _dialect(conn)
    day = today or _today()
    key = (expr, limit, dialect, day)
    for _ in range(3):
        statement = _STATEMENTS.get(key)
        fresh = statement is None
        if statement is None:
            node = parse(expr) if isinstance(expr, str) else expr
            statement = await _compile_statement(
                node, conn=conn, dialect=dialect, today=day, limit=limit
            )
            if len(_STATEMENTS) >= _STATEMENTS_MAX:
                _STATEMENTS.clear()
            _STATEMENTS[key] = statement
        rows = await fetch(conn, statement.sql, statement.params)
        if rows:
            if statement.current(rows[0]):
                return rows
        elif fresh or await _still_current(conn, statement):
            return rows  # nobody matches, and with the right ids
        _STATEMENTS.pop(key, None)  # a tag or field changed: look up, compile again
    raise RuntimeError("the tags or fields an audience names kept changing while it ran")


async def _still_current(conn: BaseDBAsyncClient, statement: _Statement) -> bool:
    found = await service.tags_named(names=sorted(statement.tag_ids))
    if {n: tuple(sorted(v)) for n, v in found.items()} != statement.tag_ids:
        return False
    return statement.fields is None or await _fields_stamp(conn) == statement.fields


async def count(expr: Node | str, *, today: date | None = None) -> int:
    """How many customers ``expr`` (an expression, or its parsed AST) selects."""
    rows = await _run(expr, today=today, limit=None)
    return int(rows[0][2])


async def preview(expr: Node | str, *, limit: int, today: date | None = None) -> list[PreviewRow]:
    """The first ``limit`` customers of the audience in id order, masked (by the
    database: ``MASKED_COLUMNS``)."""
    rows = await _run(expr, today=today, limit=int(limit))
    # tuple.__new__ skips the named tuple's keyword-handling constructor (a third of
    # a preview's Python for 20 rows).
    return [_new_tuple(PreviewRow, (r[2], r[3])) for r in rows]


_new_tuple = tuple.__new__


def check_all(exprs: Sequence[str]) -> None:
    for e in exprs:
        parse(e)
