"""Organisation settings in the database; imports count consent values they could not read

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 10:00:00

org_settings holds at most one row (CHECK id = 1): the organisation's name, postal address,
default sender address and country as admins set them under Settings. A NULL column means
the environment variable of the same meaning applies (ORG_NAME, ORG_POSTAL_ADDRESS, MAIL_FROM,
ORG_COUNTRY), so existing deployments change nothing by upgrading.

import_job gains the count of kept rows whose consent value meant neither yes nor no (their
consent is not recorded) and those values with their row counts.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('org_settings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('postal_address', sa.Text(), nullable=True),
    sa.Column('mail_from', sa.String(length=320), nullable=True),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint('id = 1', name=op.f('ck_org_settings_single_row')),
    sa.ForeignKeyConstraint(['updated_by_id'], ['staff_user.id'], name=op.f('fk_org_settings_updated_by_id_staff_user'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_org_settings'))
    )
    with op.batch_alter_table('import_job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consent_unrecognised_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('consent_unrecognised_values', sa.JSON(), server_default=sa.text("'{}'"),
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('import_job', schema=None) as batch_op:
        batch_op.drop_column('consent_unrecognised_values')
        batch_op.drop_column('consent_unrecognised_count')
    op.drop_table('org_settings')
