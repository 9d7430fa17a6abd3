"""The dynamic provider behind ``llmemory_db.Migrations``: a thin adapter from Pulumi to the engine.

Pickled into state *by reference* (``llmemory_db.provider.MigrationsProvider``; stacks written before the
package was renamed hold ``components.provider.MigrationsProvider``, which ``components/provider.py`` keeps
resolving): keep this module path and the class names stable, old stacks refresh and destroy with whatever code
lives here. The engine decides everything (settings, plan, apply, drift rules); this module converts
properties to settings, calls it, and turns its typed errors into Pulumi's. Every connection is closed, no
password reaches a message.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from pulumi.runtime.rpc import UNKNOWN
from pulumi.dynamic import (CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, ResourceProvider,
                            UpdateResult)

from . import compat, migrate
from .migrate import drift as drift_mod
from .migrate.errors import MigrationError
from .migrate.objects import ManagedObjects
from .migrate.settings import Settings

CONNECTION = ("host", "port", "username", "password", "database", "sslmode", "sslrootcert")
# Inputs whose change is a reason to run the engine again (never a replacement: applying is an update). The
# folder is not one: the files' checksums are (a folder moved with the same files changes nothing).
TRACKED = ("checksums",) + tuple(n for n in Settings.names() if n != "migrations_dir") + CONNECTION + ("managed",)
INPUTS = TRACKED + ("migrations_dir",)
# Where the objects live (the fingerprint's scope) and, with the module and its history, whose history it is.
PLACE = ("schema", "database", "host", "port")
HISTORY = PLACE + ("module_name", "history_table")


def settings_of(props: Dict[str, Any]) -> Settings:
    """The engine's settings from resource properties; a relative folder is relative to the Pulumi project,
    where the provider process runs."""
    settings = Settings.from_props(props)
    folder = str(settings.migrations_dir)
    return settings if os.path.isabs(folder) else settings.replace(migrations_dir=os.path.join(os.getcwd(), folder))


def connect(props: Dict[str, Any], retries: int = 3):
    return migrate.connect(
        retries=retries, host=props.get("host") or "localhost", port=int(props.get("port") or 5432),
        user=props.get("username") or "postgres", password=props.get("password") or None,
        dbname=props.get("database") or "postgres", sslmode=props.get("sslmode") or "prefer",
        **({"sslrootcert": props["sslrootcert"]} if props.get("sslrootcert") else {}))


def managed_of(props: Dict[str, Any]) -> ManagedObjects:
    managed = props.get("managed") or {}
    return ManagedObjects(**{f.name: list(managed.get(f.name) or []) for f in dataclasses.fields(ManagedObjects)})


def same(olds: Dict[str, Any], news: Dict[str, Any], keys: Sequence[str]) -> bool:
    return all(olds.get(k) == news.get(k) for k in keys)


def resource_id(props: Dict[str, Any]) -> str:
    """Stable id: one module's history in one database (never random)."""
    return f"{props.get('database') or 'postgres'}/{props.get('history_table')}/{props.get('module_name')}"


def fail(error: Exception) -> Exception:
    """The engine's message as the whole error text (Pulumi shows it as is)."""
    return Exception(str(error))


_watching = threading.Lock()


def watch_engine(interval: float = 1.0, engine: Optional[str] = None) -> None:
    """Exit this provider process when the pulumi engine that started it is gone.

    The CLI starts plugins in process groups of their own, so a SIGKILLed ``pulumi up`` leaves the dynamic
    provider running (and Python's dynamic provider host never notices). Pulumi's Go plugins check the engine's
    health; this does the same for ours: the engine's address is the host's argument (or ``engine``: the
    package's plugin passes its own), and once it refuses connections the process exits, its connection closes,
    and the server rolls back a migration in progress (client_connection_check_interval): the database holds the
    whole migration or none of it."""
    if not _watching.acquire(blocking=False):
        return
    if engine is None:
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if getattr(spec, "name", "") != "pulumi.dynamic.__main__" or len(sys.argv) < 2 or ":" not in sys.argv[1]:
            _watching.release()
            return  # not the provider host (a test, the program itself)
        engine = sys.argv[1]
    host, _, port = engine.rpartition(":")

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


