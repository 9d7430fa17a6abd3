"""``Migrations``: a dynamic resource that applies a directory of templated SQL migrations."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import pulumi
from pulumi.dynamic import Resource

from . import migrate
from .migrate.connection import ConnectionSettings
from .migrate.objects import managed_objects
from .migrate.settings import Settings
from .provider import ExtensionCheckProvider, MigrationsProvider

_CONNECTION = ConnectionSettings()  # the defaults of every connection field


@dataclass
class ConnectionArgs:
    """How to reach PostgreSQL.  ``None`` fields fall back to the stack's ``postgresql:`` config."""

    host: Optional[pulumi.Input[str]] = None
    port: Optional[pulumi.Input[int]] = None
    username: Optional[pulumi.Input[str]] = None
    password: Optional[pulumi.Input[str]] = None
    database: Optional[pulumi.Input[str]] = None
    sslmode: Optional[pulumi.Input[str]] = None
    sslrootcert: Optional[pulumi.Input[str]] = None   # the CA file for sslmode verify-ca / verify-full

    @staticmethod
    def from_config(base: Optional["ConnectionArgs"] = None) -> "ConnectionArgs":
        """Fill the gaps of ``base`` from the stack config keys the pulumi-postgresql provider reads."""
        config = pulumi.Config("postgresql")
        base = base or ConnectionArgs()
        port = config.get("port")

        def pick(name: str, configured: Any) -> Any:
            given = getattr(base, name)
            return given if given is not None else (configured or getattr(_CONNECTION, name))

        return ConnectionArgs(
            host=pick("host", config.get("host")), port=pick("port", int(port) if port else None),
            username=pick("username", config.get("username")),
            password=pulumi.Output.secret(base.password) if base.password is not None
            else config.get_secret("password"),
            database=pick("database", config.get("database")), sslmode=pick("sslmode", config.get("sslmode")),
            sslrootcert=pick("sslrootcert", config.get("sslrootcert")))


