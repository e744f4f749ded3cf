"""One copy of the SQL for both stores, and the few places where SQLite and PostgreSQL differ.

Every query module in ``storage/`` writes its SQL once, in the subset both
dialects understand; :class:`PostgresStore <storage.postgres.PostgresStore>`
translates it on the way (:func:`to_postgres`, cached per statement), and the
rare statement that cannot be shared asks ``store.dialect`` for the piece that
differs (:class:`Dialect`).

Checklist for a new query module (what the coordinator checks when porting one)
--------------------------------------------------------------------------------

1. ``?`` placeholders, positional parameters only (no ``:name``). A ``%`` in
   the SQL is fine (it is escaped for psycopg).
2. Upserts are ``INSERT ... ON CONFLICT (key) DO UPDATE SET c = excluded.c`` or
   ``... ON CONFLICT DO NOTHING``; never ``INSERT OR REPLACE`` / ``OR IGNORE``
   (SQLite only; ``OR REPLACE`` also deletes the row first). In ``DO UPDATE``,
   refer to the stored row's columns qualified by the table name
   (``SET n = t.n + excluded.n``): PostgreSQL rejects them unqualified where
   ``excluded`` has the same column.
3. No scalar ``MIN(a, b)`` / ``MAX(a, b)`` (PostgreSQL has ``LEAST``/``GREATEST``,
   SQLite has not): write ``CASE WHEN a < b THEN a ELSE b END``.
4. Quote identifiers that are keywords in either dialect: ``"end"``,
   ``"column"``, ``"offset"``, ``"references"``, ``"window"``, ``"order"``, ``"user"``.
5. Types in ``CREATE``/``ALTER TABLE``: ``TEXT``, ``INTEGER`` (64-bit on both:
   translated to ``BIGINT``), ``REAL`` (translated to ``DOUBLE PRECISION``, not
   PostgreSQL's 4-byte ``real``), ``BLOB`` (``BYTEA``). ``INTEGER PRIMARY KEY``
   gets its values from the database on both. Times are ISO strings
   (:func:`storage.records.iso`), booleans ``INTEGER`` 0/1, JSON ``TEXT``.
   ``WITHOUT ROWID`` is dropped on PostgreSQL.
6. Conditions are boolean expressions (``WHERE 1 = 1``, ``drifted = 1``), never a
   bare integer. Pass each parameter as the column's Python type (``str`` for ``TEXT``,
   ``int`` for ``INTEGER``): SQLite converts silently, PostgreSQL refuses.
   ``COUNT``/``SUM`` come back as ``int`` on both.
7. ``rowid`` (SQLite's implicit row id) exists on PostgreSQL too: every table
   created through the migrations gets a ``rowid`` identity column there, in
   insertion order; ``SELECT *`` leaves it out on both. Prefer a real key anyway.
   (Migration 9 drops it again from the label join's four tables, which SQLite
   clusters by their key, and migration 10 from ``metrics``, read by window id only.)
8. JSON inside a column: ``store.dialect.json_values(expr)`` is a table of its
   array elements with one column ``value`` (``json_each`` / ``json_array_elements_text``).
   A JSON document passed as a parameter (a list of ids for ``json_values('?')``) is a
   :class:`JsonParam` (``json_param(value)``): PostgreSQL's json cannot turn ``\\u0000``
   into text, and the store replaces that escape only in parameters it knows are JSON.
   A batch of rows to write (upsert, update): ``store.dialect.batch_rows`` /
   ``batch_update`` give the statement, run by ``store.execute_batch(sql, rows)``:
   on PostgreSQL one set-based statement with the rows as one JSON parameter
   (``batch_params``; about twice as fast a row as psycopg's ``executemany``), on
   SQLite once per row (faster than reading JSON). Reduce rows repeating a
   key first where the result depends on their order (one statement is not applied
   row by row; PostgreSQL refuses an upsert touching a row twice).
9. Rows that several instances may claim: ``store.dialect.skip_locked`` after the
   ``SELECT`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, nothing on SQLite, where a
   write transaction already excludes every other writer); a read that must not
   change under the transaction: ``store.dialect.for_update``. Read-modify-write
   of rows no key covers (e.g. "insert if none is firing"): ``store.lock(key)``
   inside the transaction (a PostgreSQL advisory lock, a no-op on SQLite).
10. A column that holds values of any type (a score or a class name: SQLite's
    typeless ``BLOB`` column, ``jsonb`` on PostgreSQL, see migration 9): pass each
    value through ``store.dialect.variant`` (JSON text for PostgreSQL; SQLite takes
    the value itself). Both give it back as the Python value it was.
11. No ``LIKE`` to compare text: SQLite's ignores the case of ASCII letters,
    PostgreSQL's does not. A prefix is ``substr(c, 1, ?) = ?`` (both count characters).
12. Nothing file-specific (``PRAGMA``, ``VACUUM``, ``sqlite_master``) outside
    :mod:`storage.db`; test the module with the parametrized ``store`` fixture
    (``tests/storage/conftest.py``), which runs it on both stores.
13. Never read new rows "after the last id seen": on PostgreSQL ids are taken in one
    order and committed in another, so a cursor past an id not committed yet skips it
    for good. Record the writing transaction (a ``txid`` column defaulting to
    :data:`POSTGRES_TXID` there, 0 on SQLite), read only rows with ``txid`` below
    ``store.dialect.finished_below`` and move the cursor by ``(txid, id)`` (the
    dead-letter feed, :func:`storage.dead_letters.dead_letters_after`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


class JsonParam(str):
    """A parameter that is a JSON document (read with ``CAST(? AS json)``/``jsonb`` on
    PostgreSQL): the PostgreSQL store sends its ``\\u0000`` escapes as ``\\ufffd``, as it
    sends a NUL in any text as U+FFFD (see :mod:`storage.postgres`). SQLite takes it as text."""

    __slots__ = ()


def json_param(value: Any) -> JsonParam:
    """``value`` (a list of ids, ...) as one JSON parameter."""
    return JsonParam(orjson.dumps(value).decode())


@dataclass(frozen=True, slots=True)
class Dialect:
    """The pieces of SQL that differ between the two stores."""

    name: str
    #: appended to a SELECT whose rows the transaction will update
    for_update: str
    #: appended to a SELECT that claims rows other instances may be claiming too
    skip_locked: str
    #: an expression: a transaction id such that every transaction with a smaller id has
    #: finished (committed or rolled back), as ``dead_letters.txid`` counts them. A row
    #: with a smaller ``txid`` not visible now never will be; one with this id or a larger
    #: one may still commit. PostgreSQL: the ``xmin`` of the statement's snapshot; SQLite: 1
    #: (its rows keep ``txid`` 0, and a row a reader sees is committed: one writer at a time)
    finished_below: str = "1"
    #: an expression: the identity of the database server (``system_identifier``: a new
    #: one after ``initdb``, so after a restore into another server), as text; None: none
    server_identity: str | None = None

    def json_values(self, expr: str) -> str:
        """A table (one column ``value``, text) of the elements of the JSON array in ``expr``."""
        if self.name == POSTGRESQL:
            return f"json_array_elements_text(CAST({expr} AS json)) AS j(value)"
        return f"json_each({expr}) AS j"

    def json_key(self, expr: str, key: str) -> str:
        """The text value of top-level ``key`` of the JSON object (text) in ``expr``; NULL
        when the key is absent. ``key``: letters, digits and ``_`` only (it is inlined)."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"json_key: {key!r} is not a plain key")
        if self.name == POSTGRESQL:
            return f"(CAST({expr} AS json) ->> '{key}')"
        return f"json_extract({expr}, '$.{key}')"

    @property
    def json_batches(self) -> bool:
        """Whether a batch write is one statement with the rows as one JSON parameter
        (:meth:`batch_rows`, :meth:`batch_update`; PostgreSQL, where psycopg's pipelined
        ``executemany`` costs about twice as much a row) or one statement per row through
        ``executemany`` (SQLite, where reading the rows from JSON is the slower way)."""
        return self.name == POSTGRESQL

    def json_rows(self, expr: str) -> str:
        """A table (alias ``j``, one column ``value``) of the elements of the JSON array of
        arrays in ``expr``, its fields read with :meth:`json_field`."""
        if self.name == POSTGRESQL:
            return f"jsonb_array_elements(CAST({expr} AS jsonb)) AS j(value)"
        return f"json_each({expr}) AS j"

    def json_field(self, index: int, kind: str = "text") -> str:
        """Field ``index`` of a row of :meth:`json_rows`: ``kind`` ``text``, ``int``
        (64-bit), ``real`` (a double; pass ±inf as :meth:`real` gives it, JSON has no
        infinity) or ``variant`` (a value of any type for an any-type column, JSON null as
        SQL NULL, see :meth:`variant`)."""
        i = int(index)
        if kind == "int":
            return f"CAST(j.value ->> {i} AS BIGINT)"
        if kind == "real":
            return f"CAST(j.value ->> {i} AS {'DOUBLE PRECISION' if self.name == POSTGRESQL else 'REAL'})"
        if kind == "variant" and self.name == POSTGRESQL:
            return f"NULLIF(j.value -> {i}, 'null'::jsonb)"
        if kind not in ("text", "variant"):
            raise ValueError(f"json_field: unknown kind {kind!r}")
        return f"j.value ->> {i}"

    def batch_rows(
        self, fixed: Sequence[str], kinds: Sequence[str], nulls: Collection[int] = (), copies: int = 1
    ) -> str:
        """The rows of an ``INSERT`` of a batch: the SQL expressions ``fixed`` (the same in
        every row), then one field per ``kinds`` (see :meth:`json_field`). With
        :attr:`json_batches` a ``SELECT`` from the one JSON parameter (its ``WHERE`` keeps
        SQLite from reading a following ``ON CONFLICT`` as a join's ``ON``), else
        ``VALUES`` with one ``?`` per field, run once per row.

        ``nulls``: indexes (into ``kinds``) of fields that are NULL in every row, written
        as a literal ``NULL`` and left out of the rows, for statements run once per row
        only (``ValueError`` with :attr:`json_batches`): SQLite's driver binds a ``None``
        several times slower than a number (it looks for an adapter first).

        ``copies``: rows per ``VALUES`` (statements run once per row only, ``ValueError``
        with :attr:`json_batches` or below 1): a run of the statement then takes the
        fields of ``copies`` rows one after the other."""
        if copies < 1 or (copies > 1 and self.json_batches):
            raise ValueError(f"batch_rows: copies must be 1, or above 1 for statements run once per row, got {copies!r}")
        if self.json_batches:
            if nulls:
                raise ValueError("batch_rows: nulls are for statements run once per row")
            fields = [*fixed, *(self.json_field(i, k) for i, k in enumerate(kinds))]
            return f"SELECT {', '.join(fields)} FROM {self.json_rows('?')} WHERE 1 = 1"
        row = f"({', '.join([*fixed, *('NULL' if i in nulls else '?' for i in range(len(kinds)))])})"
        return "VALUES " + ", ".join([row] * copies)

    def batch_update(self, table: str, sets: Sequence[str], where: str, keys: Sequence[str],
                     kinds: Sequence[str]) -> str:
        """An ``UPDATE`` of ``table`` by a batch: each row's fields (``kinds``) are the new
        values of the columns ``sets``, then the values of the columns ``keys`` that find
        the row, besides the condition ``where``. With :attr:`json_batches` one statement
        reading the rows first (a materialized CTE: each row looked up by the key), else
        one statement per row."""
        if len(kinds) != len(sets) + len(keys):
            raise ValueError("batch_update: one kind per set column and key")
        if not self.json_batches:
            assign = ", ".join(f"{c} = ?" for c in sets)
            return f"UPDATE {table} SET {assign} WHERE {where}" + "".join(f" AND {k} = ?" for k in keys)
        names = [*sets, *keys]
        fields = ", ".join(f"{self.json_field(i, k)} AS {n}" for i, (n, k) in enumerate(zip(names, kinds, strict=True)))
        assign = ", ".join(f"{c} = u.{c}" for c in sets)
        return (
            f"WITH u AS MATERIALIZED (SELECT {fields} FROM {self.json_rows('?')})"
            f" UPDATE {table} SET {assign} FROM u WHERE {where}" + "".join(f" AND {table}.{k} = u.{k}" for k in keys)
        )

    def batch_params(self, rows: Iterable[Sequence[Any]]) -> JsonParam:
        """The one parameter of a :attr:`json_batches` statement: ``rows`` as a JSON array
        of arrays (NaN, infinities and None as null)."""
        return JsonParam(orjson.dumps(list(rows), option=orjson.OPT_SERIALIZE_NUMPY).decode())

    def real(self, value: float | None) -> float | str | None:
        """A float for a ``real`` field of a batch row: NaN as None (SQLite has no NaN
        and stores NULL for it; both stores then read None); with :attr:`json_batches` ±inf
        as the text PostgreSQL casts back (JSON would make it null); else as it is."""
        if value is None:
            return None
        f = float(value)
        if f != f:
            return None
        if self.json_batches and math.isinf(f):
            return "Infinity" if f > 0 else "-Infinity"
        return f

    @property
    def encodes_variants(self) -> bool:
        """Whether :meth:`variant` changes values (callers may skip it when not)."""
        return self.name == POSTGRESQL

    def variant(self, value: Any) -> Any:
        """``value`` (a float, an int, a str or None) as a column of any type takes it: on
        PostgreSQL JSON text for ``jsonb``, NaN and None as NULL (as SQLite stores NaN)."""
        if self.name != POSTGRESQL:
            return value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return orjson.dumps(value).decode()


