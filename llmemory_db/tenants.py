"""``MigratedTenants``: one module's migrations over many tenant schemas (and databases) in one dynamic resource.

K tenants as K ``MigratedSchema`` components cost Pulumi K times (a dozen resources each, the state rewritten
after every step): 50 schemas took 5x the time of one. Here the fleet is **one** dynamic resource whatever K is;
the per-tenant work (a tenant's schema, its history table, its grants, its files) runs inside it, in the engine's
fleet executor (``llmemory_db.migrate.fleet``), with a bounded pool of connections, a canary and waves. What the
tenants share comes from pulumi-postgresql: the extensions of each database.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import pulumi
import pulumi_postgresql as postgresql
from pulumi.dynamic import Resource

from . import migrate
from .migrate.errors import HistoryCollisionError
from .migrate.fleet_results import failure_lines
from .migrate.fleet_settings import DEFAULT_HISTORY, FleetSettings, Tenant, check_tenants
from .migrate.settings import Settings
from .migrations import ConnectionArgs, ExtensionCheck, MigrationsArgs, project_relative
from .program import Program
from .provider import FleetProvider

_DEFAULT_FLEET = FleetSettings(Settings(module_name="tenant"))


def connection_key(conn: Dict[str, Any]) -> str:
    """A readable key of a tenant's own connection: user@host:port/database."""
    return f"{conn.get('username')}@{conn.get('host')}:{conn.get('port')}/{conn.get('database')}"


@dataclass
class TenantArgs:
    """One tenant: its schema, and its own connection when it lives on another database or server (fields left
    out come from the fleet's connection)."""

    schema: str
    connection: Optional[ConnectionArgs] = None


TenantsInput = Union[Sequence[Union[str, TenantArgs, Dict[str, Any]]], Callable[[], Sequence[Any]], None]


@dataclass
class MigratedTenantsArgs(MigrationsArgs):
    """Arguments of :class:`MigratedTenants`: the module's settings (:class:`MigrationsArgs`) plus the fleet's.

    tenants:       schema names, ``TenantArgs``/dicts ``{"schema": ..., "connection": {...}}``, or a callable returning
                   them; ``None`` reads the stack config ``llmemory-db:tenants`` (a list)
    history_table: where each tenant's history is kept; ``{schema}`` stands for the tenant (default
                   ``{schema}.schema_migrations``, pgdbm 0.5's layout in schema mode)
    max_parallel:  worker connections per server (default 4); with the coordinator never more than
                   max_parallel + 1 on a server
    max_parallel_total: tenants migrating at once over all the servers (default 0: each server's pool bounds
                   its own, the servers run at once)
    canary:        the first N tenants with work go first, alone; if one fails nothing else runs (default 1)
    wave_size:     then the rest in waves of this many tenants (default 0: one wave)
    on_error:      stop (default: finish the running tenants, start no new ones) or continue
    extensions:    created in each database the fleet uses (default vector)
    runtime_roles: existing roles that get USAGE, CRUD on each tenant's tables (default privileges), USAGE/SELECT on
                   its sequences and SELECT on its history
    drop_on_destroy: destroy (or removing a tenant from the list) drops its schema; default: keep the data
    """

    tenants: TenantsInput = None
    history_table: Optional[str] = DEFAULT_HISTORY
    max_parallel: int = _DEFAULT_FLEET.max_parallel
    max_parallel_total: int = _DEFAULT_FLEET.max_parallel_total
    canary: int = _DEFAULT_FLEET.canary
    wave_size: int = _DEFAULT_FLEET.wave_size
    on_error: str = _DEFAULT_FLEET.on_error
    extensions: Sequence[str] = ("vector",)
    runtime_roles: Sequence[str] = ()


def _tenants(value: TenantsInput) -> List[Union[str, TenantArgs, Dict[str, Any]]]:
    if value is None:
        value = pulumi.Config().get_object("tenants") or []
    if callable(value):
        value = value()
    if not isinstance(value, (list, tuple)):
        raise pulumi.RunError(f"MigratedTenantsArgs.tenants must be a list of schema names or tenants, not {value!r}")
    return list(value)


