"""What a long statement is doing, while it runs: typed events, and a watch that reads the progress views.

Events go through the ``on_event`` callback the executor already has. An event (:class:`.events.Event`) is the line a
user reads (the CLI prints it to stderr, the Pulumi provider to the update's output) with ``kind``, ``file``,
``line`` and ``data`` for a caller that renders events itself.

:class:`ProgressWatch` reads, from a second connection, what the migration's backend is doing once a statement has
run for ``first`` seconds, then at most every ``every`` seconds: ``pg_stat_progress_create_index`` for an index
build (phase, blocks and tuples done, %), ``pg_stat_progress_cluster`` for a table rewrite (CLUSTER, VACUUM FULL),
the elapsed time and what it waits for otherwise. It is armed like :class:`watch.BlockerWatch` (a deadline in
the process's one scheduler thread; the shared watch connection opens only when a statement is slow), so that
arming one around every statement costs nothing measurable.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

import psycopg

from . import events, watch

EVERY = 10.0  # seconds between two progress events of one statement
FIRST = 5.0   # a statement gets its first progress event after this long
ENV_INTERVAL = "LLMEMORY_DB_PROGRESS_INTERVAL"  # seconds; sets both (for tests and impatient operators)


def Event(text: str, kind: str, file: Optional[str] = None, line: Optional[int] = None, **data) -> events.Event:
    """An event of a running statement (``kind``: progress, index-cleanup, index-resume, lock-handoff, lock-cancel):
    the line a user reads, and its facts in ``data``."""
    severity = "warning" if kind in ("lock-cancel", "index-busy") else "info"
    return events.Event(kind, text, severity, file, line, data)


def intervals() -> tuple:
    """(first, every) in seconds: the defaults, or ``$LLMEMORY_DB_PROGRESS_INTERVAL`` for both."""
    value = os.environ.get(ENV_INTERVAL, "").strip()
    if value:
        try:
            every = float(value)
            if every > 0:
                return min(FIRST, every), every
        except ValueError:
            pass
    return FIRST, EVERY


_QUERY = """
SELECT a.state, a.wait_event_type, a.wait_event,
       ci.command, ci.phase, ci.blocks_total, ci.blocks_done, ci.tuples_total, ci.tuples_done,
       ci.lockers_total, ci.lockers_done, nullif(ci.index_relid, 0)::regclass::text, ci.relid::regclass::text,
       cl.command, cl.phase, cl.heap_blks_total, cl.heap_blks_scanned, cl.heap_tuples_scanned,
       cl.heap_tuples_written, cl.relid::regclass::text
