"""The processes that serve our resources (Pulumi's dynamic-provider host, the package's plugin): two duties the
Pulumi SDK leaves to us.

* **Expected failures read as Pulumi errors.** The Python dynamic-provider host reports any exception raised by a
  provider method with ``context.abort(UNKNOWN, traceback.format_exc())``: a refusal, drift or a wrong password
  would reach the user behind a Python traceback. :func:`clean_errors` replaces the host's ``traceback`` name with
  a proxy whose ``format_exc`` gives only the message for a :class:`ProviderError` (raised for the engine's typed
  errors) and the real traceback for anything else (a bug keeps its traceback). Nothing else of the host changes.
* **One way to talk.** :class:`Adapter`, the base of every provider here: events printed once (or handed to the
  package's sink) with settings named in the caller's terms, typed errors into ProviderError, the live connection
  of a preview, and this run's ``postgresql:`` config.
* **Exit with the engine.** A SIGKILLed ``pulumi up`` leaves its plugins running; :func:`watch_engine` ends this
  process when the engine's address stops answering, so a migration in progress rolls back.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional

from pulumi.dynamic import ConfigureRequest, ResourceProvider
from pulumi.runtime.rpc import UNKNOWN

from .migrate.connection import ConnectionSettings
from .migrate.errors import ConnectionFailedError, MigrationError
from .migrate.events import Event
from .migrate.spelling import spell
from .props import CONNECTION, local

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


class Adapter(ResourceProvider):
    """What every provider of this package shares (see the module)."""

    def say(self, where: str, event: Event, props: Dict[str, Any]) -> None:
        """Print an event (or give it to the package's sink), its settings named as the caller of ``props`` does."""
        event = dataclasses.replace(event, text=spell(f"{where}: {event.text}", props.get("spelling") or "python"))
        sink = getattr(local, "sink", None)
        if sink is not None:
            return sink(event)
        printed = self.__dict__.setdefault("_printed", set())  # once per process (a preview may diff twice)
        if str(event) not in printed:
            printed.add(str(event))
            print(str(event), flush=True)

    def sink(self, where: str, props: Dict[str, Any]) -> Callable[[Event], None]:
        return lambda event: self.say(where, event, props)

    def configure(self, req: ConfigureRequest) -> None:
        """The stack's postgresql: config of this run (the host calls this before any method)."""
        self.__dict__["_config"] = {key: req.config.get(f"postgresql:{key}") for key in CONNECTION}

    def current(self, props: Dict[str, Any]) -> Dict[str, Any]:
        """``props`` (recorded by the last update), with the connection fields the program left to the stack's
        config taken from this run's config: a refresh or destroy after a password rotation connects."""
        config = self.__dict__.get("_config") or {}
        return dict(props, **{key: config[key] for key in props.get("from_config") or () if config.get(key)})

    @staticmethod
    def fail(error: MigrationError, props: Dict[str, Any]) -> ProviderError:
        """The engine's message, with the settings named as the caller names them."""
        return ProviderError(error.render(props.get("spelling") or "python"))

    @contextlib.contextmanager
    def engine(self, props: Dict[str, Any]):
        """Run engine code: its typed errors become ProviderErrors (shown without a traceback)."""
        try:
            yield
        except MigrationError as exc:
            raise self.fail(exc, props) from None

    @staticmethod
    def live(props: Dict[str, Any]):
        """A connection for what only the live database can tell at preview, or None when its settings are not
        known yet (computed by another resource) or it does not answer (not created yet)."""
        if any(props.get(key) == UNKNOWN for key in CONNECTION):
            return None
        try:
            return ConnectionSettings.from_props(props).connect(retries=0)
        except ConnectionFailedError:
            return None
