"""Data-aware preflight: pending statements that fail on the rows a table already holds, checked on the live table.

``ALTER TABLE … ADD CONSTRAINT … UNIQUE`` over two rows with the same key fails at apply with 23505, however
correct the statement is. squawk cannot know; the live table can. For each pending statement (top level, inside
a ``DO`` block, or inside a function the plan calls) that can fail on existing rows:

========================================  =====================================================  ===========
statement                                 rows that make it fail                                 rule
========================================  =====================================================  ===========
ADD CONSTRAINT … UNIQUE / PRIMARY KEY,    groups of rows with the same key (NULLs distinct       unique-violation
CREATE UNIQUE INDEX                       unless NULLS NOT DISTINCT; a partial index: its WHERE)
PRIMARY KEY, SET NOT NULL                 rows where the column is NULL                          not-null-violation
ADD COLUMN … NOT NULL without a DEFAULT   any row                                                not-null-violation
ADD CHECK (not NOT VALID)                 rows where the expression is false                     check-violation
ADD FOREIGN KEY (not NOT VALID)           rows whose key is not in the referenced table          foreign-key-violation
ALTER COLUMN … TYPE with a cast           values the new type's input rejects (PG16+             cast-failure
                                          ``pg_input_is_valid``, where that is what the cast
                                          does)
========================================  =====================================================  ===========

the live table is read (READ ONLY, ``statement_timeout`` and ``lock_timeout`` of ``preflight_timeout`` per check)
for the number of violating rows (or key groups), up to 5 example keys (the primary key, else ``ctid``) and the
query that lists them all. A table too big to be read within the limit is not read; a check that times out is
skipped: both are reported with the query to run by hand. Tables the same plan creates are not checked.

A violation means the apply will fail: the finding is an ``error`` (the data must change, not the statement),
unless an ``EXCEPTION`` clause around the statement catches the error (the file then applies *without* the
constraint: a warning), or the plan changes the table's rows before the statement (the check saw the rows as they
are now: a warning).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pglast
import psycopg
from pglast import enums
from pglast.stream import RawStream
from psycopg import errors as pg_errors
from psycopg import sql

from . import lint as lint_mod
from .plpgsql import Embedded, Routine, catches

EXAMPLES = 5
# A table whose heap is larger than preflight_timeout x this many bytes is not read at all: no check could finish in
# time. bench/preflight.py measured the checks at 170-900 MB of heap per second on a 1,000,000-row table (the
# two-column GROUP BY of a UNIQUE check the slowest, a plain scan the fastest; 2 cores shared, load ~5): 1 GB/s is
# above all of them, so only tables that surely cannot be read in time are skipped unread; the rest are bounded by
# the statement_timeout.
SCAN_BYTES_PER_SECOND = 1 << 30

RULES = ("unique-violation", "not-null-violation", "check-violation", "foreign-key-violation", "cast-failure")
# the SQLSTATE each rule's failure raises at apply (a cast failure: any data exception, class 22)
SQLSTATE = {"unique-violation": "23505", "not-null-violation": "23502", "check-violation": "23514",
            "foreign-key-violation": "23503", "cast-failure": "22000"}
REMEDY = {
    "unique-violation": "remove or merge the duplicate rows (the query lists them)",
    "not-null-violation": "fill the NULL values (the query lists the rows) or delete those rows",
    "check-violation": "update or delete the rows that fail the check (the query lists them)",
    "foreign-key-violation": "insert the missing referenced rows, or fix or delete the rows whose key has none "
                             "(the query lists them)",
    "cast-failure": "fix the values the new type cannot read (the query lists them)",
}
_DML = {"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"}
_CHECKED = {"AlterTableStmt", "IndexStmt"}  # the statements a check is built from (their text is re-parsed)


# --------------------------------------------------------------------------- the statements of a plan, in run order

@dataclass
class Step:
    """A statement the plan runs, in run order (top level, inside a DO block, or inside a called function)."""

    file: str
    line: int
    kind: str                          # parse-tree node ('' for a dynamic item)
    stmt: dict                         # its JSON parse tree
    text: str
    context: str = ""                  # "inside the DO block at line 12", ...
    handlers: Tuple[str, ...] = ()     # EXCEPTION conditions around it
    dynamic: bool = False              # an EXECUTE built at run time, or a body that does not parse


def _name(parts: Sequence[dict]) -> Tuple[Optional[str], str]:
    names = [p.get("String", {}).get("sval", "") for p in parts]
    return (names[-2] if len(names) > 1 else None), names[-1] if names else ""


def _calls(node) -> Iterator[Tuple[Optional[str], str]]:
    """(schema, name) of every function a parse tree calls (FuncCall nodes; CALL holds one)."""
    if isinstance(node, list):
        for item in node:
            yield from _calls(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "FuncCall" and isinstance(value, dict):
                yield _name(value.get("funcname") or ())
            yield from _calls(value)


def plan_steps(files: Sequence[str], rendered: Dict[str, str], embedded: Dict[str, List[Embedded]],
               target: str, parsed: Optional[Dict[str, list]] = None) -> Tuple[List[Step], Dict[str, str]]:
    """Every statement the pending ``files`` run, in run order, and where the plan first calls each of its own
    PL/pgSQL routines (display name -> "file:line"). A DO block's statements run where the block is; a
    function's run where the plan calls it (a function nobody in the plan calls runs none)."""
    steps: List[Step] = []
    called: Dict[str, str] = {}
    routines: Dict[Tuple[str, str], Tuple[Routine, List[Embedded], str]] = {}

    def calls_of(stmt: dict, where: str, depth: int = 0) -> List[Step]:
        out: List[Step] = []
        if not routines:  # no routine of the plan defined yet: nothing to find (and no tree to walk)
            return out
        for schema, name in _calls(stmt):
            keys = [(schema, name)] if schema else [(target, name), ("public", name)]
            found = next((routines[k] for k in keys if k in routines), None)
            if found is None or depth > 3:
                continue
            routine, items, defined_in = found
            called.setdefault(routine.display, where)
            for item in items:
                step = _step(item, routine.context(called[routine.display]), defined_in)
                out.append(step)
                if not item.dynamic:
                    out.extend(calls_of(step.stmt, where, depth + 1))
        return out

    for name in files:
        text = rendered[name]
        positions = lint_mod._Positions(text)
        by_routine: Dict[int, List[Embedded]] = {}
        for item in embedded.get(name, []):
            by_routine.setdefault(item.routine.line, []).append(item)
        for kind, stmt, start, length in (parsed or {}).get(name) or lint_mod.parse(text):
            piece = text[start:start + length]
            line = positions(start + len(piece) - len(piece.lstrip()))[0]
            mine = by_routine.get(line, []) if kind in ("DoStmt", "CreateFunctionStmt") else []
            if kind == "DoStmt":
                for item in mine:
                    step = _step(item, item.context, name)
                    steps.append(step)
                    steps.extend(calls_of(step.stmt, f"{name}:{item.line}") if not item.dynamic else [])
                continue
            steps.append(Step(name, line, kind, stmt, piece.strip() if kind in _CHECKED else ""))
            if kind == "CreateFunctionStmt" and mine:
                routine = mine[0].routine
                schema, fname = routine.name or (None, "")
                routines[(schema or target, fname)] = (routine, mine, name)
            steps.extend(calls_of(stmt, f"{name}:{line}"))
    return steps, called


