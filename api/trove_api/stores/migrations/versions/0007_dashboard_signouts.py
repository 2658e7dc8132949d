"""dashboard_signouts: signed-out dashboard sessions, until they would have expired."""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_signouts",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_dashboard_signouts_expiry", "dashboard_signouts", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_signouts_expiry", table_name="dashboard_signouts")
    op.drop_table("dashboard_signouts")
