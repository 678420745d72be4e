"""The feedback intake is applied complaints first, then hard bounces, then the rest

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-03 20:00:00

feedback_intake.priority (0 complaint, 1 hard bounce, 2 the rest), set by the request that
queues the row, and a partial index on (priority, id) over the rows still waiting, which serves
the worker's claim (ORDER BY priority, id LIMIT n) without a sort, so a complaint queued behind
a burst of bounces is taken in the next batch.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0035'
down_revision = '0034'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('feedback_intake') as batch:
        batch.add_column(sa.Column('priority', sa.SmallInteger(), nullable=False, server_default='2'))
    op.execute("UPDATE feedback_intake SET priority = CASE WHEN kind = 'complaint' THEN 0 "
               "WHEN kind = 'bounce' AND hard THEN 1 ELSE 2 END")
    op.create_index('ix_feedback_intake_waiting', 'feedback_intake', ['priority', 'id'], unique=False,
                    postgresql_where=sa.text('failed_at IS NULL'), sqlite_where=sa.text('failed_at IS NULL'))


def downgrade():
    op.drop_index('ix_feedback_intake_waiting', table_name='feedback_intake')
    with op.batch_alter_table('feedback_intake') as batch:
        batch.drop_column('priority')
