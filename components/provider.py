"""The dynamic provider behind ``components.Migrations``: a thin adapter from Pulumi to the engine.

Pickled into state *by reference* (``components.provider.MigrationsProvider``):
keep this module path and class name stable, old stacks refresh and destroy
with whatever code lives here.  No Pulumi type other than the dynamic
provider protocol is used, every connection is closed, no password reaches
a message.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from pulumi.dynamic import (CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, ResourceProvider,
                            UpdateResult)

from . import migrate
from .migrate import drift as drift_mod
from .migrate.errors import MigrationError
from .migrate.objects import ManagedObjects

# Inputs whose change is a reason to run the engine again (never a replacement: applying is an update).
TRACKED = ("checksums", "schema", "module_name", "history_table", "host", "port", "username", "password",
           "database", "sslmode", "lock_wait_timeout", "lock_timeout", "statement_timeout", "strict", "pool_mode",
           "drop_on_destroy", "managed", "extensions", "accept_schema_drift")

DRIFT_REMEDY = (
    "undo the manual change, or write a migration that makes it (and apply it with pulumi up), or accept the "
    "current schema as it is: set accept_schema_drift (config llmemory-db:acceptSchemaDrift true) for one "
    "`pulumi up`, which records the new fingerprint, then unset it")


def _target(props: Dict[str, Any]) -> migrate.Target:
    return migrate.Target(
        migrations_dir=_resolve_dir(props.get("migrations_dir", "migrations")),
        schema=props.get("schema") or None,
        module=props.get("module_name") or migrate.DEFAULT_MODULE,
        history_table=props.get("history_table") or migrate.DEFAULT_HISTORY_TABLE,
        lock_wait_timeout=float(props.get("lock_wait_timeout") or 60),
        lock_timeout=_seconds(props.get("lock_timeout")),
        statement_timeout=_seconds(props.get("statement_timeout")),
        strict=bool(props.get("strict")), pool_mode=props.get("pool_mode") or "auto")


def _seconds(value: Any) -> Optional[float]:
    return None if value in (None, "", 0) else float(value)


def _resolve_dir(path: str) -> str:
    # relative paths are relative to the Pulumi project directory, where the provider process runs
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def _connect(props: Dict[str, Any]):
    return migrate.connect(
        host=props.get("host") or "localhost", port=int(props.get("port") or 5432),
        user=props.get("username") or "postgres", password=props.get("password") or None,
        dbname=props.get("database") or "postgres", sslmode=props.get("sslmode") or "prefer")


def _managed(props: Dict[str, Any]) -> ManagedObjects:
    managed = props.get("managed") or {}
    return ManagedObjects(**{k: list(managed.get(k) or []) for k in ("tables", "sequences", "views", "functions")})


def _inspect(conn, props: Dict[str, Any], target: migrate.Target) -> Dict[str, str]:
    history_schema, history_name = target.history_parts
    # the history table and its in-flight companion are the engine's, not the migrations' objects
    exclude = [history_name, target.inflight_parts[1]] if history_schema == (target.schema or "public") else []
    return drift_mod.inspect(conn, target.schema, _managed(props), props.get("extensions") or [], exclude)


# Where the objects live (the fingerprint's scope) and, with the module and its history, whose history it is.
PLACE = ("schema", "database", "host", "port")
HISTORY = PLACE + ("module_name", "history_table")


def _same(olds: Dict[str, Any], news: Dict[str, Any], keys: tuple) -> bool:
    return all(olds.get(k) == news.get(k) for k in keys)


def resource_id(props: Dict[str, Any]) -> str:
    """Stable id: one module's history in one database (never random)."""
    return f"{props.get('database') or 'postgres'}/{props.get('history_table')}/{props.get('module_name')}"


def _fail(error: Exception) -> Exception:
    """Raise the engine's message as the whole error text (Pulumi shows it as is)."""
    return Exception(str(error))


_watching = threading.Lock()