FROM pg_stat_activity a
LEFT JOIN pg_stat_progress_create_index ci ON ci.pid = a.pid
LEFT JOIN pg_stat_progress_cluster cl ON cl.pid = a.pid
WHERE a.pid = %s
"""


def _pct(done, total) -> Optional[float]:
    return 100.0 * done / total if done is not None and total else None


def _elapsed(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def describe(row: Optional[tuple], elapsed: float, named: bool = False) -> tuple:
    """(text, data) of one reading of the progress views (``row``: a row of ``_QUERY``, None when the backend is
    gone); ``named``: the line names the statement already (else the command and relation are said). A pure
    function, unit-tested."""
    data: dict = {"elapsed_s": round(elapsed, 1)}
    if row is None:
        return f"running for {_elapsed(elapsed)}", data
    (state, wait_type, wait, ci_command, ci_phase, blocks_total, blocks_done, tuples_total, tuples_done,
     lockers_total, lockers_done, index, table, cl_command, cl_phase, heap_total, heap_scanned, heap_tuples_scanned,
     heap_tuples_written, cl_table) = row
    if ci_command:
        pct = _pct(blocks_done, blocks_total)
        if pct is None:
            pct = _pct(tuples_done, tuples_total)
        data.update(command=ci_command, phase=ci_phase, index=index, table=table, blocks_done=blocks_done,
                    blocks_total=blocks_total, tuples_done=tuples_done, tuples_total=tuples_total,
                    percent=None if pct is None else round(pct, 1))
        parts = [] if named else [f"{ci_command}" + (f" {index}" if index else "") + (f" on {table}" if table else "")]
        parts.append(f"phase: {ci_phase}")
        if blocks_total:
            parts.append(f"blocks {blocks_done:,}/{blocks_total:,}")
        if tuples_total:
            parts.append(f"tuples {tuples_done:,}/{tuples_total:,}")
        if lockers_total:
            parts.append(f"waited for {lockers_done}/{lockers_total} transactions")
        if pct is not None:
            parts.append(f"{pct:.0f}%")
        parts.append(f"{_elapsed(elapsed)} elapsed")
        return ", ".join(parts), data
    if cl_command:
        pct = _pct(heap_scanned, heap_total)
        data.update(command=cl_command, phase=cl_phase, table=cl_table, heap_blocks_scanned=heap_scanned,
                    heap_blocks_total=heap_total, tuples_written=heap_tuples_written,
                    percent=None if pct is None else round(pct, 1))
        parts = [] if named else [f"{cl_command} {cl_table}"]
        parts.append(f"phase: {cl_phase}")
        if heap_total:
            parts.append(f"heap blocks {heap_scanned:,}/{heap_total:,}")
        parts.append(f"tuples written {heap_tuples_written or 0:,}")
        if pct is not None:
            parts.append(f"{pct:.0f}%")
        parts.append(f"{_elapsed(elapsed)} elapsed")
        return ", ".join(parts), data
    if state == "idle":  # between the polls for the module's lock (lockwait), before the file's transaction
        data.update(waiting_for="migration lock")
        return f"waiting for the module's migration lock (another applier), {_elapsed(elapsed)} elapsed", data
    text = f"running for {_elapsed(elapsed)}"
    if wait_type:
        data.update(wait_event_type=wait_type, wait_event=wait)
        text += f", waiting ({wait_type}: {wait})"
    return text, data


class ProgressWatch:
    """Progress events of one running statement (see the module's docstring). ``label``: what runs, e.g.
    ``002_idx.sql:3 CREATE INDEX CONCURRENTLY idx_big_t``."""

    def __init__(self, conn: psycopg.Connection, on_event: events.Sink, file: str,
                 line: Optional[int], label: str, first: Optional[float] = None,
                 every: Optional[float] = None, named: bool = True) -> None:
        default_first, default_every = intervals()
        self.pid, self.on_event, self.file, self.line, self.label = conn.info.backend_pid, on_event, file, line, label
        self.named = named
        self.delay = default_first if first is None else first  # read by the scheduler
        self.every = default_every if every is None else every
        self.params = watch.params_of(conn)
        self.started = time.monotonic()
        self.events = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        watch.SCHEDULER.arm(self)

    def _fire(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._watch, name="progress-watch", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        try:
            with watch.WATCH_CONNECTIONS.borrow(self.params) as shared:
                while not self._stop.is_set():
                    rows = shared.query(_QUERY, (self.pid,))
                    if self._stop.is_set():
                        break
                    text, data = describe(rows[0] if rows else None, time.monotonic() - self.started, self.named)
                    where = f"{self.file}:{self.line}" if self.line else self.file
                    self.on_event(Event(f"progress: {where} {self.label}: {text}", "progress", self.file,
                                        self.line, **data))
                    self.events += 1
                    self._stop.wait(self.every)
        except Exception:  # noqa: BLE001 - progress is a courtesy: the statement's own outcome is what counts
            pass

    def stop(self) -> "ProgressWatch":
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        return self


discard = events.ignore  # no one listens: nothing is watched


@contextmanager
def watching(conn: psycopg.Connection, on_event: Optional[events.Sink], file: str,
             line: Optional[int], label: str) -> Iterator[Optional[ProgressWatch]]:
    """``with watching(conn, on_event, file, line, label): conn.execute(...)``: progress events while it runs."""
    if on_event is None or on_event is discard:
        yield None
        return
    running = ProgressWatch(conn, on_event, file, line, label, named=line is not None)
    try:
        yield running
    finally:
        running.stop()


def label_of(text: str, limit: int = 60) -> str:
    """A statement's first words, for a progress line (its leading comments left out)."""
    lines = text.strip().splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    words = " ".join(" ".join(lines).split())
    return words if len(words) <= limit else words[: limit - 3] + "..."
