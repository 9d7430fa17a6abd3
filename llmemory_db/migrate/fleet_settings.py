"""A fleet's settings: its tenants (a schema, on a connection) and what it adds to the module's :class:`Settings`
(history per tenant, parallelism, canary, waves, what a failure does). Each default lives here, once."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from .errors import SettingError
from .identifiers import check_identifier
from .settings import Settings
from .spelling import setting

SCHEMA_TOKEN = "{schema}"
DEFAULT_HISTORY = "{schema}.schema_migrations"
ON_ERROR = ("stop", "continue")



@dataclass(frozen=True)
class Tenant:
    """One target of a fleet: a schema, on the fleet's connection or on the named one (``database``)."""

    schema: str
    database: str = ""  # key of the fleet's connections; "" = the default connection

    @property
    def key(self) -> str:
        return f"{self.database}/{self.schema}" if self.database else self.schema


@dataclass(frozen=True)
class FleetSettings:
    """What a fleet adds to the module's :class:`Settings` (whose schema and history are per tenant)."""

    base: Settings
    history_template: str = DEFAULT_HISTORY
    max_parallel: int = 4         # connections per server (each server's pool)
    canary: int = 1
    wave_size: int = 0            # 0: all the tenants after the canary in one wave
    on_error: str = "stop"
    runtime_roles: Tuple[str, ...] = ()
    max_parallel_total: int = 0   # tenants migrating at once over all servers; 0: no bound beyond each pool

    def __post_init__(self) -> None:
        object.__setattr__(self, "runtime_roles", tuple(self.runtime_roles or ()))
        if self.on_error not in ON_ERROR:
            raise SettingError(f"Invalid value {self.on_error!r} for {setting('on_error')}: use stop or continue",
                               setting="on_error",
                               remedy="stop finishes the running tenants and starts no new one; continue goes on")
        for name, least in (("max_parallel", 1), ("canary", 0), ("wave_size", 0),
                            ("max_parallel_total", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SettingError(f"Invalid value {value!r} for {setting(name)}: a whole number >= {least} is "
                                   "required", setting=name, remedy=f"for example {setting(name, max(least, 1))}")
        if SCHEMA_TOKEN not in self.history_template and SCHEMA_TOKEN not in self.base.module_name:
            raise SettingError(
                f"The history {self.history_template!r} is shared by every tenant, and so is module "
                f"{self.base.module_name!r}: their histories would collide", setting="history_table",
                remedy="keep each tenant's history in its schema ({schema}.schema_migrations, pgdbm's layout), or "
                       "put {schema} in the module name")
        for role in self.runtime_roles:
            check_identifier(role, "runtime role")

    # the fleet's own fields, as resource properties (the module's settings are Settings')
    FIELDS = ("history_template", "max_parallel", "canary", "wave_size", "on_error", "runtime_roles",
              "max_parallel_total")
    WHOLE = ("max_parallel", "canary", "wave_size", "max_parallel_total")

    def to_props(self) -> Dict[str, object]:
        props = self.base.to_props()
        props.update({name: list(getattr(self, name)) if name == "runtime_roles" else getattr(self, name)
                      for name in self.FIELDS})
        return props

    @classmethod
    def from_props(cls, props: Dict[str, object], base: Optional[Settings] = None) -> "FleetSettings":
        """The inverse of :meth:`to_props` (``base``: the module's settings, when the caller resolved them)."""
        values: Dict[str, object] = {}
        for name in cls.FIELDS:
            value = props.get(name)
            if value is None:
                continue
            values[name] = tuple(value) if name == "runtime_roles" else \
                int(value) if name in cls.WHOLE else value
        return cls(base if base is not None else Settings.from_props(props), **values)

    @classmethod
    def defaults(cls) -> Dict[str, object]:
        """The fleet's own fields' defaults, as properties (a stack written before a field existed has its
        default)."""
        return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
                for f in dataclasses.fields(cls) if f.name in cls.FIELDS}

    def for_tenant(self, tenant: Tenant) -> Settings:
        return self.base.replace(schema=tenant.schema, lock_scope="schema",
                                 history_table=self.history_template.replace(SCHEMA_TOKEN, tenant.schema),
                                 module_name=self.base.module_name.replace(SCHEMA_TOKEN, tenant.schema))


def check_tenants(tenants: Iterable[Tenant]) -> List[Tenant]:
    """Valid identifiers, no duplicates; raises naming them."""
    seen: Dict[str, int] = {}
    out = []
    for tenant in tenants:
        check_identifier(tenant.schema, f"tenant schema ({tenant.schema!r})")
        seen[tenant.key] = seen.get(tenant.key, 0) + 1
        out.append(tenant)
    duplicates = sorted(key for key, count in seen.items() if count > 1)
    if duplicates:
        raise SettingError(f"Tenants listed more than once: {', '.join(duplicates)}", setting="tenants",
                           remedy="list each tenant (schema, on its connection) once")
    return out
