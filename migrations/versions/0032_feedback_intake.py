"""Webhook feedback waits in feedback_intake until a worker applies it; a complainer's
confirmation request is marked as one

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-03 18:45:00

feedback_intake: what a webhook request accepted (one row per reported fact, unique per
provider and event id, like feedback_event) until a worker applies it and deletes the row in
the same transaction. signature_confirmation.after_complaint: the request for updates sent to
someone who had complained and signed an implied-consent petition (no reminder follows it).
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0032'
down_revision = '0031'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('feedback_intake',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=True),
    sa.Column('message_ref', sa.String(length=200), nullable=True),
    sa.Column('message_id', sa.String(length=1000), nullable=True),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ref_needs_address', sa.Boolean(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback_intake')),
    sa.UniqueConstraint('provider', 'event_id', name='uq_feedback_intake_provider_event_id')
    )
    with op.batch_alter_table('signature_confirmation') as batch:
        batch.add_column(sa.Column('after_complaint', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    with op.batch_alter_table('signature_confirmation') as batch:
        batch.drop_column('after_complaint')
    op.drop_table('feedback_intake')
