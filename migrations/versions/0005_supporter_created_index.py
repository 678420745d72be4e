"""Index supporter (created_at, id): segment samples walk newest-first and stop early

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 04:52:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('supporter', schema=None) as batch_op:
        batch_op.create_index('ix_supporter_created_at_id', ['created_at', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('supporter', schema=None) as batch_op:
        batch_op.drop_index('ix_supporter_created_at_id')