class ExtensionCheckProvider(ResourceProvider):
    """Before pulumi-postgresql creates an extension: is it there, or can this user create it? Else the remedy."""

    def _check(self, props: Dict[str, Any]) -> Dict[str, Any]:
        try:
            with connect(props) as conn:
                migrate.check_extensions(conn, [props["extension"]])
        except MigrationError as exc:
            raise fail(exc) from None
        return props

    def create(self, props: Dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props.get('database')}/{props['extension']}", outs=self._check(props))

    def diff(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> DiffResult:
        renamed = compat.pickled_before_rename(olds)
        if renamed:
            print(compat.rename_note(f"extension check {olds.get('extension')}"))
        return DiffResult(changes=renamed or not same(olds, news, CONNECTION + ("extension",)))

    def update(self, _id: str, _olds: Dict[str, Any], news: Dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._check(news))


_DEFAULTS = Settings.defaults()


def _value(props: Dict[str, Any], key: str) -> Any:
    """A property as the engine reads it: a setting that an older version did not write has its default."""
    value = props.get(key, _DEFAULTS.get(key))
    return list(value) if isinstance(value, tuple) else value


def diff_migrations(olds: Dict[str, Any], news: Dict[str, Any]) -> tuple:
    """(changed, report lines) of the migrations resource: pure, no I/O. An applied file whose checksum changed
    raises the engine's ChecksumMismatchError."""
    old_sums: Dict[str, str] = olds.get("checksums") or {}
    new_sums: Dict[str, str] = news.get("checksums") or {}
    same_target = same(olds, news, HISTORY)
    if same_target:
        modified = [(name, old_sums[name], new_sums[name]) for name in sorted(new_sums)
                    if name in old_sums and old_sums[name] != new_sums[name]]
        if modified:
            raise migrate.ChecksumMismatchError(modified, news.get("module_name"), news.get("history_table"))
    changed = [key for key in TRACKED if _value(olds, key) != _value(news, key)]
    lines: List[str] = []
    where = resource_id(news)
    if olds.get("drift"):
        changed.append("drift")
        lines.append(f"migrations {where}: schema drift:\n  " + "\n  ".join(olds["drift"]))
    if olds.get("interrupted"):  # found by a refresh; the update refuses to go on and says what to do
        changed.append("interrupted")
        lines.append(f"migrations {where}: interrupted:\n  " + "\n  ".join(olds["interrupted"]))
    if changed:
        pending = [name for name in sorted(new_sums) if name not in old_sums or not same_target]
        if pending:
            lines.append(f"migrations {where}: {len(pending)} pending: {', '.join(pending)}")
        forgotten = [name for name in sorted(old_sums) if name not in new_sums]
        if forgotten:
            lines.append(f"migrations {where}: recorded but not on disk: {', '.join(forgotten)}")
    return changed, lines


class MigrationsProvider(ResourceProvider):
    """check/diff are pure (files and inputs); create/update apply; read re-reads history; delete keeps data."""

    def check(self, olds: Dict[str, Any], news: Dict[str, Any]) -> CheckResult:
        """Valid settings, and the lint rules on the pending files: those not recorded by the previous update of
        the same history (applied files are checked by checksum in diff, never linted again)."""
        failures: List[CheckFailure] = []
        if not isinstance(news.get("checksums", {}), dict):
            return CheckResult(news, [CheckFailure("checksums", "checksums must be a map of filename to SHA-256")])
        try:
            settings = settings_of(news)
            applied = (olds.get("checksums") or {}) if same(olds, news, HISTORY) else {}
            pending = [m for m in migrate.load(settings.migrations_dir) if m.filename not in applied]
            rendered, warnings = migrate.lint_pending(pending, settings)
            for warning in warnings:
                print(f"warning: {warning}")
            if pending and not applied:
                self._adoption(pending, settings, news)
            if pending:
                report = self._risk(pending, rendered, settings, news)
                for line in report.lines():
                    print(f"migrations {resource_id(news)}: risk: {line}")
                report.raise_for_errors(settings)
        except MigrationError as exc:
            failures.append(CheckFailure("migrations", str(exc)))
        return CheckResult(news, failures)

    @staticmethod
    def _live(props: Dict[str, Any]):
        """A connection for what only the live database can tell at preview, or None when its settings are not
        known yet (computed by another resource) or it does not answer (not created yet)."""
        if any(props.get(key) == UNKNOWN for key in CONNECTION):
            return None
        try:
            return connect(props, retries=0)
        except migrate.ConnectionFailedError:
            return None

    def _adoption(self, files, settings: Settings, props: Dict[str, Any]) -> None:
        """A first deployment onto a schema that exists already: refused, unless a baseline is set and proven
        (the proof is applied to a scratch schema and rolled back)."""
        conn = self._live(props)
        if conn is None:
            return
        with conn:
            if migrate.read_history(conn, settings) if migrate.HistoryStore(conn, settings).exists() else {}:
                return
            if not settings.baseline:
                migrate.refuse_unknown(conn, settings, files)
            elif settings.baseline_trust:
                print(f"migrations {resource_id(props)}: baseline {settings.baseline}: TRUSTED WITHOUT PROOF (the "
                      "live schema is not compared with the files)")
            else:
                upto = migrate.adoption.files_up_to(files, settings.baseline)
                migrate.adoption.verify_baseline(conn, settings, upto, settings.baseline)
                print(f"migrations {resource_id(props)}: baseline {settings.baseline}: the live schema matches "
                      f"{upto[0].filename}…{upto[-1].filename}; up records them as applied without running them")

    @classmethod
    def _risk(cls, pending, rendered, settings: Settings, props: Dict[str, Any]):
        """squawk's findings on the pending files, with live table sizes when the database answers (a preview
        whose connection is not known yet, or a server not reachable yet, gets squawk's findings alone)."""
        conn = cls._live(props)
        if conn is None:
            return migrate.analyze(pending, rendered, settings)
        with conn:
            return migrate.analyze(pending, rendered, settings, conn)

    def diff(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> DiffResult:
        try:
            changed, lines = diff_migrations(olds, news)
        except MigrationError as exc:
            raise fail(exc) from None
        if compat.pickled_before_rename(olds):
            changed.append("__provider")
            lines.append(compat.rename_note(f"migrations {resource_id(news)}"))
        for line in lines:
            print(line)
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def _apply(self, props: Dict[str, Any], recorded: Optional[Dict[str, str]] = None,
               covered: Sequence[str] = ()) -> Dict[str, Any]:
        """Apply pending files; first, if a fingerprint was recorded (of the objects of the files ``covered``),
        refuse to build on a drifted schema (the engine's drift rules)."""
        watch_engine()
        settings = settings_of(props)
        managed = managed_of(props)
        try:
            with connect(props) as conn:
                if recorded is not None:
                    report = drift_mod.check_drift(conn, settings, managed, recorded, covered)
                    if report.applied_since:
                        print(f"migrations {resource_id(props)}: applied outside this stack since its last update: "
                              f"{', '.join(report.applied_since)}; the schema fingerprint is taken again after "
                              "this update")
                    if report.accepted:
                        print("migrations: accepted schema drift:\n  " + "\n  ".join(report.differences))
                # known: this stack recorded the schema here before (a history reset since is the spec's dev reset)
                result = migrate.apply(conn, settings, on_event=print, known=recorded is not None)
                objects = drift_mod.inspect_target(conn, settings, managed)
        except MigrationError as exc:
            raise fail(exc) from None
        expected = props.get("checksums") or {}
        if expected and expected != result.checksums:
            changed = sorted(set(expected.items()) ^ set(result.checksums.items()))
            raise Exception(f"Migration files changed between preview and apply: {sorted({n for n, _ in changed})}\n"
                            "Remedy: run pulumi up again so that the plan sees the current files")
        if result.applied:
            print(f"migrations {resource_id(props)}: applied {', '.join(result.applied)}")
        for change in result.revoked:
            print(f"migrations {resource_id(props)}: privileges: {change}")
        for warning in result.warnings:
            print(f"warning: {warning}")
        outs = dict(props)
        outs.update(schema_name=settings.schema_name, applied=sorted(result.checksums),
                    checksums=result.checksums, pending=[], missing=result.missing, objects=objects,
                    fingerprint=drift_mod.fingerprint(objects), drift=[], interrupted=[])
        return outs

    def create(self, props: Dict[str, Any]) -> CreateResult:
        return CreateResult(id_=resource_id(props), outs=self._apply(props))

    def update(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> UpdateResult:
        recorded = olds.get("objects") if same(olds, news, PLACE) and olds.get("objects") is not None else None
        return UpdateResult(outs=self._apply(news, recorded, olds.get("applied") or []))

    def read(self, id_: str, props: Dict[str, Any]) -> ReadResult:
        """Live history: rows deleted or changed outside Pulumi show up as a diff against the inputs."""
        settings = settings_of(props)
        try:
            with connect(props) as conn:
                current = migrate.status(conn, settings)
                recorded = migrate.read_history(conn, settings) if current.history_exists else {}
                live = drift_mod.inspect_target(conn, settings, managed_of(props))
                leaks = drift_mod.privilege_drift(conn, settings) if current.history_exists else []
        except MigrationError as exc:
            raise fail(exc) from None
        on_disk = set(props.get("checksums") or {})
        outs = dict(props)
        outs.update(checksums={name: recorded[name] for name in sorted(recorded) if name in on_disk},
                    applied=sorted(name for name in recorded if name in on_disk),
                    pending=[m.filename for m in current.plan.pending], missing=current.plan.missing,
                    drift=(drift_mod.compare(props.get("objects") or {}, live) if "objects" in props else []) + leaks,
                    interrupted=[i.describe() for i in current.interrupted])
        if "objects" not in props:  # adopted by an import: the live schema becomes the recorded fingerprint
            outs.update(objects=live, fingerprint=drift_mod.fingerprint(live), schema_name=settings.schema_name)
        inputs = {key: props[key] for key in props if key in INPUTS}
        return ReadResult(id_=id_, outs=outs, inputs=inputs)

    def delete(self, _id: str, props: Dict[str, Any]) -> None:
        settings = settings_of(props)
        where = (f"schema {settings.schema_name} (module {settings.module_name}, "
                 f"history {settings.history_display})")
        if not settings.drop_on_destroy:
            print(f"migrations: kept the tables and history of {where}; "
                  "set drop_on_destroy (llmemory-db:dropOnDestroy) to drop them on destroy")
            return
        tables = [] if settings.schema else managed_of(props).tables
        try:
            with connect(props) as conn:
                migrate.forget(conn, settings, drop_tables=tables)
        except MigrationError as exc:
            raise fail(exc) from None
        dropped = f"dropped tables {', '.join(tables)} and " if tables else ""
        print(f"migrations: {dropped}forgot the history of {where}")


# --------------------------------------------------------------------------- fleets (MigratedTenants)

FLEET = ("history_template", "max_parallel", "canary", "wave_size", "on_error", "runtime_roles", "tenants_list",
         "connections")
FLEET_TRACKED = ("checksums",) + tuple(n for n in Settings.names() if n != "migrations_dir") + FLEET + ("managed",)


def connection_key(conn: Dict[str, Any]) -> str:
    """A readable key of a tenant's own connection: user@host:port/database."""
    return f"{conn.get('username')}@{conn.get('host')}:{conn.get('port')}/{conn.get('database')}"


def fleet_of(props: Dict[str, Any]):
    """(FleetSettings, tenants) of a fleet's properties."""
    from .migrate.fleet import FleetSettings, Tenant
    fleet = FleetSettings(settings_of(props), history_template=props.get("history_template") or "{schema}.schema_migrations",
                          max_parallel=int(props.get("max_parallel") or 4), canary=int(props.get("canary") or 0),
                          wave_size=int(props.get("wave_size") or 0), on_error=props.get("on_error") or "stop",
                          runtime_roles=tuple(props.get("runtime_roles") or ()))
    tenants = [Tenant(t["schema"], t.get("database") or "") for t in props.get("tenants_list") or []]
    return fleet, tenants


def _connector(props: Dict[str, Any]):
    connections = props.get("connections") or {}
    return lambda key: connect(connections.get(key) or connections.get("") or props)


def _tenant_files(status: Dict[str, Any], applied: Sequence[str]) -> List[str]:
    return list(status["files"]) if "files" in status else list(applied)


class FleetProvider(ResourceProvider):
    """One dynamic resource for a whole fleet of tenants: check/diff are pure, create/update run the engine's fleet
    executor, read re-reads every tenant's history and schema in one query per database, delete keeps data."""

    def check(self, olds: Dict[str, Any], news: Dict[str, Any]) -> CheckResult:
        from .migrate import risk
        try:
            fleet, tenants = fleet_of(news)
            from .migrate.fleet import check_tenants
            check_tenants(tenants)
            applied = set((olds.get("checksums") or {})) if same(olds, news, ("module_name", "history_template")) \
                else set()
            pending = [m for m in migrate.load(fleet.base.migrations_dir) if m.filename not in applied]
            probe = fleet.base.replace(schema=tenants[0].schema if tenants else "tenant")
            rendered, warnings = migrate.lint_pending(pending, probe)
            for warning in warnings:
                print(f"warning: {warning}")
            if pending:  # squawk's findings once for the module (the live sizes differ per tenant)
                for line in risk.analyze(pending, rendered, probe).lines():
                    print(f"tenants {news.get('module_name')}: risk: {line}")
        except MigrationError as exc:
            return CheckResult(news, [CheckFailure("tenants", str(exc))])
        return CheckResult(news, [])

    def diff(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> DiffResult:
        old_sums, new_sums = olds.get("checksums") or {}, news.get("checksums") or {}
        edited = [(n, old_sums[n], new_sums[n]) for n in sorted(new_sums) if n in old_sums and old_sums[n] != new_sums[n]]
        if edited and same(olds, news, ("module_name", "history_template")):
            raise fail(migrate.ChecksumMismatchError(edited[:1], news.get("module_name"),
                                                     f"{news.get('history_template')} of every tenant"))
        changed = [key for key in FLEET_TRACKED if key != "tenants_list" and _value(olds, key) != _value(news, key)]
        statuses: Dict[str, Any] = olds.get("tenants") or {}
        applied = olds.get("applied") or []
        keys = [(t.get("database") + "/" if t.get("database") else "") + t["schema"] for t in news.get("tenants_list") or []]
        new = [k for k in keys if k not in statuses]
        removed = sorted(k for k in statuses if k not in set(keys))
        groups: Dict[tuple, List[str]] = {}
        for key in keys:
            if key in statuses:
                done = set(_tenant_files(statuses[key], applied))
                waiting = tuple(n for n in sorted(new_sums) if n not in done)
                if waiting or statuses[key].get("error"):
                    groups.setdefault(waiting, []).append(key)
        where = f"tenants {news.get('module_name')}"
        if new:
            changed.append("tenants")
            print(f"{where}: {len(new)} new tenant(s) ({', '.join(new[:10])}{', ...' if len(new) > 10 else ''}): "
                  f"{len(new_sums)} file(s) each")
        for waiting, group in sorted(groups.items()):
            changed.append("tenants")
            failed = [k for k in group if statuses[k].get("error")]
            what = f"{len(waiting)} pending file(s) ({', '.join(waiting)})" if waiting else "failed last time"
            print(f"{where}: {len(keys)} tenants: {what} on {len(group)} tenant(s)"
                  + (f", retrying failed: {', '.join(failed[:10])}" if failed else ""))
        if removed:
            changed.append("tenants")
            fate = "dropped by this update (drop_on_destroy)" if news.get("drop_on_destroy") else \
                "its schema and history are kept (drop_on_destroy is off)"
            print(f"{where}: {len(removed)} tenant(s) removed ({', '.join(removed[:10])}): {fate}")
        for tenant, lines in sorted((olds.get("drift") or {}).items()):
            changed.append("drift")
            print(f"{where}: schema drift in tenant {tenant}:\n  " + "\n  ".join(lines))
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def _apply(self, props: Dict[str, Any], olds: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        from .migrate import fleet as fleet_mod
        watch_engine()
        fleet, tenants = fleet_of(props)
        connect_to = _connector(props)
        try:
            if olds is not None:
                self._drop_removed(olds, props, tenants, connect_to)
                self._refuse_drift(olds, fleet, tenants, connect_to)
            result = fleet_mod.apply_fleet(fleet, tenants, connect_to, on_event=print)
            statuses, objects, canonical = self._status(fleet, tenants, result, connect_to)
        except MigrationError as exc:
            raise fail(exc) from None
        print(f"tenants {fleet.base.module_name}: {result.summary()} ({result.seconds:.1f}s)")
        outs = dict(props)
        outs.update(tenants=statuses, summary=result.summary(),
                    failed={t.schema if not t.database else f"{t.database}/{t.schema}": t.error
                            for t in result.failed},
                    applied=sorted(result.checksums), objects=objects, fingerprint=canonical, drift={})
        return outs

    @staticmethod
    def _status(fleet, tenants, result, connect_to):
        """Per-tenant status for the outputs, and the fleet's canonical fingerprint (schema names factored out):
        a tenant's own fingerprint is kept only where it differs."""
        from collections import Counter

        from .migrate import fleet as fleet_mod
        prints: Dict[str, str] = {}
        maps: Dict[str, Dict[str, str]] = {}
        by_db: Dict[str, list] = {}
        for tenant in tenants:
            by_db.setdefault(tenant.database, []).append(tenant)
        for database, group in by_db.items():
            with connect_to(database) as conn:
                found = fleet_mod.inspect_fleet(conn, fleet, group, ManagedObjects())
            prints.update({f"{database}/{schema}" if database else schema: p for schema, p in found.prints.items()})
            for print_, objects in found.maps.items():
                maps.setdefault(print_, objects)
        canonical = Counter(prints.values()).most_common(1)[0][0] if prints else ""
        objects = maps.get(canonical, {})
        files = sorted(result.checksums)
        statuses = {}
        for key, tenant in result.tenants.items():
            status = tenant.as_dict()
            if tenant.recorded != len(files) or tenant.last != (files[-1] if files else ""):
                status["files"] = [f for f in files if f not in tenant.pending][:tenant.recorded]
            if prints.get(key) and prints[key] != canonical and not tenant.error:
                status["fp"] = prints[key]
            statuses[key] = status
        return statuses, objects, canonical

    @staticmethod
    def _drop_removed(olds, news, tenants, connect_to) -> None:
        from psycopg import sql as psql
        keep = {t.key for t in tenants}
        removed = [k for k in (olds.get("tenants") or {}) if k not in keep]
        if not removed or not news.get("drop_on_destroy"):
            return
        for key in removed:
            database, _, schema = key.rpartition("/")
            with connect_to(database) as conn:
                conn.execute(psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psql.Identifier(schema)))
            print(f"tenants {news.get('module_name')}: dropped removed tenant {key} (drop_on_destroy)")

    @staticmethod
    def _refuse_drift(olds, fleet, tenants, connect_to) -> None:
        """A tenant whose schema changed since the last update while its history did not: refused, naming it,
        unless accept_schema_drift."""
        drifted = FleetProvider._drift(olds, fleet, [t for t in tenants if t.key in (olds.get("tenants") or {})],
                                       connect_to)
        if drifted and not fleet.base.accept_schema_drift:
            lines = [f"tenant {tenant}: {line}" for tenant, found in sorted(drifted.items()) for line in found]
            raise migrate.SchemaDriftError(fleet.base.replace(schema=None), lines)

    @staticmethod
    def _drift(olds, fleet, tenants, connect_to) -> Dict[str, List[str]]:
        from .migrate import fleet as fleet_mod
        statuses, canonical = olds.get("tenants") or {}, olds.get("fingerprint") or ""
        recorded_objects = olds.get("objects") or {}
        # objects of files not applied yet that exist already are an interrupted run's or a conflict the apply
        # reports, not drift (as for a single schema)
        pending = [m for m in migrate.load(fleet.base.migrations_dir) if m.filename not in set(olds.get("applied") or ())]
        expected = drift_mod.created_by((migrate.render(m.sql, "tenant", m.filename) for m in pending), "tenant")
        found: Dict[str, List[str]] = {}
        by_db: Dict[str, list] = {}
        for tenant in tenants:
            by_db.setdefault(tenant.database, []).append(tenant)
        for database, group in by_db.items():
            with connect_to(database) as conn:
                states = fleet_mod.read_fleet(conn, fleet, group, [])
                prints = fleet_mod.inspect_fleet(conn, fleet, group, ManagedObjects())
            for schema, print_ in prints.prints.items():
                key = f"{database}/{schema}" if database else schema
                status = statuses.get(key) or {}
                moved_on = len(states[schema].recorded) != status.get("recorded")
                if status.get("error"):  # failed last time: its schema was never recorded as the fleet's
                    continue
                if not moved_on and print_ != status.get("fp", canonical):
                    live = prints.maps.get(print_)
                    lines = drift_mod.without_expected(drift_mod.compare(recorded_objects, live), expected) \
                        if live is not None else [f"fingerprint {{schema}}: changed ({print_})"]
                    if lines:
                        found[key] = [line.replace("{schema}", schema) for line in lines]
        return found

    def create(self, props: Dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"fleet/{props.get('module_name')}", outs=self._apply(props))

    def update(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._apply(news, olds))

    def read(self, id_: str, props: Dict[str, Any]) -> ReadResult:
        """Every tenant's history back, one query per database, and its schema drift."""
        from .migrate import fleet as fleet_mod
        fleet, tenants = fleet_of(props)
        connect_to = _connector(props)
        files = sorted(props.get("checksums") or {})
        statuses = dict(props.get("tenants") or {})
        try:
            by_db: Dict[str, list] = {}
            for tenant in tenants:
                by_db.setdefault(tenant.database, []).append(tenant)
            for database, group in by_db.items():
                with connect_to(database) as conn:
                    for schema, state in fleet_mod.read_fleet(conn, fleet, group, []).items():
                        key = f"{database}/{schema}" if database else schema
                        recorded = sorted(n for n in state.recorded if n in set(files))
                        status = dict(statuses.get(key) or {})
                        status.update(recorded=len(recorded), last=recorded[-1] if recorded else "",
                                      pending=[n for n in files if n not in set(recorded)])
                        status.pop("files", None)
                        if recorded != files:
                            status["files"] = recorded
                        statuses[key] = status
            drift = self._drift(props, fleet, tenants, connect_to) if props.get("objects") else {}
        except MigrationError as exc:
            raise fail(exc) from None
        outs = dict(props)
        outs.update(tenants=statuses, drift=drift)
        inputs = {key: props[key] for key in props if key in FLEET_TRACKED or key == "migrations_dir"}
        return ReadResult(id_=id_, outs=outs, inputs=inputs)

    def delete(self, _id: str, props: Dict[str, Any]) -> None:
        from psycopg import sql as psql
        fleet, tenants = fleet_of(props)
        if not props.get("drop_on_destroy"):
            print(f"tenants {fleet.base.module_name}: kept the schemas and histories of {len(tenants)} tenant(s); "
                  "set drop_on_destroy to drop them on destroy")
            return
        connect_to = _connector(props)
        try:
            for tenant in tenants:
                with connect_to(tenant.database) as conn:
                    conn.execute(psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psql.Identifier(tenant.schema)))
        except MigrationError as exc:
            raise fail(exc) from None
        print(f"tenants {fleet.base.module_name}: dropped {len(tenants)} tenant schema(s)")
