"""Validation of rendered SQL before anything touches the database (PostgreSQL's own parser, via pglast)."""
from __future__ import annotations

import bisect
import functools
import json
import re

from dataclasses import dataclass
from typing import List, Optional, Tuple

from pglast import parser as pg_parser

from .errors import LintIssue, excerpt


@dataclass(frozen=True)
class Statement:
    text: str
    line: int  # 1-based line of the statement's first character within the file


class _Positions:
    """(line, column) of character offsets, in O(log n) each (a 10 MB file has 100,000 statements)."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def __call__(self, index: int) -> Tuple[int, int]:
        line = bisect.bisect_right(self.starts, index)
        return line, index - self.starts[line - 1] + 1


def _position(text: str, index: int) -> Tuple[int, int]:
    return _Positions(text)(index)


def split(sql: str) -> List[Statement]:
    """Split SQL into statements with their line numbers (raises pglast's ParseError on bad syntax)."""
    position = _Positions(sql)
    return [Statement(sql[piece], position(piece.start)[0])
            for piece in pg_parser.split(sql, with_parser=True, only_slices=True)]


def parse(sql: str) -> List[Tuple[str, dict, int, int]]:
    """(node type, node, start, length) of each statement; offsets in characters (pglast's JSON tree is ~10x
    cheaper than its Python AST). Raises pglast's ParseError on bad syntax. The same text is parsed once: lint,
    the managed objects, the drift scope and the risk analysis all read it (the trees are not to be changed).
    Files over 1 MB are parsed each time, so that memory stays bounded."""
    return list(_parse_cached(sql) if len(sql) <= CACHED_TEXT else _parse(sql))


CACHED_TEXT = 1 << 20


@functools.lru_cache(maxsize=64)
def _parse_cached(sql: str) -> Tuple[Tuple[str, dict, int, int], ...]:
    return _parse(sql)


def _parse(sql: str) -> Tuple[Tuple[str, dict, int, int], ...]:
    tree = json.loads(pg_parser.parse_sql_json(sql))
    encoded = sql.encode("utf-8")
    ascii_only = len(encoded) == len(sql)
    done = [0, 0]  # (byte, character) offsets converted so far: statements come in order, decode only the gap

    def chars(byte_offset: int) -> int:
        if ascii_only:
            return byte_offset
        if byte_offset < done[0]:
            return len(encoded[:byte_offset].decode("utf-8", errors="ignore"))
        done[1] += len(encoded[done[0]:byte_offset].decode("utf-8", errors="ignore"))
        done[0] = byte_offset
        return done[1]

    out = []
    for raw in tree.get("stmts", []):
        (kind, node), = raw["stmt"].items()
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0) or (len(encoded) - start)
        begin = chars(start)
        out.append((kind, node, begin, chars(start + length) - begin))
    return tuple(out)


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


_WRITES = {"DropStmt", "TruncateStmt", "AlterTableStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "RenameStmt"}


def changed_relations(kind: str, stmt: dict) -> List[Tuple[Optional[str], str]]:
    """(schema, name) of the relations a statement changes: its ``relation``, TRUNCATE's relations, the objects
    DROP names (DROP INDEX: the index)."""
    if kind == "DropStmt":
        names = []
        for obj in stmt.get("objects") or ():
            parts = [item.get("String", {}).get("sval") for item in obj.get("List", {}).get("items", [])]
            if parts and all(parts):
                names.append((parts[-2] if len(parts) > 1 else None, parts[-1]))
        return names
    relations = [node.get("RangeVar", node) for node in stmt.get("relations") or ()] if kind == "TruncateStmt" \
        else [stmt.get("relation") or {}]
    return [(r.get("schemaname"), r["relname"]) for r in relations if r.get("relname")]


def _touches_history(kind: str, stmt: dict, history: Tuple[str, str]) -> bool:
    if kind not in _WRITES:
        return False
    return any(name == history[1] and schema in (None, history[0]) for schema, name in changed_relations(kind, stmt))


def _search_path_change(kind: str, stmt: dict) -> Optional[List[str]]:
    """The schemas a statement puts on search_path (``[]`` for RESET or an unknown value), or None when it does
    not touch search_path."""
    if kind == "VariableSetStmt" and stmt.get("name") == "search_path":
        return [arg.get("A_Const", {}).get("sval", {}).get("sval", "") for arg in stmt.get("args") or ()]
    if kind == "SelectStmt" and '"set_config"' in json.dumps(stmt) and '"search_path"' in json.dumps(stmt):
        return []
    return None


def syntax(filename: str, sql: str) -> List[LintIssue]:
    """The syntax error of ``sql``, if any (as a one-item list)."""
    try:
        parse(sql)
    except pg_parser.ParseError as exc:
        return [_syntax_issue(filename, sql, exc)]
    return []


def _syntax_issue(filename: str, sql: str, exc: Exception) -> LintIssue:
    message = exc.args[0] if exc.args else str(exc)
    index = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
    line, column = _position(sql, min(index, len(sql)))
    source_line = sql.splitlines()[line - 1] if sql.splitlines() else ""
    return LintIssue(filename, line, column, f"syntax error: {message}", source_line.strip())


def lint(filename: str, sql: str, *, schema: Optional[str] = None,
         history: Optional[Tuple[str, str]] = None) -> List[LintIssue]:
    """Parse ``sql`` (already rendered for ``schema``) and return the problems found.

    ``history`` (schema, table): statements that change the history table are errors. In schema mode an
    unqualified CREATE is fine while the target schema is first on search_path, as the engine sets it for
    every migration; after the file changes search_path it would land elsewhere: a warning.
    """
    try:
        statements = parse(sql)
    except pg_parser.ParseError as exc:
        return [_syntax_issue(filename, sql, exc)]
    issues = []
    position = _Positions(sql)
    path_changed: Optional[Tuple[int, str]] = None  # (line, first schema) of a search_path change
    for kind, stmt, start, length in statements:
        text = sql[start:start + length]
        # a statement's location points right after the previous one: skip leading blanks/comments
        offset = start + (len(text) - len(text.lstrip()))
        line, column = position(offset)
        changed = _search_path_change(kind, stmt)
        if changed is not None:
            first = changed[0] if changed else ""
            path_changed = None if first == schema else (line, first or "the session's default schema")
        if kind == "TransactionStmt":
            issues.append(LintIssue(
                filename, line, column,
                "the file controls transactions itself (BEGIN/COMMIT/ROLLBACK/SAVEPOINT); the engine runs each "
                "migration in its own transaction - remove these statements, or mark the file "
                "'-- pgdbm:no-transaction' for statements that cannot run in a transaction",
                excerpt(text)))
        elif history and _touches_history(kind, stmt, history):
            issues.append(LintIssue(
                filename, line, column,
                f"the file changes the migration history table {history[0]}.{history[1]}; only the engine "
                "writes it - remove the statement (to forget a module in development, see the README)",
                excerpt(text)))
        elif schema and path_changed:
            what = _unqualified_create(kind, stmt)
            if what:
                issues.append(LintIssue(
                    filename, line, column,
                    f"{what} is not schema-qualified and search_path was changed at line {path_changed[0]}: it "
                    f"would be created in {path_changed[1]}, not in the target schema {schema}; write "
                    "{{tables.name}} (or {{schema}}.name)", excerpt(text), severity="warning"))
    return issues
