"""Risk of pending migrations on a live database: squawk's rules, plus what only the live catalog knows.

squawk (PyPI ``squawk-cli``) names dangerous statements (an index built without CONCURRENTLY blocks writes, a
column type change rewrites the table under an ACCESS EXCLUSIVE lock, a foreign key without NOT VALID scans
under lock, ...). It cannot know whether the table has 12 rows or 12 million. This module runs squawk on the
*rendered* SQL of the pending files (one squawk process for all of them), maps every finding to ``file:line``
and the table its statement touches, and reads every such table's estimated rows and size in one catalog query:

- a table created earlier in the same plan (or in the same file), or an empty one, is not at risk: ``info``;
- otherwise ``warning``; with ``risk_policy='deny'`` a warning on a table of ``risk_min_rows`` rows or more
  (or of unknown size) is an error, and nothing runs.

A reviewed exception in the file itself, ``-- llmemory-db:allow <rule>[, <rule>]: <reason>``, silences those
rules for that file; it is echoed. squawk itself validates the rule names.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import psycopg

from . import lint as lint_mod
from .errors import MigrationError
from .files import Migration
from .settings import Settings

SQUAWK_VERSION = "2.70.0"
# squawk rules that are style or that the engine takes care of, off unless a file asks for them by name:
# integer widths, identity vs serial, varchar vs text, timestamptz, char(n) are style; re-runnable statements are
# not needed (every transactional file runs whole or not at all); the engine sets lock_timeout for every
# transactional migration (statement_timeout is the user's choice); BEGIN/COMMIT in a file is already an error.
STYLE_RULES = ("prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-identity", "prefer-text-field",
               "prefer-timestamptz", "prefer-timestamp-tz", "ban-char-field", "prefer-robust-stmts",
               "require-lock-timeout", "require-statement-timeout", "require-timeout-settings",
               "transaction-nesting")
RISK_POLICIES = ("warn", "deny")
ALLOW = re.compile(r"^--\s*llmemory-db:allow\s+(?P<rules>[a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*)\s*(?::\s*(?P<why>.*))?$",
                   re.MULTILINE)


@dataclass
class Finding:
    file: str
    line: int
    rule: str
    severity: str                        # info, warning or error (deny policy)
    message: str
    help: str = ""
    table: Optional[str] = None          # schema.table the statement touches
    rows_estimate: Optional[int] = None  # pg_class.reltuples (None: unknown)
    bytes: Optional[int] = None          # pg_total_relation_size (None: unknown)
    note: str = ""                       # why it is (not) at risk: "created by 002_x.sql in this plan", ...

    def __str__(self) -> str:
        where = f" on {self.table} ({self.note})" if self.table else (f" ({self.note})" if self.note else "")
        text = f"{self.file}:{self.line} {self.rule}: {self.statement_kind()}{where} {self.message}"
        if self.help:
            text += f" Help: {self.help}"
        return text if self.severity == "warning" else f"{text} [{self.severity}]"

    def statement_kind(self) -> str:
        return {"require-concurrent-index-creation": "CREATE INDEX", "changing-column-type": "ALTER COLUMN TYPE",
                "adding-foreign-key-constraint": "ADD FOREIGN KEY", "constraint-missing-not-valid": "ADD CONSTRAINT",
                "adding-not-nullable-field": "SET NOT NULL", "adding-field-with-default": "ADD COLUMN ... DEFAULT",
                "require-concurrent-index-deletion": "DROP INDEX", "disallowed-unique-constraint": "ADD UNIQUE",
                "ban-drop-table": "DROP TABLE", "ban-drop-column": "DROP COLUMN"}.get(self.rule, "statement")

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("note")
        return data


@dataclass
class RiskReport:
    findings: List[Finding] = field(default_factory=list)
    allowed: List[str] = field(default_factory=list)  # echoed exceptions: "003_x.sql:1 allows rule: reason"

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def lines(self) -> List[str]:
        return [str(f) for f in self.findings] + [f"allowed: {a}" for a in self.allowed]

    def raise_for_errors(self, settings: Settings) -> None:
        if self.errors:
            raise RiskError(self.errors, settings)


class RiskError(MigrationError):
    """The deny policy refused risky statements on tables that hold data; nothing was applied."""

    def __init__(self, findings: Sequence[Finding], settings: Settings) -> None:
        self.findings = list(findings)
        body = "\n".join(f"  {f}" for f in self.findings)
        super().__init__(
            f"{len(self.findings)} risky statement(s) on tables of {settings.risk_min_rows:,} rows or more, "
            f"refused by risk_policy 'deny'; nothing was applied:\n{body}",
            file=self.findings[0].file, line=self.findings[0].line,
            remedy="rewrite them the safe way (see the README's \"Changing a live database\"), or, once reviewed, "
                   "allow the rule in that file: -- llmemory-db:allow <rule>: <reason>")


# --------------------------------------------------------------------------- squawk

def squawk_binary() -> str:
    """The squawk executable: beside this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if not found:
        raise MigrationError("squawk, the linter the risk analysis runs, is not installed",
                             remedy=f"pip install squawk-cli=={SQUAWK_VERSION} into the environment that runs "
                                    "llmemory-db (a dependency of the llmemory-db package: installing the package "
                                    "brings it)")
    return found


