"""E2B sandboxes: the namespaces created through the E2B-compatible API, with their timeouts.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "e2b_sandboxes",
        sa.Column("sandbox_id", sa.String(128), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("template_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("envs_json", sa.Text(), nullable=False),
        sa.Column("allow_internet_access", sa.Boolean(), nullable=False),
        sa.Column("auto_pause", sa.Boolean(), nullable=False),
        sa.Column("owned", sa.Boolean(), nullable=False),
        sa.Column("access_token", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("key_name", sa.String(200), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("end_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_e2b_sandboxes_end_at", "e2b_sandboxes", ["end_at"])
    op.create_index("ix_e2b_sandboxes_workspace", "e2b_sandboxes", ["workspace_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_e2b_sandboxes_workspace", table_name="e2b_sandboxes")
    op.drop_index("ix_e2b_sandboxes_end_at", table_name="e2b_sandboxes")
    op.drop_table("e2b_sandboxes")
