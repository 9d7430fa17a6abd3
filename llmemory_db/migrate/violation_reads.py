"""Reading the live table for a data check: the table and its key, the queries (count, examples, the listing the
user runs), bounded by a statement_timeout, READ ONLY."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql


from .sizes import human_bytes
from .violation_checks import EXAMPLES, SCAN_BYTES_PER_SECOND, Check, checks_of_failure

# --------------------------------------------------------------------------- reading the live table

_TABLE = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.reltuples::bigint, pg_relation_size(c.oid),
       pg_total_relation_size(c.oid),
       (SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND i.indisprimary)
FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS q(schema, name, n)
JOIN pg_namespace n ON n.nspname = q.schema
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = q.name AND c.relkind IN ('r', 'p', 'm', 'f')
ORDER BY q.n LIMIT 1
"""

_COLUMN_TYPE = """
SELECT format_type(a.atttypid, a.atttypmod), t.typname::text, t.typcategory::text, a.atttypmod
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped
"""

_TYPE = "SELECT t.typname::text, t.typcategory::text FROM pg_type t WHERE t.oid = to_regtype(%s)"


@dataclass
class Table:
    oid: int
    schema: str
    name: str
    kind: str
    rows: Optional[int]
    heap: int                # bytes of the table itself (what a check reads)
    total: int               # with its indexes and TOAST (what the other findings show)
    primary_key: List[str]

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"


def candidates(relation: Tuple[Optional[str], str], target: str) -> List[Tuple[str, str]]:
    schema, name = relation
    return [(schema, name)] if schema else [(target, name), ("public", name)]


def table_of(conn: psycopg.Connection, relation: Tuple[Optional[str], str], target: str) -> Optional[Table]:
    names = candidates(relation, target)
    row = conn.execute(_TABLE, ([s for s, _ in names], [n for _, n in names])).fetchone()
    if row is None:
        return None
    oid, schema, name, kind, rows, heap, total, pk = row
    return Table(oid, schema, name, kind, None if rows is None or rows < 0 else rows, heap or 0, total or 0,
                 list(pk or ()))


_INTEGERS = ("int2", "int4", "int8")


class _NotYet(str):
    """A note: the check needs what does not exist yet (this plan makes it first, or the statement fails on it)."""


def _cast_plan(conn: psycopg.Connection, table: Table, column: str, type_name: str
               ) -> Tuple[Optional[sql.Composable], str]:
    """(predicate of the values the new type rejects, '') or (None, why it is not checked / '' when it cannot
    fail)."""
    found = conn.execute(_COLUMN_TYPE, (table.oid, column)).fetchone()
    if found is None:
        return None, _NotYet(f"column {column} does not exist (yet) on {table.display}: not checked")
    old_display, old, old_category, _ = found
    new = conn.execute(_TYPE, (type_name,)).fetchone()
    if new is None:
        return None, _NotYet(f"type {type_name} does not exist (yet): not checked")
    new_name, new_category = new
    bare = "(" not in type_name
    if (new_name == "text" or (new_name == "varchar" and bare)
            or (old in _INTEGERS and new_name in _INTEGERS and _INTEGERS.index(new_name) >= _INTEGERS.index(old))
            or (old in _INTEGERS and new_name == "numeric" and bare)
            or (old == new_name and bare) or (old, new_name) == ("float4", "float8")):
        return None, ""  # every value fits: nothing can fail
    same_input = (old_category == "S" or (old in _INTEGERS and new_name in _INTEGERS)
                  or (old in _INTEGERS + ("numeric",) and new_name == "numeric"))
    if not same_input:
        return None, (f"the cast from {old_display} to {type_name} is not checked (its rules are not the new "
                      "type's input rules)")
    if conn.info.server_version < 160000:
        return None, "checking a cast needs PostgreSQL 16 or later (pg_input_is_valid): not checked"
    column_sql = sql.Identifier("src", column)
    return sql.SQL("{col} IS NOT NULL AND NOT pg_input_is_valid({col}::text, {type})").format(
        col=column_sql, type=sql.Literal(type_name)), ""


@dataclass
class Result:
    """What a check found: ``violations`` None when it did not run (``note`` says why)."""

    violations: Optional[int] = None
    rows: Optional[int] = None           # unique: the rows in the duplicate groups
    examples: List[dict] = field(default_factory=list)
    query: str = ""
    note: str = ""
    seconds: float = 0.0
    not_yet: bool = False                # it refers to something that does not exist yet (this plan makes it first)


