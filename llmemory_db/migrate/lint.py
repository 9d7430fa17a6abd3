"""The lint rules: what a pending file may not do (syntax errors, transaction control, writes to the history,
unqualified CREATEs after a search_path change), found in its parse tree (:mod:`.parser`)."""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Tuple

from . import indexes
from .errors import LintError, LintIssue, excerpt
from .parser import ParseError, Positions, changed_relations, parse, position
from .render import render_files


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
    except ParseError as exc:
        return [_syntax_issue(filename, sql, exc)]
    return []


def _syntax_issue(filename: str, sql: str, exc: Exception) -> LintIssue:
    message = exc.args[0] if exc.args else str(exc)
    index = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
    line, column = position(sql, min(index, len(sql)))
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
    except ParseError as exc:
        return [_syntax_issue(filename, sql, exc)]
    issues = []
    positions = Positions(sql)
    path_changed: Optional[Tuple[int, str]] = None  # (line, first schema) of a search_path change
    for kind, stmt, start, length in statements:
        text = sql[start:start + length]
        # a statement's location points right after the previous one: skip leading blanks/comments
        offset = start + (len(text) - len(text.lstrip()))
        line, column = positions(offset)
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


def render_parsed(migrations: Sequence, settings) -> Dict[str, str]:
    """Render every file and check that it parses (syntax errors are errors whether a file is applied or not);
    the other lint rules are for pending files (:func:`lint_pending`)."""
    rendered = render_files(migrations, settings.schema)
    errors = [issue for m in migrations for issue in syntax(m.filename, rendered[m.filename])]
    if errors:
        raise LintError(errors)
    return rendered


def lint_pending(migrations: Sequence, settings) -> Tuple[Dict[str, str], List[LintIssue]]:
    """Render and lint ``migrations`` (the pending ones: applied files are checked by checksum only); raise
    LintError on errors (and on warnings with strict). Returns (rendered SQL by filename, warnings)."""
    rendered = render_files(migrations, settings.schema)
    issues: List[LintIssue] = []
    for m in migrations:
        issues.extend(lint(m.filename, rendered[m.filename], schema=settings.schema, history=settings.history_parts))
        if not m.no_transaction:  # a CONCURRENTLY statement cannot run in the file's transaction
            issues.extend(indexes.lint(m.filename, rendered[m.filename]))
    errors = [i for i in issues if i.severity == "error" or settings.strict]
    if errors:
        raise LintError(errors)
    return rendered, issues
