"""SQLAlchemy table definitions: the metadata schema (migrations in ``migrations/`` create it)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
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
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
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

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),  # JSON list of types, or ["*"]
    Column("namespace", String(128), nullable=True),
    Column("description", Text, nullable=True),
    # The signing secret must be readable to sign deliveries (like Stripe's endpoint secrets).
    Column("secret", String(128), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", String(32), nullable=False),
    Column("deleted_at", String(32), nullable=True),
    Column("last_delivery_at", String(32), nullable=True),
    Column("last_delivery_ok", Boolean, nullable=True),
    Column("last_delivery_status", Integer, nullable=True),
    Index("ix_webhooks_workspace", "workspace_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("webhook_id", String(64), ForeignKey("webhooks.id"), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("workspace_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),  # epoch seconds
    Column("claimed_until", Float, nullable=True),  # a dispatcher's lease (several replicas)
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_webhook", "webhook_id", "created_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("delivery_id", String(64), ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", String(32), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("response_excerpt", Text, nullable=True),
    Index("ix_attempts_delivery", "delivery_id"),
)

device_codes = Table(
    "device_codes",
    metadata,
    Column("device_code_digest", String(64), primary_key=True),
    Column("user_code", String(16), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # pending|approved|denied|expired|consumed
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("workspace_id", String(64), nullable=True),
    Column("client", String(128), nullable=True),
    # What the approver chose; the key itself is minted only by the poll that collects it
    # (only the CLI holds the device code), so no key ever waits here.
    Column("key_id", String(64), nullable=True),
    Column("key_name", String(200), nullable=True),
    Column("key_namespace", String(128), nullable=True),
    Column("approver_key_id", String(64), nullable=True),
    Column("approver_key_name", String(200), nullable=True),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("label", String(128), nullable=True),
    Column("kind", String(16), nullable=False),  # manual | auto
    Column("size_bytes", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("checksum", String(80), nullable=False),  # sha256:<hex> of the stored tarball
    Column("storage_key", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Index("ix_snapshots_namespace", "workspace_id", "namespace", "created_at"),
)

job_runs = Table(
    "job_runs",
    metadata,
    # One row per (job, period): the unique key makes "once per day" hold across restarts
    # and replicas.
    Column("job", String(64), primary_key=True),
    Column("run_key", String(64), primary_key=True),
    Column("started_at", String(32), nullable=False),
    Column("finished_at", String(32), nullable=True),
    Column("detail", Text, nullable=True),
)

intents = Table(
    "intents",
    metadata,
    # A change's event, written before the change: the row and the event it stands for end in
    # one transaction, and whatever a crash leaves here is resolved at the next start.
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),  # the process that made it (IntentLog.owner)
    Column("workspace_id", String(64), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor_key_id", String(64), nullable=True),
    Column("actor_key_name", String(200), nullable=True),
    Column("payload", Text, nullable=False),  # JSON: the event's data and the change's proof
    Column("created_at", Float, nullable=False),  # epoch seconds
    Index("ix_intents_owner", "owner"),
)

dashboard_signouts = Table(
    "dashboard_signouts",
    metadata,
    # A signed-out dashboard session's nonce, kept until the session would have expired: the
    # cookie is signed, so without this row a copy of it would outlive the sign-out.
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False),  # epoch seconds
    Index("ix_dashboard_signouts_expiry", "expires_at"),
)


e2b_sandboxes = Table(
    "e2b_sandboxes",
    metadata,
    # A namespace created through the E2B-compatible API (api/trove_api/e2b): only these are
    # paused or killed when their E2B timeout expires, never a namespace trove-sdk made.
    Column("sandbox_id", String(128), primary_key=True),  # = the namespace's name
    Column("workspace_id", String(64), nullable=False),
    Column("template_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),  # running | paused | killed
    Column("metadata_json", Text, nullable=False),
    Column("envs_json", Text, nullable=False),
    Column("allow_internet_access", Boolean, nullable=False),
    Column("auto_pause", Boolean, nullable=False),
    # False: an existing namespace adopted by Sandbox.connect; its timeout never kills it.
    Column("owned", Boolean, nullable=False),
    Column("access_token", String(128), nullable=False),  # envd's X-Access-Token
    Column("key_id", String(64), nullable=False),  # the key that created it: in-sandbox calls act as it
    Column("key_name", String(200), nullable=False),
    Column("started_at", Float, nullable=False),  # epoch seconds
    Column("end_at", Float, nullable=False),  # when the E2B timeout expires
    # {"allowOut": [...], "denyOut": [...]}: update_network's rules, re-applied on every rebuild.
    Column("egress_json", Text, nullable=False, server_default="{}"),
    Index("ix_e2b_sandboxes_end_at", "end_at"),
    Index("ix_e2b_sandboxes_workspace", "workspace_id", "started_at"),
)
