"""The data checks of one statement: which rows make it fail (built from its parse tree, no database), and how
that is said. :mod:`.violations` runs them over a plan; :mod:`.violation_reads` reads the live table."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import pglast
from pglast import enums
from pglast.stream import RawStream
from psycopg import sql

from . import parser


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
        parsed = parser.parse(statement)
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


