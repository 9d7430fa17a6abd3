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

from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import psycopg

from . import parser, plpgsql
from . import violation_checks
from . import violations as violations_mod
from .errors import RiskError, ViolationError, excerpt
from .files import Migration
from .settings import Settings
from .sizes import human_bytes, human_rows, live_sizes
from .squawk import allowances, squawk, validate_rules

RISK_POLICIES = ("warn", "deny")
# findings of this module's own (not squawk's): PL/pgSQL it cannot read, and the data preflight
DYNAMIC_RULES = ("dynamic-sql", "unparsed-plpgsql")
OWN_RULES = DYNAMIC_RULES + violation_checks.RULES


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
    context: str = ""                    # "inside the DO block at line 12" (a statement inside PL/pgSQL)
    violations: Optional[int] = None     # data preflight: rows (unique: key groups) that make the statement fail
    examples: Optional[List[dict]] = None  # data preflight: up to 5 of them (their keys)
    query: Optional[str] = None          # data preflight: the query that lists them all

    def __str__(self) -> str:
        if self.rule in OWN_RULES:
            text = f"{self.file}:{self.line} {self.rule}: {self.message}"
            if self.query and self.violations:
                text += f" List them: {self.query} Then: {self.help}"
            elif self.query and self.violations is None:  # not checked
                text += f" Run it yourself: {self.query}"
            return text if self.severity == "warning" else f"{text} [{self.severity}]"
        where = f" on {self.table} ({self.note})" if self.table else (f" ({self.note})" if self.note else "")
        where += f" {self.context}:" if self.context else ""
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

    @property
    def violations(self) -> List[Finding]:
        """Errors of the data preflight: statements existing rows will make fail."""
        return [f for f in self.errors if f.rule in violation_checks.RULES]

    def error(self, settings: Settings) -> Optional[Exception]:
        """The error refusing this plan, or None: rows that make a statement fail first (whatever the policy),
        else the deny policy's refusal."""
        if self.violations:
            return ViolationError(self.violations, [f for f in self.errors if f not in self.violations])
        return RiskError(self.errors, settings) if self.errors else None

    def raise_for_errors(self, settings: Settings) -> None:
        error = self.error(settings)
        if error is not None:
            raise error


# --------------------------------------------------------------------------- tables and their live sizes

_CHANGES_RELATION = {"IndexStmt", "AlterTableStmt", "RenameStmt", "CreateTrigStmt", "RuleStmt", "TruncateStmt",
                     "DropStmt"}


def _relations(kind: str, stmt: dict) -> List[Tuple[Optional[str], str]]:
    """(schema, name) of the relations a statement squawk may flag changes; DROP INDEX names the index."""
    return parser.changed_relations(kind, stmt) if kind in _CHANGES_RELATION else []


def _statement_at(statements: List[Tuple[int, str, dict]], line: int) -> Tuple[str, dict]:
    chosen = ("", {})
    for start, kind, stmt in statements:
        if start <= line:
            chosen = (kind, stmt)
    return chosen


def _parsed(text: str, parsed: Optional[list] = None) -> List[Tuple[int, str, dict]]:
    """(first line, node type, node) of each statement (``parsed``: the text's ``parser.parse``, when known)."""
    positions = parser.Positions(text)
    out = []
    for kind, stmt, start, length in (parser.parse(text) if parsed is None else parsed):
        piece = text[start:start + length]
        out.append((positions(start + len(piece) - len(piece.lstrip()))[0], kind, stmt))
    return out


# --------------------------------------------------------------------------- the analysis

EMBEDDED_SUFFIX = "~plpgsql.sql"  # squawk's file of a migration's statements inside PL/pgSQL


def _embedded_sql(embedded: Dict[str, List[plpgsql.Embedded]]
                  ) -> Tuple[Dict[str, str], Dict[str, Tuple[str, List[Tuple[int, plpgsql.Embedded]]]]]:
    """One squawk file per migration of the statements inside its PL/pgSQL, and where each starts in it."""
    texts: Dict[str, str] = {}
    where: Dict[str, Tuple[str, List[Tuple[int, plpgsql.Embedded]]]] = {}
    for name, items in embedded.items():
        parts, index, line = [], [], 1
        for item in items:
            if item.dynamic:
                continue
            body = item.text.strip().rstrip(";").rstrip()
            index.append((line, item))
            parts.append(body + ";\n")
            line += body.count("\n") + 1
        if parts:
            texts[name + EMBEDDED_SUFFIX] = "".join(parts)
            where[name + EMBEDDED_SUFFIX] = (name, index)
    return texts, where


def _dynamic_finding(name: str, item: plpgsql.Embedded, called: Dict[str, str]) -> Finding:
    rule = "dynamic-sql" if item.reason.startswith("EXECUTE") else "unparsed-plpgsql"
    what = f": {excerpt(item.text, 120)}" if item.text else ""
    return Finding(name, item.line, rule, "info",
                   f"{_context(item.routine, called)}, {item.reason}{what}; review it by hand",
                   context=_context(item.routine, called))


