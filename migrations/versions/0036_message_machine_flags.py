"""Each message records whether a machine opened or clicked it

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-04 02:00:00

message.opened_by_machine and message.clicked_by_machine, set by the tracking flush in the
transaction that writes the event (tracking/flush.py), beside opened_at and clicked_at (the
first human times). With the four, the engagement export reads a message's flags from its
own row instead of grouping every engagement event per message.
Existing rows are filled from engagement_event.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0036'
down_revision = '0035'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('message') as batch:
        batch.add_column(sa.Column('opened_by_machine', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('clicked_by_machine', sa.Boolean(), nullable=False, server_default=sa.false()))
    for kind, column in (('open', 'opened_by_machine'), ('click', 'clicked_by_machine')):
        op.execute(f"UPDATE message SET {column} = true WHERE id IN (SELECT message_id FROM engagement_event "
                   f"WHERE kind = '{kind}' AND is_machine)")


def downgrade():
    with op.batch_alter_table('message') as batch:
        batch.drop_column('clicked_by_machine')
        batch.drop_column('opened_by_machine')
