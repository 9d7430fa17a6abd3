"""`make example-yaml`: deploy examples/yaml-consumer (a Pulumi YAML program using the llmemory-db package) onto the
embedded dev server: `python -m tools.example_yaml up|preview|destroy`.

Its `dev` stack is set up the way tools/stack.py sets up the project's own dev stack (same server, postgresql:*
config, passphrase), with a database of its own (`llmemory_yaml`: the real llmemory release's schema `llmemory` must
not meet the dev stack's rendering of it) and the role llmemory's application connects as.
"""
from __future__ import annotations

import argparse
import sys
import time

from tools import stack as stacks

EXAMPLE = stacks.ROOT / "examples" / "yaml-consumer"
DATABASE = "llmemory_yaml"
APP_ROLE = "llmemory_yaml_app"


def ensure_role(role: str) -> None:
    """The runtime role, created on the embedded server if missing (LOGIN, nothing else)."""
    import psycopg

    from tools.pgserver import Server

    with psycopg.connect(Server(stacks.STATE / "pg").start().dsn(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            stacks.log(f"creating role {role}")
            conn.execute(f'CREATE ROLE "{role}" LOGIN')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.example_yaml")
    parser.add_argument("command", choices=["up", "preview", "destroy"])
    parser.add_argument("--stack", default="dev")
    args = parser.parse_args(argv)
    started = time.monotonic()
    stack = stacks.open_stack(args.stack, EXAMPLE)
    if args.stack == "dev":
        stacks.configure_embedded(stack, DATABASE, {"llmemory-yaml:runtimeRoles": [APP_ROLE]})
        ensure_role(APP_ROLE)
    if args.command == "up":
        code = stacks.run(lambda: stack.up(on_output=stacks.echo))
    elif args.command == "preview":
        code = stacks.run(lambda: stack.preview(diff=True, on_output=stacks.echo))
    else:
        code = stacks.run(lambda: stack.destroy(on_output=stacks.echo))
    if code == 0:
        stacks.log(f"{args.command} of examples/yaml-consumer ({args.stack}) done in "
                   f"{time.monotonic() - started:.1f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