def _step(item: Embedded, context: str, file: str) -> Step:
    if item.dynamic or not item.parsed:
        return Step(file, item.line, "", {}, item.text, context, item.handlers, dynamic=True)
    kind, stmt = item.parsed[0]
    return Step(file, item.line, kind, stmt, item.text, context, item.handlers)


# --------------------------------------------------------------------------- checks built from a statement

@dataclass
class Check:
    """One thing a statement needs of the existing rows."""

    rule: str
    what: str                                   # "ADD CONSTRAINT uq UNIQUE (a, b)"
    relation: Tuple[Optional[str], str]         # the table, as written
    keys: List[Tuple[str, sql.Composable]] = field(default_factory=list)     # unique: the key (display, SQL)
    predicate: Optional[sql.Composable] = None  # rows kinds: what a violating row satisfies (alias src)
    shown: List[Tuple[str, sql.Composable]] = field(default_factory=list)    # values shown with each example
    where: Optional[sql.Composable] = None      # unique: a partial index's WHERE
    nulls_distinct: bool = True
    cast: Optional[Tuple[str, str, str]] = None  # type change: (column, new type, a USING expression or '')
    reference: Optional[dict] = None            # foreign key: pktable, fk and pk columns, match type
    any_row: bool = False                       # every existing row violates it (ADD COLUMN NOT NULL, no DEFAULT)
    unless_exists: str = ""                     # CREATE UNIQUE INDEX IF NOT EXISTS: a no-op when this index exists
    unless_column: str = ""                     # ADD COLUMN IF NOT EXISTS: a no-op when this column exists


