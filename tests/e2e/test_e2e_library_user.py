"""The component in someone else's stack (issue 23), with the real CLI: this repository's wheel in a fresh venv
with no path to the checkout, and a project outside the repository made of the README's own example
("Using the component in your own stack"): llmemory's files from its installed package plus a schema of the
project's own migrations sharing the `vector` extension, and a role created by the stack and granted by both.

One deployment for the module; the tests run in file order on it and each leaves it as it found it. The checks
that issue 23 named (tracebacks, remedies in the caller's terms, drift stability) are asserted as fixed."""
import os
import subprocess
import uuid

import psycopg
import pytest
from pulumi import automation as auto

from tests.helpers import db as dbs
from tests.helpers import library_user as lu

pytestmark = pytest.mark.e2e

APP_PASSWORD = "library-user-app-pw"
NOTES_FILE = "migrations/001_notes.sql"


class Output:
    """Every line the CLI printed for one operation, and the error if it failed."""

    def __init__(self) -> None:
        self.lines, self.error = [], None

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" + str(self.error) if self.error else "")


def run(operation, *args, **kwargs) -> Output:
    """``operation`` (stack.up, stack.preview, ...) with its output captured; a CommandError is kept, not raised."""
    out = Output()
    try:
        out.result = operation(*args, on_output=out.lines.append, **kwargs)
    except auto.errors.CommandError as exc:
        out.error = exc
    if os.environ.get("LIBRARY_USER_LOG"):  # every CLI run's output, appended to that file (debugging)
        with open(os.environ["LIBRARY_USER_LOG"], "a") as log:
            log.write(f"\n\n######## {operation.__name__} {kwargs}\n{out.text}")
    return out


def changes(out: Output) -> dict:
    """Non-'same' operation counts of a preview."""
    return {str(op): n for op, n in out.result.change_summary.items() if str(op) not in ("same", "OpType.SAME") and n}


@pytest.fixture(scope="module")
def user(pg_server, tmp_path_factory):
    example = lu.readme_example()
    venv = lu.venv(example)
    root = tmp_path_factory.mktemp("library-user")
    project = lu.project(root / "my-infra", venv, example)
    database = dbs.create(pg_server, prefix="lu")
    role = f"lu_app_{uuid.uuid4().hex[:8]}"
    stack = lu.stack(project, venv, root / "backend", pg_server, database.name,
                     {"appRole": role, "appPassword": APP_PASSWORD}, example)

    class User:
        pass

    user = User()
    user.example, user.venv, user.project, user.db, user.role, user.stack = example, venv, project, database, role, stack
    user.deployed = run(stack.up)
    yield user
    try:
        if not getattr(user, "destroyed", False):
            run(stack.destroy)
    finally:
        database.drop()
        database.server_sql(f'DROP ROLE IF EXISTS "{role}"')


def history(user, table, module):
    return user.db.history(table, module, "filename")


def test_the_readme_project_deploys_from_the_wheel_alone(user):
    assert user.deployed.error is None, user.deployed.text
    outputs = user.deployed.result.outputs
    assert outputs["llmemory_version"].value == "llmemory 0.5.0"
    assert outputs["llmemory_applied"].value == ["001_complete_schema.sql", "002_upsert_identity_contract.sql"]
    assert outputs["notes_applied"].value == ["001_notes.sql"]
    assert [r[0] for r in history(user, "llmemory.schema_migrations", "llmemory")] == outputs["llmemory_applied"].value
    assert history(user, "notes.schema_migrations", "notes") == [("001_notes.sql",)]
    assert user.db.sql("SELECT extname FROM pg_extension WHERE extname IN ('vector', 'pgcrypto') ORDER BY 1") == [
        ("pgcrypto",), ("vector",)]
    # the role the stack created reads and writes both schemas' rows, and may not change them
    with user.db.connect(user=user.role, password=APP_PASSWORD) as conn:
        conn.execute("INSERT INTO notes.notes (body, embedding) VALUES ('hello', '[1,2,3]')")
        conn.execute("INSERT INTO llmemory.documents (owner_id, id_at_origin, document_type, document_name) "
                     "VALUES ('o', 'x', 'text', 'n')")
        assert conn.execute("SELECT count(*) FROM notes.notes").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE notes.intruder (id int)")
    # what ran was the wheel in the user's venv: no checkout on the path, no `components` package, squawk installed
    probe = ("import sys, importlib.util, llmemory_db; print(llmemory_db.__file__); "
             "print(importlib.util.find_spec('components')); print('\\n'.join(sys.path))")
    seen = subprocess.run([str(user.project / "venv" / "bin" / "python"), "-c", probe], cwd=user.project,
                          env=lu.clean_env(user.venv), capture_output=True, text=True, check=True).stdout.splitlines()
    assert "site-packages/llmemory_db/__init__.py" in seen[0] and seen[1] == "None"
    assert not [p for p in seen[2:] if p and str(lu.ROOT) in p and str(user.venv) not in p], seen
    assert (user.venv / "bin" / "squawk").exists()


