"""Report speed: petition and consent-source roll-ups, the refresh's unseen ids, and is_machine in the message-kind index

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-03 19:00:00

The petitions table read live counts (1.9 s at 2,000,000 signatures); it now reads
petition_rollup and consent_source_rollup, kept by the report refresh. rollup_state remembers
the ids below each cursor that had no row yet, so an incremental refresh reads only those and
the newer ones. On PostgreSQL ix_engagement_event_message_kind is rebuilt with is_machine
INCLUDEd, so the export's per-message flags and the breakdowns' "a person opened it" probes
read the index alone (built CONCURRENTLY beside the old one, which is then dropped, so
tracking goes on writing meanwhile; if the build fails, drop the INVALID index and upgrade
again).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0034'
down_revision = '0033'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('petition_rollup',
    sa.Column('petition_id', sa.Integer(), nullable=False),
    sa.Column('subscribed_signers', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['petition_id'], ['petition.id'], name=op.f('fk_petition_rollup_petition_id_petition'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('petition_id', name=op.f('pk_petition_rollup'))
    )
    op.create_table('consent_source_rollup',
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('source', sa.String(length=120), nullable=False),
    sa.Column('events', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('action', 'source', name=op.f('pk_consent_source_rollup'))
    )
    with op.batch_alter_table('rollup_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unseen_ids', sa.JSON(), nullable=False, server_default='{}'))
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_engagement_event_message_kind_machine "
                       "ON engagement_event (message_id, kind) INCLUDE (is_machine)")
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_engagement_event_message_kind")
            op.execute("ALTER INDEX ix_engagement_event_message_kind_machine RENAME TO ix_engagement_event_message_kind")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_engagement_event_message_kind_plain "
                       "ON engagement_event (message_id, kind)")
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_engagement_event_message_kind")
            op.execute("ALTER INDEX ix_engagement_event_message_kind_plain RENAME TO ix_engagement_event_message_kind")
    with op.batch_alter_table('rollup_state', schema=None) as batch_op:
        batch_op.drop_column('unseen_ids')
    op.drop_table('consent_source_rollup')
    op.drop_table('petition_rollup')
