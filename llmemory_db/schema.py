"""``MigratedSchema``: schema, extensions and grants (pulumi-postgresql), then the migrations."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Sequence

import pulumi
import pulumi_postgresql as postgresql

from . import migrate
from .migrate.settings import Settings
from .migrations import ConnectionArgs, ExtensionCheck, Migrations, MigrationsArgs, validate
from .program import Program

TABLE_PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE"]
SEQUENCE_PRIVILEGES = ["USAGE", "SELECT"]


@dataclass
class MigratedSchemaArgs(MigrationsArgs):
    """Arguments of :class:`MigratedSchema` (every one optional).

    schema:          target schema; ``None`` = standalone mode (objects in ``public``, no schema created)
    migrations_dir:  folder of ``*.sql`` files, relative to the Pulumi project (default ``migrations``)
    migrations_package: deploy the migrations inside an installed package instead (``llmemory``): module and
                     history then default to its pgdbm layout (``llmemory``, ``<schema>.schema_migrations``)
    module_name:     module in the history table (default ``aword_memory``, the spec's name)
    extensions:      extensions created in ``public`` first (default ``vector``; the real llmemory also needs
                     ``pgcrypto``)
    runtime_roles:   existing roles that get USAGE, CRUD on the tables, USAGE/SELECT on sequences, SELECT on history
    startup_role:    the role an application's pgdbm runs its start-up check as: the runtime grants, plus CREATE on
                     the schema and ownership of the history table, which that check needs; with ``startup_guard``
                     (default) a guard lets it run the no-op check and nothing else, and it gets CREATE on the
                     database for pgdbm's ``CREATE SCHEMA IF NOT EXISTS`` (llmemory's connection-string mode)
    history_table:   ``table`` or ``schema.table`` (default ``public.schema_migrations``; pgdbm 0.5 uses
                     ``<schema>.schema_migrations``)
    connection:      :class:`ConnectionArgs`; gaps are filled from the stack's ``postgresql:`` config
    provider:        a ``pulumi_postgresql.Provider`` for the schema/extension/grant resources
    drop_on_destroy: ``pulumi destroy`` drops the schema and forgets the module's history (default: keep data)
    accept_schema_drift: on the next update record the live schema as it is instead of stopping on drift
    adopt:           an existing deployment without Pulumi state (state lost, or another tool): import the schema
                     and the extensions instead of creating them; the migrations resource finds its files recorded
                     and applies nothing; grants are re-applied (idempotent). Set it for one ``pulumi up``.
    baseline:        a schema made without a history (by hand, ``psql -f``): the version it is at; proven against
                     the files before they are recorded as applied
    """

    extensions: Sequence[str] = ("vector",)
    runtime_roles: Sequence[str] = ()
    provider: Optional[postgresql.Provider] = None
    adopt: bool = False  # import the schema, the extensions and the migrations' history instead of creating them


class MigratedSchema(pulumi.ComponentResource):
    schema_name: pulumi.Output[str]
    module_name: pulumi.Output[str]
    history_table: pulumi.Output[str]
    applied: pulumi.Output[list]
    checksums: pulumi.Output[dict]
    pending: pulumi.Output[list]
    fingerprint: pulumi.Output[str]
    drift: pulumi.Output[list]
    package_version: pulumi.Output[str]

    # The children that run the engine: dynamic resources here; the Pulumi package (llmemory_db.package) uses a
    # subclass whose children are custom resources served by its own plugin, for programs in any language.
    _migrations_class = Migrations
    _extension_check_class = ExtensionCheck

    def _postgresql_provider(self, name: str, args: MigratedSchemaArgs,
                             conn: ConnectionArgs) -> Optional[postgresql.Provider]:
        """The provider of the schema, extension and grant resources (the package makes one from ``connection``)."""
        return args.provider

    def __init__(self, name: str, args: Optional[MigratedSchemaArgs] = None,
                 opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("llmemory-db:index:MigratedSchema", name, None, opts)
        args = args or MigratedSchemaArgs()
        problems = Settings.problems(vars(args))
        if problems:
            raise pulumi.RunError(problems[0].render(args.spelling))
        migration_args = MigrationsArgs(**{f.name: getattr(args, f.name) for f in dataclasses.fields(MigrationsArgs)})
        validated = validate(migration_args)
        settings = validated[0]
        conn = ConnectionArgs.from_config(args.connection)
        program = Program.current()
        _claim_history(program, name, conn, settings)

        provider = self._postgresql_provider(name, args, conn)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        keep = pulumi.ResourceOptions(retain_on_delete=not args.drop_on_destroy)
        database = conn.database
        schema_name = args.schema or "public"
        # Every child waits for this component's own schema and for every extension it needs (shared ones
        # included: another component may have made them); grants run one after the other (parallel GRANTs on
        # one catalog row fail with "tuple concurrently updated"), so each also waits for the previous one.
        base: List[pulumi.Resource] = []
        chain: List[pulumi.Resource] = []

        def after(resource: pulumi.Resource) -> pulumi.Resource:
            chain[:] = [resource]
            return resource

        def chained(extra: Optional[pulumi.ResourceOptions] = None) -> pulumi.ResourceOptions:
            opts = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=base + chain))
            return pulumi.ResourceOptions.merge(opts, extra) if extra else opts

        def adopting(resource_id: str) -> Optional[pulumi.ResourceOptions]:
            return pulumi.ResourceOptions(import_=resource_id) if args.adopt else None

        if args.schema:
            base.append(postgresql.Schema(f"{name}-schema", name=args.schema, database=database, if_not_exists=True,
                                          drop_cascade=args.drop_on_destroy, opts=chained(pulumi.ResourceOptions.merge(
                                              keep, adopting(f"{database}.{args.schema}")))))
        for extension in args.extensions:
            # shared by everything in the database: created if missing, never dropped by destroy
            def make(extension: str = extension) -> pulumi.Resource:
                check = self._extension_check_class(f"{name}-ext-{extension}-check", extension, args.connection,
                                                    opts=chained())
                return postgresql.Extension(
                    f"{name}-ext-{extension}", name=extension, schema="public", database=database,
                    opts=chained(pulumi.ResourceOptions.merge(pulumi.ResourceOptions(
                        retain_on_delete=True, depends_on=[check]), adopting(f"{database}.{extension}"))))
            base.append(program.share(("extension", id(provider), str(database), extension), make))
        # grants run one after the other: parallel GRANTs on one catalog row fail with "tuple concurrently updated"
        startup = args.startup_role
        roles = list(args.runtime_roles) + ([startup] if startup and startup not in args.runtime_roles else [])
        for role in roles:
            # pgdbm's start-up check: CREATE TABLE/INDEX IF NOT EXISTS on the history needs CREATE on its schema
            after(postgresql.Grant(f"{name}-{role}-usage", database=database, role=role, schema=schema_name,
                                   object_type="schema", privileges=["USAGE"] + (["CREATE"] if role == startup else []),
                                   opts=chained()))
            if role == startup and args.startup_guard:  # its CREATE SCHEMA IF NOT EXISTS; the guard stops real DDL
                after(postgresql.Grant(f"{name}-{role}-database", database=database, role=role,
                                       object_type="database", privileges=["CONNECT", "TEMPORARY", "CREATE"],
                                       opts=chained()))
            if args.schema:  # future tables of later migrations; in public this would reach other apps' tables
                after(postgresql.DefaultPrivileges(
                    f"{name}-{role}-default-tables", database=database, role=role, schema=schema_name,
                    owner=conn.username, object_type="table", privileges=TABLE_PRIVILEGES, opts=chained()))
                after(postgresql.DefaultPrivileges(
                    f"{name}-{role}-default-sequences", database=database, role=role, schema=schema_name,
                    owner=conn.username, object_type="sequence", privileges=SEQUENCE_PRIVILEGES, opts=chained()))

        # (never imported: the Python dynamic-provider host cannot read a resource it has no pickled provider for;
        # created over an existing history it applies nothing, reads the history back and records the schema)
        migrations = after(self._migrations_class(f"{name}-migrations", migration_args, opts=chained(),
                                                  validated=validated))
        history_schema, history_name = settings.history_parts
        managed = migrations.managed_objects

        explicit = not args.schema or history_schema == schema_name
        for role in roles:
            tables = [t for t in managed.tables if not (history_schema == schema_name and t == history_name)]
            if tables or not explicit:
                after(postgresql.Grant(f"{name}-{role}-tables", database=database, role=role, schema=schema_name,
                                       object_type="table", privileges=TABLE_PRIVILEGES,
                                       objects=tables if explicit else [], opts=chained()))
            if managed.sequences or not explicit:
                after(postgresql.Grant(f"{name}-{role}-sequences", database=database, role=role,
                                       schema=schema_name, object_type="sequence", privileges=SEQUENCE_PRIVILEGES,
                                       objects=managed.sequences if explicit else [], opts=chained()))
            if history_schema != schema_name:
                after(postgresql.Grant(f"{name}-{role}-history-usage", database=database, role=role,
                                       schema=history_schema, object_type="schema", privileges=["USAGE"],
                                       opts=chained()))
            if role != startup:  # the start-up role owns the history table (the engine hands it over)
                after(postgresql.Grant(f"{name}-{role}-history", database=database, role=role,
                                       schema=history_schema, object_type="table", privileges=["SELECT"],
                                       objects=[history_name], opts=chained()))

        # known at preview, and carrying the migrations as a dependency: a resource given it (an EmbeddingProvider's
        # schema) waits for them
        self.schema_name = migrations.urn.apply(lambda _: schema_name)
        self.module_name = pulumi.Output.from_input(settings.module_name)
        self.history_table = pulumi.Output.from_input(settings.history_display)
        self.applied = migrations.applied
        self.checksums = migrations.checksums
        self.pending = migrations.pending
        self.fingerprint = migrations.fingerprint
        self.drift = migrations.drift
        self.package_version = migrations.package_version
        self.register_outputs({"schema_name": self.schema_name, "module_name": self.module_name,
                               "history_table": self.history_table, "applied": self.applied,
                               "checksums": self.checksums, "pending": self.pending,
                               "fingerprint": self.fingerprint, "drift": self.drift,
                               "package_version": self.package_version})


def _claim_history(program: Program, name: str, conn: ConnectionArgs, settings: migrate.Settings) -> None:
    key = ("history", str(conn.database), str(conn.host), str(conn.port), settings.history_display,
           settings.module_name)
    schema = settings.schema_name
    other = program.claim(key, name, schema)
    if other and other[1] != schema:
        raise pulumi.RunError(
            f"MigratedSchema {name!r} (schema {schema}) and {other[0]!r} (schema {other[1]}) would share the "
            f"history of module {settings.module_name!r} in {settings.history_display}: their histories would collide.\n"
            "Remedy: give each component its own module_name, or its own history_table "
            f"(e.g. {schema}.schema_migrations)")