#: the id of the writing transaction, as ``dead_letters.txid`` stores it (PostgreSQL's column
#: default: ``pg_current_xact_id()``, the 64-bit id with its wrap-around epoch, so it only
#: grows; as BIGINT, which it fits for 2^31 epochs of 2^32 transactions). The id of the
#: top-level transaction, also inside a savepoint.
POSTGRES_TXID = "CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT)"

SQLITE_DIALECT = Dialect(SQLITE, for_update="", skip_locked="")
POSTGRES_DIALECT = Dialect(
    POSTGRESQL,
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    finished_below="CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT)",
    server_identity="(SELECT CAST(system_identifier AS TEXT) FROM pg_control_system())",
)

# quoted strings and identifiers are copied as they are; ? and % outside them are rewritten
_TOKENS = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")|(\?)|(%)""")
_DDL = re.compile(r"^\s*(CREATE\s+TABLE|ALTER\s+TABLE)\b", re.IGNORECASE)
_TYPES = (
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\b", re.IGNORECASE), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.IGNORECASE), "BIGINT"),
    (re.compile(r"\bREAL\b", re.IGNORECASE), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.IGNORECASE), "BYTEA"),
    # SQLite's clustering by primary key: PostgreSQL tables are heaps (the key is an index)
    (re.compile(r"\s*\bWITHOUT\s+ROWID\b", re.IGNORECASE), ""),
)
_CREATE = re.compile(r"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\"[^\"]+\"|\w+)\s*\(", re.IGNORECASE)


