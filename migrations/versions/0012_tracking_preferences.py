"""Open and click tracking: the links of each campaign version, engagement events keyed by their
Redis entry and flagged when a machine made them; a pause on supporters

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 14:30:00

engagement_event.event_key is the Redis stream entry id of a tracked hit: the flush inserts with
ON CONFLICT (event_key) DO NOTHING, so a batch written twice (a worker killed after its commit,
before acknowledging) is recorded once. Events that do not come from the stream leave it NULL,
which a unique index on both databases allows any number of times.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('campaign_link',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_campaign_link_campaign_id_campaign'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('campaign_id', 'version', 'position', name=op.f('pk_campaign_link'))
    )
    with op.batch_alter_table('engagement_event') as batch:
        batch.add_column(sa.Column('is_machine', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('link_index', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('event_key', sa.String(length=40), nullable=True))
        batch.create_index('ix_engagement_event_event_key', ['event_key'], unique=True)
        batch.create_index('ix_engagement_event_campaign_kind', ['campaign_id', 'kind'])
    with op.batch_alter_table('supporter') as batch:
        batch.add_column(sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('supporter') as batch:
        batch.drop_column('paused_until')
    with op.batch_alter_table('engagement_event') as batch:
        batch.drop_index('ix_engagement_event_campaign_kind')
        batch.drop_index('ix_engagement_event_event_key')
        batch.drop_column('event_key')
        batch.drop_column('link_index')
        batch.drop_column('is_machine')
    op.drop_table('campaign_link')
