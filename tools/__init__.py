"""Tools that drive the real parts: the embedded PostgreSQL, the Pulumi CLI (stacks, SDKs, the YAML example).

Importing the package undoes one inherited setting, for every entry point at once (``make up``, the tests, the
benchmarks): a shell starts a background job (``make test &`` in a script, ``nohup``) with SIGINT ignored, every
process it starts inherits that, and a Pulumi dynamic provider (a Python process) that ignores SIGINT ignores the
engine's request to exit at the end of every ``pulumi up`` / ``preview``: the engine waits about 5 s before it
kills it (measured: a no-op ``pulumi up`` 1.3 s in the foreground, 6.3 s in a background job).
"""
import signal as _signal
import threading as _threading

if _threading.current_thread() is _threading.main_thread() and \
        _signal.getsignal(_signal.SIGINT) is _signal.SIG_IGN:
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)  # children start with the default again
