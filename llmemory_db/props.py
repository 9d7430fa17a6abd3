"""Resource properties <-> the engine's values, for the dynamic providers and the package's plugin.

A resource's properties are the engine's settings (``Settings.to_props``), the connection's fields
(``ConnectionSettings``), the files' checksums and what the files create (``managed``), plus the outputs the
provider adds. No decision is taken here: these are conversions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from typing import Any, Callable, Dict, Sequence

from .migrate.connection import ConnectionSettings
from .migrate.events import Event
from .migrate.fleet_settings import FleetSettings, Tenant
from .migrate.objects import ManagedObjects
from .migrate.settings import Settings

CONNECTION = ConnectionSettings.names()
OUTPUTS = ("schema_name", "applied", "pending", "missing", "objects", "fingerprint", "drift", "interrupted",
           "tenants", "summary", "failed", "servers")
# Inputs whose change is a reason to run the engine again (never a replacement: applying is an update). Not the
# folder (the files' checksums are), not the message style, not accept_edits (edits show as changed checksums).
UNTRACKED = ("migrations_dir", "spelling", "accept_edits")
TRACKED = ("checksums",) + tuple(n for n in Settings.names() if n not in UNTRACKED) + CONNECTION + ("managed",)
PLACE = ("schema", "database", "host", "port")              # where the objects live (the fingerprint's scope)
HISTORY = PLACE + ("module_name", "history_table")           # ... and whose history it is
FLEET_TRACKED = TRACKED[:-len(CONNECTION) - 1] + FleetSettings.FIELDS + ("tenants_list", "connections", "managed")
DEFAULTS = {**Settings.defaults(), **FleetSettings.defaults()}  # a key an older version did not write: its default
local = threading.local()  # the event sink of the calls this thread makes (events_to)


def settings_of(props: Dict[str, Any]) -> Settings:
    """The engine's settings; a relative folder is relative to the Pulumi project, where the provider runs."""
    settings = Settings.from_props(props)
    folder = str(settings.migrations_dir)
    return settings if os.path.isabs(folder) else settings.replace(migrations_dir=os.path.join(os.getcwd(), folder))


def managed_of(props: Dict[str, Any]) -> ManagedObjects:
    managed = props.get("managed") or {}
    return ManagedObjects(**{f.name: list(managed.get(f.name) or []) for f in dataclasses.fields(ManagedObjects)})


def same(olds: Dict[str, Any], news: Dict[str, Any], keys: Sequence[str]) -> bool:
    return all(olds.get(k) == news.get(k) for k in keys)


def resource_id(props: Dict[str, Any]) -> str:
    """Stable id: one module's history in one database (never random)."""
    return f"{props.get('database') or 'postgres'}/{props.get('history_table')}/{props.get('module_name')}"


def inputs_of(props: Dict[str, Any]) -> Dict[str, Any]:
    """Every input a program sends (what a refresh must give back, so that a plain preview after it is clean)."""
    return {k: v for k, v in props.items() if k not in OUTPUTS and not k.startswith("__")}


@contextlib.contextmanager
def events_to(sink: Callable[[Event], None]):
    """Deliver the events of the provider calls made by this thread to ``sink`` instead of printing them (the
    package's plugin sends them to the engine as log messages of the resource)."""
    local.sink = sink
    try:
        yield
    finally:
        local.sink = None


def fleet_of(props: Dict[str, Any]):
    """(FleetSettings, tenants, connect) of a fleet's properties."""
    fleet = FleetSettings.from_props(props, settings_of(props))
    tenants = [Tenant(t["schema"], t.get("database") or "") for t in props.get("tenants_list") or []]
    connections = props.get("connections") or {}
    return fleet, tenants, lambda key: ConnectionSettings.from_props(
        connections.get(key) or connections.get("") or props).connect()


def server_of(props: Dict[str, Any]) -> Callable[[str], str]:
    """The server (host:port) of a tenant's connection key: a fleet's pools and its per-server outputs."""
    connections = props.get("connections") or {}

    def server(key: str) -> str:
        conn = connections.get(key) or connections.get("") or props
        return f"{conn.get('host') or 'localhost'}:{int(float(conn.get('port') or 5432))}"  # Pulumi: 5432.0
    return server
