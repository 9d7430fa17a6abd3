"""squawk (PyPI ``squawk-cli``), the linter behind the risk analysis: found beside this interpreter, run once for
many files, its findings mapped to 1-based lines; the files' reviewed exceptions (``-- llmemory-db:allow``)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Collection, Dict, Iterable, List, Set, Tuple

from .errors import MigrationFileError, SquawkError
from .files import Migration

SQUAWK_VERSION = "2.70.0"
# squawk rules that are style or that the engine takes care of, off unless a file asks for them by name:
# integer widths, identity vs serial, varchar vs text, timestamptz, char(n) are style; re-runnable statements are
# not needed (every transactional file runs whole or not at all); the engine sets lock_timeout for every
# transactional migration (statement_timeout is the user's choice); BEGIN/COMMIT in a file is already an error.
STYLE_RULES = ("prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-identity", "prefer-text-field",
               "prefer-timestamptz", "prefer-timestamp-tz", "ban-char-field", "prefer-robust-stmts",
               "require-lock-timeout", "require-statement-timeout", "require-timeout-settings",
               "transaction-nesting")
ALLOW = re.compile(r"^--\s*llmemory-db:allow\s+(?P<rules>[a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*)\s*(?::\s*(?P<why>.*))?$",
                   re.MULTILINE)


def squawk_binary() -> str:
    """The squawk executable: beside this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if not found:
        raise SquawkError("squawk, the linter the risk analysis runs, is not installed",
                          remedy=f"pip install squawk-cli=={SQUAWK_VERSION} into the environment that runs the "
                                 "program (the llmemory-db package depends on it: reinstall llmemory-db)")
    return found


def _run_squawk(args: List[str]) -> subprocess.CompletedProcess:
    binary = squawk_binary()
    try:
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise SquawkError(f"squawk ({binary}) failed to start: {exc}",
                          remedy=f"reinstall it: pip install --force-reinstall squawk-cli=={SQUAWK_VERSION}") from None


def validate_rules(rules: Iterable[Tuple[str, str, int]], own: Collection[str] = ()) -> None:
    """``(rule, file, line)``: squawk itself says which rule names it does not know (``own``: this project's own
    rules, not squawk's)."""
    rules = [r for r in rules if r[0] not in own]
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
                    raise MigrationFileError(
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
                raise SquawkError(f"squawk failed (exit {result.returncode}): {result.stderr.strip()[:500]}",
                                  remedy=f"check the squawk installation: pip install squawk-cli=={SQUAWK_VERSION}"
                                  ) from None
            for item in items:
                item["file"] = Path(item["file"]).name
                item["line"] = int(item.get("line") or 0) + 1  # squawk counts from 0
                findings.append(item)
    return sorted(findings, key=lambda f: (f["file"], f["line"], f["rule_name"]))
