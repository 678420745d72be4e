"""Index signature (created_at, id): the dashboard's newest signatures, by the time they show

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:30:00

The dashboard lists the newest signatures by their signing time (imports bring their own
dates, so row ids are not in that order) and counts this week's. Neither had an index:
at 1,000,000 signatures PostgreSQL sorted the whole table for the newest ten (parallel seq
scan and top-N heapsort, 242 ms); with this index it walks it backwards and stops after ten
(0.06 ms), and the week's count reads an index range (28 ms). CONCURRENTLY on PostgreSQL, so
signing goes on while it is built (if the build fails, drop the INVALID index and upgrade
again).
"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute("CREATE INDEX CONCURRENTLY ix_signature_created_at_id ON signature (created_at, id)")
    else:
        op.create_index("ix_signature_created_at_id", "signature", ["created_at", "id"], unique=False)


def downgrade():
    op.drop_index("ix_signature_created_at_id", table_name="signature")
