"""Device login: no key waits in the database; the approval waits, the key is minted at the poll.

Until now the minted key sat in ``device_codes.api_key`` in plain text until the CLI's poll
collected it. Now the row keeps only what the approver chose (key id, name, namespace lock,
who approved) and the poll, which alone holds the device code, mints the key. A login
approved but not yet collected at upgrade time is expired (its CLI asks to log in again) and
its plaintext erased with the column.

Revision ID: 0006
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE device_codes SET status = 'expired', api_key = NULL WHERE status = 'approved'")
    with op.batch_alter_table("device_codes") as batch:
        batch.drop_column("api_key")
        batch.add_column(sa.Column("key_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("key_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("key_namespace", sa.String(128), nullable=True))
        batch.add_column(sa.Column("approver_key_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("approver_key_name", sa.String(200), nullable=True))


def downgrade() -> None:
    op.execute("UPDATE device_codes SET status = 'expired' WHERE status = 'approved'")
    with op.batch_alter_table("device_codes") as batch:
        batch.drop_column("approver_key_name")
        batch.drop_column("approver_key_id")
        batch.drop_column("key_namespace")
        batch.drop_column("key_name")
        batch.drop_column("key_id")
        batch.add_column(sa.Column("api_key", sa.String(256), nullable=True))
