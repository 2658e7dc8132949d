"""The Alembic migrations produce exactly the schema tables.py declares."""

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from trove_api.stores.db import Database
from trove_api.stores.tables import metadata


def test_migrations_match_the_table_definitions(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'schema.db'}")
    db.migrate()
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        db.dispose()
    assert diff == []


def test_migrating_twice_is_a_no_op(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'twice.db'}")
    try:
        db.migrate()
        db.migrate()
    finally:
        db.dispose()
