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

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import psycopg
from psycopg import sql

from . import parser
from .plpgsql import Embedded, Routine, catches
from .violation_checks import SQLSTATE, Check, checks_for, remedy
from .violation_reads import Result, Table, candidates, describe, run, table_of

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
        positions = parser.Positions(text)
        by_routine: Dict[int, List[Embedded]] = {}
        for item in embedded.get(name, []):
            by_routine.setdefault(item.routine.line, []).append(item)
        for kind, stmt, start, length in (parsed or {}).get(name) or parser.parse(text):
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
        return parser.changed_relations(kind, stmt)
    if kind == "CopyStmt" and stmt.get("is_from") and stmt.get("relation"):
        return parser.changed_relations(kind, stmt)
    if kind == "AlterTableStmt" and any(c.get("AlterTableCmd", {}).get("subtype") == "AT_AlterColumnType"
                                        for c in stmt.get("cmds") or ()):
        return parser.changed_relations(kind, stmt)
    return []


def _names(relation: Tuple[Optional[str], str], target: str) -> List[str]:
    return [f"{s}.{n}" for s, n in candidates(relation, target)]


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
            table = table_of(conn, checked.relation, target)
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

