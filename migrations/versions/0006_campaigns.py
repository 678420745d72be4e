"""Campaigns, messages, engagement events, sender identities, email templates

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 15:18:35.947790

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sender_identity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('reply_to', sa.String(length=320), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sender_identity')),
    sa.UniqueConstraint('email', name=op.f('uq_sender_identity_email'))
    )
    op.create_table('email_template',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('mjml', sa.Text(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['staff_user.id'], name=op.f('fk_email_template_created_by_id_staff_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_email_template')),
    sa.UniqueConstraint('name', name=op.f('uq_email_template_name'))
    )
    op.create_table('campaign',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('subject', sa.String(length=400), nullable=False),
    sa.Column('preheader', sa.String(length=400), nullable=False),
    sa.Column('sender_id', sa.Integer(), nullable=True),
    sa.Column('reply_to', sa.String(length=320), nullable=False),
    sa.Column('mjml', sa.Text(), nullable=False),
    sa.Column('text_body', sa.Text(), nullable=False),
    sa.Column('segment_id', sa.Integer(), nullable=True),
    sa.Column('track_opens', sa.Boolean(), nullable=False),
    sa.Column('track_clicks', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('sent_count', sa.Integer(), nullable=False),
    sa.Column('failed_count', sa.Integer(), nullable=False),
    sa.Column('unknown_count', sa.Integer(), nullable=False),
    sa.Column('suppressed_count', sa.Integer(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['staff_user.id'], name=op.f('fk_campaign_created_by_id_staff_user')),
    sa.ForeignKeyConstraint(['segment_id'], ['segment.id'], name=op.f('fk_campaign_segment_id_segment')),
    sa.ForeignKeyConstraint(['sender_id'], ['sender_identity.id'], name=op.f('fk_campaign_sender_id_sender_identity')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign'))
    )
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_segment_id'), ['segment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_campaign_status'), ['status'], unique=False)

    op.create_table('message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('supporter_id', sa.Integer(), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('smtp_message_id', sa.String(length=250), nullable=True),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('clicked_at', sa.DateTime(timezone=True), nullable=True),
    # No foreign keys on message: see crm/models/campaigns.py (a trigger per row halves the snapshot).
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message')),
    sa.UniqueConstraint('campaign_id', 'supporter_id', name='uq_message_campaign_supporter')
    )
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index('ix_message_campaign_status_id', ['campaign_id', 'status', 'id'], unique=False)
        batch_op.create_index('ix_message_supporter_status_sent', ['supporter_id', 'status', 'sent_at'], unique=False)

    op.create_table('engagement_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('supporter_id', sa.Integer(), nullable=True),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_engagement_event_campaign_id_campaign'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['message_id'], ['message.id'], name=op.f('fk_engagement_event_message_id_message'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['supporter_id'], ['supporter.id'], name=op.f('fk_engagement_event_supporter_id_supporter'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_engagement_event'))
    )
    with op.batch_alter_table('engagement_event', schema=None) as batch_op:
        batch_op.create_index('ix_engagement_event_message_kind', ['message_id', 'kind'], unique=False)
        batch_op.create_index('ix_engagement_event_supporter_kind_created', ['supporter_id', 'kind', 'created_at'], unique=False)

    with op.batch_alter_table('consent_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('campaign_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_consent_event_campaign_id_campaign'), 'campaign', ['campaign_id'], ['id'], ondelete='SET NULL')



def downgrade():
    with op.batch_alter_table('consent_event', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_consent_event_campaign_id_campaign'), type_='foreignkey')
        batch_op.drop_column('campaign_id')

    with op.batch_alter_table('engagement_event', schema=None) as batch_op:
        batch_op.drop_index('ix_engagement_event_supporter_kind_created')
        batch_op.drop_index('ix_engagement_event_message_kind')

    op.drop_table('engagement_event')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index('ix_message_supporter_status_sent')
        batch_op.drop_index('ix_message_campaign_status_id')

    op.drop_table('message')
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_status'))
        batch_op.drop_index(batch_op.f('ix_campaign_segment_id'))

    op.drop_table('campaign')
    op.drop_table('email_template')
    op.drop_table('sender_identity')