class MigratedTenants(pulumi.ComponentResource):
    tenants: pulumi.Output[dict]      # tenant -> {recorded, last, pending, error?}
    summary: pulumi.Output[str]       # "1000 tenants: 997 up to date, 3 failed"
    failed: pulumi.Output[dict]       # tenant -> {file, line, message}
    applied: pulumi.Output[list]      # the module's files every up-to-date tenant has
    checksums: pulumi.Output[dict]    # filename -> SHA-256, once for the module
    fingerprint: pulumi.Output[str]   # the fleet's schema fingerprint (schema names factored out)
    servers: pulumi.Output[dict]      # server (host:port) -> {tenants, at_head, failed}

    def __init__(self, name: str, args: MigratedTenantsArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("llmemory-db:index:MigratedTenants", name, None, opts)
        base = ConnectionArgs.from_config(args.connection)
        try:
            # the module's settings; schema and history are per tenant (the template), given by the fleet
            settings = Settings(**{**{n: getattr(args, n) for n in Settings.public_names()},
                                   "schema": None, "history_table": "public.schema_migrations"})
            fleet = FleetSettings(settings, history_template=args.history_table or DEFAULT_HISTORY,
                                  max_parallel=args.max_parallel, max_parallel_total=args.max_parallel_total,
                                  canary=args.canary, wave_size=args.wave_size,
                                  on_error=args.on_error, runtime_roles=tuple(args.runtime_roles))
            connections: Dict[str, Dict[str, Any]] = {}
            tenants: List[Dict[str, str]] = []
            for item in _tenants(args.tenants):
                if isinstance(item, str):
                    item = TenantArgs(item)
                elif isinstance(item, dict):
                    conn = item.get("connection")
                    item = TenantArgs(item.get("schema"), ConnectionArgs(**conn) if isinstance(conn, dict) else conn)
                conn = _merged(base, item.connection)
                key = "" if item.connection is None else connection_key(conn)
                connections.setdefault(key, conn)
                tenants.append({"schema": item.schema, "database": key})
            check_tenants(Tenant(t["schema"], t["database"]) for t in tenants)
            program = Program.current()
            for tenant in tenants:
                history = fleet.for_tenant(Tenant(tenant["schema"]))
                conn = connections[tenant["database"]]
                claim = (str(conn["host"]), str(conn["port"]), str(conn["database"]), history.history_display,
                         history.module_name)
                other = program.claim(("tenant",) + claim, name, "tenant")
                if other:
                    raise HistoryCollisionError(
                        f"MigratedTenants {name!r} and {other[0]!r} both claim tenant {tenant['schema']}'s history "
                        f"({history.history_display}, module {history.module_name!r}): their histories would "
                        "collide", remedy="list each tenant in one fleet, or give the fleets different modules")
            files = migrate.load(settings.migrations_dir)
            probe = tenants[0]["schema"] if tenants else "tenant"
            rendered = migrate.render_parsed(files, settings.replace(schema=probe))
        except migrate.MigrationError as exc:
            raise pulumi.RunError(exc.render(args.spelling)) from None
        managed = migrate.objects.managed_objects(rendered.values(), probe)
        child = pulumi.ResourceOptions(parent=self)
        shared: List[pulumi.Resource] = []
        for key, conn in connections.items():  # what the tenants of one database share: its extensions
            # only for the extensions (none: no provider, and no plugin to start), named after its connection (a
            # count of extension resources named every server's provider alike without extensions); stacks from
            # before keep theirs through the alias (that name was unique when there were extensions)
            provider = None if not key or not args.extensions else postgresql.Provider(
                f"{name}-postgresql-{_slug(key)}", host=conn["host"], port=conn["port"], username=conn["username"],
                password=conn["password"], database=conn["database"], sslmode=conn["sslmode"],
                superuser=pulumi.Config("postgresql").get_bool("superuser"), opts=pulumi.ResourceOptions(
                    parent=self, aliases=[pulumi.Alias(name=f"{name}-postgresql-{len(shared)}")]))
            for extension in args.extensions:
                check = ExtensionCheck(f"{name}-{len(shared)}-ext-{extension}-check", extension,
                                       ConnectionArgs(**conn), opts=child)
                shared.append(postgresql.Extension(
                    f"{name}-{len(shared)}-ext-{extension}", name=extension, schema="public",
                    database=conn["database"], opts=pulumi.ResourceOptions(
                        parent=self, provider=provider, retain_on_delete=True, depends_on=[check])))
        if not settings.migrations_package:
            settings = settings.replace(migrations_dir=project_relative(str(settings.migrations_dir)))
        props: Dict[str, Any] = dataclasses.replace(fleet, base=settings).to_props()
        props.update(tenants_list=tenants, connections=connections,
                     checksums={m.filename: m.checksum for m in files}, managed=dataclasses.asdict(managed),
                     tenants=None, summary=None, failed=None, applied=None, objects=None, fingerprint=None,
                     drift=None, servers=None)
        fleet_resource = _Fleet(f"{name}-fleet", props, pulumi.ResourceOptions(
            parent=self, depends_on=shared, additional_secret_outputs=["connections"]))
        self.tenants = fleet_resource.tenants
        self.summary = fleet_resource.summary
        self.failed = fleet_resource.failed
        self.applied = fleet_resource.applied
        self.checksums = fleet_resource.checksums
        self.fingerprint = fleet_resource.fingerprint
        self.servers = fleet_resource.servers
        # failed tenants: the update recorded them (outputs), and the deployment still fails, naming them
        self.failed.apply(_report_failures(name, self))
        self.register_outputs({"tenants": self.tenants, "summary": self.summary, "failed": self.failed,
                               "applied": self.applied, "checksums": self.checksums, "fingerprint": self.fingerprint,
                               "servers": self.servers})


def _report_failures(name: str, resource: pulumi.Resource) -> Callable[[Any], None]:
    def report(failed: Any) -> None:
        if failed:
            lines = failure_lines(failed)
            # the fleet's resource recorded them (its outputs are saved); failing here fails the deployment
            raise pulumi.RunError(f"MigratedTenants {name}: {len(failed)} tenant(s) failed (recorded in the outputs; "
                                  "the next up retries only them):\n" + "\n".join(lines))
    return report


def _slug(key: str) -> str:
    """A resource-name part for a connection key (user@host:port/database), unique per key."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-")
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:6]}"


def _merged(base: ConnectionArgs, own: Optional[ConnectionArgs]) -> Dict[str, Any]:
    """A tenant's connection: its own fields, else the fleet's."""
    own = own or ConnectionArgs()
    values = {f.name: getattr(own, f.name) if getattr(own, f.name) is not None else getattr(base, f.name)
              for f in dataclasses.fields(ConnectionArgs)}
    if own.password is not None:
        values["password"] = pulumi.Output.secret(own.password)
    return values


class _Fleet(Resource):
    tenants: pulumi.Output[dict]
    summary: pulumi.Output[str]
    failed: pulumi.Output[dict]
    applied: pulumi.Output[list]
    checksums: pulumi.Output[dict]
    fingerprint: pulumi.Output[str]
    servers: pulumi.Output[dict]

    def __init__(self, name: str, props: Dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(FleetProvider(), name, props, opts)
