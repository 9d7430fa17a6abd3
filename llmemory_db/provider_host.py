"""The processes that serve our resources (Pulumi's dynamic-provider host, the package's plugin): two duties the
Pulumi SDK leaves to us.

* **Expected failures read as Pulumi errors.** The Python dynamic-provider host reports any exception raised by a
  provider method with ``context.abort(UNKNOWN, traceback.format_exc())``: a refusal, drift or a wrong password
  would reach the user behind a Python traceback. :func:`clean_errors` replaces the host's ``traceback`` name with
  a proxy whose ``format_exc`` gives only the message for a :class:`ProviderError` (raised for the engine's typed
  errors) and the real traceback for anything else (a bug keeps its traceback). Nothing else of the host changes.
* **Exit with the engine.** A SIGKILLed ``pulumi up`` leaves its plugins running; :func:`watch_engine` ends this
  process when the engine's address stops answering, so a migration in progress rolls back.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Optional

DYNAMIC_HOST = "pulumi.dynamic.__main__"


class ProviderError(Exception):
    """An expected failure of a provider method: its text is the whole message (what, where, remedy)."""


class _CleanTraceback:
    """The host's ``traceback`` module, but ``format_exc`` of a ProviderError is its message alone."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def format_exc(self, *args, **kwargs) -> str:
        error = sys.exc_info()[1]
        if isinstance(error, ProviderError):
            return str(error)
        return self._real.format_exc(*args, **kwargs)


def _in_dynamic_host() -> Optional[object]:
    main = sys.modules.get("__main__")
    return main if getattr(getattr(main, "__spec__", None), "name", "") == DYNAMIC_HOST else None


def clean_errors() -> bool:
    """In the dynamic-provider host: report ProviderErrors without a traceback (idempotent). Returns whether the
    host was found (a test, or the program itself, is not the host)."""
    host = _in_dynamic_host()
    real = getattr(host, "traceback", None)
    if host is None or real is None:
        return False
    if not isinstance(real, _CleanTraceback):
        host.traceback = _CleanTraceback(real)
    return True


_watching = threading.Lock()


def watch_engine(interval: float = 1.0, engine: Optional[str] = None) -> None:
    """Exit this provider process when the pulumi engine that started it is gone.

    The CLI starts plugins in process groups of their own, so a SIGKILLed ``pulumi up`` leaves the dynamic
    provider running (and Python's dynamic provider host never notices). Pulumi's Go plugins check the engine's
    health; this does the same for ours: the engine's address is the host's argument (or ``engine``: the
    package's plugin passes its own), and once it refuses connections the process exits, its connection closes,
    and the server rolls back a migration in progress (client_connection_check_interval): the database holds the
    whole migration or none of it."""
    if not _watching.acquire(blocking=False):
        return
    if engine is None:
        if _in_dynamic_host() is None or len(sys.argv) < 2 or ":" not in sys.argv[1]:
            _watching.release()
            return  # not the provider host (a test, the program itself)
        engine = sys.argv[1]
    host, _, port = engine.rpartition(":")

    def loop() -> None:
        misses = 0
        while True:
            time.sleep(interval)
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
                misses = 0
            except OSError:
                misses += 1
                if misses >= 2:
                    try:  # stderr was the engine's pipe: it may be closed too
                        print("the pulumi engine is gone: exiting (a migration in progress is rolled back)",
                              file=sys.stderr, flush=True)
                    finally:
                        os._exit(3)

    threading.Thread(target=loop, name="engine-watchdog", daemon=True).start()