def _run_squawk(args: List[str]) -> subprocess.CompletedProcess:
    binary = squawk_binary()
    try:
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise MigrationError(f"squawk ({binary}) failed to start: {exc}",
                             remedy=f"reinstall it: pip install --force-reinstall squawk-cli=={SQUAWK_VERSION}") from None


def validate_rules(rules: Iterable[Tuple[str, str, int]]) -> None:
    """``(rule, file, line)``: squawk itself says which rule names it does not know."""
    rules = list(rules)
    if not rules:
        return
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.sql"
        empty.write_text("SELECT 1;\n")
        result = _run_squawk(["--exclude", ",".join(sorted({r for r, _, _ in rules})), str(empty)])
        if result.returncode == 2 and "invalid rule name" in result.stderr:
            bad = result.stderr.split("invalid rule name", 1)[1].split()[0].strip("'\"")
            for rule, filename, line in rules:
                if rule == bad:
                    raise MigrationError(
                        f"{filename}:{line}: unknown squawk rule {rule!r} in an llmemory-db:allow comment",
                        file=filename, line=line,
                        remedy="use a rule name from squawk's findings (squawkhq.com/docs/rules), e.g. "
                               "-- llmemory-db:allow require-concurrent-index-creation: <reason>")


def allowances(migration: Migration) -> Dict[str, Tuple[int, str]]:
    """rule -> (line, reason) of the file's ``-- llmemory-db:allow`` comments."""
    found: Dict[str, Tuple[int, str]] = {}
    for match in ALLOW.finditer(migration.sql):
        line = migration.sql.count("\n", 0, match.start()) + 1
        for rule in re.split(r"\s*,\s*", match.group("rules")):
            found[rule] = (line, (match.group("why") or "").strip())
    return found


