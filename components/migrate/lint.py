"""Validation of rendered SQL before anything touches the database (PostgreSQL's own parser, via pglast)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from pglast import parser as pg_parser

from .errors import LintIssue, excerpt


@dataclass(frozen=True)
class Statement:
    text: str
    line: int  # 1-based line of the statement's first character within the file


def _position(text: str, index: int) -> Tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def split(sql: str) -> List[Statement]:
    """Split SQL into statements with their line numbers (raises pglast's ParseError on bad syntax)."""
    statements = []
    for piece in pg_parser.split(sql, with_parser=True, only_slices=True):
        text = sql[piece]
        statements.append(Statement(text, _position(sql, piece.start)[0]))
    return statements


def _qualified(rangevar) -> bool:
    return rangevar is not None and bool(getattr(rangevar, "schemaname", None))


def _unqualified_create(stmt) -> Optional[str]:
    """Name the kind of object a CREATE puts in whatever schema search_path picks, else None."""
    kind = type(stmt).__name__
    if kind in ("CreateStmt", "CreateTableAsStmt"):
        rel = stmt.relation if kind == "CreateStmt" else stmt.into.rel
        return None if _qualified(rel) else "table"
    if kind == "IndexStmt":
        return None if _qualified(stmt.relation) else "index (on an unqualified table)"
    if kind == "ViewStmt":
        return None if _qualified(stmt.view) else "view"
    if kind == "CreateSeqStmt":
        return None if _qualified(stmt.sequence) else "sequence"
    if kind == "CreateFunctionStmt":
        return None if len(stmt.funcname or ()) > 1 else ("procedure" if stmt.is_procedure else "function")
    return None


def lint(filename: str, sql: str, *, schema_mode: bool) -> List[LintIssue]:
    """Parse ``sql`` (already rendered) and return the problems found."""
    try:
        parsed = pg_parser.parse_sql(sql)
    except pg_parser.ParseError as exc:
        message = exc.args[0] if exc.args else str(exc)
        index = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line, column = _position(sql, min(index, len(sql)))
        source_line = sql.splitlines()[line - 1] if sql.splitlines() else ""
        return [LintIssue(filename, line, column, f"syntax error: {message}", source_line.strip())]
    issues = []
    for raw in parsed:
        stmt = raw.stmt
        start = raw.stmt_location or 0
        length = raw.stmt_len or (len(sql) - start)
        text = sql[start:start + length]
        # stmt_location points at the end of the previous statement; skip leading blanks/comments
        offset = start + (len(text) - len(text.lstrip()))
        line, column = _position(sql, offset)
        kind = type(stmt).__name__
        if kind == "TransactionStmt":
            issues.append(LintIssue(
                filename, line, column,
                "the file controls transactions itself (BEGIN/COMMIT/ROLLBACK/SAVEPOINT); the engine runs each "
                "migration in its own transaction - remove these statements, or mark the file "
                "'-- pgdbm:no-transaction' for statements that cannot run in a transaction",
                excerpt(text)))
        elif schema_mode:
            what = _unqualified_create(stmt)
            if what:
                issues.append(LintIssue(
                    filename, line, column,
                    f"{what} is not schema-qualified and would be created by search_path, not in the target "
                    "schema; write {{tables.name}}", excerpt(text), severity="warning"))
    return issues
