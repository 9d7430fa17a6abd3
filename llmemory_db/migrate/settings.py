"""One settings object for a migration target: the names, the defaults, validation and every conversion.

The same settings reach the engine four ways: Python arguments (``MigrationsArgs``), the dynamic resource's
properties (state), the command line and the stack config (``llmemory-db:*``). :class:`Settings` owns all of
them, so a default or a name exists once:

    Settings.from_props(settings.to_props()) == settings
    Settings.from_cli(parser.parse_args(...))            # options added by Settings.add_arguments
    Settings.from_config(pulumi.Config().get)            # camelCase keys of Pulumi.yaml

No Pulumi import here (the engine must not need Pulumi).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

from psycopg import sql

from .errors import MigrationError
from .render import check_identifier
from .source import find_package, pgdbm_history_table

DEFAULT_MODULE = "aword_memory"
DEFAULT_HISTORY_TABLE = "public.schema_migrations"
DEFAULT_MIGRATIONS_DIR = "migrations"
POOL_MODES = ("auto", "session", "transaction")


def _meta(help: str, cli: Optional[str] = None, config: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    return {"help": help, "cli": cli, "config": config, **extra}


@dataclass(frozen=True)
class Settings:
    """Where and how a module's migrations are applied (every field has a default)."""

    migrations_dir: Optional[Union[str, Path]] = field(default=None, metadata=_meta(
        "folder of *.sql migration files (default: migrations, or the package's folder)", "--dir", "migrationsDir"))
    migrations_package: Optional[str] = field(default=None, metadata=_meta(
        "deploy the migrations shipped inside an installed Python package (a pgdbm library), e.g. llmemory or "
        "mylib:db/migrations; module and history then default to the package's pgdbm layout",
        "--package", "migrationsPackage"))
    schema: Optional[str] = field(default=None, metadata=_meta(
        "target schema; none = standalone mode (the default schema, usually public)", "--schema", "schema"))
    module_name: Optional[str] = field(default=None, metadata=_meta(
        "module name in the history table (pgdbm's module_name; default aword_memory, or the package's name)",
        "--module", "moduleName"))
    history_table: Optional[str] = field(default=None, metadata=_meta(
        "history table, table or schema.table (default public.schema_migrations; with a package, pgdbm 0.5's "
        "<schema>.schema_migrations)", "--history-table", "historyTable"))
    lock_wait_timeout: float = field(default=60.0, metadata=_meta(
        "seconds to wait for the module's migration lock (pgdbm's advisory lock); 0 = as long as it takes",
        "--lock-wait", "lockWaitTimeout"))
    lock_timeout: Optional[float] = field(default=2.0, metadata=_meta(
        "PostgreSQL lock_timeout in seconds for each statement of a transactional migration: a statement that "
        "waits longer for a table lock gives up (and the file is retried) instead of queueing the application "
        "behind it; 0 = wait forever", "--lock-timeout", "lockTimeout"))
    lock_retry_timeout: float = field(default=60.0, metadata=_meta(
        "seconds to keep retrying a transactional migration that failed on lock_timeout (bounded exponential "
        "backoff with jitter; the file's transaction rolled back); 0 = do not retry", "--lock-retry-timeout",
        "lockRetryTimeout"))
    statement_timeout: Optional[float] = field(default=None, metadata=_meta(
        "PostgreSQL statement_timeout in seconds while a migration runs; 0 = none; unset = the role's default",
        "--statement-timeout", "statementTimeout"))
    strict: bool = field(default=False, metadata=_meta(
        "lint warnings in pending files are errors", "--strict", "strict"))
    risk_policy: str = field(default="warn", metadata=_meta(
        "risky statements (squawk's rules) on tables that hold data: warn, or deny (refuse before anything runs)",
        "--risk-policy", "riskPolicy", choices=("warn", "deny")))
    risk_min_rows: int = field(default=100_000, metadata=_meta(
        "with risk_policy deny: the estimated rows from which a risky statement is refused (a table of unknown "
        "size counts as large)", "--risk-min-rows", "riskMinRows"))
    preflight_timeout: float = field(default=2.0, metadata=_meta(
        "seconds each data check of the preflight may read a live table (READ ONLY) for the rows that would make a "
        "pending statement fail: duplicates for a UNIQUE constraint, NULLs for SET NOT NULL, ...; a bigger table "
        "or a slower check is skipped with a note; 0 = no data checks", "--preflight-timeout", None,
        internal=True))
    pool_mode: str = field(default="auto", metadata=_meta(
        "the endpoint: auto (detect a pooler: no-transaction files are refused through one), session or "
        "transaction", "--pool-mode", "poolMode", choices=POOL_MODES))
    extensions: Tuple[str, ...] = field(default=(), metadata=_meta(
        "extensions the schema depends on: watched by the drift check (MigratedSchema also creates them)",
        "--extension", "extensions"))
    startup_role: Optional[str] = field(default=None, metadata=_meta(
        "the role an application's pgdbm runs its start-up check as (llmemory 0.5 always does): it gets the "
        "history table's ownership, which that check needs, and nothing else of the kind", "--startup-role",
        "startupRole"))
    startup_guard: bool = field(default=True, metadata=_meta(
        "with a start-up role: an event trigger and a history trigger let that role run pgdbm's no-op check "
        "and nothing else (no DDL, no history writes); needs a superuser or a managed service's admin",
        None, "startupGuard"))
    baseline: Optional[str] = field(default=None, metadata=_meta(
        "adopt an existing schema: record the files up to this version as applied without running them, once the "
        "live schema is proven to be what they produce (a module that has a history already: nothing to do)",
        None, "baseline"))
    baseline_trust: bool = field(default=False, metadata=_meta(
        "with baseline: record without the proof (at your own risk; said loudly)", "--trust", "baselineTrust"))
    lock_scope: str = field(default="module", metadata=_meta(
        "module: pgdbm's exclusive lock of the module (every schema of it queues); schema: that key shared plus an "
        "exclusive key of (module, schema), so a fleet migrates its schemas in parallel while pgdbm on any of "
        "them still waits for all of them and is waited for", None, None, choices=("module", "schema"),
        internal=True))
    drop_on_destroy: bool = field(default=False, metadata=_meta(
        "pulumi destroy drops the schema (standalone: the module's tables) and forgets the history",
        None, "dropOnDestroy"))
    accept_schema_drift: bool = field(default=False, metadata=_meta(
        "on the next update, record the live schema as it is instead of stopping on schema drift",
        None, "acceptSchemaDrift"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions or ()))
        for name in ("schema", "migrations_package", "startup_role", "baseline"):  # "" (config's unset) = none
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        self._resolve_defaults()
        if self.schema is not None:
            check_identifier(self.schema, "schema name")
        if not isinstance(self.module_name, str) or not re.match(r"^[A-Za-z0-9_.\-]{1,100}$", self.module_name):
            raise MigrationError(
                f"Invalid module name {self.module_name!r}: use 1 to 100 letters, digits, '_', '-' or '.'",
                remedy="choose a module name such as aword_memory")
        self.history_parts  # validates
        if self.lock_scope not in ("module", "schema"):
            raise MigrationError(f"Invalid lock scope {self.lock_scope!r}: use module or schema",
                                 remedy="module is pgdbm's; schema is for fleets of schemas")
        if self.pool_mode not in POOL_MODES:
            raise MigrationError(f"Invalid pool mode {self.pool_mode!r}: use one of {', '.join(POOL_MODES)}",
                                 remedy="auto detects a pooler; session or transaction declare the endpoint's mode")
        if self.risk_policy not in ("warn", "deny"):
            raise MigrationError(f"Invalid risk_policy {self.risk_policy!r}: use warn or deny",
                                 remedy="warn prints the risky statements; deny refuses them on large tables")
        if isinstance(self.risk_min_rows, bool) or not isinstance(self.risk_min_rows, int) or self.risk_min_rows < 0:
            raise MigrationError(f"Invalid risk_min_rows {self.risk_min_rows!r}: a whole number of rows >= 0 is "
                                 "required", remedy="for example 100000")
        for name in ("lock_wait_timeout", "lock_timeout", "statement_timeout", "lock_retry_timeout",
                     "preflight_timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise MigrationError(f"Invalid {name} {value!r}: a number of seconds >= 0 is required",
                                     remedy=f"set {name} to a number of seconds, e.g. 30")
        for extension in self.extensions:
            check_identifier(extension, "extension name")
        if self.startup_role is not None:
            check_identifier(self.startup_role, "start-up role")

    def _resolve_defaults(self) -> None:
        """Defaults that depend on other settings: a package's folder, module and pgdbm history layout."""
        def default(name: str, value: Any) -> None:
            if getattr(self, name) in (None, ""):
                object.__setattr__(self, name, value)

        if self.migrations_package:
            source = find_package(self.migrations_package)
            if self.migrations_dir not in (None, "") and Path(self.migrations_dir).resolve() != source.folder:
                raise MigrationError(
                    f"Both migrations_dir ({self.migrations_dir}) and migrations_package "
                    f"({self.migrations_package}) are set", remedy="set one of them: the package's folder is used "
                                                                   "when migrations_package is set")
            object.__setattr__(self, "migrations_dir", str(source.folder))
            default("module_name", source.package)
            default("history_table", pgdbm_history_table(self.schema))
        default("migrations_dir", DEFAULT_MIGRATIONS_DIR)
        default("module_name", DEFAULT_MODULE)
        default("history_table", DEFAULT_HISTORY_TABLE)

    @property
    def package(self):
        """The installed package the migrations come from (``PackageSource``), or None."""
        return find_package(self.migrations_package) if self.migrations_package else None

    # ------------------------------------------------------------------ derived names
    @property
    def module(self) -> str:
        return self.module_name

    @property
    def history_parts(self) -> Tuple[str, str]:
        if not isinstance(self.history_table, str):
            raise MigrationError(f"Invalid history table {self.history_table!r}: use table or schema.table",
                                 remedy="for example public.schema_migrations")
        parts = self.history_table.split(".")
        if len(parts) == 1:
            parts = ["public"] + parts
        if len(parts) != 2:
            raise MigrationError(f"Invalid history table {self.history_table!r}: use table or schema.table",
                                 remedy="for example public.schema_migrations")
        return (check_identifier(parts[0], "history table schema"),
                check_identifier(parts[1], "history table name"))

    @property
    def history_ident(self) -> sql.Composable:
        return sql.Identifier(*self.history_parts)

    @property
    def history_display(self) -> str:
        return ".".join(self.history_parts)

    @property
    def inflight_parts(self) -> Tuple[str, str]:
        """The table recording no-transaction migrations that started and have not finished (pgdbm ignores it)."""
        schema, table = self.history_parts
        return schema, table[:54] + "_inflight"

    @property
    def inflight_ident(self) -> sql.Composable:
        return sql.Identifier(*self.inflight_parts)

    @property
    def schema_name(self) -> str:
        """The schema the objects live in (standalone: public)."""
        return self.schema or "public"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ conversions
    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def public_names(cls) -> Tuple[str, ...]:
        """The settings a user sets (arguments of the components); the rest are set by the engine itself."""
        return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal"))

    @classmethod
    def from_object(cls, obj: Any) -> "Settings":
        return cls(**{name: getattr(obj, name) for name in cls.names() if hasattr(obj, name)})

    def to_props(self) -> Dict[str, Any]:
        """Resource properties: JSON values; an unset optional is left out (Pulumi drops None)."""
        props: Dict[str, Any] = {}
        for name in self.names():
            value = getattr(self, name)
            if value is None:
                continue
            if name == "migrations_dir":
                if self.migrations_package:
                    continue  # found again from the package wherever the provider runs
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            props[name] = value
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> "Settings":
        """The inverse of :meth:`to_props`; also reads the properties of stacks written by earlier versions
        (``schema: ""`` for standalone)."""
        values: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in props or props[f.name] is None:
                continue
            value = props[f.name]
            if f.name.endswith("timeout"):
                value = float(value)
            elif f.name == "risk_min_rows":
                value = int(value)
            elif f.name == "extensions":
                value = tuple(value)
            values[f.name] = value
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
        """Command-line options for the settings ``names`` (each command takes the ones it uses)."""
        for f in dataclasses.fields(cls):
            if f.name not in names or not f.metadata.get("cli"):
                continue
            flag, help_text, default = f.metadata["cli"], f.metadata["help"], f.default
            if f.type in (bool, "bool"):
                parser.add_argument(flag, dest=f.name, action="store_true", help=help_text)
            elif f.name == "extensions":
                parser.add_argument(flag, dest=f.name, action="append", default=None, metavar="NAME",
                                    help=help_text + " (repeat the option for several)")
            elif f.name.endswith("timeout"):
                parser.add_argument(flag, dest=f.name, type=float, default=None, metavar="SECONDS",
                                    help=f"{help_text} (default: {default if default is not None else 'unset'})")
            elif f.name == "risk_min_rows":
                parser.add_argument(flag, dest=f.name, type=int, default=None, metavar="ROWS",
                                    help=f"{help_text} (default: {default:,})")
            else:
                parser.add_argument(flag, dest=f.name, default=None, choices=f.metadata.get("choices"),
                                    help=help_text + (f" (default: {default})" if default is not None else ""))

    @classmethod
    def from_cli(cls, namespace: argparse.Namespace) -> "Settings":
        given = {name: value for name, value in vars(namespace).items()
                 if name in cls.names() and value is not None and value is not False}
        return cls(**given)

    @classmethod
    def config_keys(cls) -> Dict[str, str]:
        """Setting name -> stack config key (``llmemory-db:<key>``)."""
        return {f.name: f.metadata["config"] for f in dataclasses.fields(cls) if f.metadata.get("config")}

    @classmethod
    def from_config(cls, get: Callable[[str], Optional[str]], **overrides: Any) -> "Settings":
        """From stack config: ``get(key)`` returns the raw string of ``llmemory-db:<key>`` or None
        (``pulumi.Config().get``). A value of the wrong type is an error naming the key."""
        values: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f.metadata.get("config")
            raw = get(key) if key else None
            if raw is None:
                continue
            values[f.name] = _parse_config(f, key, raw)
        values.update(overrides)
        return cls(**values)


def _parse_config(f: "dataclasses.Field", key: str, raw: str) -> Any:
    def wrong(kind: str) -> MigrationError:
        return MigrationError(f"Invalid stack config llmemory-db:{key} = {raw!r}: {kind} expected",
                              remedy=f"pulumi config set llmemory-db:{key} <{kind}> (see the README's table)")

    if f.type in (bool, "bool"):
        if raw.lower() not in ("true", "false"):
            raise wrong("true or false")
        return raw.lower() == "true"
    if f.name.endswith("timeout"):
        try:
            return float(raw)
        except ValueError:
            raise wrong("a number of seconds") from None
    if f.name == "risk_min_rows":
        try:
            return int(raw)
        except ValueError:
            raise wrong("a whole number of rows") from None
    if f.name == "extensions":
        try:
            value = json.loads(raw)
        except ValueError:
            raise wrong("a list of names") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong("a list of names")
        return tuple(value)
    return raw


# The name the engine used before the settings object existed.
Target = Settings