def _outside_quotes(sql: str, fn: object) -> str:
    """Apply ``fn`` (str -> str) to the parts of ``sql`` outside quotes."""
    out, pos = [], 0
    for m in re.finditer(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", sql):
        out.append(fn(sql[pos : m.start()]))  # type: ignore[operator]
        out.append(m.group(0))
        pos = m.end()
    out.append(fn(sql[pos:]))  # type: ignore[operator]
    return "".join(out)


@lru_cache(maxsize=4096)
def to_postgres(sql: str, with_params: bool = True) -> str:
    """``sql`` as psycopg wants it: ``?`` -> ``%s`` and ``%`` -> ``%%`` when parameters
    are passed; in ``CREATE``/``ALTER TABLE``, SQLite's type names as PostgreSQL's, and
    every new table gets the ``rowid`` identity column SQLite gives it implicitly."""
    if _DDL.match(sql):
        def types(part: str) -> str:
            for pattern, repl in _TYPES:
                part = pattern.sub(repl, part)
            return part

        sql = _outside_quotes(sql, types)
        m = _CREATE.match(sql)
        if m is not None and not _has_rowid(sql):
            sql = sql[: m.end()] + "rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE, " + sql[m.end() :]
    if not with_params:
        return sql

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(1).replace("%", "%%")
        return "%s" if m.group(2) else "%%"

    return _TOKENS.sub(sub, sql)


def _has_rowid(sql: str) -> bool:
    return re.search(r"\browid\b", sql, re.IGNORECASE) is not None


def mentions_rowid(sql: str) -> bool:
    """Whether a query asks for ``rowid`` by name (else ``SELECT *`` leaves it out)."""
    return "rowid" in sql.lower()
