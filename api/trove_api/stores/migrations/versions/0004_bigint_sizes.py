"""64-bit sizes and sequence numbers (PostgreSQL's INTEGER is 32-bit; SQLite's already is 64).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column("snapshots", "size_bytes", type_=sa.BigInteger(), existing_nullable=False)
    op.alter_column("events", "seq", type_=sa.BigInteger(), existing_nullable=False)
    op.alter_column("webhook_attempts", "id", type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column("webhook_attempts", "id", type_=sa.Integer(), existing_nullable=False)
    op.alter_column("events", "seq", type_=sa.Integer(), existing_nullable=False)
    op.alter_column("snapshots", "size_bytes", type_=sa.Integer(), existing_nullable=False)
