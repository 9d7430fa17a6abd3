"""PgBouncer (Debian's package) in front of the embedded PostgreSQL, for the pooler tests.

Transaction pooling by default, SCRAM end to end: the auth file holds the
server's SCRAM verifier (never the password), and PgBouncer passes the
client's SCRAM proof through to the server.  As root it runs as the same
system user as the server (PgBouncer refuses to run as root).

    python -m tools.pgbouncer start [--mode transaction|session]   # prints the port
    python -m tools.pgbouncer stop
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import psycopg

from tools.pgserver import HOST, SUPERUSER, SYSTEM_USER, Server, _free_port

DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".state" / "pgbouncer"
INSTALL_HINT = "install it: apt-get install -y pgbouncer (make test does this)"


class BouncerError(RuntimeError):
    pass


@dataclass
class Bouncer:
    root: Path
    server: Server
    mode: str = "transaction"
    port: int = 0

    @property
    def pid_file(self) -> Path:
        return self.root / "pgbouncer.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "pgbouncer.log"

    def dsn(self, database: str = "postgres", user: str = SUPERUSER, password: Optional[str] = None) -> str:
        pw = self.server.password if password is None else password
        return f"host={HOST} port={self.port} user={user} password={pw} dbname={database} sslmode=disable"

    def _write_config(self) -> Path:
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            rows = conn.execute("SELECT rolname, rolpassword FROM pg_authid "
                                "WHERE rolcanlogin AND rolpassword LIKE 'SCRAM-SHA-256$%'").fetchall()
        users = "".join(f'"{name}" "{verifier}"\n' for name, verifier in rows)
        (self.root / "userlist.txt").write_text(users)
        config = self.root / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={HOST} port={self.server.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {HOST}\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {self.root / 'userlist.txt'}\n"
            f"pool_mode = {self.mode}\nmax_client_conn = 500\ndefault_pool_size = 20\n"
            f"logfile = {self.log_file}\npidfile = {self.pid_file}\n"
            "ignore_startup_parameters = extra_float_digits,options\n")
        return config

    def start(self) -> "Bouncer":
        binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
        if not binary:
            raise BouncerError(f"pgbouncer is not installed: {INSTALL_HINT}")
        self.stop()
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        config = self._write_config()
        kwargs = {}
        if os.geteuid() == 0:
            import pwd
            entry = pwd.getpwnam(SYSTEM_USER)
            for path in self.root.iterdir():
                os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            kwargs.update(user=SYSTEM_USER, group=entry.pw_gid, extra_groups=[])
        subprocess.run([binary, "-d", str(config)], check=True, capture_output=True, text=True, cwd="/", **kwargs)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        raise BouncerError(f"pgbouncer did not start on port {self.port}; its log:\n{log}")

    def stop(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pgbouncer")
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--mode", choices=["transaction", "session"], default="transaction")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--pg-dir", type=Path, default=None, help="the embedded server's folder (default .state/pg)")
    args = parser.parse_args(argv)
    from tools.pgserver import DEFAULT_DIR as PG_DIR
    bouncer = Bouncer(args.dir.resolve(), Server((args.pg_dir or PG_DIR).resolve()), args.mode)
    if args.command == "stop":
        bouncer.stop()
        return 0
    try:
        bouncer.start()
    except BouncerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(bouncer.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
