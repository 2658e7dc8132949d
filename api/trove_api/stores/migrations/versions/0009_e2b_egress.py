"""E2B sandboxes' egress rules (``update_network``), kept so they are re-applied when the
sandbox's network is rebuilt (a warm sandbox restart, a server restart).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("e2b_sandboxes") as batch:
        batch.add_column(sa.Column("egress_json", sa.Text(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("e2b_sandboxes") as batch:
        batch.drop_column("egress_json")
