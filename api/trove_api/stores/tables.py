"""SQLAlchemy table definitions: the metadata schema (migrations in ``migrations/`` create it)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", String(32), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(64), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),
    Column("scope", String(16), nullable=False),
    Column("namespace", String(128), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
    Index("ix_api_keys_workspace", "workspace_id"),
)

namespaces = Table(
    "namespaces",
    metadata,
    # The integer id also numbers the namespace's host uid in the local runtime.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("workspace_id", "name", name="uq_namespaces_workspace_name"),
)

events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("workspace_id", String(64), nullable=False),
    Column("namespace", String(128), nullable=True),
    Column("type", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("actor_key_id", String(64), nullable=True),
    Column("actor_key_name", String(200), nullable=True),
    Column("data", Text, nullable=False),
    Index("ix_events_workspace_created", "workspace_id", "created_at"),
)
