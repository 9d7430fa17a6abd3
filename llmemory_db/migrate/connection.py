"""Connections: connect with retries, scrub secrets from messages, detect a pooler in between."""
from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

import psycopg
from psycopg import conninfo as pg_conninfo

from .errors import ConnectionFailedError
from .settings import Settings

# pgdbm's hints that a host is a transaction pooler, plus PgBouncer's default port
POOLER_HOST_HINTS = ("-pooler", "pgbouncer", "transaction-pool")
POOLER_PORT = 6432
APPLICATION_NAME = "llmemory-db-migrate"


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """Remove passwords from a message: explicit secrets and password=/:pw@ forms."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "******")
    text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1******", text, flags=re.IGNORECASE)
    text = re.sub(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@", r"\1******@", text)
    return text


def _server_answered(params: dict) -> bool:
    """Did a server accept the connection (so that the failure is its answer, not the network's)?

    libpq gives no SQLSTATE for a failed connection, and its message may be translated (lc_messages); whether
    the server's address accepts a connection tells a refused login (wrong password, unknown database: retrying
    cannot help) from an unreachable or starting server (retry) in any language."""
    host = str(params.get("host") or os.environ.get("PGHOST") or "/var/run/postgresql")
    port = int(str(params.get("port") or os.environ.get("PGPORT") or 5432).split(",")[0])
    if "," in host:
        return False  # several hosts: libpq tries each; let the retry loop do the same
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(os.path.join(host, f".s.PGSQL.{port}"))
        else:
            socket.create_connection((params.get("hostaddr") or host, port), timeout=2).close()
        return True
    except OSError:
        return False


def connect(conninfo: str = "", *, retries: int = 3, backoff: float = 0.5, connect_timeout: int = 10,
            **params) -> psycopg.Connection:
    """Open an autocommit connection, retrying transient failures with exponential backoff."""
    try:
        merged = pg_conninfo.conninfo_to_dict(conninfo, **params)
    except psycopg.ProgrammingError:
        raise ConnectionFailedError("The connection string is malformed",
                                    remedy="use postgresql://user@host:port/database or key=value pairs") from None
    password = merged.get("password") or ""
    params.setdefault("connect_timeout", connect_timeout)
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("prepare_threshold", None)  # no server-side prepared statements: safe through PgBouncer
    last: Optional[Exception] = None
    for attempt in range(retries + 1):
        try:
            return psycopg.connect(conninfo, autocommit=True, **params)
        except psycopg.OperationalError as exc:
            last = exc
            if _server_answered(merged):
                break  # the server refused us (credentials, database, permissions): retrying cannot help
            if attempt < retries:
                time.sleep(backoff * (2 ** attempt))
    message = scrub(str(last).strip(), [password])
    raise ConnectionFailedError(
        f"Cannot connect to PostgreSQL: {message}",
        remedy="check host, port, database, user and password (the connection argument, the postgresql:* stack "
               "config, or --dsn), and that the server is running and reachable")


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach PostgreSQL, with the defaults libpq users expect (each default lives here, once).

    Resource properties use these names (``username``, as pulumi-postgresql's config does); the password stays a
    secret wherever the caller keeps it."""

    host: str = "localhost"
    port: int = 5432
    username: str = "postgres"
    password: Optional[str] = None
    database: str = "postgres"
    sslmode: str = "prefer"
    sslrootcert: Optional[str] = None   # the CA file for sslmode verify-ca / verify-full

    @classmethod
    def names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> "ConnectionSettings":
        """From properties; a missing or empty field takes its default."""
        values = {name: props[name] for name in cls.names() if props.get(name) not in (None, "")}
        if "port" in values:
            values["port"] = int(values["port"])
        return cls(**values)

    def to_props(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """A readable key: user@host:port/database (never the password)."""
        return f"{self.username}@{self.host}:{self.port}/{self.database}"

    def connect(self, retries: int = 3) -> psycopg.Connection:
        return connect(retries=retries, host=self.host, port=self.port, user=self.username,
                       password=self.password or None, dbname=self.database, sslmode=self.sslmode,
                       **({"sslrootcert": self.sslrootcert} if self.sslrootcert else {}))


def rollback(conn: psycopg.Connection) -> None:
    """End an open transaction, if any, ignoring errors (the connection may be failing already)."""
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            pass


def pooler(conn: psycopg.Connection, settings: Settings) -> str:
    """Why this connection looks like a transaction-pooling endpoint ('' when it does not).

    Beyond pgdbm's host-name hints, compare the address this client uses with the address the server sees for
    it: a pooler or proxy in between shows up as a different peer. pool_mode declares the endpoint instead."""
    if settings.pool_mode == "session":
        return ""
    if settings.pool_mode == "transaction":
        return "pool mode 'transaction' was declared"
    host, port = (conn.info.host or "").lower(), conn.info.port
    if any(hint in host for hint in POOLER_HOST_HINTS) or port == POOLER_PORT:
        return f"host {host} port {port} looks like a pooler"
    seen = conn.execute("SELECT host(client_addr), client_port FROM pg_stat_activity "
                        "WHERE pid = pg_backend_pid()").fetchone()
    try:
        sock = socket.socket(fileno=socket.dup(conn.pgconn.socket))
        try:
            local = sock.getsockname()
        finally:
            sock.close()
    except OSError:
        return ""
    if isinstance(local, tuple):  # TCP: the server must see this very address and port
        mine = (local[0].removeprefix("::ffff:"), local[1])
        theirs = ((seen[0] or "").removeprefix("::ffff:"), seen[1]) if seen else None
        if theirs != mine:
            peer = f"{theirs[0] or 'a Unix socket'}:{theirs[1]}" if theirs and theirs[1] else "a Unix socket"
            return f"this client is {mine[0]}:{mine[1]} but the server sees {peer}: a pooler or proxy is in between"
    elif seen and seen[0]:  # a Unix socket here, TCP at the server
        return f"this client uses a Unix socket but the server sees {seen[0]}:{seen[1]}"
    return ""