def _deparse(node) -> str:
    return RawStream()(node)


def checks_for(kind: str, stmt: dict, text: str) -> List[Check]:
    """The checks ``text`` (one statement, node ``kind``) needs, from its parse (empty for other statements)."""
    if kind == "IndexStmt" and stmt.get("unique"):
        return _index_checks(text)
    if kind != "AlterTableStmt" or stmt.get("objtype") not in (None, "OBJECT_TABLE"):
        return []
    interesting = {"AT_AddConstraint", "AT_SetNotNull", "AT_AddColumn", "AT_AlterColumnType"}
    if not any(c.get("AlterTableCmd", {}).get("subtype") in interesting for c in stmt.get("cmds") or ()):
        return []
    try:
        node = pglast.parse_sql(text)[0].stmt
    except Exception:  # noqa: BLE001 - the text was parsed once already; a statement pglast cannot re-read is left
        return []
    relation = (node.relation.schemaname, node.relation.relname)
    checks: List[Check] = []
    for cmd in node.cmds or ():
        subtype = cmd.subtype
        if subtype == enums.AlterTableType.AT_SetNotNull:
            checks.append(Check("not-null-violation", f"ALTER COLUMN {cmd.name} SET NOT NULL", relation,
                                predicate=sql.SQL("{} IS NULL").format(sql.Identifier("src", cmd.name))))
        elif subtype == enums.AlterTableType.AT_AddColumn:
            for check in _add_column(cmd.def_, relation):
                check.unless_column = cmd.def_.colname if cmd.missing_ok else ""
                checks.append(check)
        elif subtype == enums.AlterTableType.AT_AddConstraint:
            checks.extend(_constraint(cmd.def_, relation))
        elif subtype == enums.AlterTableType.AT_AlterColumnType:
            column, definition = cmd.name, cmd.def_
            using = _deparse(definition.raw_default) if definition.raw_default is not None else ""
            type_name = _deparse(definition.typeName)
            if definition.raw_default is not None and _is_cast_of(definition.raw_default, column):
                type_name, using = _deparse(definition.raw_default.typeName), ""
            checks.append(Check("cast-failure", f"ALTER COLUMN {column} TYPE {type_name}"
                                + (f" USING {using}" if using else ""), relation, cast=(column, type_name, using)))
    return checks


def _is_cast_of(node, column: str) -> bool:
    """``USING col::type`` / ``CAST(col AS type)``: the plain cast of the column itself."""
    arg = getattr(node, "arg", None)
    if type(node).__name__ != "TypeCast" or type(arg).__name__ != "ColumnRef":
        return False
    fields = [getattr(f, "sval", None) for f in arg.fields]
    return fields[-1:] == [column]


def _index_checks(text: str) -> List[Check]:
    try:
        node = pglast.parse_sql(text)[0].stmt
    except Exception:  # noqa: BLE001
        return []
    keys = []
    for element in node.indexParams or ():
        if element.name:
            keys.append((element.name, sql.Identifier("src", element.name)))
        else:
            expression = _deparse(element.expr)
            keys.append((expression, sql.SQL("({})").format(sql.SQL(expression))))
    where = sql.SQL("({})").format(sql.SQL(_deparse(node.whereClause))) if node.whereClause is not None else None
    what = f"CREATE UNIQUE INDEX {node.idxname or ''} ({', '.join(k for k, _ in keys)})".replace("INDEX  (", "INDEX (")
    if node.whereClause is not None:
        what += f" WHERE {_deparse(node.whereClause)}"
    return [Check("unique-violation", what, (node.relation.schemaname, node.relation.relname), keys=keys,
                  where=where, nulls_distinct=not node.nulls_not_distinct,
                  unless_exists=node.idxname if node.if_not_exists and node.idxname else "")]


