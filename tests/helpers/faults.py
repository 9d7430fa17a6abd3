"""Helpers for the fault tests: a migration that sleeps on demand, and waiting for it to be running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Optional

import psycopg

from tests.helpers import ROOT

# A statement that sleeps as long as public.slow_control says (0 when the row is gone), so that a first run can be
# killed in the middle and the next run of the very same file is quick.
SLOW = "SELECT pg_sleep(coalesce((SELECT seconds FROM public.slow_control), 0));\n"


def make_slow(dsn: str, seconds: float) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.slow_control (seconds float)")
        conn.execute("DELETE FROM public.slow_control")
        if seconds:
            conn.execute("INSERT INTO public.slow_control VALUES (%s)", (seconds,))


def sleeping_backend(dsn: str, timeout: float = 60.0, proc: Optional[subprocess.Popen] = None) -> int:
    """Wait until a backend is inside the slow statement; returns its pid."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                               "AND query LIKE '%slow_control%' AND pid <> pg_backend_pid()").fetchone()
            if row:
                return row[0]
            if proc is not None and proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"the applier exited ({proc.returncode}) before the slow statement:\n{out}\n{err}")
            time.sleep(0.1)
    raise AssertionError("no backend reached the slow statement")


def backend_gone(dsn: str, pid: int, timeout: float = 15.0) -> float:
    """Seconds until backend ``pid`` is gone (its transaction rolled back, its locks released)."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() - started < timeout:
            if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                return time.monotonic() - started
            time.sleep(0.1)
    raise AssertionError(f"backend {pid} still there after {timeout}s")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (pulumi, its language host and plugins)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def cli(*args: str, dsn: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llmemory_db.migrate", *args, "--dsn", dsn], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)


def cli_run(*args: str, dsn: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmemory_db.migrate", *args, "--dsn", dsn], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def wait_for_build(dsn: str, proc: Optional[subprocess.Popen] = None, timeout: float = 60.0,
                   phase: str = "building index") -> int:
    """Wait until a CREATE INDEX CONCURRENTLY is in ``phase``; returns its backend pid."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT pid FROM pg_stat_progress_create_index WHERE phase LIKE %s",
                               (phase + "%",)).fetchone()
            if row:
                return row[0]
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the applier exited ({proc.returncode}) first:\n{proc.communicate()}")
            time.sleep(0.02)
    raise AssertionError(f"no index build reached {phase!r}")

