"""``Migrations``: a dynamic resource that applies a directory of templated SQL migrations."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import pulumi
from pulumi.dynamic import Resource

from . import migrate
from .migrate.objects import managed_objects
from .provider import ExtensionCheckProvider, MigrationsProvider


@dataclass
class ConnectionArgs:
    """How to reach PostgreSQL.  ``None`` fields fall back to the stack's ``postgresql:`` config."""

    host: Optional[pulumi.Input[str]] = None
    port: Optional[pulumi.Input[int]] = None
    username: Optional[pulumi.Input[str]] = None
    password: Optional[pulumi.Input[str]] = None
    database: Optional[pulumi.Input[str]] = None
    sslmode: Optional[pulumi.Input[str]] = None

    @staticmethod
    def from_config(base: Optional["ConnectionArgs"] = None) -> "ConnectionArgs":
        """Fill the gaps of ``base`` from the stack config keys the pulumi-postgresql provider reads."""
        config = pulumi.Config("postgresql")
        base = base or ConnectionArgs()
        port = config.get("port")
        return ConnectionArgs(
            host=base.host if base.host is not None else (config.get("host") or "localhost"),
            port=base.port if base.port is not None else int(port or 5432),
            username=base.username if base.username is not None else (config.get("username") or "postgres"),
            password=pulumi.Output.secret(base.password) if base.password is not None
            else config.get_secret("password"),
            database=base.database if base.database is not None else (config.get("database") or "postgres"),
            sslmode=base.sslmode if base.sslmode is not None else (config.get("sslmode") or "prefer"))


def project_relative(path: str) -> str:
    """Keep state free of machine-specific absolute paths when the folder is inside the project."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, os.getcwd())
    return absolute if relative.startswith("..") else relative


@dataclass
class MigrationsArgs:
    migrations_dir: str = "migrations"
    schema: Optional[str] = None
    module_name: str = migrate.DEFAULT_MODULE
    history_table: str = migrate.DEFAULT_HISTORY_TABLE
    connection: Optional[ConnectionArgs] = None
    lock_wait_timeout: float = 60.0
    lock_timeout: Optional[float] = None
    statement_timeout: Optional[float] = None
    strict: bool = False
    pool_mode: str = "auto"                 # auto (detect a pooler), session or transaction
    drop_on_destroy: bool = False
    extensions: Sequence[str] = ()          # watched for drift (missing, other version); not created here
    accept_schema_drift: bool = False       # record the live schema as it is instead of stopping on drift


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

    def __init__(self, name: str, args: MigrationsArgs, opts: Optional[pulumi.ResourceOptions] = None,
                 validated: Optional[tuple] = None) -> None:
        # (target, files, rendered SQL) when the caller validated already
        target, files, rendered = validated or validate(args)
        managed = managed_objects(rendered.values(), target.schema)
        conn = ConnectionArgs.from_config(args.connection)
        props: Dict[str, Any] = dict(
            migrations_dir=project_relative(str(args.migrations_dir)),
            schema=args.schema or "", module_name=target.module, history_table=target.history_display,
            checksums={m.filename: m.checksum for m in files},
            host=conn.host, port=conn.port, username=conn.username, password=conn.password,
            database=conn.database, sslmode=conn.sslmode,
            lock_wait_timeout=target.lock_wait_timeout, lock_timeout=target.lock_timeout or 0,
            statement_timeout=target.statement_timeout or 0, strict=target.strict, pool_mode=target.pool_mode,
            drop_on_destroy=bool(args.drop_on_destroy), managed=dataclasses.asdict(managed),
            extensions=list(args.extensions), accept_schema_drift=bool(args.accept_schema_drift),
            schema_name=None, applied=None, pending=None, missing=None, objects=None, fingerprint=None,
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
                     password=conn.password, database=conn.database, sslmode=conn.sslmode)
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["password"]))
        super().__init__(ExtensionCheckProvider(), name, props, opts)


def validate(args: MigrationsArgs):
    """Load, render and lint every file for the target; raise ``pulumi.RunError`` with the engine's message.

    Returns (target, files, rendered SQL by filename)."""
    try:
        target = migrate.Target(args.migrations_dir, schema=args.schema, module=args.module_name,
                                history_table=args.history_table, lock_wait_timeout=args.lock_wait_timeout,
                                lock_timeout=args.lock_timeout, statement_timeout=args.statement_timeout,
                                strict=args.strict, pool_mode=args.pool_mode)
        files = migrate.load(target.migrations_dir)
        rendered, warnings = migrate.lint_pending(files, target)
    except migrate.MigrationError as exc:
        raise pulumi.RunError(str(exc)) from None
    for warning in warnings:
        pulumi.log.warn(str(warning))
    return target, files, rendered
