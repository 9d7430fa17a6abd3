"""The db tier's fixtures (the shared ones are in tests/conftest.py)."""
import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings
from tests.helpers import write

TABLES = {"001_tables.sql": (
    "CREATE TABLE {{tables.parent}} (id int PRIMARY KEY);\n"
    "CREATE TABLE {{tables.t}} (id bigint PRIMARY KEY, a text, b int, c int, d text, e numeric);\n")}
ROWS = ("INSERT INTO app.parent VALUES (1), (2);"
        "INSERT INTO app.t VALUES (1, 'x', 1, 1, '10', 1.5), (2, 'x', 2, 2, '20', 2), (3, 'y', -3, 7, 'abc', 3),"
        " (4, NULL, NULL, NULL, NULL, NULL), (5, NULL, 5, 1, '9999999999', 5), (6, 'zzzz', 6, 9, '6', 6);"
        "ANALYZE app.t")


@pytest.fixture
def live(db, tmp_path):
    """app.t (6 rows) and app.parent (ids 1, 2), made by an applied 001; returns the migrations folder."""
    folder = write(tmp_path / "m", TABLES)
    db.sql("CREATE SCHEMA app")
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        migrate.apply(conn, Settings(folder, schema="app"))
    db.sql(ROWS)
    return folder