def watch_engine(interval: float = 1.0) -> None:
    """Exit this provider process when the pulumi engine that started it is gone.

    The CLI starts plugins in process groups of their own, so a SIGKILLed ``pulumi up`` leaves the dynamic
    provider running (and Python's dynamic provider host never notices). Pulumi's Go plugins check the engine's
    health; this does the same for ours: the engine's address is the host's argument, and once it refuses
    connections the process exits, its connection closes, and the server rolls back a migration in progress
    (client_connection_check_interval): the database holds the whole migration or none of it."""
    if not _watching.acquire(blocking=False):
        return
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if getattr(spec, "name", "") != "pulumi.dynamic.__main__" or len(sys.argv) < 2 or ":" not in sys.argv[1]:
        return  # not the provider host (a test, the program itself)
    host, _, port = sys.argv[1].rpartition(":")

    def loop() -> None:
        misses = 0
        while True:
            time.sleep(interval)
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
                misses = 0
            except OSError:
                misses += 1
                if misses >= 2:
                    try:  # stderr was the engine's pipe: it may be closed too
                        print("the pulumi engine is gone: exiting (a migration in progress is rolled back)",
                              file=sys.stderr, flush=True)
                    finally:
                        os._exit(3)

    threading.Thread(target=loop, name="engine-watchdog", daemon=True).start()


CONNECTION = ("host", "port", "username", "password", "database", "sslmode")


