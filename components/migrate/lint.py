"""Validation of rendered SQL before anything touches the database (PostgreSQL's own parser, via pglast)."""
from __future__ import annotations

import json

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


def parse(sql: str) -> List[Tuple[str, dict, int, int]]:
    """(node type, node, start, length) of each statement; offsets in characters (pglast's JSON tree is ~10x
    cheaper than its Python AST). Raises pglast's ParseError on bad syntax."""
    tree = json.loads(pg_parser.parse_sql_json(sql))
    encoded = sql.encode("utf-8")
    ascii_only = len(encoded) == len(sql)

    def chars(byte_offset: int) -> int:
        return byte_offset if ascii_only else len(encoded[:byte_offset].decode("utf-8", errors="ignore"))

    out = []
    for raw in tree.get("stmts", []):
        (kind, node), = raw["stmt"].items()
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0) or (len(encoded) - start)
        begin = chars(start)
        out.append((kind, node, begin, chars(start + length) - begin))
    return out


def _qualified(rangevar: Optional[dict]) -> bool:
    return bool(rangevar and rangevar.get("schemaname"))


def _unqualified_create(kind: str, stmt: dict) -> Optional[str]:
    """Name the kind of object a CREATE puts in whatever schema search_path picks, else None."""
    if kind == "CreateStmt":
        return None if _qualified(stmt.get("relation")) else "table"
    if kind == "CreateTableAsStmt":
        return None if _qualified(stmt.get("into", {}).get("rel")) else "table"
    if kind == "IndexStmt":
        return None if _qualified(stmt.get("relation")) else "index (on an unqualified table)"
    if kind == "ViewStmt":
        return None if _qualified(stmt.get("view")) else "view"
    if kind == "CreateSeqStmt":
        return None if _qualified(stmt.get("sequence")) else "sequence"
    if kind == "CreateFunctionStmt":
        return None if len(stmt.get("funcname") or ()) > 1 else ("procedure" if stmt.get("is_procedure") else "function")
    return None


def lint(filename: str, sql: str, *, schema_mode: bool) -> List[LintIssue]:
    """Parse ``sql`` (already rendered) and return the problems found."""
    try:
        statements = parse(sql)
    except pg_parser.ParseError as exc:
        message = exc.args[0] if exc.args else str(exc)
        index = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line, column = _position(sql, min(index, len(sql)))
        source_line = sql.splitlines()[line - 1] if sql.splitlines() else ""
        return [LintIssue(filename, line, column, f"syntax error: {message}", source_line.strip())]
    issues = []
    for kind, stmt, start, length in statements:
        text = sql[start:start + length]
        # a statement's location points right after the previous one: skip leading blanks/comments
        offset = start + (len(text) - len(text.lstrip()))
        line, column = _position(sql, offset)
        if kind == "TransactionStmt":
            issues.append(LintIssue(
                filename, line, column,
                "the file controls transactions itself (BEGIN/COMMIT/ROLLBACK/SAVEPOINT); the engine runs each "
                "migration in its own transaction - remove these statements, or mark the file "
                "'-- pgdbm:no-transaction' for statements that cannot run in a transaction",
                excerpt(text)))
        elif schema_mode:
            what = _unqualified_create(kind, stmt)
            if what:
                issues.append(LintIssue(
                    filename, line, column,
                    f"{what} is not schema-qualified and would be created by search_path, not in the target "
                    "schema; write {{tables.name}}", excerpt(text), severity="warning"))
    return issues
