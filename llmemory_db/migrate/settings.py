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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from psycopg import sql

from . import options
from .errors import InvalidIdentifierError, MigrationError, SettingError
from .identifiers import check_identifier
from .source import find_package, pgdbm_history_table
from .spelling import STYLES, setting

DEFAULT_MODULE = "aword_memory"
DEFAULT_HISTORY_TABLE = "public.schema_migrations"
DEFAULT_MIGRATIONS_DIR = "migrations"
POOL_MODES = ("auto", "session", "transaction")


def duration(seconds: float) -> str:
    """A number of seconds as a PostgreSQL duration (``SET lock_timeout = '2000ms'``)."""
    return f"{int(seconds * 1000)}ms"


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
        "or a slower check is skipped with a note; 0 = no data checks", "--preflight-timeout", "preflightTimeout"))
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
    accept_edits: Optional[Tuple[str, ...]] = field(default=None, metadata=_meta(
        "applied files whose edit is accepted once proven harmless: the files are built in a scratch schema and "
        "compared with the live schema; no difference, or comments only, records the new checksum (with an audit "
        "row); '*' = every edited file whose proof is clean. Default: '*' with migrations_package (a library's "
        "release edits its own files, which you cannot restore), none for a folder of your own", None,
        "acceptEdits"))
    spelling: str = field(default="python", metadata=_meta(
        "how messages name settings: python (arguments), yaml (properties), cli (options), config (stack config "
        "keys of a program that reads them)", None, None, choices=STYLES, internal=True))
    drop_on_destroy: bool = field(default=False, metadata=_meta(
        "pulumi destroy drops the schema (standalone: the module's tables) and forgets the history",
        None, "dropOnDestroy"))
    accept_schema_drift: bool = field(default=False, metadata=_meta(
        "on the next update, record the live schema as it is instead of stopping on schema drift",
        None, "acceptSchemaDrift"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions or ()))
        if isinstance(self.accept_edits, str):
            object.__setattr__(self, "accept_edits", (self.accept_edits,))
        elif self.accept_edits is not None:
            object.__setattr__(self, "accept_edits", tuple(self.accept_edits))
        for name in ("schema", "migrations_package", "startup_role", "baseline"):  # "" (config's unset) = none
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        self._resolve_defaults()
        self.validate()

    def validate(self) -> None:
        """Every value checked once, here; errors name the setting (:func:`.spelling.setting`)."""
        if self.schema is not None:
            _identifier("schema", self.schema, "a schema name")
        if not isinstance(self.module_name, str) or not re.match(r"^[A-Za-z0-9_.\-]{1,100}$", self.module_name):
            raise SettingError(
                f"Invalid value {self.module_name!r} for {setting('module_name')}: use 1 to 100 letters, digits, "
                "'_', '-' or '.'", setting="module_name", remedy="choose a module name such as aword_memory")
        self.history_parts  # validates
        choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(self) if f.metadata.get("choices")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SettingError(f"Invalid value {getattr(self, name)!r} for {setting(name)}: use one of "
                                   f"{', '.join(allowed)}", setting=name, remedy=_meta_help(name))
        if isinstance(self.risk_min_rows, bool) or not isinstance(self.risk_min_rows, int) or self.risk_min_rows < 0:
            raise SettingError(f"Invalid value {self.risk_min_rows!r} for {setting('risk_min_rows')}: a whole number "
                               "of rows >= 0 is required", setting="risk_min_rows", remedy="for example 100000")
        for name in ("lock_wait_timeout", "lock_timeout", "statement_timeout", "lock_retry_timeout",
                     "preflight_timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise SettingError(f"Invalid value {value!r} for {setting(name)}: a number of seconds >= 0 is "
                                   "required", setting=name, remedy=f"set {setting(name, 30)}, for example")
        for extension in self.extensions:
            _identifier("extensions", extension, "an extension name")
        if self.startup_role is not None:
            _identifier("startup_role", self.startup_role, "a role name")
        for name in self.accept_edits:
            if not isinstance(name, str) or not name or "/" in name:
                raise SettingError(f"Invalid value {name!r} in {setting('accept_edits')}: a migration file name "
                                   "(001_x.sql) or '*'", setting="accept_edits",
                                   remedy=f"for example {setting('accept_edits', ['001_complete_schema.sql'])}")

    def _resolve_defaults(self) -> None:
        """Defaults that depend on other settings: a package's folder, module and pgdbm history layout."""
        def default(name: str, value: Any) -> None:
            if getattr(self, name) in (None, ""):
                object.__setattr__(self, name, value)

        if self.migrations_package:
            source = find_package(self.migrations_package)
            if self.migrations_dir not in (None, "") and Path(self.migrations_dir).resolve() != source.folder:
                raise SettingError(
                    f"Both {setting('migrations_dir')} ({self.migrations_dir}) and {setting('migrations_package')} "
                    f"({self.migrations_package}) are set", setting="migrations_dir",
                    remedy="set one of them: the package's folder is used when migrations_package is set")
            object.__setattr__(self, "migrations_dir", str(source.folder))
            default("module_name", source.package)
            default("history_table", pgdbm_history_table(self.schema))
            if self.accept_edits is None:  # a library's release edits its own applied files: verified edits pass
                object.__setattr__(self, "accept_edits", ("*",))
        default("migrations_dir", DEFAULT_MIGRATIONS_DIR)
        default("module_name", DEFAULT_MODULE)
        default("history_table", DEFAULT_HISTORY_TABLE)
        if self.accept_edits is None:
            object.__setattr__(self, "accept_edits", ())

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
        parts = self.history_table.split(".") if isinstance(self.history_table, str) else []
        if len(parts) == 1:
            parts = ["public"] + parts
        if len(parts) != 2:
            raise SettingError(f"Invalid value {self.history_table!r} for {setting('history_table')}: use table or "
                               "schema.table", setting="history_table", remedy="for example public.schema_migrations")
        return (_identifier("history_table", parts[0], "the history table's schema", self.history_table),
                _identifier("history_table", parts[1], "the history table's name", self.history_table))

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
    def edits_parts(self) -> Tuple[str, str]:
        """The audit trail of accepted edits of applied files (old and new checksum, when, why; pgdbm ignores it)."""
        schema, table = self.history_parts
        return schema, table[:57] + "_edits"

    @property
    def edits_ident(self) -> sql.Composable:
        return sql.Identifier(*self.edits_parts)

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
            elif f.name in ("extensions", "accept_edits"):
                value = tuple(value)
            values[f.name] = value
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
        """Command-line options for the settings ``names`` (each command takes the ones it uses)."""
        options.add_arguments(cls, parser, names)

    @classmethod
    def from_cli(cls, namespace: argparse.Namespace) -> "Settings":
        return cls(**options.given(cls, namespace))

    @classmethod
    def problems(cls, values: Mapping[str, Any]) -> List["MigrationError"]:
        """Every invalid value among ``values`` (settings, and a component's ``runtime_roles``), each an error
        naming its setting: what a component checks, once, before it builds anything. Values left out or None
        are not checked; combinations are checked when the settings are built."""
        found: List[MigrationError] = []
        for name in cls.names():
            if values.get(name) is None:
                continue
            try:
                cls(**{name: values[name]})
            except MigrationError as exc:  # a package not installed, a folder missing: that setting's too
                exc.setting = getattr(exc, "setting", "") or name
                found.append(exc)
        for index, role in enumerate(values.get("runtime_roles") or ()):
            try:
                _identifier("runtime_roles", role, "a role name")
            except SettingError as exc:
                exc.setting = f"runtime_roles[{index}]"
                found.append(exc)
        return found

    @classmethod
    def cli_flags(cls) -> Dict[str, str]:
        """Setting name -> command-line option."""
        return {f.name: f.metadata["cli"] for f in dataclasses.fields(cls) if f.metadata.get("cli")}

    @classmethod
    def config_keys(cls) -> Dict[str, str]:
        """Setting name -> stack config key (``llmemory-db:<key>``)."""
        return {f.name: f.metadata["config"] for f in dataclasses.fields(cls) if f.metadata.get("config")}

    @classmethod
    def from_config(cls, get: Callable[[str], Optional[str]], **overrides: Any) -> "Settings":
        """From stack config: ``get(key)`` returns the raw string of ``llmemory-db:<key>`` or None
        (``pulumi.Config().get``). A value of the wrong type is an error naming the key."""
        return cls(**{**options.from_config(cls, get), **overrides})


def _identifier(name: str, value: Any, what: str, whole: Any = None) -> str:
    """``value`` if it is a valid identifier, else an error naming the setting ``name`` (and its ``whole`` value,
    of which ``value`` is a part)."""
    try:
        return check_identifier(value, what)
    except InvalidIdentifierError:
        raise InvalidIdentifierError(
            f"Invalid value {value if whole is None else whole!r} for {setting(name)}: {what} starts with a letter "
            "or underscore and holds only "
            "letters, digits and underscores, at most 63 characters", setting=name,
            remedy="choose a name such as llmemory or app_data") from None


def _meta_help(name: str) -> str:
    return next(f.metadata["help"] for f in dataclasses.fields(Settings) if f.name == name)


# The name the engine used before the settings object existed.
Target = Settings
