"""CPU accounting for the benchmarks: on a machine shared with other work, wall times move with the load while
CPU-seconds spent by the server and by the client do much less, so a side-by-side run reports both.

- :func:`server_cpu`: every process of an embedded server (the postmaster, its live children, and the children
  it has reaped: backends that have exited are in its ``cutime``/``cstime``), in seconds;
- :func:`children_cpu`: this process's reaped children and their reaped descendants (``RUSAGE_CHILDREN``), in
  seconds: a measured command's own CPU (Pulumi CLI, language host, provider; psql; the engine's CLI).
"""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path

_HZ = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int):
    """The /proc stat fields of each child of ``pid`` (processes that exit meanwhile are skipped)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                child = _stat(int(entry))
            except OSError:
                continue
            if int(child[1]) == pid:
                yield child


def _zombies(pid: int) -> bool:
    return any(child[0] == "Z" for child in _children(pid))


def server_cpu(server, settle: float = 3.0) -> float:
    """CPU seconds used so far by every process of ``server`` (a tools.pgserver.Server).

    A backend that has exited counts once the postmaster has reaped it (a zombie's own times read as nothing): a
    reading right after a client disconnects waits, up to ``settle`` seconds, until no child is a zombie."""
    pid = server.running_pid()
    if not pid:
        return 0.0
    deadline = time.monotonic() + settle
    while _zombies(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    fields = _stat(pid)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    for child in _children(pid):  # its live children: their own time (reaped ones are in cutime/cstime)
        total += int(child[11]) + int(child[12])
    return total / _HZ


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