_NO_DEFAULT_NEEDED = {"serial", "serial4", "serial8", "bigserial", "smallserial", "serial2"}


def _add_column(column, relation) -> List[Check]:
    constraints = list(column.constraints or ())
    kinds = {c.contype for c in constraints}
    not_null = enums.ConstrType.CONSTR_NOTNULL in kinds or enums.ConstrType.CONSTR_PRIMARY in kinds
    filled = kinds & {enums.ConstrType.CONSTR_DEFAULT, enums.ConstrType.CONSTR_IDENTITY,
                      enums.ConstrType.CONSTR_GENERATED} or column.raw_default is not None
    type_name = _deparse(column.typeName)
    if not not_null or filled or type_name.split("(")[0].lower() in _NO_DEFAULT_NEEDED:
        return []
    return [Check("not-null-violation", f"ADD COLUMN {column.colname} {type_name} NOT NULL (no DEFAULT)", relation,
                  predicate=sql.SQL("true"), any_row=True)]


def _constraint(constraint, relation) -> List[Check]:
    name = f" {constraint.conname}" if constraint.conname else ""
    kind = constraint.contype
    if kind in (enums.ConstrType.CONSTR_UNIQUE, enums.ConstrType.CONSTR_PRIMARY):
        if constraint.indexname:  # ... USING INDEX: the index exists, its rows were checked when it was built
            return []
        columns = [k.sval for k in constraint.keys or ()]
        label = "PRIMARY KEY" if kind == enums.ConstrType.CONSTR_PRIMARY else "UNIQUE"
        what = f"ADD{' CONSTRAINT' if name else ''}{name} {label} ({', '.join(columns)})"
        checks = [Check("unique-violation", what, relation,
                        keys=[(c, sql.Identifier("src", c)) for c in columns],
                        nulls_distinct=not constraint.nulls_not_distinct)]
        if kind == enums.ConstrType.CONSTR_PRIMARY:
            checks.append(Check("not-null-violation", what, relation, predicate=sql.SQL(" OR ").join(
                sql.SQL("{} IS NULL").format(sql.Identifier("src", c)) for c in columns)))
        return checks
    if constraint.skip_validation:  # NOT VALID: existing rows are not checked
        return []
    if kind == enums.ConstrType.CONSTR_CHECK:
        expression = _deparse(constraint.raw_expr)
        return [Check("check-violation", f"ADD{' CONSTRAINT' if name else ''}{name} CHECK ({expression})", relation,
                      predicate=sql.SQL("NOT ({})").format(sql.SQL(expression)),
                      shown=[(c, sql.Identifier("src", c)) for c in _columns(constraint.raw_expr)])]
    if kind == enums.ConstrType.CONSTR_FOREIGN:
        fk = [a.sval for a in constraint.fk_attrs or ()]
        pk = [a.sval for a in constraint.pk_attrs or ()]
        table = constraint.pktable
        target = f"{table.schemaname + '.' if table.schemaname else ''}{table.relname}"
        what = (f"ADD{' CONSTRAINT' if name else ''}{name} FOREIGN KEY ({', '.join(fk)}) REFERENCES {target}"
                + (f" ({', '.join(pk)})" if pk else ""))
        return [Check("foreign-key-violation", what, relation, shown=[(c, sql.Identifier("src", c)) for c in fk],
                      reference={"table": (table.schemaname, table.relname), "fk": fk, "pk": pk,
                                 "full": constraint.fk_matchtype == "f"})]
    return []


