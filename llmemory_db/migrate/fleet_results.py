"""What a fleet run returns: each tenant's result (applied, recorded, pending, its error, its server) and the
fleet's (summary, failures, per-server counts); and how a failure is put in one line."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import psycopg

from .errors import ConnectionFailedError

# what says a server cannot be used: its tenants fail (naming it), the other servers go on
UNREACHABLE = (ConnectionFailedError, psycopg.OperationalError)
FLEET_CONNECTION = "(the fleet's connection)"  # the server of the default connection, when none is named


@dataclass
class TenantResult:
    schema: str
    database: str = ""
    applied: List[str] = field(default_factory=list)   # applied by this run
    recorded: int = 0                                    # files recorded for the tenant after the run
    last: str = ""                                       # its last recorded file
    pending: List[str] = field(default_factory=list)
    error: Optional[Dict[str, object]] = None            # {file, line, message} of a failure
    new: bool = False                                    # its schema/history did not exist before this run
    server: str = ""                                     # the server it is on (apply_fleet's server_of)
    unread: bool = False                                 # its server could not be reached: history not read

    def as_dict(self) -> dict:
        out: dict = {"recorded": self.recorded, "last": self.last, "pending": self.pending}
        if self.database:
            out["database"] = self.database
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class FleetResult:
    tenants: "OrderedDict[str, TenantResult]"
    checksums: Dict[str, str]
    seconds: float = 0.0
    skipped: List[str] = field(default_factory=list)  # tenants not started (on_error stop, a failed canary)

    @property
    def failed(self) -> List[TenantResult]:
        return [t for t in self.tenants.values() if t.error]

    def servers(self) -> Dict[str, Dict[str, int]]:
        """Per server: its tenants, how many are at head (every file recorded, no error), how many failed."""
        out: Dict[str, Dict[str, int]] = {}
        for tenant in self.tenants.values():
            row = out.setdefault(tenant.server, {"tenants": 0, "at_head": 0, "failed": 0})
            row["tenants"] += 1
            row["failed"] += bool(tenant.error)
            row["at_head"] += not tenant.error and not tenant.pending
        return out

    def summary(self) -> str:
        total = len(self.tenants)
        done = sum(1 for t in self.tenants.values() if not t.error and not t.pending)
        parts = [f"{done} up to date"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        waiting = total - done - len(self.failed)
        if waiting:
            parts.append(f"{waiting} with pending files")
        return f"{total} tenants: " + ", ".join(parts)


def error_of(exc: Exception) -> Dict[str, object]:
    """A failure as {file, line, message}: the message's first line."""
    message = getattr(exc, "message", None) or str(exc)
    return {"file": getattr(exc, "file", None) or "", "line": getattr(exc, "line", None) or 0,
            "message": message.splitlines()[0] if message else type(exc).__name__}


def server_error(server: str, exc: Exception) -> str:
    """One line naming the server and why it could not be used (no password: connect() scrubs its messages)."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    first = next((line.strip() for line in message.splitlines() if line.strip()), type(exc).__name__)
    return f"server {server or FLEET_CONNECTION}: {first}"


def remembering(connect: Callable[[str], psycopg.Connection],
                server_of: Callable[[str], str]) -> Callable[[str], psycopg.Connection]:
    """``connect``, but a server that could not be reached is not tried again in this operation: the same error
    at once (each try costs the connection's retries)."""
    down: Dict[str, Exception] = {}

    def connect_once(database: str) -> psycopg.Connection:
        server = server_of(database)
        if server in down:
            raise down[server]
        try:
            return connect(database)
        except UNREACHABLE as exc:
            down.setdefault(server, exc)
            raise
    return connect_once


def failure_lines(failed: Dict[str, Dict[str, object]], most: int = 20) -> List[str]:
    """The failed tenants of a run (as the outputs record them: tenant -> {file, line, message}) for a message:
    tenants that failed for the same reason without a file (a server that could not be reached) in one line with
    the remedy, the others one line each naming file and line; at most ``most`` lines, the rest counted (all of
    them are in the outputs)."""
    alike: "OrderedDict[str, List[str]]" = OrderedDict()
    lines: List[str] = []
    for tenant, error in sorted(failed.items()):
        if error.get("file"):
            where = f"{error['file']}" + (f":{int(error['line'])}" if error.get("line") else "")
            lines.append(f"  {tenant}: {where} {error.get('message')}")
        else:
            alike.setdefault(str(error.get("message")), []).append(tenant)
    grouped = []
    for message, tenants in alike.items():
        names = ", ".join(tenants[:5]) + (f" and {len(tenants) - 5} more" if len(tenants) > 5 else "")
        remedy = " (start the server or fix its connection, then run the update again)" \
            if message.startswith("server ") else ""
        grouped.append(f"  {message}{remedy}: {len(tenants)} tenant(s): {names}")
    lines = grouped + lines
    if len(lines) > most:
        lines = lines[:most] + [f"  ... and {len(lines) - most} more (the output `failed` lists every tenant)"]
    return lines
