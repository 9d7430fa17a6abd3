"""The embedded PostgreSQL manager: reuse, a stale pid file, a port taken by another program."""
import socket

import psycopg

from tools.pgserver import HOST, Server


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