def project_relative(path: str) -> str:
    """Keep state free of machine-specific absolute paths when the folder is inside the project."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, os.getcwd())
    return absolute if relative.startswith("..") else relative


_DEFAULT = Settings()


@dataclass
class MigrationsArgs:
    """Arguments of :class:`Migrations`; names, defaults and meaning are :class:`~llmemory_db.migrate.Settings`'s
    (``connection``: :class:`ConnectionArgs`, gaps filled from the stack's ``postgresql:`` config)."""

    migrations_dir: Optional[str] = None        # default: migrations (or the package's folder)
    schema: Optional[str] = None
    module_name: Optional[str] = None          # default: aword_memory (or the package's name)
    history_table: Optional[str] = None        # default: public.schema_migrations (or pgdbm's <schema>.schema_migrations)
    connection: Optional[ConnectionArgs] = None
    migrations_package: Optional[str] = None   # deploy the migrations shipped inside an installed package (llmemory)
    lock_wait_timeout: float = _DEFAULT.lock_wait_timeout
    lock_timeout: Optional[float] = _DEFAULT.lock_timeout
    lock_retry_timeout: float = _DEFAULT.lock_retry_timeout
    statement_timeout: Optional[float] = _DEFAULT.statement_timeout
    preflight_timeout: float = _DEFAULT.preflight_timeout  # seconds per data check of the preview (0 = none)
    strict: bool = _DEFAULT.strict
    risk_policy: str = _DEFAULT.risk_policy          # warn, or deny: refuse risky statements on large tables
    risk_min_rows: int = _DEFAULT.risk_min_rows
    pool_mode: str = _DEFAULT.pool_mode
    drop_on_destroy: bool = _DEFAULT.drop_on_destroy
    extensions: Sequence[str] = _DEFAULT.extensions  # watched for drift (missing, other version); not created here
    accept_schema_drift: bool = _DEFAULT.accept_schema_drift
    startup_role: Optional[str] = None         # the role an application's pgdbm runs its start-up check as
    startup_guard: bool = _DEFAULT.startup_guard
    baseline: Optional[str] = None             # adopt a schema made without a history: the version it is at
    baseline_trust: bool = _DEFAULT.baseline_trust
    accept_edits: Optional[Sequence[str]] = None  # verified edits to record ("*": every clean one; default: "*" with
    #                                               migrations_package, none for a folder)
    spelling: str = _DEFAULT.spelling  # how errors name settings: python (these arguments), yaml, config

    def settings(self) -> Settings:
        return Settings.from_object(self)

    @classmethod
    def from_settings(cls, settings: Settings, **extra: Any):
        """Arguments carrying ``settings`` (e.g. read with ``Settings.from_config``), plus ``extra`` arguments."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {name: getattr(settings, name) for name in Settings.names() if name in names}
        values["migrations_dir"] = str(settings.migrations_dir)
        return cls(**{**values, **extra})


class Migrations(Resource):
    """Applies pending migrations on create/update; outputs the applied files and their checksums.

    Validation (missing folder, bad file, unknown placeholder, invalid names,
    syntax errors) happens here, in the program, so ``pulumi preview`` fails
    with the engine's message before anything runs.
    """

    schema_name: pulumi.Output[str]
    module_name: pulumi.Output[str]
    history_table: pulumi.Output[str]
    applied: pulumi.Output[list]
    checksums: pulumi.Output[dict]
    pending: pulumi.Output[list]
    fingerprint: pulumi.Output[str]
    drift: pulumi.Output[list]
    package_version: pulumi.Output[str]

    def __init__(self, name: str, args: MigrationsArgs, opts: Optional[pulumi.ResourceOptions] = None,
                 validated: Optional[tuple] = None) -> None:
        # (settings, files, rendered SQL) when the caller validated already
        settings, files, rendered = validated or validate(args)
        managed = managed_objects(rendered.values(), settings.schema)
        conn = ConnectionArgs.from_config(args.connection)
        if not settings.migrations_package:  # (a package's folder is found again wherever the provider runs)
            settings = settings.replace(migrations_dir=project_relative(str(settings.migrations_dir)))
        props: Dict[str, Any] = settings.to_props()
        props.update(
            checksums={m.filename: m.checksum for m in files},
            host=conn.host, port=conn.port, username=conn.username, password=conn.password,
            database=conn.database, sslmode=conn.sslmode, sslrootcert=conn.sslrootcert,
            # the connection fields the program left to the stack's postgresql: config: refresh and destroy take
            # them from the config of the run (a rotated password), not from what the last update recorded
            from_config=[f.name for f in dataclasses.fields(ConnectionArgs) if getattr(args.connection or
                                                                                    ConnectionArgs(), f.name) is None],
            managed=dataclasses.asdict(managed), package_version=settings.package.describe() if settings.package
            else None, schema_name=None, applied=None, pending=None, missing=None, objects=None, fingerprint=None,
            drift=None)
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["password"]))
        super().__init__(MigrationsProvider(), name, props, opts)
        # what the migrations create (tables, sequences, views, functions), for grants; a plain value, set after
        # super().__init__, which turns every property (such as the "managed" input) into an Output attribute
        self.managed_objects = managed


class ExtensionCheck(Resource):
    """Fails the deployment with the remedy when an extension is missing and the user cannot create it."""

    def __init__(self, name: str, extension: str, connection: Optional[ConnectionArgs] = None,
                 opts: Optional[pulumi.ResourceOptions] = None) -> None:
        conn = ConnectionArgs.from_config(connection)
        props = dict(extension=extension, host=conn.host, port=conn.port, username=conn.username,
                     password=conn.password, database=conn.database, sslmode=conn.sslmode,
                     sslrootcert=conn.sslrootcert)
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["password"]))
        super().__init__(ExtensionCheckProvider(), name, props, opts)


def validate(args: MigrationsArgs):
    """Load, render and parse every file for the settings; raise ``pulumi.RunError`` with the engine's message.

    The program cannot know which files are applied: the lint rules (and strict mode) run for the pending files
    only, in the provider's check, where the previous state is known. Returns (settings, files, rendered SQL by
    filename)."""
    try:
        settings = args.settings()
        files = migrate.load(settings.migrations_dir)
        rendered = migrate.render_parsed(files, settings)
    except migrate.MigrationError as exc:
        raise pulumi.RunError(exc.render(args.spelling)) from None
    return settings, files, rendered