def queries(check: Check, table: Table, conn: Optional[psycopg.Connection]
             ) -> Tuple[Optional[sql.Composable], Optional[sql.Composable], Optional[sql.Composable], str]:
    """(listing, count, examples) queries of a check on ``table``, or a note when it cannot be checked.
    Without ``conn`` (the listing named by an error at apply): from the statement alone, every column listed."""
    source = sql.SQL("{} AS src").format(table.ident)
    if check.rule == "unique-violation":
        keys = sql.SQL(", ").join(k for _, k in check.keys)
        conditions = ([sql.SQL("{} IS NOT NULL").format(k) for _, k in check.keys] if check.nulls_distinct else [])
        if check.where is not None:
            conditions.append(check.where)
        where = sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL("")
        listing = sql.SQL("SELECT {keys}, count(*) AS rows FROM {source}{where} GROUP BY {keys} "
                          "HAVING count(*) > 1 ORDER BY count(*) DESC").format(keys=keys, source=source, where=where)
        examples = sql.SQL("SELECT g.*, count(*) OVER (), sum(g.rows) OVER () FROM ({}) AS g LIMIT {}").format(
            listing, sql.Literal(EXAMPLES))
        return listing, None, examples, ""
    predicate = check.predicate
    if check.rule == "cast-failure":
        column, type_name, using = check.cast
        if using:
            return None, None, None, (f"the USING expression ({using}) cannot be checked before it runs: look at "
                                      "the values yourself")
        if conn is None:
            predicate, note = sql.SQL("{col} IS NOT NULL AND NOT pg_input_is_valid({col}::text, {type})").format(
                col=sql.Identifier("src", column), type=sql.Literal(type_name)), ""
        else:
            predicate, note = _cast_plan(conn, table, column, type_name)
        if predicate is None:
            return None, None, None, note  # '': nothing can fail
        check.shown = [(column, sql.Identifier("src", column))]
    if check.rule == "foreign-key-violation":
        reference = check.reference
        parent = table_of(conn, reference["table"], table.schema) if conn is not None else \
            _static_table(reference["table"], table.schema)
        if parent is None:
            return None, None, None, _NotYet(f"the referenced table {reference['table'][1]} does not exist (yet): "
                                             "not checked")
        pk = reference["pk"] or parent.primary_key
        if len(pk) != len(reference["fk"]):
            return None, None, None, f"the referenced key of {parent.display} is not known: not checked"
        match = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier("ref", p), sql.Identifier("src", f))
                                      for f, p in zip(reference["fk"], pk))
        missing = sql.SQL("NOT EXISTS (SELECT FROM {} AS ref WHERE {})").format(parent.ident, match)
        columns = [sql.Identifier("src", f) for f in reference["fk"]]
        if reference["full"]:
            predicate = sql.SQL("num_nonnulls({cols}) > 0 AND (num_nulls({cols}) > 0 OR {missing})").format(
                cols=sql.SQL(", ").join(columns), missing=missing)
        else:
            predicate = sql.SQL("{} AND {}").format(
                sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in columns), missing)
    key = [sql.Identifier("src", c) for c in table.primary_key] or [sql.SQL("src.ctid")]
    shown = [s for name, s in check.shown if name not in table.primary_key]
    if conn is None:
        key, shown = [sql.SQL("src.*")], []
    listing = sql.SQL("SELECT {cols} FROM {source} WHERE {pred}").format(
        cols=sql.SQL(", ").join(key + shown), source=source, pred=predicate)
    count = sql.SQL("SELECT count(*) FROM {source} WHERE {pred}").format(source=source, pred=predicate)
    examples = sql.SQL("{} LIMIT {}").format(listing, sql.Literal(EXAMPLES))
    return listing, count, examples, ""