def squawk(rendered: Dict[str, str], no_transaction: Set[str], pg_version: str = "18.0") -> List[dict]:
    """squawk's findings on rendered SQL (filename -> text), lines 1-based, style rules off."""
    if not rendered:
        return []
    findings: List[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        groups = {True: [], False: []}
        for filename, text in rendered.items():
            path = Path(tmp) / filename
            path.write_text(text)
            groups[filename not in no_transaction].append(str(path))
        for in_transaction, paths in groups.items():
            if not paths:
                continue
            args = ["--reporter", "json", "--pg-version", pg_version, "--exclude", ",".join(STYLE_RULES),
                    "--no-error-on-unmatched-pattern"] + (["--assume-in-transaction"] if in_transaction else [])
            result = _run_squawk(args + paths)
            try:
                items = json.loads(result.stdout or "[]")
            except ValueError:
                raise MigrationError(f"squawk failed (exit {result.returncode}): {result.stderr.strip()[:500]}",
                                     remedy=f"check the squawk installation: pip install squawk-cli=={SQUAWK_VERSION}"
                                     ) from None
            for item in items:
                item["file"] = Path(item["file"]).name
                item["line"] = int(item.get("line") or 0) + 1  # squawk counts from 0
                findings.append(item)
    return sorted(findings, key=lambda f: (f["file"], f["line"], f["rule_name"]))


# --------------------------------------------------------------------------- tables and their live sizes

_CHANGES_RELATION = {"IndexStmt", "AlterTableStmt", "RenameStmt", "CreateTrigStmt", "RuleStmt", "TruncateStmt",
                     "DropStmt"}


def _relations(kind: str, stmt: dict) -> List[Tuple[Optional[str], str]]:
    """(schema, name) of the relations a statement squawk may flag changes; DROP INDEX names the index."""
    return lint_mod.changed_relations(kind, stmt) if kind in _CHANGES_RELATION else []


def _statement_at(statements: List[Tuple[int, str, dict]], line: int) -> Tuple[str, dict]:
    chosen = ("", {})
    for start, kind, stmt in statements:
        if start <= line:
            chosen = (kind, stmt)
    return chosen


def _parsed(text: str) -> List[Tuple[int, str, dict]]:
    """(first line, node type, node) of each statement."""
    positions = lint_mod._Positions(text)
    out = []
    for kind, stmt, start, length in lint_mod.parse(text):
        piece = text[start:start + length]
        out.append((positions(start + len(piece) - len(piece.lstrip()))[0], kind, stmt))
    return out


_SIZES = """
SELECT q.schema, q.name, c.oid IS NOT NULL, c.relkind::text, c.reltuples::bigint,
       CASE WHEN c.oid IS NULL THEN NULL
            WHEN has_table_privilege(c.oid, 'SELECT') OR pg_has_role(c.relowner, 'USAGE')
            THEN pg_total_relation_size(c.oid) END,
       CASE WHEN c.oid IS NULL THEN NULL
            WHEN has_table_privilege(c.oid, 'SELECT') OR pg_has_role(c.relowner, 'USAGE')
            THEN pg_relation_size(c.oid) END,
       (SELECT n2.nspname || '.' || t.relname FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n2 ON n2.oid = t.relnamespace WHERE x.indexrelid = c.oid)
FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS q(schema, name, n)
LEFT JOIN pg_namespace ns ON ns.nspname = q.schema
LEFT JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = q.name
ORDER BY q.n
"""


def live_sizes(conn: psycopg.Connection, tables: Sequence[Tuple[str, str]]) -> Dict[Tuple[str, str], tuple]:
    """(schema, name) -> (exists, kind, rows estimate or None, bytes or None, heap bytes or None, table of an
    index), in one query; sizes are None where this role may not read the table."""
    if not tables:
        return {}
    rows = conn.execute(_SIZES, ([s for s, _ in tables], [n for _, n in tables])).fetchall()
    return {(schema, name): (exists, kind, None if rows_ is None or rows_ < 0 else rows_, size, heap, owner)
            for schema, name, exists, kind, rows_, size, heap, owner in rows}


def human_rows(rows: Optional[int]) -> str:
    if rows is None:
        return "rows not estimated (never analyzed)"
    for limit, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if rows >= limit:
            return f"~{rows / limit:.1f}{unit} rows".replace(".0", "")
    return f"~{rows} rows"


def human_bytes(size: Optional[int]) -> str:
    if size is None:
        return "size unknown"
    for limit, unit in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "kB")):
        if size >= limit:
            return f"{size / limit:.0f} {unit}" if size >= 10 * limit else f"{size / limit:.1f} {unit}"
    return f"{size} bytes"


# --------------------------------------------------------------------------- the analysis

