"""Replicas starting together: migrations run once, one first workspace, namespace creation races."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
from alembic.script import ScriptDirectory
from trove_sdk import TroveClient

from tests.support.postgres import PostgresServer, dsn_of
from tests.support.replicas import Replicas
from trove_api.stores.db import MIGRATIONS_DIR, Database


def _head() -> str:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def test_concurrent_migrations_on_a_fresh_database_all_succeed(postgres: PostgresServer) -> None:
    url = postgres.create_database("migrate")
    databases = [Database(url) for _ in range(4)]  # four engines: four "replicas"
    start = threading.Barrier(len(databases))

    def migrate(db: Database) -> None:
        start.wait()
        db.migrate()

    try:
        with ThreadPoolExecutor(len(databases)) as pool:
            for future in [pool.submit(migrate, db) for db in databases]:
                future.result()  # none failed (without the lock: duplicate tables, aborted DDL)
    finally:
        for db in databases:
            db.dispose()
    with psycopg.connect(dsn_of(url)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(_head(),)]


def test_replicas_started_together_share_one_schema_and_one_workspace(replicas: Replicas) -> None:
    with psycopg.connect(dsn_of(replicas.database_url)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(_head(),)]
        # Each replica found the database empty at start; only one bootstrapped it.
        assert conn.execute("SELECT count(*) FROM workspaces").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (2,)
    for replica in replicas.replicas:
        with TroveClient(
            api_key=replicas.workspace_key, namespace="boot", base_url=replica.base_url
        ) as trove:
            assert trove.exec("echo ok").strip() == "ok"


def test_concurrent_first_writes_to_one_namespace_on_both_replicas(replicas: Replicas) -> None:
    namespace = "race-" + secrets.token_hex(4)
    rounds = 12
    start = threading.Barrier(rounds)

    def first_write(i: int) -> str:
        replica = replicas[i % len(replicas)]
        with TroveClient(
            api_key=replicas.workspace_key, namespace=namespace, base_url=replica.base_url
        ) as trove:
            start.wait()
            trove.write(f"workspace/w{i}.txt", str(i))
            return trove.read_text(f"workspace/w{i}.txt")

    with ThreadPoolExecutor(rounds) as pool:
        assert list(pool.map(first_write, range(rounds))) == [str(i) for i in range(rounds)]
    with psycopg.connect(dsn_of(replicas.database_url)) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM namespaces WHERE workspace_id = %s AND name = %s",
            (replicas.workspace_id, namespace),
        ).fetchone()
        created = conn.execute(
            "SELECT count(*) FROM events WHERE namespace = %s AND type = 'namespace.created'",
            (namespace,),
        ).fetchone()
    assert rows == (1,)
    assert created == (1,)
    # Both replicas see every file (one namespace, one directory).
    for replica in replicas.replicas:
        with TroveClient(
            api_key=replicas.workspace_key, namespace=namespace, base_url=replica.base_url
        ) as trove:
            listed = trove.exec("ls workspace | sort").split()
            assert listed == sorted(f"w{i}.txt" for i in range(rounds))