class ExtensionCheckProvider(ResourceProvider):
    """Before pulumi-postgresql creates an extension: is it there, or can this user create it? Else the remedy."""

    def _check(self, props: Dict[str, Any]) -> Dict[str, Any]:
        try:
            with _connect(props) as conn:
                migrate.check_extensions(conn, [props["extension"]])
        except MigrationError as exc:
            raise _fail(exc) from None
        return props

    def create(self, props: Dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props.get('database')}/{props['extension']}", outs=self._check(props))

    def diff(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> DiffResult:
        return DiffResult(changes=not _same(olds, news, CONNECTION + ("extension",)))

    def update(self, _id: str, _olds: Dict[str, Any], news: Dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._check(news))


class MigrationsProvider(ResourceProvider):
    """check/diff are pure (files and inputs); create/update apply; read re-reads history; delete keeps data."""

    def check(self, _olds: Dict[str, Any], news: Dict[str, Any]) -> CheckResult:
        failures: List[CheckFailure] = []
        try:
            _target(news)
        except MigrationError as exc:
            failures.append(CheckFailure("migrations", str(exc)))
        if not isinstance(news.get("checksums", {}), dict):
            failures.append(CheckFailure("checksums", "checksums must be a map of filename to SHA-256"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> DiffResult:
        old_sums: Dict[str, str] = olds.get("checksums") or {}
        new_sums: Dict[str, str] = news.get("checksums") or {}
        same_target = _same(olds, news, HISTORY)
        if same_target:
            modified = [(name, old_sums[name], new_sums[name]) for name in sorted(new_sums)
                        if name in old_sums and old_sums[name] != new_sums[name]]
            if modified:
                raise _fail(migrate.ChecksumMismatchError(modified, news.get("module_name"),
                                                          news.get("history_table")))
        changed = [key for key in TRACKED if olds.get(key) != news.get(key)]
        drifted = olds.get("drift") or []
        if drifted:
            changed.append("drift")
            print(f"migrations {resource_id(news)}: schema drift:\n  " + "\n  ".join(drifted))
        interrupted = olds.get("interrupted") or []
        if interrupted:  # found by a refresh; the update refuses to go on and says what to do
            changed.append("interrupted")
            print(f"migrations {resource_id(news)}: interrupted:\n  " + "\n  ".join(interrupted))
        if changed:
            pending = [name for name in sorted(new_sums) if name not in old_sums or not same_target]
            if pending:
                print(f"migrations {resource_id(news)}: {len(pending)} pending: {', '.join(pending)}")
            forgotten = [name for name in sorted(old_sums) if name not in new_sums]
            if forgotten:
                print(f"migrations {resource_id(news)}: recorded but not on disk: {', '.join(forgotten)}")
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def _apply(self, props: Dict[str, Any], recorded: Optional[Dict[str, str]] = None,
               covered: Sequence[str] = ()) -> Dict[str, Any]:
        """Apply pending files; first, if a fingerprint was recorded (of the objects of the files ``covered``),
        refuse to build on a drifted schema."""
        watch_engine()
        target = _target(props)
        try:
            with _connect(props) as conn:
                if recorded is not None:
                    differences = self._drift(conn, props, target, recorded, covered)
                    if differences and not props.get("accept_schema_drift"):
                        raise Exception(
                            f"Schema drift in {target.schema or 'public'} (module {target.module}): objects the "
                            "migrations manage were changed outside Pulumi; nothing was applied:\n  "
                            + "\n  ".join(differences) + f"\nRemedy: {DRIFT_REMEDY}")
                    if differences:
                        print("migrations: accepted schema drift:\n  " + "\n  ".join(differences))
                result = migrate.apply(conn, target)
                objects = _inspect(conn, props, target)
        except MigrationError as exc:
            raise _fail(exc) from None
        expected = props.get("checksums") or {}
        if expected and expected != result.checksums:
            changed = sorted(set(expected.items()) ^ set(result.checksums.items()))
            raise Exception(f"Migration files changed between preview and apply: {sorted({n for n, _ in changed})}\n"
                            "Remedy: run pulumi up again so that the plan sees the current files")
        if result.applied:
            print(f"migrations {resource_id(props)}: applied {', '.join(result.applied)}")
        for warning in result.warnings:
            print(f"warning: {warning}")
        outs = dict(props)
        outs.update(schema_name=target.schema or "public", applied=sorted(result.checksums),
                    checksums=result.checksums, pending=[], missing=result.missing, objects=objects,
                    fingerprint=drift_mod.fingerprint(objects), drift=[], interrupted=[])
        return outs

    @staticmethod
    def _drift(conn, props: Dict[str, Any], target: migrate.Target, recorded: Dict[str, str],
               covered: Sequence[str]) -> List[str]:
        """Manual changes since the fingerprint. Not the work of other appliers: when files were applied since
        (pgdbm at start-up), the schema moved on with the history and is fingerprinted again after this update;
        objects of files not applied yet that exist already are an interrupted run's (reported as such)."""
        current = migrate.status(conn, target)
        if current.interrupted:
            raise migrate.InterruptedMigrationError(current.interrupted, target.module)
        covered = set(covered)
        since = [m.filename for m in current.plan.applied if m.filename not in covered]
        if since:
            print(f"migrations {resource_id(props)}: applied outside this stack since its last update: "
                  f"{', '.join(since)}; the schema fingerprint is taken again after this update")
            return []
        differences = drift_mod.compare(recorded, _inspect(conn, props, target))
        if differences and current.plan.pending:
            pending = migrate.engine.render_all(current.plan.pending, target).values()
            differences = drift_mod.without_expected(differences, drift_mod.created_by(pending, target.schema))
        return differences

    def create(self, props: Dict[str, Any]) -> CreateResult:
        return CreateResult(id_=resource_id(props), outs=self._apply(props))

    def update(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> UpdateResult:
        recorded = olds.get("objects") if _same(olds, news, PLACE) and olds.get("objects") is not None else None
        return UpdateResult(outs=self._apply(news, recorded, olds.get("applied") or []))

    def read(self, id_: str, props: Dict[str, Any]) -> ReadResult:
        """Live history: rows deleted or changed outside Pulumi show up as a diff against the inputs."""
        target = _target(props)
        try:
            with _connect(props) as conn:
                current = migrate.status(conn, target)
                recorded = migrate.read_history(conn, target) if current.history_exists else {}
                live = _inspect(conn, props, target)
        except MigrationError as exc:
            raise _fail(exc) from None
        on_disk = set(props.get("checksums") or {})
        outs = dict(props)
        outs.update(checksums={name: recorded[name] for name in sorted(recorded) if name in on_disk},
                    applied=sorted(name for name in recorded if name in on_disk),
                    pending=[m.filename for m in current.plan.pending], missing=current.plan.missing,
                    drift=drift_mod.compare(props.get("objects") or {}, live) if "objects" in props else [],
                    interrupted=[i.describe() for i in current.interrupted])
        inputs = {key: props[key] for key in props if key in TRACKED or key == "migrations_dir"}
        return ReadResult(id_=id_, outs=outs, inputs=inputs)

    def delete(self, _id: str, props: Dict[str, Any]) -> None:
        target = _target(props)
        where = f"schema {target.schema or 'public'} (module {target.module}, history {target.history_display})"
        if not props.get("drop_on_destroy"):
            print(f"migrations: kept the tables and history of {where}; "
                  "set drop_on_destroy (llmemory-db:dropOnDestroy) to drop them on destroy")
            return
        tables = [] if target.schema else _managed(props).tables
        try:
            with _connect(props) as conn:
                migrate.forget(conn, target, drop_tables=tables)
        except MigrationError as exc:
            raise _fail(exc) from None
        dropped = f"dropped tables {', '.join(tables)} and " if tables else ""
        print(f"migrations: {dropped}forgot the history of {where}")