def analyze(pending: Sequence[Migration], rendered: Dict[str, str], settings: Settings,
            conn: Optional[psycopg.Connection] = None) -> RiskReport:
    """The risk of ``pending`` files (in plan order) for ``settings``; ``conn``: read live sizes (else squawk's
    findings only)."""
    report = RiskReport()
    files = [m for m in pending if m.filename in rendered]
    if not files:
        return report
    allowed = {m.filename: allowances(m) for m in files}
    validate_rules((rule, name, line) for name, rules in allowed.items() for rule, (line, _) in rules.items())
    version = "18.0"
    if conn is not None:
        number = conn.info.server_version
        version = f"{number // 10000}.{number % 100 if number >= 100000 else 0}"
    raw = squawk({m.filename: rendered[m.filename] for m in files},
                 {m.filename for m in files if m.no_transaction}, version)
    target = settings.schema_name
    parsed = {m.filename: _parsed(rendered[m.filename]) for m in files}
    # tables each file creates, for "created earlier in this plan"
    created: Dict[str, str] = {}  # schema.table -> the first pending file that creates it
    order = {m.filename: i for i, m in enumerate(files)}
    created_in: Dict[str, Dict[str, int]] = {}
    for m in files:
        created_in[m.filename] = {}
        for line, kind, stmt in parsed[m.filename]:
            if kind == "CreateStmt" and stmt.get("relation"):
                rel = stmt["relation"]
                qualified = f"{rel.get('schemaname') or target}.{rel['relname']}"
                created.setdefault(qualified, m.filename)
                created_in[m.filename].setdefault(qualified, line)
    resolved: List[Tuple[dict, Optional[Tuple[str, str]], List[Tuple[str, str]]]] = []
    lookups: List[Tuple[str, str]] = []
    for item in raw:
        kind, stmt = _statement_at(parsed[item["file"]], item["line"])
        relations = _relations(kind, stmt)
        candidates = []
        if relations:
            schema, name = relations[0]
            candidates = [(schema, name)] if schema else [(target, name), ("public", name)]
            lookups.extend(c for c in candidates if c not in lookups)
        resolved.append((item, relations[0] if relations else None, candidates))
    sizes = live_sizes(conn, lookups) if conn is not None else {}
    for item, relation, candidates in resolved:
        rule = item["rule_name"]
        if rule in allowed[item["file"]]:
            continue
        finding = Finding(item["file"], item["line"], rule, "warning", item.get("message") or "",
                          item.get("help") or "")
        if relation is not None:
            qualified = f"{relation[0] or target}.{relation[1]}"
            live = next((sizes[c] for c in candidates if c in sizes and sizes[c][0]), None)
            if live is not None and live[1] == "i" and live[5]:  # DROP INDEX: the table it belongs to
                qualified = live[5]
                schema, name = qualified.split(".", 1)
                live = live_sizes(conn, [(schema, name)]).get((schema, name)) if conn is not None else None
            elif live is not None:
                qualified = next(f"{s}.{n}" for s, n in candidates if sizes.get((s, n), (False,))[0])
            finding.table = qualified
            made_here = created_in[item["file"]].get(qualified)
            made_before = created.get(qualified)
            if made_here is not None and made_here <= item["line"]:
                finding.severity, finding.note = "info", f"created earlier in {item['file']}: not at risk"
            elif made_before is not None and order[made_before] < order[item["file"]]:
                finding.severity, finding.note = "info", f"created by {made_before} in this plan: not at risk"
            elif conn is None:
                finding.note = "live size not read: no database given"
            elif live is None:
                finding.severity, finding.note = "info", "does not exist (yet): not at risk"
            else:
                _, _, rows, size, heap, _ = live
                finding.rows_estimate, finding.bytes = rows, size
                if heap == 0:
                    finding.severity, finding.note = "info", "empty: not at risk"
                else:
                    finding.note = f"{human_rows(rows)}, {human_bytes(size)}"
                    at_risk = size is None or rows is None or rows >= settings.risk_min_rows
                    if settings.risk_policy == "deny" and at_risk:
                        finding.severity = "error"
        report.findings.append(finding)
    for name, rules in allowed.items():
        for rule, (line, why) in sorted(rules.items()):
            report.allowed.append(f"{name}:{line} allows {rule}" + (f": {why}" if why else ""))
    return report


def rendered_sql(pending: Sequence[Migration], rendered: Dict[str, str], settings: Settings) -> str:
    """Every pending file exactly as it will be sent, with a header each (``plan --sql``)."""
    parts = []
    for m in pending:
        mode = "statement by statement, autocommit (-- pgdbm:no-transaction)" if m.no_transaction else \
            "in one transaction with its history row"
        parts.append(f"-- ===== {m.filename} (checksum {m.checksum[:12]}, {mode}; "
                     f"schema {settings.schema_name}) =====\n{rendered[m.filename].rstrip()}\n")
    return "\n".join(parts)
