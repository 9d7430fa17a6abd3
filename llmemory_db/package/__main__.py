"""``python -m llmemory_db.package <engine address>``: the plugin process (started by the launcher in plugin/)."""
import sys

try:
    from .server import main
except ImportError as exc:  # a Python without llmemory-db's requirements: one line, no traceback
    sys.stderr.write(
        f"pulumi-resource-llmemory-db: {sys.executable} cannot import {exc.name or exc}: install llmemory-db's "
        "requirements into its virtualenv (make venv in the repository, or pip install -r requirements.txt) or "
        "point LLMEMORY_DB_PYTHON at a Python that has them\n")
    sys.exit(1)

main()