def _columns(node) -> List[str]:
    """The column names an expression refers to, in order, once each."""
    found: List[str] = []

    def visit(value) -> None:
        if isinstance(value, tuple):
            for item in value:
                visit(item)
        elif isinstance(value, pglast.ast.Node):
            if type(value).__name__ == "ColumnRef":
                names = [getattr(f, "sval", None) for f in value.fields]
                if names and names[-1] and names[-1] not in found:
                    found.append(names[-1])
                return
            for attribute in value:
                visit(getattr(value, attribute))

    visit(node)
    return found


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


def _candidates(relation: Tuple[Optional[str], str], target: str) -> List[Tuple[str, str]]:
    schema, name = relation
    return [(schema, name)] if schema else [(target, name), ("public", name)]


def _table(conn: psycopg.Connection, relation: Tuple[Optional[str], str], target: str) -> Optional[Table]:
    candidates = _candidates(relation, target)
    row = conn.execute(_TABLE, ([s for s, _ in candidates], [n for _, n in candidates])).fetchone()
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


def _queries(check: Check, table: Table, conn: Optional[psycopg.Connection]
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
        parent = _table(conn, reference["table"], table.schema) if conn is not None else \
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
    listing, count, examples, note = _queries(check, table, conn)
    if listing is None:
        return Result(note=note, violations=None if note else 0, not_yet=isinstance(note, _NotYet))
    query = listing.as_string(conn)
    if table.heap > timeout * SCAN_BYTES_PER_SECOND:
        from .risk import human_bytes
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


# --------------------------------------------------------------------------- the preflight of a plan

def _created(kind: str, stmt: dict, target: str) -> Optional[str]:
    relation = None
    if kind == "CreateStmt":
        relation = stmt.get("relation")
    elif kind == "CreateTableAsStmt":
        relation = (stmt.get("into") or {}).get("rel")
    if not relation or not relation.get("relname"):
        return None
    return f"{relation.get('schemaname') or target}.{relation['relname']}"


def _written(kind: str, stmt: dict) -> List[Tuple[Optional[str], str]]:
    """(schema, name) of the tables whose rows a statement changes."""
    if kind in _DML or kind == "TruncateStmt":
        return lint_mod.changed_relations(kind, stmt)
    if kind == "CopyStmt" and stmt.get("is_from") and stmt.get("relation"):
        return lint_mod.changed_relations(kind, stmt)
    if kind == "AlterTableStmt" and any(c.get("AlterTableCmd", {}).get("subtype") == "AT_AlterColumnType"
                                        for c in stmt.get("cmds") or ()):
        return lint_mod.changed_relations(kind, stmt)
    return []


def _names(relation: Tuple[Optional[str], str], target: str) -> List[str]:
    return [f"{s}.{n}" for s, n in _candidates(relation, target)]


def preflight(conn: psycopg.Connection, steps: Sequence[Step], target: str, timeout: float,
              progress=None) -> List[dict]:
    """The findings (as keyword arguments of ``risk.Finding``) of every check the ``steps`` need."""
    findings: List[dict] = []
    created: Dict[str, str] = {}   # schema.table -> "file:line" that creates it in this plan
    written: Dict[str, str] = {}   # schema.table -> "file:line" that changes its rows earlier in this plan
    dynamic: Optional[str] = None  # "file:line" of the first statement whose effect cannot be known
    for step in steps:
        where = f"{step.file}:{step.line}"
        if step.dynamic:
            dynamic = dynamic or where
            continue
        made = _created(step.kind, step.stmt, target)
        if made:
            created.setdefault(made, where)
        for checked in checks_for(step.kind, step.stmt, step.text):
            names = _names(checked.relation, target)
            if any(n in created for n in names):
                continue
            table = _table(conn, checked.relation, target)
            if table is None:
                continue  # not there: the statement fails on that, not on rows (the squawk finding says so)
            if checked.unless_exists and conn.execute("SELECT to_regclass(%s) IS NOT NULL", (
                    sql.Identifier(table.schema, checked.unless_exists).as_string(conn),)).fetchone()[0]:
                continue  # IF NOT EXISTS and it exists: the statement does nothing
            if checked.unless_column and conn.execute(
                    "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = %s AND attname = %s AND attnum > 0 "
                    "AND NOT attisdropped)", (table.oid, checked.unless_column)).fetchone()[0]:
                continue
            if progress:
                progress(f"preflight: {where} {checked.what} on {table.display}")
            result = run(conn, checked, table, timeout)
            finding = _finding(step, checked, table, result, written.get(table.display) or dynamic)
            if finding:
                findings.append(finding)
        for relation in _written(step.kind, step.stmt):
            for name in _names(relation, target):
                written.setdefault(name, where)
    return findings


def _finding(step: Step, check: Check, table: Table, result: Result, changed_before: Optional[str]
             ) -> Optional[dict]:
    base = dict(file=step.file, line=step.line, rule=check.rule, table=table.display, rows_estimate=table.rows,
                bytes=table.total, context=step.context, query=result.query or None,
                help=remedy(check))
    where = f" {step.context}" if step.context else ""
    if result.violations is None:
        if not result.note:
            return None
        return dict(base, severity="info" if result.not_yet else "warning",
                    message=f"{check.what} on {table.display}{where}: {result.note}", note="data not checked")
    if result.violations == 0:
        if not result.query:
            return None  # nothing can fail (a widening type change)
        return dict(base, severity="info", violations=0, examples=[],
                    message=f"{check.what}: no existing row of {table.display} violates it (checked in "
                            f"{result.seconds:.2f}s)", note="checked: no violating rows")
    described = describe(check, result)
    message = f"{check.what} will fail on {table.display}{where}: {described}"
    severity, note = "error", "existing rows violate it"
    caught = catches(step.handlers, SQLSTATE[check.rule])
    if caught:
        severity = "warning"
        message += (f"; the EXCEPTION WHEN {caught} around it catches that error, so the file applies WITHOUT "
                    f"this {'index' if check.what.startswith('CREATE') else 'change'}")
        note = "caught by an EXCEPTION clause"
    elif changed_before:
        severity = "warning"
        message += (f"; the rows may change before it runs ({changed_before} changes them earlier in this plan): "
                    "the check read them as they are now")
        note = "rows change earlier in the plan"
    return dict(base, severity=severity, message=message, violations=result.violations, examples=result.examples,
                note=note)


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


def remedy(check: Check) -> str:
    """What to do about existing rows that violate ``check``: the data must change, not the statement."""
    if check.any_row:
        return ("the statement can only succeed on an empty table: empty it, or (if the file is yours and not yet "
                "applied anywhere) give the column a DEFAULT, or add it NULL, fill it, then SET NOT NULL")
    return REMEDY[check.rule]


def checks_of_failure(statement: str, sqlstate: str) -> List[Check]:
    """The checks of ``statement`` (top level, or the statements inside a DO block) whose failure raises
    ``sqlstate``: to name the listing query when a statement failed at apply."""
    from .plpgsql import embedded

    try:
        parsed = lint_mod.parse(statement)
    except Exception:  # noqa: BLE001 - the server ran it: pglast may still not read it
        return []
    found: List[Check] = []
    items = [(kind, stmt, statement[start:start + length]) for kind, stmt, start, length in parsed]
    for item in embedded(statement, parsed):
        if not item.dynamic and item.parsed:
            items.append((item.parsed[0][0], item.parsed[0][1], item.text))
    for kind, stmt, text in items:
        for check in checks_for(kind, stmt, text):
            if SQLSTATE[check.rule] == sqlstate or (check.rule == "cast-failure" and sqlstate[:2] == "22"):
                found.append(check)
    return found


def _static_table(relation: Tuple[Optional[str], str], target: str) -> Table:
    """The table as the statement names it (unqualified: the target schema, first on search_path)."""
    return Table(0, relation[0] or target, relation[1], "r", None, 0, 0, [])


def failure_queries(statement: str, sqlstate: str, target: str) -> List[Tuple[Check, str]]:
    """(check, the query listing the rows that violate it) of each check of ``statement`` (top level, or inside
    the DO block it is) whose failure raises ``sqlstate``: for the message of a statement that failed at apply."""
    out = []
    for check in checks_of_failure(statement, sqlstate):
        listing, _, _, _ = _queries(check, _static_table(check.relation, target), None)
        if listing is not None:
            out.append((check, listing.as_string(None)))
    return out