def test_a_second_preview_is_clean(user):
    out = run(user.stack.preview)
    assert out.error is None, out.text
    assert changes(out) == {}, out.text


@pytest.fixture
def edited(user):
    """The project's applied migration edited (a column added to the table text); restored afterwards."""
    path = user.project / NOTES_FILE
    original = path.read_text()
    path.write_text(original.replace("body text NOT NULL,", "body text NOT NULL,\n    title text,"))
    yield user
    path.write_text(original)


def test_an_edited_applied_file_is_refused_at_preview(edited):
    before = history(edited, "notes.schema_migrations", "notes")
    out = run(edited.stack.preview)
    assert out.error is not None
    assert "001_notes.sql has been modified after being applied" in out.text
    assert history(edited, "notes.schema_migrations", "notes") == before
    assert edited.db.sql("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'notes' "
                         "AND column_name = 'title'") == [(0,)]


def test_the_edited_file_refusal_shows_no_traceback(edited):
    out = run(edited.stack.preview)
    assert "modified after being applied" in out.text
    assert "Traceback" not in out.text


@pytest.fixture
def column_added(user):
    """A column added by hand to llmemory's documents (drift); dropped afterwards, and the state refreshed."""
    user.db.sql("ALTER TABLE llmemory.documents ADD COLUMN added_by_hand int")
    yield user
    user.db.sql("ALTER TABLE llmemory.documents DROP COLUMN IF EXISTS added_by_hand")
    run(user.stack.refresh)


def test_drift_is_named_by_preview_refresh_and_stops_up(column_added):
    out = run(column_added.stack.preview, refresh=True)
    assert "column llmemory.documents.added_by_hand: added" in out.text, out.text
    out = run(column_added.stack.up, refresh=True)
    assert out.error is not None and "added_by_hand" in out.text


def test_the_drift_refusal_reads_in_the_callers_terms(column_added):
    out = run(column_added.stack.up, refresh=True)
    assert out.error is not None and "added_by_hand" in out.text
    assert "accept_schema_drift=True" in out.text
    assert "llmemory-db:accept" not in out.text and "config set llmemory-db" not in out.text
    assert "Traceback" not in out.text


def test_drift_round_trip_leaves_both_previews_clean(user):
    user.db.sql("ALTER TABLE llmemory.documents ADD COLUMN added_by_hand int")
    try:
        recorded = run(user.stack.refresh)  # the state records the drift
    finally:
        user.db.sql("ALTER TABLE llmemory.documents DROP COLUMN IF EXISTS added_by_hand")
    try:
        assert recorded.error is None and "added_by_hand" in recorded.text, recorded.text
        refreshed = run(user.stack.preview, refresh=True)
        assert refreshed.error is None and changes(refreshed) == {}, refreshed.text
        plain = run(user.stack.preview)
        assert plain.error is None and changes(plain) == {}, plain.text
        up = run(user.stack.up)
        assert up.error is None and "schema drift" not in up.text, up.text
        assert changes(run(user.stack.preview)) == {}
    finally:
        run(user.stack.refresh)


def test_a_wrong_password_fails_without_a_traceback(user):
    user.stack.set_config("postgresql:password", auto.ConfigValue("wrong-password", secret=True))
    try:
        out = run(user.stack.up)
    finally:
        user.stack.set_config("postgresql:password", auto.ConfigValue(user.db.server.password, secret=True))
        run(user.stack.up)  # the default provider in the state keeps the password of the last update (item 7)
    assert out.error is not None and "password authentication failed" in out.text
    assert "Traceback" not in out.text


def test_destroy_keeps_the_data_and_drops_the_role(user):
    out = run(user.stack.destroy)
    user.destroyed = True
    assert out.error is None, out.text
    assert user.db.tables("notes") == ["notes", "schema_migrations"]
    assert history(user, "llmemory.schema_migrations", "llmemory") != []
    assert user.db.sql("SELECT count(*) FROM pg_roles WHERE rolname = %s", user.role) == [(0,)]
