"""The decision writer's statements, as the driver takes them.

`DecisionStore.append_many` runs on the decision writer's thread for every batch, and with
SQLAlchemy Core statements half of its time was SQLAlchemy's: the statement's cache key, the
bind and result processors, and each JSON column encoded twice (once for the hash, once by the
column's type). Here the three statements of every append (which payments are decided already,
the chain's head, the insert) are plain SQL run on the driver's cursor, inside the same
transaction and with the same error translation, and each JSON field is encoded once:
its canonical text is both the column's value and its part of the record's canonical form.

`decision_row(record, seq, prev_hash)` gives the insert's parameters and the record's hash;
the hash is `engine.chain.decision_hash` of the same record, composed from the parts instead of
encoded again (tests/unit/test_rows.py checks the two agree).
"""

from __future__ import annotations

import functools
import hashlib
import json.encoder
from collections.abc import Sequence
from contextlib import closing
from typing import Any

import sqlalchemy as sa

from engine.chain import canonical
from engine.records import FIELDS, DecisionRecord
from engine.schema import decisions

# The columns an append writes, in the insert's order (a new record's `purged_at` is NULL).
COLUMNS: tuple[str, ...] = tuple(c.name for c in decisions.columns if c.name != "purged_at")
_JSON = frozenset(c.name for c in decisions.columns if isinstance(c.type, sa.JSON))
# JSON columns whose None is SQL NULL (`none_as_null`); in the others None is JSON's `null`.
_SQL_NULL = frozenset(c.name for c in decisions.columns
                      if isinstance(c.type, sa.JSON) and c.type.none_as_null)  # fmt: skip
# The canonical form's keys, sorted: the record's fields and its two links.
_KEYS = tuple(sorted((*FIELDS, "seq", "prev_hash")))
_HEADS = tuple(f'"{key}":' for key in _KEYS)  # field names are plain identifiers
_string = json.encoder.encode_basestring  # the C encoder json.dumps(ensure_ascii=False) uses
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _mark(dialect: sa.Dialect) -> str:
    """The driver's placeholder (SQLite's and psycopg's: the store's two backends)."""
    try:
        return _PLACEHOLDER[dialect.paramstyle]
    except KeyError:
        raise ValueError(
            f"the decision store's driver {dialect.driver} takes {dialect.paramstyle} "
            f"parameters; it supports {', '.join(_PLACEHOLDER)} (SQLite, psycopg)"
        ) from None


def insert_sql(dialect: sa.Dialect) -> str:
    return _insert_sql(dialect.name, _mark(dialect))


@functools.cache
def _insert_sql(backend: str, mark: str) -> str:
    json_mark = f"CAST({mark} AS JSON)" if backend == "postgresql" else mark
    values = ", ".join(json_mark if name in _JSON else mark for name in COLUMNS)
    return f"INSERT INTO decisions ({', '.join(COLUMNS)}) VALUES ({values})"


HEAD_SQL = "SELECT seq, hash FROM decisions ORDER BY seq DESC LIMIT 1"


def decided_sql(dialect: sa.Dialect, count: int) -> str:
    """The payment ids among `count` given that have a decision already."""
    marks = ", ".join([_mark(dialect)] * count)
    return f"SELECT payment_id FROM decisions WHERE payment_id IN ({marks})"


def decision_row(record: DecisionRecord, seq: int, prev_hash: str) -> tuple[tuple[Any, ...], str]:
    """The insert's parameters (in `COLUMNS` order) and the record's hash."""
    values = record.to_json()
    values["seq"], values["prev_hash"] = seq, prev_hash
    texts = {}
    for name in _JSON:
        value = values[name]
        texts[name] = "null" if value is None else canonical(value)
    parts = []
    for key, head in zip(_KEYS, _HEADS, strict=True):
        text = texts.get(key)
        parts.append(head + (_scalar(values[key]) if text is None else text))
    digest = hashlib.sha256(("{" + ",".join(parts) + "}").encode("utf-8")).hexdigest()
    values["hash"] = digest
    row = tuple(
        (None if values[name] is None and name in _SQL_NULL else texts[name])
        if name in _JSON
        else values[name]
        for name in COLUMNS
    )
    return row, digest


def _scalar(value: Any) -> str:
    """A scalar field as `json.dumps` writes it: the same text the canonical form holds."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return _string(value)
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float:
        return float.__repr__(value)  # finite: the record refuses the rest
    return canonical(value)


def decided(conn: sa.Connection, payment_ids: Sequence[str]) -> list[str]:
    """Which of `payment_ids` have a decision stored."""
    if not payment_ids:
        return []
    sql = decided_sql(conn.dialect, len(payment_ids))
    with closing(_run(conn, sql, tuple(payment_ids))) as cursor:
        return [row[0] for row in cursor.fetchall()]


def head(conn: sa.Connection) -> tuple[int, str] | None:
    with closing(_run(conn, HEAD_SQL, ())) as cursor:
        row = cursor.fetchone()
    return (int(row[0]), str(row[1])) if row else None


def insert(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    _run(conn, insert_sql(conn.dialect), rows, many=True).close()


def _run(conn: sa.Connection, sql: str, params: Any, *, many: bool = False) -> Any:
    """`sql` on the connection's driver cursor, in its transaction (SQLAlchemy's own execution
    context costs about 30 us a statement here); the driver's errors become SQLAlchemy's, as
    `engine.database.translated` expects them."""
    cursor = conn.connection.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except conn.dialect.loaded_dbapi.Error as error:
        # As SQLAlchemy's own execution does: a connection the server dropped is invalidated
        # (the pool never hands it out again, and the transaction's end does not talk to a dead
        # socket, whose error would replace the server's words with "the connection is lost").
        lost = conn.dialect.is_disconnect(error, conn.connection.dbapi_connection, cursor)
        if lost:
            conn.invalidate(error)
        else:
            cursor.close()
        raise sa.exc.DBAPIError.instance(
            sql, params, error, conn.dialect.loaded_dbapi.Error, connection_invalidated=lost,
            dialect=conn.dialect,
        ) from error  # fmt: skip
    return cursor
