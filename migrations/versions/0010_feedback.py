"""Feedback after the send: feedback events, provider settings and rules; what the suppression
list and message rows record about bounces and complaints

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 10:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('feedback_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('supporter_id', sa.Integer(), nullable=True),
    sa.Column('address_hash', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['supporter_id'], ['supporter.id'], name=op.f('fk_feedback_event_supporter_id_supporter'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback_event')),
    sa.UniqueConstraint('provider', 'event_id', name='uq_feedback_event_provider_event_id')
    )
    op.create_index('ix_feedback_event_address_hash_created_at', 'feedback_event', ['address_hash', 'created_at'])
    op.create_index('ix_feedback_event_campaign_id_kind', 'feedback_event', ['campaign_id', 'kind'])
    op.create_index('ix_feedback_event_created_at', 'feedback_event', ['created_at'])

    op.create_table('feedback_provider',
    sa.Column('name', sa.String(length=20), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['updated_by_id'], ['staff_user.id'], name=op.f('fk_feedback_provider_updated_by_id_staff_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_feedback_provider'))
    )
    op.create_table('feedback_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('soft_bounce_limit', sa.Integer(), nullable=False),
    sa.Column('soft_bounce_days', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['updated_by_id'], ['staff_user.id'], name=op.f('fk_feedback_rules_updated_by_id_staff_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback_rules'))
    )

    # The suppression list is small: SQLite rebuilds it (batch mode) to add the foreign keys.
    with op.batch_alter_table('suppression', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('detail', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('source', sa.String(length=120), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('campaign_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('added_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_suppression_campaign_id_campaign'), 'campaign', ['campaign_id'], ['id'], ondelete='SET NULL')
        batch_op.create_foreign_key(batch_op.f('fk_suppression_added_by_id_staff_user'), 'staff_user', ['added_by_id'], ['id'], ondelete='SET NULL')
        batch_op.create_index('ix_suppression_created_at', ['created_at'])

    # message is the biggest table: plain nullable columns, which both databases add without
    # rewriting a row (no batch rebuild on SQLite, a catalogue change on PostgreSQL).
    for name in ('delivered_at', 'bounced_at', 'complained_at'):
        op.add_column('message', sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    op.add_column('message', sa.Column('bounce_type', sa.String(length=10), nullable=True))

    op.create_index('ix_consent_event_campaign_id_action', 'consent_event', ['campaign_id', 'action'],
                    postgresql_where=sa.text('campaign_id IS NOT NULL'), sqlite_where=sa.text('campaign_id IS NOT NULL'))


def downgrade():
    op.drop_index('ix_consent_event_campaign_id_action', table_name='consent_event')
    for name in ('bounce_type', 'complained_at', 'bounced_at', 'delivered_at'):
        with op.batch_alter_table('message', schema=None) as batch_op:
            batch_op.drop_column(name)
    with op.batch_alter_table('suppression', schema=None) as batch_op:
        batch_op.drop_index('ix_suppression_created_at')
        batch_op.drop_constraint(batch_op.f('fk_suppression_added_by_id_staff_user'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_suppression_campaign_id_campaign'), type_='foreignkey')
        for name in ('added_by_id', 'campaign_id', 'source', 'detail', 'email'):
            batch_op.drop_column(name)
    op.drop_table('feedback_rules')
    op.drop_table('feedback_provider')
    op.drop_index('ix_feedback_event_created_at', table_name='feedback_event')
    op.drop_index('ix_feedback_event_campaign_id_kind', table_name='feedback_event')
    op.drop_index('ix_feedback_event_address_hash_created_at', table_name='feedback_event')
    op.drop_table('feedback_event')