def _context(routine: plpgsql.Routine, called: Dict[str, str]) -> str:
    return routine.context(called.get(routine.display, "") if routine.display else "")


def analyze(pending: Sequence[Migration], rendered: Dict[str, str], settings: Settings,
            conn: Optional[psycopg.Connection] = None,
            on_progress: Optional[Callable[[str], None]] = None) -> RiskReport:
    """The risk of ``pending`` files (in plan order) for ``settings``; ``conn``: read live sizes and run the
    data preflight (else squawk's findings only). Statements inside DO blocks and PL/pgSQL functions are
    analysed like top-level ones; ``on_progress(line)`` is told about each data check as it starts."""
    report = RiskReport()
    files = [m for m in pending if m.filename in rendered]
    if not files:
        return report
    allowed = {m.filename: allowances(m) for m in files}
    validate_rules(((rule, name, line) for name, rules in allowed.items() for rule, (line, _) in rules.items()),
                   OWN_RULES)
    version = "18.0"
    if conn is not None:
        number = conn.info.server_version
        version = f"{number // 10000}.{number % 100 if number >= 100000 else 0}"
    target = settings.schema_name
    trees = {m.filename: parser.parse(rendered[m.filename]) for m in files}  # parsed once (a 10 MB file too)
    embedded = {m.filename: plpgsql.embedded(rendered[m.filename], trees[m.filename], target) for m in files}
    steps, called = violations_mod.plan_steps([m.filename for m in files], rendered, embedded, target, trees)
    inner, inner_at = _embedded_sql(embedded)
    no_transaction = {m.filename for m in files if m.no_transaction}
    raw = squawk({**{m.filename: rendered[m.filename] for m in files}, **inner},
                 no_transaction | {name + EMBEDDED_SUFFIX for name in no_transaction}, version)
    parsed = {m.filename: _parsed(rendered[m.filename], trees[m.filename]) for m in files}
    # tables each file creates (top level, in a DO block, in a function it calls), for "created earlier in this plan"
    created: Dict[str, str] = {}  # schema.table -> the first pending file that creates it
    order = {m.filename: i for i, m in enumerate(files)}
    created_in: Dict[str, Dict[str, int]] = {m.filename: {} for m in files}
    indexes: Dict[str, str] = {}  # schema.index -> schema.table, of the indexes the plan builds (for DROP INDEX)
    for step in steps:
        if step.kind == "CreateStmt" and step.stmt.get("relation"):
            rel = step.stmt["relation"]
            qualified = f"{rel.get('schemaname') or target}.{rel['relname']}"
            created.setdefault(qualified, step.file)
            created_in[step.file].setdefault(qualified, step.line)
        elif step.kind == "IndexStmt" and step.stmt.get("idxname") and step.stmt.get("relation"):
            rel = step.stmt["relation"]
            schema = rel.get("schemaname") or target
            indexes.setdefault(f"{schema}.{step.stmt['idxname']}", f"{schema}.{rel['relname']}")
    resolved: List[Tuple[dict, Optional[Tuple[str, str]], List[Tuple[str, str]], Optional[plpgsql.Embedded]]] = []
    lookups: List[Tuple[str, str]] = []
    for item in raw:
        origin = None
        if item["file"] in inner_at:  # a statement inside PL/pgSQL: back to its file and line
            name, index = inner_at[item["file"]]
            start, origin = [(s, e) for s, e in index if s <= item["line"]][-1]
            relative = item["line"] - start + 1
            kind, stmt = _statement_at(_parsed(origin.text.strip()), relative)
            item = dict(item, file=name, line=origin.line + (0 if origin.constant else relative - 1))
        else:
            kind, stmt = _statement_at(parsed[item["file"]], item["line"])
        relations = _relations(kind, stmt)
        candidates = []
        if relations:
            schema, name = relations[0]
            candidates = [(schema, name)] if schema else [(target, name), ("public", name)]
            lookups.extend(c for c in candidates if c not in lookups)
        resolved.append((item, relations[0] if relations else None, candidates, origin))
    sizes = live_sizes(conn, lookups) if conn is not None else {}
    for item, relation, candidates, origin in resolved:
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
            elif qualified in indexes:  # an index this plan builds: the table it is on
                qualified = indexes[qualified]
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
        if origin is not None:
            finding.context = _context(origin.routine, called)
            if not origin.routine.runs_at_apply and origin.routine.display not in called:
                finding.severity = "info"  # a function body runs when called: this plan does not call it
                finding.note = "; ".join(n for n in (finding.note, "not run by this plan") if n)
        report.findings.append(finding)
    for m in files:
        for item in embedded[m.filename]:
            if item.dynamic:
                finding = _dynamic_finding(m.filename, item, called)
                if finding.rule not in allowed[m.filename]:
                    report.findings.append(finding)
    if conn is not None and settings.preflight_timeout:
        report.findings.extend(Finding(**found) for found in violations_mod.preflight(
            conn, steps, target, settings.preflight_timeout, on_progress))
    report.findings.sort(key=lambda f: (order[f.file], f.line, f.rule))
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
