"""The outbound event outbox; the API's (updated_at, id) index also carries erased_at

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-03 18:40:00

outbound_event holds each committed fact until the dispatch job has made its deliveries (it is
written in the fact's own transaction, and deleted in the deliveries' one), so a dispatch job
that dies loses nothing. ix_webhook_delivery_untried finds deliveries whose job was never queued.

ix_supporter_updated_at_id_erased_at replaces ix_supporter_updated_at_id: the same keys with
erased_at included, so GET /api/v1/people's COUNT and its OFFSET to a page asked cold are
index-only scans (plans in api/queries.py). CONCURRENTLY on PostgreSQL, so signing goes on
while it is built (if the build fails, drop the INVALID index and upgrade again).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0033'
down_revision = '0032'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('outbound_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbound_event'))
    )
    untried = sa.text("status = 'pending' AND attempts = 0")
    op.create_index('ix_webhook_delivery_untried', 'webhook_delivery', ['id'], unique=False,
                    postgresql_where=untried, sqlite_where=untried)
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute("CREATE INDEX CONCURRENTLY ix_supporter_updated_at_id_erased_at "
                       "ON supporter (updated_at, id) INCLUDE (erased_at)")
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_supporter_updated_at_id")
    else:
        op.create_index("ix_supporter_updated_at_id_erased_at", "supporter", ["updated_at", "id", "erased_at"],
                        unique=False)
        op.drop_index("ix_supporter_updated_at_id", table_name="supporter")


def downgrade():
    op.create_index("ix_supporter_updated_at_id", "supporter", ["updated_at", "id"], unique=False)
    op.drop_index("ix_supporter_updated_at_id_erased_at", table_name="supporter")
    op.drop_index('ix_webhook_delivery_untried', table_name='webhook_delivery')
    op.drop_table('outbound_event')
