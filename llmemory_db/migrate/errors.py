"""Typed errors of the migration engine, one subtype per failure a user can act on. Each carries the facts (file,
line, statement excerpt, SQLSTATE, server message) and a remedy; ``str(error)`` is the whole message: what happened,
where, how to fix it. No message ever contains a connection string or a password."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .spelling import setting, spell


class MigrationError(Exception):
    """Base class of every error raised by the engine.

    Settings named in the message or the remedy are marked (:func:`.spelling.setting`): ``str()`` writes them as
    Python arguments; :meth:`render` in the caller's terms (yaml, cli, config)."""

    remedy: str = ""

    def __init__(self, message: str, *, remedy: str = "", file: Optional[str] = None,
                 line: Optional[int] = None) -> None:
        self.message = message
        self.remedy = remedy or self.remedy
        self.file = file
        self.line = line
        super().__init__(self.__str__())

    def where(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""

    def render(self, style: str = "python", flags: Optional[dict] = None) -> str:
        """The whole message, settings named for ``style`` (``flags``: the command line's options, for cli)."""
        text = self.message
        if self.remedy:
            text += f"\nRemedy: {self.remedy}"
        return spell(text, style, flags)

    def __str__(self) -> str:
        return self.render()


class MigrationsDirectoryError(MigrationError):
    """The migrations directory is missing, unreadable or not a directory."""


class MigrationFileError(MigrationError):
    """A migration file cannot be used: empty, not UTF-8, outside the directory, a concurrent index statement in a
    transaction, ..."""


class DuplicateVersionError(MigrationFileError):
    """Two files claim the same version."""


class TemplateError(MigrationFileError):
    """A ``{{...}}`` placeholder is unknown, malformed or names an invalid identifier."""


class SettingError(MigrationError):
    """A setting or argument has an invalid value (``setting`` names it, as the engine spells it)."""

    def __init__(self, message: str, *, setting: str = "", remedy: str = "") -> None:
        self.setting = setting
        super().__init__(message, remedy=remedy)


class InvalidIdentifierError(SettingError):
    """A schema, table, role or module name that is not a safe identifier."""


@dataclass
class LintIssue:
    file: str
    line: int
    column: int
    message: str
    statement: str = ""
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"
        if self.statement:
            text += f"\n    {self.statement}"
        return text


class LintError(MigrationError):
    """One or more pending files fail validation; nothing was applied."""

    def __init__(self, issues: Sequence[LintIssue]) -> None:
        self.issues = list(issues)
        first = self.issues[0]
        body = "\n".join(str(i) for i in self.issues)
        super().__init__(
            f"{len(self.issues)} problem(s) found in pending migrations; nothing was applied:\n{body}",
            remedy="fix the file(s) named above and run again (warnings become errors only with strict mode)",
            file=first.file, line=first.line)


class ChecksumMismatchError(MigrationError):
    """Files changed after they were applied (the spec's 'modified after being applied')."""

    def __init__(self, mismatches: Sequence[tuple], module: str, history_table: str) -> None:
        self.mismatches = list(mismatches)  # (filename, recorded checksum, current checksum)
        self.module = module
        self.history_table = history_table
        lines = []
        for file, recorded, current in self.mismatches:
            lines.append(f"Migration {file} has been modified after being applied\n"
                         f"  recorded checksum: {recorded}\n  current checksum:  {current}")
        first = self.mismatches[0]
        self.recorded, self.current = first[1], first[2]
        super().__init__(
            "\n".join(lines),
            remedy=(
                "if the edit is upstream's (a library's release) or changes nothing in the schema, have it verified "
                f"and recorded: {setting('accept_edits', [first[0]])} (or ['*'] for every edited "
                "file whose proof is clean), or python -m llmemory_db.migrate accept-edit FILE; the proof builds "
                "the files in a scratch schema and compares it with the live one. Otherwise restore the file to its "
                "applied content and put the change in a new migration file."),
            file=first[0])


@dataclass
class StatementFailure:
    sqlstate: str = ""
    message: str = ""
    detail: str = ""
    hint: str = ""


class StatementError(MigrationError):
    """A statement of a migration failed; that migration left no trace."""

    def __init__(self, file: str, line: int, statement: str, failure: StatementFailure,
                 committed: Sequence[str] = (), remedy: str = "", no_transaction: bool = False) -> None:
        self.statement = statement
        self.sqlstate = failure.sqlstate
        self.server_message = failure.message
        self.detail = failure.detail
        self.hint = failure.hint
        self.committed = list(committed)
        lines = [f"Migration {file} failed at line {line}: {failure.message}"
                 + (f" (SQLSTATE {failure.sqlstate})" if failure.sqlstate else "")]
        if failure.detail:
            lines.append(f"  detail: {failure.detail}")
        if failure.hint:
            lines.append(f"  hint: {failure.hint}")
        lines.append(f"  statement: {excerpt(statement)}")
        if no_transaction:
            lines.append("  this is a no-transaction migration: statements before the failing one stayed "
                         "committed; make them idempotent (IF NOT EXISTS) and run again")
        else:
            lines.append(f"  nothing of {file} was applied (its transaction was rolled back)")
        if self.committed:
            lines.append("  committed earlier in this run: " + ", ".join(self.committed))
        else:
            lines.append("  no migration was committed in this run")
        super().__init__("\n".join(lines), remedy=remedy or "fix the statement and run again",
                         file=file, line=line)


class LockRetryError(MigrationError):
    """A transactional migration failed on lock_timeout on every attempt until lock_retry_timeout ran out."""

    def __init__(self, error: "StatementError", attempts: int, seconds: float, blocker: str) -> None:
        self.statement_error, self.attempts, self.blocker = error, attempts, blocker
        self.sqlstate = error.sqlstate
        super().__init__(
            f"{error.message}\n  gave up after {attempts} attempt(s) in {seconds:.0f}s: every attempt waited "
            f"longer than lock_timeout for a lock; blocked by {blocker}",
            file=error.file, line=error.line,
            remedy="let the blocking session finish, or end it (SELECT pg_terminate_backend(<pid>)), then run "
                   f"again; or raise {setting('lock_retry_timeout')} to keep retrying for longer. Raising lock_timeout instead makes the application queue behind "
                   "the waiting migration for that long")


class LockTimeoutError(MigrationError):
    """Another session held the module's advisory lock for longer than the lock timeout."""


class ConnectionFailedError(MigrationError):
    """The server could not be reached or refused the credentials."""


class ConnectionLostError(MigrationError):
    """The connection broke while a migration ran (server restart, network, a terminated backend)."""

    def __init__(self, file: str, reason: str, committed: Sequence[str] = (), no_transaction: bool = False) -> None:
        lines = [f"Lost the connection to PostgreSQL while applying {file}: {reason}"]
        if no_transaction:
            lines.append(f"  {file} is a no-transaction migration: it is recorded as interrupted and the next "
                         "run reports what of it ran")
        else:
            lines.append(f"  {file} and its history row are one transaction: the server either committed both "
                         "or neither; the next run finds out and skips it if it was committed")
        lines.append("  committed earlier in this run: " + (", ".join(committed) if committed else "none"))
        super().__init__("\n".join(lines), file=file,
                         remedy="run again once the server is reachable; applied migrations are skipped")


@dataclass
class Inflight:
    """A no-transaction migration recorded as started and not finished."""

    filename: str
    checksum: str
    started_at: str
    pid: int
    done: int        # statements that completed
    total: int
    next_line: int   # line of the first statement not known to have completed
    error: str = ""  # the failure that stopped it, when it failed rather than died
    alive: bool = False  # the backend that started it is still connected (it may still be running)

    def describe(self) -> str:
        how = f"failed: {self.error}" if self.error else f"was interrupted (backend pid {self.pid} is gone)"
        return (f"{self.filename} (no-transaction) started at {self.started_at} and {how}; "
                f"{self.done} of {self.total} statement(s) completed; the statement at line {self.next_line} "
                "did not complete")


class InterruptedMigrationError(MigrationError):
    """A no-transaction migration started but never finished: refused until someone decides what to do."""

    def __init__(self, inflight: Sequence[Inflight], module: str) -> None:
        self.inflight = list(inflight)
        first = self.inflight[0].filename
        body = "\n".join(f"  {i.describe()}" for i in self.inflight)
        super().__init__(
            f"Interrupted migration(s) of module {module!r}; nothing more was applied:\n{body}",
            file=first,
            remedy=("look at what the completed statements did, then either finish the rest by hand and record "
                    f"the file as applied: python -m llmemory_db.migrate resolve {first} --mark-applied, or undo "
                    f"it and have the next run re-run the whole file: python -m llmemory_db.migrate resolve {first} "
                    "--retry (same --dsn/--schema/--module as the run). Write no-transaction files so they can "
                    "re-run (IF NOT EXISTS); an INVALID index a concurrent build left is dropped and rebuilt by the "
                    "next run itself"))


class PoolerError(MigrationError):
    """A no-transaction migration cannot run through a transaction-pooling endpoint."""


def excerpt(statement: str, limit: int = 200) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- settings, sources, prerequisites

class PackageSourceError(MigrationsDirectoryError):
    """migrations_package names a package that is not installed, or has no such folder."""


class SchemaMissingError(MigrationError):
    """The target schema does not exist (the component creates it; the command line does not)."""


class ExtensionError(MigrationError):
    """An extension the schema needs is missing and cannot be created by this user."""


class StartupRoleError(MigrationError):
    """The start-up role could not be given the history table or its guard."""


class SquawkError(MigrationError):
    """squawk (the linter behind the risk analysis) is missing or failed."""


class HistoryError(MigrationError):
    """Reading or writing the migration history failed (outside a migration's own statements)."""


class ResolveError(MigrationError):
    """``resolve`` cannot settle the named file."""


class CopyHistoryError(MigrationError):
    """``copy-history`` cannot copy: no source, unknown rows, or rows whose checksums do not match the files."""


class HistoryCollisionError(MigrationError):
    """Two components (or fleets) of one program would share one module's history."""


class UnterminatedFileError(MigrationFileError):
    """A file left its transaction open (an unterminated statement, quote or comment)."""


# --------------------------------------------------------------------------- adoption, drift, proofs, risk

class UnknownSchemaError(MigrationError):
    """The target already holds objects the migrations would create, and the module has no history there."""


class BaselineMismatchError(MigrationError):
    """The live schema is not what the files up to the baseline version produce."""


class ProofError(MigrationError):
    """The files could not be built in a scratch schema to compare with the live one."""


class EditedFileError(ChecksumMismatchError):
    """An applied file changed, and its edit was not accepted (no acceptance, or the proof found differences)."""

    def __init__(self, mismatches: Sequence[tuple], module: str, history_table: str, findings: str = "",
                 remedy: str = "") -> None:
        super().__init__(mismatches, module, history_table)
        if findings:
            self.message += "\n  " + findings
        self.remedy = remedy or self.remedy
        Exception.__init__(self, self.__str__())


class SchemaDriftError(MigrationError):
    """Objects the migrations manage were changed outside the migrations; nothing was applied."""

    def __init__(self, settings, differences: Sequence[str]) -> None:
        self.differences = list(differences)
        super().__init__(
            f"Schema drift in {settings.schema_name} (module {settings.module_name}): objects the migrations manage "
            "were changed outside Pulumi; nothing was applied:\n  " + "\n  ".join(self.differences),
            remedy=DRIFT_REMEDY)


DRIFT_REMEDY = (
    "undo the manual change, or write a migration that makes it (and apply it with pulumi up), or accept the "
    f"current schema as it is: set {setting('accept_schema_drift', True)} for one `pulumi up`, which records the "
    "new fingerprint, then unset it")


class RiskError(MigrationError):
    """The deny policy refused risky statements on tables that hold data; nothing was applied."""

    def __init__(self, findings: Sequence, settings) -> None:
        self.findings = list(findings)
        body = "\n".join(f"  {f}" for f in self.findings)
        super().__init__(
            f"{len(self.findings)} risky statement(s) on tables of {settings.risk_min_rows:,} rows or more, "
            f"refused by risk_policy 'deny'; nothing was applied:\n{body}",
            file=self.findings[0].file, line=self.findings[0].line,
            remedy="rewrite them the safe way (docs/live-changes.md), or, once reviewed, allow the rule in that "
                   "file: -- llmemory-db:allow <rule>: <reason>")


class ViolationError(MigrationError):
    """Existing rows make a pending statement fail (a duplicate key for a UNIQUE constraint, a NULL for SET NOT
    NULL, ...); nothing was applied. The statement is right: the data must change."""

    def __init__(self, findings: Sequence, others: Sequence = ()) -> None:
        self.findings, self.others = list(findings), list(others)
        parts = []
        for f in self.findings:
            parts.append(f"  {f.file}:{f.line} {f.message}\n    list them: {f.query}\n    then: {f.help}")
        text = (f"{len(self.findings)} pending statement(s) will fail on rows the live tables hold; nothing was "
                "applied:\n" + "\n".join(parts))
        if self.others:
            text += "\nalso refused by risk_policy 'deny':\n" + "\n".join(f"  {f}" for f in self.others)
        super().__init__(
            text, file=self.findings[0].file, line=self.findings[0].line,
            remedy="the data must change, not the statement: change the rows each query lists (as each 'then:' "
                   "says), then run again; do not edit an applied or published migration to get past it")


class IndexBuildError(StatementError):
    """A concurrent index statement failed or left an INVALID index; what it left was dropped."""

    def __init__(self, file: str, line: int, statement: str, fail: StatementFailure, committed: Sequence[str],
                 remedy: str, notes: Sequence[str], earlier: bool, index: str = "") -> None:
        self.index, self.notes = index, list(notes)
        super().__init__(file, line, statement, fail, committed, remedy=remedy, no_transaction=True)
        lines = [f"Migration {file} failed at line {line}: {fail.message}"
                 + (f" (SQLSTATE {fail.sqlstate})" if fail.sqlstate else "")]
        if fail.detail:
            lines.append(f"  detail: {fail.detail}")
        if fail.hint:
            lines.append(f"  hint: {fail.hint}")
        lines.append(f"  statement: {excerpt(statement)}")
        lines.extend(f"  {note}" for note in self.notes)
        if earlier:
            lines.append(f"  the statements of {file} before line {line} stayed committed: the file is recorded as "
                         f"failed there; once the cause is fixed, python -m llmemory_db.migrate resolve {file} "
                         "--retry re-runs it whole (or --mark-applied after finishing it by hand)")
        else:
            lines.append(f"  nothing of {file} ran before it: the file is not recorded and the next run runs it")
        lines.append("  committed earlier in this run: " + (", ".join(self.committed) if self.committed else "none"))
        self.message = "\n".join(lines)
        self.args = (str(self),)


class IndexBusyError(MigrationError):  # (not a subtype of IndexBuildError: the file's statement never ran)
    """An index a concurrent statement would build is INVALID and being built right now by another session (raised
    inside ``index_builds.execute``, which turns it into an IndexBuildError)."""
