"""Double opt-in per petition: the switch, and each signer's pending confirmation

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 14:45:00

signature_confirmation keeps what the signer agreed to (the consent action the signature would
have recorded, the wording version they saw) until they click the emailed link; the partial
index finds the pending ones for the petition page, the reminder and the expiry.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('petition') as batch:
        batch.add_column(sa.Column('double_opt_in', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table('signature_confirmation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('petition_id', sa.Integer(), nullable=False),
    sa.Column('supporter_id', sa.Integer(), nullable=False),
    sa.Column('consent_action', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('wording_id', sa.Integer(), nullable=True),
    sa.Column('wording_version', sa.Integer(), nullable=True),
    sa.Column('wording', sa.Text(), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=400), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('send_count', sa.Integer(), nullable=False),
    sa.Column('reminded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['signature_id'], ['signature.id'], name=op.f('fk_signature_confirmation_signature_id_signature'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['petition_id'], ['petition.id'], name=op.f('fk_signature_confirmation_petition_id_petition'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['supporter_id'], ['supporter.id'], name=op.f('fk_signature_confirmation_supporter_id_supporter'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['wording_id'], ['consent_wording.id'], name=op.f('fk_signature_confirmation_wording_id_consent_wording')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signature_confirmation')),
    sa.UniqueConstraint('signature_id', name='uq_signature_confirmation_signature_id')
    )
    op.create_index('ix_signature_confirmation_pending', 'signature_confirmation', ['petition_id', 'created_at'],
                    postgresql_where=sa.text('confirmed_at IS NULL AND expired_at IS NULL'),
                    sqlite_where=sa.text('confirmed_at IS NULL AND expired_at IS NULL'))


def downgrade():
    op.drop_index('ix_signature_confirmation_pending', table_name='signature_confirmation')
    op.drop_table('signature_confirmation')
    with op.batch_alter_table('petition') as batch:
        batch.drop_column('double_opt_in')