def run(conn: psycopg.Connection, check: Check, table: Table, timeout: float) -> Result:
    """Read ``table`` for ``check`` in a READ ONLY transaction, each query bounded by what is left of
    ``timeout`` seconds (statement_timeout and lock_timeout)."""
    listing, count, examples, note = queries(check, table, conn)
    if listing is None:
        return Result(note=note, violations=None if note else 0, not_yet=isinstance(note, _NotYet))
    query = listing.as_string(conn)
    if table.heap > timeout * SCAN_BYTES_PER_SECOND:
        return Result(query=query, note=f"{table.display} is too big to be read within the preflight limit of "
                                        f"{timeout:g}s ({human_bytes(table.heap)}): not checked; run the query "
                                        "yourself, or raise preflight_timeout")
    started = time.perf_counter()
    result = Result(query=query)
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            # the examples first: fewer than 5 of them is the count too (one scan); 5 found stopped early, and
            # only then does the count read the whole table
            for step in (examples, count):
                left = max(0.001, timeout - (time.perf_counter() - started))
                limit = sql.Literal(f"{max(1, int(left * 1000))}ms")
                conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(limit))
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(limit))
                cursor = conn.execute(step)
                if step is count:
                    result.violations = cursor.fetchone()[0]
                    break
                names = [d.name for d in cursor.description]
                rows = cursor.fetchall()
                result.examples = [_example(check, names, row) for row in rows]
                if check.rule == "unique-violation":
                    result.violations = rows[0][-2] if rows else 0
                    result.rows = int(rows[0][-1]) if rows else 0
                    break
                if len(rows) < EXAMPLES:
                    result.violations = len(rows)
                    break
    except pg_errors.QueryCanceled:
        result.violations, result.examples = None, []
        result.note = f"the check did not finish within the preflight limit of {timeout:g}s: not checked; run " \
                      "the query yourself, or raise preflight_timeout"
    except pg_errors.LockNotAvailable:
        result.violations, result.examples = None, []
        result.note = f"another session holds a lock on {table.display} that blocks reading it: not checked"
    except (pg_errors.UndefinedColumn, pg_errors.UndefinedTable, pg_errors.UndefinedFunction,
            pg_errors.UndefinedObject) as exc:  # a column, table or function this plan adds before the statement
        result.violations, result.examples, result.not_yet = None, [], True
        result.note = (f"not checked: it refers to what does not exist yet ({exc.diag.message_primary}): made "
                       "earlier in this plan, or the statement fails on that")
    except psycopg.Error as exc:  # no privilege, a read-only violation, ...
        if conn.broken:
            raise
        result.violations, result.examples = None, []
        message = exc.diag.message_primary or str(exc).strip()
        result.note = f"not checked: the check query failed ({message}, SQLSTATE {exc.diag.sqlstate})"
    result.seconds = time.perf_counter() - started
    return result


def _example(check: Check, names: List[str], row: tuple) -> dict:
    def text(value):
        return None if value is None else (value if isinstance(value, (int, float, bool, str)) else str(value))

    if check.rule == "unique-violation":
        keys = [k for k, _ in check.keys]
        return {"key": dict(zip(keys, (text(v) for v in row[:len(keys)]))), "rows": row[len(keys)]}
    return {name: text(value) for name, value in zip(names, row)}



def _static_table(relation: Tuple[Optional[str], str], target: str) -> Table:
    """The table as the statement names it (unqualified: the target schema, first on search_path)."""
    return Table(0, relation[0] or target, relation[1], "r", None, 0, 0, [])


def failure_queries(statement: str, sqlstate: str, target: str) -> List[Tuple[Check, str]]:
    """(check, the query listing the rows that violate it) of each check of ``statement`` (top level, or inside
    the DO block it is) whose failure raises ``sqlstate``: for the message of a statement that failed at apply."""
    out = []
    for check in checks_of_failure(statement, sqlstate):
        listing, _, _, _ = queries(check, _static_table(check.relation, target), None)
        if listing is not None:
            out.append((check, listing.as_string(None)))
    return out


def describe(check: Check, result: Result) -> str:
    """'2 duplicate (owner_id, id_at_origin) groups (5 rows), e.g. (owner_id, id_at_origin)=(a, b) x2'."""
    shown = "; ".join(_show(check, e) for e in result.examples)
    if check.rule == "unique-violation":
        keys = ", ".join(k for k, _ in check.keys)
        return (f"{result.violations} duplicate ({keys}) group(s) ({result.rows} rows), e.g. {shown}")
    if check.any_row:
        return f"the table holds {result.violations} row(s) and the new column has no DEFAULT to fill them, e.g. " \
               f"{shown}"
    noun = {"not-null-violation": "row(s) with NULL", "check-violation": "row(s) failing the check",
            "foreign-key-violation": "row(s) whose key has no referenced row",
            "cast-failure": "value(s) the new type cannot read"}[check.rule]
    return f"{result.violations} {noun}, e.g. {shown}"


def _show(check: Check, example: dict) -> str:
    if check.rule == "unique-violation":
        key = example["key"]
        return f"({', '.join(key)})=({', '.join('NULL' if v is None else str(v) for v in key.values())}) " \
               f"x{example['rows']}"
    return "(" + ", ".join(f"{k}={'NULL' if v is None else v}" for k, v in example.items()) + ")"
