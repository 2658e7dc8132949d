"""Webhooks, their delivery queue and attempts; device-login codes.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("namespace", sa.String(128), nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("deleted_at", sa.String(32), nullable=True),
        sa.Column("last_delivery_at", sa.String(32), nullable=True),
        sa.Column("last_delivery_ok", sa.Boolean, nullable=True),
        sa.Column("last_delivery_status", sa.Integer, nullable=True),
    )
    op.create_index("ix_webhooks_workspace", "webhooks", ["workspace_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("webhook_id", sa.String(64), sa.ForeignKey("webhooks.id"), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("claimed_until", sa.Float, nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_webhook", "webhook_deliveries", ["webhook_id", "created_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(64), sa.ForeignKey("webhook_deliveries.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", sa.String(32), nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("response_excerpt", sa.Text, nullable=True),
    )
    op.create_index("ix_attempts_delivery", "webhook_attempts", ["delivery_id"])
    op.create_table(
        "device_codes",
        sa.Column("device_code_digest", sa.String(64), primary_key=True),
        sa.Column("user_code", sa.String(16), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=True),
        sa.Column("api_key", sa.String(256), nullable=True),
        sa.Column("client", sa.String(128), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("device_codes")
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
