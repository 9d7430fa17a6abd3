"""The start-up role: the role an application's pgdbm runs its start-up check as (llmemory 0.5 always does).

pgdbm checks its history on every start with ``CREATE TABLE IF NOT EXISTS <schema>.schema_migrations`` and
``CREATE INDEX IF NOT EXISTS`` on it. PostgreSQL checks CREATE on the schema and ownership of the table before it
looks whether they exist, so even with nothing to do that role must own the history table and may create in the
schema. This module gives the start-up role exactly that, and (``startup_guard``) installs a guard that lets it
run those no-op statements and nothing else:

- an event trigger refuses any DDL of that role that would create, change or drop an object (a no-op
  ``IF NOT EXISTS`` creates nothing, so it passes), GRANT/REVOKE included;
- a trigger on the history table refuses that role's INSERT/UPDATE/DELETE/TRUNCATE: migrations are applied by
  the migration role (this component), never by the application.

Event triggers need a superuser (or a managed service's admin role). Without one the error gives the SQL for an
administrator to run once.
"""
from __future__ import annotations

import hashlib
from typing import List

import psycopg
from psycopg import sql

from .errors import StartupRoleError
from .settings import Settings

GUARD_PREFIX = "llmemory_db_guard"  # functions named llmemory_db_* are the engine's (not in the drift fingerprint)


def _name(kind: str, role: str) -> str:
    """A name per guarded role within 63 characters."""
    name = f"{GUARD_PREFIX}_{kind}_{role}"
    return name if len(name) <= 63 else f"{GUARD_PREFIX}_{kind}_{hashlib.sha256(role.encode()).hexdigest()[:16]}"


def guard_sql(settings: Settings) -> List[sql.Composed]:
    """The statements that install the guard for ``settings.startup_role`` (idempotent)."""
    role = settings.startup_role
    schema, table = settings.history_parts
    ddl_function = sql.Identifier(schema, _name("ddl", role))
    history_function = sql.Identifier(schema, _name("history", role))
    role_literal = sql.Literal(role)
    statements = [
        sql.SQL("""CREATE OR REPLACE FUNCTION {fn}() RETURNS event_trigger LANGUAGE plpgsql AS $guard$
DECLARE r record;
BEGIN
  IF current_user <> {role} THEN RETURN; END IF;
  IF TG_EVENT = 'sql_drop' THEN
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
      RAISE EXCEPTION 'llmemory-db guard: role % may not drop % %', current_user, r.object_type, r.object_identity
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'schema changes are applied by the migration role (pulumi up), not by the application';
    END LOOP;
  ELSE
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
      RAISE EXCEPTION 'llmemory-db guard: role % may not change the schema (% %)', current_user, r.command_tag,
        coalesce(r.object_identity, '')
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'schema changes are applied by the migration role (pulumi up), not by the application';
    END LOOP;
  END IF;
END
$guard$""").format(fn=ddl_function, role=role_literal),
        sql.SQL("""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $guard$
BEGIN
  IF current_user = {role} THEN
    RAISE EXCEPTION 'llmemory-db guard: role % may not write the migration history %.%', current_user,
      TG_TABLE_SCHEMA, TG_TABLE_NAME
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'migrations are applied by the migration role (pulumi up), not by the application';
  END IF;
  RETURN coalesce(NEW, OLD);
END
$guard$""").format(fn=history_function, role=role_literal),
        sql.SQL("CREATE OR REPLACE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW "
                "EXECUTE FUNCTION {}()").format(sql.Identifier(_name("rows", role)[:63]), settings.history_ident,
                                                history_function),
        sql.SQL("CREATE OR REPLACE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT "
                "EXECUTE FUNCTION {}()").format(sql.Identifier(_name("truncate", role)[:63]),
                                                settings.history_ident, history_function),
    ]
    for event, suffix in (("ddl_command_end", "ddl"), ("sql_drop", "drop")):
        trigger = _name(suffix + "_event", role)
        statements.append(sql.SQL(
            "DO $guard$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = {name}) THEN "
            "CREATE EVENT TRIGGER {trigger} ON {event} EXECUTE FUNCTION {fn}(); END IF; END $guard$").format(
            name=sql.Literal(trigger), trigger=sql.Identifier(trigger), event=sql.SQL(event), fn=ddl_function))
    return statements


def ensure_startup_role(conn: psycopg.Connection, settings: Settings) -> List[str]:
    """Make ``settings.startup_role`` the owner of the history table (keeping the migration role's rights on it)
    and install the guard; returns what changed, in words. Idempotent; a no-op without a start-up role."""
    role = settings.startup_role
    if not role:
        return []
    done: List[str] = []
    history = settings.history_ident
    owner, me, sequence = conn.execute(
        "SELECT pg_get_userbyid(relowner), current_user, pg_get_serial_sequence(%s, 'id') FROM pg_class "
        "WHERE oid = to_regclass(%s)", (history.as_string(conn),) * 2).fetchone()
    try:
        conn.execute("BEGIN")
        if owner != role:
            # the owner's rights move to the new owner: grant the migration role what it needs back
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(history, sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                history, sql.Identifier(me)))
            if sequence:  # a name quoted by PostgreSQL itself
                conn.execute(sql.SQL("GRANT USAGE, SELECT, UPDATE ON SEQUENCE {} TO {}").format(
                    sql.SQL(sequence), sql.Identifier(me)))
            done.append(f"{settings.history_display} is owned by {role} (pgdbm's start-up check needs that)")
        if settings.startup_guard:
            for statement in guard_sql(settings):
                conn.execute(statement)
        conn.execute("COMMIT")
    except psycopg.errors.InsufficientPrivilege as exc:
        conn.execute("ROLLBACK")
        script = ";\n".join(s.as_string(conn) for s in guard_sql(settings)) + ";"
        raise StartupRoleError(
            f"Cannot set up the start-up role {role}: {exc.diag.message_primary} (the history table must belong to "
            f"{role}, and the guard needs event triggers, which only a superuser or a managed service's admin "
            "role may create); nothing of it was changed",
            remedy=f"run as the migration role a role that is a member of {role} and may create event triggers, "
                   f"or have an administrator run once: ALTER TABLE {settings.history_display} OWNER TO {role}; "
                   f"GRANT SELECT, INSERT, UPDATE, DELETE ON {settings.history_display} TO {me}; and the guard:\n"
                   + script) from None
    except BaseException:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        raise
    return done
