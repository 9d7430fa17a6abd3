"""The tools package undoes an ignored SIGINT inherited from a background job (see tools/__init__.py)."""
import signal
import subprocess
import sys

from tests.helpers import ROOT
PROBE = "import signal, tools, subprocess, sys; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler); " \
        "sys.stdout.flush(); subprocess.run([sys.executable, '-c', " \
        "'import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)'])"


def run_ignoring_sigint(code: str) -> list:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)).stdout
    return out.split()


def test_a_background_job_ignores_sigint_and_so_would_every_child():
    assert run_ignoring_sigint("import signal, subprocess, sys; sys.stdout.flush(); subprocess.run([sys.executable, "
                               "'-c', 'import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)'])") \
        == ["True"]


def test_importing_tools_gives_the_children_the_default_sigint_again():
    assert run_ignoring_sigint(PROBE) == ["True", "False"]
