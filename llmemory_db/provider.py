"""The dynamic providers behind ``Migrations``, ``ExtensionCheck`` and ``MigratedTenants``: adapters only.

Properties in, one operation of the engine (:mod:`llmemory_db.migrate.ops`, :mod:`~llmemory_db.migrate.fleet_ops`)
out, its result into ``CheckResult``/``DiffResult``/outputs, its events printed (Pulumi shows a provider's output;
the package's plugin collects them instead), its typed errors raised as :class:`ProviderError`, which Pulumi shows
without a Python traceback (:mod:`llmemory_db.provider_host`). Nothing is decided here.

Pickled into state *by reference* (``llmemory_db.provider.MigrationsProvider``; stacks written before the package
was renamed hold ``components.provider.MigrationsProvider``): keep this module path and the class names stable.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional

from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from . import compat
from .migrate import drift, fleet_ops, ops
from .migrate.connection import ConnectionSettings
from .migrate.errors import MigrationError
from .migrate.events import Event
from .migrate.extensions import check_extensions
from .migrate.fleet_settings import Tenant
from .props import (CONNECTION, DEFAULTS, FLEET_TRACKED, HISTORY, PLACE, TRACKED, fleet_of, inputs_of, managed_of,
                    resource_id, same, server_of, settings_of)
from .provider_host import Adapter, ProviderError, clean_errors, watch_engine

clean_errors()  # imported by the dynamic-provider host when it loads a pickled provider: before any method runs


class ExtensionCheckProvider(Adapter):
    """Before pulumi-postgresql creates an extension: is it there, or can this user create it? Else the remedy."""

    def _check(self, props: Dict[str, Any]) -> Dict[str, Any]:
        with self.engine(props), ConnectionSettings.from_props(props).connect() as conn:
            check_extensions(conn, [props["extension"]])
        return props

    def create(self, props: Dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props.get('database')}/{props['extension']}", outs=self._check(props))

    def diff(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> DiffResult:
        renamed = compat.pickled_before_rename(olds)
        if renamed:
            self.say(f"extension check {olds.get('extension')}", compat.rename_note(), news)
        return DiffResult(changes=renamed or not same(olds, news, CONNECTION + ("extension",)))

    def update(self, _id: str, _olds: Dict[str, Any], news: Dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._check(news))


class MigrationsProvider(Adapter):
    """check: ops.preflight; diff: inputs (and recorded drift, verified); create/update: ops.apply; read:
    ops.refresh; delete: ops.destroy."""

    def check(self, olds: Dict[str, Any], news: Dict[str, Any]) -> CheckResult:
        if not isinstance(news.get("checksums", {}), dict):
            return CheckResult(news, [CheckFailure("checksums", "checksums must be a map of filename to SHA-256")])
        where = f"migrations {resource_id(news)}"
        try:
            settings = settings_of(news)
            history = same(olds, news, HISTORY)
            conn = self.live(news)
            with conn or contextlib.nullcontext():
                result = ops.preflight(settings, conn=conn, recorded=(olds.get("checksums") or {}) if history else {},
                                       known=history and bool(olds.get("checksums")), on_event=self.sink(where, news))
        except MigrationError as exc:
            return CheckResult(news, [CheckFailure("migrations", self.fail(exc, news).args[0])])
        return CheckResult(news, [CheckFailure("migrations", self.fail(e, news).args[0]) for e in result.failures])

    def diff(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> DiffResult:
        where = f"migrations {resource_id(news)}"
        changed = ops.changed_inputs(olds, news, TRACKED, DEFAULTS)
        recorded_drift = self._still_drifted(olds) if olds.get("drift") else []
        lines = ["schema drift:\n  " + "\n  ".join(recorded_drift)] if recorded_drift else []
        if olds.get("interrupted"):  # found by a refresh; the update refuses to go on and says what to do
            lines.append("interrupted:\n  " + "\n  ".join(olds["interrupted"]))
        changed += ["drift"] * bool(recorded_drift) + ["interrupted"] * bool(olds.get("interrupted"))
        if compat.pickled_before_rename(olds):  # a stack of 0.1: this update rewrites its provider's path
            changed.append("__provider")
            self.say(where, compat.rename_note(), news)
        if changed:
            lines += ops.pending_lines(olds.get("checksums") or {}, news.get("checksums") or {},
                                       same(olds, news, HISTORY))
        for line in lines:
            self.say(where, Event("plan", line), news)
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def _still_drifted(self, olds: Dict[str, Any]) -> List[str]:
        """Drift a refresh recorded, unless the database shows it gone (then the state is stale, not the schema)."""
        conn = self.live(olds)
        if conn is None or olds.get("objects") is None:
            return list(olds["drift"])
        with conn:
            found = ops.refresh(conn, settings_of(olds), managed_of(olds), olds["objects"]).drift
        return found

    def _apply(self, props: Dict[str, Any], olds: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        watch_engine()
        where = f"migrations {resource_id(props)}"
        recorded = olds.get("objects") if olds is not None and same(olds, props, PLACE) else None
        with self.engine(props), ConnectionSettings.from_props(props).connect() as conn:
            result = ops.apply(conn, settings_of(props), managed=managed_of(props), recorded_objects=recorded,
                               covered=(olds or {}).get("applied") or [], known=recorded is not None,
                               on_event=self.sink(where, props))
        expected = props.get("checksums") or {}
        if expected and expected != result.checksums:
            changed = sorted({n for n, _ in set(expected.items()) ^ set(result.checksums.items())})
            raise ProviderError(f"Migration files changed between preview and apply: {changed}\n"
                                "Remedy: run pulumi up again so that the plan sees the current files")
        return dict(props, schema_name=settings_of(props).schema_name, applied=sorted(result.checksums),
                    checksums=result.checksums, pending=[], missing=result.missing, objects=result.objects,
                    fingerprint=result.fingerprint, drift=[], interrupted=[])

    def create(self, props: Dict[str, Any]) -> CreateResult:
        return CreateResult(id_=resource_id(props), outs=self._apply(props))

    def update(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._apply(news, olds))

    def read(self, id_: str, props: Dict[str, Any]) -> ReadResult:
        """Live history and schema: rows deleted or changed outside Pulumi, and drift, show in the next diff."""
        with self.engine(props), ConnectionSettings.from_props(self.current(props)).connect() as conn:
            now = ops.refresh(conn, settings_of(props), managed_of(props), props.get("objects"))
        on_disk = set(props.get("checksums") or {})
        outs = dict(props, checksums={n: now.recorded[n] for n in sorted(now.recorded) if n in on_disk},
                    applied=sorted(n for n in now.recorded if n in on_disk), pending=now.pending,
                    missing=now.missing, drift=now.drift, interrupted=now.interrupted)
        if "objects" not in props:  # adopted by an import: the live schema becomes the recorded fingerprint
            outs.update(objects=now.objects, fingerprint=drift.fingerprint(now.objects),
                        schema_name=settings_of(props).schema_name)
        # the drift is an input of the refreshed state, so the next diff names it ("drift")
        return ReadResult(id_=id_, outs=outs, inputs=dict(inputs_of(props), **({"drift": now.drift} if now.drift
                                                                               else {})))

    def delete(self, _id: str, props: Dict[str, Any]) -> None:
        connection = ConnectionSettings.from_props(self.current(props))
        with self.engine(props):
            event = ops.destroy(settings_of(props), managed_of(props), connection.connect)
        self.say("migrations", event, props)


# --------------------------------------------------------------------------- fleets (MigratedTenants)

class FleetProvider(Adapter):
    """One dynamic resource for a whole fleet of tenants: :mod:`llmemory_db.migrate.fleet_ops` does the work."""

    def check(self, olds: Dict[str, Any], news: Dict[str, Any]) -> CheckResult:
        try:
            fleet, tenants, connect = fleet_of(news)
            history = same(olds, news, ("module_name", "history_template"))
            old = olds.get("checksums") or {}
            edited = history and any(old.get(n, s) != s for n, s in (news.get("checksums") or {}).items())
            failures = fleet_ops.preflight(fleet, tenants, (olds.get("checksums") or {}) if history else {},
                                           self.sink(f"tenants {news.get('module_name')}", news),
                                           connect if edited else None)
        except MigrationError as exc:
            return CheckResult(news, [CheckFailure("tenants", self.fail(exc, news).args[0])])
        return CheckResult(news, [CheckFailure("tenants", self.fail(e, news).args[0]) for e in failures])

    def diff(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> DiffResult:
        where = f"tenants {news.get('module_name')}"
        keys = [Tenant(t["schema"], t.get("database") or "").key for t in news.get("tenants_list") or []]
        changed = ops.changed_inputs(olds, news, [k for k in FLEET_TRACKED if k != "tenants_list"], DEFAULTS)
        with self.engine(news):
            changed, lines = fleet_ops.diff(olds, news, keys, changed)
        for line in lines:
            self.say(where, Event("plan", line), news)
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def _apply(self, props: Dict[str, Any], olds: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        watch_engine()
        fleet, tenants, connect = fleet_of(props)
        with self.engine(props):
            done = fleet_ops.apply(fleet, tenants, connect, olds,
                                   self.sink(f"tenants {fleet.base.module_name}", props), server_of(props))
        return dict(props, tenants=done.statuses, summary=done.result.summary(), failed=done.failed,
                    applied=sorted(done.result.checksums), objects=done.objects, fingerprint=done.fingerprint,
                    drift={}, servers=done.result.servers())

    def create(self, props: Dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"fleet/{props.get('module_name')}", outs=self._apply(props))

    def update(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._apply(news, olds))

    def read(self, id_: str, props: Dict[str, Any]) -> ReadResult:
        """Every tenant's history back, one query per database, and its schema drift."""
        fleet, tenants, connect = fleet_of(props)
        with self.engine(props):
            statuses, drifted = fleet_ops.refresh(fleet, tenants, connect, props, server_of(props),
                                                  self.sink(f"tenants {fleet.base.module_name}", props))
        return ReadResult(id_=id_, outs=dict(props, tenants=statuses, drift=drifted), inputs=inputs_of(props))

    def delete(self, _id: str, props: Dict[str, Any]) -> None:
        fleet, tenants, connect = fleet_of(props)
        with self.engine(props):
            event = fleet_ops.destroy(fleet, tenants, connect)
        self.say(f"tenants {fleet.base.module_name}", event, props)
